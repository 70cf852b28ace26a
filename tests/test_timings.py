"""The measured-time tables behind the README's timing block (ibstudy.timings): appending rows
atomically, papermill's notebook times, the summaries with hand-computed values, and the committed
README block equal to what the committed tables give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ibstudy import timings
from ibstudy.__main__ import main
from ibstudy.report import update_readme

ROOT = Path(__file__).resolve().parents[1]
FACTS = {"cpu": "Test CPU (AVX2)", "cores": 2, "torch": "2.14.1"}


def _parallel_rows(stamp: str, walls: dict[str, float], commit: str = "abc1234") -> list[dict]:
    return [
        {"stamp": stamp, "commit": commit, **FACTS, "preset": "study", "epochs": 40, "runs": 6,
         "setting": setting, "workers": 1 if setting != "jobs=auto" else 2,
         "threads": 2 if setting == "jobs=1" else 1, "wall_s": wall, "source": "test"}
        for setting, wall in walls.items()
    ]  # fmt: skip


def _notebook(path: Path, start: str, end: str | None) -> None:
    meta = {"papermill": {"start_time": start, "end_time": end, "duration": None}}
    cell = {"cell_type": "code", "metadata": {}, "source": "1", "outputs": [],
            "execution_count": 1}  # fmt: skip
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": meta,
                                "cells": [cell]}))  # fmt: skip


def test_rows_are_appended_and_a_wrong_row_leaves_the_table_as_it_was(tmp_path) -> None:
    path = tmp_path / "bench" / "parallel.csv"
    first = _parallel_rows("2026-12-01T10:00:00Z", {"jobs=1": 100.0, "jobs=auto": 70.0})
    timings.append_rows(path, first, timings.PARALLEL_COLUMNS)
    timings.append_rows(path, _parallel_rows("2026-12-02T10:00:00Z", {"jobs=1": 99.0}),
                        timings.PARALLEL_COLUMNS)  # fmt: skip
    table = pd.read_csv(path)
    assert list(table.columns) == list(timings.PARALLEL_COLUMNS)
    assert table["wall_s"].tolist() == [100.0, 70.0, 99.0]
    before = path.read_bytes()
    bad = [{k: v for k, v in first[0].items() if k != "wall_s"}]
    with pytest.raises(ValueError, match=r"missing \['wall_s'\]"):
        timings.append_rows(path, bad, timings.PARALLEL_COLUMNS)
    with pytest.raises(ValueError, match="has the columns"):
        timings.append_rows(path, [{"a": 1}], ("a",))
    with pytest.raises(ValueError, match="at least one"):
        timings.append_rows(path, [], timings.PARALLEL_COLUMNS)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["parallel.csv"]  # no temp file left


def test_notebook_times_are_papermills_and_skip_failed_and_unfinished_copies(tmp_path) -> None:
    _notebook(tmp_path / "01_toy.ipynb", "2026-12-03T06:03:04+00:00", "2026-12-03T06:04:00.5+00:00")
    _notebook(tmp_path / "00_data.ipynb", "2026-12-03T06:02:53+00:00", "2026-12-03T06:03:03+00:00")
    _notebook(
        tmp_path / "02_x.failed.ipynb", "2026-12-03T06:05:00+00:00", "2026-12-03T06:06:00+00:00"
    )
    _notebook(tmp_path / ".02_x.running.ipynb", "2026-12-03T06:05:00+00:00", None)
    _notebook(tmp_path / "03_y.ipynb", "2026-12-03T06:07:00+00:00", None)
    times = timings.notebook_times(tmp_path)
    assert times["notebook"].tolist() == ["00_data", "01_toy"]
    assert times["seconds"].tolist() == [10.0, 56.5]
    rows = timings.study_rows(times, jobs="auto", facts=FACTS, commit="abc1234", source="test")
    assert [r["notebook"] for r in rows] == ["00_data", "01_toy", timings.TOTAL]
    assert rows[-1]["seconds"] == 67.5  # first start to last end, the gap between them included
    assert {r["stamp"] for r in rows} == {"2026-12-03T06:02:53Z"}
    with pytest.raises(ValueError, match="make study"):
        timings.study_rows(timings.notebook_times(tmp_path / "none"), jobs="1", facts=FACTS,
                           commit="x", source="test")  # fmt: skip


def test_parallel_summary_pairs_the_settings_of_each_invocation() -> None:
    rows = (
        _parallel_rows("2026-12-03T06:00:00Z", {"jobs=1": 100.0, "jobs=auto": 70.0,
                                                 "jobs=1 threads=1": 130.0})
        + _parallel_rows("2026-12-03T07:00:00Z", {"jobs=1": 96.0, "jobs=auto": 69.0})
        + _parallel_rows("2026-12-02T07:00:00Z", {"jobs=1": 99.0, "jobs=auto": 68.0}, "def5678")
    )  # fmt: skip
    summary = timings.parallel_summary(pd.DataFrame(rows), target=1.4)
    assert summary["day"].tolist() == ["2026-12-02", "2026-12-03"]
    day = summary.iloc[1]
    logs = np.log([100 / 70, 96 / 69])  # 1.43 and 1.39: their interval spans the target
    half = stats.t.ppf(0.975, 1) * logs.std(ddof=1) / np.sqrt(2)
    assert day["repeats"] == 2 and day["verdict"] == "inconclusive"
    assert day["speedup_mean"] == pytest.approx(np.sqrt(100 / 70 * 96 / 69))
    assert (day["speedup_low"], day["speedup_high"]) == pytest.approx(
        (np.exp(logs.mean() - half), np.exp(logs.mean() + half))
    )
    assert day["bound_min"] == pytest.approx(100 / (130 / 2)) == day["bound_max"]
    assert (day["one_min"], day["one_max"], day["auto_min"], day["auto_max"]) == (96, 100, 69, 70)
    one = summary.iloc[0]
    assert pd.isna(one["bound_min"]) and pd.isna(one["speedup_low"])
    assert one["verdict"] == "inconclusive"  # 1.456x, but one pair has no interval
    text = timings.timings_markdown(pd.DataFrame(rows), None, target=1.4)
    assert "| 2 | 96.0-100.0 | 69.0-70.0 | 1.410x [1.192-1.668] | 1.54x | inconclusive |" in text
    assert "| 1 | 99.0 | 68.0 | 1.456x | not recorded | inconclusive |" in text
    across = timings.parallel_across(summary, target=1.4).iloc[0]  # the two days' means, one each
    assert (across["rows"], across["pairs"]) == (2, 3)
    assert across["speedup_mean"] == pytest.approx(np.sqrt(99 / 68 * day["speedup_mean"]))
    assert "| Test CPU (AVX2) | 2 | study, 40 | 2 | 3 | 1.433x [" in text


def test_the_target_verdict_needs_the_whole_interval_on_one_side() -> None:
    est = timings.speedup_estimate([1.5, 1.6, 1.55], target=1.4)
    assert est["verdict"] == "met" and est["low"] >= 1.4 and est["n"] == 3
    assert est["mean"] == pytest.approx((1.5 * 1.6 * 1.55) ** (1 / 3))
    assert timings.speedup_estimate([1.30, 1.32, 1.31], target=1.4)["verdict"] == "not met"
    assert timings.speedup_estimate([1.30, 1.50], target=1.4)["verdict"] == "inconclusive"
    assert timings.speedup_estimate([1.9], target=1.4)["verdict"] == "inconclusive"  # no interval
    same = timings.speedup_estimate([1.45, 1.45], target=1.4)  # no spread: a zero-width interval
    assert same["verdict"] == "met" and same["low"] == pytest.approx(1.45)
    for bad in ([], [1.5, 0.0], [1.5, float("nan")], [-1.2]):
        with pytest.raises(ValueError, match="speedups must be"):
            timings.speedup_estimate(bad)


def _recorded_log_spreads() -> tuple[float, float]:
    """The committed record's spread of log speed-ups: between the pairs of one row (pooled over
    rows with several pairs) and between the rows' means."""
    table = pd.read_csv(ROOT / "docs" / "benchmarks" / "parallel.csv")
    wide = table.pivot_table(index="stamp", columns="setting", values="wall_s", aggfunc="first")
    logs = np.log(wide["jobs=1"] / wide["jobs=auto"])
    groups = wide.index.str[:10] + table.groupby("stamp")["commit"].first().reindex(wide.index)
    within = [g.to_numpy() for _, g in logs.groupby(groups) if len(g) > 1]
    pooled = np.sqrt(sum(((g - g.mean()) ** 2).sum() for g in within)
                     / sum(len(g) - 1 for g in within))  # fmt: skip
    return float(pooled), float(logs.groupby(groups).mean().std(ddof=1))


@pytest.mark.parametrize("n", [2, 3, 5])
def test_the_target_rule_says_met_rarely_when_the_speedup_is_exactly_the_target(n: int) -> None:
    """False-positive rate on simulated nulls shaped like the record: a true speed-up of exactly
    1.4x with the recorded spread (within a row, and between rows), n pairs or rows; "met" may come
    at most at the interval's one-sided 2.5 % (plus Monte-Carlo error)."""
    within, between = _recorded_log_spreads()
    assert 0 < within < between  # the record's shape: days and hosts differ more than pairs do
    rng = np.random.default_rng(n)
    draws = 2000
    for sd in (within, between):
        logs = np.log(1.4) + sd * rng.standard_normal((draws, n))
        met = sum(timings.speedup_estimate(np.exp(x), 1.4)["verdict"] == "met" for x in logs)
        assert met / draws <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / draws)
        missed = sum(timings.speedup_estimate(np.exp(x), 1.4)["verdict"] == "not met" for x in logs)
        assert missed / draws <= 0.025 + 3 * np.sqrt(0.025 * 0.975 / draws)


def test_study_summary_gives_minutes_the_budget_and_each_notebook() -> None:
    base = {"commit": "abc1234", **FACTS, "jobs": "auto", "source": "test"}
    rows = [
        {**base, "stamp": "2026-12-03T06:00:00Z", "notebook": "00_data_tour", "seconds": 11.0},
        {**base, "stamp": "2026-12-03T06:00:00Z", "notebook": "02_lenet5", "seconds": 900.0},
        {**base, "stamp": "2026-12-03T06:00:00Z", "notebook": timings.TOTAL, "seconds": 2761.0},
        {**base, "stamp": "2026-12-02T06:00:00Z", "notebook": timings.TOTAL, "seconds": 1381.0},
    ]
    summary = timings.study_summary(pd.DataFrame(rows), budget=45)
    assert summary["within"].tolist() == [True, False]
    assert summary.iloc[1]["notebooks"] == "00 11 s, 02 15.0 min"
    text = timings.timings_markdown(None, pd.DataFrame(rows), budget=45)
    assert "| 46 min 01 s | **no** | 00 11 s, 02 15.0 min |" in text
    assert "| 23 min 01 s | yes | not recorded |" in text
    assert timings.timings_markdown(None, None) == "No timing has been recorded yet."
    # a row not written by a recorder is marked and its source given below the table
    assert "| 2026-12-02 [1] |" in text and "\n- [1] test." in text
    recorded = [{**r, "source": timings.RECORDERS[0]} for r in rows]
    assert "[1]" not in timings.timings_markdown(None, pd.DataFrame(recorded), budget=45)


def test_the_committed_readme_block_is_what_the_committed_tables_give() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text[text.index(timings.START) + len(timings.START) : text.index(timings.END)]
    parallel, study = timings.read_tables(ROOT / timings.BENCH_DIR)
    assert parallel is not None and study is not None
    assert block.strip() == timings.timings_markdown(parallel, study).strip()


def test_the_command_records_a_study_and_rewrites_only_its_block(tmp_path, capsys) -> None:
    nbs = tmp_path / "results" / "notebooks"
    nbs.mkdir(parents=True)
    _notebook(nbs / "00_data.ipynb", "2026-12-03T06:02:53+00:00", "2026-12-03T06:03:03+00:00")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{timings.START}\nold\n{timings.END}\nafter\n")
    bench = tmp_path / "bench"
    assert main(["timings", "--record-study", str(tmp_path / "results"), "--jobs", "1",
                 "--bench-dir", str(bench), "--readme", str(readme)]) == 0  # fmt: skip
    table = pd.read_csv(bench / timings.STUDY_CSV)
    assert table["notebook"].tolist() == ["00_data", timings.TOTAL]
    assert table["jobs"].astype(str).tolist() == ["1", "1"]
    text = readme.read_text()
    assert text.startswith(f"# x\nbefore\n{timings.START}\n") and text.endswith(
        f"{timings.END}\nafter\n"
    )
    assert "| 0 min 10 s | yes | 00 10 s |" in text
    assert "recorded 1 notebooks" in capsys.readouterr().out


def test_a_readme_without_the_timings_markers_is_named_and_left_alone(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\nno block\n")
    with pytest.raises(ValueError, match="has no timings block"):
        update_readme(readme, "new", start=timings.START, end=timings.END)
    assert readme.read_text() == "# x\nno block\n"


def test_a_benchmark_invocation_becomes_one_row_per_setting(tmp_path) -> None:
    measured = [
        ("jobs=1", 1, 2, 95.04),
        ("jobs=auto", 2, 1, 68.36),
        ("jobs=1 threads=1", 1, 1, 126.4),
    ]
    rows = timings.parallel_rows(measured, stamp="2026-12-03T07:00:00Z", preset="study", epochs=40,
                                 runs=6, commit="abc1234", facts=FACTS)  # fmt: skip
    assert [r["wall_s"] for r in rows] == [95.0, 68.4, 126.4]
    assert {r["source"] for r in rows} == {timings.RECORDERS[1]}
    path = timings.append_rows(tmp_path / "p.csv", rows, timings.PARALLEL_COLUMNS)
    summary = timings.parallel_summary(pd.read_csv(path))
    assert summary.iloc[0]["speedup_mean"] == pytest.approx(95.0 / 68.4)
    assert summary.iloc[0]["bound_min"] == pytest.approx(95.0 / 63.2)
    with pytest.raises(ValueError, match="setting must be one of"):
        timings.parallel_rows([("jobs=3", 3, 1, 1.0)], stamp="s", preset="study", epochs=1, runs=1,
                              commit="abc1234", facts=FACTS)  # fmt: skip
