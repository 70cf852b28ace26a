"""Tests for ibstudy.provenance: what a findings file says about where it was computed."""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from ibstudy import provenance
from ibstudy.provenance import UNKNOWN

ROOT = Path(__file__).resolve().parents[1]
RECORD = provenance.make_provenance(
    commit="0123456789abcdef0123456789abcdef01234567", dirty=False, date="2026-12-02T10:00:00Z",
    python="3.11.7", torch="2.5.1", cpu_capability="AVX2", threads=2, run_threads=[1, 2, 1],
    preset="study", platform="Linux x86_64",
)  # fmt: skip


def test_a_record_has_every_field_in_order() -> None:
    assert tuple(RECORD) == provenance.FIELDS
    assert RECORD["run_threads"] == [1, 2]  # sorted, once each
    empty = provenance.make_provenance()
    assert empty["commit"] == UNKNOWN and empty["threads"] is None and empty["run_threads"] == []


@pytest.mark.parametrize(
    "bad", [{"commit": "main"}, {"commit": "xyz1234"}, {"threads": 0}, {"threads": True}]
)
def test_malformed_values_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        provenance.make_provenance(**bad)


def test_the_line_names_every_value() -> None:
    assert provenance.provenance_line(RECORD) == (
        "commit 0123456789, 2026-12-02T10:00:00Z, python 3.11.7, torch 2.5.1, CPU kernels AVX2, "
        "2 intra-op thread(s) (runs trained with 1/2), preset study"
    )
    dirty = {**RECORD, "dirty": True, "run_threads": []}
    assert provenance.provenance_line(dirty).startswith("commit 0123456789 (with uncommitted")
    assert "runs trained" not in provenance.provenance_line(dirty)
    line = provenance.provenance_line(provenance.make_provenance())
    assert line.startswith("commit unknown, unknown, python unknown")
    assert "unknown intra-op thread(s)" in line and line.endswith("preset unknown")


def test_the_preset_is_read_from_the_scales() -> None:
    study = "mnist5k, lenet5 (width 1), 40 epochs, study preset, nHSIC on 512 test images"
    assert provenance.presets_of([study, study]) == "study"
    assert provenance.presets_of([study, "cifar10, 400 epochs, paper preset"]) == "study+paper"
    assert provenance.presets_of(["mnist5k, 40 epochs"]) == UNKNOWN
    assert provenance.presets_of([]) == UNKNOWN


def test_the_commit_of_this_checkout_and_outside_one(tmp_path: Path, monkeypatch) -> None:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("the tests do not run inside a git checkout")
    commit, dirty = provenance.git_commit(ROOT)
    assert commit == head.stdout.strip() and len(commit) == 40 and dirty in (True, False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert provenance.git_commit(tmp_path) == (UNKNOWN, None)


def test_without_git_the_commit_is_unknown(monkeypatch) -> None:
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.git_commit(ROOT) == (UNKNOWN, None)


def test_thread_counts_of_the_run_folders(tmp_path: Path) -> None:
    for name, meta in (("a", {"threads": 2}), ("b", {"threads": 1}), ("c", {"threads": 2}),
                       ("d", {"config": {}}), ("e", {"threads": "2"})):  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(meta))
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text("{not json")
    assert provenance.run_threads(tmp_path) == [1, 2]
    assert provenance.run_threads(tmp_path / "missing") == []


def test_collect_reads_this_process(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    (tmp_path / "runs" / "r").mkdir(parents=True)
    (tmp_path / "runs" / "r" / "config.json").write_text(json.dumps({"threads": 3}))
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    record = provenance.collect(preset="quick", root=tmp_path, runs_dir=tmp_path / "runs", now=now)
    assert record == {
        "commit": UNKNOWN, "dirty": None, "date": "2026-12-02T10:00:00Z",
        "python": platform.python_version(), "torch": str(torch.__version__),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(), "run_threads": [3], "preset": "quick",
        "platform": f"{platform.system()} {platform.machine()}",
    }  # fmt: skip
    json.dumps(record, allow_nan=False)  # plain values only
