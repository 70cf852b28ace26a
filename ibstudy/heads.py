"""Auxiliary heads for layer-wise training (docs/method.md §7) and the shared feature pooling.

A block output (N, C, H, W) is average-pooled to the largest s x s grid (s <= min(H, W)) with
C*s*s <= ``max_features`` and flattened; a flat (N, F) output passes through unchanged. The same
pooling feeds the linear probes (section 9). A Bottleneck ResNet50's last block (2048 channels)
pools to 1x1 -> 2048 features; an input with more than ``max_features`` channels (or flat features)
cannot be pooled below the cap and raises ``ValueError``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

HEADS: tuple[str, ...] = ("linear", "mlp")


def _pool_side(channels: int, height: int, width: int, max_features: int) -> int:
    """Largest s <= min(height, width) with channels * s * s <= max_features (>= 1 or error)."""
    if channels > max_features:
        raise ValueError(
            f"a block output with {channels} channels cannot be pooled to at most "
            f"max_features={max_features} features; raise max_features"
        )
    return max(1, min(height, width, math.isqrt(max_features // channels)))


def _check_max_features(max_features: int) -> None:
    if isinstance(max_features, bool) or not isinstance(max_features, int) or max_features < 1:
        raise ValueError(f"max_features must be a positive integer, got {max_features!r}")


def pooled_size(shape: tuple[int, ...], max_features: int = 2048) -> int:
    """Number of features :func:`pool_features` produces for a per-sample ``shape`` (C,H,W) or (F,)."""
    _check_max_features(max_features)
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        if shape[0] > max_features:
            raise ValueError(f"flat features of size {shape[0]} exceed max_features={max_features}")
        return shape[0]
    if len(shape) == 3:
        c, h, w = shape
        s = _pool_side(c, h, w, max_features)
        return c * s * s
    raise ValueError(f"shape must be (C, H, W) or (F,), got {shape}")


def pool_features(z: Tensor, max_features: int = 2048) -> Tensor:
    """Adaptive-average-pool (N, C, H, W) to <= ``max_features`` features and flatten; (N, F) as is."""
    _check_max_features(max_features)
    if z.dim() == 2:
        if z.shape[1] > max_features:
            raise ValueError(
                f"flat features of size {z.shape[1]} exceed max_features={max_features}"
            )
        return z
    if z.dim() == 4:
        _, c, h, w = z.shape
        s = _pool_side(c, h, w, max_features)
        if (s, s) != (h, w):
            z = F.adaptive_avg_pool2d(z, s)
        return z.flatten(1)
    raise ValueError(f"z must have shape (N, C, H, W) or (N, F), got {tuple(z.shape)}")


class FeaturePool(nn.Module):
    """Module form of :func:`pool_features` (no parameters)."""

    def __init__(self, max_features: int = 2048) -> None:
        super().__init__()
        _check_max_features(max_features)
        self.max_features = max_features

    def forward(self, z: Tensor) -> Tensor:
        """Pool and flatten ``z``."""
        return pool_features(z, self.max_features)

    def extra_repr(self) -> str:
        """Shown by ``print(module)``."""
        return f"max_features={self.max_features}"


def build_head(
    kind: str, shape: tuple[int, ...], num_classes: int, max_features: int = 2048
) -> nn.Module:
    """Auxiliary head for a block with per-sample output ``shape``: pool, then linear or 2-layer MLP."""
    if kind not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    f = pooled_size(shape, max_features)
    if kind == "linear":
        return nn.Sequential(FeaturePool(max_features), nn.Linear(f, num_classes))
    return nn.Sequential(
        FeaturePool(max_features), nn.Linear(f, f), nn.ReLU(inplace=True), nn.Linear(f, num_classes)
    )
