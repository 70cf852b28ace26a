"""Tests for ibstudy.claims: hand-made trajectories, verdicts that flip with the data, bad input."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import claims

C = 10  # classes: nHSIC(Y;Y) ~ C - 1 = 9
BLOCKS = ("block0", "block1", "block2", "block3")
LAYER_NAMES = (*BLOCKS, "logits")
SCALE = "synthetic, 4 blocks, 4 epochs"

# nHSIC(X;Z) per epoch (rows 0..4) and layer (columns block0..block3, logits).
# E2E: every block its own shape; the last block fits (peak at epoch 2) then compresses.
E2E_XZ = np.array(
    [
        [40.0, 30.0, 20.0, 20.0, 10.0],
        [44.0, 30.0, 30.0, 30.0, 12.0],
        [47.0, 30.0, 33.0, 35.0, 13.0],
        [49.0, 30.0, 31.0, 30.0, 12.0],
        [50.0, 30.0, 30.0, 25.0, 11.0],
    ]
)
E2E_YZ = np.array(
    [
        [0.5, 0.5, 0.5, 1.0, 1.0],
        [1.0, 2.0, 4.0, 6.0, 6.0],
        [1.5, 3.0, 5.0, 8.0, 8.0],
        [2.0, 3.5, 5.5, 8.0, 8.2],
        [2.0, 4.0, 6.0, 7.9, 8.3],
    ]
)
# layer-wise: every block collapses in the same way, deeper ones further; all end label-saturated.
LW_XZ = np.array(
    [
        [40.0, 40.0, 40.0, 40.0, 10.0],
        [20.0, 15.0, 12.0, 10.0, 6.0],
        [10.0, 7.0, 5.0, 4.0, 3.0],
        [6.0, 4.0, 3.0, 2.0, 2.0],
        [5.0, 3.0, 2.0, 1.0, 1.5],
    ]
)
LW_YZ = np.array(
    [
        [0.5, 0.5, 0.5, 0.5, 1.0],
        [6.0, 6.2, 6.4, 6.5, 6.5],
        [8.0, 8.1, 8.2, 8.2, 8.2],
        [8.4, 8.5, 8.5, 8.5, 8.5],
        [8.5, 8.5, 8.6, 8.6, 8.6],
    ]
)
E2E_PROBE = [0.80, 0.85, 0.92, 0.97]  # at the last epoch, per block
LW_PROBE = [0.90, 0.93, 0.94, 0.94]


def run_layers(
    run: str,
    method: str,
    head: str,
    xz: np.ndarray,
    yz: np.ndarray,
    *,
    probe: list[float] | None = None,
    floor: float = 1.5,
) -> pd.DataFrame:
    """A layers table for one run in the trainer's format (probes at the last epoch only)."""
    rows = []
    last = xz.shape[0] - 1
    for epoch in range(xz.shape[0]):
        for index, layer in enumerate(LAYER_NAMES[: xz.shape[1] - 1] + ("logits",)):
            is_block = layer != "logits"
            p = probe[index] if probe is not None and epoch == last and is_block else math.nan
            rows.append(
                {
                    "run": run, "method": method, "head": head, "epoch": epoch, "layer": layer,
                    "layer_index": index, "nhsic_xz": xz[epoch, index],
                    "nhsic_yz": yz[epoch, index], "nhsic_xz_std": 0.1, "nhsic_yz_std": 0.1,
                    "floor_xz": floor, "floor_yz": 0.05,
                    "probe_train_acc": p, "probe_test_acc": p,
                    "head_test_acc": (0.8 + 0.02 * index) if is_block and head != "none"
                    else math.nan,
                }
            )  # fmt: skip
    return pd.DataFrame(rows)


def run_epochs(run: str, method: str, head: str, test_acc: list[float]) -> pd.DataFrame:
    """An epochs table for one run."""
    return pd.DataFrame(
        {
            "run": run, "method": method, "head": head, "epoch": range(len(test_acc)),
            "train_loss": 1.0, "train_acc": [a + 0.02 for a in test_acc], "test_acc": test_acc,
            "lr": 1e-3, "seconds": 1.0,
        }
    )  # fmt: skip


E2E_ACC = [0.1, 0.80, 0.90, 0.94, 0.95]
LW_ACC = [0.1, 0.85, 0.88, 0.90, 0.90]


def tables(
    *,
    e2e_xz: np.ndarray = E2E_XZ,
    e2e_yz: np.ndarray = E2E_YZ,
    lw_xz: np.ndarray = LW_XZ,
    lw_yz: np.ndarray = LW_YZ,
    e2e_acc: list[float] = E2E_ACC,
    lw_acc: list[float] = LW_ACC,
    probes: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Layers and epochs tables of one E2E run and one layer-wise (linear head) run."""
    layers = pd.concat(
        [
            run_layers("e2e-r", "e2e", "none", e2e_xz, e2e_yz, probe=E2E_PROBE if probes else None),
            run_layers(
                "lw-r", "layerwise", "linear", lw_xz, lw_yz, probe=LW_PROBE if probes else None
            ),
        ],
        ignore_index=True,
    )
    epochs = pd.concat(
        [
            run_epochs("e2e-r", "e2e", "none", e2e_acc),
            run_epochs("lw-r", "layerwise", "linear", lw_acc),
        ],
        ignore_index=True,
    )
    return layers, epochs


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["claim"], table["verdict"], strict=True))


def row(table: pd.DataFrame, claim: str) -> pd.Series:
    return table[table["claim"] == claim].iloc[0]


# ----------------------------------------------------------------------------------------------
# trajectory shapes
# ----------------------------------------------------------------------------------------------


def test_trajectory_shapes_hand_made() -> None:
    xz = np.array([[2.0, 1.0], [5.0, 1.0], [4.0, 1.0]])  # one block + logits
    yz = np.array([[0.0, 0.0], [3.0, 1.0], [4.5, 9.0]])
    layers = run_layers("r", "e2e", "none", xz, yz, floor=2.0)
    shapes = claims.trajectory_shapes(layers, C)
    assert list(shapes["layer"]) == ["block0", "logits"]
    b = shapes.iloc[0]
    assert b["peak_epoch_xz"] == 1
    assert b["peak_frac_xz"] == pytest.approx(0.5)
    assert b["peak_xz"] == 5.0 and b["final_xz"] == 4.0
    assert b["final_over_peak_xz"] == pytest.approx(0.8)
    assert b["final_yz_norm"] == pytest.approx(4.5 / 9)
    assert b["final_xz_over_floor"] == pytest.approx(2.0)
    logits = shapes.iloc[1]
    assert logits["peak_epoch_xz"] == 0  # ties: the first epoch reaching the maximum
    assert logits["final_over_peak_xz"] == pytest.approx(1.0)
    assert logits["final_yz_norm"] == pytest.approx(1.0)


def test_trajectory_shapes_ignores_row_order_and_missing_floor() -> None:
    layers, _ = tables()
    shuffled = layers.sample(frac=1.0, random_state=0).drop(columns=["floor_xz"])
    a = claims.trajectory_shapes(layers, C).drop(columns="final_xz_over_floor")
    b = claims.trajectory_shapes(shuffled, C)
    assert b["final_xz_over_floor"].isna().all()
    b = b.drop(columns="final_xz_over_floor").sort_values(["run", "layer_index"])
    pd.testing.assert_frame_equal(a, b.reset_index(drop=True))


def test_shape_spread_is_range_over_blocks() -> None:
    layers, _ = tables()
    shapes = claims.trajectory_shapes(layers, C)
    spread = claims.shape_spread(shapes).set_index("method")
    # E2E peak epochs per block: 4, 0, 2, 2 -> range 4 (fraction 1.0); layer-wise all at 0
    assert spread.loc["e2e", "spread_peak_epoch_xz"] == 4
    assert spread.loc["e2e", "spread_peak_frac_xz"] == pytest.approx(1.0)
    assert spread.loc["layerwise", "spread_peak_frac_xz"] == 0.0
    assert spread.loc["e2e", "spread_final_yz_norm"] == pytest.approx((7.9 - 2.0) / 9)
    assert spread.loc["layerwise", "spread_final_over_peak_xz"] == pytest.approx(5 / 40 - 1 / 40)
    assert (spread["n_layers"] == 4).all()
    with_logits = claims.shape_spread(shapes, include_logits=True).set_index("method")
    assert (with_logits["n_layers"] == 5).all()


# ----------------------------------------------------------------------------------------------
# fit then compress
# ----------------------------------------------------------------------------------------------


def test_fit_then_compress_on_last_block() -> None:
    layers, _ = tables()
    res = claims.fit_then_compress(layers)
    assert res["layer"] == "block3" and res["method"] == "e2e"
    assert res["peak_epoch_xz"] == 2 and res["final_epoch"] == 4
    assert res["xz_drop"] == pytest.approx(1 - 25 / 35)
    assert res["yz_kept"] == pytest.approx(7.9 / 8.0)
    assert res["fit_phase"] is True
    assert res["holds"] is True
    # the logits: 13 -> 11 is a 15% drop with nHSIC(Y;Z) at its maximum
    assert claims.fit_then_compress(layers, layer="logits")["holds"] is True
    # block0 keeps rising: no compression
    assert claims.fit_then_compress(layers, layer="block0")["holds"] is False


def test_fit_then_compress_thresholds_and_fit_phase() -> None:
    layers, _ = tables()
    # a 28.6% drop passes tol=0.25 but not tol=0.3
    assert claims.fit_then_compress(layers, tol=0.25)["holds"] is True
    assert claims.fit_then_compress(layers, tol=0.3)["holds"] is False
    # layer-wise last block: falls from its value at initialization, nHSIC(Y;Z) at its maximum
    lw = claims.fit_then_compress(layers, method="layerwise")
    assert lw["fit_phase"] is False and lw["holds"] is True
    assert claims.fit_then_compress(layers, method="layerwise", require_fit=True)["holds"] is False


def test_fit_then_compress_needs_label_information_kept() -> None:
    yz = E2E_YZ.copy()
    yz[4, 3] = 6.0  # 75% of its max 8.0 < 90%
    layers, _ = tables(e2e_yz=yz)
    res = claims.fit_then_compress(layers)
    assert res["holds"] is False
    assert claims.fit_then_compress(layers, tol_y=0.3)["holds"] is True


def test_fit_then_compress_too_few_epochs_is_not_measured() -> None:
    layers, _ = tables(e2e_xz=E2E_XZ[:2], e2e_yz=E2E_YZ[:2])
    assert claims.fit_then_compress(layers)["holds"] is None
    assert claims.fit_then_compress(layers, min_epochs=2)["holds"] is False  # still rising


def test_fit_then_compress_bad_input() -> None:
    layers, _ = tables()
    with pytest.raises(ValueError, match="layer='block9'.*block0"):
        claims.fit_then_compress(layers, layer="block9")
    with pytest.raises(ValueError, match="method='layerwise_sequential'"):
        claims.fit_then_compress(layers, method="layerwise_sequential")
    with pytest.raises(ValueError, match="tol must be"):
        claims.fit_then_compress(layers, tol=1.5)
    with pytest.raises(ValueError, match="min_epochs"):
        claims.fit_then_compress(layers, min_epochs=1)
    mlp = run_layers("lw-mlp", "layerwise", "mlp", LW_XZ, LW_YZ)
    both = pd.concat([layers, mlp], ignore_index=True)
    with pytest.raises(ValueError, match="2 runs.*head="):
        claims.fit_then_compress(both, method="layerwise")
    assert claims.fit_then_compress(both, method="layerwise", head="mlp")["run"] == "lw-mlp"


# ----------------------------------------------------------------------------------------------
# depth profile and accuracy
# ----------------------------------------------------------------------------------------------


def test_depth_profile_last_epoch_per_run() -> None:
    layers, _ = tables(lw_xz=LW_XZ[:3], lw_yz=LW_YZ[:3])  # layer-wise recorded 3 epochs only
    prof = claims.depth_profile(layers)
    assert len(prof) == 10
    by_run = prof.groupby("run")["epoch"].unique()
    assert list(by_run["e2e-r"]) == [4] and list(by_run["lw-r"]) == [2]
    e2e = prof[prof["run"] == "e2e-r"]
    assert list(e2e["layer"]) == list(LAYER_NAMES)
    assert e2e["xz_over_first_block"].to_numpy() == pytest.approx(E2E_XZ[4] / 50.0)
    at1 = claims.depth_profile(layers, epoch=1)
    assert set(at1["epoch"]) == {1} and len(at1) == 10
    lw = at1[at1["run"] == "lw-r"]
    assert lw["xz_over_first_block"].to_numpy() == pytest.approx(LW_XZ[1] / 20.0)
    with pytest.raises(
        ValueError, match=r"epoch=7 not recorded; available epochs: \[0, 1, 2, 3, 4\]"
    ):
        claims.depth_profile(layers, epoch=7)
    with pytest.raises(ValueError, match="epoch must be"):
        claims.depth_profile(layers, epoch=-1)


def test_accuracy_table_values() -> None:
    layers, epochs = tables(e2e_acc=[0.1, 0.9, 0.96, 0.95, 0.94])
    acc = claims.accuracy_table(epochs, layers).set_index("method")
    assert acc.loc["e2e", "final_test_acc"] == pytest.approx(0.94)
    assert acc.loc["e2e", "best_test_acc"] == pytest.approx(0.96)
    assert acc.loc["e2e", "best_epoch"] == 2
    assert acc.loc["e2e", "final_train_acc"] == pytest.approx(0.96)
    assert math.isnan(acc.loc["e2e", "mean_head_test_acc"])
    assert acc.loc["layerwise", "mean_head_test_acc"] == pytest.approx(0.83)  # 0.80..0.86
    assert acc.loc["layerwise", "head"] == "linear"
    no_layers = claims.accuracy_table(epochs)
    assert no_layers["mean_head_test_acc"].isna().all()


# ----------------------------------------------------------------------------------------------
# the claims table: verdicts follow the data
# ----------------------------------------------------------------------------------------------


# C3 on the 5-epoch synthetic tables: no minimum length, no schedule needed
SHORT = dict(min_compress_epochs=3, require_decay=False)


def test_all_claims_hold_on_paper_like_tables() -> None:
    layers, epochs = tables()
    table = claims.claims_table(layers, epochs, C, scale=SCALE, **SHORT)
    assert list(table.columns) == [
        "claim", "statement", "evidence", "verdict", "measured", "stat", "stat_name", "baseline",
        "scale",
    ]  # fmt: skip
    assert list(table["claim"]) == ["C1", "C2", "C3", "C4a", "C4b"]
    assert verdicts(table) == {c: "holds" for c in ("C1", "C2", "C3", "C4a", "C4b")}
    assert (table["measured"] == "fully").all()
    assert (table["scale"] == SCALE).all() and (table["baseline"] == "layerwise/linear").all()
    # C1 evidence: the excess over the floor (1.5) per block with its noise (0.1: std, k unknown)
    c1 = row(table, "C1")["evidence"]
    assert "block3 23.5+-0.1 vs -0.5+-0.1 (z 169.7)" in c1
    assert "keeps more at 2 and less at 0 of the 2 deeper blocks" in c1
    assert "raw nHSIC(X;Z) last/first block: e2e 0.50, layerwise/linear 0.20 (not used)" in c1
    assert "0.950" in row(table, "C4a")["evidence"] and "0.900" in row(table, "C4a")["evidence"]


def test_c1_flips_when_layerwise_keeps_input_information() -> None:
    lw_xz = LW_XZ.copy()
    lw_xz[4, :4] = E2E_XZ[4, :4]  # layer-wise ends exactly where E2E ends, block by block
    table = claims.claims_table(*tables(lw_xz=lw_xz), C, scale=SCALE)
    assert verdicts(table)["C1"] == "does not hold"
    assert "keeps more at 0 and less at 0 of the 2 deeper blocks" in row(table, "C1")["evidence"]
    # noise: differences within z_crit x sqrt(0.1^2 + 0.1^2) = 0.28 do not count
    lw_xz[4, 2:4] = [29.8, 24.8]
    assert verdicts(claims.claims_table(*tables(lw_xz=lw_xz), C, scale=SCALE))["C1"] == (
        "does not hold"
    )
    lw_xz[4, 2:4] = [29.0, 24.0]  # 1.0 below E2E at both deeper blocks: z = 3.5 each
    assert verdicts(claims.claims_table(*tables(lw_xz=lw_xz), C, scale=SCALE))["C1"] == "holds"
    lw_xz[4, 2] = 31.0  # ... but more than E2E at one of them: not "less at none"
    assert verdicts(claims.claims_table(*tables(lw_xz=lw_xz), C, scale=SCALE))["C1"] == (
        "does not hold"
    )


def test_c1_noise_only_tables_never_hold() -> None:
    """Both methods at the floor plus noise: C1 must read "does not hold", never "holds"."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        e2e_xz = 1.5 + rng.normal(0, 0.1, E2E_XZ.shape)
        lw_xz = 1.5 + rng.normal(0, 0.1, LW_XZ.shape)
        table = claims.claims_table(*tables(e2e_xz=e2e_xz, lw_xz=lw_xz), C, scale=SCALE)
        assert verdicts(table)["C1"] != "holds"


def test_c1_needs_a_floor() -> None:
    layers, epochs = tables()
    table = claims.claims_table(layers.assign(floor_xz=math.nan), epochs, C, scale=SCALE)
    assert verdicts(table)["C1"] == "not measured"
    assert "needs the permutation floor" in row(table, "C1")["evidence"]


def test_c2_flips_when_e2e_layers_look_alike() -> None:
    e2e_xz, e2e_yz = E2E_XZ.copy(), E2E_YZ.copy()
    e2e_xz[:, :4] = e2e_xz[:, [3]]  # every E2E block follows the last block's trajectory
    e2e_yz[:, :4] = e2e_yz[:, [3]]
    table = claims.claims_table(*tables(e2e_xz=e2e_xz, e2e_yz=e2e_yz), C, scale=SCALE)
    assert verdicts(table)["C2"] == "does not hold"
    assert "differs more on 0, less on 1 of 3" in row(table, "C2")["evidence"]


def test_c2_holds_on_distinct_roles_with_z_scores() -> None:
    table = claims.claims_table(*tables(), C, scale=SCALE, **SHORT)
    c2 = row(table, "C2")
    assert c2["verdict"] == "holds" and "differs more on 3, less on 0 of 3" in c2["evidence"]
    # the epoch-of-peak spread: E2E blocks peak at fractions 1, 0, 0.5, 0.5 of the span (std
    # 0.354); layer-wise blocks all peak at the first point (std 0)
    assert "epoch of peak 0.354 vs 0 " in c2["evidence"]
    assert c2["stat_name"] == "mean z of spread difference" and c2["stat"] > 2


def test_c2_baseline_differing_more_on_one_statistic_does_not_hold() -> None:
    lw_yz = LW_YZ.copy()
    lw_yz[4, :4] = [2.0, 4.0, 6.0, 8.6]  # layer-wise blocks now end far apart in nHSIC(Y;Z)
    table = claims.claims_table(*tables(lw_yz=lw_yz), C, scale=SCALE)
    assert verdicts(table)["C2"] == "does not hold"
    assert "differs more on 2, less on 1 of 3" in row(table, "C2")["evidence"]


def test_c2_differences_within_noise_do_not_count() -> None:
    layers, epochs = tables()
    noisy = layers.assign(nhsic_xz_std=30.0, nhsic_yz_std=10.0)  # noise larger than every value
    table = claims.claims_table(noisy, epochs, C, scale=SCALE)
    assert verdicts(table)["C2"] == "does not hold"


def test_c2_noise_only_tables_never_hold() -> None:
    """Every block of both runs at the floor plus noise: C2 must never read "holds"."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        e2e_xz = 1.5 + rng.normal(0, 0.1, E2E_XZ.shape)
        lw_xz = 1.5 + rng.normal(0, 0.1, LW_XZ.shape)
        e2e_yz = 0.05 + rng.normal(0, 0.1, E2E_YZ.shape)
        lw_yz = 0.05 + rng.normal(0, 0.1, LW_YZ.shape)
        layers, epochs = tables(e2e_xz=e2e_xz, lw_xz=lw_xz, e2e_yz=e2e_yz, lw_yz=lw_yz)
        assert verdicts(claims.claims_table(layers, epochs, C, scale=SCALE))["C2"] != "holds"


def test_c3_flips_when_e2e_last_block_keeps_growing() -> None:
    e2e_xz = E2E_XZ.copy()
    e2e_xz[:, 3] = [20.0, 30.0, 35.0, 38.0, 40.0]
    table = claims.claims_table(*tables(e2e_xz=e2e_xz), C, scale=SCALE, **SHORT)
    assert verdicts(table)["C3"] == "does not hold"
    # the layer-wise last block is reported alongside: it falls from the first epoch (no fitting
    # phase), which is not fit-then-compress
    assert "layerwise/linear's last block it does not hold" in row(table, "C3")["evidence"]


def test_c3_compression_from_initialization_or_within_noise_does_not_hold() -> None:
    e2e_xz = E2E_XZ.copy()
    e2e_xz[:, 3] = [40.0, 35.0, 30.0, 28.0, 25.0]  # falls from the first epoch: no fitting phase
    table = claims.claims_table(*tables(e2e_xz=e2e_xz), C, scale=SCALE, **SHORT)
    assert verdicts(table)["C3"] == "does not hold"
    assert "peaks at the first recorded epoch" in row(table, "C3")["evidence"]
    e2e_xz[:, 3] = [20.0, 30.0, 35.0, 34.9, 34.8]  # a drop of 0.2 < 2 x sqrt(2) x 0.1 of noise
    table = claims.claims_table(*tables(e2e_xz=e2e_xz), C, scale=SCALE, **SHORT, tol=0.0)
    assert verdicts(table)["C3"] == "does not hold"


def test_c3_needs_length_and_a_schedule() -> None:
    layers, epochs = tables()
    table = claims.claims_table(layers, epochs, C, scale=SCALE)  # defaults: >= 10 epochs
    assert verdicts(table)["C3"] == "not measured"
    assert "5 recorded epochs, fewer than 10" in row(table, "C3")["evidence"]
    table = claims.claims_table(layers, epochs, C, scale=SCALE, min_compress_epochs=3)
    assert verdicts(table)["C3"] == "not measured"  # lr constant: the late phase has not settled
    assert "never decayed" in row(table, "C3")["evidence"]
    decayed = epochs.assign(lr=np.where(epochs["epoch"] >= 3, 2e-4, 1e-3))
    table = claims.claims_table(layers, decayed, C, scale=SCALE, min_compress_epochs=3)
    assert verdicts(table)["C3"] == "holds"


def test_c3_counts_whole_epochs_only() -> None:
    layers, epochs = tables()
    decayed = epochs.assign(lr=np.where(epochs["epoch"] >= 3, 2e-4, 1e-3))
    # relabel the first points as sub-epoch points: 0, 0.25, 0.5, 1, 2 are 3 whole epochs
    points = {0: 0.0, 1: 0.25, 2: 0.5, 3: 1.0, 4: 2.0}
    early = layers.assign(epoch=layers["epoch"].map(points))
    early_ep = decayed.assign(epoch=decayed["epoch"].map(points))
    table = claims.claims_table(early, early_ep, C, scale=SCALE, min_compress_epochs=4)
    assert verdicts(table)["C3"] == "not measured"
    assert "3 recorded epochs, fewer than 4" in row(table, "C3")["evidence"]
    table = claims.claims_table(layers, decayed, C, scale=SCALE, min_compress_epochs=4)
    assert verdicts(table)["C3"] == "holds"


def test_c4a_accuracy_flips_and_uses_binomial_noise() -> None:
    table = claims.claims_table(*tables(lw_acc=[0.1, 0.9, 0.95, 0.96, 0.97]), C, scale=SCALE)
    assert verdicts(table)["C4a"] == "does not hold"
    assert row(table, "C4a")["measured"] == "fully"
    assert "test-set size unknown" in row(table, "C4a")["evidence"]
    # with the dataset known (mnist5k: 1,000 test images) the noise is sqrt(2 * 0.9 * 0.1 / 1000)
    layers, epochs = tables(lw_acc=[0.1, 0.85, 0.88, 0.90, 0.93])  # E2E 0.95: 0.02 ahead
    assert verdicts(claims.claims_table(layers, epochs, C, scale=SCALE))["C4a"] == "holds"
    table = claims.claims_table(layers, epochs.assign(dataset="mnist5k"), C, scale=SCALE)
    assert verdicts(table)["C4a"] == "does not hold"  # needs > 2 x 0.0105 = 0.021
    assert "1000 test images" in row(table, "C4a")["evidence"]


def test_c4_probe_part_flips() -> None:
    layers, epochs = tables()
    lw = layers["run"] == "lw-r"
    last = layers["layer"] == "block3"
    layers.loc[lw & last & layers["probe_test_acc"].notna(), "probe_test_acc"] = 0.99
    table = claims.claims_table(layers, epochs, C, scale=SCALE)
    assert verdicts(table)["C4a"] == "holds" and verdicts(table)["C4b"] == "does not hold"
    assert "0.990" in row(table, "C4b")["evidence"]
    # with n = 512 probe images, 0.97 vs 0.955 is within 2 x binomial noise (0.024)
    layers.loc[lw & last & layers["probe_test_acc"].notna(), "probe_test_acc"] = 0.955
    assert verdicts(claims.claims_table(layers, epochs, C, scale=SCALE))["C4b"] == "holds"
    noisy = claims.claims_table(layers.assign(eval_size=512), epochs, C, scale=SCALE)
    assert verdicts(noisy)["C4b"] == "does not hold" and "n = 512" in row(noisy, "C4b")["evidence"]


def test_c4_parts_without_probes_or_epochs() -> None:
    layers, epochs = tables(probes=False)
    table = claims.claims_table(layers, epochs, C, scale=SCALE)
    assert row(table, "C4a")["verdict"] == "holds"
    assert row(table, "C4b")["verdict"] == "not measured"
    assert "probes: not measured" in row(table, "C4b")["evidence"]
    # no probe columns at all reads the same as probes never run
    no_cols = layers.drop(columns=["probe_train_acc", "probe_test_acc"])
    assert row(claims.claims_table(no_cols, epochs, C, scale=SCALE), "C4b")["measured"] == "no"
    # no epochs table: the accuracy row is not measured
    c4a = row(claims.claims_table(layers, None, C, scale=SCALE), "C4a")
    assert c4a["verdict"] == "not measured" and c4a["measured"] == "no"


def test_too_few_epochs_makes_trajectory_claims_not_measured() -> None:
    layers, epochs = tables(e2e_xz=E2E_XZ[:2], e2e_yz=E2E_YZ[:2], lw_xz=LW_XZ[:2], lw_yz=LW_YZ[:2])
    v = verdicts(claims.claims_table(layers, epochs, C, scale=SCALE))
    assert v["C2"] == "not measured" and v["C3"] == "not measured"
    assert v["C1"] != "not measured"  # the depth ratio needs one epoch only


def test_missing_method_is_not_measured() -> None:
    layers, epochs = tables()
    only_e2e = layers[layers["method"] == "e2e"]
    table = claims.claims_table(only_e2e, epochs, C, scale=SCALE)
    assert (table["verdict"] == "not measured").all()
    assert "no layerwise/linear run in the tables" in table["evidence"].iloc[0]
    only_lw = claims.claims_table(layers[layers["method"] == "layerwise"], epochs, C, scale=SCALE)
    assert (only_lw["verdict"] == "not measured").all()
    assert "no e2e run" in only_lw["evidence"].iloc[0]


def test_baselines_each_and_by_argument() -> None:
    layers, epochs = tables()
    # an MLP-head layer-wise run that does not collapse with depth
    mlp_xz = LW_XZ.copy()
    mlp_xz[:, :4] = E2E_XZ[:, :4] + 1.0  # keeps more input information than E2E at every block
    layers = pd.concat(
        [layers, run_layers("lw-mlp", "layerwise", "mlp", mlp_xz, LW_YZ)], ignore_index=True
    )
    epochs = pd.concat(
        [epochs, run_epochs("lw-mlp", "layerwise", "mlp", LW_ACC)], ignore_index=True
    )
    default = claims.claims_table(layers, epochs, C, scale=SCALE)
    assert verdicts(default)["C1"] == "holds"
    mlp = claims.claims_table(layers, epochs, C, scale=SCALE, baseline=("layerwise", "mlp"))
    assert verdicts(mlp)["C1"] == "does not hold" and (mlp["baseline"] == "layerwise/mlp").all()
    each = claims.claims_table(layers, epochs, C, scale=SCALE, baseline="each")
    assert len(each) == 10
    c1 = each[each["claim"] == "C1"].set_index("baseline")["verdict"]
    assert c1.to_dict() == {"layerwise/linear": "holds", "layerwise/mlp": "does not hold"}
    with pytest.raises(ValueError, match="2 runs in layers match baseline layerwise"):
        claims.claims_table(layers, epochs, C, scale=SCALE, baseline=("layerwise", None))


def test_claims_table_survives_a_csv_round_trip() -> None:
    layers, epochs = tables()
    direct = claims.claims_table(layers, epochs, C, scale=SCALE)

    def round_trip(df: pd.DataFrame) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(df.assign(scale=SCALE).to_csv(index=False)))

    again = claims.claims_table(round_trip(layers), round_trip(epochs), C, scale=SCALE)
    pd.testing.assert_frame_equal(direct, again)


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def test_missing_columns_are_named() -> None:
    layers, epochs = tables()
    with pytest.raises(ValueError, match=r"layers table lacks required column\(s\) \['nhsic_yz'\]"):
        claims.trajectory_shapes(layers.drop(columns="nhsic_yz"), C)
    with pytest.raises(ValueError, match=r"\['layer_index', 'nhsic_xz'\]"):
        claims.claims_table(
            layers.drop(columns=["layer_index", "nhsic_xz"]), epochs, C, scale=SCALE
        )
    with pytest.raises(ValueError, match=r"epochs table lacks required column\(s\) \['test_acc'\]"):
        claims.accuracy_table(epochs.drop(columns="test_acc"))
    with pytest.raises(ValueError, match=r"epochs table lacks.*\['test_acc'\]"):
        claims.claims_table(layers, epochs.drop(columns="test_acc"), C, scale=SCALE)
    with pytest.raises(ValueError, match=r"\['head'\]"):
        claims.depth_profile(layers.drop(columns="head"))


def test_empty_and_wrong_types() -> None:
    layers, epochs = tables()
    with pytest.raises(ValueError, match="layers table is empty"):
        claims.depth_profile(layers.iloc[0:0])
    with pytest.raises(ValueError, match="epochs table is empty"):
        claims.accuracy_table(epochs.iloc[0:0])
    with pytest.raises(ValueError, match="layers must be a pandas DataFrame"):
        claims.fit_then_compress([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be an int >= 2, got 1"):
        claims.trajectory_shapes(layers, 1)
    with pytest.raises(ValueError, match="num_classes"):
        claims.claims_table(layers, epochs, 2.5, scale=SCALE)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale must be a str"):
        claims.claims_table(layers, epochs, C, scale=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="baseline must be 'each' or a"):
        claims.claims_table(layers, epochs, C, scale=SCALE, baseline=("e2e", "none"))
    with pytest.raises(ValueError, match=r"margin must be a finite number in \[0, 1\)"):
        claims.claims_table(layers, epochs, C, scale=SCALE, margin=-0.1)
    two_e2e = pd.concat([layers, layers.assign(run="e2e-2")[layers["method"] == "e2e"]])
    with pytest.raises(ValueError, match="2 E2E runs"):
        claims.claims_table(two_e2e, epochs, C, scale=SCALE)
