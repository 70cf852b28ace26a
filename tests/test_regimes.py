"""Tests for the readouts (ibstudy.readout) and the regimes (ibstudy.regimes): the readout rule on
known gaps, a cell's summary from the study's claim rules, and the across-cell test: a planted
relation holds, noise-only grids (measured rate) essentially never do, bad input is named."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ibstudy import regimes
from ibstudy.claims import Arm
from ibstudy.readout import PREDICTION, READOUTS, get_readout, readout_effects, readout_verdict
from ibstudy.regimes import Cell, across_cells, cell_summary, premise_regime, spearman_permutation

BLOCKS = ("conv1", "conv2", "fc1", "fc2")
EPOCHS = 10


def run_tables(method: str, seed: int, acc: float, head_acc: float, slope: float,
               rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """One run: excess nHSIC(X;Z) falling with depth by ``slope`` per block (plus noise)."""
    head = "none" if method == "e2e" else "linear"
    run = f"{method}-s{seed}"
    rows = []
    for epoch in range(EPOCHS + 1):
        for index, layer in enumerate((*BLOCKS, "logits")):
            block = index < len(BLOCKS)
            xz = 10 - slope * index + rng.normal(0, 0.05) if block else 5.0
            yz = 1 + 0.5 * index + rng.normal(0, 0.05) if block else 5.0
            rows.append({
                "run": run, "method": method, "head": head, "seed": seed, "dataset": "mnist5k",
                "num_classes": 10, "epoch": float(epoch), "layer": layer, "layer_index": index,
                "nhsic_xz": xz + 1, "nhsic_yz": yz + 0.1, "floor_xz": 1.0, "floor_yz": 0.1,
                "chunk_size": 256, "eval_size": 512, "measure_id": "nhsic-fixed-m256-x",
                "head_test_acc": head_acc if (block and head != "none") else math.nan,
            })  # fmt: skip
    epochs = pd.DataFrame({"run": run, "method": method, "head": head, "seed": seed,
                           "epoch": range(EPOCHS + 1), "test_acc": acc, "train_acc": 1.0})  # fmt: skip
    return pd.DataFrame(rows), epochs


def cell_tables(gap: float, head_gap: float, c1: float, seeds=(0, 1, 2), noise: float = 0.002,
                seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """E2E and layer-wise runs whose accuracy gaps and C1 effect (slope difference) are planted."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in seeds:
        base = 0.9 + rng.normal(0, 0.01)
        parts.append(run_tables("e2e", s, base + gap + rng.normal(0, noise), math.nan, 1.0, rng))
        lw_head = base + gap - head_gap + rng.normal(0, noise)
        parts.append(
            run_tables("layerwise", s, base + rng.normal(0, noise), lw_head, 1.0 + c1, rng)
        )
    return (pd.concat([p[0] for p in parts], ignore_index=True),
            pd.concat([p[1] for p in parts], ignore_index=True))  # fmt: skip


def arms(layers: pd.DataFrame, epochs: pd.DataFrame) -> tuple[Arm, Arm]:
    return (Arm.select(layers, epochs, method="e2e"),
            Arm.select(layers, epochs, method="layerwise", head="linear"))  # fmt: skip


# ---------------------------------------------------------------------------------- readouts


def test_the_prediction_is_the_final_classifier() -> None:
    assert PREDICTION == "classifier" and list(READOUTS)[0] == PREDICTION
    with pytest.raises(ValueError, match="readout must be one of"):
        get_readout("penultimate")


@pytest.mark.parametrize(
    ("gap", "head_gap", "expected"),
    [(0.05, 0.05, "gap"), (0.05, 0.0, "readout effect"), (0.0, 0.0, "no gap")],
)
def test_readout_verdict_on_known_gaps(gap: float, head_gap: float, expected: str) -> None:
    effects = readout_effects(*arms(*cell_tables(gap, head_gap, 0.0)))
    assert list(effects["readout"]) == ["classifier", "last_head"]
    assert effects.set_index("readout").loc["classifier", "estimate"] == pytest.approx(
        gap, abs=0.01
    )
    assert readout_verdict(effects) == expected


def test_e2e_only_baseline_leaves_the_head_readout_not_measured() -> None:
    layers, epochs = cell_tables(0.05, 0.05, 0.0)
    e2e = Arm.select(layers, epochs, method="e2e")
    effects = readout_effects(e2e, e2e).set_index("readout")
    assert effects.loc["last_head", "verdict"] == "not measured"
    assert effects.loc["classifier", "estimate"] == 0


# ---------------------------------------------------------------------------------- one cell


def test_cell_summary_decides_with_the_claim_rules() -> None:
    layers, epochs = cell_tables(0.05, 0.05, 1.0)
    row = cell_summary(Cell("lenet5", "digits"), layers, epochs)
    assert row["cell"] == "lenet5/digits" and row["n_seeds"] == 3
    assert row["gap_mean"] == pytest.approx(0.05, abs=0.01) and row["gap_k_of_n"] == "3 of 3"
    assert row["readout_verdict"] == "gap"
    assert row["C1_estimate"] == pytest.approx(1.0, abs=0.1) and row["C1_verdict"] == "supported"
    assert row["C1_z"] > 5
    assert row["C4a_verdict"] == "supported"
    assert row["role_gap"] > 0


def test_cells_and_grids() -> None:
    assert [c.name for c in regimes.grid_cells("default")][:3] == [
        "lenet5/few", "lenet5/digits", "lenet5/cluttered"]  # fmt: skip
    assert len(regimes.grid_cells("default")) >= 6 and len(regimes.grid_cells("full")) >= 9
    with pytest.raises(ValueError, match="grid must be one of"):
        regimes.grid_cells("huge")
    with pytest.raises(ValueError, match="difficulty must be one of"):
        Cell("lenet5", "blurry")
    with pytest.raises(ValueError, match="depth must be one of"):
        Cell("lenet7", "digits")


def test_grid_configs_share_one_schedule_and_keep_existing_ids(tmp_path) -> None:
    cells = regimes.grid_cells("default")
    pairs = regimes.grid_configs(cells, preset="study", results_dir=str(tmp_path), seeds=[0, 1],
                                 epochs=10)  # fmt: skip
    assert len(pairs) == len(cells)
    for cell, configs in pairs:
        assert len(configs) == 4
        assert {c.epochs for c in configs} == {10} and {c.milestones for c in configs} == {
            configs[0].milestones}  # fmt: skip
        assert [c.method for c in configs] == ["e2e", "e2e", "layerwise", "layerwise"]
        assert all(c.model == cell.fields()["model"] for c in configs)
        assert {c.results_dir for c in configs} == {str(tmp_path / "runs")}  # as run_study's
    few = dict(pairs)[Cell("lenet5", "few")]
    assert few[0].train_size == 500 and few[0].dataset == "mnist5k"


# ---------------------------------------------------------------------------------- across cells


def test_spearman_permutation_exact() -> None:
    rho, p_up, p_down = spearman_permutation([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12])
    assert rho == pytest.approx(1.0) and p_up == pytest.approx(1 / 720) and p_down == 1.0
    rho, p_up, p_down = spearman_permutation([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
    assert rho == pytest.approx(-1.0) and p_down == pytest.approx(1 / 720)
    with pytest.raises(ValueError, match="x and y"):
        spearman_permutation([1, 2], [1, 2])


def summary_table(gaps, c1, role, std=0.004, n=3) -> pd.DataFrame:
    return pd.DataFrame({"cell": [f"c{i}" for i in range(len(gaps))], "gap_mean": gaps,
                         "gap_std": std, "n_seeds": n, "C1_estimate": c1, "role_gap": role})  # fmt: skip


def test_a_planted_relation_holds_and_its_reverse_is_contradicted() -> None:
    gaps = np.array([0.0, 0.01, 0.02, 0.04, 0.06, 0.1])
    held = across_cells(summary_table(gaps, gaps * 3 + 0.1, gaps + 0.2))
    assert set(held["verdict"]) == {"holds"}
    assert (held["rho"] > 0.99).all() and (held["heterogeneity_p"] < 1e-6).all()
    reverse = across_cells(summary_table(gaps, -gaps * 3, -gaps))
    assert set(reverse["verdict"]) == {"contradicted"}


def test_without_variation_of_the_gap_the_relation_is_untestable() -> None:
    gaps = np.array([0.010, 0.011, 0.009, 0.010, 0.012, 0.010])  # within seed noise
    out = across_cells(summary_table(gaps, np.arange(6.0), np.arange(6.0), std=0.01))
    assert set(out["verdict"]) == {"untestable"}


def test_noise_only_grids_essentially_never_hold() -> None:
    """Noise-only grids shaped like the real one (6 cells, 3 seeds, every cell the same true gap
    and no relation): the rate of "holds" over 2,000 fixed-seed draws."""
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(2000):
        seeds = rng.normal(0.0, 0.005, size=(6, 3))  # per-seed accuracy gaps
        table = summary_table(seeds.mean(1), rng.normal(0, 1, 6), rng.normal(0, 1, 6),
                              std=seeds.std(1, ddof=1))  # fmt: skip
        hits += bool((across_cells(table)["verdict"] == "holds").any())
    assert hits / 2000 <= 0.005  # measured 0.001; nominal 0.05 x the heterogeneity test's 0.05


def test_across_cells_bad_input() -> None:
    with pytest.raises(ValueError, match="summary lacks columns"):
        across_cells(pd.DataFrame({"cell": ["a"]}))
    with pytest.raises(ValueError, match="alpha"):
        across_cells(summary_table([0, 1, 2], [0, 1, 2], [0, 1, 2]), alpha=0)
    small = across_cells(summary_table([0.0, 0.1], [0, 1], [0, 1]))
    assert set(small["verdict"]) == {"untestable"}


def test_premise_regime_is_the_cheapest_cell_with_a_gap() -> None:
    cells = regimes.grid_cells("default")
    table = pd.DataFrame({"cell": [c.name for c in cells],
                          "readout_verdict": ["no gap", "readout effect", "no gap", "gap",
                                              "no gap", "gap"]})  # fmt: skip
    assert premise_regime(table, cells) == cells[3].name
    table["readout_verdict"] = "no gap"
    assert premise_regime(table, cells) is None


def test_grid_tables_report_the_premise_with_its_numbers() -> None:
    cells = (Cell("lenet5", "digits"), Cell("lenet5", "cluttered"))
    parts = [cell_tables(0.0, 0.0, 0.0, seed=1), cell_tables(0.05, 0.05, 1.0, seed=2)]
    layers = pd.concat(
        [p[0].assign(cell=c.name) for p, c in zip(parts, cells, strict=True)], ignore_index=True
    )
    epochs = pd.concat(
        [p[1].assign(cell=c.name) for p, c in zip(parts, cells, strict=True)], ignore_index=True
    )
    summary = pd.DataFrame([cell_summary(c, p[0], p[1]) for p, c in zip(parts, cells, strict=True)])
    grid = regimes.GridTables(summary, across_cells(summary), premise_regime(summary, cells), cells,
                              epochs, layers)  # fmt: skip
    assert grid.premise == "lenet5/cluttered"
    assert grid.premise_message().startswith("The premise holds in lenet5/cluttered: E2E - layer")
    assert "+0.05" in grid.premise_message()
    claims = grid.claims("lenet5/cluttered").set_index("claim")
    assert claims.loc["C4a", "verdict"] == "supported"
    with pytest.raises(ValueError, match="cell must be one of"):
        grid.cell_tables("vgg8b/digits")
    none = regimes.GridTables(summary.assign(readout_verdict="no gap"), grid.across, None, cells,
                              epochs, layers)  # fmt: skip
    assert none.premise_message().startswith("No cell of this grid has a gap")
    assert "lenet5/digits" in none.premise_message()
