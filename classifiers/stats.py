"""Paired statistics for comparing two training recipes on the same folds or test images
(the ablation's gains): paired t intervals, the corrected resampled t-test for cross-validated
differences (Nadeau and Bengio) and McNemar's test on the same test images.

One place for them: ``synth ablate`` and the classifier tools read them from here.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from classifiers.metrics import MetricsError

__all__ = ["PairedResult", "paired_difference", "corrected_resampled_ttest", "McNemarResult", "mcnemar"]


class PairedResult(NamedTuple):
    mean: float         # mean of a - b
    sd: float           # sample SD of the differences (ddof=1)
    ci_low: float       # (1 - alpha) t confidence interval of the mean difference
    ci_high: float
    statistic: float    # t statistic
    p_value: float      # two-sided
    df: int


def _t_result(d: np.ndarray, var_factor: float, alpha: float) -> PairedResult:
    k = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = math.sqrt(var_factor) * sd
    df = k - 1
    tcrit = float(stats.t.ppf(1 - alpha / 2, df))
    if se == 0:
        # all differences identical: no spread, so the t statistic is 0/0 or +-inf
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
        p = 1.0 if mean == 0 else 0.0
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), df))
    return PairedResult(mean, sd, mean - tcrit * se, mean + tcrit * se, float(t), p, df)


def _diffs(a, b=None) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    d = a if b is None else a - np.asarray(b, dtype=np.float64).ravel()
    if b is not None and np.asarray(b).size != a.size:
        raise MetricsError(f"paired scores need equal lengths, got {a.size} and {np.asarray(b).size}")
    if d.size < 2:
        raise MetricsError("paired statistics need at least two paired scores")
    if not np.all(np.isfinite(d)):
        raise MetricsError("paired scores contain NaN or infinite values")
    return d


def paired_difference(a, b, alpha: float = 0.05) -> PairedResult:
    """Mean, SD and t confidence interval of the per-fold differences ``a - b``, with the
    paired t-test (same as ``scipy.stats.ttest_rel``)."""
    d = _diffs(a, b)
    return _t_result(d, 1.0 / d.size, alpha)


def corrected_resampled_ttest(diffs, n_train: int, n_test: int, alpha: float = 0.05) -> PairedResult:
    """Nadeau & Bengio corrected resampled t-test on per-fold score differences.

    Cross-validation folds share training data, so the plain paired t-test understates the
    variance; the correction replaces ``var / k`` by ``var * (1/k + n_test/n_train)``.
    ``n_train``/``n_test`` are the (mean) training and test sizes per fold.
    """
    if n_train <= 0 or n_test <= 0:
        raise MetricsError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    d = _diffs(diffs)
    return _t_result(d, 1.0 / d.size + n_test / n_train, alpha)


class McNemarResult(NamedTuple):
    statistic: float   # chi-square (continuity corrected), or min(b, c) for the exact test
    p_value: float
    b: int             # a correct, b wrong
    c: int             # a wrong, b correct
    exact: bool


def mcnemar(correct_a, correct_b, exact: bool | None = None) -> McNemarResult:
    """McNemar test of two classifiers on the same test images.

    Only discordant pairs count: ``b`` (A right, B wrong) and ``c`` (A wrong, B right).
    ``exact=None`` picks the exact two-sided binomial test when ``b + c < 25`` and the
    chi-square test with continuity correction, ``(|b - c| - 1)^2 / (b + c)`` (floored at 0),
    otherwise.  With no discordant pairs the p-value is 1.
    """
    a = np.asarray(correct_a).astype(bool).ravel()
    bb = np.asarray(correct_b).astype(bool).ravel()
    if a.size != bb.size:
        raise MetricsError(f"mcnemar needs paired outcomes of equal length, got {a.size} and {bb.size}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    if exact is None:
        exact = n < 25
    if n == 0:
        return McNemarResult(0.0, 1.0, b, c, bool(exact))
    if exact:
        p = float(stats.binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue)
        return McNemarResult(float(min(b, c)), min(p, 1.0), b, c, True)
    stat = max(abs(b - c) - 1, 0) ** 2 / n
    return McNemarResult(float(stat), float(stats.chi2.sf(stat, 1)), b, c, False)
