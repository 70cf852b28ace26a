"""Training data held on the device as uint8, cut into batches there (docs/method.md §8).

On a GPU the CPU ``DataLoader`` (one worker decoding, normalizing and flipping images) sets the pace,
not the model. :class:`DeviceData` keeps a whole image dataset on the device as uint8 (CIFAR-10:
150 MB), cuts batches by the **same seeded permutation** as :func:`ibstudy.data.make_loader` (it
draws the index order from a DataLoader over indices with the same generator, so both paths see the
same images in the same order for a seed), and normalizes and augments on the device: horizontal
flips for CIFAR, ±2-pixel translations for digits, from a device-side generator seeded by (seed,
epoch). Without augmentation the batches equal the CPU path's (to float rounding); with it, the
random draws differ from the CPU transforms', so a run trained one way resumes only that way.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from ibstudy.data import INFO, ImageDataset, make_loader

__all__ = ["DeviceData", "fits_on_device"]

PAD = 2  # digits: padded from 28 to 32 (docs/method.md §6) and translated by up to PAD pixels


def fits_on_device(num_bytes: int, device: torch.device, share: float = 0.25) -> bool:
    """True when ``num_bytes`` is at most ``share`` of the device's free memory (CUDA only)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return num_bytes <= share * free


def _uint8_images(ds: ImageDataset) -> tuple[Tensor, Tensor]:
    """(images (N, C, 32, 32) uint8, labels (N,) int64) of an image dataset, as stored on disk."""
    info = INFO[ds.name]
    source = ds._source  # noqa: SLF001 - the dataset's own storage, read once
    if isinstance(source, tuple):  # embedded mnist5k: normalized floats of 8-bit digits
        mean, std = torch.tensor(info.mean), torch.tensor(info.std)
        raw = source[0] * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
        return (raw * 255).round().clamp(0, 255).to(torch.uint8), source[1].clone()
    data = torch.as_tensor(source.data)  # type: ignore[attr-defined]
    if data.dim() == 4:  # CIFAR: (N, H, W, C)
        images = data.permute(0, 3, 1, 2).contiguous()
    else:  # MNIST-like: (N, 28, 28) -> padded (N, 1, 32, 32)
        images = F.pad(data.unsqueeze(1), (PAD, PAD, PAD, PAD))
    return images.to(torch.uint8), ds.targets.clone()


class DeviceData:
    """A training set on the device (uint8) with CPU-identical batch order and device augmentation."""

    def __init__(self, ds: Dataset, device: str | torch.device, augment: bool = False) -> None:
        """``ds``: an :class:`ImageDataset` (or a ``Subset`` of one: its first ``n`` images)."""
        indices = None
        base = ds
        if isinstance(ds, Subset):
            base, indices = ds.dataset, torch.as_tensor(list(ds.indices))
        if isinstance(base, ImageDataset):
            images, labels = _uint8_images(base)
            info = INFO[base.name]
            self.name, mean, std = base.name, info.mean, info.std
        elif isinstance(base, TensorDataset) and len(base.tensors) == 2:
            # already normalized float images (the benchmarks' synthetic data): kept as they are
            images, labels = base.tensors[0], base.tensors[1].long()
            channels = images.shape[1]
            self.name, mean, std = "cifar-like", (0.0,) * channels, (1.0,) * channels
        else:
            raise ValueError(
                f"ds must be an ImageDataset, a Subset of one or an (images, labels) TensorDataset, "
                f"got {type(base).__name__}"
            )
        if indices is not None:
            images, labels = images[indices], labels[indices]
        self.device = torch.device("cpu")
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.augment = augment
        self.to(device)

    def to(self, device: str | torch.device) -> DeviceData:
        """Move the data to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        for name in ("images", "labels", "mean", "std"):
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def nbytes(self) -> int:
        """Device memory held by the images and labels."""
        return self.images.numel() + self.labels.numel() * 8

    def _normalized(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8:
            return images.float()
        return (images.float() / 255.0 - self.mean) / self.std

    def _augmented(self, x: Tensor, gen: torch.Generator) -> Tensor:
        n = x.shape[0]
        if self.name.startswith("cifar"):  # horizontal flips (docs/method.md §8)
            flip = torch.rand(n, generator=gen, device=self.device) < 0.5
            return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        # digits: a random crop of the image padded by PAD with normalized black
        fill = float(-self.mean.flatten()[0] / self.std.flatten()[0])
        padded = F.pad(x, (PAD, PAD, PAD, PAD), value=fill)
        size = x.shape[-1]
        dy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen, device=self.device)
        dx = torch.randint(0, 2 * PAD + 1, (n,), generator=gen, device=self.device)
        ar = torch.arange(size, device=self.device)
        rows = (
            (dy[:, None] + ar[None, :])
            .view(n, 1, size, 1)
            .expand(n, x.shape[1], size, size + 2 * PAD)
        )
        out = padded.gather(2, rows)
        cols = (dx[:, None] + ar[None, :]).view(n, 1, 1, size).expand(n, x.shape[1], size, size)
        return out.gather(3, cols)

    def batches(self, batch_size: int, *, seed: int, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches (x float32 normalized, y int64) on the device, in the CPU loader's
        order for (seed, epoch); a fresh generator per epoch (seed, epoch) draws the augmentation."""
        order = make_loader(_Indices(len(self)), batch_size, seed=seed, epoch=epoch)
        gen = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + epoch)
        for idx in order:
            idx = idx.to(self.device)
            x = self._normalized(self.images[idx])
            if self.augment:
                x = self._augmented(x, gen)
            yield x, self.labels[idx]

    def num_batches(self, batch_size: int) -> int:
        """Batches per epoch (the last one may be short, as in the CPU path)."""
        return -(-len(self) // batch_size)


class _Indices(Dataset):
    """0..n-1 as a dataset: a DataLoader over it yields the CPU path's index batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i
