"""Command line: ``python -m ibstudy run ...`` (notebooks via papermill) and ``... train ...``."""

from __future__ import annotations

import argparse
import sys

from ibstudy.run import add_run_parser
from ibstudy.training import add_train_parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and dispatch to the sub-command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m ibstudy",
        description="E2E vs layer-wise training through the normalized-HSIC information plane.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    add_train_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
