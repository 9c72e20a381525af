"""Lazy package exports (PEP 562): a package's names, imported from their modules on first use.

src.data and src.optim re-export names from their submodules this way, so that the config can
read the dataset and optimizer registries, and the CLI refuse a bad value, without importing
numpy, torch or Lightning, which only training needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, homes: Mapping[str, tuple[str, ...]], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """`__getattr__`, `__dir__` and `__all__` for `package`, whose `namespace` is its globals();
    `homes` maps a module to the names it exports."""
    home_of = {name: module for module, names in homes.items() for name in names}
    exported = sorted(home_of)

    def __getattr__(name: str) -> object:  # noqa: N807 (the module hook's name)
        home = home_of.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        namespace[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:  # noqa: N807
        return sorted({*namespace, *exported})

    return __getattr__, __dir__, exported
