"""FID and KID from feature arrays, overall and per condition cell.

The formulas are torch-fidelity's (Frechet distance of Gaussian fits; KID = unbiased MMD^2 with
the cubic polynomial kernel averaged over random subsets).  FID is biased upwards for small sets
and unstable when the set is smaller than the feature width, so per-cell numbers of rare cells
should be read through KID, whose subset size is reported next to it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["frechet_distance", "kernel_distance", "distribution_metrics", "KID_SUBSET_SIZE"]

KID_SUBSET_SIZE = 1000  # torch-fidelity's default; smaller sets use all their images per subset


def _fid_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """Exact FID through the centred feature matrices, for sets smaller than the feature width.

    With S1 = A^T A and S2 = B^T B (A, B centred rows over sqrt(n - 1)), the non-zero eigenvalues
    of S1 S2 are the squared singular values of A B^T, so tr sqrt(S1 S2) is the nuclear norm of
    the small [n1, n2] matrix A B^T: no D x D eigen-decomposition, and no complex round-off.
    """
    A = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    B = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    diff = a.mean(0) - b.mean(0)
    tr_covmean = float(np.linalg.svd(A @ B.T, compute_uv=False).sum())
    return float(diff @ diff + (A * A).sum() + (B * B).sum() - 2.0 * tr_covmean)


def frechet_distance(a: np.ndarray, b: np.ndarray, method: str = "auto") -> float:
    """FID between two feature sets [N, D] (each needs >= 2 rows).

    ``method``: ``covariance`` = torch-fidelity's statistics and formula; ``low_rank`` = the same
    quantity through the feature matrices (much faster when a set is smaller than D, the usual
    case per cell); ``auto`` picks the cheaper one.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if method == "low_rank" or (method == "auto" and min(len(a), len(b)) < a.shape[1]):
        return _fid_low_rank(a, b)
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    sa = fid_features_to_statistics(torch.as_tensor(a))
    sb = fid_features_to_statistics(torch.as_tensor(b))
    return float(fid_statistics_to_metric(sa, sb, verbose=False)[KEY_METRIC_FID])


def kernel_distance(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int | None = None, seed: int = 0) -> dict:
    """KID mean/std over ``subsets`` random subsets; ``subset_size`` defaults to min(1000, |a|, |b|)."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    n = min(len(a), len(b))
    size = min(subset_size or KID_SUBSET_SIZE, n)
    out = kid_features_to_metric(
        torch.as_tensor(np.asarray(a, dtype=np.float64)), torch.as_tensor(np.asarray(b, dtype=np.float64)),
        kid_subsets=subsets, kid_subset_size=size, verbose=False, rng_seed=seed,
    )
    return {"kid": float(out[KEY_METRIC_KID_MEAN]), "kid_std": float(out[KEY_METRIC_KID_STD]), "kid_subset_size": int(size)}


def _pair(real: np.ndarray, fake: np.ndarray, subsets: int, subset_size: int | None, seed: int) -> dict:
    res: dict = {"n_real": int(len(real)), "n_generated": int(len(fake))}
    if len(real) < 2 or len(fake) < 2:
        res["note"] = "fewer than 2 images on one side"
        return res
    res["fid"] = frechet_distance(real, fake)
    res.update(kernel_distance(real, fake, subsets, subset_size, seed))
    return res


def distribution_metrics(
    real: np.ndarray,
    real_cells: Sequence[tuple[str, ...]],
    fake: np.ndarray,
    fake_cells: Sequence[tuple[str, ...]],
    cells: Sequence[tuple[str, ...]],
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> dict:
    """{"overall": {...}, "per_cell": {"a|b": {...}}} with FID, KID and the set sizes used."""
    real_cells = [tuple(c) for c in real_cells]
    fake_cells = [tuple(c) for c in fake_cells]
    per_cell = {}
    for cell in cells:
        ri = [i for i, c in enumerate(real_cells) if c == tuple(cell)]
        fi = [i for i, c in enumerate(fake_cells) if c == tuple(cell)]
        if not fi:
            continue
        per_cell["|".join(cell)] = _pair(real[ri], fake[fi], subsets, subset_size, seed)
    return {"overall": _pair(real, fake, subsets, subset_size, seed), "per_cell": per_cell}
