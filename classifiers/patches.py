"""Patch mode (the collagen VI confocal study): classify non-overlapping square patches,
augment each with the 8 symmetries of the square, diagnose an image by majority vote
over its patches, and draw a per-patch probability map in five colour bands.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from classifiers.attribution import _to_uint8_images
from synth.errors import UserError
from synth.utils.io import atomic_save

__all__ = [
    "PatchError",
    "split_patches",
    "assemble_patches",
    "dihedral_variants",
    "apply_dihedral",
    "DIHEDRAL_NAMES",
    "PatchDataset",
    "majority_vote",
    "BAND_LABELS",
    "BAND_COLORS",
    "probability_bands",
    "probability_map_png",
]


class PatchError(UserError):
    """Bad input to patch mode (one-line message)."""


# --------------------------------------------------------------------------------------
# splitting
# --------------------------------------------------------------------------------------
def _to_chw(img):
    """(array-like [C, H, W], is_torch).  torch tensors are CHW; numpy arrays and PIL
    images are HxWxC (or HxW grey)."""
    if isinstance(img, torch.Tensor):
        if img.ndim == 2:
            img = img[None]
        if img.ndim != 3:
            raise PatchError(f"image tensor must be [C, H, W], got shape {tuple(img.shape)}")
        return img, True
    x = np.asarray(img)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3:
        raise PatchError(f"image array must be H x W x C, got shape {x.shape}")
    return np.ascontiguousarray(x.transpose(2, 0, 1)), False


def split_patches(img, size: int = 64):
    """Cut an image into non-overlapping ``size`` x ``size`` patches, row by row.

    ``img``: torch ``[C, H, W]`` (result is a tensor) or numpy/PIL ``H x W x C`` (result is
    a numpy array).  Returns ``(patches [P, C, size, size], (rows, cols))`` with
    ``rows = H // size``, ``cols = W // size``; the right/bottom remainder that does not
    fill a whole patch is dropped (a 1024 px image gives exactly 16 x 16 patches of 64).
    """
    if size < 1:
        raise PatchError(f"patch size must be positive, got {size}")
    x, _ = _to_chw(img)
    c, h, w = x.shape
    rows, cols = h // size, w // size
    if rows == 0 or cols == 0:
        raise PatchError(f"image of {w}x{h} px is smaller than one {size}x{size} patch")
    x = x[:, : rows * size, : cols * size].reshape(c, rows, size, cols, size)
    if isinstance(x, torch.Tensor):
        p = x.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, size, size)
    else:
        p = np.ascontiguousarray(x.transpose(1, 3, 0, 2, 4)).reshape(rows * cols, c, size, size)
    return p, (rows, cols)


def assemble_patches(patches, grid_shape: tuple[int, int]):
    """Inverse of :func:`split_patches`: ``[P, C, s, s]`` -> ``[C, rows * s, cols * s]``."""
    rows, cols = grid_shape
    if patches.shape[0] != rows * cols or patches.ndim != 4:
        raise PatchError(f"{patches.shape[0]} patches do not fill a {rows} x {cols} grid")
    p, c, s, s2 = patches.shape
    x = patches.reshape(rows, cols, c, s, s2)
    if isinstance(x, torch.Tensor):
        return x.permute(2, 0, 3, 1, 4).reshape(c, rows * s, cols * s2)
    return np.ascontiguousarray(x.transpose(2, 0, 3, 1, 4)).reshape(c, rows * s, cols * s2)


# --------------------------------------------------------------------------------------
# dihedral group
# --------------------------------------------------------------------------------------
# Variant k (0..7): rotate by 90 * (k % 4) degrees counter-clockwise, after a left-right
# mirror when k >= 4.
DIHEDRAL_NAMES = ("id", "rot90", "rot180", "rot270", "flip", "flip_rot90", "flip_rot180", "flip_rot270")


def apply_dihedral(x, k: int):
    """Symmetry ``k`` (see ``DIHEDRAL_NAMES``) applied to the last two axes of ``x``."""
    if not 0 <= k < 8:
        raise PatchError(f"dihedral index must be 0..7, got {k}")
    if isinstance(x, torch.Tensor):
        if k >= 4:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, k % 4, dims=(-2, -1))
    x = np.asarray(x)
    if k >= 4:
        x = np.flip(x, axis=-1)
    return np.rot90(x, k % 4, axes=(-2, -1))


def dihedral_variants(x):
    """The 8 symmetries of the square of ``x [..., H, W]`` (H == W), stacked as ``[8, ...]``."""
    if x.shape[-1] != x.shape[-2]:
        raise PatchError(f"dihedral variants need square patches, got {x.shape[-2]} x {x.shape[-1]}")
    vs = [apply_dihedral(x, k) for k in range(8)]
    if isinstance(x, torch.Tensor):
        return torch.stack(vs)
    return np.stack(vs)


# --------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------
class PatchDataset(torch.utils.data.Dataset):
    """Every patch of every image of an ImageSet, times 8 dihedral variants.

    Item ``j`` -> ``(patch float32 [3, size, size] in [-1, 1], label)`` where the label is
    the image's label vector (float32 ``[c_dim]``, as ``TorchImageDataset`` gives) or,
    with ``factor``, the int64 level index of that factor (arg-max for soft rows).  Images
    keep their native size unless ``resolution`` (square resize) is given; remainders that
    do not fill a patch are dropped.  Images are decoded once at construction to count
    patches; ``cache`` keeps their patches in memory as uint8.
    """

    def __init__(self, imageset, size: int = 64, dihedral: bool = True, factor: str | None = None,
                 resolution: int | None = None, cache: bool = True):
        self.imageset = imageset
        self.size = int(size)
        self.n_variants = 8 if dihedral else 1
        self.factor = factor
        self.resolution = resolution
        self.cache = cache
        if factor is not None:
            try:
                self._block = imageset.space.block(factor)
            except Exception as e:
                raise PatchError(f"--factor {factor!r}: {e}") from None
        self._labels = imageset.label_matrix()
        self._patches: dict[int, np.ndarray] = {}
        self._last: tuple[int, np.ndarray] | None = None
        grids = []
        for i in range(len(imageset)):
            p, grid = self._split(i)
            grids.append(grid)
            if cache:
                self._patches[i] = p
        self.grids = grids
        counts = np.array([r * c * self.n_variants for r, c in grids], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])

    def _split(self, i: int) -> tuple[np.ndarray, tuple[int, int]]:
        from PIL import Image

        img = self.imageset.load_image(i).convert("RGB")
        if self.resolution is not None and img.size != (self.resolution, self.resolution):
            img = img.resize((self.resolution, self.resolution), Image.LANCZOS)
        try:
            return split_patches(np.asarray(img, dtype=np.uint8), self.size)
        except PatchError as e:
            raise PatchError(f"{self.imageset.path_of(i)}: {e}") from None

    def patches_of(self, i: int) -> np.ndarray:
        """uint8 ``[P, 3, size, size]`` patches of image ``i`` (no variants)."""
        if i in self._patches:
            return self._patches[i]
        if self._last is None or self._last[0] != i:
            self._last = (i, self._split(i)[0])
        return self._last[1]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, j: int) -> tuple[int, int, int]:
        """Item index -> (image index, patch index, dihedral variant)."""
        if not 0 <= j < len(self):
            raise IndexError(f"patch index {j} out of range for {len(self)} items")
        i = int(np.searchsorted(self._offsets, j, side="right") - 1)
        r = j - int(self._offsets[i])
        return i, r // self.n_variants, r % self.n_variants

    def label_of(self, i: int):
        v = self._labels[i]
        if self.factor is None:
            return torch.from_numpy(v.copy())
        return torch.tensor(int(np.argmax(v[self._block])), dtype=torch.long)

    def __getitem__(self, j: int):
        i, p, v = self.locate(int(j))
        patch = apply_dihedral(self.patches_of(i)[p], v)
        x = torch.from_numpy(np.ascontiguousarray(patch)).float().div_(127.5).sub_(1.0)
        return x, self.label_of(i)

    def image_patches(self, i: int, dihedral: bool = False) -> torch.Tensor:
        """All patches of image ``i`` in [-1, 1] for inference: ``[P, 3, s, s]``, or
        ``[P, 8, 3, s, s]`` with ``dihedral`` (average the 8 predictions per patch)."""
        x = torch.from_numpy(np.ascontiguousarray(self.patches_of(i))).float().div_(127.5).sub_(1.0)
        if dihedral:
            x = dihedral_variants(x).transpose(0, 1).contiguous()
        return x


# --------------------------------------------------------------------------------------
# image diagnosis and maps
# --------------------------------------------------------------------------------------
def majority_vote(patch_probs) -> tuple[int, float, np.ndarray]:
    """Image class from patch probabilities ``[P, K]``.

    Each patch votes for its arg-max class; the class with most votes wins, a tie is broken
    by the higher mean probability among the tied classes.  Returns ``(class,
    vote_fraction, mean_probs [K])``.
    """
    p = np.asarray(patch_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise PatchError(f"patch probabilities must be a non-empty [P, K] array, got shape {p.shape}")
    votes = np.bincount(np.argmax(p, axis=1), minlength=p.shape[1])
    mean = p.mean(axis=0)
    tied = np.flatnonzero(votes == votes.max())
    cls = int(tied[np.argmax(mean[tied])])
    return cls, float(votes[cls] / p.shape[0]), mean


BAND_LABELS = ("<30%", "30-50%", "50-70%", "70-90%", ">90%")
BAND_COLORS = ("#d73027", "#fc8d59", "#fee08b", "#91cf60", "#1a9850")
_BAND_EDGES = (0.3, 0.5, 0.7, 0.9)


def probability_bands(probs) -> np.ndarray:
    """Band index 0..4 per probability: (<=30%], (30, 50], (50, 70], (70, 90], (>90%).
    Upper bounds are inclusive, so exactly 0.9 is in the 70-90 band."""
    return np.digitize(np.asarray(probs, dtype=np.float64), _BAND_EDGES, right=True)


def probability_map_png(path: str | Path, probs_for_class, image=None, class_name: str = "control",
                        patch_size: int | None = None, title: str | None = None, alpha: float = 0.5) -> Path:
    """Per-patch probability of ``class_name`` as five colour bands with a legend.

    ``probs_for_class``: ``[rows, cols]`` probabilities in [0, 1].  With ``image`` (PIL,
    uint8 H x W x C, or a [-1, 1] tensor [C, H, W]) the bands are blended over it, each
    band square covering its ``patch_size`` patch (default: inferred from the image size).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    pm = np.asarray(probs_for_class, dtype=np.float64)
    if pm.ndim != 2 or pm.size == 0:
        raise PatchError(f"probability map must be [rows, cols], got shape {pm.shape}")
    if not np.all(np.isfinite(pm)) or pm.min() < 0 or pm.max() > 1:
        raise PatchError("probabilities must lie in [0, 1]")
    rows, cols = pm.shape
    bands = probability_bands(pm)
    cmap = ListedColormap(BAND_COLORS)

    fig, ax = plt.subplots(figsize=(6.5, 5.0))
    try:
        if image is not None:
            if isinstance(image, torch.Tensor):
                arr = _to_uint8_images(image[None])[0]
            else:
                arr = np.asarray(image)
                if arr.ndim == 2:
                    arr = np.repeat(arr[:, :, None], 3, axis=2)
            ps = patch_size or min(arr.shape[0] // rows, arr.shape[1] // cols)
            if ps < 1:
                raise PatchError(f"image of {arr.shape[1]}x{arr.shape[0]} px is too small for a {rows} x {cols} grid")
            ax.imshow(arr, interpolation="nearest")
            ax.imshow(bands, cmap=cmap, vmin=-0.5, vmax=4.5, alpha=alpha, interpolation="nearest",
                      extent=(-0.5, cols * ps - 0.5, rows * ps - 0.5, -0.5))
            ax.set_xlim(-0.5, arr.shape[1] - 0.5)
            ax.set_ylim(arr.shape[0] - 0.5, -0.5)
        else:
            ax.imshow(bands, cmap=cmap, vmin=-0.5, vmax=4.5, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        handles = [Patch(facecolor=c, edgecolor="black", label=lab) for c, lab in zip(BAND_COLORS[::-1], BAND_LABELS[::-1])]
        ax.legend(handles=handles, title=f"P({class_name})", loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        ax.set_title(title or f"Per-patch probability of {class_name}")
        fig.tight_layout()
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(path)
