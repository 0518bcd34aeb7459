"""Paired statistics of an ablation: every arm against the real-only reference.

All arms are trained on the same folds and scored on the same held-out images, so
comparisons are paired: per-fold score differences get a t confidence interval and the
Nadeau-Bengio corrected resampled t-test (folds share training images, which makes the plain
t-test overconfident); the pooled out-of-fold predictions give McNemar's test on the
discordant images.  With few folds these intervals are wide: the t quantile with k - 1
degrees of freedom is 12.7 for k = 2 and 2.78 for k = 5.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from classifiers.stats import corrected_resampled_ttest, mcnemar, paired_difference

__all__ = ["ablation_statistics", "SMALL_K"]

# Below this many folds the report warns that intervals are wide and tests have little power.
SMALL_K = 5


def _paired_dict(r) -> dict:
    return {
        "mean": r.mean, "sd": r.sd, "ci_low": r.ci_low, "ci_high": r.ci_high,
        "t": r.statistic, "p_value": r.p_value, "df": r.df,
    }


def ablation_statistics(
    per_fold_scores: Mapping[str, Sequence[float]],
    n_train: float | None,
    n_test: float | None,
    correct: Mapping[str, np.ndarray] | None = None,
    reference: str = "real",
    alpha: float = 0.05,
) -> dict:
    """Compare every arm with ``reference``.

    Args:
        per_fold_scores: ``{arm: [score of fold 0, fold 1, ...]}`` (same folds for all arms).
        n_train, n_test: mean training / held-out size per fold for the corrected
            resampled t-test (skipped when either is None, e.g. for a fixed test set).
        correct: optional ``{arm: bool array}``, whether each image was classified
            correctly (the same images in the same order for every arm), for McNemar.
        reference: the arm the others are compared with.

    Returns ``{"reference", "k", "alpha", "small_k", "arms": {arm: {...}}}`` where each arm has
    ``mean``/``sd``/``scores`` of its per-fold scores and, for non-reference arms,
    ``difference`` (arm - reference: mean, sd, t CI, paired t-test), ``corrected``
    (Nadeau-Bengio) and ``mcnemar`` (``reference_only``: images only the reference got
    right, ``arm_only``: only the arm got right, exact or chi-square p).
    """
    if reference not in per_fold_scores:
        raise ValueError(f"reference arm {reference!r} has no scores")
    ref = np.asarray(per_fold_scores[reference], dtype=np.float64)
    k = int(ref.size)
    out: dict = {"reference": reference, "k": k, "alpha": alpha, "small_k": k < SMALL_K,
                 "n_train": n_train, "n_test": n_test, "arms": {}}
    for arm, scores in per_fold_scores.items():
        s = np.asarray(scores, dtype=np.float64)
        if s.size != k:
            raise ValueError(f"arm {arm!r} has {s.size} fold scores, the reference has {k}")
        entry: dict = {
            "scores": s.tolist(),
            "mean": float(s.mean()) if k else None,
            "sd": float(s.std(ddof=1)) if k > 1 else None,
        }
        if correct is not None and arm in correct:
            entry["pooled"] = float(np.mean(correct[arm]))
        if arm != reference and k >= 2:
            d = s - ref
            entry["difference"] = _paired_dict(paired_difference(s, ref, alpha=alpha))
            if n_train is not None and n_test is not None:
                entry["corrected"] = _paired_dict(corrected_resampled_ttest(d, n_train, n_test, alpha=alpha))
        if arm != reference and correct is not None and arm in correct and reference in correct:
            m = mcnemar(correct[reference], correct[arm])
            entry["mcnemar"] = {"reference_only": m.b, "arm_only": m.c, "statistic": m.statistic,
                                "p_value": m.p_value, "exact": m.exact}
        out["arms"][arm] = entry
    return out
