"""Argument checks shared by every public entry point (in the spirit of scikit-learn's ``check_scalar``).

Each check raises ``ValueError`` naming the parameter, the allowed values and what was given, and
returns the value in its canonical type. Private helpers trust their inputs; only the boundary checks.
No torch import here, so configs can be validated before anything heavy is loaded.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "check_bool",
    "check_choice",
    "check_fractions",
    "check_int",
    "check_int_list",
    "check_positive",
    "check_real",
]


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else ValueError listing them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """``value`` as an int in [minimum, maximum] (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}")
    return value


def check_real(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    include_minimum: bool = True,
    include_maximum: bool = True,
) -> float:
    """``value`` as a finite float in the given interval (bools, NaN and infinities are refused)."""
    lo = "[" if include_minimum else "("
    hi = "]" if include_maximum else ")"
    interval = f" in {lo}{_fmt(minimum, '-inf')}, {_fmt(maximum, 'inf')}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite number{interval}, got {value!r}")
    value = float(value)
    bad = not math.isfinite(value)
    if minimum is not None:
        bad |= value < minimum if include_minimum else value <= minimum
    if maximum is not None:
        bad |= value > maximum if include_maximum else value >= maximum
    if bad:
        raise ValueError(f"{name} must be a finite number{interval}, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0 (bools refused): ``check_real`` with the short message
    ``{name} must be > 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool, else ValueError."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_int_list(
    name: str, values: Any, *, minimum: int | None = None, increasing: bool = False
) -> tuple[int, ...]:
    """``values`` (an iterable of ints) as a tuple, each >= minimum, optionally strictly increasing."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    out = tuple(check_int(f"{name} entries", v, minimum=minimum) for v in values)
    if increasing and any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing, got {list(out)}")
    return out


def check_fractions(name: str, values: Any) -> tuple[float, ...]:
    """``values`` as a strictly increasing tuple of finite floats inside (0, 1), or ValueError."""
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of fractions in (0, 1), got {values!r}")
    out = tuple(
        check_real(f"{name} entries", v, minimum=0.0, maximum=1.0, include_minimum=False,
                   include_maximum=False)
        for v in values
    )  # fmt: skip
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ValueError(f"{name} must be strictly increasing fractions in (0, 1), got {list(out)}")
    return out


def _fmt(value: float | None, default: str) -> str:
    return default if value is None else f"{value:g}"


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
