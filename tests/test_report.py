"""Tests for ibstudy.report: the README's findings block is rendered from tables, never typed."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from ibstudy import report, store
from ibstudy.__main__ import main
from ibstudy.provenance import provenance_line

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
    assert main(["report", "--compare", "--results-dir", "."]) == 0  # never fails; says why
    assert "has no committed findings" in capsys.readouterr().out
    (tmp_path / report.FINDINGS_DIR).mkdir(parents=True)
    effects().to_csv(tmp_path / report.FINDINGS_DIR / "06_claims.csv", index=False)
    assert main(["report", "--compare", "--results-dir", "."]) == 0
    assert "every verdict of this run agrees" in capsys.readouterr().out


# ---------------------------------------------------------------- findings as data, provenance

NUMBER = re.compile(r"^-?\d+(\.\d+)?(e[+-]?\d+)?$")
CELL_TEXT = re.compile(
    r"^(?P<est>\S+)(?: \[(?P<lo>\S+), (?P<hi>\S+)\])?, (?P<verdict>supported|contradicted|"
    r"inconclusive|not measured)(?: \(fragile: (?P<k>\d+) of (?P<n>\d+) seeds flips? it\))?$"
)
ACC_TEXT = re.compile(r"^(?P<label>\S+) (?P<mean>\S+)(?: ± (?P<std>\S+))? \(n=(?P<n>\d+)\)$")
PROVENANCE = {
    "commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False,
    "date": "2026-12-02T10:00:00Z", "python": "3.11.7", "torch": "2.5.1",
    "cpu_capability": "AVX2", "threads": 2, "run_threads": [1], "preset": "study",
    "platform": "Linux x86_64",
}  # fmt: skip


def agrees(text: str, value: float | None) -> bool:
    """``text`` is ``value`` rounded to the digits it shows (half a unit of its last digit)."""
    assert NUMBER.match(text), f"{text!r} is not a number"
    if value is None:
        return False
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    unit = 10.0 ** (int(exponent or 0) - decimals)
    return abs(float(text) - value) <= unit / 2 * (1 + 1e-9)


REGIME_ROW = re.compile(
    r"\| (?P<cell>\S+) \| (?P<e2e>[\d.]+) \| (?P<lw>[\d.]+) \| (?P<gap>[-+][\d.]+) ± (?P<std>[\d.]+) "
    r"\[(?P<lo>[-+][\d.]+), (?P<hi>[-+][\d.]+)\], (?P<k>\d+ of \d+) \| (?P<head>[-+][\d.]+) \| "
    r"(?P<readout>[a-z ]+) \| (?P<c1>\S+) \((?P<z>[-+][\d.]+)\), (?P<c1v>[a-z ]+) \| (?P<role>\S+) \|"
)
ACROSS_LINE = re.compile(
    r"- Across cells, the gap against (?P<stat>\S+): Spearman rho (?P<rho>[-+][\d.]+) over "
    r"(?P<n>\d+) cells, one-sided Holm p (?P<p>\S+) \(gap heterogeneity p (?P<het>\S+)\): "
    r"(?P<verdict>[a-z]+)\."
)


def check_regimes_line(line: str, regimes: dict) -> int:
    """One line of the block's regimes part against findings.json's regimes; numbers checked."""

    def agrees(text: str, value: float | None) -> bool:  # the regimes part signs its numbers
        return globals()["agrees"](text.lstrip("+"), value)

    cells = {c["cell"]: c for c in regimes["cells"]}
    if line == "" or line.startswith(("| cell |", "|---")):
        return 0
    if line.startswith("| "):
        m = REGIME_ROW.match(line)
        assert m, line
        c = cells[m["cell"]]
        pairs = [("e2e", "e2e_acc_mean"), ("lw", "layerwise_acc_mean"), ("gap", "gap_mean"),
                 ("std", "gap_std"), ("lo", "gap_ci_low"), ("hi", "gap_ci_high"),
                 ("head", "head_gap_mean"), ("c1", "C1_estimate"), ("z", "C1_z"),
                 ("role", "role_gap")]  # fmt: skip
        for group, key in pairs:
            assert agrees(m[group], c[key]), (line, key)
        assert (m["k"], m["readout"], m["c1v"]) == (
            c["gap_k_of_n"], c["readout_verdict"], c["C1_verdict"])  # fmt: skip
        return len(pairs)
    if line.startswith("- Across cells"):
        m = ACROSS_LINE.match(line)
        assert m, line
        r = next(a for a in regimes["across"] if a["statistic"] == m["stat"])
        assert agrees(m["rho"], r["rho"]) and agrees(m["p"], r["p_greater_holm"])
        assert agrees(m["het"], r["heterogeneity_p"]) and int(m["n"]) == r["n_cells"]
        assert m["verdict"] == r["verdict"]
        return 4
    premise = next((c["cell"] for c in regimes["cells"] if c["readout_verdict"] == "gap"), None)
    if premise:
        assert line.endswith(f"both readouts): {premise}."), line
    else:
        assert line.startswith("- No cell has a gap under both readouts"), line
    return 1


def check_block(block: str, findings: dict) -> int:
    """Parse every line of a findings block and check each number in it against ``findings``
    (the findings.json it names); returns how many numbers were checked."""
    studies = {s["study"]: s for s in findings["studies"]}
    records = {
        (s["study"], c["baseline"], claim["claim"]): (c, claim)
        for s in findings["studies"]
        for c in s["comparisons"]
        for claim in c["claims"]
    }
    checked, cells = 0, 0
    lines = block.strip().splitlines()
    comparisons: list[tuple[str, str]] = []
    regimes = False
    for line in lines:
        if line.startswith("Regimes (notebook 09; "):
            regimes = True
            seeds = int(re.match(r"Regimes \(notebook 09; (\d+) seeds", line).group(1))
            assert seeds == min(c["n_seeds"] for c in findings["regimes"]["cells"])
        elif regimes and not line.startswith("- Provenance ("):
            checked += check_regimes_line(line, findings["regimes"])
        elif line.startswith("| claim |"):
            for title in line.strip("| ").split(" | ")[2:]:
                match = re.fullmatch(r"(\S+): vs (\S+) \((\d+) seeds?\)", title)
                assert match, title
                study, base, seeds = match.groups()
                comparison = next(c for c in studies[study]["comparisons"] if c["baseline"] == base)
                assert int(seeds) == comparison["seeds"]
                comparisons.append((study, base))
                checked += 1
        elif line.startswith("|---"):
            continue
        elif line.startswith("| "):
            claim, contrast, *texts = line.strip("| ").split(" | ")
            for (study, base), text in zip(comparisons, texts, strict=True):
                if (study, base, claim) not in records:
                    assert text == ""
                    continue
                _, record = records[(study, base, claim)]
                assert contrast == record["contrast"]
                cells += 1
                if text == "not measured":
                    assert record["estimate"] is None
                    continue
                match = CELL_TEXT.match(text)
                assert match, text
                assert match["verdict"] == record["verdict"]
                assert agrees(match["est"], record["estimate"]), (text, record)
                checked += 1
                if match["lo"]:
                    assert agrees(match["lo"], record["ci_low"])
                    assert agrees(match["hi"], record["ci_high"])
                    checked += 2
                if match["k"]:
                    assert record["fragile"] is True
                    assert (int(match["k"]), int(match["n"])) == (
                        record["loso_flips"],
                        record["loso_n"],
                    )
                    checked += 2
                else:
                    assert record.get("fragile") is not True
        elif line.startswith("- Provenance ("):
            name, _, text = line[len("- Provenance (") :].partition("): ")
            assert text == provenance_line(findings["provenance"]) + "."
            checked += 1
        elif " final test accuracy (mean ± std over seeds): " in line:
            study, _, text = line[2:].partition(" final test accuracy (mean ± std over seeds): ")
            rows = studies[study]["accuracy"]
            for part in text.rstrip(".").split("; "):
                match = ACC_TEXT.match(part)
                assert match, part
                row = next(
                    r for r in rows
                    if match["label"] in (r["method"], f"{r['method']}/{r['head']}")
                )  # fmt: skip
                assert agrees(match["mean"], row["final_test_acc_mean"])
                assert int(match["n"]) == row["n_seeds"]
                if match["std"]:
                    assert agrees(match["std"], row["final_test_acc_std"])
                else:
                    assert row["final_test_acc_std"] is None
                checked += 2
        elif line.startswith("- "):
            study, _, scale = line[2:].partition(": ")
            assert scale == f"{studies[study]['scale']}."
        else:
            assert line == "", f"a line the block does not make: {line!r}"
    assert cells == len(records), "every claim x comparison of the findings is in the block"
    return checked


def stable_effects() -> pd.DataFrame:
    table = effects()
    flips = [1 if (c == "C1" and b == "layerwise/linear") else 0
             for c, b in zip(table["claim"], table["baseline"], strict=True)]  # fmt: skip
    measured = table["verdict"] != "not measured"
    return table.assign(
        margin=[-0.5 + abs(e) if math.isfinite(e) else math.nan for e in table["estimate"]],
        loso_flips=pd.array([f if m else pd.NA for f, m in zip(flips, measured, strict=True)],
                            dtype="Int64"),
        loso_n=[5 if m else 0 for m in measured],
        fragile=pd.array([bool(f) if m else pd.NA for f, m in zip(flips, measured, strict=True)],
                         dtype="boolean"),
    )  # fmt: skip


def accuracy() -> pd.DataFrame:
    return pd.DataFrame([
        {"study": "LeNet5", "method": "e2e", "head": "none", "n_seeds": 5,
         "final_test_acc_mean": 0.97021, "final_test_acc_std": 0.00148, "scale": "s"},
        {"study": "LeNet5", "method": "layerwise", "head": "linear", "n_seeds": 5,
         "final_test_acc_mean": 0.9738, "final_test_acc_std": 0.0019235, "scale": "s"},
    ])  # fmt: skip


def write_results(folder: Path, table: pd.DataFrame | None, acc: pd.DataFrame | None) -> Path:
    (folder / "tables").mkdir(parents=True, exist_ok=True)
    if table is not None:
        table.to_csv(folder / "tables" / "06_claims.csv", index=False)
    if acc is not None:
        acc.to_csv(folder / "tables" / "06_accuracy.csv", index=False)
    return folder


def test_a_verdict_one_seed_flips_is_marked_fragile():
    block = report.findings_markdown(stable_effects())
    row = next(line for line in block.splitlines() if line.startswith("| C1 |"))
    assert "1.23 [0.735, 1.73], inconclusive (fragile: 1 of 5 seeds flips it)" in row
    assert "1.73 [1.23, 2.23], inconclusive |" in row  # the mlp comparison: stable, as before
    assert block.count("fragile") == 1
    unmarked = report.findings_markdown(stable_effects().drop(columns=["fragile"]))
    assert unmarked == report.findings_markdown(effects())  # no columns: rendered as before


def test_findings_round_trip_through_json():
    data = report.findings_data(stable_effects(), accuracy(), PROVENANCE, missing=["x"])
    text = json.dumps(data, allow_nan=False)  # NaN became null
    back = json.loads(text)
    assert back["provenance"] == PROVENANCE and back["missing"] == ["x"]
    lenet = back["studies"][0]
    assert [c["baseline"] for c in lenet["comparisons"]] == ["layerwise/linear", "layerwise/mlp"]
    c1 = lenet["comparisons"][0]["claims"][0]
    assert (c1["claim"], c1["estimate"], c1["fragile"], c1["loso_flips"], c1["loso_n"]) == (
        "C1",
        1.23456,
        True,
        1,
        5,
    )
    assert c1["stability"] == "fragile: 1 of 5 seeds flips it"
    c4a = lenet["comparisons"][0]["claims"][2]
    assert c4a["estimate"] is None and c4a["fragile"] is None and c4a["loso_n"] == 0
    tables = report.findings_tables(back)
    assert report.findings_markdown(*tables) == report.findings_markdown(
        stable_effects(), accuracy()
    )
    block = report.findings_markdown(*tables)
    assert check_block(block, back) == 1 * 2 + 4 * 3 + 2 + 2 * 2  # headers, cells, C1 flips, acc
    plain = report.findings_data(effects(), None, PROVENANCE)  # margin without the loso columns
    first = plain["studies"][0]["comparisons"][0]["claims"][0]
    assert first["margin"] == pytest.approx(0.73456) and "fragile" not in first


def test_the_committed_readme_block_parses_and_its_numbers_are_its_findings():
    text = (ROOT / "README.md").read_text()
    block = text[text.index(report.START) + len(report.START) : text.index(report.END)]
    named = re.search(r"^- Provenance \((\S+)\): ", block, re.MULTILINE)
    folder = ROOT / report.FINDINGS_DIR
    if named:
        findings = report.load_findings(ROOT / named.group(1))
    else:  # no findings.json committed yet: the findings are the committed tables themselves
        assert not (folder / report.FINDINGS_JSON).exists()
        claims = pd.read_csv(folder / "06_claims.csv")
        acc = folder / "06_accuracy.csv"
        findings = report.findings_data(claims, pd.read_csv(acc) if acc.exists() else None, {})
    assert check_block(block, findings) > 20


def test_report_writes_findings_and_names_what_is_missing(tmp_path, capsys):
    results = write_results(tmp_path / "results", stable_effects(), None)
    assert main(["report", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "missing: " + str(results / "tables" / "06_accuracy.csv") in out
    assert "fragile: 1 of 5 seeds flips it" in out
    data = report.load_findings(results / "findings.json")
    assert data["sources"] == {"claims": str(results / "tables" / "06_claims.csv")}
    assert any("06_accuracy.csv" in m for m in data["missing"])
    assert any(m.startswith("study ResNet") for m in data["missing"])  # notebook 06's other study
    assert data["provenance"]["preset"] == "unknown"  # the test scale names no preset
    assert data["provenance"]["threads"] >= 1 and data["provenance"]["cpu_capability"]
    md = (results / "findings.md").read_text()
    assert "Missing: " in md and "fragile: 1 of 5 seeds flips it" in md
    assert "stable: no seed of 5 flips it" in md and "| LeNet5 | layerwise/linear | C1 |" in md
    assert not list(results.glob(".*.tmp"))  # atomic writes leave no temp file
    (results / "tables" / "06_claims.csv").unlink()
    write_results(results, None, accuracy())
    assert main(["report", "--results-dir", str(results)]) == 0  # the accuracy alone
    out = capsys.readouterr().out
    assert "missing: " + str(results / "tables" / "06_claims.csv") in out
    assert "- LeNet5 final test accuracy (mean ± std over seeds): e2e 0.970 ± 0.0015" in out
    data = report.load_findings(results / "findings.json")
    assert data["studies"][0]["comparisons"] == [] and len(data["studies"][0]["accuracy"]) == 2


def test_report_on_an_empty_or_unreadable_results_folder(tmp_path, capsys):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "06_claims.csv").write_text("")
    assert main(["report", "--results-dir", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert "nothing to report" in out and "06_accuracy.csv not found" in out
    assert not (tmp_path / "findings.json").exists() and not (tmp_path / "findings.md").exists()


def test_readme_without_markers_is_refused_before_anything_is_written(
    tmp_path, capsys, monkeypatch
):
    write_results(tmp_path / "results", effects(), accuracy())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("# no block here\n")
    assert main(["report", "--readme"]) == 2
    out = capsys.readouterr().out
    assert report.START in out and report.END in out and "README.md has no findings block" in out
    assert (tmp_path / "README.md").read_text() == "# no block here\n"
    assert not (tmp_path / report.FINDINGS_DIR).exists()


def test_readme_block_carries_the_provenance_of_its_findings(tmp_path, capsys, monkeypatch):
    write_results(tmp_path / "results", stable_effects(), accuracy())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text(f"# x\n{report.START}\nold\n{report.END}\nafter\n")
    assert main(["report", "--readme"]) == 0
    text = (tmp_path / "README.md").read_text()
    block = text[text.index(report.START) + len(report.START) : text.index(report.END)]
    assert block.strip() == report.readme_block(report.FINDINGS_DIR).strip()
    assert "- Provenance (docs/findings/findings.json): commit " in block
    findings = report.load_findings(tmp_path / report.FINDINGS_DIR / "findings.json")
    assert findings["sources"]["claims"] == "docs/findings/06_claims.csv"
    assert check_block(block, findings) == 2 + 4 * 3 + 2 + 2 * 2 + 1
    assert text.endswith(f"{report.END}\nafter\n")
    # a later run without the accuracy table does not leave the older one behind
    (tmp_path / "results" / "tables" / "06_accuracy.csv").unlink()
    assert main(["report", "--readme"]) == 0
    assert "removed docs/findings/06_accuracy.csv" in capsys.readouterr().out
    assert "final test accuracy" not in (tmp_path / "README.md").read_text()


def test_compare_names_both_provenances_when_verdicts_differ(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / report.FINDINGS_DIR
    folder.mkdir(parents=True)
    effects().to_csv(folder / "06_claims.csv", index=False)
    report.write_findings(folder, report.findings_data(effects(), None, PROVENANCE))
    fresh = stable_effects()
    fresh.loc[0, "verdict"] = "supported"
    write_results(tmp_path / "results", fresh, None)
    assert main(["report", "--compare", "--results-dir", "results"]) == 0
    out = capsys.readouterr().out
    assert (
        "LeNet5 vs layerwise/linear C1: README inconclusive, this run supported "
        "(1.23 [0.735, 1.73], supported (fragile: 1 of 5 seeds flips it))" in out
    )
    assert f"the README's findings: {provenance_line(PROVENANCE)}" in out
    assert "  this run: commit " in out


def test_a_failed_readme_write_leaves_the_readme_whole(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    original = f"# x\n{report.START}\nold\n{report.END}\n"
    readme.write_text(original)

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        report.update_readme(readme, "new block")
    assert readme.read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]


def test_the_regimes_part_of_the_block_renders_notebook_09s_tables(tmp_path):
    """The block gains the regimes (per cell the gap with its interval, the readout verdict, C1
    with its z, the role gap; the across-cell test; the premise regime) when their tables exist."""
    import shutil

    from ibstudy.report import REGIME_TABLES, readme_block, regimes_data

    for name in ("06_claims.csv", "06_accuracy.csv"):
        shutil.copy(Path("docs/findings") / name, tmp_path / name)
    without = readme_block(tmp_path)
    summary = pd.DataFrame({
        "cell": ["lenet5/digits", "lenet5/cluttered"], "depth": "lenet5",
        "difficulty": ["digits", "cluttered"], "n_seeds": 3, "e2e_acc_mean": [0.97, 0.90],
        "layerwise_acc_mean": [0.971, 0.85], "gap_mean": [-0.001, 0.05], "gap_std": [0.002, 0.004],
        "gap_ci_low": [-0.006, 0.04], "gap_ci_high": [0.004, 0.06], "gap_k_of_n": ["1 of 3", "3 of 3"],
        "head_gap_mean": [0.0, 0.045], "readout_verdict": ["no gap", "gap"],
        "C1_estimate": [-0.5, 0.8], "C1_z": [-3.1, 4.2], "C1_verdict": ["contradicted", "supported"],
        "role_gap": [0.1, 0.3],
    })  # fmt: skip
    across = pd.DataFrame({"statistic": ["C1_estimate", "role_gap"], "rho": [1.0, 1.0],
                           "p_greater_holm": [1.0, 1.0], "n_cells": 2, "heterogeneity_p": 0.001,
                           "verdict": "untestable"})  # fmt: skip
    summary.to_csv(tmp_path / REGIME_TABLES[0], index=False)
    across.to_csv(tmp_path / REGIME_TABLES[1], index=False)
    block = readme_block(tmp_path)
    assert block.startswith(without.split("\n- Provenance")[0][:200])
    assert (
        "| lenet5/cluttered | 0.900 | 0.850 | +0.0500 ± 0.0040 [+0.0400, +0.0600], 3 of 3 |"
        in block
    )
    assert "| gap | 0.8 (+4.2), supported | 0.3 |" in block
    assert "the gap against role_gap: Spearman rho +1.00 over 2 cells" in block
    assert (
        "premise regime (the cheapest cell with a gap under both readouts): lenet5/cluttered"
        in block
    )
    data = regimes_data(tmp_path)
    assert [c["cell"] for c in data["cells"]] == ["lenet5/digits", "lenet5/cluttered"]
    assert data["across"][0]["verdict"] == "untestable"
