"""Report files of classifier metrics: the CSV, JSON and PNG files of one
:func:`classifiers.metrics.evaluate` result or of a :func:`classifiers.metrics.summarize_folds`
summary, each written atomically.

Undefined metrics (None) are empty CSV cells and ``null`` in JSON.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from classifiers.metrics import MetricsError
from synth.utils.io import atomic_save, atomic_write_text

__all__ = ["csv_text", "plot_confusion_matrix", "write_report", "write_summary"]


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
