"""Tests of nhsic's fast path: the recursive SPD inverse, its float64 agreement, one data pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_hsic import _pair, _randn, ref_nhsic

from ibstudy import hsic as H
from ibstudy.hsic import center, nhsic

HIDDEN_CASES = [
    (16, (1, 4, 4), "gaussian", "gaussian"),
    (50, (3, 5, 5), "gaussian", "linear"),
    (96, (2, 8, 8), "gaussian_median", "gaussian"),
    (130, (3, 4, 6), "linear", "gaussian_median"),
]


def _spd(m: int, rank: int, ridge: float, seed: int) -> torch.Tensor:
    """A low-rank PSD matrix plus a small ridge: condition number about ``m / ridge``."""
    f = _randn(m, rank, seed=seed)
    return f @ f.T / rank * m / rank + ridge * torch.eye(m, dtype=torch.float64)


@pytest.mark.parametrize("leaf", [H.INVERSE_LEAF, 16, 5])
@pytest.mark.parametrize("m", [7, 300, 600, 1000])
def test_spd_halves_is_the_inverse_and_the_factor(monkeypatch, leaf, m):
    monkeypatch.setattr(H, "INVERSE_LEAF", leaf)
    a = _spd(m, rank=m // 3 + 1, ridge=1e-2, seed=m)
    halves = H._spd_halves(a.clone(), with_factor=True)
    assert halves is not None and halves.u is not None
    ref = torch.linalg.inv(a)
    inv = halves.dense()
    assert float((inv - ref).abs().max() / ref.abs().max()) < 1e-11
    assert halves.trace() == pytest.approx(float(ref.trace()), rel=1e-12)
    torch.testing.assert_close(halves.u.mT @ halves.u, a, rtol=0, atol=1e-11 * float(a.max()))
    assert torch.equal(halves.u, halves.u.triu())
    # in blocks (the top of nhsic's recursion): the same matrix and the same inner products
    top = H._spd_halves(a.clone(), with_factor=False, dense=False)
    assert top is not None
    torch.testing.assert_close(top.dense(), inv, rtol=0, atol=1e-12 * float(ref.abs().max()))
    assert H._inner_halves(top, top) == pytest.approx(float((ref * ref).sum()), rel=1e-11)


def test_spd_halves_refuses_a_matrix_that_is_not_positive_definite(monkeypatch):
    monkeypatch.setattr(H, "INVERSE_LEAF", 8)
    q, _ = torch.linalg.qr(_randn(40, 40, seed=3))
    for bad in (0, 39):  # the negative eigenvalue in the first half, then in the Schur complement
        lam = torch.linspace(1.0, 2.0, 40, dtype=torch.float64)
        lam[bad] = -0.5
        a = (q * lam) @ q.T
        assert H._spd_halves(a, with_factor=False) is None


@pytest.mark.parametrize("leaf", [H.INVERSE_LEAF, 8, 5])
def test_nhsic_matches_the_float64_reference_below_1e9_on_every_path(monkeypatch, leaf):
    # the hidden cases of test_hsic, with the recursion forced down to tiny leaves
    monkeypatch.setattr(H, "INVERSE_LEAF", leaf)
    for m, shape, kernel_a, kernel_b in HIDDEN_CASES:
        a, b = _pair(m, shape, seed=m)
        for eps in (1e-5, 1e-2):
            ours = nhsic(a, b, kernel_a=kernel_a, kernel_b=kernel_b, eps=eps)
            ref = ref_nhsic(a.numpy(), b.numpy(), kernel_a, kernel_b, eps=eps)
            assert abs(ours / ref - 1) < 1e-9, (m, kernel_a, kernel_b, eps)


@pytest.mark.parametrize("kernel_b", ["gaussian", "linear"])
def test_nhsic_above_the_leaf_matches_the_float64_reference(kernel_b):
    # m = 600 > INVERSE_LEAF: the default recursion; labels give a rank-9 Gram (ill-conditioned)
    m = 600
    a = _randn(m, 2, 3, 3, seed=7)
    b = (
        torch.arange(m) % 10
        if kernel_b == "linear"
        else torch.tanh(a.reshape(m, -1) @ _randn(18, 6, seed=8))
    )
    assert m > H.INVERSE_LEAF
    for eps in (1e-5, 1e-2):
        ours = nhsic(a, b, kernel_b=kernel_b, sigma=1.0, eps=eps)
        ref = ref_nhsic(a.numpy(), b.numpy(), "gaussian", kernel_b, sigma=1.0, eps=eps)
        assert abs(ours / ref - 1) < 1e-9 and ref > 0.1


def test_each_input_is_read_once_by_the_checks(monkeypatch):
    # one data pass per tensor (finiteness and the float32 overflow guard share it)
    calls = []
    real = H._max_abs
    monkeypatch.setattr(H, "_max_abs", lambda x: calls.append(x.shape) or real(x))
    a, b = _pair(40, (2, 3, 3), seed=9)
    nhsic(a.float(), b.float())
    assert calls == [a.shape, b.shape]


def test_huge_float32_inputs_are_computed_in_float64():
    # beyond FLOAT32_SAFE_MAX squared norms overflow in float32: the magnitude the check measured
    # sends the input to float64, so the value is that of the rescaled input (the kernel is not
    # scale invariant, so compare with float64 input of the same values)
    a, b = _pair(32, (2, 3, 3), seed=10)
    big = (a * 1e17).float()
    assert float(big.abs().max()) > H.FLOAT32_SAFE_MAX
    value = nhsic(big, b.float())
    assert np.isfinite(value)
    assert value == pytest.approx(nhsic(big.double(), b.float()), rel=1e-12)
    with pytest.raises(ValueError, match="a contains NaN or Inf"):
        nhsic(torch.full((8, 3), float("inf")), b[:8])


@pytest.mark.parametrize("leaf", [H.INVERSE_LEAF, 16])
@pytest.mark.parametrize("m", [300, 1000])
def test_spd_halves_reads_only_the_entries_on_and_above_the_diagonal(monkeypatch, leaf, m):
    # nhsic hands the recursion a ridged Gram whose entries below the diagonal are never set
    monkeypatch.setattr(H, "INVERSE_LEAF", leaf)
    a = _spd(m, rank=m // 3 + 1, ridge=1e-2, seed=m + 1)
    poisoned = a.clone()
    below = torch.ones(m, m, dtype=torch.bool).tril(-1)
    poisoned[below] = float("nan")
    full = H._spd_halves(a.clone(), with_factor=False, dense=False)
    upper = H._spd_halves(poisoned, with_factor=False, dense=False)
    assert full is not None and upper is not None
    assert torch.equal(full.dense(), upper.dense())
    assert H._inner_halves(full, full) == H._inner_halves(upper, upper)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m,d", [(50, 3), (300, 1000), (257, 2000), (1030, 16)])
def test_ridged_gaussian_is_the_centred_gram_on_and_above_the_diagonal(m, d, dtype):
    # one block of rows (50 x 3) and the CPU's upper row blocks, uneven ones too
    x = _randn(m, d, seed=m, dtype=dtype)
    c = 1e-5 * m
    ours = H._ridged_gaussian_upper(x, 5.0, c)
    ref = center(H.gaussian(x, 5.0))
    ref.diagonal().add_(c)
    upper = torch.ones(m, m, dtype=torch.bool).triu()
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours[upper], ref[upper], rtol=0, atol=1e-14)


@pytest.mark.parametrize("m,d", [(300, 1000), (1030, 16)])
def test_nhsic_from_upper_row_blocks_matches_the_float64_reference(m, d):
    # sizes where the Gaussian Gram comes in upper row blocks and the inverse recurses
    a = _randn(m, d, seed=m + 2)
    b = torch.tanh(a @ _randn(d, 5, seed=m + 3) / d**0.5)
    h = np.eye(m) - 1.0 / m

    def ref_r(x: torch.Tensor, eps: float) -> np.ndarray:
        k = torch.exp(-torch.cdist(x, x).square() / (2 * x.shape[1])).numpy()  # sigma 1
        g = h @ k @ h
        return np.linalg.solve(g + eps * m * np.eye(m), g)

    for eps in (1e-5, 1e-2):
        ref = float(np.sum(ref_r(a, eps) * ref_r(b, eps).T))
        assert abs(nhsic(a, b, sigma=1.0, eps=eps) / ref - 1) < 1e-9 and ref > 0.1
