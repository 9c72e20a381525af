"""Optimizers by name, for configs: ``optimizer.name`` → the class and the config fields it takes.

Each entry maps the fields of the ``optimizer`` config section (src.config.OptimizerConfig) that
an optimizer reads onto its keyword arguments, which carry the same names. The config checks a
name against this table and refuses fields the named optimizer does not read, so a typo such as
``optimizer.name=adamax optimizer.amsgrad=true`` fails at start-up instead of being ignored.

Adding an optimizer (say ``torch.optim.SGD``) is one entry: its class and the shared fields it
reads (``lr``, ``weight_decay``), plus a typed section of OptimizerConfig for the options only
it has (``sgd: SGDOptions`` with ``momentum``, ``nesterov``, ...) named in ``section``; the
section's fields become keyword arguments too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torch.optim import Optimizer

from src.optim.adam import Adam, AdamW
from src.optim.adamax import AdaMax

if TYPE_CHECKING:
    from src.config import OptimizerConfig

__all__ = ["OPTIMIZERS", "OptimizerSpec", "build"]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer class and the OptimizerConfig fields (= its keyword arguments) it reads."""

    cls: type[Optimizer]
    fields: tuple[str, ...]
    section: str | None = None  # a typed sub-section whose fields are keyword arguments too

    def kwargs(self, config: OptimizerConfig) -> dict[str, Any]:
        kwargs = {name: getattr(config, name) for name in self.fields}
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        if self.section is not None:
            kwargs.update(asdict(getattr(config, self.section)))
        return kwargs


_ADAM_FIELDS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "eps_mode", "bias_correction")

OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adam": OptimizerSpec(Adam, _ADAM_FIELDS),
    "adamw": OptimizerSpec(AdamW, _ADAM_FIELDS),
    "adamax": OptimizerSpec(AdaMax, ("lr", "betas", "eps", "weight_decay", "eps_mode",
                                     "bias_correction")),
}


def build(params: Iterable[Any], config: OptimizerConfig) -> Optimizer:
    """The optimizer ``config.name`` over ``params``, with the section's settings."""
    spec = OPTIMIZERS[config.name]
    return spec.cls(params, **spec.kwargs(config))
