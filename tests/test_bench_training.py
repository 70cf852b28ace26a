"""The throughput section of benchmarks/bench_training.py runs (on the CPU: as a smoke test; on
CUDA: with every switch really on), so a scarce GPU session does not stop at a broken benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
