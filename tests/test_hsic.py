"""Tests of ibstudy.hsic: float64 numpy reference, invariances, known values, evaluator, bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ibstudy import hsic as H
from ibstudy.hsic import (
    InfoPlane,
    center,
    gaussian,
    gaussian_median,
    gram,
    hsic,
    linear,
    nhsic,
    nhsic_approx,
    nhsic_cka,
    nocco_operator,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
        ],
    ),
]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, device: str = "cpu", dtype=torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype).to(device)


# ---------------------------------------------------------------------------------------------
# slow, explicit float64 reference (numpy): explicit H, broadcast distances, numpy inverse
# ---------------------------------------------------------------------------------------------
def ref_gram(x: np.ndarray, kernel: str, sigma: float = 5.0) -> np.ndarray:
    if kernel == "linear":
        if x.ndim == 1:
            onehot = np.eye(int(x.max()) + 1)[x]
            return onehot @ onehot.T
        f = x.reshape(len(x), -1).astype(np.float64)
        return f @ f.T
    f = x.reshape(len(x), -1).astype(np.float64)
    d2 = ((f[:, None, :] - f[None, :, :]) ** 2).sum(-1)
    if kernel == "gaussian":
        return np.exp(-d2 / (2 * sigma**2 * f.shape[1]))
    med = np.median(d2[~np.eye(len(f), dtype=bool)])
    return np.exp(-d2 / (2 * med))


def ref_r(k: np.ndarray, eps: float) -> np.ndarray:
    m = len(k)
    h = np.eye(m) - np.ones((m, m)) / m
    g = h @ k @ h
    return g @ np.linalg.inv(g + eps * m * np.eye(m))


def ref_nhsic(a, b, ka, kb, sigma=5.0, eps=1e-5) -> float:
    return float(np.trace(ref_r(ref_gram(a, ka, sigma), eps) @ ref_r(ref_gram(b, kb, sigma), eps)))


def ref_hsic(a, b, ka, kb, sigma=5.0) -> float:
    m = len(a)
    h = np.eye(m) - np.ones((m, m)) / m
    return float(np.trace(ref_gram(a, ka, sigma) @ h @ ref_gram(b, kb, sigma) @ h) / (m - 1) ** 2)


def _pair(m: int, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dependent (m, C, H, W) input and a nonlinear feature map of it."""
    a = _randn(m, *shape, seed=seed)
    w = _randn(a[0].numel(), 12, seed=seed + 1)
    b = torch.tanh(a.reshape(m, -1) @ w / math.sqrt(a[0].numel())).reshape(m, 3, 2, 2)
    return a, b


# ---------------------------------------------------------------------------------------------
# agreement with the reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "m,shape,kernel_a,kernel_b",
    [
        (16, (1, 4, 4), "gaussian", "gaussian"),
        (50, (3, 5, 5), "gaussian", "linear"),
        (96, (2, 8, 8), "gaussian_median", "gaussian"),
        (130, (3, 4, 6), "linear", "gaussian_median"),
    ],
)
def test_nhsic_matches_float64_reference(device, m, shape, kernel_a, kernel_b):
    a, b = _pair(m, shape, seed=m)
    for eps in (1e-5, 1e-2):
        ours = nhsic(
            a.to(device), b.to(device), kernel_a=kernel_a, kernel_b=kernel_b, sigma=5.0, eps=eps
        )
        ref = ref_nhsic(a.numpy(), b.numpy(), kernel_a, kernel_b, eps=eps)
        assert ours == pytest.approx(ref, rel=1e-9)
        assert ref > 0.1  # a real value, not a trivially agreeing 0


@pytest.mark.parametrize("device", DEVICES)
def test_nhsic_with_labels_matches_reference(device):
    m = 120
    y = torch.arange(m) % 7
    x = _randn(m, 3, 4, 4, seed=3) + 0.5 * y.double().reshape(m, 1, 1, 1)
    ours = nhsic(x.to(device), y.to(device), kernel_b="linear", sigma=2.0)
    ref = ref_nhsic(x.numpy(), y.numpy(), "gaussian", "linear", sigma=2.0)
    assert ours == pytest.approx(ref, rel=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_hsic_matches_reference(device):
    a, b = _pair(40, (2, 3, 3), seed=5)
    ours = hsic(a.to(device), b.to(device), kernel_b="linear", sigma=3.0)
    assert ours == pytest.approx(
        ref_hsic(a.numpy(), b.numpy(), "gaussian", "linear", 3.0), rel=1e-8
    )
    assert ours > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["gaussian", "gaussian_median", "linear"])
def test_gram_and_center_match_reference(device, kernel):
    x = _randn(30, 2, 3, 3, seed=11)
    k = gram(x.to(device), kernel, sigma=1.5)
    ref_k = ref_gram(x.numpy(), kernel, 1.5)
    np.testing.assert_allclose(k.cpu().numpy(), ref_k, rtol=1e-10, atol=1e-10)
    h = np.eye(30) - 1 / 30
    np.testing.assert_allclose(center(k).cpu().numpy(), h @ ref_k @ h, rtol=0, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m,d", [(300, 1000), (600, 500), (257, 2000), (1030, 16)])
def test_gaussian_large_inputs_exact_and_symmetric(device, m, d):
    # sizes where the CPU path builds the distance matrix from upper row blocks (uneven ones too)
    x = _randn(m, d, seed=m, device=device)
    k = gaussian(x, sigma=1.0)
    assert torch.equal(k, k.T)
    assert torch.all(k.diagonal() == 1.0)
    ref = torch.exp(-torch.cdist(x, x).square() / (2 * d))
    torch.testing.assert_close(k, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_nocco_operator_matches_explicit_inverse(device):
    x = _randn(64, 10, seed=2)
    k = ref_gram(x.numpy(), "gaussian", 0.5)
    h = np.eye(64) - 1 / 64
    g = torch.from_numpy(h @ k @ h).to(device)
    r = nocco_operator(g, eps=1e-4)
    assert r.dtype == torch.float64
    np.testing.assert_allclose(r.cpu().numpy(), ref_r(k, 1e-4), rtol=0, atol=1e-9)
    torch.testing.assert_close(r, r.T, rtol=0, atol=1e-12)


def test_nocco_operator_falls_back_when_not_positive_definite():
    # G + eps m I indefinite: Cholesky fails at every jitter, so the eigenvalue path (clamped) runs
    q, _ = torch.linalg.qr(_randn(8, 8, seed=4))
    lam = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    g = (q * lam) @ q.T
    r = nocco_operator(g, eps=0.01)
    w = lam.clamp(min=0) / (lam.clamp(min=0) + 0.08)
    torch.testing.assert_close(r, (q * w) @ q.T, rtol=0, atol=1e-10)


def test_nhsic_eigenvalue_route_agrees_with_factor_route(monkeypatch):
    # nhsic reads tr(R_a R_b) from the two inverses (G + eps m I)^-1; when a factorization fails
    # it retries with jitter, then falls back to explicit operators from eigenvalues. Every route
    # must give the reference value.
    a, b = _pair(60, (2, 3, 3), seed=31)
    ref = ref_nhsic(a.numpy(), b.numpy(), "gaussian", "gaussian")
    assert nhsic(a, b) == pytest.approx(ref, rel=1e-9)
    monkeypatch.setattr(H, "_spd_halves", lambda g, **kw: None)
    assert nhsic(a, b) == pytest.approx(ref, rel=1e-9)  # jittered Cholesky (jitter 0 succeeds)
    monkeypatch.setattr(H, "_cholesky", lambda g: None)
    assert nhsic(a, b) == pytest.approx(ref, rel=1e-8)  # eigenvalues


def test_labels_linear_gram_is_one_hot_agreement():
    y = torch.tensor([0, 2, 2, 1, 0])
    expected = torch.nn.functional.one_hot(y).float()
    torch.testing.assert_close(linear(y), expected @ expected.T)


# ---------------------------------------------------------------------------------------------
# invariances and known values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_symmetry_and_joint_permutation_invariance(device):
    a, b = _pair(80, (3, 4, 4), seed=8)
    a, b = a.to(device), b.to(device)
    v = nhsic(a, b)
    assert nhsic(b, a) == pytest.approx(v, rel=1e-12)  # symmetric up to float64 rounding
    assert nhsic(b, a) != pytest.approx(1.01 * v, rel=1e-3)
    perm = torch.randperm(80, generator=_gen(0)).to(device)
    assert nhsic(a[perm], b[perm]) == pytest.approx(v, rel=1e-10)
    # a permutation of one side only breaks the pairing and changes the value
    assert abs(nhsic(a[perm], b) - v) > 1e-3 * v


@pytest.mark.parametrize("device", DEVICES)
def test_nhsic_of_balanced_labels_is_classes_minus_one(device):
    for m, c in [(200, 10), (96, 4)]:
        y = (torch.arange(m) % c)[torch.randperm(m, generator=_gen(m))].to(device)
        v = nhsic(y, y, kernel_a="linear", kernel_b="linear", eps=1e-6)
        assert abs(v - (c - 1)) < 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_self_nhsic_below_m_minus_one_and_decreasing_in_eps(device):
    m = 64
    a = _randn(m, 3, 8, 8, seed=9, device=device)
    values = [nhsic(a, a, sigma=1.0, eps=eps) for eps in (1e-7, 1e-5, 1e-3, 1e-1)]
    assert all(v < m - 1 for v in values)
    assert all(x > y for x, y in zip(values, values[1:], strict=False))
    assert values[0] > 0.9 * (m - 1)  # with a tiny ridge the operator is nearly the projection H


@pytest.mark.parametrize("device", DEVICES)
def test_independent_far_below_dependent(device):
    m = 200
    a = _randn(m, 2, seed=21, device=device)
    dep = a + 0.1 * _randn(m, 2, seed=22, device=device)
    ind = _randn(m, 2, seed=23, device=device)
    v_dep, v_ind = nhsic(a, dep), nhsic(a, ind)
    assert v_dep > 3.0
    assert v_ind < 1.0
    y = (torch.arange(m) % 4).to(device)
    x_dep = _randn(m, 8, seed=24, device=device) + 3 * torch.nn.functional.one_hot(y, 8)
    assert nhsic(x_dep, y, kernel_b="linear") > 1.5
    assert nhsic(ind, y, kernel_b="linear") < 0.5


@pytest.mark.parametrize("device", DEVICES)
def test_gaussian_median_invariant_to_scale(device):
    x = _randn(50, 3, 4, 4, seed=31, device=device)
    torch.testing.assert_close(gaussian_median(10 * x), gaussian_median(x), rtol=0, atol=1e-12)
    # the fixed-bandwidth kernel is not: the check above is not vacuous
    assert (gaussian(10 * x, 1.0) - gaussian(x, 1.0)).abs().max() > 0.1


@pytest.mark.parametrize("device", DEVICES)
def test_nhsic_cka_range_and_self_value(device):
    a, b = _pair(60, (2, 4, 4), seed=41)
    a, b = a.to(device), b.to(device)
    assert nhsic_cka(a, a) == pytest.approx(1.0, abs=1e-12)
    v = nhsic_cka(a, b)
    assert 0.05 < v < 1.0
    assert nhsic_cka(a, torch.zeros(60, 5, device=device)) == 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["gaussian", "gaussian_median"])
def test_constant_representation_gives_zero(device, kernel):
    a = _randn(32, 6, seed=51, device=device)
    for const in (torch.zeros(32, 4, 2), torch.full((32, 8), 3.7), torch.ones(32, 1) * 1e6):
        v = nhsic(a, const.to(device), kernel_b=kernel)
        assert v == 0.0
        assert hsic(a, const.to(device), kernel_b=kernel) == pytest.approx(0.0, abs=1e-12)


def test_float32_inputs_close_to_float64():
    a, b = _pair(128, (3, 8, 8), seed=61)
    v64 = nhsic(a, b)
    v32 = nhsic(a.float(), b.float())
    assert v32 == pytest.approx(v64, rel=1e-5)
    assert gaussian(a.float()).dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# approximate mode
# ---------------------------------------------------------------------------------------------
def _low_dim(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of low intrinsic dimension (3 latent factors) and a feature map of the same factors."""
    latent = _randn(m, 3, seed=seed)
    x = torch.tanh(latent @ _randn(3, 192, seed=seed + 1) / 2).reshape(m, 3, 8, 8)
    z = torch.tanh(latent @ _randn(3, 32, seed=seed + 2))
    return x, z


def test_nhsic_approx_full_rank_nystrom_is_exact():
    x, z = _low_dim(96, seed=71)
    exact = nhsic(x, z, sigma=1.0)
    assert nhsic_approx(x, z, rank=96, sigma=1.0) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("method,rank,tol", [("nystrom", 128, 0.01), ("rff", 1024, 0.05)])
def test_nhsic_approx_error_bound(method, rank, tol):
    x, z = _low_dim(256, seed=72)
    y = torch.arange(256) % 10
    for b, kb in [(z, "gaussian"), (y, "linear")]:
        exact = nhsic(x, b, kernel_b=kb)
        approx = nhsic_approx(x, b, rank=rank, method=method, kernel_b=kb)
        assert abs(approx - exact) / exact < tol, (kb, approx, exact)


def test_nhsic_approx_error_decreases_with_rank():
    x, z = _low_dim(384, seed=73)
    exact = nhsic(x, z, sigma=0.5)
    errs = [abs(nhsic_approx(x, z, rank=r, sigma=0.5) - exact) for r in (8, 32, 128)]
    assert errs[0] > errs[1] > errs[2]


# ---------------------------------------------------------------------------------------------
# InfoPlane
# ---------------------------------------------------------------------------------------------
def _eval_set(n: int, device: str):
    y = (torch.arange(n) % 5).to(device)
    x = _randn(n, 3, 6, 6, seed=81, device=device) + y.double().reshape(n, 1, 1, 1) * 0.3
    w = _randn(108, 16, seed=82, device=device)
    reps = {
        "block0": torch.relu(x.reshape(n, -1) @ w).reshape(n, 4, 2, 2),
        "block1": torch.tanh(x.reshape(n, -1) @ w[:, :6]),
        "dead": torch.zeros(n, 7, device=device),
    }
    return x, y, reps


@pytest.mark.parametrize("device", DEVICES)
def test_infoplane_equals_per_chunk_nhsic_averaged(device):
    n, m = 192, 64
    x, y, reps = _eval_set(n, device)
    ip = InfoPlane(x, y, chunk_size=m, sigma=2.0, eps=1e-4)
    assert ip.num_chunks == 3
    df = ip.measure(reps)
    assert list(df["layer"]) == list(reps)
    assert list(df.columns) == ["layer", "nhsic_xz", "nhsic_yz", "nhsic_xz_std", "nhsic_yz_std"]
    for name, z in reps.items():
        xz = [nhsic(x[i : i + m], z[i : i + m], sigma=2.0, eps=1e-4) for i in range(0, n, m)]
        yz = [
            nhsic(y[i : i + m], z[i : i + m], kernel_a="linear", sigma=2.0, eps=1e-4)
            for i in range(0, n, m)
        ]
        row = df.set_index("layer").loc[name]
        assert row["nhsic_xz"] == pytest.approx(np.mean(xz), rel=1e-10, abs=1e-12)
        assert row["nhsic_yz"] == pytest.approx(np.mean(yz), rel=1e-10, abs=1e-12)
        assert row["nhsic_xz_std"] == pytest.approx(np.std(xz), rel=1e-9, abs=1e-12)
        assert row["nhsic_yz_std"] == pytest.approx(np.std(yz), rel=1e-9, abs=1e-12)
    assert df.set_index("layer").loc["block0", "nhsic_yz"] > 0.5
    assert df.set_index("layer").loc["dead", "nhsic_xz"] == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_infoplane_whole_vs_streamed_identical(device):
    n, m = 128, 32
    x, y, reps = _eval_set(n, device)
    ip = InfoPlane(x, y, chunk_size=m, floor=True, device=device)
    whole = ip.measure(reps)
    streamed = []
    for i in range(ip.num_chunks):
        xi, yi = ip.chunk(i)
        torch.testing.assert_close(xi, x[i * m : (i + 1) * m], rtol=0, atol=0)
        assert torch.equal(yi, y[i * m : (i + 1) * m])
        streamed.append(ip.measure_chunk(i, {k: z[i * m : (i + 1) * m] for k, z in reps.items()}))
    pd.testing.assert_frame_equal(whole, ip.summarize(streamed), check_exact=True)


def test_infoplane_eigenvalue_route_agrees(monkeypatch):
    # when a layer's Cholesky factorization fails, R_Z comes from clamped eigenvalues instead
    n, m = 128, 64
    x, y, reps = _eval_set(n, "cpu")
    ip = InfoPlane(x, y, chunk_size=m, sigma=2.0, eps=1e-3, floor=True)
    fast = ip.measure(reps)
    monkeypatch.setattr(H, "_cholesky", lambda g: None)
    slow = ip.measure(reps)
    pd.testing.assert_frame_equal(fast, slow, rtol=1e-9, atol=1e-12)
    assert fast["nhsic_xz"].min() == 0.0 and fast["nhsic_xz"].max() > 1.0  # "dead" and real


def test_infoplane_on_mps_works_on_the_cpu():
    # MPS has no float64: an evaluator asked for "mps" keeps its caches and works on the CPU, so a
    # Mac's auto-selected device does not break the measurement (needs no MPS to check)
    x, y, reps = _eval_set(64, "cpu")
    ip = InfoPlane(x, y, chunk_size=32, device="mps")
    assert ip.device == torch.device("cpu")
    assert ip.chunk(0)[0].device.type == "cpu"
    pd.testing.assert_frame_equal(ip.measure(reps), InfoPlane(x, y, chunk_size=32).measure(reps))


@pytest.mark.skipif(
    not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()), reason="no MPS"
)
def test_nhsic_of_mps_tensors_equals_cpu():
    a, b = _pair(40, (2, 3, 3), seed=41)
    a32, b32 = a.float(), b.float()
    expected = nhsic(a32, b32)
    assert nhsic(a32.to("mps"), b32.to("mps")) == pytest.approx(expected, rel=1e-6)
    assert hsic(a32.to("mps"), b32.to("mps")) == pytest.approx(hsic(a32, b32), rel=1e-6)


def test_infoplane_floor_is_nhsic_of_shuffled_rows():
    n, m = 128, 64
    x, y, reps = _eval_set(n, "cpu")
    reps["block1"] = 2.0 * torch.nn.functional.one_hot(y, 5) + 0.3 * _randn(n, 5, seed=83)
    ip = InfoPlane(x, y, chunk_size=m, eps=1e-2, floor=True, seed=3)
    out = ip.measure_chunk(1, {"block1": reps["block1"][m:]})["block1"]
    perm = torch.randperm(m, generator=_gen(3 + 1))
    z_shuffled = reps["block1"][m:][perm]
    assert out["floor_xz"] == pytest.approx(nhsic(x[m:], z_shuffled, eps=1e-2), rel=1e-9)
    assert out["floor_yz"] == pytest.approx(
        nhsic(y[m:], z_shuffled, kernel_a="linear", eps=1e-2), rel=1e-9
    )
    assert out["floor_yz"] < 0.2 * out["nhsic_yz"]  # block1 encodes the labels
    df = ip.measure(reps)
    assert {"floor_xz", "floor_yz"} <= set(df.columns)


def test_infoplane_bad_input():
    x, y, reps = _eval_set(64, "cpu")
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        InfoPlane(x, y, chunk_size=48)
    with pytest.raises(ValueError, match="chunk_size"):
        InfoPlane(x, y, chunk_size=2)
    with pytest.raises(ValueError, match="y_eval"):
        InfoPlane(x, y.float(), chunk_size=32)
    with pytest.raises(ValueError, match="same length"):
        InfoPlane(x, y[:32], chunk_size=32)
    with pytest.raises(ValueError, match="eps"):
        InfoPlane(x, y, chunk_size=32, eps=0.0)
    ip = InfoPlane(x, y, chunk_size=32)
    bad = reps["block0"].clone()
    bad[40, 0] = float("nan")
    with pytest.raises(ValueError, match="block0"):
        ip.measure({"block1": reps["block1"], "block0": bad})
    with pytest.raises(ValueError, match="layer 'block1'"):
        ip.measure({"block1": reps["block1"][:10]})
    with pytest.raises(ValueError, match="chunk index"):
        ip.chunk(2)
    with pytest.raises(ValueError, match="per_chunk"):
        ip.summarize([ip.measure_chunk(0, {"a": reps["block1"][:32]})])


# ---------------------------------------------------------------------------------------------
# bad input for the functions
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"a": torch.randn(3, 5), "b": torch.randn(3, 5)}, "at least 4"),
        ({"a": torch.randn(8, 5), "b": torch.randn(9, 5)}, "same number of samples"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-5}, "eps"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"kernel_a": "rbf"}, r"\['gaussian', 'gaussian_median', 'linear'\]"),
        ({"b": torch.rand(8), "kernel_b": "linear"}, "integer"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = {"a": torch.randn(8, 5), "b": torch.randn(8, 5)} | kwargs
    for fn in (nhsic, nhsic_cka):
        with pytest.raises(ValueError, match=match):
            fn(**args)


def test_nan_and_inf_named():
    a = torch.randn(8, 5)
    bad = a.clone()
    bad[2, 3] = float("inf")
    with pytest.raises(ValueError, match="b contains NaN or Inf"):
        nhsic(a, bad)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="a contains NaN or Inf"):
        hsic(bad, a)


def test_other_bad_input():
    with pytest.raises(ValueError, match="kernel"):
        gram(torch.randn(5, 2), "poly")
    with pytest.raises(ValueError, match="sigma"):
        gaussian(torch.randn(5, 2), sigma=-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        linear(torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="square"):
        center(torch.randn(4, 5))
    with pytest.raises(ValueError, match="eps"):
        nocco_operator(torch.eye(5), eps=0.0)
    with pytest.raises(ValueError, match="method"):
        nhsic_approx(torch.randn(8, 3), torch.randn(8, 3), method="svd")
    with pytest.raises(ValueError, match="rank"):
        nhsic_approx(torch.randn(8, 3), torch.randn(8, 3), rank=0)
    assert H.KERNELS == ("gaussian", "gaussian_median", "linear")
