"""Simulated study tables with the study's real structure, for calibrating the claim rules.

docs/method.md §12 ("Error rates and power"): :func:`simulate_arms` builds an E2E arm and a
layer-wise (linear heads) arm whose ``layers``, ``epochs`` and per-image ``outcomes`` tables have
the columns the trainer writes (:data:`ibstudy.tables.LAYER_COLUMNS`, :data:`~ibstudy.tables.
EPOCH_COLUMNS`, :data:`ibstudy.outcomes.OUTCOME_COLUMNS`) and the noise the study has: a random
effect per run (per-block offset, amplitude and trajectory shape), AR(1) noise over record points,
chunk noise with ``chunks`` (k = 2 at the study scale) chunk draws per value and a permutation floor
from ``floor_perms`` replicates. Without ``effect`` the two arms have identical distributions, so
every significant claim is a false positive; :func:`error_rates` counts them (and the power with
planted effects) over many simulated studies.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtri

from ibstudy.claims import (
    CLAIMS,
    WINDOW_FRACTION,
    Arm,
    Claim,
    NotMeasured,
    RunView,
    assess,
    seed_pairs,
    windows,
)
from ibstudy.config import MeasureConfig, scaled_milestones
from ibstudy.estimates import ALPHA, Effect, holm, paired_effect, verdict

__all__ = [
    "EFFECTS",
    "LENET5_BLOCKS",
    "decide",
    "error_rates",
    "role_spread_of_means",
    "simulate_arms",
]

#: the claims an ``effect`` can be planted for (their names in :data:`ibstudy.claims.CLAIMS`)
EFFECTS: tuple[str, ...] = ("C1", "C2", "C3", "C3b", "C4a", "C4b")
#: LeNet5's blocks, as the trainer names them (other depths get ``block<i>``)
LENET5_BLOCKS: tuple[str, ...] = ("conv1", "conv2", "fc1", "fc2")

_DATASET, _NUM_CLASSES, _TRAIN_SIZE, _TEST_SIZE = "mnist5k", 10, 4000, 1000
_BATCH, _LR, _GAMMA, _PROBE_SIZE = 64, 1e-3, 0.2, 2000
_ARMS = (("e2e", "none"), ("layerwise", "linear"))
_XZ, _YZ = 0, 1
# noise scales per side (xz, yz), in nHSIC units
_SD_AMP = np.array([0.05, 0.05])  # per-run multiplicative amplitude of a block's excess
_SD_OFF = np.array([1.0, 0.05])  # per-run offset of a block's excess
_SD_SHAPE = np.array([1.0, 0.05])  # per-run coefficient of the late-training shape
_SD_FLOOR_OFF = np.array([1.0, 0.03])  # per-run offset of a block's floor
_SD_AR = np.array([0.6, 0.04])  # stationary std of the AR(1) noise over record points
_SD_CHUNK = np.array([2.0, 0.08])  # std of one chunk's value around the run's true value
_SD_FLOOR = np.array([1.0, 0.04])  # std of one permutation chunk's floor
_SD_ACC = 0.003  # per-run spread of the true test (and probe) accuracy


def _record_points(epochs: int, fractions: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Record epochs and optimizer steps as the trainer writes them (sub-epoch points are
    batch / steps_per_epoch of the first epoch, each fraction rounded to a batch)."""
    n = math.ceil(_TRAIN_SIZE / _BATCH)
    batches = sorted({min(n - 1, max(1, round(f * n))) for f in fractions}) if n >= 2 else []
    epoch = np.array([0.0, *(b / n for b in batches), *range(1, epochs + 1)], dtype=float)
    step = np.array([0, *batches, *(n * e for e in range(1, epochs + 1))], dtype=np.int64)
    return epoch, step


def _window_epochs(epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """The early and late whole epochs of :func:`ibstudy.claims.windows` (its formula below
    MIN_WINDOW_EPOCHS, where the claims that use them are not measured)."""
    try:
        early, late = windows(range(epochs + 1))
    except NotMeasured:
        w = max(1, round(WINDOW_FRACTION * epochs))
        early, late = list(range(1, w + 1)), list(range(epochs - w + 1, epochs + 1))
    return np.asarray(early, dtype=float), np.asarray(late, dtype=float)


def _mean_excess(n_blocks: int, t: np.ndarray, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean excess over the floor and mean floor, shape (layers, 2 sides, record points): X side
    rising fast then slowly falling (deeper blocks fall further), Y side rising toward its limit,
    floors 85-98 % of the value (values 100-170 on the X side, 8-9 on the Y side)."""
    q = np.linspace(0.0, 1.0, n_blocks) if n_blocks > 1 else np.zeros(1)
    rise = 1.0 - np.exp(-t / 0.4)
    fall = (1.0 - np.exp(-t / (epochs / 4))) / (1.0 - math.exp(-4.0))
    e0 = np.append(10.0 - 4.0 * q, 3.0)[:, None]
    peak = np.append(15.0 - 3.0 * q, 7.0)[:, None]
    drop = np.append(0.1 + 0.3 * q, 0.3)[:, None]
    xz = e0 + (peak - e0) * rise - peak * drop * fall
    y_end = np.append(0.2 + 0.8 * q, 0.95)[:, None]
    tau = np.append(0.2 + 5.0 * q, 0.3)[:, None]
    yz = 0.15 + (y_end - 0.15) * (1.0 - np.exp(-t / tau))
    floor_xz = np.append(150.0 - 50.0 * q, 60.0)[:, None] * (1.0 - 0.02 * (1 - np.exp(-t / 2)))
    floor_yz = np.append(7.6 + 0.35 * q, 8.0)[:, None] * np.ones_like(t)
    return np.stack([xz, yz], axis=1), np.stack([floor_xz, floor_yz], axis=1)


def role_spread_of_means(grid_xz: np.ndarray, grid_yz: np.ndarray) -> float:
    """C2's role spread of noise-free (blocks x whole epochs) excess grids (as
    :func:`ibstudy.claims.role_spread` computes it from a run's table)."""
    return float(
        np.mean([np.mean(np.std(g / np.max(np.abs(g)), axis=0)) for g in (grid_xz, grid_yz)])
    )


def _stretch_for_c2(mean: np.ndarray, whole: np.ndarray, n_blocks: int, target: float) -> float:
    """lambda such that stretching the candidate's Y-side block deviations from their across-block
    mean by (1 + lambda) makes the noise-free role-spread difference equal ``target``."""
    cand, base = mean[0][:n_blocks, :, whole], mean[1][:n_blocks, :, whole]
    reference = role_spread_of_means(base[:, _XZ], base[:, _YZ])

    def gap(lam: float) -> float:
        yz = cand[:, _YZ]
        centre = yz.mean(axis=0, keepdims=True)
        return role_spread_of_means(cand[:, _XZ], centre + (1 + lam) * (yz - centre)) - reference

    low, high = -1.0, 1e3
    if not gap(low) <= target <= gap(high):
        raise ValueError(
            f"effect C2={target!r} is out of reach for these trajectories: the role spread is "
            f"scale-free, planted differences lie in [{gap(low):.3f}, {gap(high):.3f}]"
        )
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if gap(mid) < target else (low, mid)
    return 0.5 * (low + high)


def _run_effects(rng: np.random.Generator, shape: tuple[int, ...], share: float) -> np.ndarray:
    """Standard normal random effects of shape (2 arms, seeds, ...); a fraction ``share`` of the
    variance is common to the two arms of one seed (same initial weights and batch order)."""
    own = rng.standard_normal((2, *shape))
    if share == 0:
        return own
    common = rng.standard_normal((1, *shape))
    return math.sqrt(share) * common + math.sqrt(1 - share) * own


def _check_effect(
    effect: Mapping[str, float] | None, n_blocks: int, floor_perms: int
) -> dict[str, float]:
    planted = {name: 0.0 for name in EFFECTS}
    for name, value in (effect or {}).items():
        if name not in planted:
            raise ValueError(f"effect names must be among {list(EFFECTS)}, got {name!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"effect {name} must be a finite number, got {value!r}")
        planted[name] = float(value)
    if (planted["C1"] or planted["C2"]) and n_blocks < 2:
        raise ValueError("effects C1 and C2 need >= 2 blocks")
    if planted["C3b"] and (n_blocks < 3 or floor_perms < 1):
        raise ValueError("effect C3b needs >= 3 blocks (middle layers) and a floor")
    return planted


def simulate_arms(
    rng: np.random.Generator,
    *,
    n_seeds: int = 5,
    n_blocks: int = 4,
    epochs: int = 40,
    fractions: Sequence[float] = (0.125, 0.25, 0.5),
    chunks: int = 2,
    floor_perms: int = 3,
    effect: Mapping[str, float] | None = None,
    rho: float = 0.7,
    seed_share: float = 0.0,
    outcomes: bool = True,
    chunk_size: int = 256,
) -> tuple[Arm, Arm]:
    """Two simulated arms (E2E, then layer-wise with linear heads) of ``n_seeds`` seeds each, with
    the trainer's tables; identically distributed unless ``effect`` plants per-claim effects.

    Per run and layer: excess = (1 + amplitude) x mean + offset + shape x late-training curve +
    AR(1) noise (``rho``) over the record points, plus the mean of ``chunks`` chunk draws
    (``nhsic_*_std`` their population std); the floor is the mean of ``floor_perms`` x ``chunks``
    permutation draws, ``floor_*_std`` the std of its ``floor_perms`` replicate means (ddof 1, as
    :meth:`ibstudy.hsic.InfoPlane.summarize`). ``seed_share`` of each run effect's variance is shared
    by the two arms of a seed. Accuracies: test over 1,000 images (a probit with an image difficulty
    shared by all runs, so the McNemar detail sees realistic pairs), probes over 512 images.

    ``effect`` (candidate minus baseline, in each contrast's units; exact on the noise-free means):
    ``C3`` lowers the candidate's last-block excess nHSIC(X;Z) from the end of the early window to
    the late window by C3 x its early mean; ``C1`` shifts the candidate's first block over the late
    window so the last-epoch depth slope differs by C1 (C3's share of it compensated); ``C2``
    stretches the candidate's Y-side block deviations from their across-block mean so the role
    spread differs by C2 (its range is bounded: ValueError); ``C3b`` lowers each run's true test
    accuracy by C3b x its realized middle-layer compression (centred on the arm's noise-free one),
    so the gap's slope on it is C3b (and the accuracies vary more); ``C4a`` adds to the candidate's
    true final test accuracy, ``C4b`` to its last block's true probe accuracy at the last probed
    epoch (accuracies are clipped to [0, 1]: keep them below 1).
    """
    planted = _check_effect(effect, n_blocks, floor_perms)
    if n_seeds < 1 or n_blocks < 1 or epochs < 1 or chunks < 1 or floor_perms < 0:
        raise ValueError("n_seeds, n_blocks, epochs and chunks must be >= 1, floor_perms >= 0")
    if not (0.0 <= seed_share <= 1.0 and -1.0 < rho < 1.0):
        raise ValueError(f"need 0 <= seed_share <= 1 and -1 < rho < 1, got {seed_share}, {rho}")
    n_layers, n_sides = n_blocks + 1, 2
    t, step = _record_points(epochs, fractions)
    n_t, whole = len(t), t == np.round(t)
    early, late = _window_epochs(epochs)

    # ---- mean trajectories per arm, effects planted on the candidate's (arm 0)
    excess_mean, floor_mean = _mean_excess(n_blocks, t, epochs)
    mean = np.stack([excess_mean, excess_mean]).copy()  # (arm, layer, side, t)
    last = n_blocks - 1
    early_last = float(excess_mean[last, _XZ, np.isin(t, early)].mean())
    late_start = epochs - len(late) + 1
    ramp = np.clip((t - early[-1]) / max(late_start - early[-1], 1e-9), 0.0, 1.0)
    mean[0, last, _XZ] -= planted["C3"] * early_last * ramp
    if n_blocks >= 2 and (planted["C1"] or planted["C3"]):
        depth = np.arange(n_blocks) - (n_blocks - 1) / 2
        s2 = float(depth @ depth)
        leak = depth[-1] * (-planted["C3"] * early_last) / s2
        mean[0, 0, _XZ, t >= late_start] += (planted["C1"] - leak) * s2 / depth[0]
    if planted["C2"]:
        lam = _stretch_for_c2(mean, whole, n_blocks, planted["C2"])
        yz = mean[0, :n_blocks, _YZ]
        centre = yz.mean(axis=0, keepdims=True)
        mean[0, :n_blocks, _YZ] = centre + (1 + lam) * (yz - centre)

    # ---- runs: random effects, AR(1) noise, chunk and floor draws
    shape = (n_seeds, n_layers, n_sides)
    amp = 1 + _run_effects(rng, shape, seed_share) * _SD_AMP
    off = _run_effects(rng, shape, seed_share) * _SD_OFF
    bend = _run_effects(rng, shape, seed_share) * _SD_SHAPE
    floor_off = _run_effects(rng, shape, seed_share) * _SD_FLOOR_OFF
    fall = (1.0 - np.exp(-t / (epochs / 4))) / (1.0 - math.exp(-4.0))
    true_excess = amp[..., None] * mean[:, None] + off[..., None] + bend[..., None] * fall
    innov = rng.standard_normal((2, *shape, n_t)) * _SD_AR[:, None]
    ar = np.empty_like(innov)
    ar[..., 0] = innov[..., 0]
    scale = math.sqrt(1 - rho**2)
    for i in range(1, n_t):
        ar[..., i] = rho * ar[..., i - 1] + scale * innov[..., i]
    true_floor = floor_mean[None, None] + floor_off[..., None]
    true_value = true_floor + true_excess + ar
    upper = np.array([np.inf, _NUM_CLASSES - 1.0])[:, None, None]
    draws = (
        true_value[..., None]
        + rng.standard_normal((*true_value.shape, chunks)) * _SD_CHUNK[:, None, None]
    )
    draws = np.clip(draws, 0.0, upper)
    value, value_std = draws.mean(axis=-1), draws.std(axis=-1)
    if floor_perms:
        noise = rng.standard_normal((*true_value.shape, floor_perms, chunks))
        fdraws = true_floor[..., None, None] + noise * _SD_FLOOR[:, None, None, None]
        reps = np.clip(fdraws, 0.0, upper[..., None]).mean(axis=-1)
        floor = reps.mean(axis=-1)
        floor_std = reps.std(axis=-1, ddof=1) if floor_perms > 1 else np.full_like(floor, np.nan)
    else:
        floor = floor_std = np.full_like(value, np.nan)

    # ---- accuracies
    p_test = 0.97 + _run_effects(rng, (n_seeds,), seed_share) * _SD_ACC
    p_test[0] += planted["C4a"]
    if planted["C3b"]:
        early_at, late_at = np.isin(t, early), np.isin(t, late)

        def middle(ex: np.ndarray) -> np.ndarray:  # (..., middle blocks, t) -> (...)
            e = ex[..., early_at].mean(axis=-1)
            return ((e - ex[..., late_at].mean(axis=-1)) / e).mean(axis=-1)

        realized = middle((value - floor)[:, :, 1:last, _XZ])  # (arm, seed)
        centre = middle(mean[:, 1:last, _XZ])[:, None]  # noise-free, per arm: a constant
        p_test -= planted["C3b"] * (realized - centre)
    p_test = np.clip(p_test, 1e-4, 1 - 1e-4)
    difficulty = rng.standard_normal(_TEST_SIZE)
    latent = math.sqrt(0.5) * difficulty + math.sqrt(0.5) * rng.standard_normal(
        (2, n_seeds, _TEST_SIZE)
    )
    correct = latent < ndtri(p_test)[..., None]
    final_acc = correct.mean(axis=-1)
    curve = p_test[..., None] - (p_test[..., None] - 0.1) * np.exp(-t / 0.15)
    test_acc = rng.binomial(_TEST_SIZE, np.clip(curve, 0, 1)) / _TEST_SIZE
    test_acc[..., -1] = final_acc
    seen = np.where(whole, _TRAIN_SIZE, np.minimum(step * _BATCH, _TRAIN_SIZE)).clip(1)
    p_train = np.clip(0.9995 - 0.9 * np.exp(-t / 0.2) - 0.04 * np.exp(-t / 4), 0.0, 1.0)
    train_acc = rng.binomial(seen, p_train, size=(2, n_seeds, n_t)) / seen
    train_acc[..., 0] = np.nan
    train_loss = -np.log(np.clip(train_acc, 1e-3, 1.0)) * 1.5 + 0.002

    probe_epochs = np.array(sorted({0, epochs // 4, epochs // 2, epochs}), dtype=float)
    q = np.linspace(0.0, 1.0, n_blocks) if n_blocks > 1 else np.zeros(1)
    p0, p_end = 0.90 + 0.06 * q - 0.16 * q**2, 0.94 + 0.02 * q
    p_probe = p_end[:, None] - (p_end - p0)[:, None] * np.exp(-probe_epochs / 2)
    p_probe = p_probe + _run_effects(rng, (n_seeds, n_blocks, 1), seed_share) * _SD_ACC
    p_probe[0, :, last, -1] += planted["C4b"]
    p_probe = np.clip(p_probe, 0.0, 1.0)
    probe_test = rng.binomial(chunk_size * chunks, p_probe) / (chunk_size * chunks)
    probe_train = rng.binomial(_PROBE_SIZE, np.clip(p_probe + 0.01, 0, 1)) / _PROBE_SIZE
    head_p = np.clip(p_end[:, None] - 0.005 - (p_end - p0)[:, None] * np.exp(-t / 0.3), 0, 1)
    head_acc = rng.binomial(_TEST_SIZE, head_p, size=(n_seeds, n_blocks, n_t)) / _TEST_SIZE

    # ---- tables
    names = LENET5_BLOCKS if n_blocks == 4 else tuple(f"block{i}" for i in range(n_blocks))
    names = (*names, "logits")
    settings = MeasureConfig(
        eval_size=chunk_size * chunks, chunk_size=chunk_size, floor_perms=floor_perms
    ).columns()
    milestones = np.array(scaled_milestones(epochs), dtype=float)
    lr = _LR * _GAMMA ** (milestones[None, :] < np.ceil(t)[:, None]).sum(axis=1)
    at_probe = np.searchsorted(probe_epochs, t)
    is_probe = np.isin(t, probe_epochs)
    arms = []
    for a, (method, head) in enumerate(_ARMS):
        digest = hashlib.sha1(f"{method}-{head}".encode()).hexdigest()[:8]
        runs = np.array(
            [f"lenet5-{method}-{head}-{_DATASET}-s{s}-{digest}" for s in range(n_seeds)]
        )
        # layers: (seed, t, layer) in the trainer's row order
        grid = (n_seeds, n_t, n_layers)
        seed_ix = np.broadcast_to(np.arange(n_seeds)[:, None, None], grid).ravel()
        t_ix = np.broadcast_to(np.arange(n_t)[None, :, None], grid).ravel()
        l_ix = np.broadcast_to(np.arange(n_layers)[None, None, :], grid).ravel()

        def plane(x: np.ndarray, side: int) -> np.ndarray:
            return x[a, seed_ix, l_ix, side, t_ix]  # noqa: B023

        block = l_ix < n_blocks
        probed = block & is_probe[t_ix]
        pb = np.where(block, l_ix, 0)
        pt = np.clip(at_probe[t_ix], 0, len(probe_epochs) - 1)
        layers = pd.DataFrame({
            "run": runs[seed_ix], "method": method, "head": head, "seed": seed_ix,
            "dataset": _DATASET, "num_classes": _NUM_CLASSES, "epoch": t[t_ix],
            "step": step[t_ix], "layer": np.array(names)[l_ix], "layer_index": l_ix,
            "nhsic_xz": plane(value, _XZ), "nhsic_yz": plane(value, _YZ),
            "nhsic_xz_std": plane(value_std, _XZ), "nhsic_yz_std": plane(value_std, _YZ),
            "floor_xz": plane(floor, _XZ), "floor_yz": plane(floor, _YZ),
            "floor_xz_std": plane(floor_std, _XZ), "floor_yz_std": plane(floor_std, _YZ),
            **settings,
            "probe_train_acc": np.where(probed, probe_train[a, seed_ix, pb, pt], np.nan),
            "probe_test_acc": np.where(probed, probe_test[a, seed_ix, pb, pt], np.nan),
            "head_test_acc": np.where(block & (head != "none"), head_acc[seed_ix, pb, t_ix],
                                      np.nan),
        })  # fmt: skip
        e_seed = np.repeat(np.arange(n_seeds), n_t)
        e_t = np.tile(np.arange(n_t), n_seeds)
        seconds = np.where(whole, np.minimum(t, 1.0), t)[e_t] * (
            1.5 + 0.05 * rng.standard_normal(n_seeds * n_t)
        )
        epochs_table = pd.DataFrame({
            "run": runs[e_seed], "method": method, "head": head, "seed": e_seed,
            "dataset": _DATASET, "num_classes": _NUM_CLASSES, "epoch": t[e_t], "step": step[e_t],
            "train_loss": train_loss[a, e_seed, e_t], "train_acc": train_acc[a, e_seed, e_t],
            "test_acc": test_acc[a, e_seed, e_t], "lr": lr[e_t], "seconds": seconds,
        })  # fmt: skip
        outcome_table = None
        if outcomes:
            labels = np.arange(_TEST_SIZE) % _NUM_CLASSES
            ok = correct[a].ravel()
            image = np.tile(np.arange(_TEST_SIZE), n_seeds)
            wrong = (labels[image] + 1 + rng.integers(0, _NUM_CLASSES - 1, ok.size)) % _NUM_CLASSES
            loss = np.where(ok, rng.exponential(0.02, ok.size), 1.0 + rng.exponential(2.0, ok.size))
            o_seed = np.repeat(np.arange(n_seeds), _TEST_SIZE)
            outcome_table = pd.DataFrame({
                "run": runs[o_seed], "method": method, "head": head, "seed": o_seed,
                "dataset": _DATASET, "epoch": epochs, "image": image, "label": labels[image],
                "pred": np.where(ok, labels[image], wrong), "correct": ok.astype(np.int64),
                "loss": loss,
            })  # fmt: skip
        arms.append(Arm("/".join(v for v in (method, head) if v != "none"), layers,
                        epochs_table, outcome_table))  # fmt: skip
    return arms[0], arms[1]


def _views(arm: Arm) -> dict[int, RunView]:
    """Every run of ``arm`` as :meth:`Arm.run` gives it, split once (one groupby per table)."""

    def split(table: pd.DataFrame | None) -> dict[int, pd.DataFrame]:
        if table is None or "seed" not in table.columns:
            return {}
        return {int(s): part for s, part in table.groupby("seed", sort=False)}

    layers, epochs, outcomes = split(arm.layers), split(arm.epochs), split(arm.outcomes)
    return {s: RunView(s, layers[s], epochs.get(s), outcomes.get(s)) for s in arm.seeds}


def _paired(claim: Claim, views: tuple[dict[int, RunView], dict[int, RunView]],
            seeds: list[int], level: float) -> Effect | None:  # fmt: skip
    """The effect a seed-paired rule decides on, from the claim's per-run statistic."""
    statistic = claim.statistic
    if statistic is None:
        raise ValueError(f"{claim.name} is not a seed-paired claim")
    diffs = []
    for seed in seeds:
        try:
            a = float(statistic(views[0][seed]))
            b = float(statistic(views[1][seed]))
        except NotMeasured:
            return None
        diffs.append(a - b)
    return paired_effect(diffs, level)


def _estimated(claim: Claim, candidate: Arm, baseline: Arm) -> Effect | None:
    try:
        return claim.estimate(candidate, baseline).effect
    except NotMeasured:
        return None


def decide(
    candidate: Arm,
    baseline: Arm,
    rules: Sequence[str | Claim] | None = None,
    *,
    alpha: float = ALPHA,
    fast: bool = True,
) -> pd.DataFrame:
    """claim, estimate, p, p_holm, verdict of one comparison, Holm over ``rules`` (names or ad-hoc
    :class:`~ibstudy.claims.Claim` objects; default all registered). ``fast``: seed-paired claims
    from their per-run statistic (the numbers their rule decides on, without its descriptive
    details); otherwise :func:`ibstudy.claims.assess` (registered names) or ``Claim.estimate``."""
    chosen = list(CLAIMS) if rules is None else list(rules)
    if not fast and all(isinstance(r, str) for r in chosen):
        table = assess(candidate, baseline, [str(r) for r in chosen], alpha=alpha)
        return table[["claim", "estimate", "p", "p_holm", "verdict"]]
    objects = [CLAIMS[r] if isinstance(r, str) else r for r in chosen]
    seeds = seed_pairs(candidate, baseline)
    views = (_views(candidate), _views(baseline)) if fast else ({}, {})
    effects = [
        _paired(c, views, seeds, 0.95)
        if fast and c.statistic is not None
        else _estimated(c, candidate, baseline)
        for c in objects
    ]
    p = np.array([e.p if e else math.nan for e in effects], dtype=float)
    table = pd.DataFrame({
        "claim": [c.name for c in objects],
        "estimate": [e.estimate if e else math.nan for e in effects],
        "p": p, "p_holm": holm(p),
    })  # fmt: skip
    table["verdict"] = [
        verdict(est, ph, c.direction, alpha)
        for c, est, ph in zip(objects, table["estimate"], table["p_holm"], strict=True)
    ]
    return table


def _rate(hits: np.ndarray) -> tuple[float, float]:
    n = len(hits)
    if n == 0:
        return math.nan, math.nan
    r = float(np.mean(hits))
    return r, math.sqrt(r * (1 - r) / n)


def error_rates(
    n_draws: int,
    *,
    seed: int = 0,
    effect: Mapping[str, float] | None = None,
    alpha: float = ALPHA,
    claims: Iterable[str | Claim] | None = None,
    fast: bool = True,
    **simulate_kwargs: object,
) -> pd.DataFrame:
    """Per claim over ``n_draws`` simulated comparisons: how often it is measured, p < alpha
    (unadjusted, either sign), supported and contradicted (Holm), with Monte-Carlo std errors.

    ``claims``: registered names (default all) or ad-hoc :class:`~ibstudy.claims.Claim` objects,
    decided together by :func:`decide` (``fast``: from per-run statistics; else ``assess``);
    ``simulate_kwargs`` go to :func:`simulate_arms`. A last row ``family`` gives the rate of any
    claim significant (unadjusted in ``p_rate``; after Holm in ``significant``). Rates are over
    the draws where the claim was measured; ``se_*`` = sqrt(r (1 - r) / n); ``estimate_mean`` and
    ``estimate_sd`` describe the effect estimates."""
    if isinstance(n_draws, bool) or not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be an int >= 1, got {n_draws!r}")
    rules = None if claims is None else list(claims)
    rng = np.random.default_rng(seed)
    parts = []
    for draw in range(n_draws):
        candidate, baseline = simulate_arms(rng, effect=effect, **simulate_kwargs)  # type: ignore[arg-type]
        table = decide(candidate, baseline, rules, alpha=alpha, fast=fast)
        parts.append(table.assign(draw=draw))
    runs = pd.concat(parts, ignore_index=True)
    runs["measured"] = runs["verdict"] != "not measured"
    runs["p_sig"] = runs["p"] < alpha
    runs["holm_sig"] = runs["verdict"].isin(["supported", "contradicted"])
    rows = []
    for name, group in runs.groupby("claim", sort=False):
        m = group[group["measured"]]
        row: dict[str, object] = {"claim": name, "draws": n_draws, "measured": len(m)}
        for label, hits in (
            ("p_rate", m["p_sig"]), ("supported", m["verdict"] == "supported"),
            ("contradicted", m["verdict"] == "contradicted"), ("significant", m["holm_sig"]),
        ):  # fmt: skip
            row[label], row[f"se_{label}"] = _rate(hits.to_numpy())
        row["estimate_mean"] = float(m["estimate"].mean()) if len(m) else math.nan
        row["estimate_sd"] = float(m["estimate"].std(ddof=1)) if len(m) > 1 else math.nan
        rows.append(row)
    per_draw = runs.groupby("draw")
    family: dict[str, object] = {"claim": "family", "draws": n_draws, "measured": n_draws}
    family["p_rate"], family["se_p_rate"] = _rate(per_draw["p_sig"].any().to_numpy())
    family["significant"], family["se_significant"] = _rate(per_draw["holm_sig"].any().to_numpy())
    rows.append(family)
    return pd.DataFrame(rows)
