"""The throughput section of benchmarks/bench_training.py runs (on the CPU: as a smoke test; on
CUDA: with every switch really on), so a scarce GPU session does not stop at a broken benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_training.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_training", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_throughput_section_on_the_cpu(tmp_path):
    bench = _bench()
    rows = bench.throughput_section(
        torch.device("cpu"), 64, 1, str(tmp_path), models=("resnet18",),
        methods=("e2e", "layerwise"), variants=("fp32", "bf16+cl+compile"), width=0.125,
    )  # fmt: skip
    assert [(r["method"], r["setting"]) for r in rows] == [
        ("e2e", "fp32"), ("e2e", "bf16+cl+compile"), ("layerwise", "fp32"),
        ("layerwise", "bf16+cl+compile"),
    ]  # fmt: skip
    for r in rows:
        assert r["images_per_s"] > 0 and r["analysis_fraction"] > 0 and r["paper_run_hours"] > 0
        assert not r["compiled"] and r["amp_dtype"] == "float32"  # off CUDA: ignored
    assert rows[0]["speedup"] == rows[2]["speedup"] == 1.0  # each method against its own fp32
    e2e = min(r["paper_run_hours"] for r in rows[:2])
    layerwise = min(r["paper_run_hours"] for r in rows[2:])
    assert bench.grid_hours(rows, "resnet18") == pytest.approx(6 * (e2e + 2 * layerwise))
    assert bench.grid_hours(rows[:2], "resnet18") is None and bench.grid_hours(rows, "vgg") is None


def test_throughput_section_rejects_unknown_settings(tmp_path):
    with pytest.raises(ValueError, match="variants must be among"):
        _bench().throughput_section(torch.device("cpu"), 64, 1, str(tmp_path), variants=("fp8",))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_throughput_section_on_cuda(tmp_path):
    rows = _bench().throughput_section(
        torch.device("cuda"), 512, 1, str(tmp_path), models=("resnet18",), methods=("e2e",),
        width=0.25,
    )  # fmt: skip
    by = {r["setting"]: r for r in rows}
    assert by["fp32"]["amp_dtype"] == "float32" and by["bf16"]["amp_dtype"] == "bfloat16"
    assert by["bf16+cl+compile"]["compiled"]  # compiled, not fallen back to eager


def test_parallel_section_times_pairs_in_alternating_order_and_records_each(tmp_path, monkeypatch,
                                                                            capsys):  # fmt: skip
    """The order of jobs=1 and jobs=auto alternates between pairs (a drift of the machine's speed
    falls on both), the one-thread ceiling is timed once, and each pair is recorded as its own
    stamp (a fake trainer: the section's bookkeeping, not training, is under test)."""
    import ibstudy.parallel

    calls = []

    def fake_train_runs(configs, *, jobs=1, threads=None, progress=True, **_):
        calls.append((jobs, threads))
        return [None] * len(configs)

    monkeypatch.setattr(ibstudy.parallel, "train_runs", fake_train_runs)
    record = tmp_path / "parallel.csv"
    _bench().parallel_section(1, 1, str(tmp_path), "quick", ceiling=True, record=str(record),
                              pairs=3)  # fmt: skip
    warm, *timed = calls
    assert timed == [(1, None), ("auto", None), (1, 1), ("auto", None), (1, None), (1, None),
                     ("auto", None)]  # fmt: skip
    table = pd.read_csv(record)
    assert table.groupby("stamp")["setting"].apply(list).tolist() == [
        ["jobs=1", "jobs=auto", "jobs=1 threads=1"],
        ["jobs=auto", "jobs=1"],
        ["jobs=1", "jobs=auto"],
    ]  # fmt: skip  (each pair's rows in the order they were timed)
    assert table["stamp"].str.endswith(("(pair 1)", "(pair 2)", "(pair 3)")).all()
    assert "geometric mean of 3 pair(s), 95 % interval); target 1.4x:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="pairs must be a positive integer"):
        _bench().parallel_section(1, 1, str(tmp_path), "quick", pairs=0)
