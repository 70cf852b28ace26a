"""Measured wall times behind the README's timing paragraph: ``make study`` per notebook and the
side-by-side speed-up of notebook 02's runs, as tidy tables committed under ``docs/benchmarks/``.

A measurement is appended as rows (:func:`append_rows`, atomic) by ``python -m ibstudy timings
--record-study`` (the executed notebooks' papermill times) and ``benchmarks/bench_training.py --only
parallel --record`` (the benchmark's wall times); :func:`timings_markdown` renders the README's block
from those tables, so no measured time in the README is typed by hand. Each row names its machine
(:func:`machine`): a time holds for the machine it was measured on (docs/method.md §13).

The speed-up target is decided on an estimate, not a count of invocations that reach it
(:func:`speedup_estimate`): the pairs' geometric mean with its t interval, met when the whole
interval is at or above the target (docs/method.md §13).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ibstudy.estimates import paired_effect
from ibstudy.provenance import UNKNOWN, git_commit
from ibstudy.store import atomic_write_text

__all__ = [
    "BENCH_DIR", "END", "PARALLEL_COLUMNS", "PARALLEL_CSV", "SETTINGS", "START", "STUDY_COLUMNS",
    "STUDY_CSV", "TARGET_VERDICTS", "TOTAL", "RECORDERS", "append_rows", "machine", "notebook_times",
    "now_stamp", "parallel_across", "parallel_rows", "parallel_summary", "read_tables",
    "speedup_estimate", "study_rows", "study_summary", "timings_markdown",
]  # fmt: skip

START = "<!-- timings:start (python -m ibstudy timings --readme writes this block; do not edit) -->"
END = "<!-- timings:end -->"
#: where the measured tables are committed
BENCH_DIR = Path("docs") / "benchmarks"
PARALLEL_CSV = "parallel.csv"
STUDY_CSV = "study_time.csv"
#: one row per setting of one benchmark invocation (``stamp`` pairs the settings of an invocation)
PARALLEL_COLUMNS = (
    "stamp", "commit", "cpu", "cores", "torch", "preset", "epochs", "runs", "setting", "workers",
    "threads", "wall_s", "source",
)  # fmt: skip
#: the benchmark's settings: one at a time (torch's threads), side by side, one at a time on 1 thread
SETTINGS = ("jobs=1", "jobs=auto", "jobs=1 threads=1")
#: one row per notebook of one ``make study`` (``stamp``: its first notebook's start), plus TOTAL
STUDY_COLUMNS = (
    "stamp",
    "commit",
    "cpu",
    "cores",
    "torch",
    "jobs",
    "notebook",
    "seconds",
    "source",
)
#: the ``notebook`` of a study's whole wall time (first notebook's start to the last one's end)
TOTAL = "total"
#: the sources that record a measurement as it is taken; any other is marked in the block
RECORDERS = ("python -m ibstudy timings --record-study", "bench_training.py --record")
#: [ours] the speed-up notebook 02's runs should reach with jobs=auto on 2 cores (issue 22)
TARGET_SPEEDUP = 1.4
#: the verdicts on the speed-up target: the interval at or above it, below it, or across it
TARGET_VERDICTS = ("met", "not met", "inconclusive")
#: [ours] the minutes ``make study`` may take on the 2-core reference machine
BUDGET_MINUTES = 45.0


def machine() -> dict[str, Any]:
    """This machine as the tables name it: CPU model and torch's CPU kernels, cores, torch."""
    from ibstudy.parallel import available_cores

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    model = model or platform.processor() or UNKNOWN
    try:
        import torch

        kernels, version = str(torch.backends.cpu.get_cpu_capability()), str(torch.__version__)
    except (ImportError, AttributeError, RuntimeError):
        kernels, version = UNKNOWN, UNKNOWN
    return {"cpu": f"{model} ({kernels})", "cores": available_cores(), "torch": version}


def now_stamp(now: datetime | None = None) -> str:
    """``now`` (default: this moment) in UTC as the tables' ``stamp``: ``2026-12-03T06:30:00Z``."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def append_rows(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> Path:
    """Append ``rows`` (each with exactly ``columns``) to the CSV at ``path``, writing a temporary
    file and renaming it, so the table is never half-written; ValueError naming a wrong row."""
    new = pd.DataFrame(list(rows))
    if new.empty:
        raise ValueError("rows must hold at least one measurement")
    if set(new.columns) != set(columns):
        missing, extra = set(columns) - set(new.columns), set(new.columns) - set(columns)
        raise ValueError(f"rows must have the columns {list(columns)}: missing {sorted(missing)}, "
                         f"unexpected {sorted(extra)}")  # fmt: skip
    target = Path(path)
    if target.exists():
        old = pd.read_csv(target)
        if list(old.columns) != list(columns):
            raise ValueError(f"{target} has the columns {list(old.columns)}, not {list(columns)}")
        new = pd.concat([old, new[list(columns)]], ignore_index=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(target, new[list(columns)].to_csv(index=False))


def notebook_times(folder: str | Path) -> pd.DataFrame:
    """Start, end and seconds of every executed notebook in ``folder`` (papermill's metadata; the
    ``.failed`` and running copies are skipped), in the order they ran."""
    rows = []
    for path in sorted(Path(folder).glob("*.ipynb")):
        if path.name.startswith(".") or path.stem.endswith(".failed"):
            continue
        meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        if not meta.get("start_time") or not meta.get("end_time"):
            continue  # not executed by papermill, or not to its end
        rows.append({"notebook": path.stem, "start": pd.Timestamp(meta["start_time"]),
                     "end": pd.Timestamp(meta["end_time"])})  # fmt: skip
    table = pd.DataFrame(rows, columns=["notebook", "start", "end"])
    if table.empty:
        return table.assign(seconds=pd.Series(dtype=float))
    table["seconds"] = (table["end"] - table["start"]).dt.total_seconds()
    return table.sort_values("start", ignore_index=True)


def study_rows(times: pd.DataFrame, *, jobs: str, facts: Mapping[str, Any], commit: str,
               source: str) -> list[dict[str, Any]]:  # fmt: skip
    """:data:`STUDY_COLUMNS` rows of one study from :func:`notebook_times`, its total (first start
    to last end) last; ValueError when no notebook was executed."""
    if times.empty:
        raise ValueError("no executed notebook with papermill times: run `make study` first")
    stamp = now_stamp(times["start"].min().to_pydatetime())
    base = {"stamp": stamp, "commit": commit, "cpu": facts["cpu"], "cores": facts["cores"],
            "torch": facts["torch"], "jobs": jobs, "source": source}  # fmt: skip
    rows = [{**base, "notebook": nb, "seconds": round(float(s), 1)}
            for nb, s in zip(times["notebook"], times["seconds"], strict=True)]  # fmt: skip
    total = (times["end"].max() - times["start"].min()).total_seconds()
    return [*rows, {**base, "notebook": TOTAL, "seconds": round(float(total), 1)}]


def parallel_rows(measured: Iterable[tuple[str, int, int, float]], *, stamp: str, preset: str,
                  epochs: int, runs: int, commit: str | None = None,
                  facts: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """:data:`PARALLEL_COLUMNS` rows of one benchmark invocation from its (setting, workers,
    threads, wall seconds); ``commit`` and ``facts`` default to this checkout and machine."""
    dirty: bool | None = False
    if commit is None:
        commit, dirty = git_commit()
    facts = machine() if facts is None else facts
    source = RECORDERS[1] + (" (uncommitted changes)" if dirty else "")
    rows = []
    for setting, workers, threads, seconds in measured:
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {list(SETTINGS)}, got {setting!r}")
        rows.append({
            "stamp": stamp, "commit": commit, "cpu": facts["cpu"], "cores": facts["cores"],
            "torch": facts["torch"], "preset": preset, "epochs": epochs, "runs": runs,
            "setting": setting, "workers": workers, "threads": threads,
            "wall_s": round(float(seconds), 1), "source": source,
        })  # fmt: skip
    return rows


def speedup_estimate(speedups: Sequence[float], target: float = TARGET_SPEEDUP,
                     level: float = 0.95) -> dict[str, Any]:  # fmt: skip
    """The geometric mean of paired speed-ups with its t interval (computed on their logs) and the
    target's verdict (docs/method.md §13): "met" when the whole interval is at or above ``target``,
    "not met" when it is below, else "inconclusive" (so is a single pair: it has no interval)."""
    r = np.asarray(speedups, dtype=float)
    if r.ndim != 1 or len(r) == 0 or not (np.isfinite(r).all() and (r > 0).all()):
        raise ValueError(f"speedups must be one or more positive numbers, got {list(speedups)}")
    out: dict[str, Any] = {"n": len(r), "mean": float(np.exp(np.log(r).mean())),
                           "low": float("nan"), "high": float("nan"), "verdict": TARGET_VERDICTS[2]}  # fmt: skip
    if len(r) >= 2:
        effect = paired_effect(np.log(r), level)
        out["low"], out["high"] = float(np.exp(effect.ci_low)), float(np.exp(effect.ci_high))
        if out["low"] >= target:
            out["verdict"] = TARGET_VERDICTS[0]
        elif out["high"] < target:
            out["verdict"] = TARGET_VERDICTS[1]
    return out


def parallel_summary(table: pd.DataFrame, target: float = TARGET_SPEEDUP) -> pd.DataFrame:
    """Per day, commit, machine and preset: the pairs (one jobs=1 and one jobs=auto wall time of one
    stamp), the range of each setting's wall time, the speed-up's geometric mean with its interval
    and verdict (:func:`speedup_estimate`), and the bound (jobs=1 over the one-thread runs shared
    out over the cores)."""
    wide = table.pivot_table(index=["stamp", "commit", "cpu", "cores", "preset", "epochs", "runs"],
                             columns="setting", values="wall_s", aggfunc="first").reset_index()  # fmt: skip
    for setting in SETTINGS:
        if setting not in wide:
            wide[setting] = float("nan")
    wide = wide.dropna(subset=[SETTINGS[0], SETTINGS[1]])
    wide["speedup"] = wide[SETTINGS[0]] / wide[SETTINGS[1]]
    share = wide[["cores", "runs"]].min(axis=1)
    wide["bound"] = wide[SETTINGS[0]] / (wide[SETTINGS[2]] / share)
    wide["day"] = wide["stamp"].str[:10]
    rows = []
    keys = ["day", "commit", "cpu", "cores", "preset", "epochs", "runs"]
    for key, g in wide.groupby(keys, sort=True):
        est = speedup_estimate(g["speedup"].tolist(), target)
        rows.append({
            **dict(zip(keys, key, strict=True)), "repeats": len(g),
            "one_min": g[SETTINGS[0]].min(), "one_max": g[SETTINGS[0]].max(),
            "auto_min": g[SETTINGS[1]].min(), "auto_max": g[SETTINGS[1]].max(),
            "speedup_mean": est["mean"], "speedup_low": est["low"], "speedup_high": est["high"],
            "verdict": est["verdict"], "bound_min": g["bound"].min(), "bound_max": g["bound"].max(),
            "source": "; ".join(sorted(set(table.loc[table["stamp"].isin(g["stamp"]), "source"]))),
        })  # fmt: skip
    return pd.DataFrame(rows)


def parallel_across(summary: pd.DataFrame, target: float = TARGET_SPEEDUP) -> pd.DataFrame:
    """Per kind of machine and preset, across the rows of :func:`parallel_summary` (each row's
    geometric mean one value, so one day's many pairs do not outweigh the other days): the speed-up's
    geometric mean with its interval and verdict. The spread between days and hosts is in it."""
    rows = []
    keys = ["cpu", "cores", "preset", "epochs", "runs"]
    for key, g in summary.groupby(keys, sort=True):
        est = speedup_estimate(g["speedup_mean"].tolist(), target)
        rows.append({**dict(zip(keys, key, strict=True)), "rows": len(g), "pairs": int(g["repeats"].sum()),
                     "speedup_mean": est["mean"], "speedup_low": est["low"],
                     "speedup_high": est["high"], "verdict": est["verdict"]})  # fmt: skip
    return pd.DataFrame(rows)


def study_summary(table: pd.DataFrame, budget: float = BUDGET_MINUTES) -> pd.DataFrame:
    """One row per recorded ``make study``: its machine, commit, jobs, minutes, whether it is within
    ``budget`` minutes, and its notebooks' times (``"00 11 s, 01 56 s, ..."``)."""
    rows = []
    for stamp, g in table.groupby("stamp", sort=True):
        total = g.loc[g["notebook"] == TOTAL, "seconds"]
        parts = g[g["notebook"] != TOTAL]
        minutes = float(total.iloc[0]) / 60 if len(total) else float("nan")
        first = g.iloc[0]
        rows.append({
            "day": str(stamp)[:10], "commit": first["commit"], "cpu": first["cpu"],
            "cores": first["cores"], "jobs": first["jobs"], "minutes": minutes,
            "within": bool(minutes <= budget),
            "notebooks": ", ".join(f"{str(nb)[:2]} {_duration(s)}"
                                   for nb, s in zip(parts["notebook"], parts["seconds"], strict=True)),
            "source": first["source"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def _duration(seconds: float) -> str:
    """``"56 s"`` under two minutes, else ``"7.7 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _minutes(minutes: float) -> str:
    whole = int(minutes)
    return f"{whole} min {round((minutes - whole) * 60):02d} s"


def _mark(source: object, notes: list[str]) -> str:
    """``""`` for a row its recorder wrote; else `` [n]``, n numbering its (new or known) note."""
    text = str(source)
    if text.startswith(RECORDERS):
        return ""
    if text not in notes:
        notes.append(text)
    return f" [{notes.index(text) + 1}]"


def _short(commit: object) -> str:
    text = str(commit)
    return text[:7] if text != UNKNOWN else "not recorded"


def timings_markdown(parallel: pd.DataFrame | None, study: pd.DataFrame | None,
                     target: float = TARGET_SPEEDUP, budget: float = BUDGET_MINUTES) -> str:  # fmt: skip
    """The README's timing block from the two tables (either may be None or empty)."""
    lines: list[str] = []
    notes: list[str] = []
    if study is not None and not study.empty:
        lines += [
            f"`make study` from an empty `results/` (`.venv` set up; minutes from the first "
            f"notebook's start to the last one's end; budget {budget:.0f} min on a 2-core machine):",
            "",
            "| date | commit | CPU | cores | jobs | wall | within budget | per notebook |",
            "|---|---|---|---:|---|---:|---|---|",
        ]
        for r in study_summary(study, budget).itertuples():
            lines.append(f"| {r.day}{_mark(r.source, notes)} | {_short(r.commit)} | {r.cpu} | {r.cores} | {r.jobs} | "
                         f"{_minutes(r.minutes)} | {'yes' if r.within else '**no**'} | "
                         f"{r.notebooks or 'not recorded'} |")  # fmt: skip
    if parallel is not None and not parallel.empty:
        summary = parallel_summary(parallel, target)
        if lines:
            lines.append("")
        lines += [
            f"Notebook 02's runs one at a time (`jobs=1`, torch's threads) and side by side "
            f"(`jobs=auto`), each from an empty folder, as pairs measured back to back (`python "
            f"benchmarks/bench_training.py --only parallel --preset study --ceiling --pairs N "
            f"--record`); the speed-up is the pairs' geometric mean with its 95 % interval, and "
            f"the target of {target:.1f}x is met when the whole interval is at or above it, not "
            f"met when it is below, inconclusive otherwise (one pair has no interval; "
            f"docs/method.md §13); the bound is what perfect sharing of one-thread runs over the "
            f"cores would give, timed once per invocation (one time on a host whose speed drifts: "
            f"it can fall below the speed-up it bounds):",
            "",
            "| date | commit | CPU | cores | preset, epochs | pairs | jobs=1 s | jobs=auto s "
            "| speed-up [95 % interval] | bound | target |",
            "|---|---|---|---:|---|---:|---:|---:|---|---|---|",
        ]
        for r in summary.itertuples():
            bound = "not recorded" if pd.isna(r.bound_min) else _span(r.bound_min, r.bound_max, "x")
            lines.append(
                f"| {r.day}{_mark(r.source, notes)} | {_short(r.commit)} | {r.cpu} | {r.cores} | "
                f"{r.preset}, {r.epochs} | "
                f"{r.repeats} | {_span(r.one_min, r.one_max)} | {_span(r.auto_min, r.auto_max)} | "
                f"{_estimate(r.speedup_mean, r.speedup_low, r.speedup_high)} | {bound} | "
                f"{r.verdict} |"
            )
        lines += [
            "",
            "Across the rows of one kind of machine (each row's mean one value, so the spread "
            "between days and hosts counts):",
            "",
            "| CPU | cores | preset, epochs | rows | pairs | speed-up [95 % interval] | target |",
            "|---|---:|---|---:|---:|---|---|",
        ]
        for r in parallel_across(summary, target).itertuples():
            lines.append(
                f"| {r.cpu} | {r.cores} | {r.preset}, {r.epochs} | {r.rows} | {r.pairs} | "
                f"{_estimate(r.speedup_mean, r.speedup_low, r.speedup_high)} | {r.verdict} |"
            )
    if notes:
        lines += ["", *(f"- [{i + 1}] {note}." for i, note in enumerate(notes))]
    return "\n".join(lines) if lines else "No timing has been recorded yet."


def _estimate(mean: float, low: float, high: float) -> str:
    """``"1.432x [1.342-1.528]"`` (3 decimals, so 1.396x is not 1.4x), or ``"1.396x"`` without one."""
    if pd.isna(low):
        return f"{mean:.3f}x"
    return f"{mean:.3f}x [{low:.3f}-{high:.3f}]"


def _span(low: float, high: float, unit: str = "") -> str:
    """``"68.3-68.8"``, or one number when both round alike (``unit="x"``: two decimals, "x")."""
    digits = 2 if unit else 1
    if round(low, digits) == round(high, digits):
        return f"{low:.{digits}f}{unit}"
    return f"{low:.{digits}f}-{high:.{digits}f}{unit}"


def read_tables(folder: str | Path = BENCH_DIR) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The committed (parallel, study) tables under ``folder``; None for a missing one."""
    out = []
    for name in (PARALLEL_CSV, STUDY_CSV):
        path = Path(folder) / name
        out.append(pd.read_csv(path) if path.is_file() else None)
    return out[0], out[1]


def main_timings(args: argparse.Namespace) -> int:
    """``timings``: record a finished study's notebook times, rewrite the README's block, or print it."""
    from ibstudy.report import update_readme

    folder = Path(args.bench_dir)
    if args.record_study:
        times = notebook_times(Path(args.record_study) / "notebooks")
        commit, dirty = git_commit()
        rows = study_rows(times, jobs=args.jobs, facts=machine(), commit=commit,
                          source=RECORDERS[0] +
                          (" (uncommitted changes)" if dirty else ""))  # fmt: skip
        path = append_rows(folder / STUDY_CSV, rows, STUDY_COLUMNS)
        print(f"recorded {len(rows) - 1} notebooks, {_minutes(rows[-1]['seconds'] / 60)} in all, "
              f"in {path}")  # fmt: skip
    block = timings_markdown(*read_tables(folder))
    if args.readme:
        update_readme(args.readme, block, start=START, end=END)
        print(f"wrote the timings block of {args.readme} from {folder}/")
    elif not args.record_study:
        print(block)
    return 0


def add_timings_parser(subparsers: Any) -> None:
    """Add the ``timings`` sub-command to argparse ``subparsers``."""
    parser = subparsers.add_parser(
        "timings",
        help="record make study's notebook times; write the README's timing block",
        description="Without options, print the README's timing block from docs/benchmarks/.",
    )
    parser.add_argument("--record-study", metavar="RESULTS", default=None,
                        help="append RESULTS/notebooks' papermill times (a finished make study) "
                        "to docs/benchmarks/study_time.csv")  # fmt: skip
    parser.add_argument("--jobs", default=os.environ.get("IBSTUDY_JOBS", "auto") or "auto",
                        help="the JOBS the study ran with (default: IBSTUDY_JOBS, else auto)")  # fmt: skip
    parser.add_argument("--readme", default=None, help="rewrite this README's timing block")
    parser.add_argument("--bench-dir", default=str(BENCH_DIR), help=argparse.SUPPRESS)
    parser.set_defaults(func=main_timings)
