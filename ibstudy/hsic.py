"""Kernels, HSIC and the normalized HSIC (NOCCO) estimator, plus a cached information-plane evaluator.

Conventions (docs/method.md §3):

- Inputs are tensors of shape ``(m, ...)``; trailing dimensions are flattened to ``d`` features.
- Gaussian kernel ``k(u, u') = exp(-||u - u'||^2 / (2 sigma^2 d))`` (sigma = 5 by default). Squared
  distances come from norms and matmuls (never an ``m x m x d`` broadcast; on a CPU only the blocks
  on and above the diagonal are multiplied), are exactly symmetric, and the features are
  mean-shifted first (distances are translation invariant), which keeps float32 cancellation small.
- Linear kernel ``x x^T``; a 1-D integer tensor is taken as class labels, i.e. one-hot encoded, so its
  Gram is ``L_ij = [y_i == y_j]``.
- ``G = H K H`` is formed with row/column/grand means (O(m^2)), never with an explicit ``H``.
- NOCCO operator ``R = G (G + eps m I)^-1 = I - eps m (G + eps m I)^-1`` through a Cholesky
  factorization of the symmetric positive definite ``G + eps m I``; ``nHSIC(A;B) = tr(R_A R_B)``,
  which ``nhsic`` reads from the two inverses ``(G + eps m I)^-1`` (on a CPU above ``INVERSE_LEAF``
  by recursive halving with Schur complements: blocked Cholesky steps and matrix products), never
  forming either R; for a Gaussian kernel it builds ``G + eps m I`` only on and above the
  diagonal, all that the factorizations read. The inputs are read once by the checks (finite
  values and magnitude together).
- Precision: the Gram's matmul runs in the input's floating dtype (float16/bfloat16 and integer inputs
  are promoted to float32); centring, factorization and trace run in float64.
- Device: the inputs' own (CPU or CUDA). MPS has no float64, so work on MPS tensors (and an
  ``InfoPlane`` asked for ``device="mps"``) runs on the CPU.

``InfoPlane`` caches the X and Y sides per chunk and needs one Cholesky factorization and one
triangular solve per layer. ``nhsic_cka`` and ``nhsic_approx`` are additions of this project, not in
the paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ibstudy.checks import check_choice, check_int, check_positive
from ibstudy.chunked import ChunkedPlane, check_rows
from ibstudy.config import BANDWIDTHS

__all__ = [
    "KERNELS",
    "InfoPlane",
    "center",
    "differentiable_operators",
    "gaussian",
    "gaussian_median",
    "gram",
    "hsic",
    "linear",
    "nhsic",
    "nhsic_approx",
    "nhsic_cka",
    "gaussian_operator",
    "nhsic_differentiable",
    "nhsic_with_operator",
    "nhsic_with_operators",
    "nocco_operator",
]

KERNELS: tuple[str, ...] = ("gaussian", "gaussian_median", "linear")
APPROX_METHODS: tuple[str, ...] = ("nystrom", "rff")
MIN_SAMPLES = 4
_CHOLESKY_JITTERS: tuple[float, ...] = (0.0, 1e-12, 1e-10, 1e-8, 1e-6)


# ----------------------------------------------------------------------------------------------
# validation helpers (cheap: run before any O(m^2) work)
# ----------------------------------------------------------------------------------------------
def _check_tensor(name: str, x: Tensor, *, min_samples: int = 1) -> float:
    """Validate one input and return its largest magnitude ``max |x|`` (one pass over ``x``)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have a sample dimension, got a 0-d tensor")
    if x.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} samples, got m = {x.shape[0]}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    magnitude = _max_abs(x)
    if not math.isfinite(magnitude):
        raise ValueError(f"{name} contains NaN or Inf values")
    return magnitude


def _max_abs(x: Tensor) -> float:
    """``max |x|`` of a non-empty tensor in one pass (``aminmax``: no ``|x|`` temporary); NaN or
    Inf when ``x`` holds one, so that the finiteness check and the overflow guard share it."""
    if x.dtype == torch.bool:
        return 1.0
    x = x.detach()  # a value read, not part of any graph
    if x.is_complex():
        return float(x.abs().max())
    lo, hi = torch.aminmax(x)
    return float(torch.maximum(lo.abs(), hi.abs()))  # one device sync; NaN propagates


def _all_finite(x: Tensor) -> bool:
    """No NaN/Inf: a finite sum proves it in one pass; only a non-finite sum needs the full check."""
    if not (x.is_floating_point() or x.is_complex()):
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _check_labels_if_needed(name: str, x: Tensor, kernel: str) -> None:
    if kernel == "linear" and x.dim() == 1 and not _is_integer(x):
        raise ValueError(
            f"{name}: a 1-D tensor with kernel 'linear' is taken as class labels and must have an "
            f"integer dtype, got {x.dtype}; reshape to (m, 1) for a scalar feature"
        )


def _check_pair(
    a: Tensor, b: Tensor, kernel_a: str, kernel_b: str, sigma: float
) -> tuple[float, float]:
    """Validate a pair of inputs; return their magnitudes ``max |a|, max |b|`` for ``_features``."""
    check_choice("kernel_a", kernel_a, KERNELS)
    check_choice("kernel_b", kernel_b, KERNELS)
    check_positive("sigma", sigma)
    magnitudes = (
        _check_tensor("a", a, min_samples=MIN_SAMPLES),
        _check_tensor("b", b, min_samples=MIN_SAMPLES),
    )
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"a and b must have the same number of samples, got {a.shape[0]} and {b.shape[0]}"
        )
    if a.device != b.device:
        raise ValueError(f"a and b must be on the same device, got {a.device} and {b.device}")
    _check_labels_if_needed("a", a, kernel_a)
    _check_labels_if_needed("b", b, kernel_b)
    return magnitudes


def _is_integer(x: Tensor) -> bool:
    return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)


#: float32 features beyond this magnitude are computed in float64: their squared norms would overflow
FLOAT32_SAFE_MAX = 1e15


def _features(x: Tensor, magnitude: float | None = None) -> Tensor:
    """Flatten to (m, d) in a floating dtype fit for a matmul (float32 or float64).

    float32 inputs with values beyond ``FLOAT32_SAFE_MAX`` are promoted to float64 (on MPS, which
    has no float64, they move to the CPU), so huge activations give finite distances, not NaN.
    ``magnitude`` is ``max |x|`` when the caller's input check has measured it already.
    """
    x = x.reshape(x.shape[0], -1)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    if x.dtype == torch.float32 and x.numel():
        if magnitude is None:
            magnitude = _max_abs(x)
        if magnitude > FLOAT32_SAFE_MAX:
            x = x.to(_compute_device(x.device)).to(torch.float64)
    return x


def _compute_device(device: torch.device) -> torch.device:
    """Where float64 work runs: ``device`` itself, or the CPU for MPS, which has no float64."""
    return torch.device("cpu") if device.type == "mps" else device


def _float64_ready(*xs: Tensor) -> tuple[Tensor, ...]:
    """The tensors, moved to the CPU when they live on a device without float64 (MPS)."""
    return tuple(x.to(_compute_device(x.device)) for x in xs)


# ----------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------
def _gram_block_rows(m: int, d: int, device: torch.device) -> int:
    """Rows per block for the symmetric distance matrix: upper blocks only pay off on a CPU with
    enough work (measured here: 15-35 % less time for d = 3,072 and m >= 256), or from m = 1,024
    at any d, where one block's transposed symmetrization costs more than the matmul (m = 1,024,
    d = 64: 4.5 ms in one block, 1.5 ms in four); else one block."""
    if device.type != "cpu" or m < 256 or (m * d < 262_144 and m < 1024):
        return m
    return -(-m // (2 if m < 512 else 4))


def _sq_dist_rows(x: Tensor, scale: float = 1.0) -> Iterator[tuple[int, Tensor]]:
    """``(i, block)`` per block of rows: ``scale * ||u_k - u_l||^2`` for rows ``k`` of the block
    starting at ``i`` and columns ``l >= i`` (clamped at 0, diagonal exactly 0), the leading
    square block exactly symmetric. Together they hold every entry on and above the diagonal.

    From norms and matmuls of the mean-shifted rows of a 2-D float tensor (distances are
    translation invariant; the shift keeps float32 cancellation small); the blocks below the
    diagonal are never multiplied, which saves part of the matmul work on a CPU.
    """
    x = x - x.mean(dim=0, keepdim=True)
    sq = torch.linalg.vector_norm(x, dim=1).square()
    m = x.shape[0]
    b = _gram_block_rows(m, x.shape[1], x.device)
    for i in range(0, m, b):
        n = min(b, m - i)
        blk = torch.addmm(sq[i : i + n, None], x[i : i + n], x[i:].T, beta=scale, alpha=-2 * scale)
        blk.add_(sq[None, i:], alpha=scale)
        diag = blk[:, :n]
        diag.copy_((diag + diag.T).mul_(0.5))  # symmetric to the last bit (a matmul need not be)
        blk = blk.clamp_(min=0.0) if scale > 0 else blk.clamp_(max=0.0)
        diag.fill_diagonal_(0.0)
        yield i, blk


def _scaled_sq_dists(x: Tensor, scale: float = 1.0) -> Tensor:
    """``scale * ||u_i - u_j||^2`` for the rows of a 2-D float tensor, exactly symmetric: the
    blocks of :func:`_sq_dist_rows`, mirrored below the diagonal."""
    m = x.shape[0]
    out = None
    for i, blk in _sq_dist_rows(x, scale):
        if i == 0 and blk.shape[0] == m:
            return blk
        if out is None:
            out = torch.empty(m, m, dtype=blk.dtype, device=blk.device)
        n = blk.shape[0]
        out[i : i + n, i:] = blk
        out[i + n :, i : i + n] = blk[:, n:].T
    assert out is not None
    return out


def _ridged_gaussian_upper(f: Tensor, sigma: float, c: float) -> Tensor:
    """``H K H + c I`` in float64 for the Gaussian Gram ``K`` of (m, d) features, set only on and
    above the diagonal (entries below are left unset): what ``_spd_halves`` reads. Saves the
    mirror copies and a third of the elementwise work of ``center(gaussian(f)) + c I``."""
    m = f.shape[0]
    g = torch.empty(m, m, dtype=torch.float64, device=f.device)
    sums = torch.zeros(m, dtype=torch.float64, device=f.device)  # row sums of the symmetric K
    blocks = []
    for i, blk in _sq_dist_rows(f, -1.0 / (2.0 * sigma * sigma * f.shape[1])):
        n = blk.shape[0]
        k = g[i : i + n, i:]
        k.copy_(blk.exp_())
        sums[i : i + n] += k.sum(dim=1)
        sums[i + n :] += k[:, n:].sum(dim=0)  # the rows below, from the symmetric entries
        blocks.append((i, n))
    means = sums.div_(m)
    shift = means - means.mean()
    for i, n in blocks:
        g[i : i + n, i:].sub_(means[i : i + n, None]).sub_(shift[None, i:])
    g.diagonal().add_(c)
    return g


def _gaussian_of_features(f: Tensor, sigma: float) -> Tensor:
    return _scaled_sq_dists(f, -1.0 / (2.0 * sigma * sigma * f.shape[1])).exp_()


def _median_of_features(f: Tensor, sigma: float) -> Tensor:
    """Median-bandwidth Gaussian Gram of (m, d) features (``sigma`` unused), in float64."""
    (f,) = _float64_ready(f)
    if f.shape[0] < 2:
        raise ValueError(f"x needs at least 2 samples for a median bandwidth, got m = {f.shape[0]}")
    d = _scaled_sq_dists(f)
    return d.mul_(-0.5 / _median_sq_dist(d)).exp_()


def _linear_of_features(f: Tensor, sigma: float) -> Tensor:
    return f @ f.T


#: kernel name -> Gram of the (m, d) features from ``_features`` (the kernel's ``sigma`` second)
_GRAM_OF_FEATURES = {
    "gaussian": _gaussian_of_features,
    "gaussian_median": _median_of_features,
    "linear": _linear_of_features,
}


def _labels_gram(x: Tensor) -> Tensor:
    """``L_ij = [y_i == y_j]`` of 1-D integer class labels (ValueError for other 1-D input)."""
    if not _is_integer(x):
        raise ValueError(
            f"x: a 1-D tensor is taken as class labels and must have an integer dtype, got "
            f"{x.dtype}; reshape to (m, 1) for a scalar feature"
        )
    if bool((x < 0).any()):
        raise ValueError(f"x: class labels must be >= 0, got min {int(x.min())}")
    return (x.unsqueeze(1) == x.unsqueeze(0)).to(torch.get_default_dtype())


def _gram(x: Tensor, kernel: str, sigma: float, magnitude: float | None = None) -> Tensor:
    """:func:`gram` without the argument checks; ``magnitude`` as in :func:`_features`."""
    if kernel == "linear" and x.dim() == 1:
        return _labels_gram(x)
    return _GRAM_OF_FEATURES[kernel](_features(x, magnitude), sigma)


def gaussian(x: Tensor, sigma: float = 5.0) -> Tensor:
    """Gaussian Gram ``exp(-||u-u'||^2 / (2 sigma^2 d))`` with ``d`` the flattened dimension."""
    check_positive("sigma", sigma)
    return _gram(x, "gaussian", sigma)


def _median_sq_dist(d: Tensor) -> float:
    """Median (mean of the two middle values) of the off-diagonal squared distances."""
    m = d.shape[0]
    iu = torch.triu_indices(m, m, offset=1, device=d.device)
    vals = d[iu[0], iu[1]]
    n = vals.numel()
    lo = torch.kthvalue(vals, (n + 1) // 2).values
    hi = torch.kthvalue(vals, n // 2 + 1).values
    med = float(0.5 * (lo.double() + hi.double()))
    if med > 0.0:
        return med
    positive = vals[
        vals > 0
    ]  # more than half the pairs coincide: fall back to the mean positive one
    return float(positive.double().mean()) if positive.numel() else 1.0


def gaussian_median(x: Tensor) -> Tensor:
    """Gaussian Gram ``exp(-||u-u'||^2 / (2 s^2))`` with ``s^2`` the median off-diagonal squared distance."""
    return _gram(x, "gaussian_median", 1.0)


def linear(x: Tensor) -> Tensor:
    """Linear Gram ``x x^T``; a 1-D integer tensor is one-hot class labels (``L_ij = [y_i == y_j]``)."""
    return _gram(x, "linear", 1.0)


def gram(x: Tensor, kernel: str = "gaussian", sigma: float = 5.0) -> Tensor:
    """Gram matrix of ``x`` (shape ``(m, ...)``, trailing dims flattened) for a kernel named in KERNELS."""
    check_choice("kernel", kernel, KERNELS)
    if kernel == "gaussian":
        check_positive("sigma", sigma)
    return _gram(x, kernel, sigma)


def center(k: Tensor) -> Tensor:
    """Centred Gram ``H K H`` in float64 via row, column and grand means (O(m^2), no explicit H)."""
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k must be a square matrix, got shape {tuple(k.shape)}")
    (k,) = _float64_ready(k)
    g = k.to(torch.float64, copy=True)  # then float64 only: mixed-dtype broadcasts are slow here
    row = g.mean(dim=1, keepdim=True)
    col = g.mean(dim=0, keepdim=True)
    return g.sub_(row).sub_(col.sub_(row.mean()))


def _gaussian_differentiable(x: Tensor, sigma: float) -> Tensor:
    """The Gaussian Gram of :func:`gaussian` built from out-of-place ops, so autograd reaches ``x``;
    in float32 at least and outside autocast (under --amp a bf16 Gram is not positive definite)."""
    with torch.autocast(x.device.type, enabled=False):
        f = x.reshape(x.shape[0], -1)
        if f.dtype in (torch.float16, torch.bfloat16):
            f = f.float()
        f = f - f.mean(dim=0, keepdim=True)
        sq = f.square().sum(dim=1)
        d = (sq[:, None] + sq[None, :] - 2.0 * (f @ f.T)).clamp(min=0.0)
        d = d * (1.0 - torch.eye(f.shape[0], dtype=f.dtype, device=f.device))  # zero diagonal
        return torch.exp(d * (-1.0 / (2.0 * sigma * sigma * f.shape[1])))


# ----------------------------------------------------------------------------------------------
# HSIC and NOCCO
# ----------------------------------------------------------------------------------------------
def hsic(
    a: Tensor,
    b: Tensor,
    *,
    kernel_a: str = "gaussian",
    kernel_b: str = "gaussian",
    sigma: float = 5.0,
) -> float:
    """Biased HSIC estimator ``tr(K_a H K_b H) / (m-1)^2`` (Gretton et al. 2005)."""
    _check_pair(a, b, kernel_a, kernel_b, sigma)
    a, b = _float64_ready(a, b)
    m = a.shape[0]
    ga = center(gram(a, kernel_a, sigma))
    kb = gram(b, kernel_b, sigma).to(torch.float64)
    return float((ga * kb).sum()) / (m - 1) ** 2


def _cholesky(a: Tensor) -> Tensor | None:
    """Upper Cholesky factor U (``A = U^T U``) of a symmetric float64 matrix, retried with jitter."""
    scale = 0.0
    for jitter in _CHOLESKY_JITTERS:
        if jitter:
            scale = scale or float(a.diagonal().abs().max())
            a = a.clone()
            a.diagonal().add_(jitter * scale)
        chol, info = torch.linalg.cholesky_ex(a, upper=True)
        if int(info) == 0:
            return chol
    return None


def nocco_operator(g: Tensor, eps: float = 1e-5) -> Tensor:
    """NOCCO operator ``R = I - eps m (G + eps m I)^-1`` (float64, Cholesky) of a centred Gram ``G``."""
    check_positive("eps", eps)
    if g.dim() != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"g must be a square matrix, got shape {tuple(g.shape)}")
    if g.shape[0] < MIN_SAMPLES:
        raise ValueError(f"g needs at least {MIN_SAMPLES} samples, got m = {g.shape[0]}")
    (g,) = _float64_ready(g)
    return _nocco_inplace(g.to(torch.float64, copy=True), eps)


def _nocco_inplace(g: Tensor, eps: float) -> Tensor:
    """``nocco_operator`` on a float64 G that the caller owns (overwritten: saves a copy)."""
    m = g.shape[0]
    c = eps * m
    g.diagonal().add_(c)
    chol = _cholesky(g)
    if chol is not None:
        r = torch.cholesky_inverse(chol, upper=True).mul_(-c)  # upper: faster here than lower
        r.diagonal().add_(1.0)
        # R is exactly symmetric; LAPACK hands it back column-major, so its transpose is the
        # row-major view of the same matrix (flat reductions then need no copy)
        return r.mT if not r.is_contiguous() and r.mT.is_contiguous() else r
    # G is far from PSD (should not happen for the kernels here): eigenvalues, clamped at 0.
    g.diagonal().sub_(c)
    lam, vec = torch.linalg.eigh(g)
    w = lam.clamp_(min=0.0)
    w = w / (w + c)
    return (vec * w) @ vec.T


def _is_constant(x: Tensor) -> bool:
    """True when every row (sample) equals the first: G = 0 exactly, so R = 0."""
    f = x.reshape(x.shape[0], -1)
    if not torch.equal(f[0], f[1]):  # the common case, decided in O(d)
        return False
    return bool((f == f[:1]).all())


def _operator(x: Tensor, kernel: str, sigma: float, eps: float) -> Tensor:
    """NOCCO operator of one input, with the constant-representation short cut (R = 0, no NaN)."""
    if _is_constant(x):
        return torch.zeros(x.shape[0], x.shape[0], dtype=torch.float64, device=x.device)
    return _nocco_inplace(center(gram(x, kernel, sigma)), eps)


#: up to this size (and on GPUs) an SPD inverse is LAPACK's Cholesky inverse (potrf + potri); above
#: it, on a CPU, recursive halving turns most of the work into matrix products and triangular
#: solves, which run faster than potrf here (m = 1,024: 25 vs 36 ms on one core, 16 vs 25 on two)
INVERSE_LEAF = 256


class _Halves(NamedTuple):
    """A symmetric matrix in blocks, ``[[p, -v], [-v^T, q]]`` (at a leaf ``p`` is all of it and
    ``v``, ``q`` are empty), with the upper Cholesky factor ``u`` when it is an SPD matrix's inverse
    and the factor was asked for. Blocks spare the copies of assembling a matrix that only a trace
    reads; ``p`` is itself in blocks only at the top of the recursion."""

    u: Tensor | None
    p: Tensor | _Halves
    v: Tensor
    q: Tensor

    def dense(self) -> Tensor:
        """The matrix as one tensor (the block itself at a leaf)."""
        p = self.p if isinstance(self.p, Tensor) else self.p.dense()
        if self.q.numel() == 0:
            return p
        h = p.shape[0]
        out = p.new_empty(h + self.q.shape[0], h + self.q.shape[0])
        out[:h, :h] = p
        torch.neg(self.v, out=out[:h, h:])
        out[h:, :h] = out[:h, h:].mT
        out[h:, h:] = self.q
        return out

    def trace(self) -> float:
        tr_p = float(self.p.diagonal().sum()) if isinstance(self.p, Tensor) else self.p.trace()
        return tr_p + float(self.q.diagonal().sum())

    def plus_outer(self, x: Tensor, y: Tensor, *, dense: bool) -> Tensor | _Halves:
        """The matrix plus ``x y^T`` (symmetric), written over this one's blocks; in blocks unless
        ``dense`` (only the upper blocks are updated, so ``x y^T`` must be symmetric)."""
        if dense or self.q.numel() == 0 or not isinstance(self.p, Tensor):
            return self.dense().addmm_(x, y.mT)
        k = self.p.shape[0]
        return _Halves(
            None,
            self.p.addmm_(x[:k], y[:k].mT),
            self.v.addmm_(x[:k], y[k:].mT, alpha=-1.0),
            self.q.addmm_(x[k:], y[k:].mT),
        )


def _spd_halves(a: Tensor, *, with_factor: bool, dense: bool = True) -> _Halves | None:
    """Factor and invert a symmetric positive definite float64 ``a``, or None when it is not
    positive definite (no jitter: the caller falls back). Only the entries on and above the
    diagonal of ``a`` are read (those below may be unset), and ``a`` is scratch space: its
    lower-right blocks receive Schur complements. ``dense=False``
    leaves the upper-left block of the inverse in blocks (for a trace).

    Above ``INVERSE_LEAF`` on a CPU, with ``A = [[A11, A12], [A12^T, A22]]`` and ``A11 = U11^T U11``
    from the recursion: ``Y = U11^-T A12`` (the factor's upper-right block), the Schur complement
    ``S = A22 - Y^T Y = U22^T U22`` (recursion again; its lower-left block is never read, so it is
    not formed), ``W = U11^-1 Y = A11^-1 A12``, ``V = W S^-1`` and
    ``A^-1 = [[A11^-1 + V W^T, -V], [-V^T, S^-1]]``: 4/3 m^3 flops, nearly all in matrix products.
    S comes from triangular solves, as in a blocked Cholesky: forming it with an explicit
    ``A11^-1`` instead loses up to 1e-3 relative in nHSIC on low-rank Grams with a small eps.
    """
    m = a.shape[0]
    if m <= INVERSE_LEAF or a.device.type != "cpu":
        chol, info = torch.linalg.cholesky_ex(a, upper=True)
        if int(info) != 0:
            return None
        if a.device.type == "cpu":  # U^-1 U^-T from a solve and a product: faster than potri here
            eye = torch.eye(m, dtype=a.dtype, device=a.device)
            t = torch.linalg.solve_triangular(chol, eye, upper=True)
            inv = t @ t.mT
        else:
            inv = torch.cholesky_inverse(chol, upper=True)
        return _Halves(chol, inv, inv.new_empty(m, 0), inv.new_empty(0, 0))
    h = m // 2
    first = _spd_halves(a[:h, :h], with_factor=True)
    if first is None or first.u is None:
        return None
    y = torch.linalg.solve_triangular(first.u.mT, a[:h, h:], upper=False)
    s = a[h:, h:]
    k = (m - h) // 2 if m - h > INVERSE_LEAF else m - h  # the split the recursion on S uses
    s[:k, :].addmm_(y[:, :k].mT, y, alpha=-1.0)
    if k < m - h:
        s[k:, k:].addmm_(y[:, k:].mT, y[:, k:], alpha=-1.0)
    second = _spd_halves(s, with_factor=with_factor)
    if second is None:
        return None
    w = torch.linalg.solve_triangular(first.u, y, upper=True)
    inv22 = second.dense()
    v = w @ inv22
    p = first.plus_outer(v, w, dense=dense)  # A11^-1 + V W^T over A11^-1's fresh blocks
    u = None
    if with_factor and second.u is not None:
        u = torch.zeros_like(a, memory_format=torch.contiguous_format)
        u[:h, :h] = first.u
        u[:h, h:] = y
        u[h:, h:] = second.u
    return _Halves(u, p, v, inv22)


def _ridged_inverse(
    x: Tensor, kernel: str, sigma: float, c: float, magnitude: float | None = None
) -> _Halves | None:
    """``(G + c I)^-1`` (float64, in blocks) of a non-constant input, or None when ``G + c I`` is
    not positive definite even with the jitter of ``_cholesky``. A Gaussian ``G`` is built only on
    and above the diagonal, all that the factorizations read."""

    def ridged() -> Tensor:
        if kernel == "gaussian":
            return _ridged_gaussian_upper(_features(x, magnitude), sigma, c)
        g = center(_gram(x, kernel, sigma, magnitude))
        g.diagonal().add_(c)
        return g

    halves = _spd_halves(ridged(), with_factor=False, dense=False)
    if halves is not None:
        return halves
    chol = _cholesky(ridged())  # the recursion used G as scratch space; retried with jitter
    if chol is None:
        return None
    inv = torch.cholesky_inverse(chol, upper=True)
    return _Halves(None, inv, inv.new_empty(inv.shape[0], 0), inv.new_empty(0, 0))


def _inner(x: Tensor, y: Tensor) -> float:
    """``sum(x * y)`` of two matrices of one shape, without copies when they share a layout."""
    if (
        not (x.is_contiguous() and y.is_contiguous())
        and x.mT.is_contiguous()
        and y.mT.is_contiguous()
    ):
        x, y = x.mT, y.mT
    if x.is_contiguous() and y.is_contiguous():
        return float(torch.vdot(x.reshape(-1), y.reshape(-1)))
    return float((x * y).sum())


def _inner_halves(a: _Halves, b: _Halves) -> float:
    """``sum(A * B)`` of two symmetric matrices in blocks, block by block where they split alike."""
    if a.v.shape == b.v.shape:
        if isinstance(a.p, Tensor) and isinstance(b.p, Tensor):
            return _inner(a.p, b.p) + 2.0 * _inner(a.v, b.v) + _inner(a.q, b.q)
        if isinstance(a.p, _Halves) and isinstance(b.p, _Halves):
            return _inner_halves(a.p, b.p) + 2.0 * _inner(a.v, b.v) + _inner(a.q, b.q)
    return _inner(a.dense(), b.dense())


def _trace_from_inverses(inv_a: _Halves, inv_b: _Halves, c: float) -> float:
    """``tr(R_a R_b)`` from ``A^-1`` and ``B^-1`` with ``A = G_a + cI``, ``B = G_b + cI``.

    With ``R = I - c A^-1``: ``m - c tr(A^-1) - c tr(B^-1) + c^2 tr(A^-1 B^-1)``, where the last
    trace is the sum of the elementwise product (both inverses are symmetric), read block by
    block. Two inverses (``_spd_halves``) cost less than a Cholesky factorization and three
    triangular solves against the identity, and no R is formed.
    """
    m = inv_a.v.shape[0] + inv_a.q.shape[0]
    return m - c * inv_a.trace() - c * inv_b.trace() + c * c * _inner_halves(inv_a, inv_b)


def _trace_product(ra: Tensor, rb: Tensor) -> float:
    """``tr(R_a R_b)`` for symmetric operators: the sum of the elementwise product (O(m^2))."""
    return float(torch.vdot(ra.reshape(-1), rb.reshape(-1)))


def _operator_pair(
    a: Tensor, b: Tensor, kernel_a: str, kernel_b: str, sigma: float, eps: float
) -> tuple[Tensor, Tensor]:
    """Validate a pair of inputs and return their NOCCO operators (R_a, R_b)."""
    _check_pair(a, b, kernel_a, kernel_b, sigma)
    check_positive("eps", eps)
    a, b = _float64_ready(a, b)
    return _operator(a, kernel_a, sigma, eps), _operator(b, kernel_b, sigma, eps)


def nhsic(
    a: Tensor,
    b: Tensor,
    *,
    kernel_a: str = "gaussian",
    kernel_b: str = "gaussian",
    sigma: float = 5.0,
    eps: float = 1e-5,
) -> float:
    """Normalized HSIC (NOCCO) ``tr(R_a R_b)``; not bounded by 1 (nHSIC(Y;Y) is about C - 1)."""
    mag_a, mag_b = _check_pair(a, b, kernel_a, kernel_b, sigma)
    check_positive("eps", eps)
    a, b = _float64_ready(a, b)
    if _is_constant(a) or _is_constant(b):
        return 0.0
    c = eps * a.shape[0]
    inv_a = _ridged_inverse(a, kernel_a, sigma, c, mag_a)
    inv_b = _ridged_inverse(b, kernel_b, sigma, c, mag_b) if inv_a is not None else None
    if inv_a is None or inv_b is None:  # not positive definite (should not happen): eigenvalues
        return _trace_product(
            _operator(a, kernel_a, sigma, eps), _operator(b, kernel_b, sigma, eps)
        )
    return _trace_from_inverses(inv_a, inv_b, c)


def nhsic_differentiable(
    a: Tensor,
    b: Tensor,
    *,
    kernel_b: str = "gaussian",
    sigma: float = 5.0,
    eps: float = 1e-5,
) -> Tensor:
    """:func:`nhsic` as a scalar tensor with a gradient with respect to ``a`` (and ``b`` when
    floating): Gaussian kernel on ``a`` (``kernel_b``: gaussian or linear, for ``b``), float64 after
    the Gram, ``R = G (G + eps m I)^-1`` by a Cholesky solve. For training losses (regularizers);
    the plane uses :func:`nhsic`."""
    _check_pair(a, b, "gaussian", kernel_b, sigma)
    check_positive("eps", eps)
    if kernel_b == "gaussian_median":
        raise ValueError("kernel_b must be 'gaussian' or 'linear' for the differentiable nHSIC")
    gb = _gaussian_differentiable(b, sigma) if kernel_b == "gaussian" else linear(b).to(a.device)
    return nhsic_with_operator(a, _differentiable_operator(gb, eps), sigma=sigma, eps=eps)


def _differentiable_operator(g: Tensor, eps: float) -> Tensor:
    """``R = I - eps m (HGH + eps m I)^-1`` of a Gram matrix (or a stack of them, (K, m, m)), in
    float64, built so autograd works."""
    m = g.shape[-1]
    c = eps * m
    eye = torch.eye(m, dtype=torch.float64, device=g.device)
    g = g.to(torch.float64)
    g = g - g.mean(dim=-1, keepdim=True) - g.mean(dim=-2, keepdim=True) + g.mean((-2, -1), True)
    return eye - c * torch.cholesky_inverse(torch.linalg.cholesky(g + c * eye))


def gaussian_operator(x: Tensor, sigma: float = 5.0, eps: float = 1e-5) -> Tensor:
    """The NOCCO operator R of ``x`` under the Gaussian kernel, float64, without a gradient: the
    fixed side of :func:`nhsic_with_operator` (compute it once per batch, reuse it per block)."""
    _check_tensor("x", x, min_samples=MIN_SAMPLES)
    check_positive("sigma", sigma)
    check_positive("eps", eps)
    with torch.no_grad():
        return _operator(x.detach(), "gaussian", sigma, eps)


def nhsic_with_operator(a: Tensor, r_b: Tensor, *, sigma: float = 5.0, eps: float = 1e-5) -> Tensor:
    """``tr(R_a R_b)`` with a gradient with respect to ``a`` (Gaussian kernel) against a given
    operator ``r_b`` (e.g. :func:`gaussian_operator` of the network input)."""
    return nhsic_with_operators([a], r_b, sigma=sigma, eps=eps)[0]


def nhsic_with_operators(
    zs: Sequence[Tensor], r_b: Tensor, *, sigma: float = 5.0, eps: float = 1e-5
) -> Tensor:
    """:func:`nhsic_with_operator` for several representations of the same samples at once (one
    batched factorization): a tensor (K,) for the K entries of ``zs``; ``r_b`` is one operator
    (m, m) shared by all, or one per entry (K, m, m)."""
    if not zs:
        raise ValueError("zs must hold at least one representation")
    m = zs[0].shape[0]
    for z in zs:
        _check_tensor("zs entries", z, min_samples=MIN_SAMPLES)
        if z.shape[0] != m:
            raise ValueError(
                f"zs entries must share their number of samples, got {z.shape[0]} != {m}"
            )
    if (
        r_b.shape[-2:] != (m, m)
        or r_b.dim() not in (2, 3)
        or (r_b.dim() == 3 and len(r_b) != len(zs))
    ):
        raise ValueError(f"r_b must be ({m}, {m}) or ({len(zs)}, {m}, {m}), got {tuple(r_b.shape)}")
    r_a = differentiable_operators(zs, sigma=sigma, eps=eps)
    return (r_a * r_b.to(device=r_a.device, dtype=torch.float64)).sum(dim=(-2, -1))


def differentiable_operators(
    zs: Sequence[Tensor], *, sigma: float = 5.0, eps: float = 1e-5
) -> Tensor:
    """The NOCCO operators (K, m, m) of K representations of the same m samples under the Gaussian
    kernel, float64 after the Gram, with a gradient to every entry of ``zs`` (one batched
    factorization)."""
    grams = torch.stack([_gaussian_differentiable(z, sigma).to(torch.float64) for z in zs])
    return _differentiable_operator(grams, eps)


def nhsic_cka(
    a: Tensor,
    b: Tensor,
    *,
    kernel_a: str = "gaussian",
    kernel_b: str = "gaussian",
    sigma: float = 5.0,
    eps: float = 1e-5,
) -> float:
    """Our addition (not in the paper): ``tr(R_a R_b) / sqrt(tr(R_a^2) tr(R_b^2))`` in [0, 1]; 0 if constant."""
    ra, rb = _operator_pair(a, b, kernel_a, kernel_b, sigma, eps)
    denom = math.sqrt(_trace_product(ra, ra) * _trace_product(rb, rb))
    if denom == 0.0:
        return 0.0
    return min(1.0, max(0.0, _trace_product(ra, rb) / denom))


# ----------------------------------------------------------------------------------------------
# approximate mode (ours): low-rank features F with K ~ F F^T
# ----------------------------------------------------------------------------------------------
def _nystrom_features(
    f: Tensor, kernel: str, sigma: float, rank: int, gen: torch.Generator
) -> Tensor:
    """Nystrom features ``K[:, S] W^{-1/2}`` from ``rank`` landmarks S drawn without replacement."""
    m = f.shape[0]
    idx = torch.randperm(m, generator=gen)[:rank].to(f.device)
    land = f[idx]
    if kernel == "linear":
        c = f @ land.T
    else:
        mu = f.mean(dim=0, keepdim=True)
        fc, lc = f - mu, land - mu
        sq_f = torch.linalg.vector_norm(fc, dim=1).square()
        sq_l = torch.linalg.vector_norm(lc, dim=1).square()
        d = (
            torch.addmm(sq_f.unsqueeze(1), fc, lc.T, alpha=-2.0)
            .add_(sq_l.unsqueeze(0))
            .clamp_(min=0)
        )
        if kernel == "gaussian":
            two_s2 = 2.0 * sigma * sigma * f.shape[1]
        else:  # gaussian_median: bandwidth from the landmarks' own pairwise distances
            two_s2 = 2.0 * _median_sq_dist(_scaled_sq_dists(land))
        c = d.mul_(-1.0 / two_s2).exp_()
    c = c.to(torch.float64)
    w = c[idx]
    w = 0.5 * (w + w.T)
    lam, vec = torch.linalg.eigh(w)
    keep = lam > lam.max().clamp(min=0) * 1e-12
    return c @ (vec[:, keep] / lam[keep].sqrt())


def _rff_features(f: Tensor, kernel: str, sigma: float, rank: int, gen: torch.Generator) -> Tensor:
    """Random Fourier features ``sqrt(2/r) cos(W u + b)`` of the Gaussian kernel (Rahimi & Recht)."""
    fc = f - f.mean(dim=0, keepdim=True)
    if kernel == "gaussian":
        s = sigma * math.sqrt(f.shape[1])
    else:
        s = math.sqrt(_median_sq_dist(_scaled_sq_dists(fc)))
    w = torch.randn(f.shape[1], rank, generator=gen, dtype=torch.float64).to(f.device, f.dtype)
    b = (torch.rand(rank, generator=gen, dtype=torch.float64) * 2 * math.pi).to(f.device, f.dtype)
    z = torch.addmm(b, fc, w, alpha=1.0 / s).cos_()
    return z.to(torch.float64).mul_(math.sqrt(2.0 / rank))


def _lowrank_features(
    x: Tensor, kernel: str, sigma: float, rank: int, method: str, gen: torch.Generator
) -> Tensor:
    """Centred float64 features ``H F`` (m x r) with ``G ~ (H F)(H F)^T``."""
    if _is_constant(x):
        return torch.zeros(x.shape[0], 1, dtype=torch.float64, device=x.device)
    if kernel == "linear" and x.dim() == 1:
        f = torch.nn.functional.one_hot(x.long()).to(torch.float64)  # exact features of labels
    else:
        f = _features(x)
        if kernel == "linear" and f.shape[1] <= rank:
            f = f.to(torch.float64)  # exact features
        elif method == "nystrom" or kernel == "linear":
            f = _nystrom_features(f, kernel, sigma, min(rank, x.shape[0]), gen)
        else:
            f = _rff_features(f, kernel, sigma, rank, gen)
    return f - f.mean(dim=0, keepdim=True)


def nhsic_approx(
    a: Tensor,
    b: Tensor,
    *,
    rank: int = 512,
    method: str = "nystrom",
    kernel_a: str = "gaussian",
    kernel_b: str = "gaussian",
    sigma: float = 5.0,
    eps: float = 1e-5,
    seed: int = 0,
) -> float:
    """Our addition: nHSIC from rank-``rank`` features (Nystrom landmarks or random Fourier features).

    With centred features ``G ~ F F^T`` the operator is ``R ~ F (F^T F + eps m I)^-1 F^T`` and
    ``tr(R_a R_b) = ||U_a^-T F_a^T F_b U_b^-1||_F^2`` with ``U^T U = F^T F + eps m I``
    (Cholesky): O(m r^2 + r^3) after the O(m r d) features instead of O(m^3). Eigenvalues of G below the rank-r cut are dropped, so the value is biased low when G has
    many eigenvalues above ``eps m`` beyond the rank (see the benchmark for measured errors). Labels
    (1-D integers with a linear kernel) and linear kernels with ``d <= rank`` use exact features.
    """
    _check_pair(a, b, kernel_a, kernel_b, sigma)
    check_positive("eps", eps)
    check_choice("method", method, APPROX_METHODS)
    rank = check_int("rank", rank, minimum=1)
    gen = torch.Generator().manual_seed(seed)
    a, b = _float64_ready(a, b)
    fa = _lowrank_features(a, kernel_a, sigma, rank, method, gen)
    fb = _lowrank_features(b, kernel_b, sigma, rank, method, gen)
    c = eps * a.shape[0]
    factors = []
    for f in (fa, fb):
        gram_f = f.T @ f
        gram_f.diagonal().add_(c)
        chol = _cholesky(gram_f)
        if chol is None:  # cannot happen for a PSD F^T F plus a positive ridge
            raise RuntimeError("Cholesky of F^T F + eps m I failed")
        factors.append(chol)
    # ||U_a^-T C U_b^-1||_F^2 with C = F_a^T F_b and F^T F + eps m I = U^T U
    cross = torch.linalg.solve_triangular(factors[0].T, fa.T @ fb, upper=False)
    cross = torch.linalg.solve_triangular(factors[1].T, cross.T, upper=False)
    return float(cross.square().sum())


def _sqrt_factor(
    x: Tensor, kernel: str, sigma: float, eps: float, *, with_norm: bool = False
) -> tuple[Tensor, float] | tuple[Tensor, float, float]:
    """``(S, tr R[, tr R^2])`` with ``R = S S^T`` (eigendecomposition of the centred Gram, float64)."""
    m = x.shape[0]
    if _is_constant(x):
        empty = torch.zeros(m, 0, dtype=torch.float64, device=x.device)
        return (empty, 0.0, 0.0) if with_norm else (empty, 0.0)
    lam, vec = torch.linalg.eigh(center(gram(x, kernel, sigma)))
    tol = m * torch.finfo(torch.float64).eps * float(lam[-1])
    keep = lam > tol
    lam, vec = lam[keep], vec[:, keep]
    w = lam / (lam + eps * m)
    if with_norm:
        return vec * w.sqrt(), float(w.sum()), float(w.square().sum())
    return vec * w.sqrt(), float(w.sum())


# ----------------------------------------------------------------------------------------------
# information plane evaluator
# ----------------------------------------------------------------------------------------------
class InfoPlane(ChunkedPlane):
    """nHSIC(X;Z) and nHSIC(Y;Z) per layer on a fixed evaluation set split in chunks of m samples.

    X and Z use the Gaussian kernel with ``bandwidth="fixed"`` (sigma * sqrt(d), the paper's) or
    ``"median"`` (median heuristic per chunk); Y the linear kernel on one-hot labels
    (docs/method.md §3). The X and Y sides are factorized once per chunk in ``__init__``:
    ``R = S S^T`` from the eigendecomposition of the centred Gram (directions with eigenvalue below
    the float64 rank tolerance ``m * 2.2e-16 * lambda_max`` are dropped as numerically zero), so that a
    measurement only factorizes ``G_Z + eps m I = U^T U`` (Cholesky) and reads
    ``tr(R_X R_Z) = tr(R_X) - eps m ||U^-T S_X||_F^2`` (same for Y) from one triangular solve.
    This equals ``nhsic`` on the chunk to float64 rounding (about 1e-12 relative);
    ``normalized=True`` (the estimator ``nhsic_cka``) divides by ``sqrt(tr(R_X^2) tr(R_Z^2))``.
    The permutation floor (``floor_perms`` = k > 0, or ``floor=True`` for k = 1) is the same estimator
    with the rows of Z shuffled: k fixed permutations per chunk, drawn from a generator seeded by
    ``seed + i``; replicate j averages permutation j over the chunks, and the floor's mean and std
    (ddof=1) are taken over the k replicates. ``device`` (default: that of ``x_eval``) holds the
    caches and does the work; ``"mps"`` means the CPU (MPS has no float64).
    """

    def __init__(
        self,
        x_eval: Tensor,
        y_eval: Tensor,
        *,
        chunk_size: int = 256,
        sigma: float = 5.0,
        eps: float = 1e-5,
        device: str | torch.device | None = None,
        floor: bool = False,
        seed: int = 0,
        floor_perms: int | None = None,
        bandwidth: str = "fixed",
        normalized: bool = False,
    ) -> None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=MIN_SAMPLES)
        check_positive("sigma", sigma)
        check_positive("eps", eps)
        check_choice("bandwidth", bandwidth, BANDWIDTHS)
        if not isinstance(normalized, bool):
            raise ValueError(f"normalized must be True or False, got {normalized!r}")
        if floor_perms is None:
            floor_perms = 1 if floor else 0
        floor_perms = check_int("floor_perms", floor_perms, minimum=0)
        _check_tensor("x_eval", x_eval, min_samples=MIN_SAMPLES)
        if not isinstance(y_eval, Tensor) or y_eval.dim() != 1 or not _is_integer(y_eval):
            desc = (
                f"shape {tuple(y_eval.shape)}, dtype {y_eval.dtype}"
                if isinstance(y_eval, Tensor)
                else type(y_eval).__name__
            )
            raise ValueError(f"y_eval must be a 1-D integer tensor of class labels, got {desc}")
        n = x_eval.shape[0]
        if y_eval.shape[0] != n:
            raise ValueError(
                f"x_eval and y_eval must have the same length, got {n} and {y_eval.shape[0]}"
            )
        if n % chunk_size:
            raise ValueError(
                f"the evaluation set size N = {n} must be a multiple of chunk_size = {chunk_size}"
            )
        if bool((y_eval < 0).any()):
            raise ValueError(f"y_eval labels must be >= 0, got min {int(y_eval.min())}")
        self.device = _compute_device(torch.device(device) if device is not None else x_eval.device)
        self.chunk_size = chunk_size
        self.sigma = float(sigma)
        self.eps = float(eps)
        self.floor_perms = floor_perms
        self.floor = floor_perms > 0
        self.bandwidth = bandwidth
        self.normalized = normalized
        self.kernel = "gaussian" if bandwidth == "fixed" else "gaussian_median"
        self.num_chunks = n // chunk_size
        self._x = x_eval.to(self.device)
        self._y = y_eval.to(self.device)
        self.seed = int(seed)
        # per chunk: S = [S_X | S_Y (| S_X, S_Y with rows permuted, per permutation)], the column
        # counts, the traces tr(R) and (for CKA) the squared norms tr(R^2) of every cached block
        self._factors: list[Tensor] = []
        self._widths: list[list[int]] = []
        self._blocks: list[Tensor] = []  # (columns x blocks) 0/1: sums columns per block
        self._traces: list[Tensor] = []
        self._sq_norms: list[tuple[float, float]] = []
        for i in range(self.num_chunks):
            xi, yi = self.chunk(i)
            sx, tx, nx = _sqrt_factor(xi, self.kernel, self.sigma, self.eps, with_norm=True)
            sy, ty, ny = _sqrt_factor(yi, "linear", self.sigma, self.eps, with_norm=True)
            blocks = [(sx, tx), (sy, ty)]
            self._sq_norms.append((nx, ny))
            if self.floor:
                # rows of Z shuffled by perm: R_Z -> P R_Z P^T, so tr(R_X P R_Z P^T) uses S_X[inv]
                gen = torch.Generator().manual_seed(self.seed + i)
                for _ in range(floor_perms):
                    perm = torch.randperm(chunk_size, generator=gen)
                    inv = torch.argsort(perm).to(self.device)
                    blocks += [(sx[inv], tx), (sy[inv], ty)]
            factor = torch.cat([f for f, _ in blocks], dim=1)
            self._factors.append(factor.mT.contiguous().mT)  # column-major, as LAPACK wants it
            self._widths.append([f.shape[1] for f, _ in blocks])
            owner = torch.repeat_interleave(torch.tensor(self._widths[-1]))  # column -> block
            self._blocks.append(
                torch.nn.functional.one_hot(owner, len(blocks)).to(torch.float64).to(self.device)
            )
            self._traces.append(torch.tensor([t for _, t in blocks], dtype=torch.float64))

    def measure_chunk(self, i: int, reps: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
        """Per layer ``{"nhsic_xz", "nhsic_yz"[, "floor_xz", "floor_yz", "floor_xz/j", ...]}`` for
        chunk i (pure); ``floor_*`` is the mean over the chunk's permutations, ``floor_*/j`` each one."""
        self.chunk(i)  # validates i
        for name, z in reps.items():
            check_rows(name, z, self.chunk_size, str(self.chunk_size))
        out: dict[str, dict[str, float]] = {}
        for name, z in reps.items():
            z = z.detach().to(self.device)
            if not _all_finite(z):
                raise ValueError(f"layer {name!r} contains NaN or Inf values (chunk {i})")
            values = self._traces_against(i, z)
            res = {"nhsic_xz": values[0], "nhsic_yz": values[1]}
            if self.floor:
                fx, fy = values[2::2], values[3::2]
                res["floor_xz"] = sum(fx) / len(fx)
                res["floor_yz"] = sum(fy) / len(fy)
                for j in range(self.floor_perms):
                    res[f"floor_xz/{j}"] = fx[j]
                    res[f"floor_yz/{j}"] = fy[j]
            out[name] = res
        return out

    def _traces_against(self, i: int, z: Tensor) -> list[float]:
        """The estimator of every cached block k of chunk i against z (X, Y, then permuted ones)."""
        if _is_constant(z):
            return [0.0] * len(self._widths[i])
        c = self.eps * self.chunk_size
        g = center(gram(z, self.kernel, self.sigma))
        g.diagonal().add_(c)
        chol = _cholesky(g)
        s = self._factors[i]
        if chol is not None:
            w = torch.linalg.solve_triangular(chol.mT, s, upper=False)
            sums = torch.linalg.vector_norm(w, dim=0).square_() @ self._blocks[i]
            values = (self._traces[i] - c * sums.cpu()).tolist()
            if self.normalized:
                v = torch.linalg.solve_triangular(
                    chol,
                    torch.eye(self.chunk_size, dtype=chol.dtype, device=chol.device),
                    upper=True,
                )  # A^-1 = V V^T
                tr_inv = float(torch.linalg.vector_norm(v).square())
                tr_inv2 = float(torch.linalg.vector_norm(v.mT @ v).square())
                z_sq = self.chunk_size - 2 * c * tr_inv + c * c * tr_inv2
                values = self._cka(i, values, z_sq)
            return values
        # not positive definite (should not happen): R_Z from clamped eigenvalues
        g.diagonal().sub_(c)
        lam, vec = torch.linalg.eigh(g)
        lam = lam.clamp_(min=0.0)
        w = lam / (lam + c)
        proj = (s.T @ (vec * w.sqrt())).square_()
        values = [float(b.sum()) for b in proj.split(self._widths[i], dim=0)]
        if self.normalized:
            values = self._cka(i, values, float(w.square().sum()))
        return values

    def _cka(self, i: int, values: list[float], z_sq: float) -> list[float]:
        """nHSIC values of chunk i divided by sqrt(tr(R_side^2) tr(R_Z^2)), clamped to [0, 1]."""
        nx, ny = self._sq_norms[i]
        out = []
        for k, value in enumerate(values):
            denom = math.sqrt((nx if k % 2 == 0 else ny) * z_sq)
            out.append(min(1.0, max(0.0, value / denom)) if denom > 0 else 0.0)
        return out
