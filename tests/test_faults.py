"""Fault injection: kills at every step of the save sequence, concurrent writers, damaged files, bad
flags, a stalled download. A kill never loses a completed epoch, and a resume ends in the tables of an
uninterrupted run; every failure is one clear line."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import sigint_as_default, tiny_config

from ibstudy.__main__ import main
from ibstudy.config import TrainConfig
from ibstudy.store import Run
from ibstudy.training import train

ROOT = Path(__file__).resolve().parents[1]
ARGS = [
    "--epochs", "3", "--train-size", "256", "--eval-size", "256", "--chunk-size", "128",
    "--probe-size", "256", "--probe-steps", "10", "--device", "cpu", "--no-progress",
]  # fmt: skip
SAVED = ("weights", "checkpoint.pt", "epochs.csv", "layers.csv", "config.json")

# Runs the CLI with os.replace / torch.save patched to SIGKILL the process at a chosen point:
# KILL = "<file>:<n>:<when>" kills after (or, with when=mid, in the middle of writing) the n-th save
# of <file> (0-based: save 0 is epoch 0's). Nothing in ibstudy knows about this hook.
WRAPPER = r"""
import os, signal, sys
import torch
import ibstudy.store as store
target, n, when = os.environ["KILL"].split(":")
n, seen = int(n), {"count": -1}
def matches(name):
    return name == target or (target == "weights" and name.startswith("epoch_"))
real_replace, real_save = os.replace, torch.save
def replace(src, dst, *a, **k):
    real_replace(src, dst, *a, **k)
    if matches(os.path.basename(dst)):
        seen["count"] += 1
        if seen["count"] == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
def save(obj, f, *a, **k):
    name = os.path.basename(str(f))
    if when == "mid" and name.startswith("." + target + ".") and seen["count"] + 1 == n:
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a checkpoint")
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *a, **k)
store.os.replace = replace
torch.save = save
from ibstudy.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(args: list[str], env: dict | None = None, wrapper: bool = False, **kw):
    cmd = [sys.executable, "-c", WRAPPER] if wrapper else [sys.executable, "-m", "ibstudy"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        cmd + args, capture_output=True, text=True, cwd=ROOT, env=full_env, timeout=300, **kw
    )


def _train_args(results: Path, name: str = "r") -> list[str]:
    return ["train", *ARGS, "--results-dir", str(results), "--run-name", name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted CLI run (same settings as the killed ones)."""
    results = tmp_path_factory.mktemp("ref")
    out = _cli(_train_args(results))
    assert out.returncode == 0, out.stderr
    return results / "r"


def _same_run(folder: Path, reference: Path) -> None:
    run, ref = Run.load(folder), Run.load(reference)
    assert run.complete and not run.repaired
    pd.testing.assert_frame_equal(
        run.epochs.drop(columns="seconds"), ref.epochs.drop(columns="seconds")
    )
    pd.testing.assert_frame_equal(run.layers, ref.layers)
    assert run.stored_epochs() == ref.stored_epochs() == [0, 1, 2, 3]
    for epoch in (0, 3):
        a, b = run.load_model(epoch).state_dict(), ref.load_model(epoch).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in b)
    assert not [p.name for p in folder.rglob(".*.tmp")]  # stale temp files were cleaned


def _kill_and_resume(tmp_path: Path, reference: Path, kill: str) -> None:
    results = tmp_path / "runs"
    killed = _cli(_train_args(results), env={"KILL": kill}, wrapper=True)
    assert killed.returncode == -signal.SIGKILL, (kill, killed.stdout, killed.stderr)
    resumed = _cli([*_train_args(results), "--resume"])
    assert resumed.returncode == 0, (kill, resumed.stderr)
    _same_run(results / "r", reference)


# the harmful case of the issue, the half-written checkpoint, a middle epoch: in the fast suite
@pytest.mark.parametrize(
    "kill", ["checkpoint.pt:3:after", "checkpoint.pt:3:mid", "epochs.csv:1:after"]
)
def test_kill_then_resume_equals_uninterrupted(tmp_path, reference, kill):
    _kill_and_resume(tmp_path, reference, kill)


# every rename of the save sequence, for the first, a middle and the last epoch
@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 2, 3])
@pytest.mark.parametrize("kill", [f"{f}:{{}}:after" for f in SAVED] + ["checkpoint.pt:{}:mid"])
def test_kill_matrix(tmp_path, reference, kill, epoch):
    _kill_and_resume(tmp_path, reference, kill.format(epoch))


def test_kill_before_any_checkpoint_then_resume(tmp_path, reference):
    # killed in the middle of the very first checkpoint: config.json exists, no checkpoint yet
    _kill_and_resume(tmp_path, reference, "checkpoint.pt:0:mid")


# ---------------------------------------------------------------- concurrent writers
def test_second_writer_fails_at_once_naming_the_holder(tmp_path):
    results = tmp_path / "runs"
    first = subprocess.Popen(
        [sys.executable, "-m", "ibstudy", *_train_args(results), "--epochs", "400"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=sigint_as_default,
    )  # fmt: skip
    try:
        lock = results / "r" / ".lock"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.1)
        assert lock.read_text().strip() == str(first.pid)
        start = time.monotonic()
        second = _cli([*_train_args(results), "--lr", "0.002"])
        assert second.returncode == 2
        err = second.stderr.strip().splitlines()
        assert len(err) == 1 and f"pid {first.pid}" in err[0] and "being written" in err[0]
        same = _cli([*_train_args(results), "--epochs", "400", "--resume"])  # same settings too
        assert same.returncode == 2 and "being written by another process" in same.stderr
        assert time.monotonic() - start < 30  # at once: no training happened
    finally:
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    assert first.returncode == 130
    assert err.strip().startswith("interrupted: run 'r'") and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    meta = json.loads((results / "r" / "config.json").read_text())
    assert meta["config"]["lr"] == pytest.approx(1e-3) and not meta["complete"]
    run = Run.load(results / "r")  # the interrupted run's folder is intact
    assert list(run.epochs["epoch"]) == list(range(len(run.epochs)))


# ---------------------------------------------------------------- damaged files
def _tiny(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(train_size=256, probe_steps=10, run_name="d")
    return tiny_config(tmp_path, **{**base, **kw})


@pytest.fixture
def done(tmp_path) -> Run:
    return train(_tiny(tmp_path), progress=False)


def test_missing_or_truncated_tables_are_rebuilt(tmp_path, done):
    layers_before = done.layers.copy()
    (done.path / "layers.csv").unlink()
    run = Run.load(done.path)
    assert run.repaired and run.complete
    pd.testing.assert_frame_equal(run.layers, layers_before)
    text = (done.path / "epochs.csv").read_text()
    (done.path / "epochs.csv").write_text(text[: len(text) - 25])  # cut inside the last row
    assert Run.load(done.path).repaired
    again = train(_tiny(tmp_path), resume=True, progress=False)  # rewrites the files
    assert not Run.load(again.path).repaired
    pd.testing.assert_frame_equal(Run.load(done.path).layers, layers_before)


def test_damaged_tables_without_checkpoint_name_the_file(tmp_path, done):
    (done.path / "checkpoint.pt").unlink()
    (done.path / "layers.csv").write_text("")
    with pytest.raises(ValueError, match=r"layers\.csv.*is damaged.*delete the folder"):
        Run.load(done.path)


@pytest.mark.parametrize("content", ["", "{not json", '{"config": {"lr": "x", "nope": 1}}'])
def test_damaged_config_names_the_file(tmp_path, done, content):
    (done.path / "config.json").write_text(content)
    with pytest.raises(ValueError, match=r"config\.json' is damaged.*overwrite=True"):
        Run.load(done.path)
    with pytest.raises(ValueError, match=r"config\.json' is damaged"):
        train(_tiny(tmp_path), resume=True, progress=False)


def test_corrupt_checkpoint_is_one_line(tmp_path):
    results = tmp_path / "runs"
    args = [*_train_args(results), "--epochs", "2"]
    assert _cli(args).returncode == 0
    meta = json.loads((results / "r" / "config.json").read_text())
    meta["complete"] = False
    (results / "r" / "config.json").write_text(json.dumps(meta))
    (results / "r" / "checkpoint.pt").write_bytes(b"garbage")
    out = _cli([*args, "--resume"])
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "checkpoint.pt' is damaged" in out.stderr


def test_checkpoint_of_another_config_is_refused(tmp_path):
    cfg = _tiny(tmp_path)
    train(cfg, stop_after=1, progress=False)
    (cfg.run_dir() / "config.json").unlink()  # as when the first save of a run is killed
    other = _tiny(tmp_path, lr=2e-3)
    with pytest.raises(ValueError, match=r"checkpoint\.pt in .* belongs to another config \(lr"):
        train(other, resume=True, progress=False)


# ---------------------------------------------------------------- bad flags and places
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--run-name", ".."], "run_name must be a plain folder name"),
        (["--run-name", "../x"], "run_name must be a plain folder name"),
        (["--momentum", "5"], "momentum must be a finite number in [0, 1)"),
        (["--momentum", "nan"], "momentum must be a finite number"),
        (["--lr", "inf"], "lr must be a finite number"),
        (["--weight-decay", "inf"], "weight_decay must be a finite number"),
        (["--train-size", "0"], "train_size must be an integer"),
        (["--device", "cuda:x"], "'cuda:N' with N an integer, got 'cuda:x'"),
        (["--amp", "true"], "amp=True needs a CUDA device"),
        (["--results-dir", "/proc/ibstudy-results"], "is not writable"),
    ],
)
def test_bad_flags_are_one_line(tmp_path, capsys, flags, message):
    code = main(["train", *ARGS, "--results-dir", str(tmp_path / "runs"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "runs").exists() or flags[0] == "--results-dir"


def test_results_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["train", *ARGS, "--results-dir", str(tmp_path / "file" / "runs")]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1


def test_milestones_not_integers(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *ARGS, "--milestones", "5,x"])
    assert exit_.value.code == 2
    assert "argument --milestones: expected comma-separated integers" in capsys.readouterr().err


def test_missing_dataset_names_download_flag(tmp_path, capsys):
    args = ["train", *ARGS, "--dataset", "cifar10", "--data-root", str(tmp_path / "data")]
    args += ["--results-dir", str(tmp_path / "runs")]
    for _ in range(2):  # a failed start leaves nothing that blocks the next one
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--download true" in err and "cifar10" in err
    assert not list((tmp_path / "runs").rglob("config.json"))


def test_logs_without_terminal_are_plain_lines(tmp_path, capsys):
    assert main(["train", *ARGS[:-1], "--results-dir", str(tmp_path)]) == 0  # progress on
    out = capsys.readouterr().out  # captured: not a terminal
    assert "\r" not in out and "\x1b[" not in out
    assert "3/3" in out  # the final progress line of the run
    modes = {oct(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {"0o644"}


# ---------------------------------------------------------------- a stalled network
def test_stalled_download_fails_within_the_timeout(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    import ibstudy.data as data

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []

    def accept_and_hang() -> None:  # accepts every connection and never answers
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_hang, daemon=True).start()
    port = server.getsockname()[1]
    monkeypatch.setattr(tvd.MNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 1.0)
    start = time.monotonic()
    try:
        with pytest.raises(data.DatasetNotFoundError, match="download failed"):
            data.load_dataset("mnist", root=tmp_path, download=True)
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert time.monotonic() - start < 30  # stated bound: a few DOWNLOAD_TIMEOUTs, never a hang
    assert list(tmp_path.iterdir()) == []  # no partial .download-* folder
    assert socket.getdefaulttimeout() is None  # the process-wide timeout was restored


def test_stale_download_folder_of_a_dead_process_is_removed(tmp_path):
    import ibstudy.data as data

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".download-mnist-{dead}-abc"
    live = tmp_path / f".download-mnist-{os.getpid()}-abc"
    stale.mkdir()
    live.mkdir()
    data._clean_stale_downloads(tmp_path)
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------- numbers
def test_nhsic_float32_overflow_is_finite():
    from ibstudy.hsic import nhsic

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    z = torch.tanh(x @ torch.randn(8, 4, generator=g)) * 1e20
    value = nhsic(x, z)
    assert math.isfinite(value)
    assert value == pytest.approx(nhsic(x.double(), z.double()), rel=1e-5)
