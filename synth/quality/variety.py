"""Variety metrics: does a conditional generator draw many faces per condition cell, or one?

Judge accuracy rewards a generator that renders the label's mean face for every z, and KID/FID
over a pooled set barely notice when each cell has collapsed to a handful of images (the
between-cell spread still looks like real variety).  These functions measure variety directly:

* :func:`prdc`: precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et
  al. 2020) from k-nearest-neighbour balls in a feature space.  Precision and density ask "are
  the generated samples realistic?", recall and coverage ask "is every part of the real
  distribution generated?"; a collapsed generator keeps precision and loses recall and coverage.
* :func:`within_cell_diversity`: mean pairwise distance of generated images of one cell relative
  to real images of the same cell (1 = as varied as the data, near 0 = one image per cell).
  It is computed *within* cells on purpose: pooled over cells, the differences between labels
  hide the collapse inside each label.
* :func:`attribute_variety`: entropy and total variation of judged attribute classes (skin tone
  bins, glasses, hair colour ...) within each cell, generated against real.

All functions take plain numpy arrays (features ``[N, D]``, integer labels ``[N]``) and raise
:class:`~synth.quality.errors.QualityError` with a one-line message on bad input.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.spatial.distance import cdist, pdist

from synth.quality.errors import QualityError

__all__ = [
    "SKIN_TONE_EDGES",
    "prdc",
    "mean_pairwise_distance",
    "within_cell_diversity",
    "entropy",
    "total_variation",
    "attribute_variety",
    "bin_continuous",
]

# Fixed bin edges for a skin tone (or any attribute) scored in [0, 1]: four bins.  Fixed rather
# than data quartiles so that real and generated sets are binned alike.
SKIN_TONE_EDGES = (0.25, 0.5, 0.75)

_CHUNK = 1024  # rows per distance block: bounds memory at chunk * N floats


def _features(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise QualityError(f"{name} features: expected a 2-D array [N, D], got shape {a.shape}")
    if not np.isfinite(a).all():
        raise QualityError(f"{name} features: contain NaN or infinite values")
    return a


def _kth_neighbour_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest *other* row (sorted index k: index 0 is itself)."""
    out = np.empty(len(x))
    for s in range(0, len(x), _CHUNK):
        d = cdist(x[s : s + _CHUNK], x)
        out[s : s + _CHUNK] = np.partition(d, k, axis=1)[:, k]
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features ``[N, D]``.

    The real (generated) manifold is the union of balls around each real (generated) sample with
    radius the distance to its k-th nearest neighbour in its own set (Kynkaanniemi et al. 2019):

    * precision: share of generated samples inside the real manifold (realism);
    * recall: share of real samples inside the generated manifold (variety).  A collapsed
      generator has tiny generated balls, so few real samples fall inside: recall near 0;
    * density (Naeem et al. 2020): mean number of real balls a generated sample falls in, over k.
      About 1 for a generator that matches the data; unlike precision it is not fooled by one
      outlier real sample with a huge ball, and it exceeds 1 when samples crowd dense regions;
    * coverage (Naeem et al. 2020): share of real samples whose own ball holds at least one
      generated sample.  Robust to generated outliers; real against an independent real draw of
      the same size reads about 0.9 at k = 5, a collapsed generator reads near 0.

    Balls are closed (distance <= radius).  Coverage and density depend on the set sizes: compare
    sets of equal size (subsample the larger) to read them against the rule of thumb above.
    Raises QualityError when a set has at most ``k`` rows (no k-th neighbour) or the widths differ.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QualityError(f"prdc: k must be an integer >= 1, got {k!r}")
    k = int(k)
    real, fake = _features(real, "real"), _features(fake, "generated")
    for name, a in (("real", real), ("generated", fake)):
        if len(a) <= k:
            raise QualityError(f"prdc: {len(a)} {name} samples, need more than k={k} (a k-th nearest neighbour)")
    if real.shape[1] != fake.shape[1]:
        raise QualityError(f"prdc: real features have width {real.shape[1]}, generated {fake.shape[1]}")
    r_real = _kth_neighbour_radii(real, k)
    r_fake = _kth_neighbour_radii(fake, k)
    in_real_balls = np.zeros(len(fake), dtype=np.int64)  # per generated sample: how many real balls hold it
    real_in_fake = np.zeros(len(real), dtype=bool)  # recall
    real_covered = np.zeros(len(real), dtype=bool)  # coverage
    for s in range(0, len(real), _CHUNK):
        d = cdist(real[s : s + _CHUNK], fake)  # [chunk of real, fake]
        inside = d <= r_real[s : s + _CHUNK, None]
        in_real_balls += inside.sum(0)
        real_covered[s : s + _CHUNK] = inside.any(1)
        real_in_fake[s : s + _CHUNK] = (d <= r_fake[None, :]).any(1)
    return {
        "precision": float((in_real_balls > 0).mean()),
        "recall": float(real_in_fake.mean()),
        "density": float(in_real_balls.mean() / k),
        "coverage": float(real_covered.mean()),
    }


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all unordered pairs of rows of ``x`` ``[N, D]`` (N >= 2).

    A plain spread measure: near 0 when the rows are copies of one another.  Unlike a variance
    it needs no mean image, so it reads the same for flattened pixels and for features.
    """
    a = _features(x, "diversity")
    if len(a) < 2:
        raise QualityError(f"mean pairwise distance needs at least 2 rows, got {len(a)}")
    return float(pdist(a).mean())


def within_cell_diversity(real_by_cell: Mapping, fake_by_cell: Mapping) -> dict:
    """Per cell: mean pairwise distance of generated rows over that of real rows of the same cell.

    ``real_by_cell`` / ``fake_by_cell`` map a cell key (tuple of level names) to ``[N, D]`` arrays
    (flattened pixels or features).  Cells present in both with at least 2 rows on each side are
    scored; 1 means generated images of the cell vary as much as real ones, near 0 means the cell
    has collapsed to one image.  A cell whose real rows are all identical has no defined ratio
    (``None``, left out of mean and min).  Returns ``{"per_cell": {cell: ratio}, "mean", "min"}``;
    mean and min are None when no cell could be scored.  The min names the worst cell's ratio:
    collapse often hits the rare cells first.
    """
    per_cell: dict = {}
    for cell, fake in fake_by_cell.items():
        if cell not in real_by_cell:
            continue
        real = _features(real_by_cell[cell], f"real {cell}")
        fake = _features(fake, f"generated {cell}")
        if len(real) < 2 or len(fake) < 2:
            continue
        if real.shape[1] != fake.shape[1]:
            raise QualityError(f"cell {cell}: real rows have width {real.shape[1]}, generated {fake.shape[1]}")
        d_real = mean_pairwise_distance(real)
        per_cell[cell] = mean_pairwise_distance(fake) / d_real if d_real > 0 else None
    vals = [v for v in per_cell.values() if v is not None]
    return {"per_cell": per_cell,
            "mean": float(np.mean(vals)) if vals else None,
            "min": float(np.min(vals)) if vals else None}


def _distribution(labels, n_classes: int, name: str = "labels") -> np.ndarray:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise QualityError(f"n_classes must be an integer >= 1, got {n_classes!r}")
    a = np.asarray(labels)
    if a.ndim != 1 or a.size == 0:
        raise QualityError(f"{name}: expected a non-empty 1-D array of class indices, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all() and (a == np.round(a)).all()):
            raise QualityError(f"{name}: class indices must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64)
    if a.min() < 0 or a.max() >= n_classes:
        raise QualityError(f"{name}: class indices must lie in [0, {n_classes - 1}], got {a.min()}..{a.max()}")
    return np.bincount(a, minlength=n_classes) / a.size


def entropy(labels: np.ndarray, n_classes: int) -> float:
    """Shannon entropy (natural log) of the empirical distribution of integer ``labels``.

    0 when every sample has the same class, log(n_classes) at most (uniform).  Judged attributes
    of one cell (skin tone bin, glasses ...) should be about as spread in generated images as in
    real ones; a collapsed cell has entropy near 0.
    """
    p = _distribution(labels, n_classes)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: no "-0.0"


def total_variation(p_labels: np.ndarray, q_labels: np.ndarray, n_classes: int) -> float:
    """Total variation distance, 0.5 * L1, between the empirical class distributions (0 .. 1).

    Entropy only measures spread; TV also catches a generator that is varied but in the wrong
    proportions (e.g. all skin tones, yet mostly the lightest).
    """
    p = _distribution(p_labels, n_classes, "first labels")
    q = _distribution(q_labels, n_classes, "second labels")
    return float(0.5 * np.abs(p - q).sum())


def attribute_variety(real_by_cell: Mapping, fake_by_cell: Mapping, n_classes: int) -> dict:
    """Entropy and TV of a judged attribute within each cell, generated against real.

    ``real_by_cell`` / ``fake_by_cell`` map a cell to an int array of attribute classes (one per
    image).  Cells present in both with at least one label each are scored.  Per cell:
    ``entropy_real``, ``entropy_fake``, ``ratio`` (fake / real; None where the real cell has a
    single class, where no ratio is defined) and ``tv``.  Overall: ``entropy_ratio`` (mean of the
    defined ratios; None if none) and ``tv`` (mean over scored cells; None if none).  A ratio near
    1 and a small TV mean the generator varies the attribute like the data does.
    """
    per_cell: dict = {}
    for cell, fake in fake_by_cell.items():
        if cell not in real_by_cell:
            continue
        real = np.asarray(real_by_cell[cell])
        fake = np.asarray(fake)
        if real.size == 0 or fake.size == 0:
            continue
        h_real, h_fake = entropy(real, n_classes), entropy(fake, n_classes)
        per_cell[cell] = {"entropy_real": h_real, "entropy_fake": h_fake,
                          "ratio": h_fake / h_real if h_real > 0 else None,
                          "tv": total_variation(real, fake, n_classes)}
    ratios = [e["ratio"] for e in per_cell.values() if e["ratio"] is not None]
    tvs = [e["tv"] for e in per_cell.values()]
    return {"per_cell": per_cell,
            "entropy_ratio": float(np.mean(ratios)) if ratios else None,
            "tv": float(np.mean(tvs)) if tvs else None}


def bin_continuous(values, edges: Sequence[float] = SKIN_TONE_EDGES) -> np.ndarray:
    """Bin continuous attribute values (e.g. skin tone in [0, 1]) into int classes 0 .. len(edges).

    Bin i holds ``edges[i-1] <= v < edges[i]``, so ``n_classes = len(edges) + 1`` for
    :func:`entropy` and friends.  Fixed edges (not per-set quantiles) keep real and generated
    values on the same scale.
    """
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or not np.isfinite(e).all() or (np.diff(e) <= 0).any():
        raise QualityError(f"bin edges must be a non-empty, strictly increasing list of finite numbers, got {edges!r}")
    v = np.asarray(values, dtype=np.float64)
    if not np.isfinite(v).all():
        raise QualityError("attribute values contain NaN or infinite values")
    return np.digitize(v, e).astype(np.int64)
