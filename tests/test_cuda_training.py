"""The CUDA side of issue 13, for a session with a GPU (skipped without one): data held on the GPU,
bf16 autocast, channels-last, torch.compile, and the nccl + SyncBatchNorm path of a torchrun group."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from test_distributed import free_port, rank_env
from torch.utils.data import TensorDataset

from ibstudy.data import make_loader
from ibstudy.device_data import DeviceData
from ibstudy.distributed import Dist, shutdown
from ibstudy.training import TrainConfig, Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
]


def _images(n: int, seed: int) -> TensorDataset:
    """CIFAR-shaped images whose class sets the mean of one channel (learnable in an epoch)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    x[torch.arange(n), y % 3] += (y.float() / 5 - 1).view(-1, 1, 1)
    return TensorDataset(x, y)


def _trainer(tmp_path, name: str, dist: Dist | None = None, **kw) -> Trainer:
    cfg = TrainConfig(
        model=kw.pop("model", "resnet18"), width=kw.pop("width", 0.25), dataset="cifar10",
        epochs=3, batch_size=128, lr=1e-3, eval_size=512, chunk_size=256, device="cuda",
        results_dir=str(tmp_path), run_name=name, **kw,
    )  # fmt: skip
    return Trainer(cfg, progress=False, data=(_images(1024, 0), _images(512, 1)), dist=dist)


def test_device_data_on_the_gpu_equals_the_loader():
    ds = _images(300, 0)
    dev = DeviceData(ds, "cuda")
    assert dev.images.device.type == "cuda"
    cpu = list(make_loader(ds, 64, seed=2, epoch=3))
    gpu = list(dev.batches(64, seed=2, epoch=3))
    assert len(cpu) == len(gpu)
    for (xa, ya), (xb, yb) in zip(cpu, gpu, strict=True):
        assert torch.equal(ya, yb.cpu())
        torch.testing.assert_close(xa, xb.cpu(), rtol=0, atol=1e-5)


def test_device_data_gives_the_loader_run_on_the_gpu(tmp_path):
    on = _trainer(tmp_path, "on", model="lenet5", width=1.0, device_data="on")
    off = _trainer(tmp_path, "off", model="lenet5", width=1.0, device_data="off")
    assert on.device_data is not None and off.device_data is None
    for epoch in (1, 2):
        a, b = on.train_epoch(epoch), off.train_epoch(epoch)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_bf16_channels_last_and_compile_train(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = _trainer(tmp_path, "fast", amp=True, channels_last=True, compile=True)
        losses = [tr.train_epoch(e)["train_loss"] for e in (1, 2, 3)]
    text = " ".join(str(w.message) for w in caught)
    assert "compile" not in text and "ignored" not in text, text  # nothing fell back
    assert tr.engine.amp and tr.engine.amp_dtype == torch.bfloat16 and tr.compiled
    conv = next(m for m in tr.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert losses[-1] < losses[0] and tr.train_epoch(4)["train_acc"] > 0.3  # it learns (chance 0.1)
    plane = tr.measure_plane()
    assert str(plane["nhsic_xz"].dtype) == "float64"
    assert plane[["nhsic_xz", "nhsic_yz"]].notna().all().all()


@pytest.mark.parametrize("reg", ["global", "local"])
def test_nhsic_regularizer_trains_under_bf16(tmp_path, reg):
    """The regularizer's Grams leave autocast (a bf16 Gram breaks its Cholesky factorization)."""
    tr = _trainer(tmp_path, reg, model="lenet5", width=1.0, method="layerwise", head="linear",
                  nhsic_reg=reg, amp=True)  # fmt: skip
    stats = [tr.train_epoch(e) for e in (1, 2)]
    assert all(math.isfinite(st["train_loss"]) for st in stats)
    assert stats[1]["train_acc"] > 0.2


def test_nccl_group_with_sync_bn_trains_like_one_process(tmp_path, monkeypatch):
    """A one-process nccl group (a lent machine has one GPU) runs the torchrun path on CUDA (nccl,
    the flat gradient all-reduce, summed counts, BatchNorm converted to SyncBatchNorm, which with one
    process computes plain batch statistics) and gives the plain run's numbers."""
    plain = _trainer(tmp_path, "plain")
    for key, value in rank_env(0, 1, free_port()).items():
        monkeypatch.setenv(key, value)
    try:
        torch.distributed.init_process_group("nccl")
        grouped = _trainer(tmp_path, "grouped", dist=Dist(0, 1, 0), sync_bn=True)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in grouped.model.modules())
        for epoch in (1, 2):
            a, b = plain.train_epoch(epoch), grouped.train_epoch(epoch)
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert grouped.evaluate()[0] == pytest.approx(plain.evaluate()[0], abs=0.01)
    finally:
        shutdown()
