"""Tests for ibstudy.claims: arms built from known trajectories, effects with known signs, verdicts
that flip with the data, Holm, the registry, and bad input named before any verdict."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import claims
from ibstudy.claims import Arm, assess

BLOCKS = ("conv1", "conv2", "fc1", "fc2")
EPOCHS = 12  # whole epochs 0..12: windows of one epoch, early = 1, late = 12
SEEDS = (0, 1, 2, 3, 4)
FLOOR_XZ = 100.0
FLOOR_YZ = 0.5


def trajectory(start: float, peak: float, end: float, epochs: int = EPOCHS) -> np.ndarray:
    """Excess per whole epoch: start at epoch 0, peak at epoch 1, then linear to ``end``."""
    out = np.empty(epochs + 1)
    out[0] = start
    out[1:] = np.linspace(peak, end, epochs)
    return out


def run_tables(
    name: str,
    method: str,
    head: str,
    seed: int,
    xz: np.ndarray,
    yz: np.ndarray,
    *,
    acc: float,
    train_acc: float = 1.0,
    probes: list[float] | None = None,
    floor: bool = True,
    measure_id: str = "nhsic-fixed-m256-abc",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A layers and an epochs table of one run; ``xz``/``yz`` are (epochs x blocks) excesses."""
    rows = []
    n_epochs = xz.shape[0]
    for epoch in range(n_epochs):
        for index, layer in enumerate((*BLOCKS, "logits")):
            block = index < len(BLOCKS)
            probe = probes[index] if probes and block and epoch == n_epochs - 1 else math.nan
            rows.append({
                "run": name, "method": method, "head": head, "seed": seed, "dataset": "mnist5k",
                "num_classes": 10, "epoch": float(epoch), "layer": layer, "layer_index": index,
                "nhsic_xz": (xz[epoch, index] if block else 5.0) + FLOOR_XZ,
                "nhsic_yz": (yz[epoch, index] if block else 5.0) + FLOOR_YZ,
                "nhsic_xz_std": 3.0, "nhsic_yz_std": 0.3,
                "floor_xz": FLOOR_XZ if floor else math.nan, "floor_yz": FLOOR_YZ if floor else math.nan,
                "chunk_size": 256, "eval_size": 512, "measure_id": measure_id,
                "probe_test_acc": probe, "probe_train_acc": probe,
            })  # fmt: skip
    epochs = pd.DataFrame({
        "run": name, "method": method, "head": head, "seed": seed, "epoch": range(n_epochs),
        "train_acc": train_acc, "test_acc": acc, "train_loss": 0.1, "lr": 1e-3,
    })  # fmt: skip
    return pd.DataFrame(rows), epochs


def paper_like(seed: int, method: str, *, epochs: int = EPOCHS, **kw) -> tuple[pd.DataFrame, ...]:
    """One run with the paper's picture plus seed-level variation (deterministic per seed)."""
    rng = np.random.default_rng(100 * seed + (method == "e2e"))
    jitter = rng.normal(0, 0.15, size=len(BLOCKS))
    if method == "e2e":  # input information kept at depth; roles differ; last block compresses
        xz = np.column_stack([
            trajectory(5, 10 + j, 10 - 0.5 * i + j, epochs) if i < 3 else
            trajectory(5, 9 + j, 5 + j, epochs)  # fc2: fits then compresses by ~45 %
            for i, j in enumerate(jitter)
        ])  # fmt: skip
        yz = np.column_stack([trajectory(0.1, 1 + 2 * i, 1.5 + 2 * i, epochs) for i in range(4)])
        acc, probes = 0.96 + 0.002 * rng.normal(), [0.80, 0.86, 0.92, 0.97]
    else:  # every block alike, input information collapses with depth, no late compression
        xz = np.column_stack([
            trajectory(5, 10 - 3 * i + j, 10 - 3 * i + j, epochs) for i, j in enumerate(jitter)
        ])  # fmt: skip
        yz = np.column_stack([trajectory(0.1, 6.0, 7.0, epochs) for _ in range(4)])
        acc, probes = 0.93 + 0.002 * rng.normal(), [0.90, 0.92, 0.93, 0.93]
    head = "none" if method == "e2e" else "linear"
    name = f"{method}-s{seed}"
    return run_tables(name, method, head, seed, xz, yz, acc=acc, probes=probes, **kw)


def arms(seeds=SEEDS, **kw) -> tuple[Arm, Arm]:
    """E2E and layer-wise arms of paper-like runs."""
    out = []
    for method in ("e2e", "layerwise"):
        parts = [paper_like(s, method, **kw) for s in seeds]
        layers = pd.concat([p[0] for p in parts], ignore_index=True)
        epochs = pd.concat([p[1] for p in parts], ignore_index=True)
        out.append(Arm(method, layers, epochs))
    return out[0], out[1]


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["claim"], table["verdict"], strict=True))


# ----------------------------------------------------------------------------------------------
# known answers
# ----------------------------------------------------------------------------------------------


def test_paper_like_arms_support_every_claim() -> None:
    e2e, lw = arms()
    table = assess(e2e, lw).set_index("claim")
    assert list(table.index) == list(claims.CLAIMS)
    for claim in ("C1", "C2", "C3", "C4a", "C4b"):
        assert table.loc[claim, "verdict"] == "supported", table.loc[claim].to_dict()
        assert table.loc[claim, "ci_low"] > 0
        assert table.loc[claim, "n"] == 5
    # C1: at the last epoch 10, 9.5, 9, 5 (slope -1.5/block) vs 10, 7, 4, 1 (-3/block)
    assert table.loc["C1", "estimate"] == pytest.approx(1.5, abs=0.3)
    # C3: E2E's fc2 falls from 9 to 5 (44 %), layer-wise's last block stays flat
    assert table.loc["C3", "estimate"] == pytest.approx(0.44, abs=0.05)
    assert table.loc["C4a", "estimate"] == pytest.approx(0.03, abs=0.005)
    assert (table["p_holm"].dropna() >= table["p"].dropna()).all()
    assert "conv1" in table.loc["C1", "detail"]
    assert "label excess late/early" in table.loc["C3", "detail"]


def test_swapping_the_arms_contradicts_the_paired_claims() -> None:
    e2e, lw = arms()
    table = assess(lw, e2e, ["C1", "C2", "C3", "C4a", "C4b"])
    assert set(verdicts(table).values()) == {"contradicted"}
    forward = assess(e2e, lw, ["C1", "C2", "C3", "C4a", "C4b"])
    assert np.allclose(table["estimate"], -forward["estimate"])


def test_an_arm_against_itself_is_inconclusive_with_zero_effect() -> None:
    e2e, _ = arms()
    table = assess(e2e, Arm("copy", e2e.layers, e2e.epochs), ["C1", "C2", "C3", "C4a", "C4b"])
    assert set(verdicts(table).values()) == {"inconclusive"}
    assert np.allclose(table["estimate"], 0.0)


def noise_arms(rng: np.random.Generator) -> tuple[Arm, Arm]:
    """E2E and layer-wise arms drawn from one distribution: excesses, accuracies and probes are
    noise around the same values, so no claim has an effect."""
    out = []
    for method, head in (("e2e", "none"), ("layerwise", "linear")):
        parts = []
        for seed in SEEDS:
            xz = 5.0 + rng.normal(0, 0.5, (EPOCHS + 1, len(BLOCKS)))
            yz = 1.0 + rng.normal(0, 0.1, (EPOCHS + 1, len(BLOCKS)))
            acc = 0.95 + rng.normal(0, 0.005)
            gap = 0.02 + rng.normal(0, 0.005)
            probes = list(0.9 + rng.normal(0, 0.005, len(BLOCKS)))
            parts.append(
                run_tables(f"{method}-s{seed}", method, head, seed, xz, yz, acc=acc,
                           train_acc=acc + gap, probes=probes)
            )  # fmt: skip
        layers = pd.concat([p[0] for p in parts], ignore_index=True)
        epochs = pd.concat([p[1] for p in parts], ignore_index=True)
        out.append(Arm(method, layers, epochs))
    return out[0], out[1]


@pytest.mark.parametrize("draw", [0, 1, 2])
def test_noise_only_arms_are_inconclusive(draw: int) -> None:
    # every claim measured (a finite estimate and interval) and called inconclusive: neither
    # "supported" nor "contradicted", and not "not measured" either. Fixed draws: at Holm
    # alpha 0.05 about one draw in twenty is significant somewhere by chance (test_calibration.py
    # measures those rates).
    table = assess(*noise_arms(np.random.default_rng(draw)))
    assert list(table["claim"]) == list(claims.CLAIMS)
    assert set(verdicts(table).values()) == {"inconclusive"}, verdicts(table)
    assert np.isfinite(table[["estimate", "ci_low", "ci_high", "p_holm"]].to_numpy()).all()
    assert ((table["ci_low"] < 0) & (table["ci_high"] > 0)).all()


def test_a_small_effect_in_every_seed_is_supported() -> None:
    # the per-seed rule with binomial noise (0.0077 on 1,000 images) called 0.004 "not beyond
    # noise"; across 5 seeds with a consistent sign the paired interval excludes 0
    e2e, lw = arms()
    epochs = lw.epochs.copy()
    per_seed = {s: e2e.epochs[e2e.epochs["seed"] == s]["test_acc"].iloc[0] for s in SEEDS}
    offsets = {0: 0.003, 1: 0.005, 2: 0.004, 3: 0.0035, 4: 0.0045}
    epochs["test_acc"] = [per_seed[s] - offsets[s] for s in epochs["seed"]]
    row = assess(e2e, Arm("lw", lw.layers, epochs), ["C4a"]).iloc[0]
    assert row["verdict"] == "supported"
    assert row["estimate"] == pytest.approx(0.004)


def test_seed_variance_is_not_ignored() -> None:
    # differences of +-0.02 around 0.002: a per-seed z with a small point noise would call most
    # seeds significant; the paired interval over seeds is wide and the verdict inconclusive
    e2e, lw = arms()
    epochs = lw.epochs.copy()
    per_seed = {s: e2e.epochs[e2e.epochs["seed"] == s]["test_acc"].iloc[0] for s in SEEDS}
    offsets = {0: 0.022, 1: -0.018, 2: 0.02, 3: -0.02, 4: 0.006}
    epochs["test_acc"] = [per_seed[s] - offsets[s] for s in epochs["seed"]]
    row = assess(e2e, Arm("lw", lw.layers, epochs), ["C4a"]).iloc[0]
    assert row["verdict"] == "inconclusive"
    assert row["ci_low"] < 0 < row["ci_high"]


def test_c3_uses_fixed_windows_not_the_peak() -> None:
    # a flat last block with one high point in the middle: a peak rule sees "fit then compress";
    # the windows see no change
    e2e, lw = arms()
    flat = e2e.layers.copy()
    fc2 = flat["layer"] == "fc2"
    flat.loc[fc2, "nhsic_xz"] = FLOOR_XZ + 8.0
    flat.loc[fc2 & (flat["epoch"] == 6), "nhsic_xz"] = FLOOR_XZ + 20.0
    per_seed = claims.CLAIMS["C3"].per_seed(Arm("flat", flat, e2e.epochs), lw)
    assert np.allclose(per_seed["candidate"], 0.0)


def test_windows() -> None:
    assert claims.windows(range(41)) == ([1.0, 2.0, 3.0, 4.0], [37.0, 38.0, 39.0, 40.0])
    assert claims.windows([0, 0.125, 0.5, *range(1, 13)]) == ([1.0], [12.0])
    with pytest.raises(claims.NotMeasured, match="need >= 10"):
        claims.windows(range(6))


def test_c3b_is_stratified_by_arm() -> None:
    e2e, lw = arms()
    # gap made by the arm alone: E2E compresses its middle blocks? no - set gaps by arm only
    e2e_ep, lw_ep = e2e.epochs.copy(), lw.epochs.copy()
    e2e_ep["train_acc"] = e2e_ep["test_acc"] + 0.01
    lw_ep["train_acc"] = lw_ep["test_acc"] + 0.05 + 0.001 * lw_ep["seed"] % 2
    row = assess(Arm("e2e", e2e.layers, e2e_ep), Arm("lw", lw.layers, lw_ep), ["C3b"]).iloc[0]
    assert row["verdict"] == "inconclusive"
    # now a within-arm relation: more middle compression, smaller gap, in both arms
    from ibstudy.generalization import compression_vs_gap

    tables = []
    for arm in (e2e, lw):
        points = compression_vs_gap(arm.layers, arm.epochs).set_index("seed")
        ep = arm.epochs.copy()
        ep["train_acc"] = (
            ep["test_acc"] + 0.05 - 0.04 * ep["seed"].map(points["middle_compression"])
        )
        tables.append(Arm(arm.name, arm.layers, ep))
    row = assess(*tables, ["C3b"]).iloc[0]
    assert row["verdict"] == "supported" and row["estimate"] < 0


def test_c4a_mcnemar_detail_from_outcomes() -> None:
    e2e, lw = arms()
    rows = []
    for arm, right in ((e2e, 960), (lw, 930)):
        for seed in SEEDS:
            correct = np.zeros(1000, dtype=int)
            correct[:right] = 1
            rows.append(
                pd.DataFrame(
                    {
                        "run": f"{arm.name}-s{seed}",
                        "seed": seed,
                        "epoch": EPOCHS,
                        "image": range(1000),
                        "correct": correct,
                        "loss": 0.1,
                    }
                )
            )
    outcomes = pd.concat(rows, ignore_index=True)
    with_out = [Arm(a.name, a.layers, a.epochs, outcomes[outcomes["run"].str.startswith(a.name)])
                for a in (e2e, lw)]  # fmt: skip
    detail = assess(*with_out, ["C4a"]).iloc[0]["detail"]
    assert "McNemar" in detail and "30 vs 0" in detail


# ----------------------------------------------------------------------------------------------
# not measured
# ----------------------------------------------------------------------------------------------


def test_without_floor_the_plane_claims_are_not_measured() -> None:
    e2e, lw = arms(floor=False)
    table = assess(e2e, lw).set_index("claim")
    for claim in ("C1", "C2", "C3", "C3b"):
        assert table.loc[claim, "verdict"] == "not measured"
        assert "floor" in table.loc[claim, "reason"]
    assert table.loc["C4a", "verdict"] == "supported"  # Holm over the measured claims only


def test_short_runs_leave_the_windowed_claims_not_measured() -> None:
    e2e, lw = arms(epochs=5)
    table = assess(e2e, lw).set_index("claim")
    assert table.loc["C3", "verdict"] == "not measured"
    assert "need >= 10" in table.loc["C3", "reason"]
    assert table.loc["C3b", "verdict"] == "not measured"
    assert table.loc["C1", "verdict"] == "supported"


def test_without_probes_or_epochs() -> None:
    e2e, lw = arms()
    no_probe = [Arm(a.name, a.layers.drop(columns="probe_test_acc"), None) for a in (e2e, lw)]
    table = assess(*no_probe).set_index("claim")
    assert table.loc["C4b", "verdict"] == "not measured"
    assert table.loc["C4a", "verdict"] == "not measured"
    assert "epochs" in table.loc["C4a", "reason"]


# ----------------------------------------------------------------------------------------------
# any pair, registry, round trip
# ----------------------------------------------------------------------------------------------


def test_select_any_pair_by_columns() -> None:
    e2e, lw = arms()
    layers = pd.concat([e2e.layers, lw.layers], ignore_index=True)
    epochs = pd.concat([e2e.epochs, lw.epochs], ignore_index=True)
    layers["variant"] = layers["method"].map({"e2e": "E2E", "layerwise": "mine"})
    epochs["variant"] = epochs["method"].map({"e2e": "E2E", "layerwise": "mine"})
    a = Arm.select(layers, epochs, variant="E2E")
    b = Arm.select(layers, epochs, variant="mine")
    assert (a.name, b.name, a.seeds) == ("E2E", "mine", SEEDS)
    assert verdicts(assess(a, b, ["C1"])) == {"C1": "supported"}
    with pytest.raises(ValueError, match="no layers rows"):
        Arm.select(layers, epochs, variant="nope")


def test_per_seed_works_with_one_seed() -> None:
    e2e, lw = arms(seeds=(3,))
    table = claims.CLAIMS["C1"].per_seed(e2e, lw)
    assert list(table["seed"]) == [3] and table["difference"].iloc[0] > 1


def test_registering_a_claim_makes_it_assessable() -> None:
    e2e, lw = arms()
    claim = claims.Claim(
        "Cx", "the last block's excess is higher", "final excess of fc2", +1, "nHSIC",
        claims._paired_rule(lambda run: float(claims.excess(run.layers[
            (run.layers["layer"] == "fc2") & (run.layers["epoch"] == EPOCHS)], "xz")[0])),
    )  # fmt: skip
    claims.register(claim)
    try:
        assert assess(e2e, lw, ["Cx"]).iloc[0]["verdict"] == "supported"
        with pytest.raises(ValueError, match="already registered"):
            claims.register(claim)
    finally:
        del claims.CLAIMS["Cx"]


def test_assess_survives_a_csv_round_trip() -> None:
    e2e, lw = arms()
    back = []
    for arm in (e2e, lw):
        tables = [pd.read_csv(io.StringIO(t.to_csv(index=False))) for t in (arm.layers, arm.epochs)]
        back.append(Arm(arm.name, *tables))
    a, b = assess(e2e, lw), assess(*back)
    assert list(a["verdict"]) == list(b["verdict"])
    assert np.allclose(a["estimate"], b["estimate"], equal_nan=True)


# ----------------------------------------------------------------------------------------------
# bad input, named before any verdict
# ----------------------------------------------------------------------------------------------


def test_one_seed_is_refused() -> None:
    e2e, lw = arms(seeds=(0,))
    with pytest.raises(ValueError, match=">= 2 seeds"):
        assess(e2e, lw)


def test_seeds_on_one_side_only_are_named() -> None:
    e2e, _ = arms()
    _, lw = arms(seeds=(0, 1, 2))
    with pytest.raises(ValueError, match=r"seed\(s\) \[3, 4\] present for 'e2e' only"):
        assess(e2e, lw)


def test_mixed_estimators_and_scales_are_refused() -> None:
    e2e, lw = arms()
    other = lw.layers.assign(measure_id="nhsic-median-m256-def")
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        assess(e2e, Arm("lw", other, lw.epochs))
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        Arm("mixed", pd.concat([lw.layers, other.assign(seed=other["seed"] + 10)]), None)
    bigger = lw.layers.assign(chunk_size=512)
    with pytest.raises(ValueError, match="chunk_size"):
        assess(e2e, Arm("lw", bigger, lw.epochs))
    scaled = [Arm(a.name, a.layers, a.epochs.assign(scale=s)) for a, s in ((e2e, "x"), (lw, "y"))]
    with pytest.raises(ValueError, match="mix scales"):
        assess(*scaled)


def test_two_runs_for_one_seed_and_bad_arguments() -> None:
    e2e, lw = arms()
    doubled = pd.concat([e2e.layers, lw.layers])
    with pytest.raises(ValueError, match="several runs for seed"):
        Arm("both", doubled)
    with pytest.raises(ValueError, match="lacks required column"):
        Arm("x", e2e.layers.drop(columns="seed"))
    with pytest.raises(ValueError, match="registered claims"):
        assess(e2e, lw, ["C9"])
    with pytest.raises(ValueError, match="alpha"):
        assess(e2e, lw, alpha=0.0)
    with pytest.raises(ValueError, match="non-empty str"):
        Arm("", e2e.layers)


def test_claims_table_per_baseline_and_with_one_seed() -> None:
    e2e, lw = arms()
    mlp = lw.layers.assign(head="mlp", run=lw.layers["run"] + "-mlp")
    mlp_ep = lw.epochs.assign(head="mlp", run=lw.epochs["run"] + "-mlp")
    layers = pd.concat([e2e.layers, lw.layers, mlp], ignore_index=True)
    epochs = pd.concat([e2e.epochs, lw.epochs, mlp_ep], ignore_index=True)
    table = claims.claims_table(
        layers,
        epochs,
        baselines=[{"method": "layerwise", "head": h} for h in ("linear", "mlp", "x")],
    )
    assert list(pd.unique(table["baseline"])) == ["layerwise/linear", "layerwise/mlp"]
    assert (table.groupby("baseline")["verdict"].apply(list).map(len) == 6).all()
    one = claims.claims_table(layers[layers["seed"] == 2], epochs[epochs["seed"] == 2])
    assert set(one["verdict"]) == {"not measured"} and (one["n"] == 1).all()
    c1 = one.set_index("claim").loc["C1"]
    assert c1["estimate"] > 1 and "1 seed" in c1["reason"]
    with pytest.raises(ValueError, match="none of the baselines"):
        claims.claims_table(layers, epochs, baselines=[{"method": "forward_forward"}])


def test_standardized_effect_and_power_columns() -> None:
    e2e, lw = arms()
    table = assess(e2e, lw).set_index("claim")
    diffs = claims.CLAIMS["C4a"].per_seed(e2e, lw)["difference"]
    d = diffs.mean() / diffs.std(ddof=1)
    assert table.loc["C4a", "d"] == pytest.approx(d)
    from ibstudy.estimates import paired_power

    assert table.loc["C4a", "power"] == pytest.approx(paired_power(abs(d), 5))
    assert math.isnan(table.loc["C3b", "d"]) and math.isnan(table.loc["C3b", "power"])
