"""The information plane over training, animated: each block's trajectory drawn up to the current
record point, in the styles of :func:`ibstudy.plots.plot_plane`.

:class:`PlaneAnimator` builds the figure once (panels, colour bars, legend and axis limits of the
whole run, so nothing jumps between frames) and redraws it for any record point; :func:`animate_plane`
wraps it in a matplotlib ``FuncAnimation`` with one frame per recorded point (sub-epoch points
included), whose last frame draws exactly the points of ``plot_plane``. :func:`save_gif` writes an
animation as a GIF with the Pillow writer (no ffmpeg) atomically; :func:`animation_html` embeds one in
a notebook (``to_jshtml``). The explorer (:mod:`ibstudy.explorer`) redraws the same figure.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text

from ibstudy.checks import check_int, check_positive
from ibstudy.plots import (
    _EDGE,
    FLOOR_LABEL,
    HEAD_STYLES,
    HUE_CHOICES,
    METHOD_ORDER,
    Style,
    _epoch_colorbar,
    _epoch_norm,
    _layer_order,
    _new_figure,
    _ordered,
    _run_keys,
    _style_map,
    plane_table,
)
from ibstudy.store import atomic_write
from ibstudy.tables import check_table

__all__ = [
    "LAYOUTS",
    "PlaneAnimation",
    "PlaneAnimator",
    "animate_plane",
    "animation_html",
    "format_epoch",
    "jshtml",
    "plane_table",
    "save_gif",
]

#: "overlay": one panel per layer with every group in it (as plot_plane); "side": one row per group
LAYOUTS = ("overlay", "side")
#: the GIF's resolution and frame rate unless told otherwise (README asset: at most 2 MB)
GIF_DPI = 72
GIF_FPS = 5
_CURRENT_EDGE = "0.05"


def format_epoch(epoch: float) -> str:
    """A record point as the label shows it: ``12`` for a whole epoch, ``0.125`` for a fraction."""
    value = float(epoch)
    return str(int(value)) if value.is_integer() else f"{value:.3g}"


@dataclass
class _Trajectory:
    """One run's path through one panel and the artists that draw it."""

    group: Any
    epochs: np.ndarray
    xy: np.ndarray
    floor: np.ndarray | None  # (n, 2) floor_xz, floor_yz, or None without floors
    std: np.ndarray | None  # (n, 2) nhsic_xz_std, nhsic_yz_std, or None
    line: Line2D
    points: PathCollection
    current: Line2D
    spread: Line2D
    floor_mark: Line2D | None


class PlaneAnimator:
    """The plane figure with every trajectory's artists, redrawn for one record point at a time.

    ``frames`` are the record points (sorted distinct ``epoch`` values of the plotted rows);
    :meth:`draw` shows every trajectory up to ``frames[k]``: its line and epoch-coloured markers, the
    current point outlined with its +-1 sd cross (chunk sd, or seed sd with ``seeds="mean"``), a
    dotted link to that point's own permutation floor (an x), and a label with the epoch and each
    group's test accuracy there (from ``epochs``, when given).
    """

    def __init__(
        self,
        layers: pd.DataFrame,
        epochs: pd.DataFrame | None = None,
        *,
        layers_to_show: Sequence[str | int] | str | int | None = None,
        methods: Sequence[str] | str | None = None,
        heads: Sequence[str] | str | None = None,
        seeds: str = "each",
        hue_by: str = "method",
        layout: str = "overlay",
        floor: bool = True,
        ncols: int = 4,
        panel_size: float = 3.2,
        marker_size: float = 36.0,
        title: str | None = None,
    ) -> None:
        """Validate every argument (ValueError naming it and what exists), then build the figure."""
        if hue_by not in HUE_CHOICES:
            raise ValueError(f"hue_by must be one of {HUE_CHOICES}, got {hue_by!r}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
        ncols = check_int("ncols", ncols, minimum=1)
        check_positive("panel_size", panel_size)
        check_positive("marker_size", marker_size)
        df = plane_table(
            layers, layers_to_show=layers_to_show, methods=methods, heads=heads, seeds=seeds
        )
        if hue_by not in df.columns:
            raise ValueError(f"hue_by={hue_by!r} but the layers table has no {hue_by!r} column")
        self.table = df
        self.hue_by = hue_by
        self.frames: list[float] = sorted({float(e) for e in df["epoch"]})
        preferred = {"method": METHOD_ORDER, "head": tuple(HEAD_STYLES), "run": ()}[hue_by]
        self.groups: list = _ordered(df[hue_by].unique(), preferred)
        self.styles: dict[Any, Style] = _style_map(self.groups, hue_by)
        self.accuracy = self._accuracy_table(epochs, df) if epochs is not None else None
        self.figure, self.trajectories = self._build(
            df, layout, floor, ncols, panel_size, marker_size
        )
        self.title = title
        #: the heading: the title (if any), then the epoch and each group's test accuracy
        self.label: Text = self.figure.suptitle("")
        self._freeze()
        self.index = len(self.frames) - 1
        self.draw(self.index)

    # -- building -------------------------------------------------------------------------------

    def _accuracy_table(self, epochs: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
        """Test accuracy per group and record point: the runs of the plotted groups, mean over runs."""
        check_table(epochs, ("run", "method", "epoch", "test_acc"), "epochs")
        if self.hue_by not in epochs.columns:
            raise ValueError(f"epochs table has no {self.hue_by!r} column (hue_by={self.hue_by!r})")
        keep = epochs[epochs[self.hue_by].isin(self.groups)]
        for column in ("method", "head"):
            if column in df.columns and column in keep.columns:
                keep = keep[keep[column].isin(set(df[column]))]
        keep = keep.dropna(subset=["test_acc"])
        return keep.groupby([self.hue_by, "epoch"], sort=True)["test_acc"].mean().reset_index()

    def _build(
        self,
        df: pd.DataFrame,
        layout: str,
        floor: bool,
        ncols: int,
        panel_size: float,
        marker_size: float,
    ) -> tuple[Figure, list[_Trajectory]]:
        """The panels (overlay: one per layer; side: one row of layers per group) and artists."""
        order = _layer_order(df)
        n = len(order)
        if layout == "overlay":
            cols = min(ncols, n)
            rows = math.ceil(n / cols)
            cells = [(k, index, name, None) for k, (index, name) in enumerate(order)]
        else:
            cols, rows = n, len(self.groups)
            cells = [
                (r * n + k, index, name, g)
                for r, g in enumerate(self.groups)
                for k, (index, name) in enumerate(order)
            ]
        figsize = (panel_size * cols + 0.8 * len(self.groups), panel_size * rows + 1.0)
        fig = _new_figure(rows, cols, figsize)
        axes = list(fig.axes)
        for ax in axes[len(cells) :]:
            ax.remove()
        cmaps = {g: self.styles[g].colormap() for g in self.groups}
        norms = {g: _epoch_norm(df.loc[df[self.hue_by] == g, "epoch"]) for g in self.groups}
        with_floor = floor and {"floor_xz", "floor_yz"} <= set(df.columns)
        with_std = {"nhsic_xz_std", "nhsic_yz_std"} <= set(df.columns)
        trajectories = []
        for slot, index, name, only in cells:
            ax = axes[slot]
            sub = df[df["layer_index"] == index]
            if only is not None:
                sub = sub[sub[self.hue_by] == only]
            for _, traj in sub.groupby(_run_keys(sub), sort=False, dropna=False):
                traj = traj.sort_values("epoch")
                trajectories.append(
                    self._trajectory(ax, traj, cmaps, norms, marker_size, with_floor, with_std)
                )
            ax.set_title(name if only is None else f"{name} ({only})")
            ax.set_xlabel("nHSIC(X;Z)")
            ax.set_ylabel("nHSIC(Y;Z)")
            self._limits(ax, sub, with_floor)
        panels = axes[: len(cells)]
        for g in reversed(self.groups):
            _epoch_colorbar(fig, norms[g], cmaps[g], panels, f"epoch ({g})")
        handles = [
            Line2D([], [], marker=self.styles[g].marker, ls=self.styles[g].linestyle,
                   color=self.styles[g].color(), markeredgecolor=_EDGE, label=str(g))
            for g in self.groups
        ]  # fmt: skip
        if with_floor:
            handles.append(Line2D([], [], ls=":", marker="x", color="0.35", label=FLOOR_LABEL))
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        return fig, trajectories

    def _trajectory(
        self,
        ax: Axes,
        traj: pd.DataFrame,
        cmaps: dict,
        norms: dict,
        marker_size: float,
        with_floor: bool,
        with_std: bool,
    ) -> _Trajectory:
        """The artists of one run in one panel, drawn like plot_plane's (line below markers)."""
        group = traj[self.hue_by].iloc[0]
        st = self.styles[group]
        xy = traj[["nhsic_xz", "nhsic_yz"]].to_numpy(float)
        line = ax.plot(xy[:, 0], xy[:, 1], color=st.color(), ls=st.linestyle, lw=1.0, alpha=0.6,
                       zorder=1)[0]  # fmt: skip
        points = ax.scatter(
            xy[:, 0], xy[:, 1], c=traj["epoch"].to_numpy(float), cmap=cmaps[group],
            norm=norms[group], marker=st.marker, s=marker_size, edgecolors=_EDGE,
            linewidths=0.4, zorder=2, label=str(group),
        )  # fmt: skip
        current = ax.plot([], [], marker=st.marker, ms=math.sqrt(marker_size) * 1.5, ls="none",
                          markerfacecolor="none", markeredgecolor=_CURRENT_EDGE,
                          markeredgewidth=1.3, zorder=3, label="_current")[0]  # fmt: skip
        spread = ax.plot([], [], color=st.color(), lw=1.0, alpha=0.8, zorder=1.5,
                         label="_spread")[0]  # fmt: skip
        floor_xy, floor_mark = None, None
        if with_floor:
            floor_xy = traj[["floor_xz", "floor_yz"]].to_numpy(float)
            floor_mark = ax.plot([], [], ls=":", lw=0.9, marker="x", ms=5, markevery=[0],
                                 color=st.color(), alpha=0.9, zorder=0.8, label="_floor")[0]  # fmt: skip
        std = traj[["nhsic_xz_std", "nhsic_yz_std"]].to_numpy(float) if with_std else None
        return _Trajectory(group, traj["epoch"].to_numpy(float), xy, floor_xy, std, line,
                           points, current, spread, floor_mark)  # fmt: skip

    @staticmethod
    def _limits(ax: Axes, sub: pd.DataFrame, with_floor: bool) -> None:
        """Fix the panel's limits to every point of the run (and its floors), with a margin."""
        xs = [sub["nhsic_xz"].to_numpy(float)]
        ys = [sub["nhsic_yz"].to_numpy(float)]
        if with_floor:
            xs.append(sub["floor_xz"].to_numpy(float))
            ys.append(sub["floor_yz"].to_numpy(float))
        for values, setter in (
            (np.concatenate(xs), ax.set_xlim),
            (np.concatenate(ys), ax.set_ylim),
        ):
            values = values[np.isfinite(values)]
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
            pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
            setter(lo - pad, hi + pad)
        ax.set_autoscale_on(False)

    def _freeze(self) -> None:
        """Lay the figure out once and keep that layout: frames differ only in their data."""
        self.label.set_text(self._heading(self.frames[-1]))
        self.figure.draw_without_rendering()
        # no engine at all (not "none"): savefig then skips its layout pre-draw, halving a frame
        self.figure.set_layout_engine(None)

    # -- drawing --------------------------------------------------------------------------------

    def _heading(self, epoch: float) -> str:
        """The title (if any) above the label of ``epoch``."""
        label = self._label_text(epoch)
        return f"{self.title}\n{label}" if self.title else label

    def _label_text(self, epoch: float) -> str:
        """``epoch E`` and, with an epochs table, each group's test accuracy at the last record
        point up to E."""
        text = f"epoch {format_epoch(epoch)}"
        if self.accuracy is None:
            return text
        parts = []
        for g in self.groups:
            acc = self.accuracy[
                (self.accuracy[self.hue_by] == g) & (self.accuracy["epoch"] <= epoch)
            ]
            if len(acc):
                parts.append(f"{g} {acc['test_acc'].iloc[-1]:.3f}")
        return text + (" | test accuracy: " + ", ".join(parts) if parts else "")

    def draw(self, index: int) -> list:
        """Show every trajectory up to ``frames[index]``; returns the artists that changed."""
        index = check_int("index", index, minimum=0, maximum=len(self.frames) - 1)
        self.index = index
        epoch = self.frames[index]
        changed: list = [self.label]
        for t in self.trajectories:
            n = int(np.searchsorted(t.epochs, epoch, side="right"))
            t.line.set_data(t.xy[:n, 0], t.xy[:n, 1])
            t.points.set_offsets(t.xy[:n] if n else np.empty((0, 2)))
            t.points.set_array(t.epochs[:n])
            changed += [t.line, t.points, t.current, t.spread]
            if n == 0:
                for artist in (t.current, t.spread, t.floor_mark):
                    if artist is not None:
                        artist.set_data([], [])
                continue
            x, y = t.xy[n - 1]
            t.current.set_data([x], [y])
            if t.std is not None and np.isfinite(t.std[n - 1]).all():
                sx, sy = t.std[n - 1]
                t.spread.set_data([x - sx, x + sx, np.nan, x, x], [y, y, np.nan, y - sy, y + sy])
            else:
                t.spread.set_data([], [])
            if t.floor_mark is not None and t.floor is not None:
                fx, fy = t.floor[n - 1]
                shown = np.isfinite([fx, fy]).all()
                t.floor_mark.set_data([fx, x] if shown else [], [fy, y] if shown else [])
                changed.append(t.floor_mark)
        self.label.set_text(self._heading(epoch))
        return changed

    def frame_of(self, epoch: float) -> int:
        """The frame index of a recorded ``epoch``; ValueError naming the recorded range otherwise."""
        if isinstance(epoch, bool) or not isinstance(epoch, int | float | np.integer | np.floating):
            raise ValueError(f"epoch must be a number, got {epoch!r}")
        matches = [k for k, e in enumerate(self.frames) if math.isclose(e, float(epoch))]
        if not matches:
            raise ValueError(
                f"epoch={epoch} is not a recorded point; recorded: "
                f"{[format_epoch(e) for e in self.frames]} "
                f"(range {format_epoch(self.frames[0])}-{format_epoch(self.frames[-1])})"
            )
        return matches[0]

    def images(self, dpi: float) -> list[Any]:
        """Every frame as a PIL RGB image at ``dpi``, blitted: the static part (panels, colour bars,
        legend) is rendered once and each frame's changing artists are drawn over it."""
        from matplotlib.backend_bases import FigureCanvasBase
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from PIL import Image

        check_positive("dpi", dpi)
        fig, shown = self.figure, self.index
        old_dpi, old_canvas = fig.dpi, fig.canvas
        canvas = FigureCanvasAgg(fig)
        fig.set_dpi(dpi)
        try:
            dynamic = self.draw(0)
            for artist in dynamic:
                artist.set_visible(False)
            canvas.draw()
            background = canvas.copy_from_bbox(fig.bbox)
            for artist in dynamic:
                artist.set_visible(True)
            renderer = canvas.get_renderer()
            size = (int(renderer.width), int(renderer.height))
            frames = []
            for k in range(len(self.frames)):
                canvas.restore_region(background)
                for artist in sorted(self.draw(k), key=lambda a: a.get_zorder()):
                    (artist.axes or fig).draw_artist(artist)
                rgba = Image.frombuffer("RGBA", size, canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
                frames.append(rgba.convert("RGB"))
        finally:
            fig.set_dpi(old_dpi)
            if isinstance(old_canvas, FigureCanvasAgg):
                fig.set_canvas(old_canvas)
            else:
                FigureCanvasBase(fig)
            self.draw(shown)
        return frames


class PlaneAnimation(FuncAnimation):
    """A ``FuncAnimation`` of a :class:`PlaneAnimator`: one frame per record point."""

    def __init__(self, animator: PlaneAnimator, interval: int) -> None:
        """Animate ``animator`` with ``interval`` ms per frame (frames not cached)."""
        self.animator = animator
        self.frame_epochs: list[float] = list(animator.frames)
        super().__init__(
            animator.figure,
            animator.draw,
            frames=range(len(animator.frames)),
            init_func=lambda: animator.draw(0),
            interval=interval,
            repeat=True,
            cache_frame_data=False,
        )

    def images(self, dpi: float) -> list[Any]:
        """Every frame as a PIL image (:meth:`PlaneAnimator.images`); the animation counts as shown."""
        frames = self.animator.images(dpi)
        self._draw_was_started = True  # matplotlib warns when an unshown animation is deleted
        return frames


def animate_plane(
    layers: pd.DataFrame,
    epochs: pd.DataFrame | None = None,
    *,
    layers_to_show: Sequence[str | int] | str | int | None = None,
    methods: Sequence[str] | str | None = None,
    heads: Sequence[str] | str | None = None,
    seeds: str = "each",
    hue_by: str = "method",
    layout: str = "overlay",
    floor: bool = True,
    ncols: int = 4,
    panel_size: float = 3.2,
    marker_size: float = 36.0,
    interval: int = 200,
    title: str | None = None,
) -> PlaneAnimation:
    """The HSIC plane over training as a ``FuncAnimation``: one frame per recorded point.

    Arguments as :func:`ibstudy.plots.plot_plane`'s (``seeds="mean"``: the seed-mean trajectory);
    ``epochs`` (the epochs table) adds each group's test accuracy to the label; ``layout="side"``
    gives every group its own row of panels. Save with :func:`save_gif`, show in a notebook with
    :func:`animation_html`.
    """
    interval = check_int("interval", interval, minimum=1)
    animator = PlaneAnimator(
        layers, epochs, layers_to_show=layers_to_show, methods=methods, heads=heads, seeds=seeds,
        hue_by=hue_by, layout=layout, floor=floor, ncols=ncols, panel_size=panel_size,
        marker_size=marker_size, title=title,
    )  # fmt: skip
    return PlaneAnimation(animator, interval)


def _write_gif(frames: Sequence[Any], target: str, fps: float) -> None:
    """Encode PIL images as one looping GIF at ``target`` (format given: temp files have no suffix)."""
    frames[0].save(
        target, format="GIF", save_all=True, append_images=list(frames[1:]),
        duration=int(1000 / fps), loop=0,
    )  # fmt: skip


class _GifWriter(PillowWriter):
    """Matplotlib's Pillow writer, encoding through :func:`_write_gif`."""

    def finish(self) -> None:
        """Encode the grabbed frames as one looping GIF."""
        _write_gif(self._frames, self.outfile, self.fps)


def save_gif(
    animation: FuncAnimation,
    path: str | os.PathLike[str],
    *,
    fps: float = GIF_FPS,
    dpi: float = GIF_DPI,
) -> Path:
    """Write ``animation`` to ``path`` (a ``.gif``) with Pillow (no ffmpeg), atomically; returns it.
    A :class:`PlaneAnimation` is blitted (:meth:`PlaneAnimator.images`), any other frame by frame."""
    if not isinstance(animation, FuncAnimation):
        raise ValueError(f"animation must be a matplotlib FuncAnimation, got {type(animation)}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"path must end in .gif, got {str(path)!r}")
    check_positive("fps", fps)
    check_positive("dpi", dpi)
    if isinstance(animation, PlaneAnimation):  # blitted: the static part is rendered once
        frames = animation.images(dpi)
        return atomic_write(path, lambda tmp: _write_gif(frames, tmp, fps))
    writer = _GifWriter(fps=fps)
    return atomic_write(path, lambda tmp: animation.save(tmp, writer=writer, dpi=dpi))


#: the player's button icons as text, in place of the icon font matplotlib links from a CDN
_OFFLINE_ICONS = """<style>
.anim-buttons .fa { font-style: normal; display: inline-block; min-width: 1.2em; }
.fa-minus::before { content: "\\2212"; } .fa-plus::before { content: "+"; }
.fa-play::before { content: "\\25B6"; } .fa-pause::before { content: "||"; }
.fa-flip-horizontal { transform: scaleX(-1); }
.fa-step-forward::before { content: "\\25B6|"; } .fa-step-backward::before { content: "|\\25C0"; }
.fa-fast-forward::before { content: "\\25B6\\25B6"; }
.fa-fast-backward::before { content: "\\25C0\\25C0"; }
</style>"""
_ICON_FONT_LINK = re.compile(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">')


_PLAYER = """<div class="ibstudy-player" id="{uid}">
<img id="{uid}-img" alt="the plane at one record point" style="max-width:100%">
<div style="display:flex;align-items:center;gap:0.6em;font:13px sans-serif">
<button id="{uid}-play" type="button">play</button>
<input id="{uid}-slider" type="range" min="0" max="{last}" value="{last}" style="flex:1">
<span id="{uid}-label"></span></div>
<script>(function() {{
const frames = {frames}, labels = {labels}, delay = {delay};
const img = document.getElementById("{uid}-img"), slider = document.getElementById("{uid}-slider");
const label = document.getElementById("{uid}-label"), play = document.getElementById("{uid}-play");
let timer = null;
function show(k) {{ slider.value = k; img.src = frames[k]; label.textContent = labels[k]; }}
function stop() {{ clearInterval(timer); timer = null; play.textContent = "play"; }}
slider.addEventListener("input", () => {{ stop(); show(+slider.value); }});
play.addEventListener("click", () => {{
  if (timer !== null) {{ stop(); return; }}
  let k = +slider.value >= frames.length - 1 ? 0 : +slider.value;
  show(k); play.textContent = "pause";
  timer = setInterval(() => {{ k += 1; if (k >= frames.length) {{ stop(); return; }} show(k); }}, delay);
}});
show(frames.length - 1);
}})();</script></div>"""


def jshtml(animation: FuncAnimation, *, fps: float = GIF_FPS, dpi: float = GIF_DPI) -> str:
    """The animation as a self-contained HTML player that requests nothing from the network: a
    :class:`PlaneAnimation` as its blitted frames (PNG data URIs at ``dpi``) with a play button and
    a slider over the record points; any other as ``to_jshtml`` with the button icons as text."""
    if not isinstance(animation, FuncAnimation):
        raise ValueError(f"animation must be a matplotlib FuncAnimation, got {type(animation)}")
    check_positive("fps", fps)
    if not isinstance(animation, PlaneAnimation):
        html = animation.to_jshtml(fps=fps, default_mode="once")
        return _ICON_FONT_LINK.sub(lambda _: _OFFLINE_ICONS, html)
    import base64
    import io
    import json
    import uuid

    uris = []
    for image in animation.images(dpi):
        buffer = io.BytesIO()
        image.quantize(256).save(buffer, format="PNG", optimize=True)
        uris.append("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    labels = [f"epoch {format_epoch(e)}" for e in animation.frame_epochs]
    return _PLAYER.format(
        uid=f"ibstudy-{uuid.uuid4().hex[:12]}", last=len(uris) - 1, frames=json.dumps(uris),
        labels=json.dumps(labels), delay=int(1000 / fps),
    )  # fmt: skip


def animation_html(animation: FuncAnimation, *, fps: float = GIF_FPS, dpi: float = GIF_DPI) -> Any:
    """:func:`jshtml` as an ``IPython.display.HTML`` object, to show inline in a notebook."""
    from IPython.display import HTML

    return HTML(jshtml(animation, fps=fps, dpi=dpi))
