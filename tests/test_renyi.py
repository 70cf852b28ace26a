"""Tests for ibstudy.renyi: the matrix-based Rényi alpha-order entropy and mutual information."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import np_gaussian_gram, np_renyi_entropy

from ibstudy.hsic import gaussian
from ibstudy.renyi import (
    DEFAULT_ALPHA,
    normalized_gram,
    renyi_entropy,
    renyi_floor,
    renyi_joint_entropy,
    renyi_mi,
    renyi_mi_from_data,
)

M = 128


def _samples(seed: int = 0, m: int = M, d: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, d, generator=g, dtype=torch.float64)
    z = torch.randn(m, d, generator=g, dtype=torch.float64)
    return x, z


# ------------------------------------------------------------------------------------ reference
def _np_mi(kx: np.ndarray, kz: np.ndarray, alpha: float) -> float:
    ax, az = kx / np.trace(kx), kz / np.trace(kz)
    return (
        np_renyi_entropy(ax, alpha) + np_renyi_entropy(az, alpha) - np_renyi_entropy(ax * az, alpha)
    )


@pytest.mark.parametrize("alpha", [0.5, DEFAULT_ALPHA, 2.0, 3.0])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 5.0])
def test_agrees_with_a_float64_numpy_reference(alpha, sigma):
    x, z = _samples(1, m=64, d=7)
    z = z + x  # dependent, so the value is not near zero
    kx, kz = np_gaussian_gram(x.numpy(), sigma), np_gaussian_gram(z.numpy(), sigma)
    expected = _np_mi(kx, kz, alpha)
    assert renyi_mi_from_data(x, z, sigma, alpha) == pytest.approx(expected, rel=1e-9, abs=1e-10)
    assert renyi_entropy(torch.from_numpy(kx), alpha) == pytest.approx(
        np_renyi_entropy(kx, alpha), rel=1e-10, abs=1e-12
    )
    # float32 input: its squared distances come from a float32 matmul (nHSIC's Grams do too), the
    # kernel and eigenvalues are float64: agreement to 1e-6 (a kernel rounded to float32 is ~1e-4 off)
    got32 = renyi_mi_from_data(x.float(), z.float(), sigma, alpha)
    ref32 = _np_mi(
        np_gaussian_gram(x.float().numpy(), sigma),
        np_gaussian_gram(z.float().numpy(), sigma),
        alpha,
    )
    assert got32 == pytest.approx(ref32, rel=1e-6, abs=1e-10)


def test_uses_the_nhsic_kernel_width_rule():
    """sigma * sqrt(d): the same Gram as ibstudy.hsic.gaussian, so the same entropy."""
    x, _ = _samples(2, d=12)
    for sigma in (1.0, 5.0):
        k = gaussian(x, sigma)
        assert renyi_mi_from_data(x, x, sigma) == pytest.approx(renyi_mi(k, k), abs=1e-12)


# ------------------------------------------------------------------------------------ known cases
@pytest.mark.parametrize("n", [1, 2, 7, 64])
@pytest.mark.parametrize("alpha", [0.5, DEFAULT_ALPHA, 2.0, 10.0])
def test_entropy_of_the_identity_over_n_is_log2_n(n, alpha):
    a = torch.eye(n, dtype=torch.float64) / n
    assert renyi_entropy(a, alpha) == pytest.approx(math.log2(n), abs=1e-10)
    assert renyi_entropy(torch.eye(n), alpha) == pytest.approx(math.log2(n), abs=1e-10)


def test_entropy_of_a_rank_one_gram_is_zero():
    assert renyi_entropy(torch.ones(16, 16)) == pytest.approx(0.0, abs=1e-10)


def test_order_two_entropy_is_minus_log2_of_the_frobenius_norm():
    """S_2(A) = -log2 sum lambda^2 = -log2 ||A||_F^2: a closed form without eigenvalues."""
    x, _ = _samples(3)
    a = normalized_gram(gaussian(x, 1.0))
    assert renyi_entropy(a, 2.0) == pytest.approx(-math.log2(float(a.square().sum())), rel=1e-10)


@pytest.mark.parametrize("alpha", [0.5, DEFAULT_ALPHA, 2.0])
def test_mi_of_labels_with_themselves_is_their_entropy(alpha):
    """I(X;X) = S(X) exactly for a 0/1 Gram (A o A is A up to scale): balanced 4 classes, 2 bits."""
    y = torch.arange(M) % 4
    kwargs = dict(alpha=alpha, kernel_x="linear", kernel_z="linear")
    s = renyi_entropy((y[:, None] == y[None, :]).double(), alpha)
    assert s == pytest.approx(2.0, abs=1e-10)
    assert renyi_mi_from_data(y, y, **kwargs) == pytest.approx(s, abs=1e-10)


def test_mi_of_a_sample_with_itself_is_its_entropy_at_narrow_width():
    """I(X;X) = 2 S(A) - S(A o A): S(X) where the Gram is near 0/1 (narrow kernel: A ~ I / n)."""
    x, _ = _samples(4)
    sigma = 0.05
    s = renyi_entropy(gaussian(x, sigma))
    assert renyi_mi_from_data(x, x, sigma) == pytest.approx(s, abs=1e-4)
    assert s == pytest.approx(math.log2(M), abs=1e-4)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 5.0])
def test_mi_of_a_sample_with_itself_is_at_most_its_entropy(sigma):
    """For a Gaussian Gram A o A is a narrower Gram, S(A o A) >= S(A), so 0 <= I(X;X) <= S(X)."""
    x, _ = _samples(5)
    k = gaussian(x, sigma)
    s, i = renyi_entropy(k), renyi_mi(k, k)
    assert 0.0 < i <= s + 1e-10
    assert renyi_joint_entropy(k, k) >= s - 1e-10


def test_mi_is_symmetric_and_permutation_invariant():
    x, z = _samples(6)
    z = torch.tanh(x @ torch.ones(5, 3, dtype=torch.float64)) + 0.3 * z[:, :3]
    value = renyi_mi_from_data(x, z, 1.0)
    assert renyi_mi_from_data(z, x, 1.0) == pytest.approx(value, abs=1e-12)
    perm = torch.randperm(M, generator=torch.Generator().manual_seed(0))
    assert renyi_mi_from_data(x[perm], z[perm], 1.0) == pytest.approx(value, abs=1e-10)
    # shuffling one side only breaks the pairing: the value falls towards the floor
    assert renyi_mi_from_data(x, z[perm], 1.0) < value - 0.1


@pytest.mark.parametrize("sigma", [1.0, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_independent_samples_are_at_the_floor(sigma, seed):
    x, z = _samples(seed)
    ixz = renyi_mi_from_data(x, z, sigma)
    floor = renyi_floor(x, z, perms=10, seed=seed, sigma=sigma)
    ixx = renyi_mi_from_data(x, x, sigma)
    assert abs(ixz - floor) < 0.1 * (ixx - floor)  # at the floor: far below I(X;X)
    dependent = renyi_mi_from_data(x, x + 0.1 * z, sigma)
    assert dependent - floor > 0.5 * (ixx - floor)  # a dependent pair stands well above it


def test_floor_is_reproducible_and_averages_its_permutations():
    x, z = _samples(7)
    assert renyi_floor(x, z, perms=3, seed=5) == renyi_floor(x, z, perms=3, seed=5)
    assert renyi_floor(x, z, perms=3, seed=5) != renyi_floor(x, z, perms=3, seed=6)
    gen = torch.Generator().manual_seed(5)
    perms = [torch.randperm(M, generator=gen) for _ in range(3)]
    expected = sum(renyi_mi_from_data(x, z[p]) for p in perms) / 3
    assert renyi_floor(x, z, perms=3, seed=5) == pytest.approx(expected, abs=1e-12)


def test_labels_against_a_representation():
    """I(Y;Z) from class labels (the nHSIC plane's linear label kernel) is above its floor."""
    y = torch.arange(M) % 4
    x, noise = _samples(8, d=4)
    z = torch.nn.functional.one_hot(y, 4).double() + 0.2 * noise
    i = renyi_mi_from_data(y, z, 1.0, kernel_x="linear")
    floor = renyi_floor(y, z, perms=5, sigma=1.0, kernel_x="linear")
    assert floor < i <= 2.0 + 1e-9


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("alpha", [0, 0.0, -1.0, 1, 1.0, float("nan"), float("inf"), True, "2"])
def test_alpha_must_be_positive_and_not_one(alpha):
    x, z = _samples(9, m=8)
    k = gaussian(x)
    with pytest.raises(ValueError, match="alpha"):
        renyi_entropy(k, alpha)
    with pytest.raises(ValueError, match="alpha"):
        renyi_mi(k, k, alpha)
    with pytest.raises(ValueError, match="alpha"):
        renyi_joint_entropy(k, k, alpha)
    with pytest.raises(ValueError, match="alpha"):
        renyi_mi_from_data(x, z, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        renyi_floor(x, z, alpha=alpha)


def test_alpha_one_names_the_shannon_limit():
    with pytest.raises(ValueError, match=r"alpha must be > 0 and != 1.*Shannon"):
        renyi_entropy(torch.eye(4), 1.0)


def test_bad_grams_and_samples_are_refused():
    x, z = _samples(10, m=8)
    with pytest.raises(ValueError, match="square"):
        renyi_entropy(torch.ones(3, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        renyi_entropy(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match="positive trace"):
        renyi_entropy(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="same samples"):
        renyi_mi(torch.eye(3), torch.eye(4))
    with pytest.raises(ValueError, match="same number of samples"):
        renyi_mi_from_data(x, z[:6])
    with pytest.raises(ValueError, match="sigma"):
        renyi_mi_from_data(x, z, sigma=0.0)
    with pytest.raises(ValueError, match="perms"):
        renyi_floor(x, z, perms=0)
    with pytest.raises(ValueError, match="seed"):
        renyi_floor(x, z, seed=-1)
    with pytest.raises(ValueError, match="kernel_x"):
        renyi_mi_from_data(x, z, kernel_x="cosine")
