"""A grid of training runs: ``python -m ibstudy sweep`` (every TrainConfig field takes a comma list).

The grid is the Cartesian product of the given value lists (fields in the given order, the last one
varying fastest). Every config is built and validated before anything runs; ``--dry-run`` prints one
``python -m ibstudy train ... --resume`` command per run (one line each, for a scheduler's job array),
otherwise the runs are trained one after another. Runs are cached by config (a complete run is reused),
and the run folder's lock keeps two processes from writing the same run. No torch import here.

Value syntax on the command line: integers, numbers and strings as for ``train``; booleans
``true``/``false``; ``--train-size`` an integer or ``none``; tuple fields (``milestones``,
``probe_epochs``, ``save_epochs``) take integers joined by ``+`` per value and ``none`` for the empty
tuple, e.g. ``--milestones 20+30,none`` is a grid of two values, (20, 30) and ();
``record_fractions`` takes numbers the same way (``0.25+0.5``). The parsing lives in
``ibstudy.cli_values``, shared with ``train``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from ibstudy.checks import check_choice
from ibstudy.cli_values import grid_help, grid_value, option_text
from ibstudy.config import PRESETS, TrainConfig

if TYPE_CHECKING:
    from ibstudy.store import Run

__all__ = [
    "LAYERWISE_ONLY",
    "add_sweep_parser",
    "command_for",
    "expand_grid",
    "parse_grid",
    "run_side_by_side",
    "run_sweep",
    "sweep_configs",
]

_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))


# ------------------------------------------------------------------------------------------------
# The grid
# ------------------------------------------------------------------------------------------------


def _unknown_field(name: str, where: str = "the sweep grid") -> ValueError:
    return ValueError(f"unknown TrainConfig field {name!r} in {where}; allowed: {sorted(_FIELDS)}")


def _default(name: str) -> Any:
    """Field ``name``'s default, which says how its values are written (ibstudy.cli_values)."""
    return getattr(TrainConfig(), name)


def _describe(point: Mapping[str, Any]) -> str:
    """``method='e2e', seed=0`` (the grid point as it appears in error messages)."""
    return ", ".join(f"{k}={v!r}" for k, v in point.items())


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of ``grid`` (field -> values) as dicts, fields in the given order and
    the last varying fastest; ValueError for an unknown field, an empty value list or a duplicate."""
    for name, values in grid.items():
        if name not in _FIELDS:
            raise _unknown_field(name)
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ValueError(f"{name}: the grid needs a list of values, got {values!r}")
        values = list(values)
        if not values:
            raise ValueError(
                f"{name}: empty value list in the sweep grid (give at least one value)"
            )
        for i, value in enumerate(values):
            if any(value == earlier for earlier in values[:i]):
                raise ValueError(f"{name}: duplicate value {value!r} in the sweep grid {values!r}")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def parse_grid(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, list[Any]]:
    """The grid from ``(field, text)`` pairs such as ``("seed", "0,1,2")``: each text a comma list
    parsed with the field's type (module docstring); ValueError naming the field for bad input."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    grid: dict[str, list[Any]] = {}
    for raw_name, text in items:
        name = raw_name.removeprefix("--").replace("-", "_")
        if name not in _FIELDS:
            raise _unknown_field(name)
        if name in grid:
            raise ValueError(f"{name}: given twice; give all its values in one comma list")
        parts = text.split(",")
        if not text.strip():
            raise ValueError(
                f"{name}: empty value list in the sweep grid (give at least one value)"
            )
        if any(not p.strip() for p in parts):
            raise ValueError(f"{name}: empty value in the comma list {text!r}")
        grid[name] = [grid_value(name, _default(name), p) for p in parts]
    return grid


LAYERWISE_ONLY: dict[str, Any] = {
    "head": "none",
    "local_loss": "cross_entropy",
    "nhsic_reg": "none",
}


def sweep_configs(
    preset: str, grid: Mapping[str, Sequence[Any]], **fixed: Any
) -> list[TrainConfig]:
    """Every grid point as a validated ``TrainConfig.preset(preset, **fixed, **point)``, in grid
    order; ValueError naming the grid point for a bad combination, or two points of one run folder.

    When the method axis mixes layer-wise and other methods (E2E, Forward-Forward, signal
    propagation), the layer-wise-only settings (``LAYERWISE_ONLY``: head, local loss, nHSIC
    regularizer) apply to the layer-wise points alone: the others take the neutral value, and the
    points that thereby become one run are trained once (so E2E + layer-wise x heads is one grid)."""
    check_choice("preset", preset, PRESETS)
    for name in fixed:
        if name not in _FIELDS:
            raise _unknown_field(name, "the fixed settings")
    both = [name for name in grid if name in fixed]
    if both:
        raise ValueError(f"field(s) {both} are both fixed and in the sweep grid; give them once")
    configs: list[TrainConfig] = []
    seen: dict[Any, dict[str, Any]] = {}
    from ibstudy.methods import layerwise_methods  # the registry (imports torch)

    layerwise, methods = layerwise_methods(), list(grid.get("method", []))
    mixed = any(m in layerwise for m in methods) and any(m not in layerwise for m in methods)
    for point in expand_grid(grid):
        settings, collapsed = {**fixed, **point}, False
        if mixed and settings["method"] not in layerwise:
            for name, neutral in LAYERWISE_ONLY.items():  # not this method's: one neutral run
                if name in settings and settings[name] != neutral:
                    settings[name], collapsed = neutral, True
        try:
            cfg = TrainConfig.preset(preset, **settings)
        except ValueError as exc:
            raise ValueError(
                f"grid point {_describe(point)}: {exc}" if point else str(exc)
            ) from None
        folder = cfg.run_dir()
        if folder in seen and collapsed:
            continue  # e.g. E2E under a head axis: trained once
        if folder in seen:
            raise ValueError(
                f"grid points {_describe(seen[folder])} and {_describe(point)} are the same run "
                f"(folder {str(folder)!r}): they differ only in settings that are not part of a "
                f"run's identity (measurement, device or storage); sweep those separately"
            )
        seen[folder] = point
        configs.append(cfg)
    return configs


# ------------------------------------------------------------------------------------------------
# Commands and runs
# ------------------------------------------------------------------------------------------------


def command_for(
    cfg: TrainConfig, preset: str, *, always: Iterable[str] = (), progress: bool = True
) -> str:
    """The one-line ``python -m ibstudy train --preset P ... --resume`` that rebuilds exactly ``cfg``:
    the fields in ``always`` and those that differ from what the preset gives (ValueError if none can)."""
    always = [name for name in always if name in _FIELDS]
    reference = TrainConfig.preset(preset)
    overrides = {
        name: getattr(cfg, name)
        for name in _FIELDS
        if name in always or getattr(cfg, name) != getattr(reference, name)
    }
    for name in [n for n in overrides if n not in always]:
        rest = {k: v for k, v in overrides.items() if k != name}
        try:  # leave out what the preset derives from the other options (head from method, ...)
            if TrainConfig.preset(preset, **rest) == cfg:
                overrides = rest
        except ValueError:
            pass
    if TrainConfig.preset(preset, **overrides) != cfg:
        raise ValueError(f"config {cfg.run_id()!r} cannot be rebuilt from the {preset!r} preset")
    words = ["python", "-m", "ibstudy", "train", "--preset", preset]
    for name, value in overrides.items():
        if value is not None:  # only train_size can be None, which is every preset's default
            words += ["--" + name.replace("_", "-"), option_text(value)]
    words += [] if progress else ["--no-progress"]
    return shlex.join([*words, "--resume"])


def run_sweep(
    configs: Sequence[TrainConfig], *, progress: bool = True, jobs: int | str = 1
) -> list[Run]:
    """Train ``configs`` (``jobs`` side by side; complete runs are reused); a failed run (locked by
    another process, bad data, diverged) is reported and skipped. Returns the finished runs in order."""
    from ibstudy.parallel import resolve_jobs, train_runs
    from ibstudy.store import read_meta

    statuses = []
    for cfg in configs:
        try:
            statuses.append("cached" if read_meta(cfg.run_dir()).get("complete") else "resumed")
        except ValueError:
            statuses.append("trained")
    n = resolve_jobs(jobs, configs) if configs else 1
    if n == 1 and progress:
        print(f"sweep: {len(configs)} run(s), one at a time", flush=True)
    done = train_runs(configs, jobs=n, progress=progress, strict=False, label="sweep: ")
    runs: list[Run] = []
    summary: list[str] = []
    for cfg, status, run in zip(configs, statuses, done, strict=True):
        if run is None:
            summary.append(f"failed   {cfg.run_id()}")
            continue
        runs.append(run)
        acc = run.epochs["test_acc"].iloc[-1] if len(run.epochs) else float("nan")
        summary.append(f"{status:<8} {cfg.run_id()}  test_acc {acc:.4f}  {run.path}")
    print("\n".join(summary))
    print(f"sweep: {len(runs)} of {len(configs)} run(s) finished", flush=True)
    return runs


def run_side_by_side(commands: Sequence[str], gpus: Sequence[str]) -> int:
    """Run the ``train`` commands as processes, one per GPU in ``gpus`` at a time (each sees only
    its GPU through CUDA_VISIBLE_DEVICES; the next command starts when one finishes). Each process's
    output goes to this one's; returns how many commands failed."""
    import subprocess
    import time

    queue = list(enumerate(commands, start=1))
    running: dict[str, tuple[int, subprocess.Popen]] = {}
    failed = 0
    while queue or running:
        for gpu in [g for g in gpus if g not in running]:
            if not queue:
                break
            i, command = queue.pop(0)
            words = shlex.split(command)
            words[0] = sys.executable  # "python" of the printed command: this interpreter
            print(f"sweep [{i}/{len(commands)}] on GPU {gpu}: {command}", flush=True)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            running[gpu] = (i, subprocess.Popen(words, env=env))
        for gpu, (i, proc) in list(running.items()):
            if proc.poll() is not None:
                if proc.returncode != 0:
                    failed += 1
                    print(f"sweep: command {i} failed (exit {proc.returncode})", file=sys.stderr)
                del running[gpu]
        time.sleep(0.2)
    print(f"sweep: {len(commands) - failed} of {len(commands)} run(s) finished", flush=True)
    return failed


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


class _GridOption(argparse.Action):
    """Appends ``(field, text)`` to ``namespace.grid``, keeping the order the options were given."""

    def __init__(self, option_strings: Sequence[str], dest: str, field: str, **kwargs: Any):
        super().__init__(option_strings, dest, **kwargs)
        self.field = field

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        setattr(
            namespace, self.dest, [*(getattr(namespace, self.dest) or []), (self.field, values)]
        )


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report bad options as one ``error: ...`` line (exit 2) and hand unknown
    options to the command (``args.unknown``), which names them as unknown fields."""

    def error(message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)

    parse_known_args = parser.parse_known_args

    def keep_unknown(args: Any = None, namespace: Any = None) -> tuple[Any, list[str]]:
        namespace, extras = parse_known_args(args, namespace)
        namespace.unknown = [*getattr(namespace, "unknown", []), *extras]
        return namespace, []

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = keep_unknown  # type: ignore[method-assign]


def add_sweep_parser(subparsers: Any) -> None:
    """Add the ``sweep`` sub-command (a grid of ``train`` runs; one comma-list option per TrainConfig
    field) to ``subparsers``."""
    parser = subparsers.add_parser(
        "sweep",
        help="train a grid of runs (comma lists per field), or print one train command per run",
        description="Expand a grid of TrainConfig values into runs (the Cartesian product of the "
        "comma lists, the last option varying fastest) and train them one after another; complete "
        "runs are reused and a run that another process is writing is reported and skipped. Every "
        "config is validated before anything runs. --dry-run prints one `python -m ibstudy train "
        "... --resume` command per run instead, e.g. for a scheduler's job array.",
        epilog="Values: integers, numbers and strings as for `train`; booleans true|false; "
        "--train-size an integer or none; tuple fields (--milestones, --probe-epochs, "
        "--save-epochs) take integers joined by '+' per value and none for the empty tuple, e.g. "
        "--milestones 20+30,10+20,none. Exit status: 0 when every run finished, 1 when a run "
        "failed, 2 for bad input (nothing runs).",
        allow_abbrev=False,
    )
    parser.add_argument("--preset", choices=PRESETS, default="quick", help="base settings")
    parser.add_argument(
        "--dry-run", action="store_true",
        help="print one train command per run (one a line) and exit; nothing is trained",
    )  # fmt: skip
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress output (without a terminal, progress is printed as plain lines)",
    )  # fmt: skip
    parser.add_argument(
        "--jobs", default="1", metavar="N|auto",
        help="train N runs side by side on the CPU, each with its share of the cores (auto: one "
        "per core for small models; docs/method.md §10)",
    )  # fmt: skip
    parser.add_argument(
        "--gpus", default=None, metavar="ID,ID,...",
        help="run side by side, one run per listed GPU at a time (e.g. 0,1,2,3)",
    )  # fmt: skip
    for name in _FIELDS:
        metavar, text = grid_help(name, _default(name))
        parser.add_argument(
            "--" + name.replace("_", "-"), action=_GridOption, field=name, dest="grid",
            default=None, metavar=metavar, help=text,
        )  # fmt: skip
    _one_line_errors(parser)
    parser.set_defaults(func=_sweep_main)


def _sweep_main(args: argparse.Namespace) -> int:
    try:
        unknown = getattr(args, "unknown", [])
        if unknown:
            options = [u for u in unknown if u.startswith("--")]
            if options:
                raise _unknown_field(options[0][2:].split("=")[0].replace("-", "_"))
            raise ValueError(f"unexpected argument(s) {unknown}; give grid values as --field V,V")
        given = parse_grid(args.grid or [])
        grid = {name: values for name, values in given.items() if len(values) > 1}
        fixed = {name: values[0] for name, values in given.items() if len(values) == 1}
        configs = sweep_configs(args.preset, grid, **fixed)
        points = len(expand_grid(grid))
        if len(configs) < points:
            print(
                f"note: {points} grid points, {len(configs)} runs: the methods that are not "
                f"layer-wise take {_describe(LAYERWISE_ONLY)} and run once", file=sys.stderr,
            )  # fmt: skip
        commands = [
            command_for(cfg, args.preset, always=given, progress=not args.no_progress)
            for cfg in configs
        ]
        from ibstudy.parallel import resolve_jobs

        resolve_jobs(args.jobs, configs)  # a bad --jobs fails before anything runs
        gpus = None
        if args.gpus is not None:
            gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
            if not gpus or len(set(gpus)) != len(gpus):
                raise ValueError(
                    f"--gpus must list distinct GPU ids such as 0,1, got {args.gpus!r}"
                )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(commands))
        return 0
    try:
        if gpus is not None:
            return 0 if run_side_by_side(commands, gpus) == 0 else 1
        runs = run_sweep(configs, progress=not args.no_progress, jobs=args.jobs)
    except KeyboardInterrupt:
        print(
            "interrupted: every finished run and every completed epoch is kept; the same sweep "
            "command continues (finished runs are reused)",
            file=sys.stderr,
        )
        return 130
    return 0 if len(runs) == len(configs) else 1
