"""E2E, layer-wise and sequential layer-wise training with a per-epoch information-plane record.

One model definition serves every method (docs/method.md §7): the method is a trainer setting. The
trainer computes the losses, detaches between blocks and steps the optimizer; the model's ``forward``
has no side effects. After every epoch (and at initialization, epoch 0) every block and the logits are
measured on a fixed evaluation subset by :class:`ibstudy.measure.PlaneRecorder` under the run's own
measure config (also at ``record_fractions`` of the first epoch, so the fast fitting phase is a curve;
those points store no weights), and the model's weights are stored (``weights/epoch_NNNN.pt``) so that any other
estimator can re-measure the run later without retraining (:func:`ibstudy.measure.measure`). Metrics go
to tidy ``epochs.csv`` / ``layers.csv`` files in ``<results_dir>/<run_name>/``, written atomically
together with a checkpoint, so an interrupted run resumes to the same numbers on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import tempfile
import time
import warnings
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ibstudy.checks import check_int
from ibstudy.config import (
    LAYERWISE_METHODS,
    MEASURE_FIELDS,
    METHODS,
    OPTIMIZERS,
    PRESETS,
    TrainConfig,
    weight_epochs,
)
from ibstudy.data import INFO, eval_subset, load_dataset, make_loader
from ibstudy.device import pick_device, seed_everything
from ibstudy.device_data import DeviceData, fits_on_device
from ibstudy.distributed import Dist, all_reduce_grads
from ibstudy.distributed import setup as setup_distributed
from ibstudy.heads import build_head
from ibstudy.hsic import differentiable_operators, gaussian_operator
from ibstudy.local_methods import FFView, ff_loss, ff_predict, sp_loss, sp_predict, sp_projection
from ibstudy.losses import cross_entropy, similarity_matching_loss, supcon_loss
from ibstudy.measure import PlaneRecorder, evaluating
from ibstudy.models import build_model
from ibstudy.probes import probe_blocks
from ibstudy.progress import progress as progress_bar
from ibstudy.store import (
    CHECKPOINT_FORMAT,
    Run,
    RunLocked,
    atomic_torch_save,
    clean_stale_temps,
    load_checkpoint,
    read_meta,
    run_lock,
    weights_path,
    write_meta,
    write_tables,
)
from ibstudy.tables import EPOCH_COLUMNS, LAYER_COLUMNS, PLANE_COLUMNS

SUPCON_DIM = (
    128  # [ours] projection size of the auxiliary heads under the supervised contrastive loss
)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint and metrics are kept on disk."""


def _config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The identity fields where two configs differ, as ``field: stored ..., given ...``."""
    da, db = a.identity(), b.identity()
    return [f"{k}: stored {db[k]!r}, given {da[k]!r}" for k in da if da[k] != db.get(k)]


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


class _TwoViews(Dataset):
    """Returns two independently augmented views of each item (for the supervised contrastive loss)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        a, y = self.base[i]
        b, _ = self.base[i]
        return torch.stack([a, b]), y


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars (and one-element tensors) as Python ints/floats/strs/bools."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _numpy_state(state: Any) -> dict[str, Any]:
    """numpy's legacy RNG state as tensors and plain numbers (the safe loader reads them)."""
    if isinstance(state, dict):  # already converted
        return state
    name, key, pos, has_gauss, cached = state
    return {
        "bit_generator": str(name),
        "key": torch.from_numpy(np.asarray(key, dtype=np.uint32).astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _python_state(state: Any) -> tuple[Any, ...]:
    """Python's ``random`` state as a tuple of ints (and the cached gaussian, a float or None)."""
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), None if gauss is None else float(gauss)


def _rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values (nothing that needs unpickling)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": _python_state(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`_rng_state`; also takes the previous format's numpy tuple."""
    torch.set_rng_state(state["torch"])
    numpy = _numpy_state(state["numpy"])
    key = numpy["key"]
    key = key.numpy() if isinstance(key, Tensor) else np.asarray(key)
    np.random.set_state(
        (
            numpy["bit_generator"], key.astype(np.uint32), int(numpy["pos"]),
            int(numpy["has_gauss"]), float(numpy["cached_gaussian"]),
        )
    )  # fmt: skip
    random.setstate(_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def safe_state(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint ``state`` (either format) in the current one: RNG states as tensors and plain
    numbers, rows and identity as plain Python values (torch's weights-only loader reads it)."""
    rng = dict(state["rng"])
    rng["numpy"] = _numpy_state(rng["numpy"])
    rng["python"] = _python_state(rng["python"])
    return {
        **state,
        "format": CHECKPOINT_FORMAT,
        "rng": rng,
        "epoch_rows": [_plain(dict(row)) for row in state["epoch_rows"]],
        "layer_rows": [_plain(dict(row)) for row in state["layer_rows"]],
        "identity": _plain(dict(state["identity"])) if state.get("identity") is not None else None,
    }


class Trainer:
    """Holds one run's state (model, heads, optimizer, data, recorder) and trains it epoch by epoch."""

    def __init__(
        self,
        cfg: TrainConfig,
        progress: bool = True,
        data: tuple[Dataset, Dataset] | None = None,
        dist: Dist | None = None,
    ) -> None:
        """Build data, model, heads, optimizer and recorder; ``data`` = (train, test) replaces the
        datasets named by the config (benchmarks feed synthetic images this way); ``dist`` is the
        torchrun group this process trains in (:mod:`ibstudy.distributed`)."""
        cfg.validate()
        self.cfg = cfg
        self.dist = dist
        self.progress = progress and (dist is None or dist.main)
        self.device = pick_device(cfg.device)
        if dist is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(self.device)
        self.path = cfg.run_dir()
        seed_everything(cfg.seed)
        info = INFO[cfg.dataset]
        self.num_classes = info.num_classes
        # data
        if data is None:
            train = load_dataset(
                cfg.dataset, split="train", root=cfg.data_root, download=cfg.download,
                augment=cfg.augment,
            )  # fmt: skip
            test = load_dataset(
                cfg.dataset, split="test", root=cfg.data_root, download=cfg.download
            )
            self.train_plain: Dataset = train.plain()
        else:
            train, test = data  # type: ignore[assignment]
            self.train_plain = train
        if cfg.train_size is not None:
            train = Subset(train, range(cfg.train_size))  # type: ignore[assignment]
        self.train_set: Dataset = _TwoViews(train) if cfg.local_loss == "supcon" else train
        self.test_set = test
        x_eval, y_eval = eval_subset(test, cfg.eval_size)
        self.recorder = PlaneRecorder(x_eval, y_eval, cfg.measure_config(), device=self.device)
        self.plane = self.recorder.plane
        self.x_eval, self.y_eval = x_eval, y_eval
        # model and heads
        self.model = build_model(
            cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width
        ).to(self.device)
        self.layer_names = [*self.model.block_names, "logits"]
        self.heads = nn.ModuleList()
        if cfg.method in LAYERWISE_METHODS:
            out_dim = SUPCON_DIM if cfg.local_loss == "supcon" else info.num_classes
            shapes = self.model.block_output_shapes(info.in_channels, info.image_size)
            self.heads = nn.ModuleList(build_head(cfg.head, s, out_dim) for s in shapes)
        elif cfg.method == "signal_propagation":  # the learned target projection
            shape = (info.in_channels, info.image_size, info.image_size)
            self.heads = nn.ModuleList([sp_projection(info.num_classes, shape)])
        self.heads.to(self.device)
        # the network the plane and the probes measure (Forward-Forward: neutral label, normalized)
        self.view: nn.Module = self.model
        if cfg.method == "forward_forward":
            self.view = FFView(self.model, info.num_classes)
        if cfg.sync_bn:
            if dist is not None and self.device.type == "cuda":
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            else:
                warnings.warn(
                    "sync_bn=True applies to torchrun on CUDA only; ignored", stacklevel=2
                )
        self.num_blocks = len(self.model.blocks)
        num_params = sum(p.numel() for p in self.model.parameters())
        self.save_epochs = set(weight_epochs(cfg.total_epochs(), num_params, cfg.save_epochs))
        self.stage = -1
        self._new_optimizer()
        use_amp = cfg.amp and self.device.type == "cuda"
        self.amp = use_amp
        # bf16 needs no loss scaling; float16 (GPUs without bf16) does
        bf16 = use_amp and torch.cuda.is_bf16_supported()
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not bf16)
        self._throughput_switches()
        self.device_data: DeviceData | None = self._device_data()
        self.epoch_rows: list[dict[str, Any]] = []
        self.layer_rows: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0  # global optimizer step
        self.steps_per_epoch = math.ceil(len(self.train_set) / cfg.batch_size)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- throughput (CUDA)
    def _throughput_switches(self) -> None:
        """channels-last memory format and torch.compile, each only where it applies (warnings)."""
        cfg = self.cfg
        self.forward_model: nn.Module = self.model
        self.forward_blocks: list[nn.Module] = list(self.model.blocks)
        self._compiled = False
        if cfg.channels_last:
            if self.device.type == "cuda":
                self.model.to(memory_format=torch.channels_last)
            else:
                warnings.warn("channels_last=True is used on CUDA only; ignored", stacklevel=3)
        if cfg.compile:
            if self.device.type != "cuda":
                warnings.warn(
                    f"compile=True is used on CUDA only (device {self.device.type!r}); running "
                    "uncompiled", stacklevel=3,
                )  # fmt: skip
                return
            try:
                self.forward_model = torch.compile(self.model)
                self.forward_blocks = [torch.compile(b) for b in self.model.blocks]
                self._compiled = True
            except Exception as exc:  # unsupported platform or backend
                warnings.warn(f"torch.compile failed ({exc}); running uncompiled", stacklevel=3)

    def _uncompile(self, exc: Exception) -> None:
        """Fall back to the eager model after the compiled one failed (with a warning)."""
        warnings.warn(f"torch.compile failed during training ({type(exc).__name__}: {exc}); "
                      "running uncompiled from this batch on", stacklevel=3)  # fmt: skip
        self.forward_model, self.forward_blocks = self.model, list(self.model.blocks)
        self._compiled = False

    def _device_data(self) -> DeviceData | None:
        """The training set on the device (device_data on, or auto on CUDA when it fits)."""
        cfg = self.cfg
        if cfg.device_data == "off" or cfg.local_loss == "supcon":
            return None
        if cfg.device_data == "auto" and self.device.type != "cuda":
            return None
        try:
            data = DeviceData(self.train_set, "cpu", augment=cfg.augment)  # measured, then moved
        except ValueError:
            if cfg.device_data == "on":
                raise
            return None  # a dataset the device path does not know (auto: keep the loader)
        if cfg.device_data == "auto" and not fits_on_device(data.nbytes, self.device):
            return None
        data.to(self.device)
        return data

    # ---------------------------------------------------------------- optimisation
    def _stage_of(self, epoch: int) -> int:
        """Sequential stage that trains epoch ``epoch`` (1-based): 0..L-1 blocks, L the classifier."""
        return (epoch - 1) // self.cfg.epochs

    def _trainable(self) -> list[nn.Parameter]:
        if self.cfg.method != "layerwise_sequential":
            return [*self.model.parameters(), *self.heads.parameters()]
        s = max(self.stage, 0)
        if s < self.num_blocks:
            return [*self.model.blocks[s].parameters(), *self.heads[s].parameters()]
        return list(self.model.classifier.parameters())

    def _new_optimizer(self) -> None:
        cfg = self.cfg
        params = self._trainable()
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

    def _local_loss(self, head_out: Tensor, y: Tensor, n_views: int) -> Tensor:
        loss = self.cfg.local_loss
        if loss == "cross_entropy":
            return cross_entropy(head_out, y.repeat(n_views))
        if loss == "supcon":
            b = y.shape[0]
            return supcon_loss(head_out[:b], head_out[b:], y)
        return similarity_matching_loss(head_out, y.repeat(n_views), self.num_classes)

    def _nhsic_reg(self, x: Tensor, inputs: list[Tensor], zs: list[Tensor]) -> Tensor:
        """lambda x the sum over the blocks of nHSIC(Z_k; X) (``global``) or nHSIC(Z_k; the block's
        input) (``local``) on the batch, with the plane's kernel (sigma * sqrt(d), eps), all blocks in
        one batched factorization; 0 without the regularizer (docs/method.md §7). ``inputs[k]`` is
        block k's input and, for k >= 1, ``zs[k - 1]`` (so its operator is reused)."""
        cfg = self.cfg
        if cfg.nhsic_reg == "none":
            return zs[0].new_zeros(())
        r_z = differentiable_operators(zs, sigma=cfg.sigma, eps=cfg.eps)
        if cfg.nhsic_reg == "global":  # the network input's operator, shared by the blocks
            r_other = gaussian_operator(x, cfg.sigma, cfg.eps)
        else:  # block k's input is block k-1's output: its operator is already in r_z
            first = gaussian_operator(inputs[0], cfg.sigma, cfg.eps).to(r_z.dtype)
            r_other = torch.cat([first[None], r_z[:-1].detach()])
        values = (r_z * r_other.to(r_z.dtype)).sum(dim=(-2, -1))
        return cfg.nhsic_lambda * values.sum().to(zs[0].dtype)

    def _batch_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The objective of one batch and the logits the accuracy is read from."""
        cfg = self.cfg
        n_views = 1
        if x.dim() == 5:  # two views (supcon): stack them along the batch
            n_views = 2
            x = torch.cat([x[:, 0], x[:, 1]])
        if cfg.channels_last and self.device.type == "cuda" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if cfg.method == "e2e":
            logits = self.forward_model(x)
            return cross_entropy(logits, y), logits
        if cfg.method == "forward_forward":
            return ff_loss(self.model, x, y, self.num_classes)
        if cfg.method == "signal_propagation":
            return sp_loss(self.model, self.heads[0], x, y, self.num_classes)
        if cfg.method == "layerwise":
            h = x
            total = x.new_zeros(())
            inputs, zs = [], []
            for block, head in zip(self.forward_blocks, self.heads, strict=True):
                z = block(h.detach())
                total = total + self._local_loss(head(z), y, n_views)
                inputs.append(h)
                zs.append(z)
                h = z
            total = total - self._nhsic_reg(x, inputs, zs)
            logits = self.model.classifier(h.detach())
            total = total + cross_entropy(logits, y.repeat(n_views))
            return total, logits[: y.shape[0]]
        # sequential: frozen blocks < stage run without grad; one block (or the classifier) trains
        s = self.stage
        h = x
        with torch.no_grad():
            for k in range(min(s, self.num_blocks)):
                h = self.model.blocks[k](h)
        if s < self.num_blocks:
            z = self.model.blocks[s](h)
            loss = self._local_loss(self.heads[s](z), y, n_views) - self._nhsic_reg(x, [h], [z])
            with torch.no_grad():
                for k in range(s + 1, self.num_blocks):
                    z = self.model.blocks[k](z)
                logits = self.model.classifier(z)
            return loss, logits[: y.shape[0]]
        logits = self.model.classifier(h)
        return cross_entropy(logits, y.repeat(n_views)), logits[: y.shape[0]]

    def _set_train_mode(self) -> None:
        self.model.train()
        self.heads.train()
        if self.cfg.method == "layerwise_sequential":
            for k in range(min(self.stage, self.num_blocks)):
                self.model.blocks[k].eval()  # frozen blocks keep their BatchNorm statistics

    def _summed(self, loss_sum: float, correct: float, seen: float) -> tuple[float, float, float]:
        """The epoch's running sums over every torchrun rank (unchanged in one process)."""
        if self.dist is None:
            return loss_sum, correct, seen
        a, b, c = self.dist.sum([loss_sum, correct, seen], self.device)
        return a, b, c

    def fraction_steps(self, epoch: int) -> dict[int, float]:
        """Batches of ``epoch`` after which a sub-epoch point is recorded, mapped to the fractional
        epoch they stand for (``record_fractions`` of the first epoch, each rounded to a batch)."""
        n = self.steps_per_epoch
        if epoch != 1 or n < 2:
            return {}
        batches = sorted({min(n - 1, max(1, round(f * n))) for f in self.cfg.record_fractions})
        return {b: b / n for b in batches}

    def _gradients(
        self, x: Tensor, y: Tensor, weight: float, autocast: Any, where: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Forward and backward of one batch (this rank's slice, its loss weighted by its share):
        the gradients are left in ``.grad``; returns the loss and the logits. In one process a
        NaN/Inf loss raises :class:`TrainingDiverged` before the backward."""
        with autocast:
            loss, logits = self._batch_loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.dist is None:
            self._check_finite(loss.item(), where)
            self.scaler.scale(loss).backward()
        else:
            self.scaler.scale(loss * weight).backward()
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
        cfg = self.cfg
        if cfg.method == "layerwise_sequential" and self._stage_of(epoch) != self.stage:
            self.stage = self._stage_of(epoch)
            self._new_optimizer()
        self._set_train_mode()
        if self.device_data is not None:
            loader: Any = self.device_data.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch)
        else:
            loader = make_loader(self.train_set, cfg.batch_size, seed=cfg.seed, epoch=epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        points, record_seconds = self.fraction_steps(epoch), 0.0
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp else nullcontext()
        )
        bar = progress_bar(
            loader, desc=f"epoch {epoch}", enabled=self.progress, leave=False,
            total=self.steps_per_epoch,
        )  # fmt: skip
        for batch, (x, y) in enumerate(bar, start=1):
            weight, counted = 1.0, True
            if self.dist is not None:  # this rank's slice of the global batch, weighted by its size
                part = self.dist.shard(y.shape[0])
                if part.stop == part.start:  # an empty slice still joins the all-reduce (weight 0)
                    part, counted = slice(0, 1), False
                weight = (part.stop - part.start) / y.shape[0] if counted else 0.0
                x, y = x[part], y[part]
            x, y = x.to(self.device), y.to(self.device)
            where = (epoch, batch)
            try:
                loss, logits = self._gradients(x, y, weight, autocast, where)
            except TrainingDiverged:
                raise
            except Exception as exc:  # the compiled model failed (forward or lazy backward)
                if not self._compiled:
                    raise
                self._uncompile(exc)
                loss, logits = self._gradients(x, y, weight, autocast, where)
            if self.dist is not None:
                params = [p for g in self.optimizer.param_groups for p in g["params"]]
                value = all_reduce_grads([p for p in params if p.grad is not None], loss * weight,
                                         self.dist)  # fmt: skip
                self._check_finite(value, where)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            if counted:
                loss_sum += loss.item() * y.shape[0]
                correct += (logits.argmax(1) == y).sum().item()
                seen += y.shape[0]
            if batch in points:  # a sub-epoch point: running train stats, model as it is now
                tick = time.perf_counter()
                ls, cs, ns = self._summed(loss_sum, correct, seen)
                so_far = {
                    "train_loss": ls / ns, "train_acc": cs / ns, "lr": lr,
                    "seconds": tick - start - record_seconds,
                }  # fmt: skip
                self.record(epoch - 1 + points[batch], so_far)
                record_seconds += time.perf_counter() - tick
        self.scheduler.step()
        loss_sum, correct, seen = self._summed(loss_sum, correct, seen)
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "lr": lr,
            "seconds": time.perf_counter() - start - record_seconds,
        }

    # ---------------------------------------------------------------- analysis
    def predict(self, x: Tensor, logits: Tensor) -> Tensor:
        """The method's own prediction: the classifier's argmax, or for Forward-Forward the label of
        highest goodness, for signal propagation the most similar class target."""
        if self.cfg.method == "forward_forward":
            return ff_predict(self.model, x, self.num_classes)
        if self.cfg.method == "signal_propagation":
            return sp_predict(self.model, self.heads[0], x, self.num_classes)
        return logits.argmax(1)

    def evaluate(self) -> tuple[float, list[float]]:
        """Test accuracy of the classifier and of every auxiliary head (NaN without one); under
        torchrun each rank scores every world-th test batch and the counts are summed."""
        counts = self.test_counts()
        seen = counts[-1]
        heads = [c / seen if self._scores_heads else math.nan for c in counts[1:-1]]
        return counts[0] / seen, heads

    @property
    def _scores_heads(self) -> bool:
        """True when the auxiliary heads are classifiers whose accuracy is reported."""
        return self.cfg.method in LAYERWISE_METHODS and self.cfg.local_loss == "cross_entropy"

    def test_counts(self) -> list[float]:
        """[classifier correct, each head's correct, images seen] on the test set, summed over the
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
                correct += (self.predict(x, logits) == y).sum().item()
                seen += y.shape[0]
                if self._scores_heads:
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
        self.epoch_rows.append(_plain({**base, **stats, "test_acc": test_acc}))
        plane = self.measure_plane()
        probes = None
        if epoch in cfg.probe_epochs:
            probes = self.probe()
        settings = self.recorder.mcfg.columns()
        for row in plane.to_dict("records"):
            index = int(row["layer_index"])
            out = {**base, "layer": row["layer"], "layer_index": index}
            out.update({col: row[col] for col in PLANE_COLUMNS})
            out.update(settings)
            out["probe_train_acc"] = out["probe_test_acc"] = math.nan
            if probes is not None and index < self.num_blocks:
                out["probe_train_acc"] = float(probes.iloc[index]["probe_train_acc"])
                out["probe_test_acc"] = float(probes.iloc[index]["probe_test_acc"])
            out["head_test_acc"] = head_acc[index] if index < self.num_blocks else math.nan
            self.layer_rows.append(_plain(out))

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
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch_rows": [_plain(row) for row in self.epoch_rows],
            "layer_rows": [_plain(row) for row in self.layer_rows],
            "identity": _plain(self.cfg.identity()),
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
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.step = state.get("step", self.epoch * self.steps_per_epoch)  # older checkpoints
        self.epoch_rows = [_plain(dict(row)) for row in state["epoch_rows"]]
        self.layer_rows = [_plain(dict(row)) for row in state["layer_rows"]]
        _set_rng_state(state["rng"])

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


def _writable_run_dir(cfg: TrainConfig) -> Path:
    """The run folder, created; ValueError at once when ``results_dir`` is a file or not writable."""
    root, path = Path(cfg.results_dir), cfg.run_dir()
    for folder in (root, *root.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(
                    f"results_dir {str(root)!r} cannot be created: {str(folder)!r} is a file; choose "
                    f"another results_dir (--results-dir)"
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", suffix=".tmp"):
            pass
    except OSError as exc:
        raise ValueError(
            f"results_dir {str(root)!r} is not writable ({exc.strerror or exc}); choose another "
            f"results_dir (--results-dir)"
        ) from None
    return path


def _clear_run(path: Path) -> None:
    """Remove a run's files (overwrite=True): checkpoint, tables, config, weights and caches."""
    for name in ("checkpoint.pt", "epochs.csv", "layers.csv", "config.json"):
        (path / name).unlink(missing_ok=True)
    for folder in ("weights", "measures", "outcomes"):
        shutil.rmtree(path / folder, ignore_errors=True)


def _checkpoint_for(
    cfg: TrainConfig, path: Path, has_meta: bool, trust: bool = False
) -> dict[str, Any] | None:
    """The run folder's checkpoint if it belongs to ``cfg`` (None without one); ValueError if not
    (:class:`ibstudy.store.UntrustedCheckpoint` for a previous-format one without ``trust``)."""
    if not (path / "checkpoint.pt").exists():
        return None
    state = load_checkpoint(path, trust=trust)
    stored = state.get("identity")
    if stored is None and not has_meta:
        raise ValueError(
            f"run folder {str(path)!r} holds a checkpoint.pt without config.json and without a "
            f"stored config identity, so it cannot be tied to this config; pass overwrite=True "
            f"(--overwrite) to start over"
        )
    if stored is not None and stored != cfg.identity():
        diffs = [
            f"{k}: checkpoint {stored.get(k)!r}, given {v!r}"
            for k, v in cfg.identity().items()
            if stored.get(k) != v
        ]
        raise ValueError(
            f"checkpoint.pt in {str(path)!r} belongs to another config ({'; '.join(diffs)}); "
            f"choose another run_name, or pass overwrite=True (--overwrite) to replace it"
        )
    return state


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
    path = _writable_run_dir(cfg)
    with run_lock(path):
        cfg, done, state = _prepare(cfg, path, resume, overwrite, trust)
        if done is not None:
            return done
        trainer = Trainer(cfg, progress=progress)  # loads the data: may fail, writes nothing
        write_meta(path, cfg, complete=False)  # before any checkpoint: a checkpoint has its config
        _run_epochs(trainer, state, stop_after, progress)
    return Run.load(path)


def _prepare(
    cfg: TrainConfig, path: Path, resume: bool, overwrite: bool, trust: bool = False
) -> tuple[TrainConfig, Run | None, dict[str, Any] | None]:
    """Under the run folder's lock: (the config to train, the stored complete run to return or
    None, the checkpoint to resume from or None); ValueError for a folder that cannot be used."""
    clean_stale_temps(path)
    has_meta = (path / "config.json").exists()
    if overwrite:
        _clear_run(path)
        return cfg, None, None
    if has_meta or (path / "checkpoint.pt").exists():
        if has_meta:
            stored = TrainConfig.from_dict(read_meta(path)["config"])
            diffs = _config_differences(cfg, stored)
            if diffs:
                raise ValueError(
                    f"run folder {str(path)!r} holds a run with a different config ("
                    + "; ".join(diffs)
                    + "): choose another run_name, or pass overwrite=True to replace it"
                )
            # the stored run keeps recording with its own estimator settings
            cfg = dataclasses.replace(cfg, **{f: getattr(stored, f) for f in MEASURE_FIELDS})
        if not resume:
            raise ValueError(
                f"run folder {str(path)!r} exists: pass resume=True to continue (or reuse) it, "
                f"or overwrite=True to start over"
            )
        if has_meta:
            run = Run.load(path, trust=trust)
            if run.complete:
                if run.repaired:  # tables rebuilt from the checkpoint: write them back
                    write_tables(path, run.epochs, run.layers)
                if trust:  # a trusted previous-format checkpoint: rewrite it in the safe format
                    _rewrite_safe(path)
                return cfg, run, None
    return cfg, None, _checkpoint_for(cfg, path, has_meta, trust)


def _rewrite_safe(path: Path) -> None:
    """Rewrite a (trusted) previous-format ``checkpoint.pt`` in the current format."""
    if not (path / "checkpoint.pt").exists():
        return
    state = load_checkpoint(path, trust=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        atomic_torch_save(safe_state(state), path / "checkpoint.pt")


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
                path = _writable_run_dir(cfg)
                stack.enter_context(run_lock(path))
                cfg, done, state = _prepare(cfg, path, resume, overwrite, trust)
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
    "METHODS", "OPTIMIZERS", "PRESETS", "Run", "TrainConfig", "Trainer", "TrainingDiverged", "train",
]  # fmt: skip
