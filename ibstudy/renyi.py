"""Matrix-based Rényi alpha-order entropy and mutual information, in bits, from Gram matrices.

Sanchez Giraldo, Rao & Príncipe (2015); used on CNNs by Yu et al. (2019). A non-HSIC estimator of
the information plane.

- ``S_alpha(A) = 1/(1 - alpha) log2(sum_i lambda_i(A)^alpha)`` for a positive semidefinite Gram
  ``A`` of trace 1 (a Gram is divided by its trace first, so ``K / n`` for a Gaussian Gram ``K``).
- ``I_alpha(X; Z) = S(A_X) + S(A_Z) - S(A_X o A_Z / tr(A_X o A_Z))`` (``o``: Hadamard product).
- Kernels are those of :mod:`ibstudy.hsic` (:func:`ibstudy.hsic.gram`): the Gaussian's fixed
  bandwidth ``sigma * sqrt(d)`` is the nHSIC plane's; a 1-D integer tensor with kernel ``"linear"``
  is taken as class labels (Gram ``[y_i == y_j]``).
- Precision: kernel values, trace normalization and eigenvalues (``torch.linalg.eigvalsh``) in
  float64. The squared distances of a Gaussian Gram come from a matmul in the input's floating
  dtype, as nHSIC's Grams do (:mod:`ibstudy.hsic`); a float32 input's distances are then widened
  to float64 before the exponential, so the kernel is not rounded to float32. Eigenvalues below the
  rank tolerance ``n * eps * max|lambda|`` (round-off of a PSD matrix, negative ones included) count
  as 0, which matters for alpha < 1, where ``lambda^alpha`` magnifies round-off. MPS tensors (no
  float64) are moved to the CPU.
- alpha must be > 0 and != 1: alpha = 1 is the Shannon limit, which needs ``-sum lambda log lambda``
  and is refused here (alpha = 1.01, the default, is the usual stand-in).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ibstudy.checks import check_choice, check_int, check_real
from ibstudy.hsic import KERNELS, _check_pair, _features, _gram, _scaled_sq_dists

__all__ = [
    "DEFAULT_ALPHA",
    "check_alpha",
    "data_gram",
    "normalized_gram",
    "renyi_entropy",
    "renyi_floor",
    "renyi_joint_entropy",
    "renyi_mi",
    "renyi_mi_from_data",
]

#: the order used by Yu et al. (2019): close to Shannon's, far enough from 1 to be stable
DEFAULT_ALPHA = 1.01


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float if it is finite, > 0 and != 1; else ValueError naming ``alpha``."""
    alpha = check_real("alpha", alpha, minimum=0.0, include_minimum=False)
    if alpha == 1.0:
        raise ValueError(
            "alpha must be > 0 and != 1 (alpha = 1 is the Shannon limit, not implemented by the "
            "matrix-based Rényi estimator here; use e.g. alpha=1.01), got 1.0"
        )
    return alpha


def _check_gram(name: str, k: Tensor) -> Tensor:
    """``k`` as a float64 square matrix (on the CPU if it was on MPS); ValueError otherwise."""
    if not isinstance(k, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(k).__name__}")
    if k.dim() != 2 or k.shape[0] != k.shape[1] or k.shape[0] < 1:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {tuple(k.shape)}")
    if k.device.type == "mps":
        k = k.cpu()
    k = k.to(torch.float64)
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return k


def normalized_gram(k: Tensor) -> Tensor:
    """``k / tr(k)`` in float64 (the trace-1 matrix the entropy reads); ValueError if tr <= 0."""
    k = _check_gram("k", k)
    trace = float(torch.diagonal(k).sum())
    if not trace > 0.0:
        raise ValueError(f"k must have a positive trace to be normalized, got trace {trace!r}")
    return k / trace


def _eigenvalues(a: Tensor) -> Tensor:
    """Eigenvalues of a float64 symmetric PSD matrix; those below the rank tolerance
    ``n * eps * max|lambda|`` (round-off, possibly negative) are set to 0."""
    lam = torch.linalg.eigvalsh(a)
    tol = a.shape[0] * torch.finfo(torch.float64).eps * float(lam.abs().max())
    return lam.masked_fill_(lam <= tol, 0.0)


def _entropy(a: Tensor, alpha: float) -> float:
    """S_alpha of a float64 trace-1 symmetric matrix (no checks)."""
    lam = _eigenvalues(a)
    return math.log2(float(lam.pow(alpha).sum())) / (1.0 - alpha)


def renyi_entropy(a: Tensor, alpha: float = DEFAULT_ALPHA) -> float:
    """Matrix-based Rényi entropy ``1/(1-alpha) log2 sum lambda_i^alpha`` (bits) of a PSD Gram.

    ``a`` is divided by its trace first, so a trace-1 ``a`` is used as given.
    """
    alpha = check_alpha(alpha)
    return _entropy(normalized_gram(a), alpha)


def renyi_joint_entropy(kx: Tensor, kz: Tensor, alpha: float = DEFAULT_ALPHA) -> float:
    """Joint entropy ``S(A_X o A_Z / tr(A_X o A_Z))`` (bits) of two Grams over the same samples."""
    alpha = check_alpha(alpha)
    ax, az = _pair(kx, kz)
    return _entropy(normalized_gram(ax * az), alpha)


def _pair(kx: Tensor, kz: Tensor) -> tuple[Tensor, Tensor]:
    """The two Grams trace-normalized, float64, on one device; ValueError if their sizes differ."""
    ax, az = normalized_gram(kx), normalized_gram(kz)
    if ax.shape != az.shape:
        raise ValueError(
            f"kx and kz must be Grams of the same samples, got shapes {tuple(ax.shape)} and "
            f"{tuple(az.shape)}"
        )
    if ax.device != az.device:
        raise ValueError(f"kx and kz must be on the same device, got {ax.device} and {az.device}")
    return ax, az


def _mi(ax: Tensor, az: Tensor, alpha: float) -> float:
    """I_alpha from two float64 trace-1 Grams (no checks)."""
    joint = ax * az
    joint.div_(float(torch.diagonal(joint).sum()))
    return _entropy(ax, alpha) + _entropy(az, alpha) - _entropy(joint, alpha)


def renyi_mi(kx: Tensor, kz: Tensor, alpha: float = DEFAULT_ALPHA) -> float:
    """Matrix-based Rényi mutual information ``S(A_X) + S(A_Z) - S(A_X o A_Z / tr)`` (bits)."""
    alpha = check_alpha(alpha)
    ax, az = _pair(kx, kz)
    return _mi(ax, az, alpha)


def data_gram(t: Tensor, kernel: str, sigma: float) -> Tensor:
    """The trace-1 float64 Gram of samples ``t`` under a kernel of :data:`ibstudy.hsic.KERNELS`
    (no argument checks): a Gaussian's squared distances in ``t``'s floating dtype, then float64."""
    if t.device.type == "mps":
        t = t.cpu()
    if kernel == "gaussian" and t.dim() > 1:
        f = _features(t)  # float32 or float64; float32 beyond its safe magnitude is promoted
        k = _scaled_sq_dists(f).to(torch.float64)
        k.mul_(-1.0 / (2.0 * sigma * sigma * f.shape[1])).exp_()
    else:
        if t.is_floating_point():
            t = t.to(torch.float64)
        k = _gram(t, kernel, sigma).to(torch.float64)
    trace = float(torch.diagonal(k).sum())
    if not trace > 0.0:
        raise ValueError(f"k must have a positive trace to be normalized, got trace {trace!r}")
    return k.div_(trace)  # normalized_gram without its copy and its second pass


def _data_grams(
    x: Tensor, z: Tensor, sigma: float, kernel_x: str, kernel_z: str
) -> tuple[Tensor, Tensor]:
    """Trace-1 float64 Grams of ``x`` and ``z`` (:func:`data_gram`), after the input checks."""
    check_choice("kernel_x", kernel_x, KERNELS)
    check_choice("kernel_z", kernel_z, KERNELS)
    _check_pair(x, z, kernel_x, kernel_z, sigma)  # finite inputs, so finite Grams
    return data_gram(x, kernel_x, sigma), data_gram(z, kernel_z, sigma)


def renyi_mi_from_data(
    x: Tensor,
    z: Tensor,
    sigma: float = 5.0,
    alpha: float = DEFAULT_ALPHA,
    *,
    kernel_x: str = "gaussian",
    kernel_z: str = "gaussian",
) -> float:
    """I_alpha(X; Z) (bits) from samples ``(m, ...)``, Gaussian Grams of width ``sigma * sqrt(d)``.

    ``kernel_x``/``kernel_z`` name a kernel of :data:`ibstudy.hsic.KERNELS` (``"linear"`` on 1-D
    integer labels gives the class-equality Gram).
    """
    alpha = check_alpha(alpha)
    ax, az = _data_grams(x, z, sigma, kernel_x, kernel_z)
    return _mi(ax, az, alpha)


def renyi_floor(
    x: Tensor,
    z: Tensor,
    perms: int = 1,
    seed: int = 0,
    *,
    sigma: float = 5.0,
    alpha: float = DEFAULT_ALPHA,
    kernel_x: str = "gaussian",
    kernel_z: str = "gaussian",
) -> float:
    """Permutation floor: I_alpha(X; Z) with ``z``'s samples shuffled, mean over ``perms`` shuffles.

    Shuffles come from ``torch.Generator().manual_seed(seed)`` (``torch.randperm``), as the nHSIC
    floor's do; the Grams are built once and permuted.
    """
    alpha = check_alpha(alpha)
    perms = check_int("perms", perms, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    ax, az = _data_grams(x, z, sigma, kernel_x, kernel_z)
    m = ax.shape[0]
    gen = torch.Generator().manual_seed(seed)
    marginals = _entropy(ax, alpha) + _entropy(az, alpha)  # a shuffle keeps A_Z's eigenvalues
    joints = 0.0
    for _ in range(perms):
        perm = torch.randperm(m, generator=gen).to(az.device)
        joint = ax * az[perm][:, perm]
        joints += _entropy(joint / float(torch.diagonal(joint).sum()), alpha)
    return marginals - joints / perms
