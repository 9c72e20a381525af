"""The project's optimizers: Adam and AdamW (Algorithm 1) and AdaMax (Algorithm 2), drop-ins for
torch.optim's, each update rule written once (adam.py, adamax.py) and run per tensor or on the
flat-buffer layout (flat.py); ``build`` makes one from the config's optimizer section."""

from src.optim.adam import Adam, AdamW
from src.optim.adamax import AdaMax
from src.optim.registry import OPTIMIZERS, build

__all__ = ["OPTIMIZERS", "AdaMax", "Adam", "AdamW", "build"]
