"""The study's report page, ``results/index.html``: one self-contained page rebuilt from whatever the
results folder holds (``python -m ibstudy report``, the last step of ``make study``).

The page holds the claims table per study (from ``findings.json``, else notebook 06's tables), the
accuracy summary, the plane animations and the key figures (embedded as base64 data URIs), links to
every figure file and to every executed notebook's HTML export, and the run list with each run's
config. Every link is relative to the results folder and nothing refers to the network: the page can
be copied, mailed or opened offline. :func:`write_animations` first renders the plane animations of the
training notebooks' tables (:data:`ANIMATIONS`) as GIFs where they are missing or older than the
tables.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ibstudy.provenance import provenance_line
from ibstudy.store import atomic_write_text

__all__ = [
    "ANIMATIONS",
    "INDEX",
    "KEY_FIGURES",
    "PlaneGif",
    "build_page",
    "write_animations",
    "write_report_page",
]

INDEX = "index.html"


@dataclass(frozen=True)
class PlaneGif:
    """A plane animation the report renders: ``figures/<stem>.gif`` from ``tables/<tables>_*.csv``."""

    stem: str
    tables: str
    label: str
    ncols: int = 5


#: the animations of the page, in its order (the first is the README's asset)
ANIMATIONS: tuple[PlaneGif, ...] = (
    PlaneGif("02_lenet5_plane", "02_lenet5", "LeNet5"),
    PlaneGif("05_resnet_plane", "05_resnet", "ResNet"),
)
#: the figures embedded in the page (stem, caption), in its order; the others are linked
KEY_FIGURES: tuple[tuple[str, str], ...] = (
    ("02_lenet5_plane", "LeNet5 in the plane, E2E vs layer-wise, mean of seeds (notebook 02)"),
    ("02_lenet5_depth", "LeNet5: depth profile at the last epoch, claim C1 (notebook 02)"),
    ("02_lenet5_accuracy", "LeNet5: accuracy over training, claim C4 (notebook 02)"),
    ("03_first_layer_heads", "LeNet5: the first layer under each auxiliary head (notebook 03)"),
    ("05_resnet_plane", "ResNet in the plane (notebook 05)"),
    ("05_resnet_xz_over_epochs", "ResNet: nHSIC(X;Z) over training per block, C3 (notebook 05)"),
    ("06_forest", "Every claim's effect with its 95 % interval and verdict (notebook 06)"),
    ("07_forest", "The plane's claims under other estimators (notebook 07)"),
    ("08_plane", "Methods beyond layer-wise training in the plane (notebook 08)"),
)
_VERDICT_COLORS = {"supported": "#1b7837", "contradicted": "#b2182b", "inconclusive": "#555",
                   "not measured": "#999"}  # fmt: skip
_RUN_FIELDS = ("model", "width", "method", "head", "dataset", "seed", "epochs", "preset")
_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 0 1.2em 3em; color: #222; }
h1 { margin-top: 0.8em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0 2em; }
figure img { max-width: min(100%, 1100px); height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; } .muted { color: #777; font-size: 13px; }
details pre { font-size: 12px; background: #f8f8f8; padding: 0.5em; overflow-x: auto; }
nav a { margin-right: 1em; }
"""


# ----------------------------------------------------------------------------------------------
# animations
# ----------------------------------------------------------------------------------------------


def _stale(target: Path, sources: Sequence[Path]) -> bool:
    """Whether ``target`` is missing or older than any of ``sources``."""
    if not target.exists():
        return True
    return target.stat().st_mtime < max(s.stat().st_mtime for s in sources)


def write_animations(
    results_dir: str | os.PathLike[str], gifs: Sequence[PlaneGif] = ANIMATIONS
) -> list[Path]:
    """Render each of ``gifs`` whose tables exist, where the GIF is missing or older than them
    (seed mean, test accuracy in the label); returns the GIFs written."""
    from ibstudy.animate import animate_plane, save_gif
    from ibstudy.study import read_tables

    results = Path(results_dir)
    written = []
    for gif in gifs:
        sources = [results / "tables" / f"{gif.tables}_{kind}.csv" for kind in ("epochs", "layers")]
        target = results / "figures" / f"{gif.stem}.gif"
        if not all(s.exists() for s in sources) or not _stale(target, sources):
            continue
        found = read_tables(gif.tables, results_dir=str(results))
        assert found is not None
        epochs, layers = found
        scale = str(layers["scale"].iloc[0]) if "scale" in layers.columns else ""
        short = ", ".join(scale.split(", ")[:3])
        title = f"{gif.label}: E2E vs layer-wise, mean of seeds" + (f" ({short})" if short else "")
        anim = animate_plane(layers, epochs, seeds="mean", ncols=gif.ncols, title=title)
        written.append(save_gif(anim, target))
    return written


# ----------------------------------------------------------------------------------------------
# the page's parts
# ----------------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".gif": "image/gif"}[path.suffix.lower()]
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _link(results: Path, path: Path, text: str | None = None) -> str:
    """An ``<a>`` to ``path`` relative to the results folder (URL-quoted, POSIX separators)."""
    from urllib.parse import quote

    rel = path.relative_to(results).as_posix()
    return f'<a href="{quote(rel)}">{_esc(text or rel)}</a>'


def _num(value: object, digits: int = 3) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    return f"{number:.{digits}g}" if math.isfinite(number) else "n/a"


def _claims_html(findings: Mapping[str, Any]) -> str:
    """Per study: one row per claim, one column per comparison (effect [95 % interval], verdict)."""
    out = []
    for study in findings.get("studies", []):
        comparisons = study.get("comparisons", [])
        if not comparisons:
            continue
        out.append(f"<h3>{_esc(study['study'])}</h3>")
        if study.get("scale"):
            out.append(f'<p class="muted">{_esc(study["scale"])}</p>')
        claims: dict[str, dict[str, Any]] = {}
        for comparison in comparisons:
            for claim in comparison.get("claims", []):
                claims.setdefault(str(claim["claim"]), claim)
        head = "".join(
            f"<th>vs {_esc(c['baseline'])} ({_esc(c.get('seeds', '?'))} seeds)</th>"
            for c in comparisons
        )
        rows = [f"<tr><th>claim</th><th>contrast (E2E − baseline)</th>{head}</tr>"]
        for name, first in claims.items():
            cells = []
            for comparison in comparisons:
                match = [c for c in comparison.get("claims", []) if str(c["claim"]) == name]
                cells.append(f"<td>{_claim_cell(match[0]) if match else ''}</td>")
            contrast = first.get("contrast") or first.get("statement") or ""
            rows.append(f"<tr><td>{_esc(name)}</td><td>{_esc(contrast)}</td>{''.join(cells)}</tr>")
        out.append("<table>" + "".join(rows) + "</table>")
    return "\n".join(out) or '<p class="muted">No claims: notebook 06 has not run.</p>'


def _claim_cell(claim: Mapping[str, Any]) -> str:
    """``estimate [low, high]``, the verdict in its colour and, when one seed flips it, fragile."""
    estimate = claim.get("estimate")
    if estimate is None or not math.isfinite(float(estimate)):
        return f'<span style="color:{_VERDICT_COLORS["not measured"]}">not measured</span>'
    text = _num(estimate)
    if claim.get("ci_low") is not None and math.isfinite(float(claim["ci_low"])):
        text += f" [{_num(claim['ci_low'])}, {_num(claim['ci_high'])}]"
    verdict = str(claim.get("verdict", ""))
    color = _VERDICT_COLORS.get(verdict, "#555")
    cell = f'{_esc(text)}, <b style="color:{color}">{_esc(verdict)}</b>'
    if claim.get("fragile") is True and claim.get("stability"):
        cell += f' <span class="muted">({_esc(claim["stability"])})</span>'
    return cell


def _regimes_html(findings: Mapping[str, Any]) -> str:
    """Notebook 09's grid: per cell the accuracies, the gap under each readout, the claims'
    verdicts and the role gap; then the across-cell test (docs/method.md §12 "Regimes")."""
    regimes = findings.get("regimes") or {}
    cells = regimes.get("cells") or []
    if not cells:
        return '<p class="muted">No regimes: notebook 09 has not run.</p>'
    head = ("<tr><th>cell</th><th>seeds</th><th>E2E acc</th><th>LW acc</th><th>gap E2E − LW "
            "(final classifier) [95 % CI], seeds &gt; 0</th><th>gap vs LW last head</th>"
            "<th>readout verdict</th><th>C1 (z)</th><th>C2</th><th>C3</th><th>C4a</th>"
            "<th>role gap</th></tr>")  # fmt: skip
    rows = []
    for c in cells:
        verdicts = "".join(
            f"<td>{_claim_cell({'estimate': c.get(f'{k}_estimate'), 'verdict': c.get(f'{k}_verdict')})}"
            + (f" (z {_num(c.get('C1_z'), 3)})" if k == "C1" else "")
            + "</td>"
            for k in ("C1", "C2", "C3", "C4a")
        )
        rows.append(
            f"<tr><td>{_esc(c['cell'])}</td><td class='num'>{_esc(c.get('n_seeds'))}</td>"
            f"<td class='num'>{_num(c.get('e2e_acc_mean'), 4)}</td>"
            f"<td class='num'>{_num(c.get('layerwise_acc_mean'), 4)}</td>"
            f"<td class='num'>{_num(c.get('gap_mean'), 3)} [{_num(c.get('gap_ci_low'), 3)}, "
            f"{_num(c.get('gap_ci_high'), 3)}], {_esc(c.get('gap_k_of_n'))}</td>"
            f"<td class='num'>{_num(c.get('head_gap_mean'), 3)}</td>"
            f"<td>{_esc(c.get('readout_verdict'))}</td>{verdicts}"
            f"<td class='num'>{_num(c.get('role_gap'), 3)}</td></tr>"
        )
    lines = [
        f"<li>the gap against {_esc(a['statistic'])}: Spearman rho {_num(a.get('rho'), 2)} over "
        f"{_esc(a.get('n_cells'))} cells, one-sided Holm p {_num(a.get('p_greater_holm'), 3)}: "
        f"<b>{_esc(a.get('verdict'))}</b></li>"
        for a in regimes.get("across") or []
    ]
    across = f"<p>Across cells:</p><ul>{''.join(lines)}</ul>" if lines else ""
    return "<table>" + head + "".join(rows) + "</table>" + across


def _accuracy_html(findings: Mapping[str, Any]) -> str:
    """Per study: final test accuracy (mean ± std over seeds) and best test accuracy per arm."""
    rows = []
    for study in findings.get("studies", []):
        for r in study.get("accuracy", []):
            arm = r["method"] if r.get("head") in ("none", None) else f"{r['method']}/{r['head']}"
            std = r.get("final_test_acc_std")
            spread = f" ± {_num(std, 2)}" if std is not None and math.isfinite(float(std)) else ""
            rows.append(
                f"<tr><td>{_esc(study['study'])}</td><td>{_esc(arm)}</td>"
                f'<td class="num">{_esc(r.get("n_seeds", ""))}</td>'
                f'<td class="num">{_num(r.get("final_test_acc_mean"), 4)}{spread}</td>'
                f'<td class="num">{_num(r.get("best_test_acc_mean"), 4)}</td></tr>'
            )
    if not rows:
        return '<p class="muted">No accuracy summary: notebook 06 has not run.</p>'
    head = ("<tr><th>study</th><th>method</th><th>seeds</th><th>final test accuracy "
            "(mean ± std)</th><th>best test accuracy (mean)</th></tr>")  # fmt: skip
    return "<table>" + head + "".join(rows) + "</table>"


def _gifs_html(results: Path) -> str:
    figures = results / "figures"
    found = sorted(figures.glob("*.gif")) if figures.is_dir() else []
    order = {g.stem: k for k, g in enumerate(ANIMATIONS)}
    found.sort(key=lambda p: (order.get(p.stem, len(order)), p.name))
    if not found:
        return '<p class="muted">No animation: the training notebooks have not run.</p>'
    return "\n".join(
        f'<figure><img src="{_data_uri(p)}" alt="{_esc(p.stem)} animated">'
        f"<figcaption>{_esc(p.stem)}: each block's path through the plane, one frame per record "
        f"point ({_link(results, p)})</figcaption></figure>"
        for p in found
    )


def _figures_html(results: Path) -> str:
    """The key figures embedded, then a link to every figure file."""
    figures = results / "figures"
    out = []
    for stem, caption in KEY_FIGURES:
        png = figures / f"{stem}.png"
        if png.exists():
            out.append(f'<figure><img src="{_data_uri(png)}" alt="{_esc(stem)}">'
                       f"<figcaption>{_esc(caption)} ({_link(results, png)})</figcaption>"
                       "</figure>")  # fmt: skip
    files = sorted(figures.glob("*")) if figures.is_dir() else []
    files = [f for f in files if f.is_file() and not f.name.startswith(".")]
    if files:
        stems = sorted({f.stem for f in files})
        items = [
            f"<li>{_esc(stem)}: "
            + ", ".join(_link(results, f, f.suffix.lstrip(".")) for f in files if f.stem == stem)
            + "</li>"
            for stem in stems
        ]
        out.append("<h3>Every figure</h3><ul>" + "".join(items) + "</ul>")
    return "\n".join(out) or '<p class="muted">No figures yet.</p>'


def _notebooks_html(results: Path) -> str:
    """Every executed notebook with its HTML export (a failed one marked as such)."""
    executed = (
        sorted((results / "notebooks").glob("*.ipynb")) if (results / "notebooks").is_dir() else []
    )
    pages = sorted((results / "html").glob("*.html")) if (results / "html").is_dir() else []
    stems = sorted(
        {p.stem for p in executed if not p.name.startswith(".")} | {p.stem for p in pages}
    )
    if not stems:
        return '<p class="muted">No executed notebook: run make study.</p>'
    items = []
    for stem in stems:
        page = results / "html" / f"{stem}.html"
        notebook = results / "notebooks" / f"{stem}.ipynb"
        name = stem.removesuffix(".failed")
        state = " <b style='color:#b2182b'>failed</b>" if stem.endswith(".failed") else ""
        parts = [_link(results, page, "HTML")] if page.exists() else ["no HTML export"]
        if notebook.exists():
            parts.append(_link(results, notebook, "ipynb"))
        items.append(f"<li>{_esc(name)}{state}: {', '.join(parts)}</li>")
    return "<ul>" + "".join(items) + "</ul>"


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config for display: absolute paths (this machine's) replaced by a note."""
    return {
        k: ("(a local path)" if isinstance(v, str) and os.path.isabs(v) else v)
        for k, v in config.items()
    }


def _runs_html(results: Path) -> str:
    """One row per run folder: its settings, completeness, final test accuracy, and its config."""
    runs = results / "runs"
    folders = (
        sorted(p for p in runs.iterdir() if (p / "config.json").is_file()) if runs.is_dir() else []
    )
    if not folders:
        return '<p class="muted">No runs yet.</p>'
    head = "".join(
        f"<th>{f}</th>" for f in ("run", *_RUN_FIELDS, "complete", "final test acc", "config")
    )
    rows = [f"<tr>{head}</tr>"]
    for folder in folders:
        try:
            meta = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            config = dict(meta["config"])
        except (OSError, ValueError, KeyError, TypeError):
            rows.append(f"<tr><td>{_esc(folder.name)}</td><td colspan='{len(_RUN_FIELDS) + 3}'>"
                        "config.json unreadable</td></tr>")  # fmt: skip
            continue
        acc = "n/a"
        try:
            epochs = pd.read_csv(folder / "epochs.csv")
            acc = _num(epochs["test_acc"].dropna().iloc[-1], 4)
        except (OSError, ValueError, KeyError, IndexError, pd.errors.EmptyDataError):
            pass
        cells = "".join(f"<td>{_esc(config.get(f, ''))}</td>" for f in _RUN_FIELDS)
        shown = json.dumps(_plain_config(config), indent=1, sort_keys=True)
        rows.append(
            f"<tr><td>{_esc(meta.get('run_id', folder.name))}</td>{cells}"
            f"<td>{'yes' if meta.get('complete') else 'no'}</td><td class='num'>{acc}</td>"
            f"<td><details><summary>config</summary><pre>{_esc(shown)}</pre></details></td></tr>"
        )
    return f"<p>{len(folders)} run(s) under runs/.</p><table>" + "".join(rows) + "</table>"


def _findings(results: Path, findings: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``findings``, else the results folder's findings.json, else notebook 06's tables, else {}."""
    from ibstudy.report import FINDINGS_JSON, findings_data, load_findings, read_results

    if findings is not None:
        return findings
    if (results / FINDINGS_JSON).exists():
        try:
            return load_findings(results / FINDINGS_JSON)
        except ValueError:
            pass
    effects, accuracy, _, missing = read_results(results)
    if effects is None and accuracy is None:
        return {}
    return findings_data(effects, accuracy, {}, missing=missing)


def build_page(
    results_dir: str | os.PathLike[str], findings: Mapping[str, Any] | None = None
) -> str:
    """The report page of ``results_dir`` as one HTML string (``findings``: a findings dict, else
    read from the folder)."""
    results = Path(results_dir)
    data = _findings(results, findings)
    provenance = data.get("provenance")
    sections = [
        ("animations", "The plane over training", _gifs_html(results)),
        ("claims", "Claims: E2E − baseline, 95 % interval, Holm-adjusted verdict",
         _claims_html(data)),
        ("regimes", "Regimes: where the gap lives (notebook 09)", _regimes_html(data)),
        ("accuracy", "Accuracy", _accuracy_html(data)),
        ("figures", "Key figures", _figures_html(results)),
        ("notebooks", "Executed notebooks", _notebooks_html(results)),
        ("runs", "Runs", _runs_html(results)),
    ]  # fmt: skip
    nav = "".join(f'<a href="#{key}">{_esc(title.split(":")[0])}</a>' for key, title, _ in sections)
    body = "\n".join(
        f'<section id="{key}"><h2>{_esc(title)}</h2>\n{content}</section>'
        for key, title, content in sections
    )
    lines = []
    if provenance:
        lines.append(f"<p class='muted'>Provenance: {_esc(provenance_line(provenance))}.</p>")
    if data.get("missing"):
        lines.append(
            "<p class='muted'>Missing: " + _esc("; ".join(map(str, data["missing"]))) + ".</p>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>ibstudy: the study's report</title>"
        f"<style>{_STYLE}</style></head><body>\n"
        "<h1>E2E vs layer-wise training in the nHSIC information plane</h1>\n"
        "<p>This page is rebuilt from the results folder by <code>python -m ibstudy report</code> "
        "(the last step of <code>make study</code>); every link is relative to it.</p>\n"
        + "\n".join(lines)
        + f"\n<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )


def write_report_page(
    results_dir: str | os.PathLike[str],
    findings: Mapping[str, Any] | None = None,
    *,
    animations: bool = True,
) -> Path:
    """Render the missing or stale animations (``animations``), then write ``<results_dir>/index.html``
    atomically; ValueError when ``results_dir`` is not a folder."""
    results = Path(results_dir)
    if not results.is_dir():
        raise ValueError(f"results_dir {str(results)!r} is not a folder")
    if animations:
        write_animations(results)
    return atomic_write_text(results / INDEX, build_page(results, findings))
