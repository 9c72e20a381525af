"""The project's optimizers: Adam and AdamW (Algorithm 1) and AdaMax (Algorithm 2), drop-ins for
torch.optim's, each update rule written once (adam.py, adamax.py) and run per tensor or on the
flat-buffer layout (flat.py); ``build`` makes one from the config's optimizer section.

Names load from their modules on first use, as in src.data: the config validates
``optimizer.name`` against the registry at start-up, before anything imports torch.
"""

import importlib

_HOMES = {
    "src.optim.adam": ("Adam", "AdamW"),
    "src.optim.adamax": ("AdaMax",),
    "src.optim.registry": ("OPTIMIZERS", "build"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["OPTIMIZERS", "AdaMax", "Adam", "AdamW", "build"]


def __getattr__(name: str) -> object:
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
