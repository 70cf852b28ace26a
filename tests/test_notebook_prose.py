"""Notebook prose states no measured number by hand (issue 21): interpretive text that quotes a
result renders it from the tables (IPython.display.Markdown); a markdown cell may only hold the
documented settings and definitions listed here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NUMBER = re.compile(r"(?<![\w.\-])\d+(?:\.\d+)?\s?%|(?<![\w.\-])\d+\.\d+(?:e-?\d+)?")
#: what prose may state: settings of the presets and the rules, not results
ALLOWED: dict[str, str] = {
    "0.05": "the family-wise error rate alpha of the verdicts (docs/method.md §12)",
    "95 %": "the level of every interval",
    "1.9": "the toy's illustrative W = diag(sqrt 1.9, sqrt 0.1) (docs/method.md §5)",
    "0.1": "that W's second entry, and the toy's noise std (docs/method.md §5)",
    "4.4": "sqrt(19), the stretch of that W (arithmetic, not a measurement)",
    "1.0": "a width parameter value",
    "1 %": "the toy's convergence rule: the loss moved by at most 1 % ...",
    "20 %": "... over the last 20 % of the steps",
    "100%": "perfect accuracy, what the radius allows by construction",
}


def _markdown(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]


def test_the_notebooks_are_scanned() -> None:
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_states_no_measured_number(path: Path) -> None:
    found = [
        (m.group(0), text[max(0, m.start() - 40) : m.end() + 20].replace("\n", " "))
        for text in _markdown(path)
        for m in NUMBER.finditer(text)
        if m.group(0) not in ALLOWED
    ]
    assert not found, (
        f"{path.name} states number(s) by hand in markdown: {found}; render them from the tables "
        "(IPython.display.Markdown) or, for a documented setting, add it to ALLOWED with its reason"
    )


def test_the_scan_catches_a_typed_result() -> None:
    assert [m.group(0) for m in NUMBER.finditer("E2E ends at 0.970 and 97.4 % (p 0.05)")] == [
        "0.970", "97.4 %", "0.05",
    ]  # fmt: skip
