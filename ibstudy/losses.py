"""Local losses for layer-wise training and the soft-nearest-neighbour loss (docs/method.md §4, §7).

All functions flatten representations to (N, D). Pairwise squared distances (:func:`sq_dists`) are
built as ||u||^2 + ||v||^2 - 2 u.v (clamped >= 0, diagonal exactly 0), never as an N x N x D
broadcast.

Relation to HSIC (docs/method.md §4). With K_ij = exp(-||z_i - z_j||^2 / T) (so K_ii = 1), one-hot
labels L = Y Y^T, H = I - 11^T/m and balanced classes, (H L H)_ij = L_ij - 1/C, hence exactly

    tr(K H L H) = sum_i D_i (rbar_i - 1/C)
                = sum_i D'_i (r_i - 1/C) + m (1 - 1/C),

where D_i = sum_j K_ij is the full row sum (diagonal included), rbar_i the same-class share of D_i
(j = i counted), D'_i = D_i - 1 the off-diagonal row sum and r_i = :func:`same_class_share` (j != i,
the quantity inside the SNN loss). By Jensen, mean_i r_i >= exp(-L_SNN). :func:`snn_hsic_identity`
evaluates both sides; :func:`kernel_mass` is the factor D'_i / (m - 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ibstudy.hsic import center

LOCAL_LOSSES: tuple[str, ...] = ("cross_entropy", "supcon", "similarity_matching")


def _check_batch(name: str, z: Tensor, y: Tensor) -> None:
    if z.dim() < 2:
        raise ValueError(f"{name} must have shape (N, ...), got {tuple(z.shape)}")
    if y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"y must have shape ({z.shape[0]},) to match {name}, got {tuple(y.shape)}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def sq_dists(z: Tensor) -> Tensor:
    """(N, N) squared Euclidean distances of the rows of ``z`` (N, ...), in ``z``'s dtype.

    Built from norms and one matmul, clamped at 0; the diagonal is exactly 0, the off-diagonal part
    symmetric up to matmul rounding.
    """
    if not isinstance(z, Tensor) or z.dim() < 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a tensor of shape (N, ...), got {shape}")
    zf = z.flatten(1)
    sq = (zf * zf).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * (zf @ zf.T)).clamp_min(0.0)
    return dist.fill_diagonal_(0.0)


def _gram(z: Tensor, temperature: float) -> Tensor:
    """K_ij = exp(-||z_i - z_j||^2 / T) (N, N), K_ii = 1 exactly."""
    return torch.exp(-sq_dists(z) / temperature)


def _log_shares(z: Tensor, y: Tensor, temperature: float) -> Tensor:
    """log r_i for every i: log of the same-class (j != i) share of exp(-||z_i-z_j||^2/T), j != i."""
    zf = z.flatten(1)
    logits = -sq_dists(zf) / temperature
    eye = torch.eye(zf.shape[0], dtype=torch.bool, device=zf.device)
    logits = logits.masked_fill(eye, float("-inf"))
    same = (y[:, None] == y[None, :]) & ~eye
    log_num = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    log_den = torch.logsumexp(logits, dim=1)
    return log_num - log_den


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of (N, C) logits against integer labels (N,)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    _check_batch("logits", logits, y)
    return F.cross_entropy(logits, y)


def supcon_loss(
    z1: Tensor, z2: Tensor, y: Tensor, temperature: float = 0.1, base_temperature: float = 0.07
) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) over two views; rows L2-normalized.

    Every one of the 2N anchors contrasts against the other 2N-1 samples; its positives are the
    samples with its label (its other view included); the loss is scaled by T / base_T.
    """
    _check_batch("z1", z1, y)
    if z2.shape != z1.shape:
        raise ValueError(f"z2 must have the shape of z1 {tuple(z1.shape)}, got {tuple(z2.shape)}")
    _check_temperature("temperature", temperature)
    _check_temperature("base_temperature", base_temperature)
    f = F.normalize(torch.cat([z1.flatten(1), z2.flatten(1)], dim=0), dim=1)
    labels = torch.cat([y, y])
    n2 = f.shape[0]
    eye = torch.eye(n2, dtype=torch.bool, device=f.device)
    logits = (f @ f.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    mean_log_prob_pos = log_prob.masked_fill(~pos, 0.0).sum(dim=1) / pos.sum(dim=1)
    return -(temperature / base_temperature) * mean_log_prob_pos.mean()


def similarity_matching_loss(z: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """MSE between the cosine-similarity matrix of flattened ``z`` and that of one-hot ``y``.

    Nokland & Eidnes (2019) use this as a local loss; a zero row has similarity 0 to everything.
    """
    _check_batch("z", z, y)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"y must lie in [0, num_classes={num_classes}), got {y.min()}..{y.max()}")
    zn = F.normalize(z.flatten(1), dim=1)
    sim_z = zn @ zn.T
    sim_y = (y[:, None] == y[None, :]).to(sim_z.dtype)  # cosine of one-hot rows
    return F.mse_loss(sim_z, sim_y)


def snn_loss(z: Tensor, y: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft-nearest-neighbour loss (Frosst et al. 2019): -mean_i log r_i, via logsumexp.

    Points without a same-class partner in the batch (r_i = 0) are left out of the mean; a
    batch where every point is such a singleton raises ``ValueError``.
    """
    _check_batch("z", z, y)
    _check_temperature("temperature", temperature)
    log_r = _log_shares(z, y, temperature)
    ok = torch.isfinite(log_r)
    if not bool(ok.any()):
        raise ValueError("snn_loss needs at least two samples of one class in the batch")
    return -log_r[ok].mean()


def same_class_share(z: Tensor, y: Tensor, temperature: float = 1.0) -> Tensor:
    """r_i (N,): share of point i's kernel mass exp(-||z_i-z_j||^2/T), j != i, on its own class."""
    _check_batch("z", z, y)
    _check_temperature("temperature", temperature)
    if z.shape[0] < 2:
        raise ValueError(f"same_class_share needs at least 2 samples, got {z.shape[0]}")
    return _log_shares(z, y, temperature).exp()


def kernel_mass(z: Tensor, temperature: float = 1.0) -> Tensor:
    """D'_i / (N-1) (N,): mean of exp(-||z_i - z_j||^2 / T) over j != i, in ``z``'s dtype."""
    if not isinstance(z, Tensor) or z.dim() < 2 or z.shape[0] < 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a tensor of shape (N >= 2, ...), got {shape}")
    _check_temperature("temperature", temperature)
    k = _gram(z, temperature)
    return (k.sum(dim=1) - 1.0) / (k.shape[0] - 1)


def snn_hsic_identity(z: Tensor, y: Tensor, temperature: float = 1.0) -> dict[str, float]:
    """Both sides of the exact identity linking HSIC(Y;Z) and the SNN loss, in float64.

    With ``K_ij = exp(-||z_i - z_j||^2 / T)`` (so ``K_ii = 1``), ``L = [y_i == y_j]`` and ``C``
    balanced classes, ``(H L H)_ij = L_ij - 1/C`` and therefore

        tr(K H L H) = sum_i D_i (rbar_i - 1/C)                       ("rhs_full")
                    = sum_i D'_i (r_i - 1/C) + m (1 - 1/C)            ("rhs")

    where ``D_i = sum_j K_ij``, ``rbar_i`` is the same-class share of ``D_i`` (j = i included),
    ``D'_i = D_i - 1`` and ``r_i`` is the SNN share (j != i). ``lhs`` is computed directly from the
    centred Gram (no use of balance). Also returned: ``hsic = lhs / (m-1)^2`` (biased HSIC), the SNN
    loss, ``exp(-L_SNN)``, ``mean_r`` (Jensen: ``mean_r >= exp(-L_SNN)``), and ``abs_diff``.
    """
    if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[0] < 4:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a tensor of shape (m >= 4, d), got {shape}")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"y must be a 1-D label tensor of length {z.shape[0]}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
    t = temperature
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    counts = torch.unique(y, return_counts=True)[1]
    if counts.numel() < 2 or bool((counts != counts[0]).any()) or int(counts[0]) < 2:
        raise ValueError(
            f"y must hold >= 2 balanced classes of >= 2 samples each, got counts {counts.tolist()}"
        )
    m, c = z.shape[0], counts.numel()
    zd = z.detach().to(torch.float64)
    yd = y.detach()
    k = _gram(zd, temperature)
    same = (yd[:, None] == yd[None, :]).to(torch.float64)
    lhs = float((center(k) * same).sum())  # tr(HKH L) = tr(K HLH)
    d_full = k.sum(dim=1)
    rbar = (k * same).sum(dim=1) / d_full
    rhs_full = float((d_full * (rbar - 1.0 / c)).sum())
    r = same_class_share(zd, yd, temperature)
    rhs = float(((d_full - 1.0) * (r - 1.0 / c)).sum()) + m * (1.0 - 1.0 / c)
    loss = float(snn_loss(zd, yd, temperature))
    return {
        "lhs": lhs,
        "rhs": rhs,
        "rhs_full": rhs_full,
        "abs_diff": max(abs(lhs - rhs), abs(lhs - rhs_full)),
        "hsic": lhs / (m - 1) ** 2,
        "snn_loss": loss,
        "exp_neg_snn": math.exp(-loss),
        "mean_r": float(r.mean()),
        "num_classes": float(c),
        "m": float(m),
    }
