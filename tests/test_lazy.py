"""src.lazy: a package's names imported from their modules on first use, then cached."""

from __future__ import annotations

import pytest

from src.lazy import lazy_exports


def test_names_load_on_first_use_and_unknown_ones_are_refused() -> None:
    namespace: dict[str, object] = {}
    getattr_, dir_, exported = lazy_exports("pkg", {"math": ("pi", "tau"), "json": ("dumps",)},
                                            namespace)
    assert exported == ["dumps", "pi", "tau"]
    assert "pi" not in namespace
    import math

    assert getattr_("pi") is math.pi
    assert namespace["pi"] is math.pi  # cached: the hook is not asked again
    assert dir_() == ["dumps", "pi", "tau"]
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'e'"):
        getattr_("e")  # math has it, but this package does not export it
