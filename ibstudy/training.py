"""The training loop, for every method alike, with a per-epoch information-plane record.

One model definition serves every method (docs/method.md §7): *what* is learned is a registered
:class:`ibstudy.methods.Method` (its objective, auxiliary modules, stages and prediction), *how* a step
runs is :class:`ibstudy.engine.Engine` (precision, compile, torchrun, device data); the loop here
never asks which method it runs. After every epoch (and at initialization, epoch 0) every block and
the logits are measured on a fixed evaluation subset by :class:`ibstudy.measure.PlaneRecorder` under
the run's own measure config (also at ``record_fractions`` of the first epoch, so the fast fitting
phase is a curve; those points store no weights), and the model's weights are stored
(``weights/epoch_NNNN.pt``) so that any other estimator can re-measure the run later without
retraining (:func:`ibstudy.measure.measure`). Metrics go to tidy ``epochs.csv`` / ``layers.csv``
files in ``<results_dir>/<run_name>/``, written atomically together with a checkpoint, so an
interrupted run resumes to the same numbers on the CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ibstudy.checkpoint_state import plain, rng_state, set_rng_state
from ibstudy.checks import check_int
from ibstudy.config import OPTIMIZERS, PRESETS, TrainConfig
from ibstudy.data import INFO, TwoViews, eval_subset, load_splits, make_loader
from ibstudy.device import pick_device, seed_everything
from ibstudy.distributed import Dist
from ibstudy.distributed import setup as setup_distributed
from ibstudy.engine import Engine
from ibstudy.measure import PlaneRecorder, evaluating
from ibstudy.methods import STAGELESS, get_method
from ibstudy.models import build_model
from ibstudy.probes import probe_blocks
from ibstudy.progress import progress as progress_bar
from ibstudy.run_folder import prepare, writable_run_dir
from ibstudy.store import (
    CHECKPOINT_FORMAT,
    Run,
    RunLocked,
    atomic_torch_save,
    run_lock,
    weight_epochs,
    weights_path,
    write_meta,
    write_tables,
)
from ibstudy.tables import EPOCH_COLUMNS, LAYER_COLUMNS


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint and metrics are kept on disk."""


class Trainer:
    """Holds one run's state (model, method, optimizer, data, recorder) and trains it epoch by epoch."""

    def __init__(
        self,
        cfg: TrainConfig,
        progress: bool = True,
        data: tuple[Dataset, Dataset] | None = None,
        dist: Dist | None = None,
        compiler: Callable[[nn.Module], Any] | None = None,
    ) -> None:
        """Build data, model, method, optimizer and recorder; ``data`` = (train, test) replaces the
        datasets named by the config (benchmarks feed synthetic images this way); ``dist`` is the
        torchrun group this process trains in (:mod:`ibstudy.distributed`); ``compiler`` replaces
        ``torch.compile`` (:class:`ibstudy.engine.Engine`)."""
        cfg.validate()
        self.cfg = cfg
        self.dist = dist
        self.progress = progress and (dist is None or dist.main)
        self.engine = Engine(cfg, Engine.device_for(cfg, dist), dist, compiler)
        self.device = self.engine.device
        self.path = cfg.run_dir()
        seed_everything(cfg.seed)
        info = INFO[cfg.dataset]
        self.num_classes = info.num_classes
        method_cls = get_method(cfg.method)
        train, test = data if data is not None else load_splits(cfg)
        self.train_plain: Dataset = train if data is not None else train.plain()  # type: ignore[attr-defined]
        if cfg.train_size is not None:
            train = Subset(train, range(cfg.train_size))  # type: ignore[assignment]
        self.train_set: Dataset = train
        self.test_set = test
        x_eval, y_eval = eval_subset(test, cfg.eval_size)
        self.recorder = PlaneRecorder(x_eval, y_eval, cfg.measure_config(), device=self.device)
        self.plane = self.recorder.plane
        self.x_eval, self.y_eval = x_eval, y_eval
        self.model = build_model(
            cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width,
            activation=cfg.activation,
        ).to(self.device)  # fmt: skip
        self.layer_names = [*self.model.block_names, "logits"]
        shape = (info.in_channels, info.image_size, info.image_size)
        self.method = method_cls(cfg, self.model, info.num_classes, shape)
        if self.method.views == 2:
            self.train_set = TwoViews(train)
        self.heads = self.method.modules.to(self.device)  # checkpoints call them "heads"
        self.view: nn.Module = self.method.view()
        self.model = self.engine.prepare(self.model)
        self.num_blocks = len(self.model.blocks)
        num_params = sum(p.numel() for p in self.model.parameters())
        self.save_epochs = set(weight_epochs(cfg.total_epochs(), num_params, cfg.save_epochs))
        self.stage = STAGELESS  # a staged method enters its first stage in epoch 1
        self._new_optimizer()
        self.engine.switch(self.model, self.method)
        self.device_data = self.engine.device_data(self.train_set, self.method.views)
        self.epoch_rows: list[dict[str, Any]] = []
        self.layer_rows: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0  # global optimizer step
        self.steps_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)  # type: ignore[arg-type]

    @property
    def compiled(self) -> list[str]:
        """The method's parts that run compiled now (empty: eager), as the engine reports them."""
        return list(self.engine.compiled)

    # ---------------------------------------------------------------- optimisation
    def _new_optimizer(self) -> None:
        cfg = self.cfg
        params = self.method.trainable(self.stage)
        if cfg.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=cfg.lr, weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
        )

    def batch_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The objective of one batch in the current stage and the logits its accuracy is read
        from, as the engine runs it (views stacked, memory format, autocast)."""
        with self.engine.autocast():
            return self.method.loss(self.engine.inputs(x), y, self.stage)

    def fraction_steps(self, epoch: int) -> dict[int, float]:
        """Batches of ``epoch`` after which a sub-epoch point is recorded, mapped to the fractional
        epoch they stand for (``record_fractions`` of the first epoch, each rounded to a batch)."""
        n = self.steps_per_epoch
        if epoch != 1 or n < 2:
            return {}
        batches = sorted({min(n - 1, max(1, round(f * n))) for f in self.cfg.record_fractions})
        return {b: b / n for b in batches}

    def _gradients(
        self, x: Tensor, y: Tensor, weight: float, where: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Forward and backward of one batch (this rank's slice, its loss weighted by its share):
        the gradients are left in ``.grad``; returns the loss and the logits. In one process a
        NaN/Inf loss raises :class:`TrainingDiverged` before the backward."""
        loss, logits = self.batch_loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.engine.backward(loss, weight, partial(self._check_finite, where=where))
        return loss, logits

    def _check_finite(self, value: float, where: tuple[int, int]) -> None:
        """Raise :class:`TrainingDiverged` (naming the batch and what is kept) on a NaN/Inf loss."""
        if not math.isfinite(value):
            epoch, batch = where
            raise TrainingDiverged(
                f"loss became {value} at epoch {epoch}, batch {batch} of run "
                f"{self.cfg.run_id()!r}; the last good checkpoint (epoch {epoch - 1}) and the "
                f"metrics written so far are kept in {str(self.path)!r}"
            )

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set (recording the sub-epoch points that fall inside it);
        raises :class:`TrainingDiverged` on a NaN/Inf loss."""
        if self.method.stage_of(epoch) != self.stage:
            self.stage = self.method.stage_of(epoch)
            self._new_optimizer()
        self.method.train_mode(self.stage)
        loader = self.engine.batches(self.train_set, self.device_data, epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        points, record_seconds = self.fraction_steps(epoch), 0.0
        bar = progress_bar(
            loader, desc=f"epoch {epoch}", enabled=self.progress, leave=False,
            total=self.steps_per_epoch,
        )  # fmt: skip
        for batch, (x, y) in enumerate(bar, start=1):
            x, y, weight, counted = self.engine.shard(x, y)
            where = (epoch, batch)
            try:
                loss, logits = self._gradients(x, y, weight, where)
            except TrainingDiverged:
                raise
            except Exception as exc:  # a compiled part failed (forward or lazy backward)
                if not self.engine.compiled:
                    raise
                self.engine.uncompile(self.method, exc)
                loss, logits = self._gradients(x, y, weight, where)
            self.engine.step(self.optimizer, loss, weight, partial(self._check_finite, where=where))
            self.step += 1
            if counted:
                loss_sum += loss.item() * y.shape[0]
                correct += (logits.argmax(1) == y).sum().item()
                seen += y.shape[0]
            if batch in points:  # a sub-epoch point: running train stats, model as it is now
                tick = time.perf_counter()
                ls, cs, ns = self.engine.summed(loss_sum, correct, seen)
                so_far = {
                    "train_loss": ls / ns, "train_acc": cs / ns, "lr": lr,
                    "seconds": tick - start - record_seconds,
                }  # fmt: skip
                self.record(epoch - 1 + points[batch], so_far)
                record_seconds += time.perf_counter() - tick
        self.scheduler.step()
        loss_sum, correct, seen = self.engine.summed(loss_sum, correct, seen)
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "lr": lr,
            "seconds": time.perf_counter() - start - record_seconds,
        }

    # ---------------------------------------------------------------- analysis
    def evaluate(self) -> tuple[float, list[float]]:
        """Test accuracy of the method's prediction and of every auxiliary head (NaN without one);
        under torchrun each rank scores every world-th test batch and the counts are summed."""
        counts = self.test_counts()
        seen = counts[-1]
        heads = [c / seen if self.method.scores_heads else math.nan for c in counts[1:-1]]
        return counts[0] / seen, heads

    def test_counts(self) -> list[float]:
        """[correct predictions, each head's correct, images seen] on the test set, summed over the
        torchrun ranks (each scores its share of the batches; one process scores them all)."""
        correct, head_correct, seen = 0, [0] * self.num_blocks, 0
        loader = make_loader(self.test_set, 256, shuffle=False)
        rank, world = (0, 1) if self.dist is None else (self.dist.rank, self.dist.world)
        with evaluating(self.model, self.heads):
            for index, (x, y) in enumerate(loader):
                if index % world != rank:
                    continue
                x, y = x.to(self.device), y.to(self.device)
                logits, zs = self.model(x, return_blocks=True)
                correct += (self.method.predict(x, logits) == y).sum().item()
                seen += y.shape[0]
                if self.method.scores_heads:
                    for k, (z, head) in enumerate(zip(zs, self.heads, strict=True)):
                        head_correct[k] += (head(z).argmax(1) == y).sum().item()
        counts = [float(correct), *map(float, head_correct), float(seen)]
        return counts if self.dist is None else self.dist.sum(counts, self.device)

    def measure_plane(self) -> pd.DataFrame:
        """nHSIC(X;Z), nHSIC(Y;Z) (and the floor) of every block and the logits, one row per layer."""
        if self.dist is None:
            return self.recorder.measure(self.view)
        mine = range(self.dist.rank, self.recorder.plane.num_chunks, self.dist.world)
        results = self.dist.gather(self.recorder.measure_chunks(self.view, mine))
        return self.recorder.table([item for part in results for item in part])

    def probe(self) -> pd.DataFrame:
        """Linear probes per block (docs/method.md §9); under torchrun each rank fits every
        world-th block and the rows are gathered (a probe depends on its block alone)."""
        blocks = (
            None if self.dist is None else range(self.dist.rank, self.num_blocks, self.dist.world)
        )
        x_tr, y_tr = eval_subset(self.train_plain, self.cfg.probe_size)
        table = probe_blocks(
            self.view, x_tr.to(self.device), y_tr.to(self.device), self.x_eval.to(self.device),
            self.y_eval.to(self.device), self.num_classes, steps=self.cfg.probe_steps,
            seed=self.cfg.seed, blocks=blocks,
        )  # fmt: skip
        if self.dist is None:
            return table
        parts = [part for part in self.dist.gather(table) if len(part)]
        return pd.concat(parts).sort_values("layer_index").reset_index(drop=True)

    def record(self, epoch: float, stats: dict[str, Any]) -> None:
        """Measure the model now (after ``epoch``, possibly fractional) and append its table rows."""
        cfg = self.cfg
        base = {
            "run": cfg.run_id(), "method": cfg.method, "head": cfg.head, "seed": cfg.seed,
            "dataset": cfg.dataset, "num_classes": self.num_classes, "epoch": epoch,
            "step": self.step,
        }  # fmt: skip
        test_acc, head_acc = self.evaluate()
        self.epoch_rows.append(plain({**base, **stats, "test_acc": test_acc}))
        plane = self.measure_plane()  # before the probes, as always (the same RNG order)
        probes = self.probe() if epoch in cfg.probe_epochs else None
        rows = self.recorder.layer_rows(plane, base, probes, head_acc)
        self.layer_rows.extend(plain(row) for row in rows)

    # ---------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit, as tensors and plain values only (so
        torch's weights-only loader reads it: loading a checkpoint never executes code)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "stage": self.stage,
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.engine.scaler.state_dict(),
            "rng": rng_state(),
            "epoch_rows": [plain(row) for row in self.epoch_rows],
            "layer_rows": [plain(row) for row in self.layer_rows],
            "identity": plain(self.cfg.identity()),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`; refuses a state saved under another config identity."""
        stored = state.get("identity")
        if stored is not None and stored != self.cfg.identity():
            raise ValueError(
                f"checkpoint belongs to run {state.get('run', '?')!r} with another config; "
                f"refusing to restore it into {self.cfg.run_id()!r}"
            )
        self.model.load_state_dict(state["model"])
        self.heads.load_state_dict(state["heads"])
        self.stage = state["stage"]
        self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.engine.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.step = state.get("step", self.epoch * self.steps_per_epoch)  # older checkpoints
        self.epoch_rows = [plain(dict(row)) for row in state["epoch_rows"]]
        self.layer_rows = [plain(dict(row)) for row in state["layer_rows"]]
        set_rng_state(state["rng"])

    def save(self, complete: bool) -> None:
        """Write checkpoint, tables and config atomically (each file via temp file + rename); under
        torchrun only rank 0 writes, and every rank waits for it."""
        if self.dist is not None:
            if self.dist.main:
                self._write(complete)
            self.dist.barrier()
            return
        self._write(complete)

    def _write(self, complete: bool) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.epoch in self.save_epochs:  # model weights first: re-measurement reads them
            atomic_torch_save(self.model.state_dict(), weights_path(self.path, self.epoch))
        atomic_torch_save(self.state(), self.path / "checkpoint.pt")
        epochs = pd.DataFrame(self.epoch_rows, columns=EPOCH_COLUMNS)
        layers = pd.DataFrame(self.layer_rows, columns=LAYER_COLUMNS)
        write_tables(self.path, epochs, layers)
        write_meta(self.path, self.cfg, complete)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    *,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
    trust: bool = False,
) -> Run:
    """Train ``cfg`` and record the information plane every epoch; returns the finished :class:`Run`.

    ``resume=True`` continues from the run folder's last checkpoint, or returns the stored run at once
    when it is complete (runs are cached by the identity of the config: the measurement settings are
    not part of it, and a stored run keeps recording with its own; re-measure with
    :func:`ibstudy.measure.measure`). An existing folder is never overwritten unless
    ``overwrite=True``. ``stop_after=k`` stops after global epoch k (for budgets and tests).

    Checkpoints are read with torch's weights-only loader: one of the previous format (pickled RNG
    states; unpickling can execute code) is refused naming the file unless ``trust=True``
    (``--trust-checkpoint``); a resume with trust rewrites it in the current, safe format.

    Integrity: the run folder is locked for the whole run (a second writer fails at once, naming
    the holder's pid); ``config.json`` is written before anything else; every save writes the
    weights, then ``checkpoint.pt`` (which also holds the tables' rows and the config identity), then
    the tables and ``config.json``, each atomically. A kill at any point therefore leaves a
    checkpoint that is at least as new as the tables, and a resume rewrites the tables from it.

    Under ``torchrun`` (WORLD_SIZE > 1) the processes train the run together
    (:mod:`ibstudy.distributed`): rank 0 returns the run, the other ranks return None.
    """
    cfg.validate()
    if stop_after is not None:
        check_int("stop_after", stop_after, minimum=0)
    group = setup_distributed(cfg.identity(), pick_device(cfg.device).type)
    if group is not None:
        return _train_distributed(cfg, resume, overwrite, stop_after, progress, group, trust)  # type: ignore[return-value]
    path = writable_run_dir(cfg)
    with run_lock(path):
        cfg, done, state = prepare(cfg, path, resume, overwrite, trust)
        if done is not None:
            return done
        trainer = Trainer(cfg, progress=progress)  # loads the data: may fail, writes nothing
        write_meta(path, cfg, complete=False)  # before any checkpoint: a checkpoint has its config
        _run_epochs(trainer, state, stop_after, progress)
    return Run.load(path)


def stored_run(cfg: TrainConfig, *, trust: bool = False) -> Run | None:
    """``cfg``'s stored complete run as ``train(cfg, resume=True)`` would return it (repaired tables
    written back), or None when it must still train; trains nothing. Errors as :func:`train`'s."""
    cfg.validate()
    path = cfg.run_dir()
    if not (path / "config.json").exists():
        return None
    with run_lock(path):
        _, done, _ = prepare(cfg, path, True, False, trust)
    return done


def _run_epochs(
    trainer: Trainer, state: dict[str, Any] | None, stop_after: int | None, progress: bool
) -> None:
    """Restore ``state`` (if any), record epoch 0 when new, then train and record every epoch."""
    cfg = trainer.cfg
    total = cfg.total_epochs()
    if state is not None:
        trainer.restore(state)
        trainer.save(complete=trainer.epoch == total)  # repair: tables from the checkpoint
    if not trainer.epoch_rows:
        nan = math.nan
        trainer.record(0, {"train_loss": nan, "train_acc": nan, "lr": cfg.lr, "seconds": 0.0})
        trainer.save(complete=total == 0)
    last = total if stop_after is None else min(total, stop_after)
    bar = progress_bar(
        range(trainer.epoch + 1, last + 1), desc=cfg.run_id(), enabled=trainer.progress,
        initial=trainer.epoch, total=total,
    )  # fmt: skip
    for epoch in bar:
        stats = trainer.train_epoch(epoch)
        trainer.epoch = epoch
        trainer.record(epoch, stats)
        trainer.save(complete=epoch == total)
        bar.set_postfix(test_acc=f"{trainer.epoch_rows[-1]['test_acc']:.3f}")


def _train_distributed(
    cfg: TrainConfig,
    resume: bool,
    overwrite: bool,
    stop_after: int | None,
    progress: bool,
    group: Dist,
    trust: bool = False,
) -> Run | None:
    """:func:`train` under torchrun: rank 0 holds the lock and decides (reuse, resume, refuse), every
    rank trains its share; returns the run on rank 0 and None on the other ranks."""
    with ExitStack() as stack:
        decision: tuple[str, Any, Any] = ("train", None, None)
        if group.main:
            try:
                path = writable_run_dir(cfg)
                stack.enter_context(run_lock(path))
                cfg, done, state = prepare(cfg, path, resume, overwrite, trust)
                decision = ("done", None, None) if done is not None else ("train", cfg, state)
            except ValueError as exc:  # RunLocked included: every rank fails with rank 0's message
                decision = ("error", type(exc).__name__, str(exc))
        decision = group.broadcast(decision)
        kind, first, second = decision
        if kind == "error":
            raise (RunLocked if first == "RunLocked" else ValueError)(second)
        if kind == "done":
            return Run.load(cfg.run_dir()) if group.main else None
        cfg, state = first, second
        trainer = Trainer(cfg, progress=progress, dist=group)
        if group.main:
            write_meta(cfg.run_dir(), cfg, complete=False)
        group.barrier()
        _run_epochs(trainer, state, stop_after, progress)
    return Run.load(cfg.run_dir()) if group.main else None


__all__ = [
    "OPTIMIZERS", "PRESETS", "Run", "TrainConfig", "Trainer", "TrainingDiverged", "stored_run",
    "train",
]  # fmt: skip
