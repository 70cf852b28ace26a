"""The fast 2 x 2 max-pool (ibstudy.pooling): values and gradients equal to nn.MaxPool2d(2)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ibstudy import pooling
from ibstudy.models import build_model
from ibstudy.pooling import MaxPool2x2, max_pool2x2


def _ties(*shape: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """ReLU of rounded normals: many windows hold equal values (zeros, and equal positives)."""
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(*shape, generator=g, dtype=dtype)).round().relu()


def _grads(pool, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    y = pool(x)
    y.backward(g)
    return y.detach(), x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(64, 6, 28, 28), (64, 16, 10, 10), (3, 2, 4, 6)])
def test_values_and_gradients_equal_torchs_to_the_bit_with_ties(shape, dtype, monkeypatch) -> None:
    monkeypatch.setattr(pooling, "GRAD_MIN_NUMEL", 0)  # the fast backward at every size
    x = _ties(*shape, seed=sum(shape), dtype=dtype)
    n, c, h, w = shape
    g = torch.randn(n, c, h // 2, w // 2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    y_ref, grad_ref = _grads(lambda t: F.max_pool2d(t, 2), x, g)
    with torch.no_grad():
        assert torch.equal(max_pool2x2(x), y_ref)
    y, grad = _grads(max_pool2x2, x, g)
    assert torch.equal(y, y_ref) and torch.equal(grad, grad_ref)
    # every window's gradient lands on one element, as torch's does (not split among ties)
    assert int((grad != 0).sum()) == int((g != 0).sum())


def test_the_index_path_picks_the_first_maximum_of_each_window(monkeypatch) -> None:
    # force the fast backward on a small input whose windows tie in every pattern
    monkeypatch.setattr(pooling, "GRAD_MIN_NUMEL", 0)
    patterns = torch.tensor([[a, b, c, d] for a in (0, 1) for b in (0, 1) for c in (0, 1)
                             for d in (0, 1)], dtype=torch.float32)  # fmt: skip
    x = patterns.view(16, 1, 2, 2).repeat(1, 1, 2, 3)  # (16, 1, 4, 6)
    g = torch.arange(1.0, 1 + 16 * 6).view(16, 1, 2, 3)
    y_ref, grad_ref = _grads(lambda t: F.max_pool2d(t, 2), x, g)
    y, grad = _grads(max_pool2x2, x, g)
    assert torch.equal(y, y_ref) and torch.equal(grad, grad_ref)


def test_nan_propagates_and_other_inputs_use_torchs_kernel() -> None:
    x = torch.randn(2, 3, 6, 8)
    x[0, 1, 2, 3] = float("nan")
    torch.testing.assert_close(max_pool2x2(x), F.max_pool2d(x, 2), rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(max_pool2x2(x)[0, 1, 1, 1])
    for other in (torch.randn(2, 3, 7, 9), torch.randn(2, 3, 8, 6).transpose(2, 3),
                  torch.randn(3, 8, 8)):  # fmt: skip
        assert torch.equal(max_pool2x2(other), F.max_pool2d(other, 2))


def test_lenet5_uses_it_and_it_is_a_maxpool2d() -> None:
    model = build_model("lenet5", num_classes=10, in_channels=1, image_size=28)
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(isinstance(m, MaxPool2x2) for m in pools)
    assert pools[0].kernel_size == 2 and pools[0].stride == 2
