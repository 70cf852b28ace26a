"""2 x 2 max-pooling that is fast on a CPU and equal, value and gradient, to ``nn.MaxPool2d(2)``.

torch's CPU max-pool kernel is slow on LeNet5's small maps: on a (64, 6, 28, 28) batch it took
1.1 ms at one thread, 17 % of a study run's time, where three elementwise maxima of the four
strided window views take 0.16 ms. :class:`MaxPool2x2` computes the maxima that way. When a
gradient is needed it also forms the flat index of each window's first maximum (in the window's
row-major order, which is the element ``nn.MaxPool2d`` picks among ties, such as the equal
activations of a blank background) and hands it to torch's own max-pool backward, so the gradients
are those of ``nn.MaxPool2d(2)`` to the bit. The one exception is a window holding a NaN: the value
is NaN as in torch, but its gradient goes to the window's last element, not to the NaN (a run whose
activations are NaN has diverged and stops). Other devices, odd sizes and non-contiguous inputs use
torch's kernel.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["MaxPool2x2", "max_pool2x2"]

#: [ours] with a gradient, inputs below this many elements use torch's kernel: at two threads its
#: backward pass beat the index arithmetic on LeNet5's second map (64 x 16 x 10 x 10)
GRAD_MIN_NUMEL = 1 << 17


def _windows(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four strided views of the 2 x 2 windows of a contiguous (N, C, H, W) ``x`` (H, W even),
    in the window's row-major order."""
    n, c, h, w = x.shape
    a = x.view(n, c, h // 2, 2, w // 2, 2)
    return a[:, :, :, 0, :, 0], a[:, :, :, 0, :, 1], a[:, :, :, 1, :, 0], a[:, :, :, 1, :, 1]


def _window_max(e: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    return torch.maximum(torch.maximum(e[0], e[1]), torch.maximum(e[2], e[3]))


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        e = _windows(x)
        y = _window_max(e)
        h, w = x.shape[-2:]
        # flat index (row * W + col) of the first maximum: offset 0, 1, W or W + 1 in the window
        base = torch.arange(0, h, 2, device=x.device)[:, None] * w
        base = base + torch.arange(0, w, 2, device=x.device)[None, :]
        idx = torch.ne(e[2], y).long().add_(w - 1).mul_(e[1] != y).add_(1).mul_(e[0] != y)
        ctx.save_for_backward(x, idx.add_(base))
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        x, idx = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx
        )


def max_pool2x2(x: Tensor) -> Tensor:
    """``F.max_pool2d(x, 2)`` of a 4-D tensor, through the fast path where it applies."""
    fast = (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.shape[-2] % 2 == 0
        and x.shape[-1] % 2 == 0
        and x.is_contiguous()
        and x.numel() > 0
    )
    if not fast:
        return F.max_pool2d(x, 2)
    if x.requires_grad and torch.is_grad_enabled():
        if x.numel() < GRAD_MIN_NUMEL:
            return F.max_pool2d(x, 2)
        return _MaxPool2x2.apply(x)
    return _window_max(_windows(x))


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` (the same module to any code that inspects it) computed by
    :func:`max_pool2x2`."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2x2(x)
