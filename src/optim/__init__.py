"""The project's optimizers: Adam and AdamW (Algorithm 1) and AdaMax (Algorithm 2), drop-ins for
torch.optim's, each update rule written once (adam.py, adamax.py) and run per tensor or on the
flat-buffer layout (flat.py); ``build`` makes one from the config's optimizer section.

Names load from their modules on first use (src.lazy): the config validates
``optimizer.name`` against the registry at start-up, before anything imports torch.
"""

from src.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "src.optim.adam": ("Adam", "AdamW"),
    "src.optim.adamax": ("AdaMax",),
    "src.optim.registry": ("OPTIMIZERS", "build"),
}, globals())
