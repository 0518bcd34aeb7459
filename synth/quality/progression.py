"""Progression consistency along age/stage morphs (fixed z, ordinal factor interpolated).

The judge's expected grade ``sum_k p_k * k`` (k = level index in the space's order) turns a
probability vector into a position on the ordinal scale.  Along a morph from the first to the
last level it should not go backwards: we report the fraction of morphs whose grade never
decreases (beyond ``tol``) and the mean Spearman rank correlation between step and grade.
A flat sequence counts as monotone but has no defined rho; it is counted separately.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["expected_grade", "is_monotone", "monotone_fraction", "spearman_summary", "progression_consistency"]


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """[..., K] probabilities over ordered levels -> [...] expected level index."""
    p = np.asarray(probs, dtype=np.float64)
    return p @ np.arange(p.shape[-1], dtype=np.float64)


def is_monotone(seq: Sequence[float], increasing: bool = True, tol: float = 1e-6) -> bool:
    d = np.diff(np.asarray(seq, dtype=np.float64))
    return bool(np.all(d >= -tol)) if increasing else bool(np.all(d <= tol))


def monotone_fraction(seqs: np.ndarray | Sequence[Sequence[float]], increasing: bool = True, tol: float = 1e-6) -> float:
    seqs = list(seqs)
    if not seqs:
        return float("nan")
    return float(np.mean([is_monotone(s, increasing, tol) for s in seqs]))


def spearman_summary(seqs: np.ndarray | Sequence[Sequence[float]]) -> dict:
    """Mean Spearman rho of each sequence against its step index (scipy), ignoring flat ones."""
    from scipy.stats import spearmanr

    rhos = []
    flat = 0
    for s in seqs:
        s = np.asarray(s, dtype=np.float64)
        if np.ptp(s) == 0:
            flat += 1
            continue
        rhos.append(float(spearmanr(np.arange(len(s)), s).statistic))
    return {
        "mean_rho": float(np.mean(rhos)) if rhos else None,
        "median_rho": float(np.median(rhos)) if rhos else None,
        "n_defined": len(rhos),
        "n_flat": flat,
    }


def progression_consistency(grades: np.ndarray, increasing: bool = True, tol: float = 1e-6) -> dict:
    """Summary for expected grades [morphs, steps] of morphs that go up (or down) the scale."""
    g = np.asarray(grades, dtype=np.float64)
    out = {"n_sequences": int(g.shape[0]), "steps": int(g.shape[1]) if g.ndim == 2 else 0,
           "monotone_fraction": monotone_fraction(g, increasing, tol)}
    out.update(spearman_summary(g))
    if len(g):
        out["mean_grade_per_step"] = [float(x) for x in g.mean(0)]
    return out
