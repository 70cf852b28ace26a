"""Where a set of findings was computed: commit, date, interpreter and torch versions, CPU kernels,
thread count and preset (docs/method.md §13: the numbers are bitwise reproducible only on one
machine at one thread count).

:func:`make_provenance` and :func:`provenance_line` are pure; :func:`collect` reads the running
process, ``git`` and the run folders, and never fails (what it cannot learn is ``"unknown"``).
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "FIELDS",
    "UNKNOWN",
    "collect",
    "git_commit",
    "make_provenance",
    "presets_of",
    "provenance_line",
    "run_threads",
]

UNKNOWN = "unknown"
#: the keys of a provenance record, in the order they are written
FIELDS = (
    "commit", "dirty", "date", "python", "torch", "cpu_capability", "threads", "run_threads",
    "preset", "platform",
)  # fmt: skip
_PRESET = re.compile(r"\b([A-Za-z_]\w*) preset\b")
_HEX = re.compile(r"^[0-9a-f]{7,40}$")


def make_provenance(
    *,
    commit: str = UNKNOWN,
    dirty: bool | None = None,
    date: str = UNKNOWN,
    python: str = UNKNOWN,
    torch: str = UNKNOWN,
    cpu_capability: str = UNKNOWN,
    threads: int | None = None,
    run_threads: Iterable[int] = (),
    preset: str = UNKNOWN,
    platform: str = UNKNOWN,
) -> dict[str, Any]:
    """A provenance record (keys :data:`FIELDS`) from its values; ValueError on a malformed one."""
    if commit != UNKNOWN and not _HEX.match(commit):
        raise ValueError(f"commit must be a hex git hash or {UNKNOWN!r}, got {commit!r}")
    if threads is not None and (
        isinstance(threads, bool) or int(threads) != threads or threads < 1
    ):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    counts = sorted({int(t) for t in run_threads})
    return {
        "commit": commit, "dirty": dirty, "date": date, "python": python, "torch": torch,
        "cpu_capability": cpu_capability, "threads": threads, "run_threads": counts,
        "preset": preset, "platform": platform,
    }  # fmt: skip


def provenance_line(record: Mapping[str, Any]) -> str:
    """One line naming the commit, date, versions, CPU kernels, threads and preset of ``record``."""
    commit = str(record.get("commit", UNKNOWN))
    head = f"commit {commit[:10] if commit != UNKNOWN else UNKNOWN}"
    if record.get("dirty"):
        head += " (with uncommitted changes)"
    threads = record.get("threads")
    runs = [str(t) for t in record.get("run_threads") or []]
    trained = f" (runs trained with {'/'.join(runs)})" if runs else ""
    return (
        f"{head}, {record.get('date', UNKNOWN)}, python {record.get('python', UNKNOWN)}, "
        f"torch {record.get('torch', UNKNOWN)}, CPU kernels {record.get('cpu_capability', UNKNOWN)}, "
        f"{UNKNOWN if threads is None else threads} intra-op thread(s){trained}, "
        f"preset {record.get('preset', UNKNOWN)}"
    )


def presets_of(scales: Iterable[str]) -> str:
    """The preset named in scale strings ("..., study preset, ..."): one name, several joined by
    "+", or ``"unknown"`` when none names one."""
    found = []
    for scale in scales:
        match = _PRESET.search(str(scale))
        if match and match.group(1) not in found:
            found.append(match.group(1))
    return "+".join(found) if found else UNKNOWN


def git_commit(root: str | Path | None = None) -> tuple[str, bool | None]:
    """(HEAD's hash, whether tracked files differ from it) of the checkout holding ``root``, or
    ``("unknown", None)`` outside a git checkout or without git."""
    where = str(Path(root) if root is not None else Path(__file__).resolve().parent)
    try:
        head = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0 or not _HEX.match(head.stdout.strip()):
            return UNKNOWN, None
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, None
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return head.stdout.strip(), dirty


def run_threads(runs_dir: str | Path) -> list[int]:
    """The intra-op thread counts recorded in the run folders' ``config.json`` under ``runs_dir``
    (empty when there are none; unreadable files are skipped)."""
    counts = set()
    folder = Path(runs_dir)
    if not folder.is_dir():
        return []
    for meta in folder.glob("*/config.json"):
        try:
            value = json.loads(meta.read_text(encoding="utf-8")).get("threads")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            counts.add(value)
    return sorted(counts)


def collect(
    *,
    preset: str = UNKNOWN,
    root: str | Path | None = None,
    runs_dir: str | Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The provenance of this process: git commit of ``root`` (default: this package's checkout),
    date (UTC), python and torch versions, torch's CPU capability and intra-op threads, the thread
    counts recorded by the runs under ``runs_dir``, and ``preset``."""
    commit, dirty = git_commit(root)
    try:
        import torch

        version, capability = str(torch.__version__), str(torch.backends.cpu.get_cpu_capability())
        threads: int | None = int(torch.get_num_threads())
    except (ImportError, AttributeError, RuntimeError):
        version, capability, threads = UNKNOWN, UNKNOWN, None
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return make_provenance(
        commit=commit, dirty=dirty, date=stamp, python=platform.python_version(), torch=version,
        cpu_capability=capability, threads=threads,
        run_threads=run_threads(runs_dir) if runs_dir is not None else (), preset=preset,
        platform=f"{platform.system()} {platform.machine()}".strip() or UNKNOWN,
    )  # fmt: skip
