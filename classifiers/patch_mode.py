"""Patch-mode training and diagnosis on top of :mod:`classifiers.patches`.

Large microscopy-like images are cut into non-overlapping square patches that inherit their
image's label; a classifier learns on patches with random dihedral symmetries (``--aug
skin``), and an image is diagnosed by majority vote over its patches' predictions (each
averaged over the eight symmetries).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from classifiers.data import LabelledImages, Target, encode_targets
from classifiers.patches import PatchError, majority_vote, split_patches

__all__ = ["PatchSet", "patch_set", "diagnose_images"]


@dataclass
class PatchSet:
    data: LabelledImages  # one row per patch
    owner: np.ndarray  # [P] image index of each patch
    grids: list[tuple[int, int]]  # (rows, cols) per image


def patch_set(imageset, target: Target, patch: int, weight: float = 1.0, resolution: int | None = None) -> PatchSet:
    """All patches of ``imageset`` (native size, or square-resized to ``resolution``)."""
    from PIL import Image

    targets = encode_targets(imageset, target)
    chunks, owner, grids, files = [], [], [], []
    for i in range(len(imageset)):
        img = imageset.load_image(i)
        if resolution is not None and img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.BICUBIC)
        try:
            p, grid = split_patches(np.asarray(img, dtype=np.uint8), patch)
        except PatchError as e:
            raise PatchError(f"{imageset.path_of(i)}: {e}") from None
        chunks.append(torch.from_numpy(np.ascontiguousarray(p)))
        owner += [i] * len(p)
        grids.append(grid)
        files += [f"{imageset[i].file}#{k}" for k in range(len(p))]
    owner_arr = np.asarray(owner, dtype=np.int64)
    data = LabelledImages(
        torch.cat(chunks), targets[owner_arr], np.full(len(owner_arr), weight, np.float32), files, ["own"] * len(files)
    )
    return PatchSet(data, owner_arr, grids)


def diagnose_images(patch_probs: np.ndarray, owner: np.ndarray, n_images: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Majority vote per image -> (class [N], vote fraction [N], mean patch probs [N, K])."""
    k = patch_probs.shape[1]
    cls = np.zeros(n_images, np.int64)
    frac = np.zeros(n_images)
    mean = np.zeros((n_images, k), np.float32)
    for i in range(n_images):
        cls[i], frac[i], mean[i] = majority_vote(patch_probs[owner == i])
    return cls, frac, mean
