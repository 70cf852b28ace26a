"""What defines a training run (:class:`TrainConfig`, its presets) and an estimator (:class:`MeasureConfig`).

Pure dataclasses and validation; importing this module does not import torch (the dataset, model and
device facts that validation needs are imported when ``validate`` runs). A run's identity, and so its
folder, depends only on the fields that change what is trained: the measurement settings are a
:class:`MeasureConfig` and never force a retrain (docs/method.md §10). Presets: docs/method.md §8.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibstudy.checks import (
    check_bool,
    check_choice,
    check_fractions,
    check_int,
    check_int_list,
    check_real,
)

__all__ = [
    "BANDWIDTHS",
    "ESTIMATOR_SETTINGS",
    "MEASURE_FIELDS",
    "NHSIC_REGS",
    "MeasureConfig",
    "OPTIMIZERS",
    "PRESETS",
    "PRESET_SEEDS",
    "STUDY_FRACTIONS",
    "TrainConfig",
]

#: the layer-wise nHSIC regularizer: off, against the network input, or against the block's input
NHSIC_REGS: tuple[str, ...] = ("none", "global", "local")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")
PRESETS: tuple[str, ...] = ("quick", "study", "paper")
#: seeds every training notebook runs at a preset (None: the single ``seed`` parameter)
PRESET_SEEDS: dict[str, tuple[int, ...] | None] = {
    "quick": None, "study": (0, 1, 2, 3, 4), "paper": None,
}  # fmt: skip
#: the paper's learning-rate milestones as fractions of training (200/300/350/375 of 400 epochs)
MILESTONE_FRACTIONS: tuple[float, ...] = (0.5, 0.75, 0.875, 0.9375)
#: [ours] the study preset's extra record points inside the first epoch (its fast fitting phase)
STUDY_FRACTIONS: tuple[float, ...] = (0.125, 0.25, 0.5)
BANDWIDTHS: tuple[str, ...] = ("fixed", "median")
#: MeasureConfig fields that only some estimators read (``Estimator.settings``): in the dict, the
#: digest and the table columns of those estimators only, so the other estimators' ids never move
ESTIMATOR_SETTINGS: tuple[str, ...] = ("alpha",)
#: TrainConfig fields that say how the plane is measured during training (not part of the run id)
MEASURE_FIELDS: tuple[str, ...] = (
    "eval_size", "chunk_size", "sigma", "eps", "floor", "floor_perms",
)  # fmt: skip
#: TrainConfig fields that say where and how a run is stored or executed (not part of the run id)
_PLACE_FIELDS: tuple[str, ...] = (
    "results_dir", "run_name", "device", "data_root", "download", "channels_last", "compile",
    "device_data", "sync_bn",
)  # fmt: skip
#: where the training batches are cut: on the device when it fits (auto), always, or never
DEVICE_DATA: tuple[str, ...] = ("auto", "on", "off")


# ------------------------------------------------------------------------------------------------
# MeasureConfig
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeasureConfig:
    """One estimator of the information plane (docs/method.md §3, §10); its hash names its cache."""

    eval_size: int = 512  # the first eval_size test images, in order
    chunk_size: int = 256  # nHSIC sample size m; eval_size must be a multiple
    bandwidth: str = "fixed"  # "fixed": sigma * sqrt(d) (the paper's); "median": median heuristic
    sigma: float = 5.0  # used by the fixed bandwidth only
    eps: float = 1e-5  # NOCCO ridge
    floor_perms: int = 1  # permutations per chunk for the floor (0: no floor)
    estimator: str = "nhsic"  # registered (ibstudy.estimators): nhsic | nhsic_cka | renyi
    floor_seed: int = 0  # seeds the floor's permutations (chunk i: floor_seed + i)
    alpha: float = 1.01  # Rényi order (renyi only; > 0 and != 1; ibstudy.renyi.DEFAULT_ALPHA)

    def validate(self, dataset: str | None = None) -> MeasureConfig:
        """Raise ValueError naming the setting and the allowed values; ``dataset`` bounds eval_size.

        The estimator must be registered (:mod:`ibstudy.estimators`); a setting that only other
        estimators read (:data:`ESTIMATOR_SETTINGS`) must keep its default."""
        from ibstudy.estimators import get_estimator

        check_int("eval_size", self.eval_size, minimum=4)
        check_int("chunk_size", self.chunk_size, minimum=4)
        if self.eval_size % self.chunk_size:
            raise ValueError(
                f"chunk_size must divide eval_size (eval_size must be a multiple of chunk_size="
                f"{self.chunk_size}), got eval_size={self.eval_size}, chunk_size={self.chunk_size}"
            )
        check_choice("bandwidth", self.bandwidth, BANDWIDTHS)
        check_real("sigma", self.sigma, minimum=0.0, include_minimum=False)
        check_real("eps", self.eps, minimum=0.0, include_minimum=False)
        check_int("floor_perms", self.floor_perms, minimum=0)
        estimator = get_estimator(self.estimator)  # names the registered estimators
        check_int("floor_seed", self.floor_seed, minimum=0)
        defaults = MeasureConfig()
        for name in ESTIMATOR_SETTINGS:
            if name not in estimator.settings and getattr(self, name) != getattr(defaults, name):
                readers = _readers(name)
                raise ValueError(
                    f"{name} is a setting of the estimator(s) {readers} only; leave it at its "
                    f"default {getattr(defaults, name)!r} with estimator={self.estimator!r}, or "
                    f"pick one of {readers}"
                )
        estimator.check(self)  # its own settings (e.g. alpha: > 0 and != 1)
        if dataset is not None:
            from ibstudy.data import INFO

            test_size = INFO[dataset].test_size
            if self.eval_size > test_size:
                raise ValueError(
                    f"eval_size must be <= {test_size} (the {dataset} test set), got {self.eval_size}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; a setting of :data:`ESTIMATOR_SETTINGS` only where the estimator reads it."""
        from ibstudy.estimators import REGISTRY

        estimator = REGISTRY.get(self.estimator)
        reads = estimator.settings if estimator is not None else ()
        unused = set(ESTIMATOR_SETTINGS) - set(reads)
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MeasureConfig:
        """Inverse of :meth:`to_dict` (a missing setting takes its default); unknown keys are rejected."""
        _check_fields(cls, d)
        return cls(**d)

    def digest(self) -> str:
        """10 hex digits of the settings' hash (the cache file's name)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def measure_id(self) -> str:
        """A readable id: ``<estimator>-<bandwidth>-m<chunk_size>-<digest>``."""
        return f"{self.estimator}-{self.bandwidth}-m{self.chunk_size}-{self.digest()}"

    def columns(self) -> dict[str, Any]:
        """The settings as table columns (every measurement table carries them)."""
        return {**self.to_dict(), "measure_id": self.measure_id()}


# ------------------------------------------------------------------------------------------------
# TrainConfig
# ------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything that defines a training run; two runs with equal configs give equal metrics (CPU)."""

    model: str = "lenet5"
    dataset: str = "mnist5k"
    method: str = "e2e"
    head: str = "none"  # auxiliary head of layer-wise methods: "linear" | "mlp"; "none" for e2e
    local_loss: str = "cross_entropy"
    nhsic_reg: str = "none"  # layer-wise only: "global" | "local" nHSIC regularizer (§7)
    nhsic_lambda: float = 0.01  # its weight (used only when nhsic_reg is not "none")
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
    activation: str = "relu"  # "relu" | "tanh" (lenet5 and the vgg family; resnets: relu only)
    augment: bool = False
    train_size: int | None = None  # use only the first n training images (None = all)
    eval_size: int = 512  # measured during training: the first eval_size test images
    chunk_size: int = 256  # measured during training: nHSIC sample size m
    sigma: float = 5.0  # measured during training: fixed bandwidth sigma * sqrt(d)
    eps: float = 1e-5  # measured during training: NOCCO ridge
    floor: bool = True  # measured during training: also record the permutation floor
    floor_perms: int = 1  # measured during training: permutations per chunk for that floor
    probe_epochs: tuple[int, ...] = ()
    # extra record points inside the first epoch, as fractions in (0, 1) (no weights stored there)
    record_fractions: tuple[float, ...] = ()
    probe_size: int = 2000  # training images for the linear probes (test: the evaluation subset)
    probe_steps: int = 100
    save_epochs: tuple[int, ...] = ()  # epochs whose weights are stored; () = automatic schedule
    results_dir: str = "results/runs"
    run_name: str = ""  # empty: derived from the config (see run_id)
    data_root: str = "data"
    download: bool = False
    amp: bool = False  # bf16 autocast (CUDA only; float16 with loss scaling where bf16 is missing)
    channels_last: bool = False  # channels-last memory format for convolutional models (CUDA)
    compile: bool = False  # torch.compile each method's parts (CUDA; elsewhere a warning)
    device_data: str = "auto"  # training set on the device: auto (CUDA, if it fits) | on | off
    sync_bn: bool = False  # torchrun on CUDA: BatchNorm statistics synchronized over the processes

    # -------------------------------------------------------------- construction
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """``quick`` (minutes on a CPU), ``study`` (the CPU study scale: 40 epochs with the paper's
        schedule scaled to them, the floor from 3 permutations per chunk) or ``paper``
        (docs/method.md §8), with ``overrides``."""
        check_choice("preset", name, PRESETS)
        if name == "paper":
            base: dict[str, Any] = dict(
                dataset="cifar10", epochs=400, batch_size=128, optimizer="adam", lr=5e-4,
                weight_decay=0.0, milestones=(200, 300, 350, 375), gamma=0.2, augment=True,
                eval_size=1024, chunk_size=256, probe_epochs=(0, 50, 100, 200, 300, 400),
                probe_size=10_000, probe_steps=200,
            )  # fmt: skip
        elif name == "study":
            epochs = overrides.get("epochs", 40)
            base = dict(
                dataset="mnist5k", epochs=40, batch_size=64, optimizer="adam", lr=1e-3,
                weight_decay=0.0, milestones=scaled_milestones(epochs), gamma=0.2,
                eval_size=512, chunk_size=256, floor_perms=3, probe_size=2000, probe_steps=100,
                probe_epochs=tuple(sorted({0, epochs // 4, epochs // 2, epochs})),
                record_fractions=STUDY_FRACTIONS,
            )  # fmt: skip
        else:
            base = dict(
                dataset="mnist5k", epochs=3, batch_size=64, optimizer="adam", lr=1e-3,
                weight_decay=0.0, milestones=(), eval_size=512, chunk_size=256, probe_size=2000,
                probe_steps=100,
            )  # fmt: skip
        _check_fields(cls, overrides)
        from ibstudy.methods import get_method

        method = get_method(overrides.get("method", "e2e"))
        base.update(method.preset_defaults(name))
        base.update(overrides)
        if "probe_size" not in overrides and base.get("train_size") is not None:
            base["probe_size"] = min(base["probe_size"], base["train_size"])
        stage_probes = "probe_epochs" not in overrides and method.staged
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
        for name in ("milestones", "probe_epochs", "save_epochs"):
            value = getattr(self, name)
            if isinstance(value, list | tuple):
                setattr(self, name, tuple(int(v) if _is_int(v) else v for v in value))
        if isinstance(self.record_fractions, list):
            self.record_fractions = tuple(self.record_fractions)

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the allowed values for any bad setting."""
        from ibstudy.data import DATASETS, INFO
        from ibstudy.device import pick_device
        from ibstudy.losses import LOCAL_LOSSES
        from ibstudy.methods import get_method
        from ibstudy.models import MODELS, check_activation

        check_choice("model", self.model, MODELS)
        check_activation(self.model, self.activation)  # names activation and the allowed values
        check_choice("dataset", self.dataset, DATASETS)
        method = get_method(self.method)  # names the registered methods
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("local_loss", self.local_loss, LOCAL_LOSSES)
        check_choice("nhsic_reg", self.nhsic_reg, NHSIC_REGS)
        method.check(self)  # the method's own rules (head, local loss, regularizer)
        check_real("nhsic_lambda", self.nhsic_lambda, minimum=0.0)
        info = INFO[self.dataset]
        if self.train_size is not None:  # before probe_size, which defaults to min(.., train_size)
            check_int("train_size", self.train_size, minimum=1, maximum=info.train_size)
        for name in (
            "epochs",
            "batch_size",
            "eval_size",
            "chunk_size",
            "probe_size",
            "probe_steps",
        ):
            check_int(name, getattr(self, name), minimum=1)
        check_int("seed", self.seed, minimum=0)
        for name in ("lr", "width", "sigma", "eps"):
            check_real(name, getattr(self, name), minimum=0.0, include_minimum=False)
        check_real("weight_decay", self.weight_decay, minimum=0.0)
        check_real("gamma", self.gamma, minimum=0.0, maximum=1.0, include_minimum=False)
        check_real("momentum", self.momentum, minimum=0.0, maximum=1.0, include_maximum=False)
        for name in ("augment", "download", "amp", "channels_last", "compile", "sync_bn"):
            check_bool(name, getattr(self, name))
        check_choice("device_data", self.device_data, DEVICE_DATA)
        if self.device_data == "on" and self.local_loss == "supcon":
            raise ValueError(
                "device_data='on' cannot give the two augmented views of local_loss='supcon'; use "
                "device_data='off' or 'auto'"
            )
        name = self.run_name
        if not isinstance(name, str) or (
            name and (name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\"))
        ):
            raise ValueError(
                f"run_name must be a plain folder name (no '/' or '\\', not starting with '.'), "
                f"or '' to derive it from the config; got {name!r}"
            )
        check_bool("floor", self.floor)
        check_int("floor_perms", self.floor_perms, minimum=1)
        self.measure_config().validate()
        if self.eval_size > info.test_size:
            raise ValueError(
                f"eval_size must be <= {info.test_size} (the {self.dataset} test set), "
                f"got {self.eval_size}"
            )
        train_n = info.train_size if self.train_size is None else self.train_size
        if self.probe_size > train_n:
            raise ValueError(
                f"probe_size must be <= {train_n} (training images), got {self.probe_size}"
            )
        total = self.total_epochs()
        check_int_list("probe_epochs", self.probe_epochs)
        bad = [e for e in self.probe_epochs if not 0 <= e <= total]
        if bad:
            raise ValueError(
                f"probe_epochs must lie in [0, {total}], got {list(self.probe_epochs)}"
            )
        check_int_list("save_epochs", self.save_epochs)
        bad = [e for e in self.save_epochs if not 0 <= e <= total]
        if bad:
            raise ValueError(f"save_epochs must lie in [0, {total}], got {list(self.save_epochs)}")
        check_fractions("record_fractions", self.record_fractions)
        check_int_list("milestones", self.milestones, minimum=1)
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(
                f"milestones must be increasing epochs >= 1, got {list(self.milestones)}"
            )
        per_stage = self.epochs  # a staged method's schedule restarts with every stage
        if self.milestones and self.milestones[-1] > per_stage:
            raise ValueError(
                f"milestones must lie within the {per_stage} epochs of training, got "
                f"{list(self.milestones)}: raise epochs, or set milestones for this length "
                f"(the study preset scales them: {list(scaled_milestones(per_stage))})"
            )
        try:
            device = pick_device(self.device)
        except ValueError as exc:
            raise ValueError(f"device: {exc}") from None
        if self.amp and device.type != "cuda":
            raise ValueError(
                f"amp=True needs a CUDA device (mixed precision runs on CUDA only), but device="
                f"{self.device!r} resolves to {device.type!r}; set amp=False"
            )

    def total_epochs(self) -> int:
        """Total epochs of the run: ``epochs`` x the method's stages (sequential: blocks + 1)."""
        from ibstudy.methods import get_method

        return self.epochs * get_method(self.method).stages(self)

    def num_blocks(self) -> int:
        """Number of blocks of the configured model."""
        from ibstudy.data import INFO
        from ibstudy.models import build_model

        info = INFO[self.dataset]
        model = build_model(
            self.model, info.num_classes, info.in_channels, info.image_size, self.width,
            activation=self.activation,
        )  # fmt: skip
        return len(model.blocks)

    def measure_config(self) -> MeasureConfig:
        """The estimator recorded during training (the paper's: fixed bandwidth, NOCCO nHSIC).

        The floor's permutations do not depend on the run's seed, so runs of different seeds are
        measured by one estimator (one ``measure_id``) and their tables can be pooled.
        """
        return MeasureConfig(
            eval_size=self.eval_size, chunk_size=self.chunk_size, bandwidth="fixed",
            sigma=float(self.sigma), eps=float(self.eps),
            floor_perms=self.floor_perms if self.floor else 0, estimator="nhsic", floor_seed=0,
        )  # fmt: skip

    # -------------------------------------------------------------- identity
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are rejected, missing ones take defaults."""
        _check_fields(cls, d)
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that define what is trained (not the measurement, storage or device)."""
        d = self.to_dict()
        for key in (*_PLACE_FIELDS, *MEASURE_FIELDS, "save_epochs"):
            d.pop(key)
        if not d["record_fractions"]:  # runs without sub-epoch points keep their former ids
            d.pop("record_fractions")
        if d["nhsic_reg"] == "none":  # nor do runs without the regularizer (lambda unused)
            d.pop("nhsic_reg")
            d.pop("nhsic_lambda")
        if d["activation"] == "relu":  # nor do ReLU runs (the only activation before it existed)
            d.pop("activation")
        return d

    def run_id(self) -> str:
        """``run_name`` if set, else ``<model>-<method>-<head>-<dataset>-s<seed>-<hash of identity>``."""
        if self.run_name:
            return self.run_name
        digest = hashlib.sha1(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.model}-{self.method}-{self.head}-{self.dataset}-s{self.seed}-{digest}"

    def run_dir(self) -> Path:
        """The run's folder ``<results_dir>/<run_id>``."""
        return Path(self.results_dir) / self.run_id()


def scaled_milestones(epochs: int) -> tuple[int, ...]:
    """The paper's milestones (50, 75, 87.5, 93.75 % of training) for ``epochs`` epochs, distinct."""
    points = sorted({max(1, round(f * epochs)) for f in MILESTONE_FRACTIONS})
    return tuple(p for p in points if p < epochs)


def _readers(setting: str) -> list[str]:
    """The registered estimators that read ``setting``."""
    from ibstudy.estimators import REGISTRY

    return [name for name, est in REGISTRY.items() if setting in est.settings]


def _check_fields(cls: type, names: Any) -> None:
    """ValueError naming the unknown keys (and the allowed ones) of a dataclass's field dict."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(names) - fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed: {sorted(fields)}")


def _is_int(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    )
