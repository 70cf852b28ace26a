"""Tests of ibstudy.plots on a synthetic tidy table (2 methods x 3 epochs x 3 layers)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from PIL import Image

from ibstudy import plots

LAYERS = ("conv1", "fc1", "logits")
METHODS = (("e2e", "none"), ("layerwise", "linear"))
N_EPOCHS = 3


def make_layers(methods=METHODS, floors: bool = True) -> pd.DataFrame:
    """A layers table with distinct, known values: nhsic_xz = 10*layer + epoch (+50 for LW)."""
    rows = []
    for m, (method, head) in enumerate(methods):
        for epoch in range(N_EPOCHS):
            for index, name in enumerate(LAYERS):
                probed = epoch != 1  # probes at epochs 0 and 2 only
                row = {
                    "run": f"{method}-{head}",
                    "method": method,
                    "head": head,
                    "epoch": epoch,
                    "layer": name,
                    "layer_index": index,
                    "nhsic_xz": 10.0 * index + epoch + 50.0 * m + 5.0,
                    "nhsic_yz": 1.0 + 0.5 * index + 0.25 * epoch + 0.1 * m,
                    "nhsic_xz_std": 0.5,
                    "nhsic_yz_std": 0.05,
                    "probe_train_acc": 0.5 + 0.1 * index + 0.01 * epoch if probed else np.nan,
                    "probe_test_acc": 0.4 + 0.1 * index + 0.01 * epoch if probed else np.nan,
                    "head_test_acc": np.nan if method == "e2e" else 0.3 + 0.1 * index,
                }
                if floors:
                    row["floor_xz"] = 6.0 + index
                    row["floor_yz"] = 1.1
                rows.append(row)
    return pd.DataFrame(rows)


def make_epochs() -> pd.DataFrame:
    """An epochs table: test_acc = 0.4 + 0.1 * epoch + 0.05 * method index."""
    rows = []
    for m, (method, head) in enumerate(METHODS):
        for epoch in range(1, N_EPOCHS + 1):
            rows.append(
                {
                    "run": f"{method}-{head}",
                    "method": method,
                    "head": head,
                    "epoch": epoch,
                    "train_loss": 1.0 / epoch,
                    "train_acc": 0.5 + 0.1 * epoch,
                    "test_acc": 0.4 + 0.1 * epoch + 0.05 * m,
                    "lr": 5e-4,
                    "seconds": 1.0,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture
def layers() -> pd.DataFrame:
    return make_layers()


def marker_is(collection: PathCollection, marker: str) -> bool:
    """Whether a scatter collection draws `marker` (compare with the marker's unit path)."""
    style = MarkerStyle(marker)
    reference = style.get_path().transformed(style.get_transform()).vertices
    drawn = collection.get_paths()[0].vertices
    return drawn.shape == reference.shape and np.allclose(drawn, reference)


def scatters(ax) -> dict[str, PathCollection]:
    """The plane's scatter collections of one panel, by label."""
    return {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}


def panels(fig: Figure) -> list:
    """The data axes of a figure (colour bars excluded)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


# ---------------------------------------------------------------------------------------------
# the plane
# ---------------------------------------------------------------------------------------------


def test_plane_panels_markers_colours_and_floor(layers):
    before = plt.get_fignums()
    fig = plots.plot_plane(layers)
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # not registered with pyplot: no leaks, Agg-safe
    assert fig._repr_png_().startswith(b"\x89PNG")  # notebooks display it without a backend
    fig.draw_without_rendering()  # maps the epochs through the colormaps
    data_axes = panels(fig)
    assert [ax.get_title() for ax in data_axes] == list(LAYERS)  # depth order
    assert len(fig.axes) == len(LAYERS) + 2  # one epoch colour bar per method
    for index, ax in enumerate(data_axes):
        points = scatters(ax)
        assert set(points) == {"e2e", "layerwise"}
        assert marker_is(points["e2e"], "o") and not marker_is(points["e2e"], "v")
        assert marker_is(points["layerwise"], "v") and not marker_is(points["layerwise"], "o")
        # the points are the table's values, in epoch order
        e2e = layers[(layers.method == "e2e") & (layers.layer_index == index)]
        np.testing.assert_allclose(points["e2e"].get_offsets(), e2e[["nhsic_xz", "nhsic_yz"]])
        # colour encodes the epoch: red colormap for E2E, cividis (blue -> yellow) for LW
        np.testing.assert_array_equal(points["e2e"].get_array(), [0, 1, 2])
        red = points["e2e"].get_facecolors()
        assert len({tuple(c) for c in red}) == N_EPOCHS
        assert np.all(red[:, 0] > red[:, 2])  # reds
        lw = points["layerwise"].get_facecolors()
        np.testing.assert_allclose(lw[0], matplotlib.colormaps["cividis"](0.0), atol=1e-6)
        np.testing.assert_allclose(lw[-1], matplotlib.colormaps["cividis"](1.0), atol=1e-6)
        # floor: each run's own floor per epoch, x's on a dotted line (not the panel's maximum)
        floors = [line for line in ax.lines if line.get_linestyle() == ":"]
        assert len(floors) == 2  # one per run
        for line in floors:
            np.testing.assert_allclose(line.get_xdata(), e2e["floor_xz"])
            np.testing.assert_allclose(line.get_ydata(), e2e["floor_yz"])
    assert plots.FLOOR_LABEL in legend_texts(fig)
    assert legend_texts(fig)[:2] == ["e2e", "layerwise"]


def test_plane_floor_off_and_absent(layers):
    fig = plots.plot_plane(layers, floor=False)
    assert plots.FLOOR_LABEL not in legend_texts(fig)
    fig = plots.plot_plane(make_layers(floors=False))
    assert plots.FLOOR_LABEL not in legend_texts(fig)


def test_plane_floor_below_view_is_noted(layers):
    low = layers.assign(floor_xz=0.01, floor_yz=0.01)
    fig = plots.plot_plane(low, layers_to_show=["logits"])
    (ax,) = panels(fig)
    assert ax.get_xlim()[0] > 1.0  # the view follows the data, not the floor
    assert any("floor below view" in t.get_text() for t in ax.texts)


def test_plane_filters(layers):
    fig = plots.plot_plane(layers, layers_to_show=["logits", 0], methods="e2e", epochs=[0, 2])
    data_axes = panels(fig)
    assert [ax.get_title() for ax in data_axes] == ["conv1", "logits"]
    assert len(fig.axes) == 3  # two panels, one colour bar
    for ax in data_axes:
        assert list(scatters(ax)) == ["e2e"]
        assert len(scatters(ax)["e2e"].get_offsets()) == 2
    with pytest.raises(ValueError, match=r"layers_to_show: unknown layer\(s\) \['conv9'\]"):
        plots.plot_plane(layers, layers_to_show=["conv9"])
    with pytest.raises(ValueError, match=r"methods: unknown value\(s\) \['ff'\]"):
        plots.plot_plane(layers, methods=["ff"])
    with pytest.raises(ValueError, match="hue_by must be one of"):
        plots.plot_plane(layers, hue_by="layer")
    with pytest.raises(ValueError, match="ncols"):
        plots.plot_plane(layers, ncols=0)


def test_plane_grid_and_errorbars(layers):
    fig = plots.plot_plane(layers, ncols=2, errorbars=True)
    assert len(panels(fig)) == 3  # the spare fourth cell of the 2x2 grid is removed
    # error bars: one LineCollection pair per run and panel
    assert all(len(ax.collections) > 2 for ax in panels(fig))


def test_plane_by_head_for_fig5():
    table = make_layers(methods=(("layerwise", "linear"), ("layerwise", "mlp")))
    fig = plots.plot_plane_by(table, by="head", layers_to_show="conv1")
    (ax,) = panels(fig)
    points = scatters(ax)
    assert set(points) == {"linear", "mlp"}
    assert marker_is(points["linear"], "v") and marker_is(points["mlp"], "s")
    assert len(fig.axes) == 1 + 2
    # grouped by method instead, both heads share the layer-wise style
    fig = plots.plot_plane(table, layers_to_show="conv1")
    (ax,) = panels(fig)
    assert [c.get_label() for c in ax.collections] == ["layerwise", "layerwise"]


def test_sequential_method_is_dashed_triangles():
    table = make_layers(methods=(("layerwise", "linear"), ("layerwise_sequential", "linear")))
    fig = plots.plot_plane(table, layers_to_show="fc1", floor=False)
    (ax,) = panels(fig)
    assert all(marker_is(c, "v") for c in scatters(ax).values())
    assert sorted(line.get_linestyle() for line in ax.lines) == ["-", "--"]


# ---------------------------------------------------------------------------------------------
# other figures
# ---------------------------------------------------------------------------------------------


def test_depth_profile_last_epoch_and_chosen_epoch(layers):
    fig = plots.plot_depth_profile(layers)
    assert len(fig.axes) == 2
    for ax, column in zip(fig.axes, ("nhsic_xz", "nhsic_yz"), strict=True):
        lines = {line.get_label(): line for line in ax.lines}
        assert set(lines) == {"e2e", "layerwise", "permutation floor"}
        last = layers[(layers.epoch == N_EPOCHS - 1) & (layers.method == "layerwise")]
        np.testing.assert_allclose(lines["layerwise"].get_ydata(), last[column])
        assert [t.get_text() for t in ax.get_xticklabels()] == list(LAYERS)
    assert "epoch 2" in fig.get_suptitle()
    fig = plots.plot_depth_profile(layers, epoch=0, floor=False)
    e2e = next(line for line in fig.axes[0].lines if line.get_label() == "e2e")
    np.testing.assert_allclose(e2e.get_ydata(), [5.0, 15.0, 25.0])
    assert all(line.get_label() != "permutation floor" for line in fig.axes[0].lines)
    with pytest.raises(ValueError, match=r"epoch=7 not in the table; available: \[0, 1, 2\]"):
        plots.plot_depth_profile(layers, epoch=7)


def test_depth_profile_uses_each_runs_last_epoch(layers):
    shorter = layers[~((layers.method == "layerwise") & (layers.epoch == 2))]
    fig = plots.plot_depth_profile(shorter)
    lw = next(line for line in fig.axes[0].lines if line.get_label() == "layerwise")
    np.testing.assert_allclose(lw.get_ydata(), [56.0, 66.0, 76.0])  # epoch 1 of the LW run


def test_probe_curves_lines_per_probed_epoch(layers):
    fig = plots.plot_probe_curves(layers)
    data_axes = panels(fig)
    assert len(data_axes) == 2 * 2 and len(fig.axes) == 2 * 2 + 2
    titles = [ax.get_title() for ax in data_axes]
    assert titles == ["e2e: train", "layerwise: train", "e2e: test", "layerwise: test"]
    for ax in data_axes:
        assert [line.get_label() for line in ax.lines] == ["epoch 0", "epoch 2"]
    test_e2e = data_axes[2].lines[1]
    np.testing.assert_allclose(test_e2e.get_ydata(), [0.42, 0.52, 0.62])
    fig = plots.plot_probe_curves(layers, epochs=[2], methods=["layerwise"])
    assert [line.get_label() for line in panels(fig)[0].lines] == ["epoch 2"]
    with pytest.raises(ValueError, match="no probe accuracies"):
        plots.plot_probe_curves(layers.assign(probe_train_acc=np.nan, probe_test_acc=np.nan))
    with pytest.raises(ValueError, match=r"epochs \(with probes\): unknown value\(s\) \[1\]"):
        plots.plot_probe_curves(layers, epochs=[1])


def test_accuracy_curves():
    epochs = make_epochs()
    fig = plots.plot_accuracy(epochs)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.lines]
    assert labels == [
        "e2e test (0.700)",
        "e2e train (0.800)",
        "layerwise test (0.750)",
        "layerwise train (0.800)",
    ]
    np.testing.assert_allclose(ax.lines[2].get_ydata(), [0.55, 0.65, 0.75])
    fig = plots.plot_accuracy(epochs.drop(columns="train_acc"), train=False)
    assert len(fig.axes[0].lines) == 2


def test_trajectories_over_epochs(layers):
    fig = plots.plot_trajectories_over_epochs(layers, value="nhsic_yz")
    assert [ax.get_title() for ax in fig.axes] == ["e2e", "layerwise"]
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == list(LAYERS)
    np.testing.assert_allclose(fig.axes[1].lines[2].get_ydata(), [2.1, 2.35, 2.6])
    fig = plots.plot_trajectories_over_epochs(layers, value="probe_test_acc")
    assert len(fig.axes[0].lines[0].get_xdata()) == 2  # NaN epochs dropped
    with pytest.raises(ValueError, match="value must be one of"):
        plots.plot_trajectories_over_epochs(layers, value="loss")


def test_several_heads_per_method_get_distinct_labels():
    table = make_layers(methods=(("e2e", "none"), ("layerwise", "linear"), ("layerwise", "mlp")))
    fig = plots.plot_depth_profile(table, floor=False)
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert set(lines) == {"e2e", "layerwise (linear)", "layerwise (mlp)"}
    assert lines["layerwise (linear)"].get_marker() == "v"
    assert lines["layerwise (mlp)"].get_marker() == "s"
    assert lines["layerwise (linear)"].get_color() != lines["layerwise (mlp)"].get_color()


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


CALLS = [
    ("plot_plane", {}),
    ("plot_depth_profile", {}),
    ("plot_probe_curves", {}),
    ("plot_trajectories_over_epochs", {}),
]


@pytest.mark.parametrize(("name", "kwargs"), CALLS)
def test_missing_columns_and_empty_tables_are_rejected(layers, name, kwargs):
    func = getattr(plots, name)
    column = "probe_test_acc" if name == "plot_probe_curves" else "nhsic_xz"
    with pytest.raises(ValueError, match=rf"lacks required column\(s\) \['epoch', '{column}'\]"):
        func(layers.drop(columns=[column, "epoch"]), **kwargs)
    with pytest.raises(ValueError, match="layers table is empty"):
        func(layers.iloc[:0], **kwargs)
    with pytest.raises(ValueError, match="must be a pandas DataFrame"):
        func(layers.to_dict(), **kwargs)


def test_accuracy_validation():
    epochs = make_epochs()
    with pytest.raises(ValueError, match=r"epochs table lacks required column\(s\) \['test_acc'\]"):
        plots.plot_accuracy(epochs.drop(columns="test_acc"))
    with pytest.raises(ValueError, match="epochs table is empty"):
        plots.plot_accuracy(epochs.iloc[:0])


def test_all_nan_plane_values_are_rejected(layers):
    with pytest.raises(ValueError, match="no finite nhsic"):
        plots.plot_plane(layers.assign(nhsic_xz=np.nan))


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------


def test_save_figure_writes_png_and_pdf(layers, tmp_path):
    fig = plots.plot_plane(layers)
    target = tmp_path / "figs" / "nested"
    paths = plots.save_figure(fig, "plane", target)
    assert paths == [target / "plane.png", target / "plane.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert pdf.startswith(b"%PDF") and len(pdf) > 5_000
    with Image.open(paths[0]) as image:
        assert image.info["dpi"] == pytest.approx((150, 150), abs=0.1)
    assert sorted(p.name for p in target.iterdir()) == ["plane.pdf", "plane.png"]  # no temp files
    # the PDF is reproducible (no creation date), so re-saving gives identical bytes
    plots.save_figure(fig, "plane", target)
    assert (target / "plane.pdf").read_bytes() == pdf


def test_save_figure_is_atomic(layers, tmp_path, monkeypatch):
    fig = plots.plot_depth_profile(layers)
    plots.save_figure(fig, "depth", tmp_path)
    before = (tmp_path / "depth.png").read_bytes()

    def broken(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    # the failure names the file (ibstudy.store.WriteFailed, an OSError) and keeps the cause
    with pytest.raises(OSError, match=r"could not write .*depth\.png.*RuntimeError: disk full"):
        plots.save_figure(fig, "depth", tmp_path)
    assert (tmp_path / "depth.png").read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth.pdf", "depth.png"]


@pytest.mark.parametrize("name", ["", "a/b", "..", "  "])
def test_save_figure_rejects_bad_names(layers, tmp_path, name):
    with pytest.raises(ValueError, match="name must be a plain file stem"):
        plots.save_figure(Figure(), name, tmp_path)
    with pytest.raises(ValueError, match="fig must be a matplotlib Figure"):
        plots.save_figure("not a figure", "x", tmp_path)  # type: ignore[arg-type]


def test_plot_forest_draws_each_interval_and_verdict(tmp_path):
    rows = []
    for estimator, shift in (("paper", 0.0), ("median", -1.0)):
        for claim, est in (("C1", 1.0), ("C4a", 0.01)):
            rows.append({
                "claim": claim, "estimator": estimator, "estimate": est + shift * est,
                "ci_low": est / 2 + shift * est, "ci_high": 1.5 * est + shift * est,
                "verdict": "supported" if shift == 0 else "inconclusive", "direction": "> 0",
                "unit": "u",
            })  # fmt: skip
    rows.append({"claim": "C3", "estimator": "paper", "estimate": float("nan"),
                 "ci_low": float("nan"), "ci_high": float("nan"), "verdict": "not measured",
                 "direction": "> 0", "unit": "u"})  # fmt: skip
    table = pd.DataFrame(rows)
    fig = plots.plot_forest(table, by="estimator")
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in visible] == [
        "C1 (claimed > 0)",
        "C4a (claimed > 0)",
        "C3 (claimed > 0)",
    ]
    c1 = visible[0]
    # one interval line and one point per estimator, plus the zero line
    segments = [line.get_xdata() for line in c1.get_lines() if len(line.get_xdata()) == 2]
    assert (0.5, 1.5) in [tuple(s) for s in segments]  # paper's interval
    assert (-0.5, 0.5) in [tuple(s) for s in segments]  # median: estimate 0, [-0.5, 0.5]
    assert [t.get_text() for t in visible[2].texts] == ["not measured"]
    plots.save_figure(fig, "forest", tmp_path)
    assert (tmp_path / "forest.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="lacks required column"):
        plots.plot_forest(table.drop(columns="ci_low"), by="estimator")


def test_plot_compression_vs_outcomes_panels_and_empty_study():
    points = pd.DataFrame({
        "study": ["A", "A", "A", "B"], "method": ["e2e", "e2e", "layerwise", "e2e"],
        "head": ["none", "none", "linear", "none"], "middle_compression": [0.2, 0.4, 0.1, float("nan")],
        "gap": [0.03, 0.02, 0.04, 0.05], "test_loss": [0.1, 0.09, 0.12, float("nan")],
    })  # fmt: skip
    fig = plots.plot_compression_vs_outcomes(points)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # gap and test loss x studies A and B
    a_gap = axes[0]
    offsets = np.concatenate([c.get_offsets() for c in a_gap.collections])
    assert sorted(map(tuple, offsets)) == [(0.1, 0.04), (0.2, 0.03), (0.4, 0.02)]
    assert "no run with a middle-layer compression" in axes[1].texts[0].get_text()
    with pytest.raises(ValueError, match="lacks required column"):
        plots.plot_compression_vs_outcomes(points.drop(columns="gap"))
