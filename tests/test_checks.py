"""Tests for ibstudy.checks.check_positive (the other checks are tested in test_config.py)."""

from __future__ import annotations

import math

import pytest

from ibstudy.checks import check_positive


def test_check_positive() -> None:
    assert check_positive("sigma", 2) == 2.0 and isinstance(check_positive("sigma", 2), float)
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=r"sigma must be > 0, got "):
            check_positive("sigma", bad)
    for bad in (math.nan, math.inf, True, "1", None):
        with pytest.raises(ValueError, match=r"sigma must be a finite number > 0, got "):
            check_positive("sigma", bad)
