"""Tests for ibstudy.heads: pooling sizes, head sizes for every model's blocks, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from ibstudy.heads import HEADS, build_head, pool_features, pooled_size
from ibstudy.models import MODELS, build_model


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((6, 28, 28), 6 * 18 * 18),  # isqrt(2048 // 6) = 18
        ((64, 32, 32), 64 * 5 * 5),  # isqrt(32) = 5
        ((256, 32, 32), 256 * 2 * 2),  # Bottleneck layer1: isqrt(8) = 2
        ((512, 16, 16), 512 * 2 * 2),
        ((1024, 8, 8), 1024),  # isqrt(2) = 1
        ((2048, 4, 4), 2048),  # Bottleneck layer4 -> 1x1 -> 2048
        ((16, 5, 5), 400),  # small map: s capped by H
        ((3, 2, 2), 12),
        ((120,), 120),
        ((2048,), 2048),
    ],
)
def test_pooled_size_known_values(shape: tuple[int, ...], expected: int) -> None:
    assert pooled_size(shape) == expected
    z = torch.randn(2, *shape)
    assert pool_features(z).shape == (2, expected)


def test_pool_side_is_the_largest_allowed() -> None:
    for c in [1, 3, 6, 16, 64, 100, 128, 256, 512, 1000, 2048]:
        f = pooled_size((c, 64, 64))
        s = math.isqrt(f // c)
        assert c * s * s == f <= 2048
        assert c * (s + 1) ** 2 > 2048  # one more row/column would exceed the cap


def test_pool_features_values() -> None:
    z = torch.arange(2 * 512 * 4 * 4, dtype=torch.float64).reshape(2, 512, 4, 4)
    out = pool_features(z)  # 512 * 2 * 2 = 2048: average over 2x2 patches
    expected = z.reshape(2, 512, 2, 2, 2, 2).mean(dim=(3, 5)).flatten(1)
    torch.testing.assert_close(out, expected)
    flat = torch.randn(4, 84)
    assert pool_features(flat) is flat  # flat features pass through unchanged
    small = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(pool_features(small), small.flatten(1))  # no pooling needed
    torch.testing.assert_close(pool_features(z, max_features=512), z.mean(dim=(2, 3)))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("kind", HEADS)
def test_heads_for_every_block(name: str, kind: str) -> None:
    width = 1.0 if name in ("lenet5", "resnet50") else 0.25
    model = build_model(name, 10, 3, 32, width=width)
    shapes = model.block_output_shapes(3, 32)
    if name == "resnet50":  # full-width Bottleneck: 256..2048 channels, last block 2048 -> 1x1
        assert shapes[-1] == (2048, 4, 4) and pooled_size(shapes[-1]) == 2048
    for shape in shapes:
        f = pooled_size(shape)
        assert 1 <= f <= 2048
        head = build_head(kind, shape, 10)
        first = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][0]
        assert first.in_features == f
        out = head(torch.randn(2, *shape))
        assert out.shape == (2, 10)


def test_mlp_vs_linear_param_count() -> None:
    for shape in [(64, 32, 32), (2048, 4, 4), (84,)]:
        f, c = pooled_size(shape), 10
        lin = build_head("linear", shape, c)
        mlp = build_head("mlp", shape, c)
        assert _n_params(lin) == f * c + c
        assert _n_params(mlp) == f * f + f + f * c + c
        assert _n_params(mlp) > _n_params(lin)


def test_head_gradient_reaches_block_output() -> None:
    z = torch.randn(3, 256, 8, 8, requires_grad=True)
    build_head("mlp", (256, 8, 8), 5)(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"head must be one of \('linear', 'mlp'\), got 'conv'"):
        build_head("conv", (16, 5, 5), 10)
    with pytest.raises(ValueError, match="num_classes"):
        build_head("linear", (16, 5, 5), 0)
    with pytest.raises(ValueError, match="4096 channels"):
        pooled_size((4096, 2, 2))
    with pytest.raises(ValueError, match="max_features"):
        pool_features(torch.randn(2, 3000))
    with pytest.raises(ValueError, match="shape"):
        pooled_size((3, 4))
    with pytest.raises(ValueError, match="z must have shape"):
        pool_features(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="max_features"):
        pool_features(torch.randn(2, 3, 4, 4), max_features=0)
