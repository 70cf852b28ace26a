"""Command line: ``python -m ibstudy run | train | measure | sweep | report | timings``.

- ``run``: execute notebooks headlessly with papermill (``make study``);
- ``train``: train one run and record the plane every epoch (every TrainConfig field is an option);
- ``measure``: re-measure a stored run under another estimator (docs/method.md §10), no retraining;
- ``sweep``: a grid of training runs (comma lists per option), run one after another or printed;
- ``report``: results/findings.json and findings.md from notebook 06's tables, and the README's block;
- ``timings``: record ``make study``'s notebook times; the README's timing block (docs/benchmarks/).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from ibstudy.cli_values import option_type, parse_ints
from ibstudy.config import PRESETS, MeasureConfig, TrainConfig
from ibstudy.estimators import estimator_names
from ibstudy.report import add_report_parser
from ibstudy.run import add_run_parser
from ibstudy.sweep import add_sweep_parser
from ibstudy.timings import add_timings_parser

TRUST_HELP = (
    "read a checkpoint.pt of the previous format, which needs unpickling: unpickling can execute "
    "code, so only for run folders from a source you trust (a resume rewrites it in the safe format)"
)


def _add_field_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...]) -> None:
    """One ``--field-name`` option per dataclass field of ``cls`` (default None = keep)."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        opt = "--" + f.name.replace("_", "-")
        parse, metavar = option_type(f.name, getattr(defaults, f.name))
        parser.add_argument(opt, type=parse, default=None, metavar=metavar)


def add_train_parser(subparsers: Any) -> None:
    """Add the ``train`` sub-command (every TrainConfig field is an option) to ``subparsers``."""
    parser = subparsers.add_parser(
        "train",
        help="train one model E2E or layer-wise and record the information plane",
        description="Train one run; metrics go to <results-dir>/<run-name>/ (epochs.csv, layers.csv), "
        "model weights to its weights/ folder.",
    )
    parser.add_argument("--preset", choices=PRESETS, default="quick", help="base settings")
    parser.add_argument("--resume", action="store_true", help="continue (or reuse) a stored run")
    parser.add_argument("--overwrite", action="store_true", help="replace a stored run")
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    parser.add_argument(
        "--no-progress", action="store_true",
        help="no progress output (without a terminal, progress is printed as plain lines)",
    )  # fmt: skip
    parser.add_argument(
        "--stop-after", type=int, default=None, metavar="E",
        help="stop after global epoch E (resume later with --resume)",
    )  # fmt: skip
    _add_field_options(parser, TrainConfig, ())
    parser.set_defaults(func=_train_main)


def _train_main(args: argparse.Namespace) -> int:
    from ibstudy.distributed import shutdown
    from ibstudy.training import TrainingDiverged, train

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    cfg = None
    try:
        cfg = TrainConfig.preset(args.preset, **overrides)
        run = train(
            cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
            stop_after=args.stop_after, trust=args.trust_checkpoint,
        )  # fmt: skip
    except (ValueError, TrainingDiverged, OSError) as exc:  # OSError: missing data, disk full
        shutdown()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        shutdown()
        where = f" {cfg.run_id()!r} in {str(cfg.run_dir())!r}" if cfg is not None else ""
        print(
            f"interrupted: run{where} keeps every completed epoch; continue it with the same "
            f"command plus --resume",
            file=sys.stderr,
        )
        return 130
    shutdown(together=True)  # leave the torchrun group, if any, before exiting
    if run is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    last = run.epochs.iloc[-1]
    print(f"run {cfg.run_id()} -> {run.path}: test_acc {last['test_acc']:.4f}")
    return 0


def add_measure_parser(subparsers: Any) -> None:
    """Add the ``measure`` sub-command: re-measure a stored run under another estimator."""
    parser = subparsers.add_parser(
        "measure",
        help="re-measure a stored run's plane under another estimator (no retraining)",
        description="Reload a run's stored weights and measure every layer; the table is cached in "
        "RUN_DIR/measures/<measure_id>.csv and its path printed. Unset options keep the run's own "
        f"estimator (estimators: {list(estimator_names())}).",
    )
    parser.add_argument("run_dir", help="a run folder written by `train` (holds config.json)")
    parser.add_argument(
        "--epochs", type=parse_ints, default=None, metavar="N,N,...",
        help="epochs to measure (default: every epoch with stored weights)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="auto | cpu | cuda[:k] | mps (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--trust-checkpoint", action="store_true", help=TRUST_HELP)
    _add_field_options(parser, MeasureConfig, ())
    parser.set_defaults(func=_measure_main)


def _measure_main(args: argparse.Namespace) -> int:
    from ibstudy.measure import cache_path, measure
    from ibstudy.store import Run

    try:
        run = Run.load(args.run_dir, trust=args.trust_checkpoint)
        own = run.config.measure_config().to_dict()
        given = {
            f.name: getattr(args, f.name)
            for f in dataclasses.fields(MeasureConfig)
            if getattr(args, f.name) is not None
        }
        mcfg = MeasureConfig.from_dict({**own, **given})
        table = measure(run, mcfg, args.epochs, device=args.device, progress=not args.no_progress)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = table[table["epoch"] == table["epoch"].max()]
    print(f"measured {table['epoch'].nunique()} epoch(s) of {run.path} -> {cache_path(run, mcfg)}")
    cols = ["epoch", "layer", "nhsic_xz", "nhsic_yz", "floor_xz", "floor_yz"]
    print(last[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and dispatch to the sub-command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m ibstudy",
        description="E2E vs layer-wise training through the normalized-HSIC information plane.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    add_train_parser(sub)
    add_measure_parser(sub)
    add_sweep_parser(sub)
    add_report_parser(sub)
    add_timings_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
