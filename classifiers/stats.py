"""Statistics of classifier scores: percentile bootstrap intervals of a metric, and paired
statistics for comparing two training recipes on the same folds or test images (the
ablation's gains): paired t intervals, the corrected resampled t-test for cross-validated
differences (Nadeau and Bengio) and McNemar's test on the same test images.

One place for them: ``synth ablate`` and the classifier tools read them from here.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats

from classifiers.metrics import MetricsError

__all__ = [
    "BootstrapCI",
    "bootstrap_ci",
    "wilson_interval",
    "PairedResult",
    "paired_difference",
    "corrected_resampled_ttest",
    "McNemarResult",
    "mcnemar",
]


# --------------------------------------------------------------------------------------
# intervals: bootstrap and Wilson
# --------------------------------------------------------------------------------------
class BootstrapCI(NamedTuple):
    estimate: float
    low: float
    high: float


def _accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(y == pred))


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    # mean recall over the classes present in this (re)sample
    classes = np.unique(y)
    return float(np.mean([np.mean(pred[y == c] == c) for c in classes]))


_NAMED_METRICS = {"accuracy": _accuracy, "balanced_accuracy": _balanced_accuracy}


def bootstrap_ci(
    targets,
    preds_or_probs,
    metric: str | Callable[[np.ndarray, np.ndarray], float] = "accuracy",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Sequence | None = None,
) -> BootstrapCI:
    """Percentile bootstrap confidence interval of a metric.

    ``targets``: ``[N]`` class indices or ``[N, K]`` soft targets (arg-max).
    ``preds_or_probs``: ``[N]`` predicted classes or ``[N, K]`` probabilities.  Named
    metrics (``"accuracy"``, ``"balanced_accuracy"``) use hard predictions; a callable
    receives ``(targets, preds_or_probs)`` of the resample exactly as given (after soft
    targets are turned into indices) and returns a float.
    ``groups``: optional per-sample subject ids; whole groups are resampled so that images
    of one subject stay together.  Resamples whose metric is NaN are skipped.

    Returns ``BootstrapCI(estimate, low, high)``; the estimate is the metric on all data.
    """
    if not 0 < alpha < 1:
        raise MetricsError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 1:
        raise MetricsError(f"n_boot must be positive, got {n_boot}")
    x = np.asarray(preds_or_probs)
    n = x.shape[0] if x.ndim else 0
    if n == 0:
        raise MetricsError("bootstrap_ci needs at least one prediction")
    t = np.asarray(targets)
    if t.ndim == 2:
        t = np.argmax(t, axis=1)
    if t.shape[0] != n:
        raise MetricsError(f"targets has {t.shape[0]} entries but there are {n} predictions")

    if callable(metric):
        fn = metric
        data = x
    else:
        if metric not in _NAMED_METRICS:
            raise MetricsError(f"unknown metric {metric!r} (choose accuracy, balanced_accuracy or pass a callable)")
        fn = _NAMED_METRICS[metric]
        data = np.argmax(x, axis=1) if x.ndim == 2 else x

    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape[0] != n:
            raise MetricsError(f"groups has {g.shape[0]} entries but there are {n} predictions")
        uniq, inverse = np.unique(g, return_inverse=True)
        members = [np.flatnonzero(inverse == i) for i in range(len(uniq))]
    estimate = float(fn(t, data))
    values = np.empty(n_boot, dtype=np.float64)
    for b in range(n_boot):
        if groups is None:
            idx = rng.integers(0, n, size=n)
        else:
            pick = rng.integers(0, len(members), size=len(members))
            idx = np.concatenate([members[i] for i in pick])
        values[b] = fn(t[idx], data[idx])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise MetricsError("the metric was undefined on every bootstrap resample")
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapCI(estimate, float(low), float(high))


def wilson_interval(correct: int, n: int, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion ``correct / n`` (None, None when ``n`` is 0): unlike
    the normal approximation it stays inside [0, 1] and is honest for the few images of a rare cell."""
    if n <= 0:
        return None, None
    ci = stats.binomtest(int(correct), int(n)).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


# --------------------------------------------------------------------------------------
# paired statistics
# --------------------------------------------------------------------------------------
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

