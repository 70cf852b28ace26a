"""Tests for ibstudy.losses against float64 reference loops and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ibstudy.hsic import hsic
from ibstudy.losses import (
    LOCAL_LOSSES,
    cross_entropy,
    kernel_mass,
    same_class_share,
    similarity_matching_loss,
    snn_hsic_identity,
    snn_loss,
    sq_dists,
    supcon_loss,
)


def _sq_dists_ref(z: torch.Tensor) -> torch.Tensor:
    """||z_i - z_j||^2 by an explicit double loop over the flattened rows (float64 reference)."""
    z = z.double().flatten(1)
    m = z.shape[0]
    d = torch.empty(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(m):
            d[i, j] = float(((z[i] - z[j]) ** 2).sum())
    return d


def _gauss_gram(z: torch.Tensor, t: float) -> torch.Tensor:
    """exp(-||z_i - z_j||^2 / t) by an explicit double loop (float64 reference)."""
    z = z.double().flatten(1)
    m = z.shape[0]
    k = torch.empty(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(m):
            k[i, j] = math.exp(-float(((z[i] - z[j]) ** 2).sum()) / t)
    return k


def _shares_ref(z: torch.Tensor, y: torch.Tensor, t: float) -> torch.Tensor:
    k = _gauss_gram(z, t)
    m = k.shape[0]
    r = torch.empty(m, dtype=torch.float64)
    for i in range(m):
        num = sum(float(k[i, j]) for j in range(m) if j != i and y[j] == y[i])
        den = sum(float(k[i, j]) for j in range(m) if j != i)
        r[i] = num / den
    return r


def _supcon_ref(z1, z2, y, t, bt) -> float:
    f = torch.cat([z1.flatten(1), z2.flatten(1)]).double()
    f = f / f.norm(dim=1, keepdim=True)
    labels = torch.cat([y, y]).tolist()
    n = f.shape[0]
    total = 0.0
    for i in range(n):
        den = sum(math.exp(float(f[i] @ f[a]) / t) for a in range(n) if a != i)
        pos = [p for p in range(n) if p != i and labels[p] == labels[i]]
        s = sum(math.log(math.exp(float(f[i] @ f[p]) / t) / den) for p in pos)
        total += -(t / bt) * s / len(pos)
    return total / n


def test_local_losses_names() -> None:
    assert LOCAL_LOSSES == ("cross_entropy", "supcon", "similarity_matching")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sq_dists_matches_float64_loop(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(7)
    # an offset far from the origin: ||u||^2 + ||v||^2 - 2 u.v cancels, the diagonal would not be 0
    z = (torch.randn(15, 2, 3, generator=g, dtype=torch.float64) * 2 + 40).to(dtype)
    d = sq_dists(z)
    assert d.dtype == dtype and d.shape == (15, 15)
    assert torch.equal(d.diagonal(), torch.zeros(15, dtype=dtype))  # exactly 0
    assert bool((d >= 0).all())
    ref = _sq_dists_ref(z)
    if dtype == torch.float64:
        torch.testing.assert_close(d, ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(d, d.T, rtol=0, atol=1e-9)
    else:  # cancellation against ||z||^2 ~ 1e4: absolute error of a few float32 ulps of 1e4
        torch.testing.assert_close(d, ref.float(), rtol=1e-4, atol=2e-2)
        torch.testing.assert_close(d, d.T, rtol=0, atol=2e-2)


def test_sq_dists_known_values_and_bad_input() -> None:
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    expected = torch.tensor([[0.0, 25.0, 1.0], [25.0, 0.0, 18.0], [1.0, 18.0, 0.0]])
    torch.testing.assert_close(sq_dists(z), expected.double(), rtol=0, atol=1e-12)
    assert torch.equal(sq_dists(torch.ones(4, 3)), torch.zeros(4, 4))  # identical rows
    with pytest.raises(ValueError, match="shape"):
        sq_dists(torch.ones(3))


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_kernel_mass_matches_float64_loop(t: float) -> None:
    g = torch.Generator().manual_seed(8)
    z = torch.randn(11, 3, generator=g, dtype=torch.float64)
    k = _gauss_gram(z, t)
    ref = [sum(float(k[i, j]) for j in range(11) if j != i) / 10 for i in range(11)]
    torch.testing.assert_close(
        kernel_mass(z, t), torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-15
    )  # atol: kernel values of far points underflow differently in the two forms (~1e-19)
    assert kernel_mass(z.float(), t).dtype == torch.float32
    with pytest.raises(ValueError, match="temperature"):
        kernel_mass(z, 0.0)
    with pytest.raises(ValueError, match="N >= 2"):
        kernel_mass(z[:1], t)


def test_cross_entropy_known_values() -> None:
    assert cross_entropy(torch.zeros(4, 5), torch.tensor([0, 1, 2, 3])).item() == pytest.approx(
        math.log(5)
    )
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    expected = 0.5 * (-math.log(math.e**2 / (math.e**2 + 1)) - math.log(math.e / (1 + math.e)))
    assert cross_entropy(logits, torch.tensor([0, 1])).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t", [0.5, 1.0, 3.0])
def test_snn_matches_float64_loop(t: float) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(12, 2, 3, generator=g)
    y = torch.tensor([0, 1, 2] * 4)
    r_ref = _shares_ref(z, y, t)
    torch.testing.assert_close(same_class_share(z.double(), y, t), r_ref)
    torch.testing.assert_close(same_class_share(z, y, t), r_ref.float(), rtol=1e-4, atol=1e-6)
    assert snn_loss(z, y, t).item() == pytest.approx(-float(r_ref.log().mean()), rel=1e-4)


def test_snn_hand_computed_three_points() -> None:
    # four points on a line, classes (0, 0, 1, 1), T = 1: K_ij = exp(-d_ij^2)
    z = torch.tensor([[0.0], [1.0], [3.0], [3.5]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    k = lambda d: math.exp(-(d**2))  # noqa: E731
    r0 = k(1) / (k(1) + k(3) + k(3.5))
    r1 = k(1) / (k(1) + k(2) + k(2.5))
    r2 = k(0.5) / (k(0.5) + k(3) + k(2))
    r3 = k(0.5) / (k(0.5) + k(3.5) + k(2.5))
    expected = -(math.log(r0) + math.log(r1) + math.log(r2) + math.log(r3)) / 4
    assert snn_loss(z, y).item() == pytest.approx(expected, rel=1e-12)


def test_snn_separated_clusters_near_zero_and_mixed_is_large() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0] * 8 + [1] * 8)
    centers = torch.tensor([[-10.0, 0.0], [10.0, 0.0]])
    z = centers[y] + 0.1 * torch.randn(16, 2, generator=g)
    assert snn_loss(z, y).item() < 1e-6
    assert same_class_share(z, y).min().item() > 1 - 1e-6
    # labels that ignore the clusters: the loss is near log 2-ish, far from 0
    y_mixed = torch.tensor([0, 1] * 8)
    assert snn_loss(z, y_mixed).item() > 0.3
    # huge distances do not overflow (logsumexp): far clusters, small temperature
    assert torch.isfinite(snn_loss(z * 1e3, y_mixed, temperature=1e-3))


def test_snn_singleton_left_out_and_gradient_finite() -> None:
    z = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2])  # class 2 has no partner
    loss = snn_loss(z, y)
    ref = -same_class_share(z, y)[:4].log().mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert same_class_share(z, y)[4].item() == 0.0
    loss.backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="two samples of one class"):
        snn_loss(torch.randn(3, 2), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("t", [0.5, 2.0])
def test_hsic_snn_identity_balanced_classes(t: float) -> None:
    """tr(K H L H) = sum_i D_i (rbar_i - 1/C) = sum_i D'_i (r_i - 1/C) + m (1 - 1/C), exactly.

    K_ij = exp(-||z_i - z_j||^2 / T) (K_ii = 1), L = Y Y^T one-hot, balanced classes so that
    (HLH)_ij = L_ij - 1/C. D_i is the full row sum (diagonal included) and rbar_i the same-class
    share of it (j = i counted); D'_i = D_i - 1 is the off-diagonal row sum and r_i the SNN share.
    """
    g = torch.Generator().manual_seed(3)
    c, per = 3, 5
    m = c * per
    y = torch.arange(c).repeat_interleave(per)[torch.randperm(m, generator=g)]
    z = torch.randn(m, 4, generator=g, dtype=torch.float64)
    k = _gauss_gram(z, t)
    yy = torch.nn.functional.one_hot(y, c).double()
    lab = yy @ yy.T
    h = torch.eye(m, dtype=torch.float64) - 1.0 / m
    lhs = torch.trace(k @ h @ lab @ h).item()
    # (HLH)_ij = L_ij - 1/C for balanced classes
    torch.testing.assert_close(h @ lab @ h, lab - 1.0 / c)
    d = k.sum(dim=1)
    rbar = (k * lab).sum(dim=1) / d
    assert lhs == pytest.approx(float((d * (rbar - 1.0 / c)).sum()), rel=1e-10)
    r = same_class_share(z, y, t)
    rhs = float(((d - 1.0) * (r - 1.0 / c)).sum()) + m * (1 - 1.0 / c)
    assert lhs == pytest.approx(rhs, rel=1e-10)
    out = snn_hsic_identity(z, y, t)
    for key in ("lhs", "rhs", "rhs_full"):
        assert out[key] == pytest.approx(lhs, rel=1e-10)
    torch.testing.assert_close(kernel_mass(z, t), (d - 1.0) / (m - 1))


# the identity tr(K H L H) = sum_i D'_i (r_i - 1/C) + m (1 - 1/C), via snn_hsic_identity
def _balanced(m: int, c: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(m) % c
    z = torch.randn(m, d, generator=gen, dtype=torch.float64) + y[:, None].double()
    return z, y


@pytest.mark.parametrize(("m", "c", "d", "t"), [(64, 2, 2, 1.0), (90, 3, 5, 0.5), (40, 4, 1, 3.0)])
def test_snn_hsic_identity_on_random_data(m: int, c: int, d: int, t: float) -> None:
    z, y = _balanced(m, c, d, seed=m)
    out = snn_hsic_identity(z, y, t)
    assert out["abs_diff"] < 1e-8
    assert out["lhs"] == pytest.approx(out["rhs"], rel=1e-12)
    assert out["num_classes"] == c and out["m"] == m
    # the same number from the study's HSIC estimator with the matching Gaussian bandwidth
    sigma = math.sqrt(t / (2 * d))
    ref = hsic(z, y, kernel_a="gaussian", kernel_b="linear", sigma=sigma)
    assert out["hsic"] == pytest.approx(ref, rel=1e-10)
    assert out["snn_loss"] == pytest.approx(float(snn_loss(z, y, t)), rel=1e-12)


def test_snn_hsic_identity_known_values() -> None:
    """Two tight pairs at distance a: lhs = 4 (1 - q), L_SNN = log(1 + 2q), q = exp(-a^2 / T)."""
    a, t = 1.5, 2.0
    z = torch.tensor([[0.0], [0.0], [a], [a]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    q = math.exp(-(a**2) / t)
    out = snn_hsic_identity(z, y, t)
    assert out["lhs"] == pytest.approx(4 * (1 - q), rel=1e-12)
    assert out["rhs"] == pytest.approx(4 * (1 - q), rel=1e-12)
    assert out["snn_loss"] == pytest.approx(math.log(1 + 2 * q), rel=1e-12)
    assert out["mean_r"] == pytest.approx(1 / (1 + 2 * q), rel=1e-12)


def test_snn_hsic_identity_jensen_on_random_data() -> None:
    for seed in range(5):
        z, y = _balanced(50, 2, 3, seed)
        out = snn_hsic_identity(z, y, 1.0)
        assert out["mean_r"] >= out["exp_neg_snn"]
        assert 0.0 < out["exp_neg_snn"] < 1.0


def test_snn_hsic_identity_rejects_unbalanced_or_bad_input() -> None:
    z = torch.randn(6, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="balanced"):
        snn_hsic_identity(z, torch.tensor([0, 0, 0, 0, 1, 1]), 1.0)
    for bad in (0.0, -1.0, math.inf, math.nan, True):
        with pytest.raises(ValueError, match="temperature"):
            snn_hsic_identity(z, torch.tensor([0, 1, 0, 1, 0, 1]), bad)
    with pytest.raises(ValueError, match="integer"):
        snn_hsic_identity(z, torch.tensor([0.0, 1, 0, 1, 0, 1]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        snn_hsic_identity(torch.randn(6), torch.tensor([0, 1, 0, 1, 0, 1]), 1.0)


def test_jensen_mean_share_at_least_exp_minus_snn() -> None:
    g = torch.Generator().manual_seed(4)
    for trial in range(5):
        z = torch.randn(20, 3, generator=g) * (trial + 1)
        y = torch.randint(0, 3, (20,), generator=g)
        y[:6] = torch.tensor([0, 0, 1, 1, 2, 2])  # every class has a partner: no r_i = 0
        r = same_class_share(z, y)
        assert r.mean().item() >= math.exp(-snn_loss(z, y).item()) - 1e-6
    # equality iff all r_i are equal: a symmetric configuration
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert same_class_share(z, y).mean().item() == pytest.approx(
        math.exp(-snn_loss(z, y).item()), rel=1e-6
    )


@pytest.mark.parametrize(("t", "bt"), [(0.1, 0.07), (0.5, 0.5)])
def test_supcon_matches_reference_loop(t: float, bt: float) -> None:
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(6, 2, 2, 2, generator=g)
    z2 = z1 + 0.3 * torch.randn(6, 2, 2, 2, generator=g)
    y = torch.tensor([0, 1, 0, 2, 1, 0])  # class 2 has a single sample: only its other view
    ref = _supcon_ref(z1, z2, y, t, bt)
    assert supcon_loss(z1, z2, y, t, bt).item() == pytest.approx(ref, rel=1e-5)
    assert supcon_loss(z1.double(), z2.double(), y, t, bt).item() == pytest.approx(ref, rel=1e-10)


def test_supcon_scale_invariant_and_prefers_clustered() -> None:
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.tensor([0, 1] * 4)
    base = supcon_loss(z1, z2, y)
    assert supcon_loss(3.0 * z1, 0.5 * z2, y).item() == pytest.approx(base.item(), rel=1e-5)
    proto = torch.eye(5)[:2]
    clustered = supcon_loss(proto[y], proto[y], y)
    assert clustered.item() < base.item()


def test_similarity_matching_values() -> None:
    y = torch.tensor([0, 2, 1, 2, 0])
    onehot = torch.nn.functional.one_hot(y, 3).float()
    assert similarity_matching_loss(onehot, y, 3).item() == pytest.approx(0.0, abs=1e-7)
    # positive rescaling of rows and extra dims do not change cosine similarities
    assert similarity_matching_loss(
        (onehot * torch.arange(1.0, 6.0)[:, None]).reshape(5, 3, 1, 1), y, 3
    ).item() == pytest.approx(0.0, abs=1e-7)
    # all-identical features: similarity 1 everywhere; one-hot similarity is 1 on 9 of 25 pairs
    same = torch.ones(5, 4)
    assert similarity_matching_loss(same, y, 3).item() == pytest.approx(16 / 25, rel=1e-6)
    # hand-computed: two orthogonal points of different classes plus one at 45 degrees
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    yy = torch.tensor([0, 1, 0])
    c = 1 / math.sqrt(2)
    # errors: (0,1): 0-0, (0,2): c-1, (1,2): c-0 (each twice), diagonal 0
    expected = 2 * ((c - 1) ** 2 + c**2) / 9
    assert similarity_matching_loss(z, yy, 2).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cross_entropy(torch.zeros(3), torch.tensor([0, 1, 2])), "logits"),
        (lambda: cross_entropy(torch.zeros(3, 2), torch.tensor([0, 1])), "y must have shape"),
        (lambda: snn_loss(torch.zeros(3, 2), torch.zeros(3)), "integer"),
        (lambda: snn_loss(torch.zeros(3, 2), torch.tensor([0, 0, 1]), 0.0), "temperature"),
        (lambda: same_class_share(torch.zeros(1, 2), torch.tensor([0])), "at least 2"),
        (
            lambda: supcon_loss(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4, dtype=int)),
            "z2",
        ),
        (
            lambda: supcon_loss(
                torch.ones(4, 2), torch.ones(4, 2), torch.zeros(4, dtype=int), base_temperature=-1
            ),
            "base_temperature",
        ),
        (
            lambda: similarity_matching_loss(torch.ones(3, 2), torch.tensor([0, 1, 3]), 3),
            "num_classes",
        ),
        (
            lambda: similarity_matching_loss(torch.ones(3, 2), torch.tensor([0, 1, 1]), 0),
            "num_classes",
        ),
    ],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
