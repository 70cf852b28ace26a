"""Linear probes on pooled block outputs (docs/method.md §9).

Protocol: model frozen in eval mode; each block's output pooled exactly as the auxiliary heads pool
it (:func:`ibstudy.heads.pool_features`, <= 2048 features); features standardized with training
statistics; multinomial logistic regression with an L2 penalty fitted by full-batch L-BFGS (strong
Wolfe line search) for a fixed iteration budget; train and test accuracy reported per block.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ibstudy.heads import pool_features
from ibstudy.models import BlockNet


def _check_split(name: str, feats: Tensor, y: Tensor, num_classes: int) -> None:
    if feats.dim() < 2 or feats.shape[0] == 0:
        raise ValueError(
            f"{name}_feats must have shape (N, ...) with N >= 1, got {tuple(feats.shape)}"
        )
    if y.dim() != 1 or y.shape[0] != feats.shape[0]:
        raise ValueError(
            f"{name}_y must have shape ({feats.shape[0]},) to match {name}_feats, got {tuple(y.shape)}"
        )
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"{name}_y must hold integer class labels, got dtype {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"{name}_y must lie in [0, num_classes={num_classes}), got {int(y.min())}..{int(y.max())}"
        )


def fit_probe(
    train_feats: Tensor,
    train_y: Tensor,
    test_feats: Tensor,
    test_y: Tensor,
    num_classes: int,
    *,
    steps: int = 200,
    lr: float = 1.0,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[float, float]:
    """Fit a multinomial logistic-regression probe; return ``(train_acc, test_acc)``.

    Loss = mean cross-entropy + ``weight_decay``/2 * ||W||^2 (bias not penalized), minimized by
    ``torch.optim.LBFGS`` for at most ``steps`` iterations from a ``seed``-determined small init.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    _check_split("train", train_feats, train_y, num_classes)
    _check_split("test", test_feats, test_y, num_classes)
    xtr, xte = train_feats.flatten(1).float(), test_feats.flatten(1).float()
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(
            f"train_feats and test_feats must have the same feature count, "
            f"got {xtr.shape[1]} and {xte.shape[1]}"
        )
    device = xtr.device
    xte, ytr, yte = xte.to(device), train_y.to(device), test_y.to(device)

    mean = xtr.mean(dim=0)
    std = xtr.std(dim=0, correction=0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    xtr, xte = (xtr - mean) / std, (xte - mean) / std

    gen = torch.Generator().manual_seed(seed)
    w0 = 0.01 * torch.randn(xtr.shape[1], num_classes, generator=gen)
    # class-major (C, D), as nn.Linear stores it: the logits are one addmm and the gradient
    # G^T X, while X @ W (D, C) and its gradient X^T G hit BLAS's slow skinny-matrix paths
    # (7x the probe's time under MKL on an AMD CPU; docs/method.md §9)
    weight = w0.T.contiguous().to(device).requires_grad_(True)
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=lr,
        max_iter=steps,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(xtr, weight, bias), ytr)
        loss = loss + 0.5 * weight_decay * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        train_acc = (F.linear(xtr, weight, bias).argmax(dim=1) == ytr).float().mean().item()
        test_acc = (F.linear(xte, weight, bias).argmax(dim=1) == yte).float().mean().item()
    return train_acc, test_acc


@torch.no_grad()
def block_features(
    model: BlockNet, x: Tensor, batch_size: int = 256, *, max_features: int = 2048
) -> list[Tensor]:
    """Every block's pooled output for ``x`` (eval mode, in batches, on the model's device).

    The model's previous train/eval mode is restored afterwards.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chunks: list[list[Tensor]] = [[] for _ in model.blocks]
        for start in range(0, x.shape[0], batch_size):
            _, outs = model(x[start : start + batch_size].to(device), return_blocks=True)
            for acc, z in zip(chunks, outs, strict=True):
                acc.append(pool_features(z, max_features))
    finally:
        model.train(was_training)
    return [torch.cat(c) for c in chunks]


def probe_blocks(
    model: BlockNet,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    num_classes: int,
    *,
    steps: int = 200,
    seed: int = 0,
    blocks: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One probe per block (or per index in ``blocks``); columns ``layer``, ``layer_index``,
    ``probe_train_acc``, ``probe_test_acc``. Each probe depends on its block alone."""
    columns = ["layer", "layer_index", "probe_train_acc", "probe_test_acc"]
    num_blocks = len(model.blocks)
    chosen = list(range(num_blocks)) if blocks is None else list(blocks)
    bad = [
        b
        for b in chosen
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < num_blocks
    ]
    if bad or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"blocks must be distinct block indices in [0, {num_blocks - 1}], got {list(chosen)}"
        )
    if y_train.dim() != 1 or y_train.shape[0] != x_train.shape[0]:
        raise ValueError(
            f"y_train must have shape ({x_train.shape[0]},), got {tuple(y_train.shape)}"
        )
    if y_test.dim() != 1 or y_test.shape[0] != x_test.shape[0]:
        raise ValueError(f"y_test must have shape ({x_test.shape[0]},), got {tuple(y_test.shape)}")
    if not chosen:
        return pd.DataFrame(columns=columns)
    feats_train = block_features(model, x_train)
    feats_test = block_features(model, x_test)
    rows = []
    for i in chosen:
        tr, te = fit_probe(
            feats_train[i], y_train, feats_test[i], y_test, num_classes, steps=steps, seed=seed
        )
        rows.append(
            {"layer": model.block_names[i], "layer_index": i, "probe_train_acc": tr,
             "probe_test_acc": te}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
