"""ibstudy: E2E vs layer-wise training through the normalized-HSIC information plane."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["animate_plane", "explore"]

#: names imported on first use, so that ``import ibstudy`` stays light (the CLI imports it)
_LAZY = {"animate_plane": "ibstudy.animate", "explore": "ibstudy.explorer"}


def __getattr__(name: str) -> Any:
    """``ibstudy.explore`` and ``ibstudy.animate_plane``, imported when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ibstudy' has no attribute {name!r}")
