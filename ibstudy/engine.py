"""How a training step runs, for every method alike: precision, memory format, compile, torchrun, data.

:class:`Engine` holds the execution concerns that used to be interleaved with the methods' logic:
bf16/float16 autocast and the grad scaler (CUDA), channels-last (CUDA), ``torch.compile`` of the
parts each method declares (:meth:`ibstudy.methods.Method.compilable`) with a fallback to eager
execution, the torchrun slice of each batch and the all-reduce of gradients, and the training set
held on the device. On the CPU, with the defaults, it changes nothing: numbers equal a plain loop's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ibstudy.data import make_loader
from ibstudy.device import pick_device
from ibstudy.device_data import DeviceData, fits_on_device
from ibstudy.distributed import Dist, all_reduce_grads

if TYPE_CHECKING:
    from ibstudy.config import TrainConfig
    from ibstudy.methods import Method

__all__ = ["Engine"]


class Engine:
    """The execution settings of one run and the few operations that depend on them."""

    def __init__(
        self,
        cfg: TrainConfig,
        device: torch.device,
        dist: Dist | None = None,
        compiler: Callable[[nn.Module], Any] | None = None,
    ) -> None:
        """Settings from ``cfg`` on ``device``; ``compiler`` replaces ``torch.compile`` (and then
        compiles on any device: tests record what would be compiled this way)."""
        self.cfg, self.device, self.dist = cfg, device, dist
        self.amp = cfg.amp and device.type == "cuda"
        bf16 = self.amp and torch.cuda.is_bf16_supported()  # bf16 needs no loss scaling
        self.amp_dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and not bf16)
        self.channels_last = cfg.channels_last and device.type == "cuda"
        self.compiler = compiler
        #: the names of the parts running compiled now (empty: eager)
        self.compiled: list[str] = []

    # ------------------------------------------------------------------ setup
    @staticmethod
    def device_for(cfg: TrainConfig, dist: Dist | None = None) -> torch.device:
        """The run's device (cuda > mps > cpu for ``auto``); under torchrun, this rank's GPU."""
        device = pick_device(cfg.device)
        if dist is not None and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        return device

    def prepare(self, model: nn.Module) -> nn.Module:
        """SyncBatchNorm under torchrun on CUDA (else a warning when asked); returns the model."""
        if self.cfg.sync_bn:
            if self.dist is not None and self.device.type == "cuda":
                return nn.SyncBatchNorm.convert_sync_batchnorm(model)
            warnings.warn("sync_bn=True applies to torchrun on CUDA only; ignored", stacklevel=3)
        return model

    def switch(self, model: nn.Module, method: Method) -> None:
        """channels-last memory format and compile, each only where it applies (else a warning)."""
        if self.cfg.channels_last:
            if self.channels_last:
                model.to(memory_format=torch.channels_last)
            else:
                warnings.warn("channels_last=True is used on CUDA only; ignored", stacklevel=3)
        if not self.cfg.compile:
            return
        if self.compiler is None and self.device.type != "cuda":
            warnings.warn(
                f"compile=True is used on CUDA only (device {self.device.type!r}); running "
                "uncompiled", stacklevel=3,
            )  # fmt: skip
            return
        compiler = self.compiler or torch.compile
        parts: dict[str, Any] = {}
        for name, module in method.compilable().items():
            try:
                parts[name] = compiler(module)
            except Exception as exc:  # unsupported platform, backend or module
                warnings.warn(f"torch.compile failed for {method.name} part {name!r} ({exc}); "
                              "that part runs uncompiled", stacklevel=3)  # fmt: skip
        method.use(parts)
        self.compiled = sorted(parts)

    def uncompile(self, method: Method, exc: Exception) -> None:
        """Fall back to eager execution after a compiled part failed (with a warning)."""
        warnings.warn(f"torch.compile failed during training ({type(exc).__name__}: {exc}); "
                      "running uncompiled from this batch on", stacklevel=3)  # fmt: skip
        method.use({})
        self.compiled = []

    def device_data(self, train_set: Dataset, views: int) -> DeviceData | None:
        """The training set on the device (device_data on, or auto on CUDA when it fits)."""
        cfg = self.cfg
        if cfg.device_data == "off" or views > 1:
            return None
        if cfg.device_data == "auto" and self.device.type != "cuda":
            return None
        try:
            data = DeviceData(train_set, "cpu", augment=cfg.augment)  # measured, then moved
        except ValueError:
            if cfg.device_data == "on":
                raise
            return None  # a dataset the device path does not know (auto: keep the loader)
        if cfg.device_data == "auto" and not fits_on_device(data.nbytes, self.device):
            return None
        data.to(self.device)
        return data

    # ------------------------------------------------------------------ one step
    def batches(self, train_set: Dataset, data: DeviceData | None, epoch: int) -> Any:
        """The epoch's training batches (seeded by the run's seed and the epoch)."""
        cfg = self.cfg
        if data is not None:
            return data.batches(cfg.batch_size, seed=cfg.seed, epoch=epoch)
        return make_loader(train_set, cfg.batch_size, seed=cfg.seed, epoch=epoch)

    def shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float, bool]:
        """(this rank's slice of the batch on the device, its labels, its weight, whether it
        counts); an empty slice still joins the all-reduce with weight 0."""
        weight, counted = 1.0, True
        if self.dist is not None:
            part = self.dist.shard(y.shape[0])
            if part.stop == part.start:
                part, counted = slice(0, 1), False
            weight = (part.stop - part.start) / y.shape[0] if counted else 0.0
            x, y = x[part], y[part]
        return x.to(self.device), y.to(self.device), weight, counted

    def autocast(self) -> AbstractContextManager[Any]:
        """Mixed precision around the forward pass (CUDA with amp), else nothing."""
        if self.amp:
            return torch.autocast(self.device.type, dtype=self.amp_dtype)
        return nullcontext()

    def inputs(self, x: Tensor) -> Tensor:
        """Stacked augmented views (N, V, ...) -> (V N, ...), in the memory format of the run."""
        if x.dim() == 5:
            x = torch.cat([x[:, v] for v in range(x.shape[1])])
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def backward(self, loss: Tensor, weight: float, check: Callable[[float], None]) -> None:
        """Backward of the (weighted, scaled) loss; in one process ``check`` sees the loss first."""
        if self.dist is None:
            check(loss.item())
            self.scaler.scale(loss).backward()
        else:
            self.scaler.scale(loss * weight).backward()

    def step(self, optimizer: torch.optim.Optimizer, loss: Tensor, weight: float,
             check: Callable[[float], None]) -> None:  # fmt: skip
        """All-reduce the gradients under torchrun (``check`` sees the summed loss), then step."""
        if self.dist is not None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            value = all_reduce_grads([p for p in params if p.grad is not None], loss * weight,
                                     self.dist)  # fmt: skip
            check(value)
        self.scaler.step(optimizer)
        self.scaler.update()

    def summed(self, *values: float) -> tuple[float, ...]:
        """Running sums over every torchrun rank (unchanged in one process)."""
        if self.dist is None:
            return values
        return tuple(self.dist.sum(list(values), self.device))
