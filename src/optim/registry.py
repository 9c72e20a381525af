"""Optimizers by name, for configs: ``optimizer.name`` → the class and the config fields it takes.

Each entry maps the fields of the ``optimizer`` config section (src.config.OptimizerConfig) that
an optimizer reads onto its keyword arguments, which carry the same names. The config checks a
name against this table and refuses fields the named optimizer does not read, so a typo such as
``optimizer.name=adamax optimizer.amsgrad=true`` fails at start-up instead of being ignored.

Adding an optimizer is one entry: its class and the shared fields it reads (``lr``,
``weight_decay``), plus a typed section of OptimizerConfig for the options only it has
(``sgd: SGDOptions`` with ``momentum``, ``nesterov``, ...) named in ``section``; the section's
fields become keyword arguments too. torch.optim's SGD, RMSprop, Adagrad and Adadelta are
entries of that kind (each with torch's own defaults, ε included, in its section); Adam,
AdamW and AdaMax stay this project's code. ``optimizer.schedule`` (src.optim.schedule)
applies to every one of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer

    from src.config import OptimizerConfig

__all__ = ["OPTIMIZERS", "OptimizerSpec", "build"]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class and the OptimizerConfig fields (= its keyword arguments) it reads."""

    # "module:Class", imported on first use: the config checks names and fields against this
    # table at start-up, before torch is imported (a refusal must not wait for torch).
    target: str
    fields: tuple[str, ...]
    section: str | None = None  # a typed sub-section whose fields are keyword arguments too

    @property
    def cls(self) -> type[Optimizer]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def kwargs(self, config: OptimizerConfig) -> dict[str, Any]:
        kwargs = {name: getattr(config, name) for name in self.fields}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        if self.section is not None:
            kwargs.update(asdict(getattr(config, self.section)))
        return kwargs


_ADAM_FIELDS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "eps_mode", "bias_correction")

_TORCH_FIELDS = ("lr", "weight_decay")

OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec("src.optim.adam:Adam", _ADAM_FIELDS),
    "adamw": OptimizerSpec("src.optim.adam:AdamW", _ADAM_FIELDS),
    "adamax": OptimizerSpec("src.optim.adamax:AdaMax", ("lr", "betas", "eps", "weight_decay",
                                                        "eps_mode", "bias_correction")),
    "sgd": OptimizerSpec("torch.optim:SGD", _TORCH_FIELDS, section="sgd"),
    "rmsprop": OptimizerSpec("torch.optim:RMSprop", _TORCH_FIELDS, section="rmsprop"),
    "adagrad": OptimizerSpec("torch.optim:Adagrad", _TORCH_FIELDS, section="adagrad"),
    "adadelta": OptimizerSpec("torch.optim:Adadelta", _TORCH_FIELDS, section="adadelta"),
}


def build(params: Iterable[Any], config: OptimizerConfig) -> Optimizer:
    """The optimizer ``config.name`` over ``params``, with the section's settings and the
    step-size schedule ``config.schedule``."""
    from src.optim.schedule import attach_schedule

    spec = OPTIMIZERS[config.name]
    return attach_schedule(spec.cls(params, **spec.kwargs(config)), config.schedule)
