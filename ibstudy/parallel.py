"""Independent runs side by side: worker processes, each with its share of the cores.

Small models use torch's intra-op threads poorly, so two LeNet5 runs with one thread each finish
sooner than one after the other with two threads each. :func:`train_runs` trains a list of configs
with ``jobs`` worker processes (``spawn``), each with ``threads`` intra-op threads; complete runs are
reused, a run locked by another process or failing (its worker killed too) is reported while the
others finish, and Ctrl-C stops every worker (each run keeps its completed epochs and resumes). A
run's tables depend only on its config and its thread count (docs/method.md §13): the thread count
is recorded in the run's ``config.json`` and in the findings' provenance, not in its identity.

Runs already stored complete are reused in the calling process, so a notebook whose runs all
exist starts no worker. :func:`measure_in_workers` re-measures stored runs under other estimator
settings the same way, one (run, settings) pair per task, into the runs' measurement caches.

``jobs="auto"`` (:func:`auto_jobs`): one run per core for models under ``SMALL_MODEL_PARAMS``
parameters (LeNet5, the thin ResNets and VGGs of the study), else one run per
``LARGE_RUN_THREADS`` cores; one at a time on a GPU; never more jobs than runs.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from typing import Any

from ibstudy.config import TrainConfig
from ibstudy.store import Run

__all__ = [
    "JOBS_ENV", "LARGE_RUN_THREADS", "SMALL_MODEL_PARAMS", "RunsFailed", "auto_jobs",
    "available_cores", "measure_in_workers", "resolve_jobs", "train_runs",
]  # fmt: skip

#: [ours] models below this many parameters train one run per core under ``jobs="auto"``
SMALL_MODEL_PARAMS = 5_000_000
#: [ours] intra-op threads per run for larger models under ``jobs="auto"``
LARGE_RUN_THREADS = 4
#: the environment variable that sets the notebooks' ``jobs`` (``make study JOBS=1``)
JOBS_ENV = "IBSTUDY_JOBS"


class RunsFailed(RuntimeError):
    """Some runs failed or were locked by another process; the others finished and are stored."""


@dataclass(frozen=True)
class _Outcome:
    index: int
    path: str | None
    error: str | None
    seconds: float
    run: Run | None = None  # the loaded run, when it was reused here (not sent between processes)


def available_cores() -> int:
    """The cores this process may use (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def auto_jobs(configs: Sequence[TrainConfig], cores: int | None = None) -> int:
    """The ``jobs="auto"`` rule (module docstring) for ``configs`` on ``cores`` cores."""
    from ibstudy.device import pick_device

    cores = available_cores() if cores is None else cores
    if not configs:
        return 1
    if any(pick_device(c.device).type != "cpu" for c in configs):
        return 1  # one accelerator: runs share it one at a time
    largest = max(_num_params(c) for c in configs)
    per_run = 1 if largest < SMALL_MODEL_PARAMS else LARGE_RUN_THREADS
    return max(1, min(len(configs), cores // per_run))


def _num_params(cfg: TrainConfig) -> int:
    """Parameters of the config's model (built once on the CPU, not trained)."""
    from ibstudy.data import INFO
    from ibstudy.models import build_model

    info = INFO[cfg.dataset]
    model = build_model(
        cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width,
        activation=cfg.activation,
    )  # fmt: skip
    return sum(p.numel() for p in model.parameters())


def resolve_jobs(jobs: Any, configs: Sequence[TrainConfig], cores: int | None = None) -> int:
    """``jobs`` (a positive int, ``"auto"``, or None: the ``IBSTUDY_JOBS`` variable, else auto) as a
    number of workers, capped at the number of runs; ValueError naming ``jobs`` otherwise."""
    if jobs is None:
        jobs = os.environ.get(JOBS_ENV, "auto") or "auto"
    if isinstance(jobs, str) and jobs.strip() != "auto":
        text = jobs.strip()
        if not text.isdigit():
            raise ValueError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
        jobs = int(text)
    if jobs == "auto" or (isinstance(jobs, str) and jobs.strip() == "auto"):
        return auto_jobs(configs, cores)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
    return max(1, min(jobs, len(configs)))


def _threads_for(jobs: int, threads: int | None, cores: int) -> int:
    """Intra-op threads per worker: ``threads`` if given, else the cores shared out (at least 1)."""
    if threads is None:
        if cores // jobs == 0:
            raise ValueError(
                f"jobs={jobs} on {cores} core(s) would leave 0 threads per run; use jobs <= "
                f"{cores} or 'auto'"
            )
        return cores // jobs
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer (per job), got {threads!r}")
    return threads


def _init_worker(threads: int) -> None:
    """A worker's setup: its share of the cores, and Ctrl-C left to the parent."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def _outcome_of(index: int, path: str, start: float, exc: Exception | None) -> _Outcome:
    """A task's outcome; a known error (bad input, files, divergence) as its message, others typed."""
    if exc is None:
        return _Outcome(index, path, None, time.perf_counter() - start)
    known = isinstance(exc, ValueError | OSError) or type(exc).__name__ == "TrainingDiverged"
    text = str(exc) if known else f"{type(exc).__name__}: {exc}"
    return _Outcome(index, None, text, time.perf_counter() - start)


def _train_one(index: int, config: dict[str, Any], trust: bool, bar: bool = False) -> _Outcome:
    """Train (or reuse) one run (``bar``: with its progress bar); errors come back as text."""
    from ibstudy.training import train

    start = time.perf_counter()
    cfg = TrainConfig.from_dict(config)
    try:
        run = train(cfg, resume=True, progress=bar, trust=trust)
    except Exception as exc:  # reported by the parent with the run's id; the others go on
        return _outcome_of(index, "", start, exc)
    return _outcome_of(index, str(run.path), start, None)


def _stored_one(index: int, cfg: TrainConfig, trust: bool) -> _Outcome | None:
    """The outcome of reusing ``cfg``'s stored complete run here, in the parent (no worker needed),
    or None when its folder is not marked complete or the run must still train."""
    from ibstudy.store import read_meta
    from ibstudy.training import stored_run

    path = cfg.run_dir()
    try:
        if not read_meta(path).get("complete", False):
            return None
    except (OSError, ValueError):  # no folder or no readable config.json: the worker decides
        return None
    start = time.perf_counter()
    try:
        run = stored_run(cfg, trust=trust)
    except Exception as exc:  # another config's folder, locked by another process, damaged
        return _outcome_of(index, "", start, exc)
    if run is None:
        return None
    return dataclasses.replace(_outcome_of(index, str(run.path), start, None), run=run)


def _in_process(configs: Sequence[TrainConfig], threads: int | None, log: _Log,
                trust: bool) -> list[_Outcome]:  # fmt: skip
    """``jobs=1``: every run here, one after another (with ``threads`` threads if given)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    outcomes = []
    try:
        for i, cfg in enumerate(configs):
            log.say(f"[{i + 1}/{len(configs)}] start {cfg.run_id()}")
            outcome = _train_one(i, cfg.to_dict(), trust, bar=log.progress)
            log.report(outcome, configs, sum(o.error is None for o in outcomes) + 1)
            outcomes.append(outcome)
    finally:
        torch.set_num_threads(before)
    return outcomes


@dataclass(frozen=True)
class _Log:
    """Where the per-run lines go: stdout when ``progress``, errors always; ``label`` prefixes."""

    progress: bool
    label: str = ""

    def say(self, line: str) -> None:
        if self.progress:
            print(self.label + line, flush=True)

    def report(self, outcome: _Outcome, configs: Sequence[TrainConfig], done: int,
               stored: bool = False) -> None:  # fmt: skip
        """One line at a run's end (its error on stderr, always)."""
        run_id = configs[outcome.index].run_id()
        if outcome.error is not None:
            print(f"{self.label}run {run_id} failed: {outcome.error}", file=sys.stderr, flush=True)
            return
        how = "stored" if stored else f"{outcome.seconds:.0f} s"
        self.say(f"[{done}/{len(configs)}] done  {run_id} ({how})")


#: what a task that was running when its pool lost a worker reports
WORKER_DIED = (
    "a worker process died (killed, or out of memory) while this run trained or was measured; "
    "every run training at that moment stopped and keeps its completed epochs (finished "
    "measurements stay cached): run again to resume"
)


def _in_workers(
    task: Callable[..., _Outcome],
    args: Sequence[tuple[Any, ...]],
    order: Sequence[int],
    jobs: int,
    threads: int,
    on_start: Callable[[int], None] = lambda i: None,
) -> Iterator[_Outcome]:
    """``task(*args[i])`` for every ``i`` of ``order`` in ``jobs`` spawned workers of ``threads``
    intra-op threads, at most ``jobs`` at a time, in order; yields each outcome as it finishes. A
    worker that dies breaks its pool: the tasks running then come back failed (:data:`WORKER_DIED`)
    and the tasks not yet started go on in a fresh pool. Ctrl-C stops every worker."""
    queue = list(order)
    while queue:
        queue = yield from _pool_round(task, args, queue, jobs, threads, on_start)


def _pool_round(
    task: Callable[..., _Outcome],
    args: Sequence[tuple[Any, ...]],
    queue: list[int],
    jobs: int,
    threads: int,
    on_start: Callable[[int], None],
) -> Generator[_Outcome, None, list[int]]:
    """Tasks from ``queue`` in one pool until the queue is done or the pool breaks (a worker died);
    yields each outcome and returns the tasks not started."""
    ctx = mp.get_context("spawn")  # no fork: torch's thread pools do not survive one
    running: dict[Future[_Outcome], int] = {}
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
    broken = False
    try:
        while running or (queue and not broken):
            while queue and not broken and len(running) < jobs:
                i = queue[0]
                try:
                    future = pool.submit(task, *args[i])
                except BrokenProcessPool:
                    broken = True
                    break
                queue.pop(0)
                on_start(i)
                running[future] = i
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    broken = True
                    outcome = _Outcome(i, None, WORKER_DIED, 0.0)
                except Exception as exc:  # the task could not reach or leave its worker
                    outcome = _Outcome(i, None, f"worker failed ({type(exc).__name__}: {exc})", 0.0)
                yield outcome
    except KeyboardInterrupt:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()  # each run keeps its last checkpoint and resumes
        pool.shutdown(wait=False, cancel_futures=True)
        print("interrupted: every run keeps its completed epochs; run again to resume",
              file=sys.stderr, flush=True)  # fmt: skip
        raise
    pool.shutdown(wait=True)
    return queue


def _say_start(log: _Log, configs: Sequence[TrainConfig], i: int) -> None:
    log.say(f"[{i + 1}/{len(configs)}] start {configs[i].run_id()}")


def _reuse_stored(configs: Sequence[TrainConfig], log: _Log, trust: bool) -> list[_Outcome]:
    """Every config whose run is stored complete, reused here (starting no worker for it)."""
    outcomes: list[_Outcome] = []
    for i, cfg in enumerate(configs):
        outcome = _stored_one(i, cfg, trust)
        if outcome is not None:
            outcomes.append(outcome)
            log.report(outcome, configs, sum(o.error is None for o in outcomes), stored=True)
    return outcomes


def train_runs(
    configs: Sequence[TrainConfig],
    *,
    jobs: Any = 1,
    threads: int | None = None,
    progress: bool = True,
    trust: bool = False,
    strict: bool = True,
    label: str = "",
) -> list[Run | None]:
    """Train (or reuse) every config with ``jobs`` workers of ``threads`` intra-op threads each
    (None: the cores shared out); returns the runs in order. A failed or locked run is reported on
    stderr while the others finish; then :class:`RunsFailed` names them (``strict``) or its entry
    is None. ``jobs=1`` trains in this process; ``label`` prefixes every line."""
    log = _Log(progress, label)
    configs = list(configs)
    if not configs:
        return []
    for cfg in configs:
        cfg.validate()  # every config before any training starts
    n = resolve_jobs(jobs, configs)
    cores = available_cores()
    per = _threads_for(n, threads, cores)
    if n > 1:
        outcomes = _reuse_stored(configs, log, trust)
        reused = {o.index for o in outcomes}
        todo = [i for i in range(len(configs)) if i not in reused]
        if todo:
            workers = min(n, len(todo))
            stored = f" ({len(reused)} stored)" if reused else ""
            log.say(f"{len(configs)} runs{stored}, {workers} at a time, {per} thread(s) each")
            args = [(i, cfg.to_dict(), trust) for i, cfg in enumerate(configs)]
            starts = partial(_say_start, log, configs)
            for outcome in _in_workers(_train_one, args, todo, workers, per, starts):
                outcomes.append(outcome)
                log.report(outcome, configs, sum(o.error is None for o in outcomes))
    else:
        outcomes = _in_process(configs, threads, log, trust)
    by_index = {o.index: o for o in outcomes}
    failed = [f"{configs[i].run_id()}: {o.error}" for i, o in sorted(by_index.items()) if o.error]
    if failed and strict:
        raise RunsFailed(f"{len(failed)} of {len(configs)} run(s) did not finish (the others are "
                         "stored): " + "; ".join(failed))  # fmt: skip
    return [_run_of(by_index[i]) for i in range(len(configs))]


def _run_of(outcome: _Outcome) -> Run | None:
    """The outcome's run: the one already loaded when it was reused here, else read from its path."""
    if outcome.run is not None:
        return outcome.run
    return Run.load(outcome.path) if outcome.path else None


def _measure_one(index: int, path: str, mcfg: Any, epochs: list[int] | None,
                 trust: bool) -> _Outcome:  # fmt: skip
    """Measure one stored run under ``mcfg`` into its cache (ibstudy.measure.measure)."""
    from ibstudy.measure import measure

    start = time.perf_counter()
    try:
        measure(path, mcfg, epochs, trust=trust)
    except Exception as exc:  # reported by the parent with the run's id and settings
        return _outcome_of(index, "", start, exc)
    return _outcome_of(index, path, start, None)


def measure_in_workers(
    pairs: Sequence[tuple[Run, Any]],
    epochs: Sequence[int] | None = None,
    *,
    jobs: Any = None,
    threads: int | None = None,
    progress: bool = True,
    trust: bool = False,
) -> int:
    """Fill the measurement caches of ``pairs`` (a stored run, its :class:`MeasureConfig` or None
    for its own) that lack ``epochs`` (None: every stored one), ``jobs`` at a time in worker
    processes (resolved as for training, over the pairs' runs; None: ``IBSTUDY_JOBS``, else auto).
    Returns how many pairs were measured; with one job it measures nothing and returns 0 (the
    caller measures in its own process). Bad settings or epochs raise ValueError before any work;
    failed measurements raise :class:`RunsFailed` once the others are cached."""
    from ibstudy.measure import cache_path, missing_epochs
    from ibstudy.progress import progress as progress_bar

    pairs = list(pairs)
    if not pairs:
        return 0
    n = resolve_jobs(jobs, [run.config for run, _ in pairs])
    per = _threads_for(n, threads, available_cores())
    wanted = None if epochs is None else list(epochs)
    todo: dict[Any, tuple[Run, Any]] = {}
    for run, mcfg in pairs:  # every pair validated here, before any work
        settings = run.config.measure_config() if mcfg is None else mcfg
        if missing_epochs(run, settings, wanted):
            todo.setdefault(cache_path(run, settings), (run, settings))
    if n == 1 or not todo:
        return 0
    tasks = list(todo.values())
    labels = [f"{run.config.run_id()} under {mcfg.measure_id()}" for run, mcfg in tasks]
    args = [(i, str(run.path), mcfg, wanted, trust) for i, (run, mcfg) in enumerate(tasks)]
    workers = min(n, len(tasks))
    desc = f"measure {len(tasks)} run x settings, {workers} at a time, {per} thread(s) each"
    failed = []
    outcomes = _in_workers(_measure_one, args, range(len(tasks)), workers, per)
    for outcome in progress_bar(outcomes, desc=desc, enabled=progress, total=len(tasks)):
        if outcome.error is not None:
            failed.append(f"{labels[outcome.index]}: {outcome.error}")
            print(f"measurement of {failed[-1]} failed", file=sys.stderr, flush=True)
    if failed:
        raise RunsFailed(f"{len(failed)} of {len(tasks)} measurement(s) failed (the others are "
                         "cached): " + "; ".join(failed))  # fmt: skip
    return len(tasks)
