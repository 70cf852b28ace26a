"""Tests for ibstudy.report: the README's findings block is rendered from tables, never typed."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from ibstudy import report
from ibstudy.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
CELL = re.compile(
    r"(-?[\d.e+-]+) \[(-?[\d.e+-]+), (-?[\d.e+-]+)\], (supported|contradicted|inconclusive)"
)


def effects() -> pd.DataFrame:
    rows = []
    for base, shift in (("layerwise/linear", 0.0), ("layerwise/mlp", 0.5)):
        for claim, est in (("C1", 1.23456), ("C3", -0.0123456), ("C4a", math.nan)):
            rows.append({
                "study": "LeNet5", "baseline": base, "claim": claim, "contrast": f"{claim} contrast",
                "n": 5, "estimate": est + shift, "ci_low": est + shift - 0.5,
                "ci_high": est + shift + 0.5, "verdict": "inconclusive" if claim != "C4a"
                else "not measured", "scale": "mnist5k, 40 epochs",
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_every_number_in_the_block_comes_from_the_table():
    table = effects()
    block = report.findings_markdown(table)
    lines = [line for line in block.splitlines() if line.startswith("| C")]
    assert [line.split(" | ")[0] for line in lines] == ["| C1", "| C3", "| C4a"]
    assert "LeNet5: vs layerwise/linear (5 seeds)" in block
    found = 0
    for line in lines:
        claim = line.split(" | ")[0][2:]
        for cell, base in zip(
            line.split(" | ")[2:], ("layerwise/linear", "layerwise/mlp"), strict=True
        ):
            row = table[(table["claim"] == claim) & (table["baseline"] == base)].iloc[0]
            match = CELL.search(cell)
            if not math.isfinite(row["estimate"]):
                assert cell.strip(" |") == "not measured"
                continue
            found += 1
            est, low, high = (float(g) for g in match.groups()[:3])
            assert est == float(f"{row['estimate']:.3g}")
            assert (low, high) == (float(f"{row['ci_low']:.3g}"), float(f"{row['ci_high']:.3g}"))
            assert match.group(4) == row["verdict"]
    assert found == 4


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{report.START}\nold\n{report.END}\nafter\n")
    report.update_readme(readme, "new block")
    assert readme.read_text() == f"# x\nbefore\n{report.START}\nnew block\n{report.END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="has no findings block"):
        report.update_readme(readme, "x")


def test_report_command(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path)]) == 2
    assert "06_claims.csv not found" in capsys.readouterr().out
    (tmp_path / "tables").mkdir()
    effects().to_csv(tmp_path / "tables" / "06_claims.csv", index=False)
    assert main(["report", "--results-dir", str(tmp_path)]) == 0
    assert "| C1 | C1 contrast |" in capsys.readouterr().out


def test_the_committed_readme_holds_the_block_of_the_committed_tables():
    folder = ROOT / report.FINDINGS_DIR
    assert (folder / "06_claims.csv").exists(), (
        "run make study, then python -m ibstudy report --readme"
    )
    text = (ROOT / "README.md").read_text()
    start, end = text.index(report.START) + len(report.START), text.index(report.END)
    assert text[start:end].strip() == report.readme_block(folder).strip()


def test_compare_names_every_verdict_that_differs():
    committed = effects()
    fresh = committed.copy()
    fresh.loc[(fresh["claim"] == "C1") & (fresh["baseline"] == "layerwise/mlp"), "verdict"] = (
        "supported"
    )
    lines = report.compare_findings(fresh, committed)
    assert lines == [
        "LeNet5 vs layerwise/mlp C1: README inconclusive, this run supported "
        "(1.73 [1.23, 2.23], supported)"
    ]
    assert report.compare_findings(committed, committed) == []
    other = fresh.assign(scale="mnist5k, 3 epochs")
    assert report.compare_findings(other, committed)[0].startswith("LeNet5: not compared")
    assert report.compare_findings(fresh[fresh["study"] == "x"], committed) == [
        "LeNet5: only in the README"
    ]


def test_report_compare_command(tmp_path, capsys, monkeypatch):
    (tmp_path / "tables").mkdir()
    effects().to_csv(tmp_path / "tables" / "06_claims.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--compare", "--results-dir", "."]) == 2  # no committed findings here
    assert "has no committed findings" in capsys.readouterr().out
    (tmp_path / report.FINDINGS_DIR).mkdir(parents=True)
    effects().to_csv(tmp_path / report.FINDINGS_DIR / "06_claims.csv", index=False)
    assert main(["report", "--compare", "--results-dir", "."]) == 0
    assert "every verdict of this run agrees" in capsys.readouterr().out
