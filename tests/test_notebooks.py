"""The numbered notebooks: committed clean, executed headlessly with tiny parameters, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ibstudy.run import NotebookFailed, discover_notebooks, run_notebooks

NOTEBOOKS = discover_notebooks(Path(__file__).resolve().parents[1] / "notebooks")
TINY = {
    "epochs": 1, "train_size": 256, "eval_size": 256, "chunk_size": 128, "probe_steps": 10,
    "device": "cpu",
}  # fmt: skip


def test_notebooks_are_numbered_and_clean():
    names = [p.name[:2] for p in NOTEBOOKS]
    assert names == sorted(names) and names[0] == "00" and len(names) >= 7
    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1, path.name
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Every notebook executed once, in order, into one results folder."""
    results = tmp_path_factory.mktemp("results")
    for path in NOTEBOOKS:
        declared = set(_parameters(path))
        params = {k: v for k, v in TINY.items() if k in declared}
        if "n_train" in declared:  # the toy notebook
            params.update(n_train=400, n_eval=128, steps=60, ablation_seeds=[0])
        run_notebooks([path], parameters=params, results_dir=str(results), html=False)
    return results


def _parameters(path: Path) -> dict:
    from ibstudy.run import notebook_parameters

    return notebook_parameters(path)


def test_every_notebook_executes_and_writes(study):
    for path in NOTEBOOKS:
        executed = study / "notebooks" / path.name
        assert executed.exists() and executed.stat().st_size > 0
    figures = {p.name for p in (study / "figures").iterdir()}
    for stem in ("00_samples", "02_lenet5_plane", "03_first_layer_heads", "04_resnet_probes",
                 "05_resnet_plane", "07_plane_0", "07_m_eps_grid", "07_scale_response",
                 "01_toy_ablation", "06_compression_vs_gap", "06_forest", "07_forest",
                 "08_depth_profiles", "08_plane"):  # fmt: skip
        assert f"{stem}.png" in figures and f"{stem}.pdf" in figures
        assert (study / "figures" / f"{stem}.png").stat().st_size > 1000
    for name in ("02_lenet5", "03_heads", "04_resnet", "05_resnet"):
        layers = pd.read_csv(study / "tables" / f"{name}_layers.csv")
        assert set(layers["epoch"]) == {0, 1} and layers["nhsic_xz"].notna().all()
    claims = pd.read_csv(study / "tables" / "06_claims.csv")
    assert set(claims["claim"]) == {"C1", "C2", "C3", "C3b", "C4a", "C4b"}
    # one seed: each contrast without an interval, never a verdict
    assert set(claims["verdict"]) == {"not measured"} and (claims["n"] == 1).all()
    assert claims["reason"].str.contains("1 seed").all()
    assert claims["estimate"].notna().sum() >= 4  # C1, C2, C4a (and C4b, C3 where measured)
    assert claims["scale"].str.contains("1 epochs").all()
    lenet = claims[claims["study"] == "LeNet5"]
    assert set(lenet["baseline"]) == {"layerwise/linear", "layerwise/mlp"}
    comparison = pd.read_csv(study / "tables" / "08_comparison.csv").set_index("variant")
    assert len(comparison) == 11 and comparison.loc["e2e", "role_gap"] == 0
    assert comparison["final_test_acc"].between(0, 1).all()
    ablation = pd.read_csv(study / "toy" / "ablation.csv")
    assert len(ablation) == 5 * 2 and set(ablation["steps"]) == {60}
    robust = pd.read_csv(study / "tables" / "07_claims_by_estimator.csv")
    assert robust.groupby("estimator")["claim"].apply(sorted).map(tuple).nunique() == 1
    assert robust["estimator"].nunique() == 4 and len(robust) == 4 * 4
    # notebook 07 re-measured notebook 02's runs: it trained nothing new
    runs = {p.name for p in (study / "runs").iterdir()}
    # 02: e2e, linear; 03: mlp; 08: its eleven variants (trained without probes: none is 02's)
    assert sum(name.startswith("lenet5-") for name in runs) == 3 + 11


def test_bad_parameter_value_reports_library_error(tmp_path):
    path = next(p for p in NOTEBOOKS if p.name.startswith("02"))
    with pytest.raises(NotebookFailed) as err:
        run_notebooks([path], parameters={"model": "lenet6"}, results_dir=str(tmp_path), html=False)
    assert "model must be one of" in str(err.value)


def test_unknown_parameter_name_rejected_before_execution(tmp_path):
    path = next(p for p in NOTEBOOKS if p.name.startswith("02"))
    with pytest.raises(ValueError) as err:
        run_notebooks([path], parameters={"learning_rate": 1.0}, results_dir=str(tmp_path))
    assert "learning_rate" in str(err.value) and "epochs" in str(err.value)
    assert not (tmp_path / "notebooks").exists()
