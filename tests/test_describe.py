"""Tests for ibstudy.describe: hand-made trajectories and their shapes, depth profiles, accuracies."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import describe

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
    shapes = describe.trajectory_shapes(layers, C)
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
    a = describe.trajectory_shapes(layers, C).drop(columns="final_xz_over_floor")
    b = describe.trajectory_shapes(shuffled, C)
    assert b["final_xz_over_floor"].isna().all()
    b = b.drop(columns="final_xz_over_floor").sort_values(["run", "layer_index"])
    pd.testing.assert_frame_equal(a, b.reset_index(drop=True))


def test_shape_spread_is_range_over_blocks() -> None:
    layers, _ = tables()
    shapes = describe.trajectory_shapes(layers, C)
    spread = describe.shape_spread(shapes).set_index("method")
    # E2E peak epochs per block: 4, 0, 2, 2 -> range 4 (fraction 1.0); layer-wise all at 0
    assert spread.loc["e2e", "spread_peak_epoch_xz"] == 4
    assert spread.loc["e2e", "spread_peak_frac_xz"] == pytest.approx(1.0)
    assert spread.loc["layerwise", "spread_peak_frac_xz"] == 0.0
    assert spread.loc["e2e", "spread_final_yz_norm"] == pytest.approx((7.9 - 2.0) / 9)
    assert spread.loc["layerwise", "spread_final_over_peak_xz"] == pytest.approx(5 / 40 - 1 / 40)
    assert (spread["n_layers"] == 4).all()
    with_logits = describe.shape_spread(shapes, include_logits=True).set_index("method")
    assert (with_logits["n_layers"] == 5).all()


# ----------------------------------------------------------------------------------------------
# fit then compress
# ----------------------------------------------------------------------------------------------


def test_fit_then_compress_on_last_block() -> None:
    layers, _ = tables()
    res = describe.fit_then_compress(layers)
    assert res["layer"] == "block3" and res["method"] == "e2e"
    assert res["peak_epoch_xz"] == 2 and res["final_epoch"] == 4
    assert res["xz_drop"] == pytest.approx(1 - 25 / 35)
    assert res["yz_kept"] == pytest.approx(7.9 / 8.0)
    assert res["fit_phase"] is True
    assert res["holds"] is True
    # the logits: 13 -> 11 is a 15% drop with nHSIC(Y;Z) at its maximum
    assert describe.fit_then_compress(layers, layer="logits")["holds"] is True
    # block0 keeps rising: no compression
    assert describe.fit_then_compress(layers, layer="block0")["holds"] is False


def test_fit_then_compress_thresholds_and_fit_phase() -> None:
    layers, _ = tables()
    # a 28.6% drop passes tol=0.25 but not tol=0.3
    assert describe.fit_then_compress(layers, tol=0.25)["holds"] is True
    assert describe.fit_then_compress(layers, tol=0.3)["holds"] is False
    # layer-wise last block: falls from its value at initialization, nHSIC(Y;Z) at its maximum
    lw = describe.fit_then_compress(layers, method="layerwise")
    assert lw["fit_phase"] is False and lw["holds"] is True
    assert (
        describe.fit_then_compress(layers, method="layerwise", require_fit=True)["holds"] is False
    )


def test_fit_then_compress_needs_label_information_kept() -> None:
    yz = E2E_YZ.copy()
    yz[4, 3] = 6.0  # 75% of its max 8.0 < 90%
    layers, _ = tables(e2e_yz=yz)
    res = describe.fit_then_compress(layers)
    assert res["holds"] is False
    assert describe.fit_then_compress(layers, tol_y=0.3)["holds"] is True


def test_fit_then_compress_too_few_epochs_is_not_measured() -> None:
    layers, _ = tables(e2e_xz=E2E_XZ[:2], e2e_yz=E2E_YZ[:2])
    assert describe.fit_then_compress(layers)["holds"] is None
    assert describe.fit_then_compress(layers, min_epochs=2)["holds"] is False  # still rising


def test_fit_then_compress_bad_input() -> None:
    layers, _ = tables()
    with pytest.raises(ValueError, match="layer='block9'.*block0"):
        describe.fit_then_compress(layers, layer="block9")
    with pytest.raises(ValueError, match="method='layerwise_sequential'"):
        describe.fit_then_compress(layers, method="layerwise_sequential")
    with pytest.raises(ValueError, match="tol must be"):
        describe.fit_then_compress(layers, tol=1.5)
    with pytest.raises(ValueError, match="min_epochs"):
        describe.fit_then_compress(layers, min_epochs=1)
    mlp = run_layers("lw-mlp", "layerwise", "mlp", LW_XZ, LW_YZ)
    both = pd.concat([layers, mlp], ignore_index=True)
    with pytest.raises(ValueError, match="2 runs.*head="):
        describe.fit_then_compress(both, method="layerwise")
    assert describe.fit_then_compress(both, method="layerwise", head="mlp")["run"] == "lw-mlp"


# ----------------------------------------------------------------------------------------------
# depth profile and accuracy
# ----------------------------------------------------------------------------------------------


def test_depth_profile_last_epoch_per_run() -> None:
    layers, _ = tables(lw_xz=LW_XZ[:3], lw_yz=LW_YZ[:3])  # layer-wise recorded 3 epochs only
    prof = describe.depth_profile(layers)
    assert len(prof) == 10
    by_run = prof.groupby("run")["epoch"].unique()
    assert list(by_run["e2e-r"]) == [4] and list(by_run["lw-r"]) == [2]
    e2e = prof[prof["run"] == "e2e-r"]
    assert list(e2e["layer"]) == list(LAYER_NAMES)
    assert e2e["xz_over_first_block"].to_numpy() == pytest.approx(E2E_XZ[4] / 50.0)
    at1 = describe.depth_profile(layers, epoch=1)
    assert set(at1["epoch"]) == {1} and len(at1) == 10
    lw = at1[at1["run"] == "lw-r"]
    assert lw["xz_over_first_block"].to_numpy() == pytest.approx(LW_XZ[1] / 20.0)
    with pytest.raises(
        ValueError, match=r"epoch=7 not recorded; available epochs: \[0, 1, 2, 3, 4\]"
    ):
        describe.depth_profile(layers, epoch=7)
    with pytest.raises(ValueError, match="epoch must be"):
        describe.depth_profile(layers, epoch=-1)


def test_accuracy_table_values() -> None:
    layers, epochs = tables(e2e_acc=[0.1, 0.9, 0.96, 0.95, 0.94])
    acc = describe.accuracy_table(epochs, layers).set_index("method")
    assert acc.loc["e2e", "final_test_acc"] == pytest.approx(0.94)
    assert acc.loc["e2e", "best_test_acc"] == pytest.approx(0.96)
    assert acc.loc["e2e", "best_epoch"] == 2
    assert acc.loc["e2e", "final_train_acc"] == pytest.approx(0.96)
    assert math.isnan(acc.loc["e2e", "mean_head_test_acc"])
    assert acc.loc["layerwise", "mean_head_test_acc"] == pytest.approx(0.83)  # 0.80..0.86
    assert acc.loc["layerwise", "head"] == "linear"
    no_layers = describe.accuracy_table(epochs)
    assert no_layers["mean_head_test_acc"].isna().all()


# ----------------------------------------------------------------------------------------------
