"""E2E, layer-wise and sequential layer-wise training with a per-epoch information-plane recorder.

One model definition serves every method (paper_spec section 7): the method is a trainer setting. The
trainer computes the losses, detaches between blocks and steps the optimizer; the model's ``forward``
has no side effects. After every epoch (and at initialization, epoch 0) every block and the logits are
measured on a fixed evaluation subset through :class:`ibstudy.hsic.InfoPlane`. Metrics go to tidy
``epochs.csv`` / ``layers.csv`` files in ``<results_dir>/<run_name>/``, written atomically together
with a checkpoint, so an interrupted run resumes to the same numbers on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from ibstudy.data import DATASETS, INFO, eval_subset, load_dataset, make_loader
from ibstudy.device import pick_device, seed_everything
from ibstudy.heads import HEADS, build_head
from ibstudy.hsic import InfoPlane
from ibstudy.losses import LOCAL_LOSSES, cross_entropy, similarity_matching_loss, supcon_loss
from ibstudy.models import MODELS, BlockNet, build_model
from ibstudy.probes import probe_blocks

METHODS: tuple[str, ...] = ("e2e", "layerwise", "layerwise_sequential")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
PRESETS: tuple[str, ...] = ("quick", "paper")
SUPCON_DIM = (
    128  # [ours] projection size of the auxiliary heads under the supervised contrastive loss
)

EPOCH_COLUMNS = [
    "run",
    "method",
    "head",
    "epoch",
    "train_loss",
    "train_acc",
    "test_acc",
    "lr",
    "seconds",
]
LAYER_COLUMNS = [
    "run", "method", "head", "epoch", "layer", "layer_index", "nhsic_xz", "nhsic_yz",
    "nhsic_xz_std", "nhsic_yz_std", "floor_xz", "floor_yz",
    "probe_train_acc", "probe_test_acc", "head_test_acc",
]  # fmt: skip


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint and metrics are kept on disk."""


@dataclass
class TrainConfig:
    """Everything that defines a training run; two runs with equal configs give equal metrics (CPU)."""

    model: str = "lenet5"
    dataset: str = "mnist5k"
    method: str = "e2e"
    head: str = "none"  # auxiliary head of layer-wise methods: "linear" | "mlp"; "none" for e2e
    local_loss: str = "cross_entropy"
    epochs: int = 3  # layerwise_sequential: epochs per stage (each block, then the classifier)
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 5e-4
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.2
    momentum: float = 0.9  # sgd only
    seed: int = 0
    device: str = "auto"
    width: float = 1.0
    augment: bool = False
    train_size: int | None = None  # use only the first n training images (None = all)
    eval_size: int = 512  # fixed evaluation subset: the first eval_size test images
    chunk_size: int = 256  # nHSIC sample size m; eval_size must be a multiple
    sigma: float = 5.0
    eps: float = 1e-5
    floor: bool = True  # also record the permutation floor of nHSIC per layer
    probe_epochs: tuple[int, ...] = ()
    probe_size: int = 2000  # training images for the linear probes (test: the evaluation subset)
    probe_steps: int = 100
    results_dir: str = "results/runs"
    run_name: str = ""  # empty: derived from the config (see run_id)
    data_root: str = "data"
    download: bool = False
    amp: bool = False  # mixed precision (CUDA only; ignored on other devices)

    # -------------------------------------------------------------- construction
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """``quick`` (minutes on a laptop CPU, mnist5k) or ``paper`` (paper_spec section 8), with overrides."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {name!r}")
        if name == "paper":
            base: dict[str, Any] = dict(
                dataset="cifar10", epochs=400, batch_size=128, optimizer="adam", lr=5e-4,
                weight_decay=0.0, milestones=(200, 300, 350, 375), gamma=0.2, augment=True,
                eval_size=1024, chunk_size=256, probe_epochs=(0, 50, 100, 200, 300, 400),
                probe_size=10_000, probe_steps=200,
            )  # fmt: skip
            method = overrides.get("method", "e2e")
            if method == "layerwise_sequential":
                base.update(epochs=50, milestones=())
        else:
            base = dict(
                dataset="mnist5k", epochs=3, batch_size=64, optimizer="adam", lr=1e-3,
                weight_decay=0.0, milestones=(), eval_size=512, chunk_size=256, probe_size=2000,
                probe_steps=100,
            )  # fmt: skip
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(fields)}")
        base.update(overrides)
        if "head" not in overrides and base.get("method", "e2e") != "e2e":
            base["head"] = "linear"
        if "probe_size" not in overrides and base.get("train_size") is not None:
            base["probe_size"] = min(base["probe_size"], base["train_size"])
        stage_probes = (
            "probe_epochs" not in overrides and base.get("method") == "layerwise_sequential"
        )
        if "probe_epochs" not in overrides and name == "quick":
            base["probe_epochs"] = (base.get("epochs", 3),)
        if stage_probes:
            base["probe_epochs"] = ()
        cfg = cls(**base)
        if stage_probes:  # probe at the end of every stage (block)
            cfg.probe_epochs = tuple(range(0, cfg.total_epochs() + 1, cfg.epochs))
        cfg.validate()
        return cfg

    def __post_init__(self) -> None:
        self.milestones = tuple(int(m) for m in self.milestones)
        self.probe_epochs = tuple(int(e) for e in self.probe_epochs)

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the allowed values for any bad setting."""

        def choice(name: str, allowed: Sequence[str]) -> None:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")

        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

        def positive(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")

        choice("model", MODELS)
        choice("dataset", DATASETS)
        choice("method", METHODS)
        choice("optimizer", OPTIMIZERS)
        choice("local_loss", LOCAL_LOSSES)
        if self.method == "e2e":
            if self.head != "none":
                raise ValueError(
                    f"head must be 'none' when method='e2e' (heads belong to layer-wise methods), "
                    f"got {self.head!r}"
                )
            if self.local_loss != "cross_entropy":
                raise ValueError(
                    f"local_loss must be 'cross_entropy' when method='e2e', got {self.local_loss!r}"
                )
        else:
            choice("head", HEADS)
        if self.local_loss == "supcon" and not self.augment:
            raise ValueError("local_loss='supcon' needs two augmented views: set augment=True")
        for name in (
            "epochs",
            "batch_size",
            "eval_size",
            "chunk_size",
            "probe_size",
            "probe_steps",
        ):
            positive_int(name)
        positive_int("seed", 0)
        for name in ("lr", "width", "sigma", "eps"):
            positive(name)
        if not 0 <= self.weight_decay:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")
        if self.chunk_size < 4:
            raise ValueError(f"chunk_size must be >= 4, got {self.chunk_size}")
        if self.eval_size % self.chunk_size:
            raise ValueError(
                f"eval_size must be a multiple of chunk_size={self.chunk_size}, got {self.eval_size}"
            )
        info = INFO[self.dataset]
        if self.eval_size > info.test_size:
            raise ValueError(
                f"eval_size must be <= {info.test_size} (the {self.dataset} test set), "
                f"got {self.eval_size}"
            )
        train_n = info.train_size if self.train_size is None else self.train_size
        if self.train_size is not None:
            positive_int("train_size")
            if self.train_size > info.train_size:
                raise ValueError(
                    f"train_size must be <= {info.train_size} (the {self.dataset} training set), "
                    f"got {self.train_size}"
                )
        if self.probe_size > train_n:
            raise ValueError(
                f"probe_size must be <= {train_n} (training images), got {self.probe_size}"
            )
        total = self.total_epochs()
        bad = [e for e in self.probe_epochs if not 0 <= e <= total]
        if bad:
            raise ValueError(
                f"probe_epochs must lie in [0, {total}], got {list(self.probe_epochs)}"
            )
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(
                f"milestones must be increasing epochs >= 1, got {list(self.milestones)}"
            )
        try:
            pick_device(self.device)
        except ValueError as exc:
            raise ValueError(f"device: {exc}") from None

    def total_epochs(self) -> int:
        """Total epochs of the run (sequential: stages x epochs, stages = blocks + classifier)."""
        if self.method != "layerwise_sequential":
            return self.epochs
        info = INFO[self.dataset]
        model = build_model(
            self.model, info.num_classes, info.in_channels, info.image_size, self.width
        )
        return self.epochs * (len(model.blocks) + 1)

    # -------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; allowed: {sorted(fields)}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that define the results (not where they are written or the device name)."""
        d = self.to_dict()
        for key in ("results_dir", "run_name", "device", "data_root", "download"):
            d.pop(key)
        return d

    def run_id(self) -> str:
        """``run_name`` if set, else ``<model>-<method>-<head>-<dataset>-s<seed>-<hash of config>``."""
        if self.run_name:
            return self.run_name
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.model}-{self.method}-{self.head}-{self.dataset}-s{self.seed}-{digest}"

    def run_dir(self) -> Path:
        """The run's folder ``<results_dir>/<run_id>``."""
        return Path(self.results_dir) / self.run_id()


# ------------------------------------------------------------------------------------------------
# Results on disk
# ------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A training run's config, folder and tidy metric tables (``epochs`` and ``layers``)."""

    config: TrainConfig
    path: Path
    epochs: pd.DataFrame
    layers: pd.DataFrame
    complete: bool

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Read a run folder written by :func:`train`."""
        path = Path(path)
        if not (path / "config.json").exists():
            raise ValueError(f"path {str(path)!r} holds no run (config.json missing)")
        meta = json.loads((path / "config.json").read_text())
        epochs = pd.read_csv(path / "epochs.csv") if (path / "epochs.csv").exists() else None
        layers = pd.read_csv(path / "layers.csv") if (path / "layers.csv").exists() else None
        return cls(
            config=TrainConfig.from_dict(meta["config"]),
            path=path,
            epochs=epochs if epochs is not None else pd.DataFrame(columns=EPOCH_COLUMNS),
            layers=layers if layers is not None else pd.DataFrame(columns=LAYER_COLUMNS),
            complete=bool(meta.get("complete", False)),
        )

    def load_model(self, map_location: str = "cpu") -> BlockNet:
        """The model of the last checkpoint (eval mode)."""
        cfg = self.config
        info = INFO[cfg.dataset]
        model = build_model(
            cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width
        )
        state = torch.load(
            self.path / "checkpoint.pt", map_location=map_location, weights_only=False
        )
        model.load_state_dict(state["model"])
        return model.eval()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temp file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_meta(path: Path, cfg: TrainConfig, complete: bool) -> None:
    meta = {"config": cfg.to_dict(), "run_id": cfg.run_id(), "complete": complete}
    atomic_write_text(path / "config.json", json.dumps(meta, indent=2) + "\n")


def _config_differences(a: TrainConfig, b: TrainConfig) -> list[str]:
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


def _rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def _evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode and restore each one's (and each submodule's) previous mode."""
    modes = [[(m, m.training) for m in mod.modules()] for mod in modules]
    for mod in modules:
        mod.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for group in modes:
            for m, was_training in group:
                m.train(was_training)


class Trainer:
    """Holds one run's state (model, heads, optimizer, data, recorder) and trains it epoch by epoch."""

    def __init__(
        self,
        cfg: TrainConfig,
        progress: bool = True,
        data: tuple[Dataset, Dataset] | None = None,
    ) -> None:
        """Build data, model, heads, optimizer and recorder; ``data`` = (train, test) replaces the
        datasets named by the config (benchmarks feed synthetic images this way)."""
        cfg.validate()
        self.cfg = cfg
        self.progress = progress
        self.device = pick_device(cfg.device)
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
        self.plane = InfoPlane(
            x_eval, y_eval, chunk_size=cfg.chunk_size, sigma=cfg.sigma, eps=cfg.eps,
            device=self.device, floor=cfg.floor, seed=cfg.seed,
        )  # fmt: skip
        self.x_eval, self.y_eval = x_eval, y_eval
        # model and heads
        self.model = build_model(
            cfg.model, info.num_classes, info.in_channels, info.image_size, cfg.width
        ).to(self.device)
        self.layer_names = [*self.model.block_names, "logits"]
        self.heads = nn.ModuleList()
        if cfg.method != "e2e":
            out_dim = SUPCON_DIM if cfg.local_loss == "supcon" else info.num_classes
            shapes = self.model.block_output_shapes(info.in_channels, info.image_size)
            self.heads = nn.ModuleList(build_head(cfg.head, s, out_dim) for s in shapes)
            self.heads.to(self.device)
        self.num_blocks = len(self.model.blocks)
        self.stage = -1
        self._new_optimizer()
        use_amp = cfg.amp and self.device.type == "cuda"
        self.amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.epoch_rows: list[dict[str, Any]] = []
        self.layer_rows: list[dict[str, Any]] = []
        self.epoch = 0

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

    def _batch_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The objective of one batch and the logits the accuracy is read from."""
        cfg = self.cfg
        n_views = 1
        if x.dim() == 5:  # two views (supcon): stack them along the batch
            n_views = 2
            x = torch.cat([x[:, 0], x[:, 1]])
        if cfg.method == "e2e":
            logits = self.model(x)
            return cross_entropy(logits, y), logits
        if cfg.method == "layerwise":
            h = x
            total = x.new_zeros(())
            for block, head in zip(self.model.blocks, self.heads, strict=True):
                z = block(h.detach())
                total = total + self._local_loss(head(z), y, n_views)
                h = z
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
            loss = self._local_loss(self.heads[s](z), y, n_views)
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

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training set; raises :class:`TrainingDiverged` on a NaN/Inf loss."""
        cfg = self.cfg
        if cfg.method == "layerwise_sequential" and self._stage_of(epoch) != self.stage:
            self.stage = self._stage_of(epoch)
            self._new_optimizer()
        self._set_train_mode()
        loader = make_loader(self.train_set, cfg.batch_size, seed=cfg.seed, epoch=epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        autocast = (
            torch.autocast(self.device.type, dtype=torch.float16) if self.amp else nullcontext()
        )
        bar = tqdm(
            loader, desc=f"epoch {epoch}", leave=False, disable=not self.progress,
            mininterval=2.0, file=sys.stdout,
        )  # fmt: skip
        for batch, (x, y) in enumerate(bar, start=1):
            x, y = x.to(self.device), y.to(self.device)
            with autocast:
                loss, logits = self._batch_loss(x, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss became {loss.item()} at epoch {epoch}, batch {batch} of run "
                    f"{cfg.run_id()!r}; the last good checkpoint (epoch {epoch - 1}) and the metrics "
                    f"written so far are kept in {str(self.path)!r}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.item() * y.shape[0]
            correct += (logits.argmax(1) == y).sum().item()
            seen += y.shape[0]
        self.scheduler.step()
        return {
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }

    # ---------------------------------------------------------------- analysis
    def evaluate(self) -> tuple[float, list[float]]:
        """Test accuracy of the classifier and of every auxiliary head (NaN without one)."""
        correct, head_correct, seen = 0, [0] * self.num_blocks, 0
        loader = make_loader(self.test_set, 256, shuffle=False)
        with _evaluating(self.model, self.heads):
            for x, y in loader:
                x, y = x.to(self.device), y.to(self.device)
                logits, zs = self.model(x, return_blocks=True)
                correct += (logits.argmax(1) == y).sum().item()
                seen += y.shape[0]
                if len(self.heads) and self.cfg.local_loss == "cross_entropy":
                    for k, (z, head) in enumerate(zip(zs, self.heads, strict=True)):
                        head_correct[k] += (head(z).argmax(1) == y).sum().item()
        has_heads = len(self.heads) and self.cfg.local_loss == "cross_entropy"
        heads = [c / seen if has_heads else math.nan for c in head_correct]
        return correct / seen, heads

    def measure_plane(self) -> pd.DataFrame:
        """nHSIC(X;Z), nHSIC(Y;Z) of every block and the logits on the fixed evaluation chunks."""
        per_chunk = []
        with _evaluating(self.model):
            for i in range(self.plane.num_chunks):
                x, _ = self.plane.chunk(i)
                logits, zs = self.model(x.to(self.device), return_blocks=True)
                reps = dict(zip(self.layer_names, [*zs, logits], strict=True))
                per_chunk.append(self.plane.measure_chunk(i, reps))
        return self.plane.summarize(per_chunk)

    def probe(self) -> pd.DataFrame:
        """Linear probes per block (paper_spec section 9)."""
        x_tr, y_tr = eval_subset(self.train_plain, self.cfg.probe_size)
        return probe_blocks(
            self.model, x_tr.to(self.device), y_tr.to(self.device), self.x_eval.to(self.device),
            self.y_eval.to(self.device), self.num_classes, steps=self.cfg.probe_steps,
            seed=self.cfg.seed,
        )  # fmt: skip

    def record(self, epoch: int, stats: dict[str, Any]) -> None:
        """Measure the model after ``epoch`` and append the epoch's rows to the tables."""
        cfg = self.cfg
        base = {"run": cfg.run_id(), "method": cfg.method, "head": cfg.head, "epoch": epoch}
        test_acc, head_acc = self.evaluate()
        self.epoch_rows.append({**base, **stats, "test_acc": test_acc})
        plane = self.measure_plane()
        probes = self.probe() if epoch in cfg.probe_epochs else None
        for index, row in enumerate(plane.to_dict("records")):
            out = {**base, "layer": row["layer"], "layer_index": index}
            for col in LAYER_COLUMNS[6:12]:
                out[col] = row.get(col, math.nan)
            out["probe_train_acc"] = out["probe_test_acc"] = math.nan
            if probes is not None and index < self.num_blocks:
                out["probe_train_acc"] = float(probes.iloc[index]["probe_train_acc"])
                out["probe_test_acc"] = float(probes.iloc[index]["probe_test_acc"])
            out["head_test_acc"] = head_acc[index] if index < self.num_blocks else math.nan
            self.layer_rows.append(out)

    # ---------------------------------------------------------------- persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to continue the run bit for bit."""
        return {
            "epoch": self.epoch,
            "stage": self.stage,
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "epoch_rows": self.epoch_rows,
            "layer_rows": self.layer_rows,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        self.model.load_state_dict(state["model"])
        self.heads.load_state_dict(state["heads"])
        self.stage = state["stage"]
        self._new_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]
        self.epoch_rows = state["epoch_rows"]
        self.layer_rows = state["layer_rows"]
        _set_rng_state(state["rng"])

    def save(self, complete: bool) -> None:
        """Write checkpoint, tables and config atomically (each file via temp file + rename)."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(self.state(), self.path / "checkpoint.pt")
        epochs = pd.DataFrame(self.epoch_rows, columns=EPOCH_COLUMNS)
        layers = pd.DataFrame(self.layer_rows, columns=LAYER_COLUMNS)
        atomic_write_text(self.path / "epochs.csv", epochs.to_csv(index=False))
        atomic_write_text(self.path / "layers.csv", layers.to_csv(index=False))
        _write_meta(self.path, self.cfg, complete)


def train(
    cfg: TrainConfig,
    resume: bool = False,
    *,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> Run:
    """Train ``cfg`` and record the information plane every epoch; returns the finished :class:`Run`.

    ``resume=True`` continues from the run folder's last checkpoint, or returns the stored run at once
    when it is complete (runs are cached by config). An existing folder is never overwritten unless
    ``overwrite=True``. ``stop_after=k`` stops after global epoch k (for budgets and tests).
    """
    cfg.validate()
    path = cfg.run_dir()
    meta_path = path / "config.json"
    if meta_path.exists():
        stored = TrainConfig.from_dict(json.loads(meta_path.read_text())["config"])
        diffs = _config_differences(cfg, stored)
        if diffs and not overwrite:
            raise ValueError(
                f"run folder {str(path)!r} holds a run with a different config ("
                + "; ".join(diffs)
                + "): choose another run_name, or pass overwrite=True to replace it"
            )
        if not resume and not overwrite:
            raise ValueError(
                f"run folder {str(path)!r} exists: pass resume=True to continue (or reuse) it, "
                f"or overwrite=True to start over"
            )
        if resume and not diffs:
            run = Run.load(path)
            if run.complete:
                return run
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after must be >= 0, got {stop_after}")
    trainer = Trainer(cfg, progress=progress)
    if resume and (path / "checkpoint.pt").exists() and not overwrite:
        trainer.restore(
            torch.load(path / "checkpoint.pt", map_location=trainer.device, weights_only=False)
        )
    if trainer.epoch == 0 and not trainer.epoch_rows:
        nan = math.nan
        trainer.record(0, {"train_loss": nan, "train_acc": nan, "lr": cfg.lr, "seconds": 0.0})
        trainer.save(complete=False)
    total = cfg.total_epochs()
    last = total if stop_after is None else min(total, stop_after)
    bar = tqdm(
        range(trainer.epoch + 1, last + 1), desc=cfg.run_id(), disable=not progress,
        initial=trainer.epoch, total=total, file=sys.stdout,
    )  # fmt: skip
    for epoch in bar:
        stats = trainer.train_epoch(epoch)
        trainer.epoch = epoch
        trainer.record(epoch, stats)
        trainer.save(complete=epoch == total)
        bar.set_postfix(test_acc=f"{trainer.epoch_rows[-1]['test_acc']:.3f}")
    return Run.load(path)


# ------------------------------------------------------------------------------------------------
# Command line: python -m ibstudy train ...
# ------------------------------------------------------------------------------------------------


def add_train_parser(subparsers: Any) -> None:
    """Add the ``train`` sub-command (every TrainConfig field is an option) to ``subparsers``."""
    parser = subparsers.add_parser(
        "train",
        help="train one model E2E or layer-wise and record the information plane",
        description="Train one run; metrics go to <results-dir>/<run-name>/ (epochs.csv, layers.csv).",
    )
    parser.add_argument("--preset", choices=PRESETS, default="quick", help="base settings")
    parser.add_argument("--resume", action="store_true", help="continue (or reuse) a stored run")
    parser.add_argument("--overwrite", action="store_true", help="replace a stored run")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        opt = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            parser.add_argument(opt, type=_parse_bool, default=None, metavar="true|false")
        elif isinstance(default, tuple):
            parser.add_argument(opt, type=_parse_ints, default=None, metavar="N,N,...")
        elif f.name == "train_size":
            parser.add_argument(opt, type=int, default=None)
        else:
            parser.add_argument(opt, type=type(default), default=None)
    parser.set_defaults(func=_train_main)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def _train_main(args: argparse.Namespace) -> int:
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    try:
        cfg = TrainConfig.preset(args.preset, **overrides)
        run = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    last = run.epochs.iloc[-1]
    print(f"run {cfg.run_id()} -> {run.path}: test_acc {last['test_acc']:.4f}")
    return 0


__all__ = [
    "METHODS", "OPTIMIZERS", "PRESETS", "Run", "TrainConfig", "Trainer", "TrainingDiverged",
    "add_train_parser", "train",
]  # fmt: skip
