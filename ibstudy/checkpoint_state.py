"""What a checkpoint holds besides weights: every RNG's state and the table rows, as plain values.

Checkpoints are read with torch's weights-only loader (docs/method.md §10), so everything a resume
needs is stored as tensors and plain Python values; :func:`safe_state` turns a checkpoint of the
previous format (pickled RNG states) into the current one.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ibstudy.store import CHECKPOINT_FORMAT

__all__ = ["plain", "rng_state", "safe_state", "set_rng_state"]


def plain(value: Any) -> Any:
    """``value`` with numpy scalars (and one-element tensors) as Python ints/floats/strs/bools."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def _numpy_state(state: Any) -> dict[str, Any]:
    """numpy's legacy RNG state as tensors and plain numbers (the safe loader reads them)."""
    if isinstance(state, dict):  # already converted
        return state
    name, key, pos, has_gauss, cached = state
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.uint32).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _python_state(state: Any) -> tuple[Any, ...]:
    """Python's ``random`` state as a tuple of ints (and the cached gaussian, a float or None)."""
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), None if gauss is None else float(gauss)


def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (nothing that needs unpickling)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": _python_state(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`; also takes the previous format's numpy tuple."""
    torch.set_rng_state(state["torch"])
    numpy = _numpy_state(state["numpy"])
    key = numpy["key"]
    key = key.numpy() if isinstance(key, Tensor) else np.asarray(key)
    np.random.set_state(
        (
            numpy["bit_generator"], key.astype(np.uint32), int(numpy["pos"]),
            int(numpy["has_gauss"]), float(numpy["cached_gaussian"]),
        )
    )  # fmt: skip
    random.setstate(_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def safe_state(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint ``state`` (either format) in the current one: RNG states as tensors and plain
    numbers, rows and identity as plain Python values (torch's weights-only loader reads it)."""
    rng = dict(state["rng"])
    rng["numpy"] = _numpy_state(rng["numpy"])
    rng["python"] = _python_state(rng["python"])
    return {
        **state,
        "format": CHECKPOINT_FORMAT,
        "rng": rng,
        "epoch_rows": [plain(dict(row)) for row in state["epoch_rows"]],
        "layer_rows": [plain(dict(row)) for row in state["layer_rows"]],
        "identity": plain(dict(state["identity"])) if state.get("identity") is not None else None,
    }
