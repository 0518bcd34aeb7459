"""Classifier metrics: scores of class probabilities against targets, and fold summaries.

Everything here is plain numpy / scikit-learn so it can run on saved predictions without
torch.  Bootstrap intervals and paired statistics live in :mod:`classifiers.stats`, the
report files (CSV, JSON, confusion-matrix PNG) in :mod:`classifiers.reports`; their names
stay importable from here.

Conventions
-----------
* ``probs`` is ``[N, K]`` class probabilities (rows need not sum to exactly 1, e.g. an
  ensemble average); the predicted class is the row arg-max.
* ``targets`` is ``[N]`` integer class indices or ``[N, K]`` soft targets.  Hard metrics
  use the arg-max of a soft target.
* A metric that is undefined (a zero division: precision of a class that is never
  predicted, sensitivity of a class with no samples, AUC of a class with no positives or
  no negatives ...) is ``None`` in the result dict (``null`` in JSON, empty cell in CSV)
  instead of a number plus a warning.  :func:`summarize_folds` skips such values.
"""
from __future__ import annotations

import importlib
import math
from typing import Sequence

import numpy as np

from synth.errors import UserError

__all__ = [
    "MetricsError",
    "evaluate",
    "summarize_folds",
    "BootstrapCI",
    "bootstrap_ci",
    "write_report",
    "write_summary",
]

# Names that moved out of this module; still importable from here (resolved on first use, so
# classifiers.stats and classifiers.reports, which import MetricsError, make no import cycle).
_MOVED = {
    "BootstrapCI": "classifiers.stats",
    "bootstrap_ci": "classifiers.stats",
    "csv_text": "classifiers.reports",
    "plot_confusion_matrix": "classifiers.reports",
    "write_report": "classifiers.reports",
    "write_summary": "classifiers.reports",
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MetricsError(UserError):
    """Predictions or targets that cannot be scored (one-line message)."""


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _as_probs(probs, n_classes: int | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise MetricsError(f"probs must be a non-empty [N, K] array, got shape {tuple(p.shape)}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise MetricsError(f"probs has {p.shape[1]} columns but {n_classes} class names were given")
    if not np.all(np.isfinite(p)):
        raise MetricsError("probs contains NaN or infinite values")
    return p


def _hard_targets(targets, n: int, n_classes: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim == 2:
        if t.shape != (n, n_classes):
            raise MetricsError(f"soft targets have shape {tuple(t.shape)}, expected ({n}, {n_classes})")
        return np.argmax(t, axis=1).astype(np.int64)
    if t.ndim != 1 or t.shape[0] != n:
        raise MetricsError(f"targets must have length {n} (one per prediction), got shape {tuple(t.shape)}")
    if t.dtype.kind == "f":
        if not np.all(np.isfinite(t)) or not np.all(t == np.round(t)):
            raise MetricsError("targets must be integer class indices")
    elif t.dtype.kind not in "iu":
        raise MetricsError(f"targets must be integer class indices, got dtype {t.dtype}")
    t = t.astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= n_classes):
        raise MetricsError(f"targets must lie in [0, {n_classes - 1}], got range [{t.min()}, {t.max()}]")
    return t


def _div(num: float, den: float) -> float | None:
    """num / den, or None when den is zero (documented 'undefined')."""
    return None if den == 0 else float(num) / float(den)


def _nanmean(values) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _cell_key(c) -> tuple[str, ...]:
    if isinstance(c, str):
        return (c,)
    return tuple(str(x) for x in c)


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[K, K] counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _ovr_auc(y_true: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    from sklearn.metrics import roc_auc_score

    pos = y_true == k
    if pos.all() or not pos.any():
        return None  # AUC needs both positives and negatives
    return float(roc_auc_score(pos.astype(np.int64), scores))


def evaluate(
    probs,
    targets,
    class_names: Sequence[str],
    cells: Sequence[tuple[str, ...] | str] | None = None,
    cell_names: Sequence[str] | None = None,
    ordinal: bool = False,
    cell_order: Sequence[tuple[str, ...] | str] | None = None,
) -> dict:
    """Score class probabilities against targets.

    Args:
        probs: ``[N, K]`` probabilities.
        targets: ``[N]`` class indices or ``[N, K]`` soft targets (arg-max is used).
        class_names: the K class names, in column order.
        cells: optional per-sample condition cell, e.g. ``("syndrome_a", "child")``; the
            result then has a per-cell accuracy table (the studies' disease x age table).
        cell_names: names of the factors that make up a cell key (e.g. ``["disease",
            "age"]``), used as column headers.
        ordinal: the class order is a progression (grades, stages): also report the mean
            absolute grade error and the fraction within one grade.
        cell_order: every cell to report, in condition-space order (pass
            ``space.cells(cell_names)``); cells with no samples are reported with n = 0
            and accuracy None.  Without it cells are reported in sorted order.

    Returns a JSON-serialisable dict with ``n``, ``accuracy``, ``balanced_accuracy`` (mean
    sensitivity over classes that have samples), macro averages, ``per_class`` (support,
    sensitivity, specificity, precision, f1, auc per class name), ``confusion_matrix``
    (rows true, columns predicted), ``per_cell`` (when cells are given) and
    ``mae_grade``/``within_one_grade`` (when ordinal).  Undefined values are None.
    """
    class_names = [str(c) for c in class_names]
    k = len(class_names)
    if k < 2:
        raise MetricsError("evaluate needs at least two class names")
    if len(set(class_names)) != k:
        raise MetricsError("class names must be unique")
    p = _as_probs(probs, k)
    n = p.shape[0]
    y = _hard_targets(targets, n, k)
    pred = np.argmax(p, axis=1)
    correct = pred == y
    cm = confusion_matrix(y, pred, k)

    per_class: dict[str, dict] = {}
    for i, name in enumerate(class_names):
        tp = int(cm[i, i])
        fn = int(cm[i].sum() - tp)
        fp = int(cm[:, i].sum() - tp)
        tn = int(n - tp - fn - fp)
        per_class[name] = {
            "support": tp + fn,
            "sensitivity": _div(tp, tp + fn),
            "specificity": _div(tn, tn + fp),
            "precision": _div(tp, tp + fp),
            # 2TP / (2TP + FP + FN) equals the harmonic mean of precision and recall when both
            # exist, and is still defined (0) when a class is never predicted.
            "f1": _div(2 * tp, 2 * tp + fp + fn),
            "auc": _ovr_auc(y, p[:, i], i),
        }

    present = [c for c in class_names if per_class[c]["support"] > 0]
    result: dict = {
        "n": int(n),
        "class_names": class_names,
        "accuracy": float(correct.mean()),
        "balanced_accuracy": _nanmean(per_class[c]["sensitivity"] for c in present),
        "macro_sensitivity": _nanmean(per_class[c]["sensitivity"] for c in class_names),
        "macro_specificity": _nanmean(per_class[c]["specificity"] for c in class_names),
        "macro_precision": _nanmean(per_class[c]["precision"] for c in class_names),
        "macro_f1": _nanmean(per_class[c]["f1"] for c in class_names),
        "macro_auc": _nanmean(per_class[c]["auc"] for c in class_names),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if ordinal:
        err = np.abs(pred - y)
        result["mae_grade"] = float(err.mean())
        result["within_one_grade"] = float((err <= 1).mean())

    if cells is not None:
        result.update(_per_cell(cells, correct, cell_names, cell_order))
    return result


def _per_cell(cells, correct: np.ndarray, cell_names, cell_order) -> dict:
    keys = [_cell_key(c) for c in cells]
    if len(keys) != len(correct):
        raise MetricsError(f"cells has {len(keys)} entries but there are {len(correct)} predictions")
    widths = {len(kk) for kk in keys}
    if len(widths) > 1:
        raise MetricsError("all cell keys must have the same number of factors")
    if cell_order is not None:
        order = [_cell_key(c) for c in cell_order]
        known = set(order)
        unknown = sorted({kk for kk in keys if kk not in known})
        if unknown:
            raise MetricsError(f"cell {' / '.join(unknown[0])} is not in cell_order")
    else:
        order = sorted(set(keys))
    width = len(order[0]) if order else (widths.pop() if widths else 0)
    if cell_names is None:
        cell_names = [f"factor{i}" for i in range(width)]
    cell_names = [str(c) for c in cell_names]
    if order and len(cell_names) != width:
        raise MetricsError(f"cell_names has {len(cell_names)} names but cell keys have {width} parts")
    counts: dict[tuple, list[int]] = {kk: [0, 0] for kk in order}
    for kk, ok in zip(keys, correct):
        counts[kk][0] += 1
        counts[kk][1] += int(ok)
    table = [
        {"cell": list(kk), "n": c[0], "correct": c[1], "accuracy": _div(c[1], c[0])}
        for kk, c in counts.items()
    ]
    return {"cell_names": cell_names, "per_cell": table}


# --------------------------------------------------------------------------------------
# summaries across folds
# --------------------------------------------------------------------------------------
def _mean_sd(values) -> dict:
    vals = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if vals.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(vals, ddof=1)) if vals.size > 1 else None
    return {"mean": float(vals.mean()), "sd": sd, "n": int(vals.size)}


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


# bookkeeping numbers callers attach to a fold result; averaging them means nothing
_NOT_SUMMARISED = {"fold", "seed"}


def summarize_folds(results: Sequence[dict]) -> dict:
    """Mean and sample SD (ddof=1) over folds of every scalar and per-class metric.

    Each entry is ``{"mean", "sd", "n"}`` where ``n`` counts the folds in which the metric
    was defined (None values are skipped; ``sd`` is None with fewer than two values).
    Per-cell accuracies are summarised the same way; confusion matrices are summed.
    """
    results = list(results)
    if not results:
        raise MetricsError("summarize_folds needs at least one fold result")
    names = results[0].get("class_names")
    for r in results[1:]:
        if r.get("class_names") != names:
            raise MetricsError("fold results have different class names")

    # every key that holds a number (or None = undefined in that fold) in some fold
    scalar_keys: list[str] = []
    for r in results:
        scalar_keys += [k for k, v in r.items()
                        if (_is_scalar(v) or v is None) and k not in scalar_keys and k not in _NOT_SUMMARISED]
    scalars = {k: _mean_sd(r.get(k) for r in results) for k in scalar_keys}

    per_class: dict[str, dict] = {}
    for cname in names or []:
        metrics = list(results[0]["per_class"][cname].keys())
        per_class[cname] = {m: _mean_sd(r["per_class"][cname].get(m) for r in results) for m in metrics}

    out: dict = {"n_folds": len(results), "class_names": names, "metrics": scalars, "per_class": per_class}
    if all("confusion_matrix" in r for r in results):
        out["confusion_matrix"] = np.sum([np.asarray(r["confusion_matrix"]) for r in results], axis=0).tolist()
    if all("per_cell" in r for r in results):
        order: list[tuple] = []
        for r in results:
            for row in r["per_cell"]:
                if tuple(row["cell"]) not in order:
                    order.append(tuple(row["cell"]))
        cells = []
        for key in order:
            rows = [row for r in results for row in r["per_cell"] if tuple(row["cell"]) == key]
            entry = {"cell": list(key), "n": int(sum(row["n"] for row in rows))}
            entry["accuracy"] = _mean_sd(row["accuracy"] for row in rows)
            cells.append(entry)
        out["cell_names"] = results[0].get("cell_names")
        out["per_cell"] = cells
    return out
