"""The study's findings as data, and the README's findings block rendered from them: no measured
number in the README is typed by hand.

``python -m ibstudy report`` reads notebook 06's tables (``results/tables/06_claims.csv``,
``06_accuracy.csv``), whatever of them exists, and writes ``results/findings.json`` (per study and
comparison, per claim: effect, interval, verdict, margin to 0 and the leave-one-seed-out check of
:mod:`ibstudy.stability` when notebook 06 computed it; the accuracy summary; the provenance of
:mod:`ibstudy.provenance`) and ``results/findings.md``, naming what is missing. ``--readme`` copies
the tables and the findings to ``docs/findings/`` and rewrites the block between the two marker
comments of ``README.md`` from them, with a provenance line; ``tests/test_report.py`` re-renders the
block from the committed copies and checks the README holds exactly that. ``--compare`` prints
every verdict of this run that differs from the README's. Every form also writes the report page
``results/index.html`` (:mod:`ibstudy.report_page`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ibstudy.provenance import collect, presets_of, provenance_line
from ibstudy.stability import STABILITY_COLUMNS, is_fragile, margin, stability_text
from ibstudy.store import atomic_write_text
from ibstudy.tables import check_table

__all__ = [
    "END",
    "FINDINGS_DIR",
    "FINDINGS_FORMAT",
    "FINDINGS_JSON",
    "FINDINGS_MD",
    "START",
    "add_report_parser",
    "compare_findings",
    "findings_data",
    "findings_markdown",
    "findings_report",
    "findings_tables",
    "load_findings",
    "main_report",
    "read_results",
    "readme_block",
    "update_readme",
    "write_findings",
]

START = "<!-- findings:start (python -m ibstudy report --readme writes this block; do not edit) -->"
END = "<!-- findings:end -->"
#: where the tables behind the README's block are committed
FINDINGS_DIR = Path("docs") / "findings"
TABLES = ("06_claims.csv", "06_accuracy.csv")
#: notebook 09's tables behind the regimes part of the block (optional: a study without them omits it)
REGIME_TABLES = ("09_regimes_summary.csv", "09_regimes_across.csv")
FINDINGS_JSON = "findings.json"
FINDINGS_MD = "findings.md"
#: the ``format`` of a findings.json this module writes and reads
FINDINGS_FORMAT = "ibstudy-findings/1"
#: columns of 06_claims.csv that findings.json keeps per claim (stability ones when present)
CLAIM_FIELDS = (
    "claim", "statement", "contrast", "direction", "unit", "n", "estimate", "ci_low", "ci_high",
    "p", "p_holm", "verdict", "d", "power", "per_seed", "detail", "reason",
)  # fmt: skip
ACCURACY_FIELDS = (
    "method", "head", "n_seeds", "final_test_acc_mean", "final_test_acc_std", "best_test_acc_mean",
    "best_test_acc_std", "final_train_acc_mean", "final_train_acc_std", "last_head_test_acc_mean",
    "last_head_test_acc_std",
)  # fmt: skip
EFFECT_COLUMNS = ("study", "baseline", "claim", "contrast", "n", "estimate", "ci_low", "ci_high",
                  "verdict", "scale")  # fmt: skip
ACCURACY_COLUMNS = ("study", "method", "head", "n_seeds", "final_test_acc_mean",
                    "final_test_acc_std")  # fmt: skip


def _num(value: float) -> str:
    """A number as the block prints it (3 significant digits; n/a when missing)."""
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"


def _fragility(row: Mapping[str, Any]) -> str:
    """ " (fragile: k of n seeds flip it)" for a verdict one seed flips, else ""."""
    if "fragile" not in row or is_fragile(row.get("fragile")) is not True:
        return ""
    return f" ({stability_text(row)})"


def _cell(row: Mapping[str, Any]) -> str:
    """One claim x comparison cell: estimate [95 % interval], verdict (and its fragility)."""
    if not math.isfinite(float(row["estimate"])):
        return "not measured"
    text = _num(float(row["estimate"]))
    if math.isfinite(float(row["ci_low"])):
        text += f" [{_num(float(row['ci_low']))}, {_num(float(row['ci_high']))}]"
    return f"{text}, {row['verdict']}{_fragility(row)}"


def _seeds(n: pd.Series) -> int:
    """A comparison's seed count: the smallest positive ``n`` of its claims (C3b's counts runs)."""
    n = pd.to_numeric(n, errors="coerce")
    return int(n[n > 0].min()) if (n > 0).any() else 0


def _scale_lines(table: pd.DataFrame) -> list[str]:
    """One "- study: scale." line per study of ``table``."""
    return [
        f"- {study}: {table[table['study'] == study]['scale'].iloc[0]}."
        for study in dict.fromkeys(table["study"])
    ]


def findings_markdown(effects: pd.DataFrame | None, accuracy: pd.DataFrame | None = None) -> str:
    """The findings block: one row per claim with its contrast and, per study x baseline, the effect
    E2E - baseline, its 95 % interval and the verdict (marked when one seed flips it); then the
    final test accuracy per method. Either table may be None (a partial results folder)."""
    out: list[str] = []
    if effects is not None:
        check_table(effects, EFFECT_COLUMNS, "effects")
        comparisons = list(dict.fromkeys(zip(effects["study"], effects["baseline"], strict=True)))
        seeds = {
            (study, base): _seeds(
                effects[(effects["study"] == study) & (effects["baseline"] == base)]["n"]
            )
            for study, base in comparisons
        }
        header = ["claim", "contrast (E2E − baseline)"] + [
            f"{study}: vs {base} ({seeds[(study, base)]} seed"
            f"{'s' if seeds[(study, base)] != 1 else ''})"
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
        out = [*lines, "", *_scale_lines(effects)]
    if accuracy is not None and len(accuracy):
        check_table(accuracy, ACCURACY_COLUMNS, "accuracy")
        if effects is None and "scale" in accuracy.columns:
            out += _scale_lines(accuracy)
        for study, group in accuracy.groupby("study", sort=False):
            parts = []
            for r in group.itertuples():
                label = r.method if r.head in ("none", None) else f"{r.method}/{r.head}"
                std = float(r.final_test_acc_std)
                spread = f" ± {std:.4f}" if math.isfinite(std) else ""
                parts.append(f"{label} {r.final_test_acc_mean:.3f}{spread} (n={r.n_seeds})")
            out.append(
                f"- {study} final test accuracy (mean ± std over seeds): " + "; ".join(parts) + "."
            )
    return "\n".join(out)


def _signed(value: object, spec: str = "+.3f") -> str:
    number = float(value)  # type: ignore[arg-type]
    return "n/a" if not math.isfinite(number) else format(number, spec)


def regimes_markdown(summary: pd.DataFrame, across: pd.DataFrame | None = None) -> str:
    """The regimes part of the block (notebook 09, docs/method.md §12 "Regimes"): per cell the
    accuracies, the seed-paired gap under the prediction (95 % interval, k of n) and under the last
    head, the readout verdict, C1's effect with its z and the role gap; then the across-cell test
    and the premise regime."""
    from ibstudy.regimes import Cell, premise_regime

    columns = ("cell", "depth", "difficulty", "n_seeds", "e2e_acc_mean", "layerwise_acc_mean",
               "gap_mean", "gap_std", "gap_ci_low", "gap_ci_high", "gap_k_of_n", "head_gap_mean",
               "readout_verdict", "C1_estimate", "C1_z", "C1_verdict", "role_gap")  # fmt: skip
    check_table(summary, columns, "regimes summary")
    seeds = int(summary["n_seeds"].min())
    lines = [
        f"Regimes (notebook 09; {seeds} seeds per cell, E2E vs layer-wise with linear heads, the "
        "same schedule in every cell):",
        "",
        "| cell | E2E acc | LW acc | gap E2E − LW (final classifier) [95 % CI], seeds > 0 | gap vs "
        "LW last head | readout verdict | C1 effect (z), verdict | role gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.to_dict("records"):
        lines.append(
            f"| {r['cell']} | {float(r['e2e_acc_mean']):.3f} | {float(r['layerwise_acc_mean']):.3f} "
            f"| {_signed(r['gap_mean'], '+.4f')} ± {_signed(r['gap_std'], '.4f')} "
            f"[{_signed(r['gap_ci_low'], '+.4f')}, {_signed(r['gap_ci_high'], '+.4f')}], "
            f"{r['gap_k_of_n']} | {_signed(r['head_gap_mean'], '+.4f')} | {r['readout_verdict']} "
            f"| {_num(float(r['C1_estimate']))} ({_signed(r['C1_z'], '+.1f')}), {r['C1_verdict']} "
            f"| {_num(float(r['role_gap']))} |"
        )
    lines.append("")
    if across is not None and len(across):
        for r in across.to_dict("records"):
            lines.append(
                f"- Across cells, the gap against {r['statistic']}: Spearman rho "
                f"{_signed(r['rho'], '+.2f')} over {int(r['n_cells'])} cells, one-sided Holm p "
                f"{_num(float(r['p_greater_holm']))} (gap heterogeneity p "
                f"{_num(float(r['heterogeneity_p']))}): {r['verdict']}."
            )
    cells = [Cell(str(d), str(f)) for d, f in zip(summary["depth"], summary["difficulty"],
                                                   strict=True)]  # fmt: skip
    premise = premise_regime(summary, cells)
    lines.append(
        f"- The premise regime (the cheapest cell with a gap under both readouts): {premise}."
        if premise
        else "- No cell has a gap under both readouts: the premise regime does not exist here."
    )
    return "\n".join(lines)


def _markers_problem(path: Path, start_marker: str = START, end_marker: str = END) -> str | None:
    """Why ``path`` cannot take the block between the two markers (missing file or markers), or
    None."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        name = start_marker.removeprefix("<!-- ").split(":", 1)[0]
        return (f"{path} has no {name} block: add the lines {start_marker!r} and {end_marker!r} "
                "where it belongs")  # fmt: skip
    return None


def update_readme(readme: str | Path, block: str, *, start: str = START, end: str = END) -> Path:
    """Replace the text between the ``start`` and ``end`` markers (default: the findings block's)
    in ``readme`` with ``block`` (atomically); ValueError naming the file when they are missing."""
    path = Path(readme)
    problem = _markers_problem(path, start, end)
    if problem:
        raise ValueError(problem)
    text = path.read_text(encoding="utf-8")
    i, j = text.find(start), text.find(end)
    new = text[: i + len(start)] + "\n" + block.rstrip() + "\n" + text[j:]
    return atomic_write_text(path, new)


def _findings_label(folder: Path) -> str:
    """How the block names the findings.json of ``folder`` (docs/findings/... for the README's)."""
    if folder.parts[-len(FINDINGS_DIR.parts) :] == FINDINGS_DIR.parts:
        return f"{FINDINGS_DIR.as_posix()}/{FINDINGS_JSON}"
    return (folder / FINDINGS_JSON).as_posix()


def _provenance_bullet(data: Mapping[str, Any], label: str) -> str:
    """The block's provenance line, naming the findings file it comes from."""
    return f"- Provenance ({label}): {provenance_line(data.get('provenance', {}))}."


def readme_block(folder: str | Path = FINDINGS_DIR) -> str:
    """The block rendered from the tables in ``folder`` (``06_claims.csv``, ``06_accuracy.csv``),
    with the provenance line of its ``findings.json`` when there is one."""
    folder = Path(folder)
    effects = pd.read_csv(folder / TABLES[0])
    accuracy = pd.read_csv(folder / TABLES[1]) if (folder / TABLES[1]).exists() else None
    block = findings_markdown(effects, accuracy)
    if (folder / REGIME_TABLES[0]).exists():
        across = folder / REGIME_TABLES[1]
        block += "\n\n" + regimes_markdown(
            pd.read_csv(folder / REGIME_TABLES[0]),
            pd.read_csv(across) if across.exists() else None,
        )
    if (folder / FINDINGS_JSON).exists():
        block += "\n" + _provenance_bullet(
            load_findings(folder / FINDINGS_JSON), _findings_label(folder)
        )
    return block


# ----------------------------------------------------------------------------------------------
# findings as data
# ----------------------------------------------------------------------------------------------

_NUMERIC = ("n", "estimate", "ci_low", "ci_high", "p", "p_holm", "d", "power", "margin",
            "loso_flips", "loso_n")  # fmt: skip


def _plain(value: object) -> object:
    """A table cell as a JSON value: numpy scalars as Python ones, NaN and NA as None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count(value: object) -> int | None:
    """An integer cell (NaN, NA and None as None)."""
    plain = _plain(value)
    return None if plain is None else int(float(plain))  # type: ignore[arg-type]


def findings_data(
    effects: pd.DataFrame | None,
    accuracy: pd.DataFrame | None,
    provenance: Mapping[str, Any],
    *,
    sources: Mapping[str, str] | None = None,
    missing: Sequence[str] = (),
) -> dict[str, Any]:
    """The findings as a JSON-ready dict: per study (its scale) and comparison (candidate,
    baseline, seeds), per claim the effect, interval, p, verdict, margin to 0 and, when the table
    has them, the leave-one-seed-out fields; per study the accuracy summary; the provenance, the
    tables read and what was missing."""
    studies: dict[str, dict[str, Any]] = {}

    def study(name: str, scale: object) -> dict[str, Any]:
        return studies.setdefault(
            name, {"study": name, "scale": _plain(scale), "comparisons": [], "accuracy": []}
        )

    if effects is not None:
        check_table(effects, EFFECT_COLUMNS, "effects")
        loso = all(c in effects.columns for c in STABILITY_COLUMNS[1:])
        for (name, base), rows in effects.groupby(["study", "baseline"], sort=False):
            claims = []
            for row in rows.to_dict("records"):
                record = {k: _plain(row[k]) for k in CLAIM_FIELDS if k in row}
                record["margin"] = _plain(
                    row["margin"] if "margin" in row else margin(row["ci_low"], row["ci_high"])
                )
                if loso:
                    record["loso_flips"] = _count(row["loso_flips"])
                    record["loso_n"] = _count(row["loso_n"])
                    record["fragile"] = is_fragile(row["fragile"])
                    record["stability"] = stability_text(row)
                claims.append(record)
            candidate = rows["candidate"].iloc[0] if "candidate" in rows.columns else None
            study(str(name), rows["scale"].iloc[0])["comparisons"].append({
                "candidate": _plain(candidate), "baseline": str(base),
                "seeds": _seeds(rows["n"]), "claims": claims,
            })  # fmt: skip
    if accuracy is not None and len(accuracy):
        check_table(accuracy, ACCURACY_COLUMNS, "accuracy")
        for name, rows in accuracy.groupby("study", sort=False):
            scale = rows["scale"].iloc[0] if "scale" in rows.columns else None
            study(str(name), scale)["accuracy"] = [
                {k: _plain(row[k]) for k in ACCURACY_FIELDS if k in row}
                for row in rows.to_dict("records")
            ]
    return {
        "format": FINDINGS_FORMAT,
        "provenance": dict(provenance),
        "sources": dict(sources or {}),
        "missing": list(missing),
        "studies": list(studies.values()),
    }


def findings_tables(data: Mapping[str, Any]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The effects and accuracy tables of a findings dict (None where it holds none): the columns
    notebook 06 writes that :func:`findings_markdown` and :func:`compare_findings` read."""
    effects, accuracy = [], []
    for entry in data.get("studies", []):
        where = {"study": entry["study"], "scale": entry.get("scale")}
        for comparison in entry.get("comparisons", []):
            for claim in comparison.get("claims", []):
                effects.append({**claim, **where, "candidate": comparison.get("candidate"),
                                "baseline": comparison["baseline"]})  # fmt: skip
        for row in entry.get("accuracy", []):
            accuracy.append({**row, **where})
    claims_table = pd.DataFrame(effects) if effects else None
    if claims_table is not None:
        for column in _NUMERIC:
            if column in claims_table.columns:
                claims_table[column] = pd.to_numeric(claims_table[column], errors="coerce")
    accuracy_table = pd.DataFrame(accuracy) if accuracy else None
    if accuracy_table is not None:
        for column in ACCURACY_FIELDS[2:]:
            if column in accuracy_table.columns:
                accuracy_table[column] = pd.to_numeric(accuracy_table[column], errors="coerce")
    return claims_table, accuracy_table


def load_findings(path: str | Path) -> dict[str, Any]:
    """A findings.json written by :func:`write_findings`; ValueError naming the file otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} cannot be read as findings ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FINDINGS_FORMAT:
        raise ValueError(f"{path} is not a findings file of format {FINDINGS_FORMAT!r}")
    if not isinstance(data.get("studies"), list) or not isinstance(data.get("provenance"), dict):
        raise ValueError(f"{path} lacks its studies or provenance")
    return data


def findings_report(data: Mapping[str, Any]) -> str:
    """``findings.md``: the provenance, what was read and what is missing, the findings block, and
    per claim x comparison how close its verdict stands to flipping."""
    effects, accuracy = findings_tables(data)
    sources = ", ".join(str(v) for v in data.get("sources", {}).values()) or "nothing"
    missing = data.get("missing", [])
    out = [
        "# Findings",
        "",
        f"Provenance: {provenance_line(data.get('provenance', {}))}.",
        "",
        f"Read from: {sources}.",
        "",
        "Missing: " + ("; ".join(missing) if missing else "nothing") + ".",
        "",
        "## Effects (E2E − baseline, 95 % interval, Holm-adjusted verdict)",
        "",
        findings_markdown(effects, accuracy) or "(no tables)",
    ]
    regimes = data.get("regimes")
    if regimes and regimes.get("cells"):
        across = pd.DataFrame(regimes.get("across") or [])
        out += ["", "## Regimes", "",
                regimes_markdown(pd.DataFrame(regimes["cells"]), across if len(across) else None)]  # fmt: skip
    if effects is not None:
        loso = "loso_n" in effects.columns
        out += [
            "",
            "## How close each verdict stands to flipping",
            "",
            "`margin`: distance of the interval's end nearest 0 from 0, in the effect's units "
            "(negative: the interval holds 0); leave one seed out: the claims re-assessed with each "
            "seed's pair left out, a verdict that one seed flips is *fragile*.",
            "",
            "| study | baseline | claim | effect [95 % interval] | p (Holm) | verdict | margin | "
            "leave one seed out |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in effects.to_dict("records"):
            estimate = _cell({**row, "fragile": None}).rsplit(", ", 1)[0]
            held = (
                stability_text(row)
                if loso
                else "not computed (the table predates the stability columns)"
            )
            out.append(
                f"| {row['study']} | {row['baseline']} | {row['claim']} | {estimate} | "
                f"{_num(float(row.get('p_holm', math.nan)))} | {row['verdict']} | "
                f"{_num(float(row['margin']))} | {held} |"
            )
    return "\n".join(out) + "\n"


def write_findings(folder: str | Path, data: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``findings.json`` and ``findings.md`` of ``data`` into ``folder``, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return (
        atomic_write_text(folder / FINDINGS_JSON, text),
        atomic_write_text(folder / FINDINGS_MD, findings_report(data)),
    )


def _read_table(path: Path, columns: Sequence[str], missing: list[str]) -> pd.DataFrame | None:
    """The table at ``path``, or None with the reason appended to ``missing``."""
    if not path.exists():
        missing.append(f"{path} (notebook 06 writes it: make study)")
        return None
    try:
        table = pd.read_csv(path)
        check_table(table, columns, path.name)
    except (OSError, ValueError, pd.errors.EmptyDataError) as exc:
        missing.append(f"{path} (unreadable: {exc})")
        return None
    if table.empty:
        missing.append(f"{path} (no rows: no study had run)")
        return None
    return table


def read_results(
    results_dir: str | Path,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, dict[str, str], list[str]]:
    """Notebook 06's tables under ``results_dir``: (effects or None, accuracy or None, the files
    read, what is missing: a table, or a study of notebook 06 that is in neither table)."""
    from ibstudy.study import SUMMARY_STUDIES

    tables = Path(results_dir) / "tables"
    missing: list[str] = []
    effects = _read_table(tables / TABLES[0], EFFECT_COLUMNS, missing)
    accuracy = _read_table(tables / TABLES[1], ACCURACY_COLUMNS, missing)
    sources = {
        key: str(tables / name)
        for key, name, table in (("claims", TABLES[0], effects), ("accuracy", TABLES[1], accuracy))
        if table is not None
    }
    for table, name in ((effects, TABLES[0]), (accuracy, TABLES[1])):
        if table is None:
            continue
        for label, notebooks in SUMMARY_STUDIES.items():
            if label not in set(table["study"]):
                missing.append(
                    f"study {label} in {name} (its notebooks' tables: {', '.join(notebooks)})"
                )
    return effects, accuracy, sources, missing


def collect_findings(results_dir: str | Path) -> dict[str, Any] | None:
    """The findings of ``results_dir`` with this process's provenance (the preset read from the
    tables' scales, the runs' thread counts from ``results_dir/runs``); None when neither table
    is there."""
    effects, accuracy, sources, missing = read_results(results_dir)
    if effects is None and accuracy is None:
        return None
    scales = [t["scale"] for t in (effects, accuracy) if t is not None and "scale" in t.columns]
    preset = presets_of(pd.concat(scales)) if scales else presets_of([])
    record = collect(preset=preset, runs_dir=Path(results_dir) / "runs")
    data = findings_data(effects, accuracy, record, sources=sources, missing=missing)
    regimes = regimes_data(Path(results_dir) / "tables")
    if regimes is not None:
        data["regimes"] = regimes
    return data


def regimes_data(tables: Path) -> dict[str, Any] | None:
    """Notebook 09's per-cell summary and across-cell test under ``tables`` as JSON-ready records
    (``{"cells": [...], "across": [...]}``), or None when notebook 09 has not run."""
    if not (tables / REGIME_TABLES[0]).exists():
        return None
    out: dict[str, Any] = {}
    for key, name in zip(("cells", "across"), REGIME_TABLES, strict=True):
        path = tables / name
        frame = pd.read_csv(path) if path.exists() else pd.DataFrame()
        out[key] = [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]
    return out


# ----------------------------------------------------------------------------------------------
# this run against the README
# ----------------------------------------------------------------------------------------------


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
        both = a.merge(b[[*keys, "verdict"]], on=keys, suffixes=("", "_readme"))
        for row in both.to_dict("records"):
            if row["verdict"] != row["verdict_readme"]:
                lines.append(
                    f"{study} vs {row['baseline']} {row['claim']}: README "
                    f"{row['verdict_readme']}, this run {row['verdict']} ({_cell(row)})"
                )
    return lines


def _compare(effects: pd.DataFrame | None, data: Mapping[str, Any]) -> int:
    """``--compare``: print where this run's verdicts differ from the README's (never fails: it
    reports, at the end of ``make study``)."""
    if effects is None:
        print(f"not compared: this run has no {TABLES[0]}")
        return 0
    committed = FINDINGS_DIR / TABLES[0]
    if not committed.exists():
        print(f"not compared: {committed} not found: the README has no committed findings")
        return 0
    lines = compare_findings(effects, pd.read_csv(committed))
    if not lines:
        print("every verdict of this run agrees with the README's findings block")
        return 0
    print("where this run's verdicts differ from the README's findings block:")
    print("\n".join(f"  {line}" for line in lines))
    theirs = FINDINGS_DIR / FINDINGS_JSON
    try:
        readme = provenance_line(load_findings(theirs)["provenance"]) if theirs.exists() else None
    except ValueError as exc:
        readme = f"unreadable ({exc})"
    print(f"  the README's findings: {readme or f'no provenance ({theirs} missing)'}")
    print(f"  this run: {provenance_line(data['provenance'])}")
    return 0


def _write_readme(readme: Path, results: Path, data: Mapping[str, Any]) -> int:
    """``--readme``: commit this run's tables and findings to docs/findings/ and rewrite the block."""
    problem = _markers_problem(readme)
    if problem:
        print(f"error: {problem}")
        return 2
    tables = results / "tables"
    if not (tables / TABLES[0]).exists():
        print(f"error: {tables / TABLES[0]} not found: the README's block needs it (make study)")
        return 2
    FINDINGS_DIR.mkdir(parents=True, exist_ok=True)
    sources = {}
    names = (*TABLES, *REGIME_TABLES)
    for key, name in zip(("claims", "accuracy", "regimes", "regimes_across"), names, strict=True):
        if (tables / name).exists():
            atomic_write_text(FINDINGS_DIR / name, (tables / name).read_text(encoding="utf-8"))
            sources[key] = f"{FINDINGS_DIR.as_posix()}/{name}"
        elif (FINDINGS_DIR / name).exists():  # an older run's table would not match this one's
            (FINDINGS_DIR / name).unlink()
            print(f"removed {FINDINGS_DIR / name}: this run has no {name}")
    write_findings(FINDINGS_DIR, {**data, "sources": sources})
    update_readme(readme, readme_block(FINDINGS_DIR))
    print(f"wrote the findings block of {readme} from {FINDINGS_DIR}/")
    return 0


def _write_page(results: Path, data: Mapping[str, Any] | None) -> None:
    """Write the report page ``index.html`` (and its animations) of whatever ``results`` holds."""
    from ibstudy.report_page import write_report_page

    if results.is_dir():
        print(f"wrote {write_report_page(results, data)}")


def main_report(args: argparse.Namespace) -> int:
    """The ``report`` sub-command: write ``findings.json`` and ``findings.md`` into the results
    folder and print the block; with ``--readme`` commit them and write the README's block; with
    ``--compare`` print where this run's verdicts differ from the README's. Exit 2 when the results
    hold neither of notebook 06's tables."""
    results = Path(args.results_dir)
    data = collect_findings(results)
    if data is None:
        tables = results / "tables"
        print(
            f"error: nothing to report: {tables / TABLES[0]} not found, {tables / TABLES[1]} not "
            "found: run notebook 06 first (make study)"
        )
        _write_page(results, None)
        return 2
    json_path, md_path = write_findings(results, data)
    print(f"wrote {json_path} and {md_path}")
    _write_page(results, data)
    for item in data["missing"]:
        print(f"missing: {item}")
    effects, accuracy = findings_tables(data)
    if args.compare:
        return _compare(effects, data)
    if args.readme:
        return _write_readme(Path(args.readme), results, data)
    label = (results / FINDINGS_JSON).as_posix()
    print(findings_markdown(effects, accuracy) + "\n" + _provenance_bullet(data, label))
    return 0


def add_report_parser(subparsers: Any) -> None:
    """Add the ``report`` sub-command to ``subparsers``."""
    parser = subparsers.add_parser(
        "report",
        help="write results/findings.json and findings.md from notebook 06's tables, print the "
        "findings block (and update README.md)",
    )
    parser.add_argument(
        "--results-dir", default="results", help="where make study wrote its tables"
    )
    parser.add_argument(
        "--readme", nargs="?", const="README.md", default=None,
        help="write the block into this README (default README.md) and copy its tables and "
        "findings.json to docs/findings/",
    )  # fmt: skip
    parser.add_argument(
        "--compare", action="store_true",
        help="print every verdict of this run that differs from the README's (never fails)",
    )  # fmt: skip
    parser.set_defaults(func=main_report)
