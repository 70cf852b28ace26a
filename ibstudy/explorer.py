"""An explorer of the study's runs for JupyterLab: runs, blocks, estimator and record point chosen with
widgets, the plane, the depth profile and the accuracy curve redrawn together.

:class:`Explorer` holds the tables and the choice and redraws three figures in :meth:`Explorer.update`,
which needs no browser (the tests call it); :func:`explore` adds the ipywidgets controls where a widget
frontend shows them (a kernel that JupyterLab, Notebook 7 or VS Code started). Without one (papermill,
plain Python) it prints one line saying so and shows the static figures instead. An estimator that is
not cached for every chosen run is measured on request from the runs' stored weights
(:func:`ibstudy.measure.measure`, with a progress bar), never retrained.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ibstudy.animate import PlaneAnimator, format_epoch
from ibstudy.config import MeasureConfig
from ibstudy.plots import _EDGE, _new_figure
from ibstudy.tables import (
    EPOCH_COLUMNS,
    SETTING_COLUMNS,
    as_list,
    check_one_estimator,
    check_table,
    seed_mean,
)

__all__ = [
    "ExplorerState",
    "Explorer",
    "MEAN",
    "NO_FRONTEND",
    "explore",
    "has_widget_frontend",
]

#: how a run choice names the mean over a method/head's seeds
MEAN = "seed mean"
#: the one line printed where no widget frontend can show the controls
NO_FRONTEND = (
    "explore: no widget frontend here (papermill or plain Python), so these are the static figures; "
    "open the notebook in JupyterLab (make lab) to explore"
)
_PLANE_VALUES = ("nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz")
MeasureFn = Callable[..., pd.DataFrame]


def has_widget_frontend() -> bool:
    """Whether this code runs in a Jupyter kernel whose frontend renders widgets: a kernel started
    by a Jupyter server session (JupyterLab, Notebook 7: ``JPY_SESSION_NAME``) or by VS Code."""
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python without IPython
        return False
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return False
    return bool(os.environ.get("JPY_SESSION_NAME")) or "__vsc_ipynb_file__" in shell.user_ns


@dataclass(frozen=True)
class ExplorerState:
    """What the explorer shows: run choices, blocks (layer names), estimator (measure_id), epoch."""

    runs: tuple[str, ...]
    blocks: tuple[str, ...]
    estimator: str
    epoch: float


def _choice_key(method: object, head: object) -> str:
    return f"{method}/{head}"


def _measure_config(table: pd.DataFrame) -> MeasureConfig:
    """The MeasureConfig whose settings a measurement table carries (a setting the table lacks
    keeps its default; each value is cast to its default's type, as CSV reading may change it)."""
    row = table.iloc[0]
    defaults = MeasureConfig()
    values = {}
    for f in dataclasses.fields(MeasureConfig):
        if f.name in table.columns and not pd.isna(row[f.name]):
            kind = type(getattr(defaults, f.name))
            values[f.name] = kind(row[f.name]) if kind in (int, float, str) else row[f.name]
    return MeasureConfig.from_dict({**defaults.to_dict(), **values})


class Explorer:
    """The explorer's tables, choice and figures; :meth:`update` validates a new choice and redraws.

    ``layers`` is the recorded table (one estimator), ``epochs`` the epochs table; ``measures`` maps a
    measure_id to a measurement table of (some of) the same runs, ``run_dirs`` a run id to its folder
    (where cached measures are found and missing ones computed; default ``<results_dir>/runs/<run>``),
    ``estimators`` adds MeasureConfigs to offer for computing. ``measure_fn`` is
    :func:`ibstudy.measure.measure` unless given (tests).
    """

    def __init__(
        self,
        epochs: pd.DataFrame,
        layers: pd.DataFrame,
        *,
        measures: Mapping[str, pd.DataFrame] | None = None,
        run_dirs: Mapping[str, str | os.PathLike[str]] | None = None,
        results_dir: str | os.PathLike[str] | None = "results",
        estimators: Sequence[MeasureConfig] = (),
        measure_fn: MeasureFn | None = None,
        panel_size: float = 2.6,
    ) -> None:
        """Check the tables, find the cached measures, and draw the default choice (each
        method/head's seed mean, every layer, the recorded estimator, the last record point)."""
        check_table(epochs, ("run", "method", "head", "epoch", "test_acc"), "epochs")
        check_one_estimator(check_table(layers, ("run", "method", "head", "seed", "epoch",
                                                 "layer", "layer_index", "measure_id",
                                                 *_PLANE_VALUES[:2]), "layers"))  # fmt: skip
        self.epochs_table = epochs
        self.recorded = str(layers["measure_id"].iloc[0])
        self.tables: dict[str, pd.DataFrame] = {self.recorded: layers}
        for measure_id, table in (measures or {}).items():
            check_one_estimator(
                check_table(table, ("run", "epoch", "layer", "measure_id"), "measure")
            )
            self.tables[str(measure_id)] = table
        self.run_ids: list[str] = list(dict.fromkeys(layers["run"].astype(str)))
        self.run_dirs = self._run_dirs(run_dirs, results_dir)
        self.configs: dict[str, MeasureConfig] = {}
        for table in self.tables.values():
            if set(SETTING_COLUMNS) <= set(table.columns):
                self.configs[str(table["measure_id"].iloc[0])] = _measure_config(table)
        self._find_cached()
        for mcfg in estimators:
            if not isinstance(mcfg, MeasureConfig):
                raise ValueError(f"estimators must hold MeasureConfig objects, got {mcfg!r}")
            self.configs.setdefault(mcfg.validate().measure_id(), mcfg)
        self.measure_fn = measure_fn
        self.panel_size = panel_size
        self.choices = self._choices(layers)
        self.figures: dict[str, Figure] = {}
        self.animator: PlaneAnimator | None = None
        blocks = list(dict.fromkeys(layers.sort_values("layer_index")["layer"].astype(str)))
        epoch = float(layers["epoch"].max())
        self.state = ExplorerState(self._default_runs(), tuple(blocks), self.recorded, epoch)
        self._redraw(rebuild=True)

    # -- what can be chosen ---------------------------------------------------------------------

    def _run_dirs(
        self, given: Mapping[str, str | os.PathLike[str]] | None, results_dir: object
    ) -> dict[str, Path]:
        """Each run's folder, where it exists."""
        found = {str(k): Path(v) for k, v in (given or {}).items()}
        if results_dir is not None:
            for run in self.run_ids:
                folder = Path(str(results_dir)) / "runs" / run
                if run not in found and (folder / "config.json").exists():
                    found[run] = folder
        return found

    def _find_cached(self) -> None:
        """Read every measurement cached in the runs' ``measures/`` folders into ``tables``."""
        by_id: dict[str, list[pd.DataFrame]] = {}
        for folder in self.run_dirs.values():
            for path in sorted((folder / "measures").glob("*.csv")):
                if path.stem in self.tables:
                    continue
                try:
                    by_id.setdefault(path.stem, []).append(pd.read_csv(path))
                except (OSError, ValueError, pd.errors.EmptyDataError):
                    continue  # a damaged cache is re-measured on request
        for measure_id, frames in by_id.items():
            table = pd.concat(frames, ignore_index=True)
            self.tables[measure_id] = table
            if set(SETTING_COLUMNS) <= set(table.columns):
                self.configs[measure_id] = _measure_config(table)

    def _choices(self, layers: pd.DataFrame) -> dict[str, tuple[str, ...]]:
        """Run choice label -> the run ids it stands for: each method/head's seed mean (when it has
        several seeds), then each run as ``method/head seed s``."""
        keys = layers[["run", "method", "head", "seed"]].drop_duplicates("run")
        out: dict[str, tuple[str, ...]] = {}
        for (method, head), group in keys.groupby(["method", "head"], sort=False, dropna=False):
            runs = tuple(group["run"].astype(str))
            if len(runs) > 1:
                out[f"{_choice_key(method, head)} {MEAN}"] = runs
            for row in group.itertuples():
                out[f"{_choice_key(method, head)} seed {row.seed}"] = (str(row.run),)
        return out

    def _default_runs(self) -> tuple[str, ...]:
        """Each method/head's seed mean, or its only run where it has one seed."""
        picked: dict[str, str] = {}
        for choice in self.choices:
            arm = choice.rsplit(f" {MEAN}", 1)[0].rsplit(" seed ", 1)[0]
            picked.setdefault(arm, choice)  # a seed mean comes before its seeds
        return tuple(picked.values())

    @property
    def estimators(self) -> list[str]:
        """Every estimator on offer: the recorded one, the cached ones and those to compute."""
        return list(dict.fromkeys([*self.tables, *self.configs]))

    def missing_runs(self, estimator: str, runs: Sequence[str] | None = None) -> list[str]:
        """The run ids of ``runs`` (choices; default: the current ones) that ``estimator`` lacks."""
        wanted = self._run_ids(self.state.runs if runs is None else runs)
        have = set(self.tables[estimator]["run"].astype(str)) if estimator in self.tables else set()
        return [r for r in wanted if r not in have]

    def epochs(self) -> list[float]:
        """The record points of the current estimator's table for the current runs."""
        table = self._rows(self.state.estimator, self.state.runs)
        return sorted({float(e) for e in table["epoch"]})

    # -- the update function --------------------------------------------------------------------

    def update(
        self,
        *,
        runs: Sequence[str] | str | None = None,
        blocks: Sequence[str] | str | None = None,
        estimator: str | None = None,
        epoch: float | None = None,
        progress: bool = True,
    ) -> ExplorerState:
        """Validate the new choice (ValueError naming the argument and what exists), measure a
        missing estimator when asked for one, and redraw the three figures; returns the state."""
        state = self.state
        if runs is not None:
            runs = tuple(as_list(runs))
            unknown = [r for r in runs if r not in self.choices]
            if not runs or unknown:
                raise ValueError(
                    f"runs: unknown or no choice(s) {unknown}; available {list(self.choices)}"
                )
            state = replace(state, runs=runs)
        if blocks is not None:
            blocks = tuple(str(b) for b in as_list(blocks))
            names = self._layer_names()
            unknown = [b for b in blocks if b not in names]
            if not blocks or unknown:
                raise ValueError(f"blocks: unknown or no block(s) {unknown}; available {names}")
            state = replace(state, blocks=tuple(b for b in names if b in blocks))
        if estimator is not None:
            if estimator not in self.estimators:
                raise ValueError(f"estimator must be one of {self.estimators}, got {estimator!r}")
            state = replace(state, estimator=estimator)
        if epoch is not None and (
            isinstance(epoch, bool) or not isinstance(epoch, int | float | np.integer | np.floating)
        ):
            raise ValueError(f"epoch must be a number, got {epoch!r}")
        missing = self.missing_runs(state.estimator, state.runs)
        if missing:
            self._compute(state.estimator, missing, progress)
        points = sorted({float(e) for e in self._rows(state.estimator, state.runs)["epoch"]})
        if epoch is not None:
            if not any(math.isclose(float(epoch), p) for p in points):
                raise ValueError(
                    f"epoch={epoch} is not a recorded point of these runs under {state.estimator}; "
                    f"recorded: {[format_epoch(p) for p in points]} "
                    f"(range {format_epoch(points[0])}-{format_epoch(points[-1])})"
                )
            state = replace(state, epoch=float(epoch))
        elif not any(math.isclose(state.epoch, p) for p in points):
            state = replace(state, epoch=max([p for p in points if p <= state.epoch] or points[:1]))
        rebuild = (state.runs, state.blocks, state.estimator) != (
            self.state.runs, self.state.blocks, self.state.estimator,
        )  # fmt: skip
        self.state = state
        self._redraw(rebuild=rebuild)
        return state

    # -- tables of the current choice -----------------------------------------------------------

    def _layer_names(self) -> list[str]:
        table = self.tables[self.recorded]
        return list(dict.fromkeys(table.sort_values("layer_index")["layer"].astype(str)))

    def _run_ids(self, choices: Sequence[str]) -> list[str]:
        return list(dict.fromkeys(r for c in choices for r in self.choices[c]))

    def _rows(self, estimator: str, choices: Sequence[str]) -> pd.DataFrame:
        """The estimator's rows of the chosen runs, one trajectory per choice (``run`` = choice:
        a seed mean averaged over its seeds)."""
        table = self.tables[estimator]
        frames = []
        for choice in choices:
            ids = self.choices[choice]
            rows = table[table["run"].astype(str).isin(ids)]
            if rows.empty:
                continue
            if len(ids) > 1:
                values = [c for c in _PLANE_VALUES if c in rows.columns]
                rows = seed_mean(rows, values)
                rows["nhsic_xz_std"] = rows["nhsic_xz_seed_std"]
                rows["nhsic_yz_std"] = rows["nhsic_yz_seed_std"]
            frames.append(rows.assign(run=choice))
        if not frames:
            raise ValueError(f"estimator {estimator!r} has no rows for the runs {list(choices)}")
        return pd.concat(frames, ignore_index=True)

    def _accuracy_rows(self) -> pd.DataFrame:
        """The epochs table of the chosen runs with ``run`` = choice (several seeds averaged)."""
        frames = []
        for choice in self.state.runs:
            ids = self.choices[choice]
            rows = self.epochs_table[self.epochs_table["run"].astype(str).isin(ids)]
            frames.append(rows.assign(run=choice))
        return pd.concat(frames, ignore_index=True)

    def _compute(self, estimator: str, runs: Sequence[str], progress: bool) -> None:
        """Measure ``estimator`` for ``runs`` from their stored weights and add the rows."""
        if estimator not in self.configs:
            raise ValueError(f"estimator {estimator!r} has no settings to compute it with")
        folders = [r for r in runs if r not in self.run_dirs]
        if folders:
            raise ValueError(
                f"estimator {estimator!r} is not cached for run(s) {folders} and their folders are "
                f"unknown (pass run_dirs= or results_dir=); folders known: {sorted(self.run_dirs)}"
            )
        if self.measure_fn is None:
            from ibstudy.measure import measure

            self.measure_fn = measure
        frames = [] if estimator not in self.tables else [self.tables[estimator]]
        for k, run in enumerate(runs):
            if progress:
                print(f"measuring {estimator} for run {k + 1}/{len(runs)}: {run}", flush=True)
            frames.append(
                self.measure_fn(self.run_dirs[run], self.configs[estimator], progress=progress)
            )
        self.tables[estimator] = pd.concat(frames, ignore_index=True)

    # -- drawing --------------------------------------------------------------------------------

    def _redraw(self, *, rebuild: bool) -> None:
        """Redraw for the current state; ``rebuild`` when runs, blocks or estimator changed."""
        s = self.state
        if rebuild or self.animator is None:
            rows = self._rows(s.estimator, s.runs)
            rows = rows[rows["layer"].astype(str).isin(s.blocks)]
            self.animator = PlaneAnimator(
                rows, self._accuracy_rows(), seeds="each", hue_by="run", ncols=len(s.blocks),
                panel_size=self.panel_size,
            )  # fmt: skip
            self.figures["plane"] = self.animator.figure
            self.figures["accuracy"] = self._accuracy_figure()
        self.animator.draw(self.animator.frame_of(s.epoch))
        self._cursor.set_xdata([s.epoch, s.epoch])
        self.figures["profile"] = self._profile_figure()

    def _styles(self) -> dict:
        assert self.animator is not None
        return self.animator.styles

    def _accuracy_figure(self) -> Figure:
        """Test accuracy against epoch, one line per choice, a cursor at the current epoch."""
        fig = _new_figure(1, 1, (2.2 * self.panel_size, 1.4 * self.panel_size))
        ax = fig.axes[0]
        styles = self._styles()
        acc = self._accuracy_rows().dropna(subset=["test_acc"])
        for choice in self.state.runs:
            curve = acc[acc["run"] == choice].groupby("epoch")["test_acc"].mean()
            st = styles.get(choice)
            if curve.empty or st is None:
                continue
            ax.plot(curve.index.to_numpy(float), curve.to_numpy(float), color=st.color(),
                    ls=st.linestyle, marker=st.marker, ms=3, markeredgecolor=_EDGE,
                    markeredgewidth=0.3, label=choice)  # fmt: skip
        self._cursor: Line2D = ax.axvline(self.state.epoch, color="0.3", lw=1.0, ls="--")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.legend(frameon=False, fontsize="small")
        return fig

    def _profile_figure(self) -> Figure:
        """nHSIC(X;Z) and nHSIC(Y;Z) against depth at the current epoch, one line per choice, with
        each choice's permutation floor dotted."""
        s = self.state
        rows = self._rows(s.estimator, s.runs)
        rows = rows[rows["layer"].astype(str).isin(s.blocks)]
        rows = rows[np.isclose(rows["epoch"].astype(float), s.epoch)]
        styles = self._styles()
        fig = _new_figure(1, 2, (2.4 * self.panel_size, 1.4 * self.panel_size))
        for ax, side in zip(fig.axes, ("xz", "yz"), strict=True):
            for choice in s.runs:
                line = rows[rows["run"] == choice].sort_values("layer_index")
                st = styles.get(choice)
                if line.empty or st is None:
                    continue
                x = line["layer_index"].to_numpy(float)
                ax.plot(x, line[f"nhsic_{side}"].to_numpy(float), color=st.color(), marker=st.marker,
                        ls=st.linestyle, markeredgecolor=_EDGE, label=choice)  # fmt: skip
                if f"floor_{side}" in line.columns:
                    ax.plot(x, line[f"floor_{side}"].to_numpy(float), color=st.color(), ls=":",
                            lw=0.9, label="_floor")  # fmt: skip
            names = list(dict.fromkeys(zip(rows["layer_index"], rows["layer"], strict=True)))
            ax.set_xticks([i for i, _ in names], [n for _, n in names])
            ax.set_xlabel("layer")
            ax.set_ylabel(f"nHSIC({side[0].upper()};Z)")
        fig.axes[0].legend(frameon=False, fontsize="small")
        fig.suptitle(f"Depth profile at epoch {format_epoch(s.epoch)} ({s.estimator})")
        return fig

    def png(self, name: str) -> bytes:
        """One figure (``plane``, ``profile`` or ``accuracy``) as PNG bytes."""
        if name not in self.figures:
            raise ValueError(f"name must be one of {list(self.figures)}, got {name!r}")
        return self.figures[name]._repr_png_()

    def _ipython_display_(self) -> None:
        """Show the static figures (the widget view displays itself)."""
        from IPython.display import display

        for name in ("plane", "profile", "accuracy"):
            display(self.figures[name])


class _WidgetView:
    """The ipywidgets controls around an Explorer; each change calls :meth:`Explorer.update`."""

    def __init__(self, explorer: Explorer) -> None:
        import ipywidgets as w

        self.explorer = explorer
        s = explorer.state
        self.runs = w.SelectMultiple(options=list(explorer.choices), value=s.runs,
                                     description="runs", rows=min(8, len(explorer.choices)))  # fmt: skip
        names = explorer._layer_names()
        self.blocks = w.SelectMultiple(options=names, value=s.blocks, description="blocks",
                                       rows=min(8, len(names)))  # fmt: skip
        self.estimator = w.Dropdown(options=self._estimator_options(), value=s.estimator,
                                    description="estimator")  # fmt: skip
        points = explorer.epochs()
        self.epoch = w.SelectionSlider(options=[(format_epoch(p), p) for p in points],
                                       value=s.epoch, description="epoch",
                                       continuous_update=False)  # fmt: skip
        self.play = w.Play(min=0, max=len(points) - 1, value=points.index(s.epoch), interval=400)
        w.jslink((self.play, "value"), (self.epoch, "index"))
        self.message = w.HTML("")
        self.images = {name: w.Image(format="png", value=explorer.png(name))
                       for name in ("plane", "profile", "accuracy")}  # fmt: skip
        self.progress = w.Output()
        for control in (self.runs, self.blocks, self.estimator):
            control.observe(self._changed, names="value")
        self.epoch.observe(self._epoch_changed, names="value")
        self.widget = w.VBox([
            w.HBox([self.runs, self.blocks, w.VBox([self.estimator, w.HBox([self.play, self.epoch]),
                                                    self.message])]),
            self.progress, self.images["plane"],
            w.HBox([self.images["profile"], self.images["accuracy"]]),
        ])  # fmt: skip

    def _estimator_options(self) -> list[tuple[str, str]]:
        e = self.explorer
        return [(m if not e.missing_runs(m) else f"{m} (compute)", m) for m in e.estimators]

    def _show(self, names: Sequence[str]) -> None:
        for name in names:
            self.images[name].value = self.explorer.png(name)

    def _changed(self, _change: Any) -> None:
        try:
            with self.progress:
                self.explorer.update(runs=self.runs.value, blocks=self.blocks.value,
                                     estimator=self.estimator.value)  # fmt: skip
            self.progress.clear_output()
        except ValueError as exc:
            self.message.value = f"<span style='color:#b2182b'>{exc}</span>"
            return
        self.message.value = ""
        points = self.explorer.epochs()
        options = [(format_epoch(p), p) for p in points]
        if list(self.epoch.options) != options:
            self.epoch.unobserve(self._epoch_changed, names="value")
            self.epoch.options = options
            self.epoch.value = self.explorer.state.epoch
            self.play.max = len(points) - 1
            self.epoch.observe(self._epoch_changed, names="value")
        self.estimator.options = self._estimator_options()
        self._show(("plane", "profile", "accuracy"))

    def _epoch_changed(self, change: Any) -> None:
        try:
            self.explorer.update(epoch=change["new"])
        except ValueError as exc:
            self.message.value = f"<span style='color:#b2182b'>{exc}</span>"
            return
        self._show(("plane", "profile"))


class _Interactive(Explorer):
    """An Explorer that displays its widget view."""

    view: _WidgetView

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.view.widget)


def _tables_of(source: object, results_dir: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(epochs, layers, run folders) from a StudyTables, an (epochs, layers) pair, or a table name
    such as ``"02_lenet5"`` written under ``<results_dir>/tables``."""
    if isinstance(source, str):
        from ibstudy.study import read_tables

        found = read_tables(source, results_dir=results_dir)
        if found is None:
            folder = Path(results_dir) / "tables"
            names = sorted(p.name.removesuffix("_layers.csv") for p in folder.glob("*_layers.csv"))
            raise ValueError(f"source {source!r}: no tables in {str(folder)!r}; available: {names}")
        return found[0], found[1], {}
    if isinstance(source, tuple) and len(source) == 2:
        return source[0], source[1], {}
    if all(hasattr(source, a) for a in ("epochs", "layers", "runs")):
        dirs = {r.config.run_id(): r.path for r in source.runs}  # type: ignore[attr-defined]
        return source.epochs, source.layers, dirs  # type: ignore[attr-defined]
    raise ValueError(
        "source must be a StudyTables (run_study's result), an (epochs, layers) pair or a table "
        f"name such as '02_lenet5', got {type(source).__name__}"
    )


def explore(
    source: object,
    *,
    results_dir: str = "results",
    estimators: Sequence[MeasureConfig] = (),
    interactive: bool | None = None,
    panel_size: float = 2.6,
) -> Explorer:
    """The explorer of ``source`` (a StudyTables, an (epochs, layers) pair, or a table name under
    ``results_dir``): widget controls where a widget frontend shows them (``interactive=None``
    decides; True / False force), else one printed line and the static figures. Display the
    result (last expression of a cell); ``estimators`` adds MeasureConfigs to compute on request."""
    if interactive not in (None, True, False):
        raise ValueError(f"interactive must be None, True or False, got {interactive!r}")
    epochs, layers, dirs = _tables_of(source, results_dir)
    for name, table, columns in (("epochs", epochs, EPOCH_COLUMNS[:4]), ("layers", layers, ())):
        check_table(table, columns, name)
    live = has_widget_frontend() if interactive is None else interactive
    cls = _Interactive if live else Explorer
    explorer = cls(epochs, layers, run_dirs=dirs, results_dir=results_dir,
                   estimators=estimators, panel_size=panel_size)  # fmt: skip
    if live:
        assert isinstance(explorer, _Interactive)
        explorer.view = _WidgetView(explorer)
    else:
        print(NO_FRONTEND, file=sys.stdout, flush=True)
    return explorer
