"""torchrun on the CPU (gloo): two processes train one run like one process does (issue 13)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from ibstudy import distributed
from ibstudy.store import Run, run_lock
from ibstudy.training import TrainConfig, Trainer, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(
    train_size=500, eval_size=256, chunk_size=128, probe_size=256, probe_steps=10, epochs=2,
    batch_size=64, device="cpu",
)  # fmt: skip


def _options(results: Path, **extra) -> list[str]:
    opts = {**TINY, **extra}
    out = ["--preset", "quick", "--no-progress", "--results-dir", str(results), "--run-name", "r"]
    for key, value in opts.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def torchrun(args: list[str], nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "ibstudy", "train", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def _same_tables(a: Run, b: Run) -> None:
    cols = ["epoch", "step", "train_loss", "train_acc", "test_acc"]
    pd.testing.assert_frame_equal(a.epochs[cols], b.epochs[cols], rtol=1e-4, check_dtype=False)
    lay = ["epoch", "layer", "nhsic_xz", "nhsic_yz", "floor_xz", "probe_test_acc"]
    pd.testing.assert_frame_equal(a.layers[lay], b.layers[lay], rtol=1e-4, check_dtype=False)


EXTRA = {
    "e2e": {},
    "layerwise": {"method": "layerwise", "head": "linear"},
    "layerwise_sequential": {"method": "layerwise_sequential", "head": "linear", "epochs": 1},
}


# e2e in `make test`; the layer-wise ones (about a minute together) in `make test-all`
@pytest.mark.parametrize(
    "method", [m if m == "e2e" else pytest.param(m, marks=pytest.mark.slow) for m in EXTRA]
)
def test_two_processes_equal_one(tmp_path, method):
    extra = EXTRA[method]
    one = train(
        TrainConfig.preset("quick", results_dir=str(tmp_path / "one"), run_name="r",
                           **{**TINY, **extra}),
        progress=False,
    )  # fmt: skip
    done = torchrun(_options(tmp_path / "two", **extra))
    assert done.returncode == 0, done.stderr[-2000:]
    two = Run.load(tmp_path / "two" / "r")
    assert two.complete
    _same_tables(one, two)
    # rank 0 alone wrote: one line of output, no temp files, one weights file per epoch
    assert done.stdout.count("test_acc") == 1
    folder = tmp_path / "two" / "r"
    saved = len(list((folder / "weights").glob("*.pt")))
    assert not list(folder.glob(".*.tmp")) and saved == len(one.epochs[one.epochs.epoch % 1 == 0])


@pytest.mark.slow  # about 40 s: `make test-all`
def test_interrupted_two_process_run_resumes_to_the_same_numbers(tmp_path):
    full = torchrun(_options(tmp_path / "a"))
    assert full.returncode == 0, full.stderr[-2000:]
    part = torchrun([*_options(tmp_path / "b"), "--stop-after", "1"])
    assert part.returncode == 0, part.stderr[-2000:]
    assert not Run.load(tmp_path / "b" / "r").complete
    resumed = torchrun([*_options(tmp_path / "b"), "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _same_tables(Run.load(tmp_path / "a" / "r"), Run.load(tmp_path / "b" / "r"))


def test_run_folder_held_by_another_process(tmp_path):
    folder = tmp_path / "runs" / "r"
    with run_lock(folder):
        done = torchrun(_options(tmp_path / "runs"))
    assert done.returncode != 0  # each process exits 2; torchrun reports the failure as 1
    assert done.stderr.count("is being written by another process") >= 2  # every rank says why
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # nothing written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The variables torchrun gives rank ``rank`` of a one-machine group of ``world``."""
    return dict(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip


def _disagree(rank: int, port: int, out: str) -> None:
    """One rank of a 2-process group whose rank 1 was given another learning rate."""
    os.environ.update(rank_env(rank, 2, port))
    cfg = TrainConfig(lr=1e-3 if rank == 0 else 2e-3)
    try:
        distributed.setup(cfg.identity(), "cpu")
        message = "no error"
    except ValueError as exc:
        message = str(exc)
    finally:
        distributed.shutdown()
    Path(out, f"rank{rank}.txt").write_text(message)


def test_processes_that_disagree_on_the_config_fail_naming_the_field(tmp_path):
    mp.spawn(_disagree, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        text = (tmp_path / f"rank{rank}.txt").read_text()
        assert "rank 1 has a different 'lr' than rank 0" in text


def _counts(rank: int, port: int, out: str, cfg: TrainConfig) -> None:
    """One rank's share of the test set, summed over a 2-process group."""
    os.environ.update(rank_env(rank, 2, port))
    try:
        info = distributed.setup(cfg.identity(), "cpu")
        counts = Trainer(cfg, progress=False, dist=info).test_counts()
    finally:
        distributed.shutdown()
    Path(out, f"rank{rank}.txt").write_text(",".join(map(str, counts)))


def test_ranks_split_the_test_set_and_count_each_image_once(tmp_path):
    cfg = TrainConfig.preset("quick", results_dir=str(tmp_path), run_name="r", method="layerwise",
                             head="linear", **TINY)  # fmt: skip
    single = Trainer(cfg, progress=False).test_counts()  # untrained: same weights on every rank
    mp.spawn(_counts, args=(free_port(), str(tmp_path), cfg), nprocs=2, join=True)
    for rank in (0, 1):
        counts = [float(v) for v in (tmp_path / f"rank{rank}.txt").read_text().split(",")]
        assert counts == single  # classifier and every head, each image counted once
    assert single[-1] == len(Trainer(cfg, progress=False).test_set)


def test_two_nodes_through_the_rendezvous_equal_one_process(tmp_path):
    """Two torchrun agents (the 'nodes', one process each) meet at a c10d rendezvous on localhost,
    as several machines would, and train the run of one process."""
    one = train(TrainConfig.preset("quick", results_dir=str(tmp_path / "one"), run_name="r", **TINY),
                progress=False)  # fmt: skip
    endpoint = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rdzv = ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "ibstudy-test"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]
    train_args = ["-m", "ibstudy", "train", *_options(tmp_path / "two")]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    nodes = [
        subprocess.Popen(
            [*launch, *rdzv, f"--rdzv-conf=is_host={int(node == 0)}", *train_args], **pipes
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=600) for node in nodes]
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-2000:]
    assert sum(out.count("test_acc") for out, _ in outputs) == 1  # one node's rank 0 reports
    _same_tables(one, Run.load(tmp_path / "two" / "r"))


def test_each_rank_takes_its_gpu_before_the_first_collective(monkeypatch):
    """With nccl every collective puts its buffers on the current GPU: unless each rank selects
    its own (LOCAL_RANK) first, ranks 0 and 1 would both use GPU 0. Recorded without a GPU."""
    calls: list[tuple] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend: calls.append(("init", backend)))  # fmt: skip
    monkeypatch.setattr(
        distributed.Dist, "broadcast", lambda self, obj: calls.append("bcast") or obj
    )
    monkeypatch.setattr(distributed.Dist, "gather", lambda self, obj: [obj, obj])
    info = distributed.setup({"lr": 1e-3}, "cuda")
    assert info == distributed.Dist(1, 2, 1)
    assert calls == [("set_device", 1), ("init", "nccl"), "bcast"]
    calls.clear()
    distributed.setup({"lr": 1e-3}, "cpu")  # gloo: no GPU is touched
    assert calls == [("init", "gloo"), "bcast"]
