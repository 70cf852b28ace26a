"""Tests of ibstudy.animate on synthetic tables shaped like the study's (LeNet5's five layers, record
points at 1/8, 1/4 and 1/2 of the first epoch, several seeds)."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.animation import FuncAnimation
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from ibstudy import animate, plots
from ibstudy.animate import PlaneAnimation, animate_plane, save_gif

LAYERS = ("conv1", "conv2", "fc1", "fc2", "logits")
ARMS = (("e2e", "none"), ("layerwise", "linear"))
FRACTIONS = (0.125, 0.25, 0.5)


def record_points(n_epochs: int) -> list[float]:
    """Epoch 0, the sub-epoch points, then every whole epoch."""
    return [0.0, *FRACTIONS, *map(float, range(1, n_epochs + 1))]


def study_tables(
    n_epochs: int = 4, seeds: tuple[int, ...] = (0, 1), measure_id: str = "nhsic-fixed-m256-x"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(epochs, layers) tables with known values: nhsic_xz = 8 - index - 0.05 t (+1 layer-wise)
    + 0.1 seed, nhsic_yz = 1 + 0.2 index + 0.1 t; test_acc = 0.5 + 0.01 t (+0.02 E2E)."""
    layer_rows, epoch_rows = [], []
    for arm, (method, head) in enumerate(ARMS):
        for seed in seeds:
            run = f"lenet5-{method}-{head}-mnist5k-s{seed}-abcd{arm}"
            base = {"run": run, "method": method, "head": head, "seed": seed,
                    "dataset": "mnist5k", "num_classes": 10}  # fmt: skip
            for step, t in enumerate(record_points(n_epochs)):
                epoch_rows.append({**base, "epoch": t, "step": step, "train_loss": 1.0,
                                   "train_acc": 0.6 + 0.01 * t,
                                   "test_acc": 0.5 + 0.01 * t + (0.02 if arm == 0 else 0.0),
                                   "lr": 5e-4, "seconds": 1.0})  # fmt: skip
                for index, name in enumerate(LAYERS):
                    layer_rows.append({
                        **base, "epoch": t, "step": step, "layer": name, "layer_index": index,
                        "nhsic_xz": 8.0 - index - 0.05 * t + arm + 0.1 * seed,
                        "nhsic_yz": 1.0 + 0.2 * index + 0.1 * t,
                        "nhsic_xz_std": 0.2, "nhsic_yz_std": 0.05,
                        "floor_xz": 2.0 + 0.01 * t, "floor_yz": 0.5,
                        "floor_xz_std": 0.1, "floor_yz_std": 0.01,
                        "measure_id": measure_id, "estimator": "nhsic",
                        "probe_train_acc": np.nan, "probe_test_acc": np.nan,
                        "head_test_acc": np.nan,
                    })  # fmt: skip
    return pd.DataFrame(epoch_rows), pd.DataFrame(layer_rows)


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return study_tables()


def static_panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def rendered(anim: PlaneAnimation) -> PlaneAnimation:
    """Mark the animation as used, so that its deletion does not warn."""
    anim._draw_was_started = True
    return anim


@pytest.mark.parametrize("seeds", ["each", "mean"])
def test_one_frame_per_record_point_and_last_frame_is_plot_plane(tables, seeds):
    epochs, layers = tables
    anim = rendered(animate_plane(layers, epochs, seeds=seeds))
    points = record_points(4)
    assert anim.frame_epochs == points  # sub-epoch points included, in order
    assert len(list(anim.new_frame_seq())) == len(points)
    animator = anim.animator
    assert animator.index == len(points) - 1  # built showing the last frame
    static = plots.plot_plane(layers, seeds=seeds)
    for ax in static_panels(static):
        mine = [t for t in animator.trajectories if t.points.axes.get_title() == ax.get_title()]
        theirs = [c for c in ax.collections if isinstance(c, PathCollection)]
        lines = [line for line in ax.lines if line.get_linestyle() != ":"]  # not the floors
        assert len(mine) == len(theirs) == len(lines) == (2 if seeds == "mean" else 4)
        for t, points_, line in zip(mine, theirs, lines, strict=True):
            assert t.points.get_label() == points_.get_label()
            np.testing.assert_allclose(t.points.get_offsets(), points_.get_offsets())
            np.testing.assert_allclose(t.points.get_array(), points_.get_array())
            np.testing.assert_allclose(t.line.get_xydata(), line.get_xydata())
    assert [ax.get_title() for ax in static_panels(animator.figure)] == list(LAYERS)


def test_a_frame_draws_the_trajectory_up_to_its_point(tables):
    epochs, layers = tables
    anim = rendered(animate_plane(layers, epochs, seeds="mean", layers_to_show=["fc2"]))
    animator = anim.animator
    k = animator.frame_of(0.25)
    assert k == 2
    animator.draw(k)
    (e2e, lw) = animator.trajectories
    assert e2e.points.get_offsets().shape == (3, 2)  # epochs 0, 0.125, 0.25
    np.testing.assert_allclose(e2e.points.get_array(), [0.0, 0.125, 0.25])
    # the current point: E2E fc2 at t = 0.25, mean of seeds 0 and 1
    x, y = 8.0 - 3 - 0.05 * 0.25 + 0.05, 1.0 + 0.6 + 0.025
    np.testing.assert_allclose(e2e.current.get_xydata(), [[x, y]])
    np.testing.assert_allclose(e2e.floor_mark.get_xydata(), [[2.0025, 0.5], [x, y]])
    sd = np.std([0.0, 0.1], ddof=1)  # the seed spread of nhsic_xz
    np.testing.assert_allclose(np.asarray(e2e.spread.get_xdata())[[0, 1]], [x - sd, x + sd])
    assert animator.label.get_text() == ("epoch 0.25 | test accuracy: e2e 0.522, layerwise 0.502")
    animator.draw(0)
    assert lw.points.get_offsets().shape == (1, 2)
    assert animator.label.get_text().startswith("epoch 0 |")
    # the axis limits hold every point of the run: nothing jumps between frames
    ax = e2e.points.axes
    assert ax.get_xlim()[0] < 2.0 and ax.get_xlim()[1] > 6.05  # the floor; layer-wise at 0


def test_side_layout_gives_each_group_a_row(tables):
    _, layers = tables
    anim = rendered(animate_plane(layers, layout="side", seeds="mean"))
    titles = [ax.get_title() for ax in static_panels(anim.animator.figure)]
    assert titles == [f"{name} ({g})" for g in ("e2e", "layerwise") for name in LAYERS]
    for t in anim.animator.trajectories:
        assert t.points.axes.get_title().endswith(f"({t.group})")


def test_blitted_frames_equal_full_renders(tables):
    epochs, layers = tables
    anim = rendered(animate_plane(layers, epochs, seeds="mean", layers_to_show="fc1", title="t"))
    animator = anim.animator
    frames = animator.images(50)
    assert len(frames) == len(record_points(4))
    assert animator.index == len(frames) - 1  # the figure shows its last frame again
    for k in (0, 4):
        animator.draw(k)
        buffer = io.BytesIO()
        animator.figure.savefig(buffer, format="png", dpi=50)
        full = np.asarray(Image.open(buffer).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(frames[k]), full)


def test_gif_is_atomic_and_decodes_to_one_frame_per_point(tables, tmp_path, monkeypatch):
    epochs, layers = tables
    anim = animate_plane(layers, epochs, seeds="mean", layers_to_show=["conv1", "logits"])
    target = tmp_path / "figs" / "plane.gif"
    assert save_gif(anim, target, dpi=40) == target
    with Image.open(target) as image:
        assert image.format == "GIF"
        assert image.n_frames == len(record_points(4))
    assert [p.name for p in target.parent.iterdir()] == ["plane.gif"]  # no temp file left
    before = target.read_bytes()

    def broken(frames, target, fps):
        raise RuntimeError("disk full")

    monkeypatch.setattr(animate, "_write_gif", broken)
    with pytest.raises(OSError, match=r"could not write .*plane\.gif.*disk full"):
        save_gif(anim, target, dpi=40)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["plane.gif"]


def test_jshtml_embeds_every_frame_and_requests_nothing(tables):
    _, layers = tables
    anim = animate_plane(layers, layers_to_show="logits", seeds="mean", panel_size=1.5)
    html = animate.animation_html(anim, dpi=40).data
    assert html.count("data:image/png;base64") == len(record_points(4))
    assert '"epoch 0.125"' in html and '"epoch 4"' in html  # the slider's labels
    assert not re.search(r"https?:|//cdn|url\(", html)
    # any other animation: matplotlib's player, its icon font replaced by text
    fig = Figure()
    line = fig.subplots().plot([0, 1], [0, 1])[0]
    other = FuncAnimation(fig, lambda k: [line.set_xdata([0, k])], frames=3)
    html = animate.jshtml(other)
    assert html.count("data:image/png;base64") == 3
    assert not re.search(r"https?:", html) and ".fa-play::before" in html


def test_bad_input_names_the_argument_and_what_exists(tables):
    epochs, layers = tables
    with pytest.raises(ValueError, match="layers table is empty"):
        animate_plane(layers.iloc[:0])
    mixed = pd.concat([layers, study_tables(measure_id="nhsic_cka-median-m256-y")[1]])
    with pytest.raises(ValueError, match="mixes 2 estimators"):
        animate_plane(mixed)
    with pytest.raises(ValueError, match=r"layers_to_show: unknown layer\(s\) \['fc9'\].*conv1"):
        animate_plane(layers, layers_to_show="fc9")
    with pytest.raises(ValueError, match=r"epochs: unknown value\(s\) \[99\]"):
        animate.plane_table(layers, epochs=[99])
    with pytest.raises(ValueError, match=r"layout must be one of \['overlay', 'side'\]"):
        animate_plane(layers, layout="grid")
    with pytest.raises(ValueError, match="methods: unknown value"):
        animate_plane(layers, methods="forward_forward")
    with pytest.raises(ValueError, match="interval"):
        animate_plane(layers, interval=0)
    with pytest.raises(ValueError, match="epochs table lacks required column"):
        animate_plane(layers, epochs.drop(columns="test_acc"))
    anim = rendered(animate_plane(layers, layers_to_show="logits"))
    with pytest.raises(ValueError, match=r"epoch=41 is not a recorded point.*range 0-4"):
        anim.animator.frame_of(41)
    with pytest.raises(ValueError, match="index must be"):
        anim.animator.draw(len(record_points(4)))
    with pytest.raises(ValueError, match="path must end in .gif"):
        save_gif(anim, "plane.mp4")
