"""Figures of the study, drawn from the trainer's tidy tables only (layers and epochs tables).

Every plotting function takes pandas DataFrames and returns a `matplotlib.figure.Figure` built
without pyplot, so it works under the Agg backend and in headless runs and never accumulates open
figures. The figures carry IPython's `_repr_png_`, so returning one from a notebook cell (or
`display(fig)`) shows it exactly once, with or without `%matplotlib inline`; a figure that is
neither returned nor displayed is not shown. `save_figure` writes a figure as PNG and PDF.

Styles follow the paper's Fig 3: end-to-end (``e2e``) runs are circles on a red colormap
("Reds", its faint lower third cut off), layer-wise runs are inverted triangles on the blue-yellow
"cividis" colormap; the sequential layer-wise variant shares that marker and colormap and is told
apart by a dashed trajectory line. Colour always encodes the epoch, with one colour bar per group.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ibstudy.checks import check_int, check_positive
from ibstudy.store import atomic_write
from ibstudy.tables import as_list as _as_list
from ibstudy.tables import check_one_estimator, seed_mean
from ibstudy.tables import check_table as _check_table
from ibstudy.tables import select as _select

__all__ = [
    "Style",
    "StudyFigure",
    "METHOD_STYLES",
    "HEAD_STYLES",
    "plane_table",
    "plot_plane",
    "plot_plane_by",
    "plot_depth_profile",
    "plot_probe_curves",
    "plot_accuracy",
    "plot_trajectories_over_epochs",
    "plot_forest",
    "plot_compression_vs_outcomes",
    "save_figure",
]

#: the columns each plot needs in its table (ibstudy.tables' *_COLUMNS name what a table holds)
_PLANE_REQUIRED = ("run", "method", "epoch", "layer", "layer_index", "nhsic_xz", "nhsic_yz")
_PROBE_REQUIRED = (
    "run",
    "method",
    "epoch",
    "layer",
    "layer_index",
    "probe_train_acc",
    "probe_test_acc",
)
_EPOCH_REQUIRED = ("run", "method", "epoch", "test_acc")
HUE_CHOICES = ("method", "head", "run")
SEED_MODES = ("each", "mean")
TRAJECTORY_VALUES = {
    "nhsic_xz": "nHSIC(X;Z)",
    "nhsic_yz": "nHSIC(Y;Z)",
    "probe_train_acc": "probe train accuracy",
    "probe_test_acc": "probe test accuracy",
    "head_test_acc": "auxiliary head test accuracy",
}
METHOD_ORDER = ("e2e", "layerwise", "layerwise_sequential")
FIGURE_FORMATS = ("png", "pdf")
PNG_DPI = 150
_EDGE = "0.25"
_AXES_STYLE = "whitegrid"


@dataclass(frozen=True)
class Style:
    """How one group of runs is drawn: marker, epoch colormap (cut to `cmap_range`), line style."""

    marker: str
    cmap: str
    linestyle: str = "-"
    cmap_range: tuple[float, float] = (0.0, 1.0)
    anchor: float = 0.7

    def colormap(self) -> mcolors.Colormap:
        """The epoch colormap restricted to `cmap_range`."""
        lo, hi = self.cmap_range
        base = matplotlib.colormaps[self.cmap]
        return mcolors.ListedColormap(base(np.linspace(lo, hi, 256)), name=f"{self.cmap}_cut")

    def color(self, at: float | None = None) -> tuple[float, float, float, float]:
        """One representative colour of the group (position `at`, default `anchor`, in [0, 1])."""
        return tuple(self.colormap()(self.anchor if at is None else at))


METHOD_STYLES: dict[str, Style] = {
    "e2e": Style("o", "Reds", "-", (0.3, 1.0), 0.75),
    "layerwise": Style("v", "cividis", "-", (0.0, 1.0), 0.15),
    "layerwise_sequential": Style("v", "cividis", "--", (0.0, 1.0), 0.8),
}
HEAD_STYLES: dict[str, Style] = {
    "none": METHOD_STYLES["e2e"],
    "linear": Style("v", "cividis", "-", (0.0, 1.0), 0.15),
    "mlp": Style("s", "Greens", "-", (0.3, 1.0), 0.75),
}
_FALLBACK_STYLES: tuple[Style, ...] = (
    Style("o", "Reds", "-", (0.3, 1.0), 0.75),
    Style("v", "cividis", "-", (0.0, 1.0), 0.15),
    Style("s", "Greens", "-", (0.3, 1.0), 0.75),
    Style("D", "Purples", "-", (0.3, 1.0), 0.75),
    Style("P", "Oranges", "-", (0.3, 1.0), 0.75),
    Style("X", "Blues", "-", (0.3, 1.0), 0.75),
    Style("^", "Greys", "-", (0.3, 1.0), 0.75),
)


class StudyFigure(Figure):
    """A matplotlib Figure that notebooks display as PNG even when no pyplot backend is set up."""

    def _repr_png_(self) -> bytes:
        """PNG bytes for IPython's rich display."""
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# validation and table helpers
# ----------------------------------------------------------------------------------------------


def _select_layers(df: pd.DataFrame, wanted: object) -> pd.DataFrame:
    """Rows of the layers named (str) or indexed (int) in `wanted`; None keeps all."""
    if wanted is None:
        return df
    wanted = _as_list(wanted)
    if not wanted:
        raise ValueError("layers_to_show must not be empty")
    names = set(df["layer"])
    indices = set(int(i) for i in df["layer_index"])
    keep = np.zeros(len(df), dtype=bool)
    unknown = []
    for w in wanted:
        if isinstance(w, str) and w in names:
            keep |= (df["layer"] == w).to_numpy()
        elif isinstance(w, int | np.integer) and not isinstance(w, bool) and int(w) in indices:
            keep |= (df["layer_index"] == int(w)).to_numpy()
        else:
            unknown.append(w)
    if unknown:
        raise ValueError(
            f"layers_to_show: unknown layer(s) {unknown}; available names "
            f"{_layer_names(df)} or indices {sorted(indices)}"
        )
    return df[keep]


def _layer_order(df: pd.DataFrame) -> list[tuple[int, str]]:
    """(layer_index, display name) pairs in depth order; names differing across runs are joined."""
    order = []
    for index, group in df.groupby("layer_index", sort=True):
        names = list(dict.fromkeys(str(n) for n in group["layer"]))
        order.append((int(index), "/".join(names)))
    return order


def _layer_names(df: pd.DataFrame) -> list[str]:
    """Display names of the layers in depth order."""
    return [name for _, name in _layer_order(df)]


def _ordered(values: Iterable, preferred: Sequence = METHOD_ORDER) -> list:
    """Unique values, those in `preferred` first (in that order), then the rest sorted."""
    values = list(dict.fromkeys(values))
    first = [v for v in preferred if v in values]
    rest = sorted((v for v in values if v not in preferred), key=str)
    return first + rest


def _run_keys(df: pd.DataFrame) -> list[str]:
    """Columns that identify one run's trajectory."""
    return [c for c in ("run", "method", "head") if c in df.columns]


def _style_map(groups: Sequence, by: str) -> dict:
    """A Style for every group value: the paper's styles for known methods / heads, then others."""
    known = METHOD_STYLES if by == "method" else HEAD_STYLES if by == "head" else {}
    styles = {g: known[g] for g in groups if g in known}
    used = {(s.marker, s.cmap) for s in styles.values()}
    spare = [s for s in _FALLBACK_STYLES if (s.marker, s.cmap) not in used] or list(
        _FALLBACK_STYLES
    )
    k = 0
    for g in groups:
        if g not in styles:
            styles[g] = spare[k % len(spare)]
            k += 1
    return styles


def _labelled(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Style]]:
    """Add a `label` column: the method, or "method (head)" where a method has several heads.

    Returns the table and an ordered map label -> Style. A method's first head (in the order
    none, linear, mlp, others) keeps the method's style; its other heads take their head style
    (mlp: green squares) or an unused fallback, so no two labels look alike.
    """
    df = df.copy()
    methods = _ordered(df["method"].unique())
    method_styles = _style_map(methods, "method")
    used = {_key(s) for s in method_styles.values()}
    spare = [s for s in _FALLBACK_STYLES if _key(s) not in used]
    label_style: dict[str, Style] = {}
    labels = df["method"].astype(str).copy()
    for m in methods:
        heads = (
            _ordered(df.loc[df["method"] == m, "head"].astype(str).unique(), tuple(HEAD_STYLES))
            if "head" in df.columns
            else []
        )
        if len(heads) <= 1:
            label_style[str(m)] = method_styles[m]
            continue
        for k, h in enumerate(heads):
            label = f"{m} ({h})"
            labels[(df["method"] == m) & (df["head"].astype(str) == h)] = label
            if k == 0:
                style = method_styles[m]
            elif h in HEAD_STYLES and _key(HEAD_STYLES[h]) not in used:
                style = HEAD_STYLES[h]
            else:
                style = spare.pop(0) if spare else _FALLBACK_STYLES[k % len(_FALLBACK_STYLES)]
            used.add(_key(style))
            spare = [s for s in spare if _key(s) not in used]
            label_style[label] = style
    df["label"] = labels
    return df, label_style


def _key(style: Style) -> tuple[str, str, str]:
    """What makes two styles look alike: marker, colormap and line style."""
    return (style.marker, style.cmap, style.linestyle)


def _epoch_norm(epochs: pd.Series) -> mcolors.Normalize:
    """A colour normalisation spanning the given epochs (never degenerate)."""
    lo, hi = float(epochs.min()), float(epochs.max())
    return mcolors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1.0)


def _new_figure(nrows: int, ncols: int, figsize: tuple[float, float], **subplot_kw) -> Figure:
    """A constrained-layout StudyFigure (not registered with pyplot), nrows x ncols axes."""
    with sns.axes_style(_AXES_STYLE):
        fig = StudyFigure(figsize=figsize, layout="constrained")
        fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig


def _grid_axes(fig: Figure, nrows: int, ncols: int) -> np.ndarray:
    """The figure's axes as an nrows x ncols array (as created by `_new_figure`)."""
    return np.asarray(fig.axes, dtype=object).reshape(nrows, ncols)


def _set_layer_ticks(ax: Axes, order: Sequence[tuple[int, str]]) -> None:
    """Put the layer names as x tick labels at their layer indices."""
    ax.set_xticks([i for i, _ in order], [n for _, n in order])
    if len(order) > 6 or max((len(n) for _, n in order), default=0) > 6:
        for tick in ax.get_xticklabels():
            tick.set_rotation(45)
            tick.set_horizontalalignment("right")


def _epoch_colorbar(fig: Figure, norm: mcolors.Normalize, cmap, axes, label: str) -> None:
    """Attach an integer-ticked epoch colour bar for `cmap` next to `axes`."""
    bar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=cmap),
        ax=axes,
        label=label,
        shrink=0.9,
        fraction=0.05,
        pad=0.02,
    )
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))


FLOOR_LABEL = "permutation floor (x: each point's own)"


def _draw_floors(ax: Axes, sub: pd.DataFrame, styles: dict, hue_by: str) -> bool:
    """Each trajectory's own permutation floor: its (floor_xz, floor_yz) per epoch as small x's on a
    dotted line in the trajectory's colour, so every point can be read against its own floor.

    The panel keeps the data's limits; floors outside them are noted in the panel's corner.
    """
    if not {"floor_xz", "floor_yz"} <= set(sub.columns):
        return False
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    drawn, hidden = False, []
    for _, traj in sub.groupby(_run_keys(sub), sort=False, dropna=False):
        traj = traj.sort_values("epoch").dropna(subset=["floor_xz", "floor_yz"])
        if traj.empty:
            continue
        st = styles[traj[hue_by].iloc[0]]
        fx, fy = traj["floor_xz"].to_numpy(float), traj["floor_yz"].to_numpy(float)
        ax.plot(fx, fy, ls=":", lw=0.9, marker="x", ms=3.5, color=st.color(), alpha=0.7,
                zorder=0.8, label="_floor")  # fmt: skip
        drawn = True
        if fx.min() < xlim[0]:
            hidden.append(f"x {fx.min():.3g}")
        if fy.min() < ylim[0]:
            hidden.append(f"y {fy.min():.3g}")
    ax.set_xlim(xlim)
    ax.set_ylim(ylim)
    if hidden:
        ax.text(
            0.98, 0.02, "floor below view: " + ", ".join(dict.fromkeys(hidden)),
            transform=ax.transAxes, ha="right", va="bottom", fontsize="x-small", color="0.35",
        )  # fmt: skip
    return drawn


def _mark_every(n_points: int, most: int = 30) -> int:
    """Marker stride that keeps at most about `most` markers on a line of `n_points` points."""
    return max(1, math.ceil(n_points / most))


def plane_table(
    layers: pd.DataFrame,
    *,
    layers_to_show: Sequence[str | int] | str | int | None = None,
    methods: Sequence[str] | str | None = None,
    heads: Sequence[str] | str | None = None,
    epochs: Sequence[float] | None = None,
    seeds: str = "each",
) -> pd.DataFrame:
    """The rows the plane draws, selected as :func:`plot_plane` draws them (one
    estimator, finite values; ``seeds="mean"``: the seed mean with ``nhsic_*_std`` = seed std)."""
    check_one_estimator(_check_table(layers, _PLANE_REQUIRED, "layers"))
    if seeds not in SEED_MODES:
        raise ValueError(f"seeds must be one of {list(SEED_MODES)}, got {seeds!r}")
    df = _select(layers, "method", methods, "methods")
    df = _select(df, "head", heads, "heads")
    df = _select_layers(df, layers_to_show)
    df = _select(df, "epoch", epochs, "epochs")
    df = df.dropna(subset=["nhsic_xz", "nhsic_yz"])
    if df.empty:
        raise ValueError("no finite nhsic_xz / nhsic_yz values left to plot after filtering")
    if seeds == "mean":
        values = [c for c in ("nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz") if c in df.columns]
        df = seed_mean(df, values)
        df["nhsic_xz_std"], df["nhsic_yz_std"] = df["nhsic_xz_seed_std"], df["nhsic_yz_seed_std"]
    return df


def plot_plane(
    layers: pd.DataFrame,
    *,
    layers_to_show: Sequence[str | int] | str | int | None = None,
    methods: Sequence[str] | str | None = None,
    heads: Sequence[str] | str | None = None,
    epochs: Sequence[int] | None = None,
    floor: bool = True,
    hue_by: str = "method",
    errorbars: bool = False,
    seeds: str = "each",
    ncols: int = 4,
    panel_size: float = 3.2,
    marker_size: float = 36.0,
    title: str | None = None,
) -> Figure:
    """The HSIC plane (x = nHSIC(X;Z), y = nHSIC(Y;Z)): one panel per layer in depth order.

    Each run draws one trajectory per layer through its epochs, markers coloured by epoch in the
    style of its `hue_by` group ("method", "head" or "run"), with one epoch colour bar per group.
    With `floor` and floor_xz / floor_yz columns, every trajectory's own permutation floor is drawn
    (x's on a dotted line in its colour): a point is above the floor only relative to its own x. `errorbars` adds the chunk standard
    deviations (nhsic_xz_std / nhsic_yz_std) when present. ``seeds="mean"`` draws, per method and
    head, the mean trajectory over the seeds in the table with error bars of +-1 standard deviation
    across seeds (``seeds="each"`` draws every run).
    """
    check_one_estimator(_check_table(layers, _PLANE_REQUIRED, "layers"))
    if seeds not in SEED_MODES:
        raise ValueError(f"seeds must be one of {list(SEED_MODES)}, got {seeds!r}")
    if hue_by not in HUE_CHOICES:
        raise ValueError(f"hue_by must be one of {HUE_CHOICES}, got {hue_by!r}")
    if hue_by not in layers.columns:
        raise ValueError(f"hue_by={hue_by!r} but the layers table has no {hue_by!r} column")
    ncols = check_int("ncols", ncols, minimum=1)
    check_positive("panel_size", panel_size)
    check_positive("marker_size", marker_size)
    df = plane_table(
        layers,
        layers_to_show=layers_to_show,
        methods=methods,
        heads=heads,
        epochs=epochs,
        seeds=seeds,
    )
    errorbars = errorbars or seeds == "mean"

    order = _layer_order(df)
    preferred = {"method": METHOD_ORDER, "head": tuple(HEAD_STYLES), "run": ()}[hue_by]
    groups = _ordered(df[hue_by].unique(), preferred)
    styles = _style_map(groups, hue_by)
    cmaps = {g: styles[g].colormap() for g in groups}
    norms = {g: _epoch_norm(df.loc[df[hue_by] == g, "epoch"]) for g in groups}
    with_std = errorbars and {"nhsic_xz_std", "nhsic_yz_std"} <= set(df.columns)

    n = len(order)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    figsize = (panel_size * cols + 0.8 * len(groups), panel_size * rows + 0.7)
    fig = _new_figure(rows, cols, figsize)
    axes = list(fig.axes)
    for ax in axes[n:]:
        ax.remove()
    axes = axes[:n]

    any_floor = False
    for ax, (index, name) in zip(axes, order, strict=True):
        sub = df[df["layer_index"] == index]
        for _, traj in sub.groupby(_run_keys(sub), sort=False, dropna=False):
            traj = traj.sort_values("epoch")
            group = traj[hue_by].iloc[0]
            st = styles[group]
            x, y = traj["nhsic_xz"].to_numpy(float), traj["nhsic_yz"].to_numpy(float)
            ax.plot(x, y, color=st.color(), ls=st.linestyle, lw=1.0, alpha=0.6, zorder=1)
            if with_std:
                ax.errorbar(
                    x,
                    y,
                    xerr=traj["nhsic_xz_std"].to_numpy(float),
                    yerr=traj["nhsic_yz_std"].to_numpy(float),
                    fmt="none",
                    ecolor=st.color(),
                    alpha=0.35,
                    lw=0.8,
                    zorder=1,
                )
            ax.scatter(
                x,
                y,
                c=traj["epoch"].to_numpy(float),
                cmap=cmaps[group],
                norm=norms[group],
                marker=st.marker,
                s=marker_size,
                edgecolors=_EDGE,
                linewidths=0.4,
                zorder=2,
                label=str(group),
            )
        if floor:
            any_floor |= _draw_floors(ax, sub, styles, hue_by)
        ax.set_title(name)
        ax.set_xlabel("nHSIC(X;Z)")
        ax.set_ylabel("nHSIC(Y;Z)")

    for g in reversed(groups):  # constrained layout stacks later bars nearer the panels
        _epoch_colorbar(fig, norms[g], cmaps[g], axes, f"epoch ({g})")
    handles = [
        Line2D(
            [],
            [],
            marker=styles[g].marker,
            ls=styles[g].linestyle,
            color=styles[g].color(),
            markeredgecolor=_EDGE,
            label=str(g),
        )
        for g in groups
    ]
    if any_floor:
        handles.append(Line2D([], [], ls=":", marker="x", color="0.35", label=FLOOR_LABEL))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_plane_by(layers: pd.DataFrame, by: str = "head", **kwargs) -> Figure:
    """The HSIC plane with groups (marker + colormap) by `by`, e.g. heads for the paper's Fig 5."""
    return plot_plane(layers, hue_by=by, **kwargs)


def plot_depth_profile(
    layers: pd.DataFrame,
    *,
    epoch: int | None = None,
    methods: Sequence[str] | str | None = None,
    floor: bool = True,
    panel_size: float = 3.6,
) -> Figure:
    """nHSIC(X;Z) and nHSIC(Y;Z) against depth at one epoch (default: each run's last), per method.

    Two panels, one line per method (per method and head where a method has several heads);
    several runs of one line are averaged with a +-1 sd band. Claim C1 reads off the left panel.
    """
    check_one_estimator(_check_table(layers, _PLANE_REQUIRED, "layers"))
    check_positive("panel_size", panel_size)
    df = _select(layers, "method", methods, "methods")
    df = df.dropna(subset=["nhsic_xz", "nhsic_yz"])
    if df.empty:
        raise ValueError("layers table has no finite nhsic_xz / nhsic_yz values")
    if epoch is None:
        last = df.groupby(_run_keys(df), dropna=False)["epoch"].transform("max")
        df = df[df["epoch"] == last]
    else:
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer):
            raise ValueError(f"epoch must be an integer or None, got {epoch!r}")
        if epoch not in set(df["epoch"]):
            raise ValueError(f"epoch={epoch} not in the table; available: {sorted(set(df.epoch))}")
        df = df[df["epoch"] == epoch]
    df, label_style = _labelled(df)
    order = _layer_order(df)
    shown = sorted(set(int(e) for e in df["epoch"]))
    when = f"epoch {shown[0]}" if len(shown) == 1 else f"each run's last epoch ({shown})"

    fig = _new_figure(1, 2, (2 * panel_size + 0.4, panel_size + 0.6))
    axes = fig.axes
    for ax, column, name in zip(
        axes, ("nhsic_xz", "nhsic_yz"), ("nHSIC(X;Z)", "nHSIC(Y;Z)"), strict=True
    ):
        for label, st in label_style.items():
            color, marker = st.color(), st.marker
            stats = df[df["label"] == label].groupby("layer_index")[column].agg(["mean", "std"])
            idx = stats.index.to_numpy(float)
            ax.plot(
                idx,
                stats["mean"],
                color=color,
                marker=marker,
                ls=st.linestyle,
                label=label,
                markeredgecolor=_EDGE,
            )
            if stats["std"].notna().any():
                sd = stats["std"].fillna(0.0)
                ax.fill_between(
                    idx, stats["mean"] - sd, stats["mean"] + sd, color=color, alpha=0.15, lw=0
                )
        floor_col = "floor_xz" if column == "nhsic_xz" else "floor_yz"
        if floor and floor_col in df.columns and df[floor_col].notna().any():
            fl = df.groupby("layer_index")[floor_col].max()
            ax.plot(
                fl.index.to_numpy(float),
                fl.to_numpy(float),
                color="0.45",
                ls="--",
                lw=1.0,
                label="permutation floor",
            )
        ax.set_ylabel(name)
        ax.set_xlabel("layer")
        _set_layer_ticks(ax, order)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(len(names), 4), frameon=False)
    fig.suptitle(f"Depth profile at {when}")
    return fig


def plot_probe_curves(
    layers: pd.DataFrame,
    *,
    epochs: Sequence[int] | None = None,
    methods: Sequence[str] | str | None = None,
    panel_size: float = 3.4,
) -> Figure:
    """Linear-probe accuracy against depth (paper Fig 1): rows train / test, one column per method.

    One line per probed epoch, coloured by epoch on the method's colormap (one colour bar per
    column); rows without probes (NaN) are skipped, runs sharing a method are averaged.
    """
    _check_table(layers, _PROBE_REQUIRED, "layers")
    check_positive("panel_size", panel_size)
    df = _select(layers, "method", methods, "methods")
    df = df.dropna(subset=["probe_train_acc", "probe_test_acc"], how="all")
    if df.empty:
        raise ValueError("layers table has no probe accuracies (probe_*_acc are NaN everywhere)")
    df = _select(df, "epoch", epochs, "epochs (with probes)")
    df, label_style = _labelled(df)
    labels = list(label_style)
    order = _layer_order(df)

    ncols = len(labels)
    fig = _new_figure(
        2, ncols, (panel_size * ncols + 0.9 * ncols, 2 * panel_size + 0.4), sharey=True
    )
    grid = _grid_axes(fig, 2, ncols)
    for j, label in enumerate(labels):
        st = label_style[label]
        marker = st.marker
        sub = df[df["label"] == label]
        cmap, norm = st.colormap(), _epoch_norm(sub["epoch"])
        for row, (column, split) in enumerate(
            (("probe_train_acc", "train"), ("probe_test_acc", "test"))
        ):
            ax = grid[row, j]
            for epoch, g in sub.groupby("epoch", sort=True):
                acc = g.groupby("layer_index")[column].mean().dropna()
                if acc.empty:
                    continue
                ax.plot(
                    acc.index.to_numpy(float),
                    acc.to_numpy(float),
                    color=cmap(norm(epoch)),
                    marker=marker,
                    ms=4,
                    lw=1.2,
                    markeredgecolor=_EDGE,
                    markeredgewidth=0.3,
                    label=f"epoch {epoch}",
                )
            ax.set_title(f"{label}: {split}")
            ax.set_xlabel("layer")
            ax.set_ylabel(f"probe {split} accuracy")
            _set_layer_ticks(ax, order)
        _epoch_colorbar(fig, norm, cmap, list(grid[:, j]), f"epoch ({label})")
    return fig


def plot_accuracy(
    epochs: pd.DataFrame,
    *,
    methods: Sequence[str] | str | None = None,
    train: bool = True,
    panel_size: float = 4.0,
) -> Figure:
    """Test accuracy (solid) and, with `train`, train accuracy (dotted) against epoch per method.

    Runs sharing a method (and head) are averaged; the legend gives each line's final value.
    """
    required = _EPOCH_REQUIRED + (("train_acc",) if train else ())
    _check_table(epochs, required, "epochs")
    check_positive("panel_size", panel_size)
    df, label_style = _labelled(_select(epochs, "method", methods, "methods"))
    fig = _new_figure(1, 1, (1.4 * panel_size + 1.0, panel_size))
    ax = fig.axes[0]
    splits = [("test_acc", "test", None)] + ([("train_acc", "train", ":")] if train else [])
    for label, st in label_style.items():
        color, marker = st.color(), st.marker
        sub = df[df["label"] == label]
        for column, split, ls in splits:
            curve = sub.groupby("epoch")[column].mean().dropna()
            if curve.empty:
                continue
            ax.plot(
                curve.index.to_numpy(float),
                curve.to_numpy(float),
                color=color,
                ls=ls or st.linestyle,
                marker=marker,
                markevery=_mark_every(len(curve)),
                ms=3.5,
                markeredgecolor=_EDGE,
                markeredgewidth=0.3,
                label=f"{label} {split} ({curve.iloc[-1]:.3f})",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(frameon=False, loc="best")
    return fig


def plot_trajectories_over_epochs(
    layers: pd.DataFrame,
    *,
    value: str = "nhsic_xz",
    methods: Sequence[str] | str | None = None,
    panel_size: float = 3.4,
    palette: str = "plasma",
) -> Figure:
    """`value` against epoch, one line per layer (coloured by depth), one panel per method.

    Shows e.g. the last layer's fit-then-compress (claim C3) or whether layers behave alike (C2).
    """
    if value not in TRAJECTORY_VALUES:
        raise ValueError(f"value must be one of {list(TRAJECTORY_VALUES)}, got {value!r}")
    check_one_estimator(
        _check_table(layers, ("run", "method", "epoch", "layer", "layer_index", value), "layers")
    )
    check_positive("panel_size", panel_size)
    if palette not in matplotlib.colormaps:
        raise ValueError(f"palette must be a matplotlib colormap name, got {palette!r}")
    df = _select(layers, "method", methods, "methods").dropna(subset=[value])
    if df.empty:
        raise ValueError(f"layers table has no finite {value!r} values")
    df, label_style = _labelled(df)
    labels = list(label_style)
    order = _layer_order(df)
    colors = matplotlib.colormaps[palette](np.linspace(0.0, 0.85, len(order)))
    color_of = {index: colors[k] for k, (index, _) in enumerate(order)}

    fig = _new_figure(
        1, len(labels), (panel_size * len(labels) + 1.4, panel_size + 0.3), sharey=True
    )
    for ax, label in zip(fig.axes, labels, strict=True):
        sub = df[df["label"] == label]
        for index, name in order:
            curve = sub[sub["layer_index"] == index].groupby("epoch")[value].mean()
            if curve.empty:
                continue
            ax.plot(
                curve.index.to_numpy(float),
                curve.to_numpy(float),
                color=color_of[index],
                marker=".",
                markevery=_mark_every(len(curve)),
                lw=1.3,
                label=name,
            )
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.axes[0].set_ylabel(TRAJECTORY_VALUES[value])
    handles = [Line2D([], [], color=color_of[i], marker=".", label=n) for i, n in order]
    fig.legend(handles=handles, loc="outside right upper", title="layer", frameon=False)
    return fig


FOREST_COLUMNS = ("claim", "estimate", "ci_low", "ci_high", "verdict")
#: colour of each verdict in the forest plot
VERDICT_COLORS = {
    "supported": "#1b7837",
    "contradicted": "#b2182b",
    "inconclusive": "0.35",
    "not measured": "0.75",
}


def plot_forest(
    estimates: pd.DataFrame, *, by: str = "baseline", panel_size: float = 3.0
) -> Figure:
    """One panel per claim: each row of ``by`` (an estimator, a baseline) as its effect with the 95 %
    interval, a line at 0 (no effect), colour = verdict; the claimed direction in the panel title.

    ``estimates`` has :func:`ibstudy.claims.assess`'s columns (``direction`` optional) plus ``by``;
    rows without an estimate are listed as "not measured" at 0 without a bar."""
    _check_table(estimates, (*FOREST_COLUMNS, by), "estimates")
    check_positive("panel_size", panel_size)
    claims = list(dict.fromkeys(estimates["claim"]))
    labels = list(dict.fromkeys(estimates[by].astype(str)))
    ncols = min(3, len(claims))
    nrows = math.ceil(len(claims) / ncols)
    height = max(1.6, 0.35 * len(labels) + 1.0)
    fig = _new_figure(nrows, ncols, (panel_size * ncols + 1.5, height * nrows))
    axes = _grid_axes(fig, nrows, ncols)
    for k, claim in enumerate(claims):
        ax = axes.flat[k]
        sub = estimates[estimates["claim"] == claim]
        for _, row in sub.iterrows():
            y = labels.index(str(row[by]))
            est, low, high = (float(row[c]) for c in ("estimate", "ci_low", "ci_high"))
            color = VERDICT_COLORS.get(str(row["verdict"]), "0.35")
            if math.isfinite(est):
                if math.isfinite(low) and math.isfinite(high):
                    ax.plot([low, high], [y, y], color=color, lw=2, solid_capstyle="butt")
                ax.plot([est], [y], "o", color=color, ms=5)
            else:
                ax.text(0, y, "not measured", color=color, ha="center", va="center", fontsize=7)
        ax.axvline(0.0, color="0.2", lw=0.8, ls="--")
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels if k % ncols == 0 else [], fontsize=8)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        direction = str(sub["direction"].iloc[0]) if "direction" in sub.columns else ""
        unit = str(sub["unit"].iloc[0]) if "unit" in sub.columns else "effect"
        ax.set_title(f"{claim} (claimed {direction})" if direction else claim, fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
    for ax in axes.flat[len(claims) :]:
        ax.set_visible(False)
    handles = [
        Line2D([], [], color=c, marker="o", lw=2, label=v) for v, c in VERDICT_COLORS.items()
    ]
    fig.legend(handles=handles, loc="outside right upper", title="verdict", frameon=False)
    return fig


OUTCOME_LABELS = {"gap": "train - test accuracy", "test_loss": "test loss"}


def plot_compression_vs_outcomes(points: pd.DataFrame, *, panel_size: float = 3.2) -> Figure:
    """C3b's runs: middle-layer compression (x) against each outcome (rows: gap, test loss) per
    study (columns), one colour per method/head; a panel without a finite point says why.

    ``points`` is :func:`ibstudy.generalization.compression_vs_gap`'s table plus a ``study`` column."""
    _check_table(points, ("study", "method", "head", "middle_compression", "gap"), "points")
    check_positive("panel_size", panel_size)
    outcomes = [o for o in OUTCOME_LABELS if o in points.columns]
    studies = list(dict.fromkeys(points["study"]))
    labels = list(dict.fromkeys(points["method"].astype(str) + "/" + points["head"].astype(str)))
    palette = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
    fig = _new_figure(len(outcomes), len(studies), (panel_size * len(studies) + 1.8,
                                                    panel_size * len(outcomes)))  # fmt: skip
    axes = _grid_axes(fig, len(outcomes), len(studies))
    for r, outcome in enumerate(outcomes):
        for c, study in enumerate(studies):
            ax = axes[r, c]
            sub = points[points["study"] == study]
            x = pd.to_numeric(sub["middle_compression"], errors="coerce")
            y = pd.to_numeric(sub[outcome], errors="coerce")
            ok = x.notna() & y.notna()
            for label in labels:
                mine = ok & ((sub["method"].astype(str) + "/" + sub["head"].astype(str)) == label)
                if mine.any():
                    ax.scatter(x[mine], y[mine], color=palette[label], s=30, edgecolor=_EDGE,
                               linewidth=0.3, label=label)  # fmt: skip
            if not ok.any():
                ax.text(0.5, 0.5, "no run with a middle-layer compression\n(needs >= 10 epochs, "
                        "3 blocks, floors)", transform=ax.transAxes, ha="center", va="center",
                        fontsize=7)  # fmt: skip
            ax.set_title(study if r == 0 else "", fontsize=9)
            ax.set_xlabel(
                "middle-layer compression above the floor" if r == len(outcomes) - 1 else ""
            )
            ax.set_ylabel(OUTCOME_LABELS[outcome] if c == 0 else "")
    handles = [Line2D([], [], color=palette[lab], marker="o", lw=0, label=lab) for lab in labels]
    fig.legend(handles=handles, loc="outside right upper", title="method/head", frameon=False)
    return fig


def save_figure(
    fig: Figure, name: str, figures_dir: str | os.PathLike[str] = "results/figures"
) -> list[Path]:
    """Write `<name>.png` (150 dpi) and `<name>.pdf` into `figures_dir` atomically; return paths.

    Each file is rendered to a temporary file in the same folder, then renamed over the target,
    so readers never see a half-written figure. The folder is created when missing.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if (
        not isinstance(name, str)
        or not name.strip()
        or name in (".", "..")
        or any(sep in name for sep in ("/", "\\", os.sep))
    ):
        raise ValueError(f"name must be a plain file stem without folders, got {name!r}")
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in FIGURE_FORMATS:
        target = folder / f"{name}.{fmt}"
        options: dict = {"format": fmt, "bbox_inches": "tight"}
        if fmt == "png":
            options["dpi"] = PNG_DPI
        else:
            options["metadata"] = {"CreationDate": None}
        atomic_write(target, lambda tmp, options=options: fig.savefig(tmp, **options))
        written.append(target)
    return written
