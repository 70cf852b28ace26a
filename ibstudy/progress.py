"""Progress reporting that suits where the output goes: a tqdm bar on a terminal, plain lines in a log.

``progress=False`` everywhere turns reporting off (the CLI's ``--no-progress``). When standard output
is not a terminal (a log file, a notebook run by papermill, CI), progress is written as whole lines
at most every ``LINE_INTERVAL`` seconds, with no carriage returns or cursor codes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

__all__ = ["LINE_INTERVAL", "progress"]

T = TypeVar("T")
LINE_INTERVAL = 30.0  # seconds between two progress lines in a non-terminal log


class _Lines:
    """A tqdm-like iterator that prints ``desc: k/total (postfix)`` lines, rate-limited."""

    def __init__(
        self, iterable: Iterable[T], desc: str, total: int | None, initial: int, final: bool
    ) -> None:
        self.iterable, self.desc, self.final = iterable, desc, final
        self.total = total if total is not None else _len(iterable)
        self.n = initial
        self.postfix = ""
        self._last = time.monotonic()

    def __iter__(self) -> Iterator[T]:
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.monotonic()
            if now - self._last >= LINE_INTERVAL:
                self._print()
                self._last = now
        if self.final:
            self._print()

    def set_postfix(self, **values: Any) -> None:
        """Show ``key=value`` pairs after the count (as tqdm does)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _print(self) -> None:
        total = f"/{self.total}" if self.total is not None else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        print(f"{self.desc}: {self.n}{total}{extra}", file=sys.stdout, flush=True)


def _len(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    enabled: bool = True,
    total: int | None = None,
    initial: int = 0,
    leave: bool = True,
) -> Any:
    """Wrap ``iterable`` with a progress display (tqdm on a terminal, lines otherwise, none if off).

    The returned object iterates like ``iterable`` and has ``set_postfix``. ``leave=False`` marks an
    inner loop: its bar disappears on a terminal and it prints no final line in a log.
    """
    if not enabled:
        return tqdm(iterable, disable=True)
    if sys.stdout.isatty():
        return tqdm(
            iterable, desc=desc, total=total, initial=initial, leave=leave, mininterval=2.0,
            file=sys.stdout,
        )  # fmt: skip
    return _Lines(iterable, desc, total, initial, final=leave)
