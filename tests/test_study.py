"""The notebooks' policy in ibstudy.study (epochs, seeds, notebook 08's variants, notebook 06's pooling)
and tables.last_epoch: known values, the notebooks' own order, bad input."""

from __future__ import annotations

import pandas as pd
import pytest

from ibstudy import study
from ibstudy.config import PRESETS
from ibstudy.tables import last_epoch

LW = {"method": "layerwise", "head": "linear"}


# ----------------------------------------------------------------------------------------------
# epochs and seeds
# ----------------------------------------------------------------------------------------------


def test_notebook_epochs_known_values() -> None:
    expected = {
        "02": {"quick": None, "study": None, "paper": None},
        "03": {"quick": None, "study": None, "paper": None},
        "04": {"quick": 2, "study": 10, "paper": None},
        "05": {"quick": 2, "study": 10, "paper": None},
        "07": {"quick": None, "study": None, "paper": None},
        "08": {"quick": 3, "study": 20, "paper": 400},
        "10": {"quick": None, "study": None, "paper": None},
    }
    assert set(study.NOTEBOOK_DEFAULTS) == set(expected)
    for notebook, per_preset in expected.items():
        assert set(per_preset) == set(PRESETS)
        for preset, epochs in per_preset.items():
            assert study.notebook_epochs(notebook, preset) == epochs, (notebook, preset)
            assert study.notebook_epochs(notebook, preset, 7) == 7  # a given value wins
    assert study.NOTEBOOK_DEFAULTS["05"] == study.NOTEBOOK_DEFAULTS["04"]  # 05 reuses 04's runs


def test_notebook_seeds_known_values() -> None:
    for notebook in ("04", "05", "08"):  # one seed unless told
        assert study.notebook_seeds(notebook, 3) == [3]
        assert study.notebook_seeds(notebook, 3, [1, 2]) == [1, 2]
    for notebook in ("02", "03", "07", "10"):  # the preset's seeds (run_study reads PRESET_SEEDS)
        assert study.notebook_seeds(notebook, 3) is None
        assert study.notebook_seeds(notebook, 3, [1, 2]) == [1, 2]


def test_notebook_policy_bad_input() -> None:
    with pytest.raises(ValueError, match=r"notebook must be one of \['02', '03'"):
        study.notebook_epochs("09", "quick")
    with pytest.raises(ValueError, match="notebook must be one of"):
        study.notebook_seeds("06", 0)
    with pytest.raises(ValueError, match="preset must be one of"):
        study.notebook_epochs("08", "nope")
    for bad in (0, True, 2.5, "3"):
        with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
            study.notebook_epochs("04", "quick", bad)


# ----------------------------------------------------------------------------------------------
# notebook 08's variants
# ----------------------------------------------------------------------------------------------


def test_beyond_variants_in_notebook_order() -> None:
    variants = study.beyond_variants(20)
    assert variants == [
        {"method": "e2e"},
        LW,
        {"method": "layerwise_sequential", "head": "linear", "epochs": 4},
        {**LW, "local_loss": "supcon", "augment": True},
        {**LW, "local_loss": "similarity_matching"},
        {**LW, "nhsic_reg": "global", "nhsic_lambda": 0.01},
        {**LW, "nhsic_reg": "global", "nhsic_lambda": 0.1},
        {**LW, "nhsic_reg": "local", "nhsic_lambda": 0.01},
        {**LW, "nhsic_reg": "local", "nhsic_lambda": 0.1},
        {"method": "forward_forward"},
        {"method": "signal_propagation"},
    ]
    assert study.BEYOND_LAMBDAS == (0.01, 0.1)
    # a fifth of the epochs per sequential stage, at least one
    for epochs, per_stage in ((1, 1), (4, 1), (5, 1), (9, 1), (10, 2), (400, 80)):
        assert study.beyond_variants(epochs)[2]["epochs"] == per_stage
    # one regularized variant per kind and lambda; lambdas become floats (a run id hashes them)
    one = study.beyond_variants(3, [1])
    assert len(one) == 9
    assert [v.get("nhsic_lambda") for v in one if "nhsic_reg" in v] == [1.0, 1.0]
    assert all(type(v["nhsic_lambda"]) is float for v in one if "nhsic_lambda" in v)


def test_beyond_variants_are_valid_distinct_runs(tmp_path) -> None:
    configs = [
        study.study_config("quick", results_dir=str(tmp_path), **{"epochs": 3, **v})
        for v in study.beyond_variants(3)
    ]
    assert len({cfg.run_id() for cfg in configs}) == len(configs) == 11
    assert configs[2].total_epochs() == 5  # sequential: four blocks and the classifier, 1 each


def test_beyond_variants_bad_input() -> None:
    for bad in ([], (), 0.1, None, "0.1"):
        with pytest.raises(ValueError, match="lambdas must be a non-empty list"):
            study.beyond_variants(3, bad)
    for bad in ([-1], [True], [float("nan")]):
        with pytest.raises(ValueError, match="lambdas entries must be a finite number"):
            study.beyond_variants(3, bad)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        study.beyond_variants(0)


# ----------------------------------------------------------------------------------------------
# notebook 06's pooling
# ----------------------------------------------------------------------------------------------


def _tables(runs: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    epochs = pd.DataFrame({"run": runs, "epoch": 1, "test_acc": 0.9})
    layers = pd.DataFrame({"run": runs, "epoch": 1, "layer": "conv1", "nhsic_xz": 2.0})
    return epochs, layers


def test_read_studies_pools_and_leaves_out_what_has_not_run(tmp_path) -> None:
    assert study.SUMMARY_STUDIES == {
        "LeNet5": ("02_lenet5", "03_heads"),
        "ResNet": ("05_resnet",),
    }
    assert study.read_studies(results_dir=str(tmp_path)) == {}
    study.write_tables("02_lenet5", *_tables(["e2e", "linear"]), results_dir=str(tmp_path))
    study.write_tables("03_heads", *_tables(["linear", "mlp"]), results_dir=str(tmp_path))
    found = study.read_studies(results_dir=str(tmp_path))
    assert list(found) == ["LeNet5"]  # ResNet has not run
    epochs, layers = found["LeNet5"]
    assert list(epochs["run"]) == ["e2e", "linear", "mlp"]  # the shared run counted once
    assert list(layers["run"]) == ["e2e", "linear", "mlp"]
    study.write_tables("05_resnet", *_tables(["r"]), results_dir=str(tmp_path))
    found = study.read_studies(results_dir=str(tmp_path))
    assert list(found) == ["LeNet5", "ResNet"] and list(found["ResNet"][0]["run"]) == ["r"]
    only = study.read_studies({"mine": ["05_resnet", "nope"]}, results_dir=str(tmp_path))
    assert list(only) == ["mine"] and len(only["mine"][1]) == 1


# ----------------------------------------------------------------------------------------------
# tables.last_epoch
# ----------------------------------------------------------------------------------------------


def test_last_epoch_keeps_each_runs_largest_epoch_in_order() -> None:
    table = pd.DataFrame(
        {
            "run": ["a", "b", "a", "b", "a", "c", "a"],
            "epoch": [0.0, 0.0, 1.0, 1.0, 2.0, 0.5, 2.0],
            "layer": ["x", "x", "x", "x", "x", "x", "y"],
        },
        index=[10, 11, 12, 13, 14, 15, 16],
    )
    last = last_epoch(table)
    # a ends at 2 (two layers), b at 1, c at its only (fractional) point; the table's order kept
    assert list(last.index) == [13, 14, 15, 16]
    assert list(zip(last["run"], last["epoch"], strict=True)) == [
        ("b", 1.0),
        ("a", 2.0),
        ("c", 0.5),
        ("a", 2.0),
    ]
    last["epoch"] = -1.0  # a copy: the table is untouched
    assert table["epoch"].max() == 2.0


def test_last_epoch_bad_input() -> None:
    with pytest.raises(ValueError, match=r"lacks required column\(s\) \['epoch'\]"):
        last_epoch(pd.DataFrame({"run": ["a"]}))
    with pytest.raises(ValueError, match="empty"):
        last_epoch(pd.DataFrame({"run": [], "epoch": []}))
    with pytest.raises(ValueError, match="DataFrame"):
        last_epoch([{"run": "a", "epoch": 1}])  # type: ignore[arg-type]
