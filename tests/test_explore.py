"""Tests of ibstudy.explorer without a browser: the update function redraws for a new epoch, block set,
run choice and estimator (state and artists checked, not pixels); the widgets call it; without a
widget frontend explore() prints one line and shows the static figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_animate import study_tables

from ibstudy import explorer as ex
from ibstudy.config import MeasureConfig
from ibstudy.study import write_tables

OTHER = "nhsic_cka-median-m256-0123456789"
E2E_MEAN, LW_MEAN = "e2e/none seed mean", "layerwise/linear seed mean"


def other_estimator(layers: pd.DataFrame) -> pd.DataFrame:
    """A cached measurement of the same runs under another estimator: whole epochs only, x + 100."""
    table = layers[layers["epoch"] == layers["epoch"].round()].copy()
    table["measure_id"] = OTHER
    table["nhsic_xz"] += 100.0
    return table


@pytest.fixture
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return study_tables()


@pytest.fixture
def explorer(tables) -> ex.Explorer:
    epochs, layers = tables
    return ex.Explorer(epochs, layers, measures={OTHER: other_estimator(layers)}, results_dir=None)


def plane_points(explorer: ex.Explorer, block: str) -> dict[str, np.ndarray]:
    """The plane's drawn points in one block's panel, by run choice."""
    return {
        t.group: np.asarray(t.points.get_offsets())
        for t in explorer.animator.trajectories
        if t.points.axes.get_title() == block
    }


def test_default_state_and_figures(explorer):
    s = explorer.state
    assert s.runs == (E2E_MEAN, LW_MEAN)
    assert s.blocks == ("conv1", "conv2", "fc1", "fc2", "logits")
    assert s.estimator == "nhsic-fixed-m256-x" and s.epoch == 4.0
    assert explorer.estimators == ["nhsic-fixed-m256-x", OTHER]
    assert list(explorer.choices) == [
        E2E_MEAN, "e2e/none seed 0", "e2e/none seed 1",
        LW_MEAN, "layerwise/linear seed 0", "layerwise/linear seed 1",
    ]  # fmt: skip
    assert set(explorer.figures) == {"plane", "profile", "accuracy"}
    assert explorer.png("plane").startswith(b"\x89PNG")


def test_update_epoch_redraws_plane_profile_and_cursor(explorer):
    plane = explorer.figures["plane"]
    state = explorer.update(epoch=0.25)
    assert state.epoch == 0.25 and explorer.state is state
    assert explorer.figures["plane"] is plane  # same figure, new frame: no rebuild
    assert explorer.animator.frames[explorer.animator.index] == 0.25
    points = plane_points(explorer, "fc2")
    assert points[E2E_MEAN].shape == (3, 2)  # epochs 0, 0.125, 0.25
    # seed mean of E2E fc2 at 0.25: x = 8 - 3 - 0.0125 + mean(0, 0.1), y = 1 + 0.6 + 0.025
    np.testing.assert_allclose(points[E2E_MEAN][-1], [5.0375, 1.625])
    assert list(explorer._cursor.get_xdata()) == [0.25, 0.25]
    xz_panel = explorer.figures["profile"].axes[0]
    e2e_line = next(line for line in xz_panel.lines if line.get_label() == E2E_MEAN)
    np.testing.assert_allclose(e2e_line.get_ydata(), [8.0 - i - 0.0125 + 0.05 for i in range(5)])
    assert "epoch 0.25" in explorer.figures["profile"]._suptitle.get_text()


def test_update_blocks_and_runs_rebuild_the_plane(explorer):
    plane = explorer.figures["plane"]
    state = explorer.update(blocks=["fc2", "conv1"])
    assert state.blocks == ("conv1", "fc2")  # depth order
    assert explorer.figures["plane"] is not plane
    titles = [t.points.axes.get_title() for t in explorer.animator.trajectories]
    assert sorted(set(titles)) == ["conv1", "fc2"]
    state = explorer.update(runs="e2e/none seed 1", epoch=2)
    assert state.runs == ("e2e/none seed 1",) and state.epoch == 2.0
    points = plane_points(explorer, "conv1")
    assert list(points) == ["e2e/none seed 1"]
    np.testing.assert_allclose(points["e2e/none seed 1"][-1], [8.0 - 0.1 + 0.1, 1.2])
    accuracy = explorer.figures["accuracy"].axes[0]
    assert [line.get_label() for line in accuracy.lines[:-1]] == ["e2e/none seed 1"]


def test_update_estimator_falls_back_to_its_record_points(explorer):
    explorer.update(epoch=0.25)
    state = explorer.update(estimator=OTHER)
    assert state.estimator == OTHER
    assert state.epoch == 0.0  # the other estimator measured whole epochs only
    assert explorer.epochs() == [0.0, 1.0, 2.0, 3.0, 4.0]
    explorer.update(epoch=4)
    np.testing.assert_allclose(plane_points(explorer, "conv1")[E2E_MEAN][-1][0], 108.0 - 0.2 + 0.05)


def test_a_missing_estimator_is_measured_on_request(tables, tmp_path):
    epochs, layers = tables
    mcfg = MeasureConfig(bandwidth="median", floor_perms=2)
    calls = []

    def fake_measure(run_dir, config, progress):
        calls.append((run_dir.name, config, progress))
        rows = layers[(layers["run"] == run_dir.name) & (layers["epoch"] % 1 == 0)]
        return rows.assign(measure_id=config.measure_id(), nhsic_xz=rows["nhsic_xz"] * 2)

    dirs = {run: tmp_path / run for run in layers["run"].unique()}
    explorer = ex.Explorer(epochs, layers, run_dirs=dirs, estimators=[mcfg],
                           measure_fn=fake_measure, results_dir=None)  # fmt: skip
    assert mcfg.measure_id() in explorer.estimators
    assert len(explorer.missing_runs(mcfg.measure_id())) == 4  # two seeds of both arms
    explorer.update(estimator=mcfg.measure_id(), progress=False)
    assert sorted(c[0] for c in calls) == sorted(dirs)
    assert all(c[1] == mcfg and c[2] is False for c in calls)
    assert explorer.missing_runs(mcfg.measure_id()) == []
    explorer.update(runs=LW_MEAN)  # now cached: nothing is measured again
    assert len(calls) == 4


def test_cached_measures_are_found_in_the_run_folders(tables, tmp_path):
    epochs, layers = tables
    for run in layers["run"].unique():
        folder = tmp_path / "runs" / run
        (folder / "measures").mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        cached = other_estimator(layers[layers["run"] == run])
        cached.to_csv(folder / "measures" / f"{OTHER}.csv", index=False)
    explorer = ex.Explorer(epochs, layers, results_dir=tmp_path)
    assert OTHER in explorer.estimators and explorer.missing_runs(OTHER) == []


def test_bad_choices_name_the_argument_and_what_exists(explorer):
    before = explorer.state
    with pytest.raises(ValueError, match=r"runs: unknown.*\['nope'\].*available.*seed mean"):
        explorer.update(runs=["nope"])
    with pytest.raises(ValueError, match=r"blocks: unknown.*\['fc9'\].*'conv1'"):
        explorer.update(blocks="fc9")
    with pytest.raises(ValueError, match=r"estimator must be one of .*nhsic-fixed-m256-x"):
        explorer.update(estimator="nhsic-wrong")
    with pytest.raises(ValueError, match=r"epoch=41 is not a recorded point.*range 0-4"):
        explorer.update(epoch=41)
    with pytest.raises(ValueError, match="epoch must be a number"):
        explorer.update(epoch="last")
    assert explorer.state == before  # nothing changed
    with pytest.raises(ValueError, match="not cached .* folders are unknown"):
        ex.Explorer(*study_tables(), estimators=[MeasureConfig(eps=1e-3)], results_dir=None).update(
            estimator=MeasureConfig(eps=1e-3).measure_id()
        )
    epochs, layers = study_tables()
    with pytest.raises(ValueError, match="layers table is empty"):
        ex.Explorer(epochs, layers.iloc[:0])
    mixed = pd.concat([layers, other_estimator(layers)])
    with pytest.raises(ValueError, match="layers table mixes 2 estimators"):
        ex.Explorer(epochs, mixed)


def test_without_a_frontend_one_line_and_the_static_figures(tables, capsys, monkeypatch):
    assert ex.has_widget_frontend() is False  # pytest runs no Jupyter kernel
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *objs, **_: shown.extend(objs))
    explorer = ex.explore(tables)
    out = capsys.readouterr()
    assert out.out == ex.NO_FRONTEND + "\n" and out.err == ""
    explorer._ipython_display_()
    assert shown == [explorer.figures[n] for n in ("plane", "profile", "accuracy")]


def test_widgets_call_the_update_function(tables, capsys):
    explorer = ex.explore(tables, interactive=True)
    assert capsys.readouterr().out == ""
    view = explorer.view
    assert [v for _, v in view.epoch.options] == explorer.epochs()
    before = view.images["plane"].value
    view.epoch.value = 0.25
    assert explorer.state.epoch == 0.25 and view.images["plane"].value != before
    view.blocks.value = ("logits",)
    assert explorer.state.blocks == ("logits",)
    view.runs.value = ()
    assert "runs: unknown or no choice" in view.message.value  # shown, not raised
    assert explorer.state.runs == (E2E_MEAN, LW_MEAN)


def test_explore_reads_tables_by_name(tables, tmp_path):
    epochs, layers = tables
    write_tables("02_lenet5", epochs, layers, results_dir=str(tmp_path))
    explorer = ex.explore("02_lenet5", results_dir=str(tmp_path), interactive=False)
    assert explorer.state.runs == (E2E_MEAN, LW_MEAN)
    with pytest.raises(ValueError, match=r"source '05_resnet': no tables.*\['02_lenet5'\]"):
        ex.explore("05_resnet", results_dir=str(tmp_path))
    with pytest.raises(ValueError, match="interactive must be"):
        ex.explore(tables, interactive="yes")
