"""Classifier metrics, fold summaries, bootstrap intervals and paired statistics.

Everything here is plain numpy / scipy / scikit-learn so it can run on saved predictions
without torch.

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

import csv
import io
import json
import math
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from synth.errors import UserError
from synth.utils.io import atomic_save, atomic_write_text

__all__ = [
    "MetricsError",
    "evaluate",
    "summarize_folds",
    "BootstrapCI",
    "bootstrap_ci",
    "write_report",
    "write_summary",
]


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


# --------------------------------------------------------------------------------------
# bootstrap
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


# --------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------
def csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


def plot_confusion_matrix(path: str | Path, cm, class_names: Sequence[str], title: str | None = None) -> None:
    """Write an annotated confusion-matrix PNG (rows true, columns predicted), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(class_names)
    side = max(3.5, 0.7 * k + 2.0)
    fig, ax = plt.subplots(figsize=(side, side))
    try:
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1))
        thresh = cm.max() / 2.0 if cm.max() > 0 else 1
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                        color="white" if cm[i, j] > thresh else "black")
        ax.set_xticks(range(k), labels=list(class_names), rotation=45, ha="right")
        ax.set_yticks(range(k), labels=list(class_names))
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    finally:
        plt.close(fig)


def write_report(out_dir: str | Path, result: dict, class_names: Sequence[str] | None = None,
                 prefix: str = "") -> dict[str, Path]:
    """Write one :func:`evaluate` result as files in ``out_dir`` (each written atomically).

    Files (each name prefixed by ``prefix``): ``metrics.json`` (the whole result),
    ``per_class.csv``, ``confusion_matrix.csv``, ``confusion_matrix.png`` and, when the
    result has a per-cell table, ``per_cell.csv``.  Returns ``{kind: path}``.
    """
    class_names = list(class_names if class_names is not None else result.get("class_names", []))
    if "per_class" not in result or "confusion_matrix" not in result:
        raise MetricsError("write_report needs a result from evaluate() (per_class and confusion_matrix missing)")
    if sorted(class_names) != sorted(result["per_class"].keys()):
        raise MetricsError("class_names do not match the classes in the result")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics": out / f"{prefix}metrics.json",
        "per_class": out / f"{prefix}per_class.csv",
        "confusion_csv": out / f"{prefix}confusion_matrix.csv",
        "confusion_png": out / f"{prefix}confusion_matrix.png",
    }
    atomic_write_text(paths["metrics"], json.dumps(result, indent=2) + "\n")
    fields = ["support", "sensitivity", "specificity", "precision", "f1", "auc"]
    atomic_write_text(
        paths["per_class"],
        csv_text(["class"] + fields, [[c] + [result["per_class"][c].get(f) for f in fields] for c in class_names]),
    )
    cm = result["confusion_matrix"]
    atomic_write_text(
        paths["confusion_csv"],
        csv_text(["true\\predicted"] + class_names, [[c] + list(row) for c, row in zip(class_names, cm)]),
    )
    plot_confusion_matrix(paths["confusion_png"], cm, class_names)
    if "per_cell" in result:
        paths["per_cell"] = out / f"{prefix}per_cell.csv"
        header = list(result.get("cell_names") or []) + ["n", "correct", "accuracy"]
        rows = [list(r["cell"]) + [r["n"], r["correct"], r["accuracy"]] for r in result["per_cell"]]
        atomic_write_text(paths["per_cell"], csv_text(header, rows))
    return paths


def write_summary(out_dir: str | Path, summary: dict, prefix: str = "") -> dict[str, Path]:
    """Write a :func:`summarize_folds` result: ``summary.json``, ``summary.csv`` (metric,
    mean, sd, n), ``per_class_summary.csv`` and, if present, ``per_cell_summary.csv`` and
    the summed ``confusion_matrix.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / f"{prefix}summary.json", "scalars": out / f"{prefix}summary.csv",
             "per_class": out / f"{prefix}per_class_summary.csv"}
    atomic_write_text(paths["summary"], json.dumps(summary, indent=2) + "\n")
    atomic_write_text(paths["scalars"], csv_text(
        ["metric", "mean", "sd", "n"],
        [[k, v["mean"], v["sd"], v["n"]] for k, v in summary["metrics"].items()]))
    rows = []
    for cname, metrics in summary["per_class"].items():
        for m, v in metrics.items():
            rows.append([cname, m, v["mean"], v["sd"], v["n"]])
    atomic_write_text(paths["per_class"], csv_text(["class", "metric", "mean", "sd", "n"], rows))
    if "per_cell" in summary:
        paths["per_cell"] = out / f"{prefix}per_cell_summary.csv"
        header = list(summary.get("cell_names") or []) + ["n", "accuracy_mean", "accuracy_sd", "folds"]
        rows = [list(r["cell"]) + [r["n"], r["accuracy"]["mean"], r["accuracy"]["sd"], r["accuracy"]["n"]]
                for r in summary["per_cell"]]
        atomic_write_text(paths["per_cell"], csv_text(header, rows))
    if "confusion_matrix" in summary and summary.get("class_names"):
        paths["confusion_png"] = out / f"{prefix}confusion_matrix.png"
        plot_confusion_matrix(paths["confusion_png"], summary["confusion_matrix"], summary["class_names"],
                              title=f"Summed over {summary['n_folds']} folds")
    return paths
