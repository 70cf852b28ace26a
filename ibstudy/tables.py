"""Validation shared by every function that reads the trainer's tidy tables."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd


def check_table(table: object, required: Iterable[str], name: str) -> pd.DataFrame:
    """Raise ValueError unless ``table`` is a non-empty DataFrame holding every required column."""
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{name} table lacks required column(s) {missing}; it has {list(table.columns)}"
        )
    if table.empty:
        raise ValueError(f"{name} table is empty")
    return table
