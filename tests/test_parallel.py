"""Independent runs side by side (ibstudy.parallel): the jobs rule, bad input, and runs that equal
one-at-a-time runs to the bit at the same thread count."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import sigint_as_default, tiny_config

from ibstudy.parallel import RunsFailed, _threads_for, auto_jobs, resolve_jobs, train_runs


def _configs(tmp_path, n=2, **overrides):
    base = dict(train_size=256, probe_size=256, epochs=1, probe_epochs=(), **overrides)
    return [tiny_config(tmp_path, seed=s, **base) for s in range(n)]


@pytest.mark.parametrize("jobs", [0, -1, 1.5, "x", "", True, "2.0"])
def test_bad_jobs_name_the_parameter(tmp_path, jobs) -> None:
    with pytest.raises(ValueError, match=r"jobs must be a positive integer or 'auto'"):
        resolve_jobs(jobs, _configs(tmp_path))


def test_jobs_are_capped_at_the_runs_and_read_from_the_environment(tmp_path, monkeypatch) -> None:
    configs = _configs(tmp_path, n=3)
    assert resolve_jobs(8, configs) == 3
    assert resolve_jobs("2", configs) == 2
    monkeypatch.setenv("IBSTUDY_JOBS", "1")
    assert resolve_jobs(None, configs) == 1
    monkeypatch.setenv("IBSTUDY_JOBS", "zero")
    with pytest.raises(ValueError, match="jobs must be"):
        resolve_jobs(None, configs)


def test_auto_gives_small_models_one_core_each_and_large_ones_four(tmp_path) -> None:
    small = _configs(tmp_path, n=3)
    assert auto_jobs(small, cores=8) == 3  # capped by the runs
    assert auto_jobs(small, cores=2) == 2
    assert auto_jobs(small[:1], cores=16) == 1
    large = [tiny_config(tmp_path, model="resnet50", seed=s) for s in range(4)]
    assert auto_jobs(large, cores=8) == 2 and auto_jobs(large, cores=2) == 1


def test_more_jobs_than_cores_would_leave_no_thread(tmp_path) -> None:
    assert _threads_for(2, None, 4) == 2 and _threads_for(4, 1, 2) == 1
    with pytest.raises(ValueError, match=r"jobs=4 on 2 core\(s\) would leave 0 threads"):
        _threads_for(4, None, 2)


def test_two_workers_equal_one_at_a_time_to_the_bit(tmp_path) -> None:
    """Same configs, one thread per run: jobs=2 (spawned workers) and jobs=1 (this process) give
    identical tables, and each run folder records the thread count that trained it."""
    side = train_runs(_configs(tmp_path / "side"), jobs=2, threads=1, progress=False)
    one = train_runs(_configs(tmp_path / "one"), jobs=1, threads=1, progress=False)
    for a, b in zip(side, one, strict=True):
        cols = [c for c in a.epochs.columns if c != "seconds"]
        pd.testing.assert_frame_equal(a.epochs[cols], b.epochs[cols], check_exact=True)
        pd.testing.assert_frame_equal(a.layers, b.layers, check_exact=True)
        assert json.loads((a.path / "config.json").read_text())["threads"] == 1
    assert side[0].config.seed == 0 and side[1].config.seed == 1


def test_a_failing_run_is_reported_while_the_others_finish(tmp_path, capsys) -> None:
    good = _configs(tmp_path, n=1)[0]
    bad = tiny_config(tmp_path, dataset="fashion_mnist", train_size=256, epochs=1, probe_epochs=(),
                      data_root=str(tmp_path / "nothing"))  # fmt: skip
    with pytest.raises(RunsFailed, match=r"1 of 2 run\(s\) did not finish.*fashion_mnist"):
        train_runs([bad, good], jobs=2, threads=1, progress=True)
    out = capsys.readouterr()
    assert "failed" in out.err and "[1/2] done" in out.out
    runs = train_runs([bad, good], jobs=1, progress=False, strict=False)  # the good one is reused
    assert runs[0] is None and runs[1].complete


_INTERRUPTED = """
import sys
from ibstudy.config import TrainConfig
from ibstudy.parallel import train_runs

configs = [
    TrainConfig.preset("quick", train_size=512, eval_size=256, chunk_size=128, probe_size=256,
                       epochs=30, probe_epochs=(), device="cpu", results_dir=sys.argv[1], seed=s)
    for s in (0, 1)
]
train_runs(configs, jobs=2, threads=1)
"""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_ctrl_c_stops_every_worker_and_leaves_each_run_resumable(tmp_path) -> None:
    """SIGINT to the parent once both runs have a checkpoint: the parent exits, no worker is left
    running, and each run resumes from its last checkpoint to completion."""
    import os
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED, str(runs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_default)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and len(list(runs.glob("*/checkpoint.pt"))) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) >= 2  # the two workers (and the resource tracker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "interrupted: every run keeps its completed epochs" in err
    time.sleep(1.0)
    alive = []
    for pid in map(int, children):
        try:
            os.kill(pid, 0)
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if state != "Z":
                alive.append(pid)
        except (ProcessLookupError, FileNotFoundError):
            pass
    assert not alive, f"workers still running: {alive}"
    done = [json.loads(p.read_text())["complete"] for p in runs.glob("*/config.json")]
    assert len(done) == 2 and not all(done)  # stopped mid-way
    configs = [
        tiny_config(tmp_path, train_size=512, epochs=30, probe_epochs=(), seed=s) for s in (0, 1)
    ]
    assert all(run.complete for run in train_runs(configs, jobs=1, progress=False))


_KILLED = """
import sys
from ibstudy.config import TrainConfig
from ibstudy.parallel import train_runs

configs = [
    TrainConfig.preset("quick", train_size=512, eval_size=256, chunk_size=128, probe_size=256,
                       epochs=epochs, probe_epochs=(), device="cpu", results_dir=sys.argv[1], seed=s)
    for s, epochs in ((0, 30), (1, 30), (2, 1))
]
train_runs(configs, jobs=2, threads=1)
"""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_worker_fails_its_runs_while_the_rest_go_on(tmp_path) -> None:
    """SIGKILL to one worker (as the out-of-memory killer would) once both runs have a checkpoint:
    the runs training then are reported, the third run trains in a fresh pool, and a rerun resumes
    the two to completion."""
    import os
    import signal
    import subprocess
    import sys
    import time

    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(runs)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and len(list(runs.glob("*/checkpoint.pt"))) < 2:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "2 of 3 run(s) did not finish" in err and err.count("a worker process died") >= 2
    assert "[3/3] start" in out and "[1/3] done" in out  # the third run, in a fresh pool
    folders = [json.loads(p.read_text()) for p in runs.glob("*/config.json")]
    done = {f["config"]["seed"]: f["complete"] for f in folders}
    assert done == {0: False, 1: False, 2: True}
    configs = [
        tiny_config(tmp_path, train_size=512, epochs=e, probe_epochs=(), seed=s)
        for s, e in ((0, 30), (1, 30), (2, 1))
    ]
    assert all(run.complete for run in train_runs(configs, jobs=1, progress=False))


def test_stored_runs_are_reused_without_starting_a_worker(tmp_path, monkeypatch, capsys) -> None:
    """jobs=2 over runs already complete reuses them in this process: no pool is started (workers
    cost seconds each to start), and the line says the run was stored."""
    configs = _configs(tmp_path)
    first = train_runs(configs, jobs=1, threads=1, progress=False)
    import ibstudy.parallel as parallel

    def no_workers(*args, **kwargs):
        raise AssertionError("a worker pool was started for stored runs")

    monkeypatch.setattr(parallel, "_in_workers", no_workers)
    again = train_runs(configs, jobs=2, threads=1, progress=True)
    assert [r.path for r in again] == [r.path for r in first]
    assert capsys.readouterr().out.count("(stored)") == 2
    fresh = _configs(tmp_path, n=3)  # a third seed must train: that one needs the pool
    with pytest.raises(AssertionError, match="worker pool was started"):
        train_runs(fresh, jobs=2, threads=1, progress=False)


def test_measuring_in_workers_equals_measuring_here_to_the_bit(tmp_path) -> None:
    """Re-measurement under other settings, two workers of one thread each, gives the tables that
    this process gives at one thread; a second call finds every cache and measures nothing."""
    import dataclasses

    import torch

    from ibstudy.measure import measure
    from ibstudy.parallel import measure_in_workers

    side = train_runs(_configs(tmp_path / "side"), jobs=1, threads=1, progress=False)
    here = train_runs(_configs(tmp_path / "here"), jobs=1, threads=1, progress=False)
    mcfg = dataclasses.replace(side[0].config.measure_config(), eps=1e-3, floor_perms=2)
    assert measure_in_workers([(r, mcfg) for r in side], jobs=2, threads=1, progress=False) == 2
    assert measure_in_workers([(r, mcfg) for r in side], jobs=2, threads=1, progress=False) == 0
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for a, b in zip(side, here, strict=True):
            pd.testing.assert_frame_equal(measure(a, mcfg), measure(b, mcfg), check_exact=True)
    finally:
        torch.set_num_threads(before)


def test_measuring_in_workers_checks_the_epochs_before_any_work(tmp_path) -> None:
    import dataclasses

    from ibstudy.parallel import measure_in_workers

    runs = train_runs(_configs(tmp_path), jobs=1, threads=1, progress=False)
    mcfg = dataclasses.replace(runs[0].config.measure_config(), eps=1e-3)
    before = sorted(p.name for r in runs for p in (r.path / "measures").glob("*"))
    with pytest.raises(ValueError, match=r"epochs \[7\] have no stored weights"):
        measure_in_workers([(r, mcfg) for r in runs], [0, 7], jobs=2, threads=1)
    assert sorted(p.name for r in runs for p in (r.path / "measures").glob("*")) == before
