"""The toy experiment of paper Fig 4 (docs/method.md §4-5): a linear first layer on 2-D data.

Model *[ours where the paper is silent]*. One network serves both methods:

- first layer ``Z1 = W x`` (2 -> 2, **no bias**, as in the paper's ``Z1 = W x``), initialized
  orthogonal so that training starts from an isotropic ``Z1``. By default ``W`` has a fixed
  Frobenius norm, ``W = weight_norm * V / ||V||_F`` with ``weight_norm = sqrt(2)`` (the norm of the
  identity and of the paper's ``diag(sqrt(1.9), sqrt(0.1))``): representations stay bounded (the
  hypothesis of Theorem 1) and the layer can only *redistribute* its gain between directions.
  ``weight_norm=None`` trains an unconstrained ``W``.
- an auxiliary linear classifier ``v`` (2 -> 2 logits, with bias) on ``Z1``, initialized at zero:
  its first local gradient to W is then ``W g g^T`` (g the class-difference direction of X), so W
  stretches the label direction and v lines up with the stretched axis, the picture of paper Fig 4.
  (The linear classifier's loss depends only on ``W^T v``, so W's final shape is an implicit bias of
  the optimizer, not forced by the loss; with a random v, or SGD with heavy momentum, the stretched
  axis can end up elsewhere; ``aux_init="random"`` starts v at torch's default initialization.)
- an upper ReLU MLP on ``Z1`` (``depth`` hidden layers of ``hidden`` units, then 2 logits).

Training (full-batch Adam by default, or mini-batches with ``batch_size``), one optimizer step over
all parameters per step:

- ``layerwise``: ``Z1`` gets gradient only from the local loss (cross-entropy of ``v``, or the SNN
  loss of ``Z1``); the MLP trains on ``Z1.detach()`` (the final classifier of docs/method.md §7).
- ``e2e``: ``Z1`` gets gradient only from the MLP's output cross-entropy; ``v`` trains on
  ``Z1.detach()`` as a linear probe, so both methods have an auxiliary direction to plot along.

Measurements on a held-out evaluation set (one chunk of ``n_eval`` samples): nHSIC(X;Z1) and
nHSIC(Y;Z1) with the same Gaussian kernel on X and Z1 for both methods. The kernel is
``exp(-||u-u'||^2 / (2 sigma^2 d))`` (d = 2) with ``sigma = 1`` by default: the study's sigma = 5 is
far wider than this data (radius <= 3.x), which would leave almost no eigenvalue above the NOCCO
ridge. ``kernel="gaussian_median"`` uses the median heuristic instead. The SNN temperature defaults
to ``2 sigma^2 d`` so that the SNN kernel ``exp(-||u-u'||^2 / T)`` *is* the HSIC kernel on Z1. The
SNN/HSIC identity that ties them (docs/method.md §4) is :func:`ibstudy.losses.snn_hsic_identity`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ibstudy.checks import check_choice, check_int, check_positive
from ibstudy.data import von_mises_toy
from ibstudy.hsic import hsic, nhsic
from ibstudy.losses import kernel_mass, same_class_share, snn_loss

__all__ = [
    "AUX_INITS",
    "HISTORY_COLUMNS",
    "LOCAL_LOSSES",
    "PAPER_W",
    "TOY_KERNELS",
    "TOY_METHODS",
    "FirstLayer",
    "ToyConfig",
    "ToyNet",
    "ToyRun",
    "aux_direction",
    "aux_direction_coordinates",
    "paper_first_layer",
    "train_toy",
]

TOY_METHODS: tuple[str, ...] = ("layerwise", "e2e")
LOCAL_LOSSES: tuple[str, ...] = ("cross_entropy", "snn")
TOY_KERNELS: tuple[str, ...] = ("gaussian", "gaussian_median")
NUM_CLASSES = 2
DIM = 2
#: The first layer drawn in paper Fig 4: stretch the label direction, squeeze the other one.
PAPER_W: tuple[tuple[float, float], tuple[float, float]] = (
    (math.sqrt(1.9), 0.0),
    (0.0, math.sqrt(0.1)),
)
AUX_INITS: tuple[str, ...] = ("zero", "random")
HISTORY_COLUMNS: tuple[str, ...] = (
    "step",
    "method",
    "nhsic_xz",
    "nhsic_yz",
    "hsic_yz",
    "snn_loss",
    "mean_same_class_share",
    "mean_kernel_mass",
    "loss",
    "accuracy",
    "aux_accuracy",
    "sv_ratio",
)


# --------------------------------------------------------------------------------------------------
# configuration and validation
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    """Every setting of one toy run; ``validate`` raises ValueError naming a bad field."""

    method: str
    n_train: int = 2000
    n_eval: int = 512
    steps: int = 300
    lr: float = 0.01
    seed: int = 0
    record_every: int = 10
    hidden: int = 32
    depth: int = 2
    weight_norm: float | None = math.sqrt(2.0)
    local_loss: str = "cross_entropy"
    kernel: str = "gaussian"
    sigma: float = 1.0
    temperature: float | None = None
    batch_size: int | None = None
    aux_init: str = "zero"  # v at initialization: "zero" (the default, see above) or "random"

    def validate(self) -> ToyConfig:
        """Check every field (cheap, before any training); return self."""
        check_choice("method", self.method, TOY_METHODS)
        for name in ("n_train", "n_eval"):
            value = getattr(self, name)
            check_int(name, value, minimum=4)
            if value % 2:
                raise ValueError(f"{name} must be even (two balanced classes), got {value}")
        check_int("steps", self.steps, minimum=1)
        check_positive("lr", self.lr)
        check_int("seed", self.seed, minimum=0)
        check_int("record_every", self.record_every, minimum=1)
        check_int("hidden", self.hidden, minimum=1)
        check_int("depth", self.depth, minimum=1)
        if self.weight_norm is not None:
            check_positive("weight_norm", self.weight_norm)
        check_choice("local_loss", self.local_loss, LOCAL_LOSSES)
        check_choice("kernel", self.kernel, TOY_KERNELS)
        check_positive("sigma", self.sigma)
        if self.temperature is not None:
            check_positive("temperature", self.temperature)
        check_choice("aux_init", self.aux_init, AUX_INITS)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=4)
            if self.batch_size > self.n_train:
                raise ValueError(
                    f"batch_size must be <= n_train = {self.n_train}, got {self.batch_size}"
                )
        return self

    @property
    def snn_temperature(self) -> float:
        """SNN temperature: ``temperature`` or ``2 sigma^2 d`` (SNN, HSIC then share a kernel)."""
        if self.temperature is not None:
            return float(self.temperature)
        return 2.0 * self.sigma**2 * DIM


# --------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------
class FirstLayer(nn.Module):
    """``Z1 = W x``, no bias; with ``norm`` set ``W = norm * V / ||V||_F`` (a fixed F-norm)."""

    def __init__(self, norm: float | None = math.sqrt(2.0)) -> None:
        super().__init__()
        self.norm = norm
        self.raw = nn.Parameter(torch.empty(DIM, DIM))
        nn.init.orthogonal_(self.raw)
        if norm is not None:
            with torch.no_grad():
                self.raw.mul_(norm / self.raw.norm())

    @property
    def weight(self) -> Tensor:
        """The effective matrix W (2, 2)."""
        if self.norm is None:
            return self.raw
        return self.raw * (self.norm / self.raw.norm())

    def forward(self, x: Tensor) -> Tensor:
        """Z1 = x W^T."""
        return x @ self.weight.T


class ToyNet(nn.Module):
    """First layer W, auxiliary linear classifier v on Z1, upper ReLU MLP on Z1 (no detaching)."""

    def __init__(
        self,
        hidden: int = 32,
        depth: int = 2,
        norm: float | None = math.sqrt(2),
        aux_init: str = "zero",
    ) -> None:
        super().__init__()
        self.first = FirstLayer(norm)
        self.aux = nn.Linear(DIM, NUM_CLASSES)  # torch's default (random) initialization
        if aux_init == "zero":  # see the module docstring: v starts at 0
            nn.init.zeros_(self.aux.weight)
            nn.init.zeros_(self.aux.bias)
        layers: list[nn.Module] = []
        width = DIM
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, NUM_CLASSES))
        self.upper = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Z1, auxiliary logits v(Z1), output logits MLP(Z1))."""
        z1 = self.first(x)
        return z1, self.aux(z1), self.upper(z1)


def _losses(net: ToyNet, x: Tensor, y: Tensor, cfg: ToyConfig) -> tuple[Tensor, Tensor]:
    """(total loss to backpropagate, the loss that trains Z1) for one batch."""
    z1 = net.first(x)
    if cfg.method == "e2e":
        out = F.cross_entropy(net.upper(z1), y)
        probe = F.cross_entropy(net.aux(z1.detach()), y)
        return out + probe, out
    out = F.cross_entropy(net.upper(z1.detach()), y)
    if cfg.local_loss == "snn":
        local = snn_loss(z1, y, cfg.snn_temperature)
        return local + F.cross_entropy(net.aux(z1.detach()), y) + out, local
    local = F.cross_entropy(net.aux(z1), y)
    return local + out, local


# --------------------------------------------------------------------------------------------------
# geometry of Z1
# --------------------------------------------------------------------------------------------------
def aux_direction(v_weight: Tensor) -> Tensor:
    """Unit vector (2,) of the auxiliary classifier's decision direction in Z1-space.

    ``v_weight`` is a (2, 2) two-class logit matrix (direction: row 1 - row 0, towards label 1),
    a (1, 2) single-logit matrix, or a (2,) vector.
    """
    if not isinstance(v_weight, Tensor):
        raise ValueError(f"v_weight must be a torch.Tensor, got {type(v_weight).__name__}")
    w = v_weight.detach()
    if w.shape == (NUM_CLASSES, DIM):
        w = w[1] - w[0]
    elif w.shape in ((1, DIM), (DIM,)):
        w = w.reshape(DIM)
    else:
        raise ValueError(f"v_weight must have shape (2, 2), (1, 2) or (2,), got {tuple(w.shape)}")
    norm = torch.linalg.vector_norm(w)
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise ValueError("v_weight gives a zero (or non-finite) classifier direction")
    return w / norm


def aux_direction_coordinates(z1: Tensor, v_weight: Tensor) -> Tensor:
    """Z1 (n, 2) in the orthonormal basis (u, u_perp): u along the auxiliary classifier (paper Fig 4
    x-axis), u_perp = u rotated by +90 degrees (y-axis)."""
    if not isinstance(z1, Tensor) or z1.dim() != 2 or z1.shape[1] != DIM:
        shape = tuple(z1.shape) if isinstance(z1, Tensor) else type(z1).__name__
        raise ValueError(f"z1 must be a tensor of shape (n, 2), got {shape}")
    u = aux_direction(v_weight).to(z1.dtype)
    basis = torch.stack([u, torch.stack([-u[1], u[0]])])  # rows: u, u_perp
    return z1.detach() @ basis.T


def paper_first_layer() -> Tensor:
    """The first layer of paper Fig 4, ``W = diag(sqrt(1.9), sqrt(0.1))`` (its v is the x-axis)."""
    return torch.tensor(PAPER_W, dtype=torch.float32)


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------
@dataclass
class ToyRun:
    """A trained toy network, its configuration, the data it saw and its tidy ``history``."""

    config: ToyConfig
    net: ToyNet
    history: pd.DataFrame
    x_train: Tensor
    y_train: Tensor
    x_eval: Tensor
    y_eval: Tensor

    @property
    def method(self) -> str:
        """The training method ("layerwise" or "e2e")."""
        return self.config.method

    def z1(self, x: Tensor | None = None) -> Tensor:
        """Z1 = W x of ``x`` (default: the evaluation set), without gradient."""
        with torch.no_grad():
            return self.net.first(self.x_eval if x is None else x)

    def weight(self) -> Tensor:
        """The trained first-layer matrix W (2, 2), detached."""
        return self.net.first.weight.detach().clone()

    def aux_coordinates(self, x: Tensor | None = None) -> Tensor:
        """Z1 in the (auxiliary direction, orthogonal) basis of paper Fig 4."""
        return aux_direction_coordinates(self.z1(x), self.net.aux.weight)

    def summary(self) -> dict[str, object]:
        """Config, the last history row, W's singular values and ``alignment`` = |cos| between the
        auxiliary direction and W's most stretched output direction, as one flat dict."""
        u, s, _ = torch.linalg.svd(self.weight())
        cos = float(aux_direction(self.net.aux.weight) @ u[:, 0])
        last = self.history.iloc[-1].to_dict()
        geometry = {"sv_max": float(s[0]), "sv_min": float(s[-1]), "alignment": abs(cos)}
        return {**asdict(self.config), **last, **geometry}


def _snn_sigma(temperature: float) -> float:
    """The sigma making the study's kernel exp(-||.||^2 / (2 sigma^2 d)) equal exp(-||.||^2 / T)."""
    return math.sqrt(temperature / (2.0 * DIM))


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(dim=1) == y).to(torch.float64).mean())


def _record(
    net: ToyNet,
    cfg: ToyConfig,
    step: int,
    x_train: Tensor,
    y_train: Tensor,
    x: Tensor,
    y: Tensor,
) -> dict[str, object]:
    """One history row: the Z1-training loss on the training set, the rest on the evaluation set."""
    with torch.no_grad():
        loss = float(_losses(net, x_train, y_train, cfg)[1])
        z1, aux_logits, out_logits = net(x)
        s = torch.linalg.svdvals(net.first.weight)
    kw = {"sigma": cfg.sigma}
    t = cfg.snn_temperature
    return {
        "step": step,
        "method": cfg.method,
        "nhsic_xz": nhsic(x, z1, kernel_a=cfg.kernel, kernel_b=cfg.kernel, **kw),
        "nhsic_yz": nhsic(y, z1, kernel_a="linear", kernel_b=cfg.kernel, **kw),
        "hsic_yz": hsic(z1, y, kernel_a="gaussian", kernel_b="linear", sigma=_snn_sigma(t)),
        "snn_loss": float(snn_loss(z1, y, t)),
        "mean_same_class_share": float(same_class_share(z1, y, t).mean()),
        "mean_kernel_mass": float(kernel_mass(z1.to(torch.float64), t).mean()),  # D'_i / (m-1)
        "loss": loss,
        "accuracy": _accuracy(out_logits, y),
        "aux_accuracy": _accuracy(aux_logits, y),
        "sv_ratio": float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf,
    }


def train_toy(
    method: str,
    *,
    n_train: int = 2000,
    n_eval: int = 512,
    steps: int = 300,
    lr: float = 0.01,
    seed: int = 0,
    record_every: int = 10,
    hidden: int = 32,
    depth: int = 2,
    weight_norm: float | None = math.sqrt(2.0),
    local_loss: str = "cross_entropy",
    kernel: str = "gaussian",
    sigma: float = 1.0,
    temperature: float | None = None,
    batch_size: int | None = None,
    aux_init: str = "zero",
    num_threads: int | None = 1,
) -> ToyRun:
    """Train the toy network by ``method`` ("layerwise" | "e2e"); the settings are ToyConfig's.

    Deterministic for a given ``seed`` (training data ``seed``, evaluation data ``seed + 1``, module
    init and mini-batch draws from ``seed``; the global RNG state is left untouched). ``history``
    has a row at step 0 (init), every ``record_every`` steps and at the last step; ``loss`` is the
    loss that trains Z1 (layer-wise: the local loss; e2e: the output cross-entropy) on the whole
    training set, every other column is measured on the evaluation set.

    ``num_threads`` caps torch's intra-op threads while this function runs (restored afterwards;
    None leaves them alone): on these tiny tensors extra threads only add overhead (4x slower
    measured on a busy 2-core CPU). Runs on the CPU.
    """
    if num_threads is not None:
        check_int("num_threads", num_threads, minimum=1)
    cfg = ToyConfig(
        method=method, n_train=n_train, n_eval=n_eval, steps=steps, lr=lr, seed=seed,
        record_every=record_every, hidden=hidden, depth=depth, weight_norm=weight_norm,
        local_loss=local_loss, kernel=kernel, sigma=sigma, temperature=temperature,
        batch_size=batch_size, aux_init=aux_init,
    ).validate()  # fmt: skip
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(previous)


def _train(cfg: ToyConfig) -> ToyRun:
    """The training loop of :func:`train_toy` for a validated config."""
    x_train, y_train = von_mises_toy(cfg.n_train, seed=cfg.seed)
    x_eval, y_eval = von_mises_toy(cfg.n_eval, seed=cfg.seed + 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ToyNet(cfg.hidden, cfg.depth, cfg.weight_norm, cfg.aux_init)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rows = [_record(net, cfg, 0, x_train, y_train, x_eval, y_eval)]
    for step in range(1, cfg.steps + 1):
        if cfg.batch_size is None:
            xb, yb = x_train, y_train
        else:  # a fresh random batch per step (sampling without replacement within the batch)
            idx = torch.randperm(cfg.n_train, generator=gen)[: cfg.batch_size]
            xb, yb = x_train[idx], y_train[idx]
        total, _ = _losses(net, xb, yb, cfg)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if step % cfg.record_every == 0 or step == cfg.steps:
            rows.append(_record(net, cfg, step, x_train, y_train, x_eval, y_eval))
    history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return ToyRun(cfg, net, history, x_train, y_train, x_eval, y_eval)
