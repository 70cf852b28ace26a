"""The README's findings block, rendered from the study's effect tables: no measured number in it is
typed by hand.

``python -m ibstudy report --readme`` copies notebook 06's tables (``results/tables/06_claims.csv``,
``06_accuracy.csv``) to ``docs/findings/`` and rewrites the block between the two marker comments of
``README.md`` from them; ``tests/test_report.py`` re-renders the block from the committed copies and
checks the README holds exactly that.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ibstudy.store import atomic_write_text
from ibstudy.tables import check_table

__all__ = [
    "END",
    "FINDINGS_DIR",
    "START",
    "add_report_parser",
    "compare_findings",
    "findings_markdown",
    "main_report",
    "readme_block",
    "update_readme",
]

START = "<!-- findings:start (python -m ibstudy report --readme writes this block; do not edit) -->"
END = "<!-- findings:end -->"
#: where the tables behind the README's block are committed
FINDINGS_DIR = Path("docs") / "findings"
TABLES = ("06_claims.csv", "06_accuracy.csv")


def _num(value: float) -> str:
    """A number as the block prints it (3 significant digits; n/a when missing)."""
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def _cell(row: pd.Series) -> str:
    """One claim x comparison cell: estimate [95 % interval], verdict."""
    if not math.isfinite(float(row["estimate"])):
        return "not measured"
    text = _num(float(row["estimate"]))
    if math.isfinite(float(row["ci_low"])):
        text += f" [{_num(float(row['ci_low']))}, {_num(float(row['ci_high']))}]"
    return f"{text}, {row['verdict']}"


def findings_markdown(effects: pd.DataFrame, accuracy: pd.DataFrame | None = None) -> str:
    """The findings block: one row per claim with its contrast and, per study x baseline, the effect
    E2E - baseline, its 95 % interval and the verdict; then the final test accuracy per method."""
    check_table(effects, ("study", "baseline", "claim", "contrast", "n", "estimate", "ci_low",
                          "ci_high", "verdict", "scale"), "effects")  # fmt: skip
    comparisons = list(dict.fromkeys(zip(effects["study"], effects["baseline"], strict=True)))
    seeds = {}
    for study, base in comparisons:  # the seed-paired claims' n (C3b's n counts runs)
        n = effects[(effects["study"] == study) & (effects["baseline"] == base)]["n"]
        seeds[(study, base)] = int(n[n > 0].min()) if (n > 0).any() else 0
    header = ["claim", "contrast (E2E − baseline)"] + [
        f"{study}: vs {base} ({seeds[(study, base)]} seed{'s' if seeds[(study, base)] != 1 else ''})"
        for study, base in comparisons
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for claim in dict.fromkeys(effects["claim"]):
        rows = effects[effects["claim"] == claim]
        cells = [claim, str(rows["contrast"].iloc[0])]
        for study, base in comparisons:
            match = rows[(rows["study"] == study) & (rows["baseline"] == base)]
            cells.append(_cell(match.iloc[0]) if len(match) else "")
        lines.append("| " + " | ".join(cells) + " |")
    out = [*lines, ""]
    for study in dict.fromkeys(effects["study"]):
        scale = effects[effects["study"] == study]["scale"].iloc[0]
        out.append(f"- {study}: {scale}.")
    if accuracy is not None and len(accuracy):
        check_table(accuracy, ("study", "method", "head", "n_seeds", "final_test_acc_mean",
                               "final_test_acc_std"), "accuracy")  # fmt: skip
        for study, group in accuracy.groupby("study", sort=False):
            parts = []
            for r in group.itertuples():
                label = r.method if r.head in ("none", None) else f"{r.method}/{r.head}"
                std = r.final_test_acc_std
                spread = f" ± {std:.4f}" if math.isfinite(std) else ""
                parts.append(f"{label} {r.final_test_acc_mean:.3f}{spread} (n={r.n_seeds})")
            out.append(
                f"- {study} final test accuracy (mean ± std over seeds): " + "; ".join(parts) + "."
            )
    return "\n".join(out)


def update_readme(readme: str | Path, block: str) -> Path:
    """Replace the text between :data:`START` and :data:`END` in ``readme`` with ``block``
    (atomically); ValueError naming the file when the markers are missing or out of order."""
    path = Path(readme)
    text = path.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(
            f"{path} has no findings block: add the lines {START!r} and {END!r} where it belongs"
        )
    new = text[: start + len(START)] + "\n" + block.rstrip() + "\n" + text[end:]
    return atomic_write_text(path, new)


def readme_block(folder: str | Path = FINDINGS_DIR) -> str:
    """The block rendered from the tables in ``folder`` (``06_claims.csv``, ``06_accuracy.csv``)."""
    folder = Path(folder)
    effects = pd.read_csv(folder / TABLES[0])
    accuracy = pd.read_csv(folder / TABLES[1]) if (folder / TABLES[1]).exists() else None
    return findings_markdown(effects, accuracy)


def compare_findings(fresh: pd.DataFrame, committed: pd.DataFrame) -> list[str]:
    """One line per claim x comparison whose verdict in ``fresh`` (this run's 06 table) differs from
    ``committed`` (the README's), with this run's effect; a line saying so when the scales differ
    (nothing is compared then) or a comparison is on one side only."""
    keys = ["study", "baseline", "claim"]
    for name, table in (("fresh", fresh), ("committed", committed)):
        missing = [c for c in (*keys, "estimate", "ci_low", "ci_high", "verdict", "scale")
                   if c not in table.columns]  # fmt: skip
        if missing:
            raise ValueError(f"{name} findings lack column(s) {missing}")
    lines = []
    for study in dict.fromkeys(pd.concat([fresh["study"], committed["study"]])):
        a, b = fresh[fresh["study"] == study], committed[committed["study"] == study]
        if a.empty or b.empty:
            lines.append(f"{study}: only in {'the README' if a.empty else 'this run'}")
            continue
        if set(a["scale"]) != set(b["scale"]):
            lines.append(
                f"{study}: not compared, this run's scale ({a['scale'].iloc[0]}) is not the "
                f"README's ({b['scale'].iloc[0]})"
            )
            continue
        both = a.merge(b, on=keys, suffixes=("", "_readme"))
        for row in both.itertuples():
            if row.verdict != row.verdict_readme:
                lines.append(
                    f"{study} vs {row.baseline} {row.claim}: README {row.verdict_readme}, this run "
                    f"{row.verdict} ({_cell(pd.Series(row._asdict()))})"
                )
    return lines


def main_report(args: argparse.Namespace) -> int:
    """The ``report`` sub-command: print the block; with ``--readme`` commit its tables and write
    it; with ``--compare`` print where this run's verdicts differ from the README's."""
    tables = Path(args.results_dir) / "tables"
    missing = [t for t in TABLES[:1] if not (tables / t).exists()]
    if missing:
        print(f"error: {tables / missing[0]} not found: run notebook 06 first (make study)")
        return 2
    if args.compare:
        committed = FINDINGS_DIR / TABLES[0]
        if not committed.exists():
            print(f"error: {committed} not found: the README has no committed findings to compare")
            return 2
        lines = compare_findings(pd.read_csv(tables / TABLES[0]), pd.read_csv(committed))
        if lines:
            print("where this run's verdicts differ from the README's findings block:")
            print("\n".join(f"  {line}" for line in lines))
        else:
            print("every verdict of this run agrees with the README's findings block")
        return 0
    if args.readme:
        FINDINGS_DIR.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            if (tables / name).exists():
                shutil.copyfile(tables / name, FINDINGS_DIR / name)
        block = readme_block(FINDINGS_DIR)
        update_readme(args.readme, block)
        print(f"wrote the findings block of {args.readme} from {FINDINGS_DIR}/")
    else:
        print(readme_block(tables))
    return 0


def add_report_parser(subparsers: Any) -> None:
    """Add the ``report`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "report", help="render the findings block from notebook 06's tables (and update README.md)"
    )
    parser.add_argument(
        "--results-dir", default="results", help="where make study wrote its tables"
    )
    parser.add_argument(
        "--readme", nargs="?", const="README.md", default=None,
        help="write the block into this README (default README.md) and copy its tables to "
        "docs/findings/",
    )  # fmt: skip
    parser.add_argument(
        "--compare", action="store_true",
        help="print every verdict of this run that differs from the README's (never fails)",
    )  # fmt: skip
    parser.set_defaults(func=main_report)
