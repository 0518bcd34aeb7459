"""The torch side of an :class:`~synth.data.dataset.ImageSet`, for GAN training.

:class:`TorchImageDataset` turns an ImageSet into (image, label) tensors at one resolution;
:func:`balanced_weights` and :class:`BalancedSampler` give every condition cell equal mass
(or a fixed share to affected images), so rare cells are oversampled.  Kept apart from
:mod:`synth.data.dataset` so reading and checking a dataset (``synth data check``) never
imports torch.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from synth.data.dataset import DatasetError, ImageSet

__all__ = ["TorchImageDataset", "balanced_weights", "BalancedSampler"]


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


def _to_uint8_chw(img: Image.Image, resolution: int | None) -> np.ndarray:
    if resolution is not None and img.size != (resolution, resolution):
        w, h = img.size
        if w != h:  # centre-crop to a square before resizing, so faces keep their aspect
            s = min(w, h)
            img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


class TorchImageDataset:
    """(image in [-1, 1] as float32 [3, R, R], label float32 [c_dim]) pairs.

    With ``xflip`` the dataset is twice as long: indices >= N are the mirrored images.
    ``cache`` keeps decoded uint8 images in memory (small datasets, many epochs).
    """

    def __init__(self, imageset: ImageSet, resolution: int | None = None, xflip: bool = False, cache: bool = True):
        import torch  # noqa: F401  (torch is imported lazily so `synth data check` stays fast)

        if resolution is not None and (not _is_power_of_two(resolution) or resolution < 4):
            raise DatasetError(f"--resolution {resolution}: must be a power of two >= 4")
        self.imageset = imageset
        self.resolution = resolution
        self.xflip = xflip
        self.cache = cache
        self._cache: dict[int, np.ndarray] = {}
        self._labels = imageset.label_matrix()
        if resolution is None and len(imageset):
            first = _to_uint8_chw(imageset.load_image(0), None)
            self.resolution = first.shape[-1]

    def __len__(self) -> int:
        return len(self.imageset) * (2 if self.xflip else 1)

    def raw_image(self, i: int) -> np.ndarray:
        """uint8 [3, R, R] of record i (no flip)."""
        if i in self._cache:
            return self._cache[i]
        arr = _to_uint8_chw(self.imageset.load_image(i), self.resolution)
        if arr.shape[1:] != (self.resolution, self.resolution):
            raise DatasetError(
                f"{self.imageset.path_of(i)}: image is {arr.shape[2]}x{arr.shape[1]}, expected {self.resolution}x{self.resolution}"
            )
        if self.cache:
            self._cache[i] = arr
        return arr

    def __getitem__(self, idx: int):
        import torch

        n = len(self.imageset)
        i, flip = (idx - n, True) if idx >= n else (idx, False)
        arr = self.raw_image(i)
        if flip:
            arr = arr[:, :, ::-1]
        img = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(127.5).sub_(1.0)
        return img, torch.from_numpy(self._labels[i])

    @property
    def c_dim(self) -> int:
        return self.imageset.space.c_dim if self.imageset.space is not None else 0

    def label_for(self, idx: int) -> np.ndarray:
        return self._labels[idx % len(self.imageset)]


def balanced_weights(
    imageset: ImageSet,
    factors: Sequence[str] | None = None,
    affected_fraction: float | None = None,
) -> np.ndarray:
    """Per-sample sampling weights (sum 1) that give every non-empty cell equal mass.

    With ``affected_fraction`` the total mass of affected images (those not at the space's
    control level) is fixed to that fraction, the rest going to unaffected images; within each
    side cells are balanced.  This reproduces the study's batches balanced between affected
    and unaffected faces.
    """
    n = len(imageset)
    if n == 0:
        raise DatasetError(f"{imageset.root}: no images to sample from")
    cells = [imageset.cell_of(i, factors) for i in range(n)]
    uniq, inverse, counts = np.unique(np.array(["\x1f".join(c) for c in cells]), return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse].astype(np.float64)
    if affected_fraction is not None:
        if not 0.0 < affected_fraction < 1.0:
            raise DatasetError(f"--affected-fraction {affected_fraction}: must be between 0 and 1")
        aff = imageset.is_affected()
        if imageset.space.control_of() is None:
            raise DatasetError("--affected-fraction needs a factor with a control level (e.g. disease=unaffected)")
        if aff.all() or not aff.any():
            raise DatasetError("--affected-fraction needs both affected and unaffected images")
        w[aff] *= affected_fraction / w[aff].sum()
        w[~aff] *= (1.0 - affected_fraction) / w[~aff].sum()
    return w / w.sum()


class BalancedSampler:
    """Seeded sampler of dataset indices with :func:`balanced_weights` (with replacement).

    ``num_samples=None`` samples forever (GAN training); ``xflip`` maps half the draws to the
    mirrored copies of a :class:`TorchImageDataset` with ``xflip=True``.
    """

    def __init__(
        self,
        imageset: ImageSet,
        factors: Sequence[str] | None = None,
        affected_fraction: float | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        xflip: bool = False,
        balance: bool = True,
    ):
        n = len(imageset)
        self.weights = balanced_weights(imageset, factors, affected_fraction) if balance else np.full(n, 1.0 / n)
        self.num_samples = num_samples
        self.seed = seed
        self.xflip = xflip
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError("infinite sampler has no length")
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        produced = 0
        chunk = 4096
        while self.num_samples is None or produced < self.num_samples:
            k = chunk if self.num_samples is None else min(chunk, self.num_samples - produced)
            idx = rng.choice(self.n, size=k, p=self.weights)
            if self.xflip:
                idx = idx + self.n * rng.integers(0, 2, size=k)
            for i in idx:
                yield int(i)
            produced += k
