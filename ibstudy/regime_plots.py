"""Figures of the regimes grid (notebook 09, docs/method.md §12 "Regimes"): a small plane per cell and
method, and the across-cell scatter of the gap against the plane's differences."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ibstudy import plots
from ibstudy.regimes import ACROSS, BASELINE, CANDIDATE, GridTables
from ibstudy.tables import blocks as block_rows

__all__ = ["plot_across_cells", "plot_premise_plane", "plot_regime_planes"]

_ARMS = (("E2E", CANDIDATE), ("layer-wise", BASELINE))
_LABELS = {"C1_estimate": "C1 effect (E2E - LW depth slope)", "role_gap": "role gap (LW vs E2E)"}


def _mean_paths(layers: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Per block index, the seed-mean (nhsic_xz, nhsic_yz) at each epoch."""
    rows = block_rows(layers)
    mean = rows.groupby(["layer_index", "epoch"], as_index=False)[["nhsic_xz", "nhsic_yz"]].mean()
    return {int(i): g.sort_values("epoch") for i, g in mean.groupby("layer_index")}


def plot_regime_planes(grid: GridTables, *, panel_size: float = 2.4) -> Figure:
    """One small nHSIC plane per cell and method (seed means; blocks coloured shallow to deep,
    the last epoch marked): rows are depths, columns difficulty x method."""
    depths = list(dict.fromkeys(c.depth for c in grid.cells))
    difficulties = list(dict.fromkeys(c.difficulty for c in grid.cells))
    ncols = 2 * len(difficulties)
    fig, axes = plt.subplots(len(depths), ncols, figsize=(panel_size * ncols, panel_size *
                             len(depths)), squeeze=False, constrained_layout=True)  # fmt: skip
    gaps = grid.summary.set_index("cell")["gap_mean"]
    cmap = plt.get_cmap("viridis")
    for r, depth in enumerate(depths):
        for d, difficulty in enumerate(difficulties):
            name = f"{depth}/{difficulty}"
            for m, (label, arm) in enumerate(_ARMS):
                ax = axes[r, 2 * d + m]
                if name not in [c.name for c in grid.cells]:
                    ax.set_visible(False)
                    continue
                layers, _ = grid.cell_tables(name)
                sel = layers[(layers["method"] == arm["method"]) & (layers["head"] == arm["head"])]
                paths = _mean_paths(sel)
                for i, path in paths.items():
                    colour = cmap(i / max(1, len(paths) - 1))
                    ax.plot(path["nhsic_xz"], path["nhsic_yz"], "-", color=colour, lw=1, alpha=0.8)
                    ax.plot(path["nhsic_xz"].iloc[-1], path["nhsic_yz"].iloc[-1], "o",
                            color=colour, ms=4)  # fmt: skip
                gap = gaps.get(name, np.nan)
                ax.set_title(f"{name}\n{label}" + (f" (gap {gap:+.3f})" if m == 0 else ""),
                             fontsize=8)  # fmt: skip
                ax.tick_params(labelsize=7)
                if r == len(depths) - 1:
                    ax.set_xlabel("nHSIC(X;Z)", fontsize=8)
                if d == 0 and m == 0:
                    ax.set_ylabel("nHSIC(Y;Z)", fontsize=8)
    fig.suptitle("The plane per regime (seed means; blocks shallow = purple to deep = yellow)",
                 fontsize=10)  # fmt: skip
    return fig


def plot_across_cells(
    summary: pd.DataFrame, across: pd.DataFrame, *, panel_size: float = 3.6
) -> Figure:
    """The cells' mean accuracy gap (prediction readout, +-1 sd over seeds) against each across-cell
    effect, labelled by cell, titled with Spearman's rho, the Holm p and the verdict."""
    fig, axes = plt.subplots(1, len(ACROSS), figsize=(panel_size * len(ACROSS), panel_size),
                             squeeze=False, constrained_layout=True)  # fmt: skip
    result = across.set_index("statistic")
    for ax, column in zip(axes[0], ACROSS, strict=True):
        ax.errorbar(summary["gap_mean"], summary[column], xerr=summary["gap_std"], fmt="o", ms=5,
                    capsize=2)  # fmt: skip
        for row in summary.itertuples():
            ax.annotate(row.cell, (row.gap_mean, getattr(row, column)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.axvline(0, color="grey", lw=0.6, ls=":")
        r = result.loc[column]
        ax.set_title(f"rho {r['rho']:+.2f}, Holm p {r['p_greater_holm']:.3f}: {r['verdict']}",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("accuracy gap E2E - LW (final classifier)")
        ax.set_ylabel(_LABELS.get(column, column))
    return fig


def plot_premise_plane(
    grid: GridTables, *, layers_to_show: list[str] | str | None = None
) -> Figure | None:
    """The premise regime's plane, E2E against layer-wise (seed means, floors), titled with the cell
    and its gap; None when the grid has no premise regime."""
    if grid.premise is None:
        return None
    layers, _ = grid.cell_tables(grid.premise)
    gap = float(grid.summary.set_index("cell").loc[grid.premise, "gap_mean"])
    return plots.plot_plane(
        layers, layers_to_show=layers_to_show, seeds="mean",
        title=f"{grid.premise}: E2E vs layer-wise, where E2E ends {gap:+.3f} more accurate",
    )  # fmt: skip
