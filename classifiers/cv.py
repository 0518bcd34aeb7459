"""k-fold cross-validation: one classifier per fold, out-of-fold predictions, fold summaries.

Folds are grouped by subject and stratified by condition cell
(:func:`synth.data.folds.make_folds`) or read from a ``folds.csv``.  Fold ``k``'s model
trains on the other folds (plus auxiliary sets and any extra synthetic images) and is
validated - and its best epoch chosen - on fold ``k`` only, whose predictions become the
out-of-fold (OOF) predictions.  Extra synthetic images never enter a validation fold.

:func:`run_cv` is the Python entry point (an ablation runs it many times with
``out_dir=None``, which writes nothing); ``synth classify cv`` wraps it.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from classifiers import metrics, reports
from classifiers.data import AuxSpec, Target, encode_images
from classifiers.ensemble import predict_probs
from classifiers.prepare import CVError, check_fold_classes, prepare_classes, prepare_target
from classifiers.train import TrainConfig, TrainResult, train_classifier
from synth.data.dataset import DatasetError
from synth.data.folds import check_folds, make_folds, read_folds, write_folds
from synth.utils.io import atomic_write_text

# CVError, check_fold_classes and prepare_target live in classifiers.prepare (the data chain
# shared with `synth classify train` and the ablation); they stay importable from here.
__all__ = ["CVConfig", "CVResult", "CVError", "run_cv", "resolve_folds", "check_fold_classes", "prepare_target"]


@dataclass
class CVConfig:
    """Cross-validation settings around one :class:`TrainConfig`."""

    train: TrainConfig = field(default_factory=TrainConfig)
    target: str | Sequence[str] = "disease"
    k: int = 5
    fold_seed: int = 0
    stratify: Sequence[str] | None = None  # factors balanced across folds (default: all)
    cell_factors: Sequence[str] | None = None  # per-cell table factors (default: all of the space)
    aux: Sequence[AuxSpec] = ()
    own_weight: float = 1.0  # per-sample loss weight of the dataset's own images
    extra_weight: float = 1.0  # per-sample loss weight of extra (synthetic) training images
    tta: str = "none"  # test-time augmentation for the out-of-fold predictions
    seed_per_fold: bool = True  # fold k trains with seed + k (distinct inits, still reproducible)
    drop_empty: bool = True  # drop classes no image carries (e.g. default levels absent from the data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.train.to_dict(),
            "target": self.target if isinstance(self.target, str) else list(self.target),
            "k": self.k,
            "fold_seed": self.fold_seed,
            "stratify": None if self.stratify is None else list(self.stratify),
            "cell_factors": None if self.cell_factors is None else list(self.cell_factors),
            "aux": [{"path": a.path, "weight": a.weight, "factors": a.factors} for a in self.aux],
            "own_weight": self.own_weight,
            "extra_weight": self.extra_weight,
            "tta": self.tta,
            "seed_per_fold": self.seed_per_fold,
            "drop_empty": self.drop_empty,
        }


@dataclass
class CVResult:
    target: Target
    folds: np.ndarray  # [N] fold of each own image
    oof_probs: np.ndarray  # [N, K] out-of-fold probabilities
    targets: np.ndarray  # [N, K] target distributions
    fold_metrics: list[dict]  # metrics.evaluate per held-out fold
    summary: dict  # metrics.summarize_folds: mean +- SD per metric, per-cell table
    oof_metrics: dict  # metrics.evaluate on all out-of-fold predictions pooled
    best_epochs: list[int]
    histories: list[list[dict]]
    checkpoints: list[Path | None]
    files: list[str]
    cells: list[tuple[str, ...]]
    models: list[Any] | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.target.class_names)

    def mean_sd(self, metric: str = "accuracy") -> tuple[float | None, float | None]:
        m = self.summary["metrics"].get(metric, {})
        return m.get("mean"), m.get("sd")

    def to_dict(self) -> dict:
        """Compact JSON-ready record (no arrays of predictions)."""
        return {
            "class_names": self.class_names,
            "target": self.target.to_dict(),
            "n": int(len(self.folds)),
            "k": int(self.folds.max() + 1) if len(self.folds) else 0,
            "fold_sizes": np.bincount(self.folds).tolist() if len(self.folds) else [],
            "best_epochs": self.best_epochs,
            "summary": {k: v for k, v in self.summary["metrics"].items()},
            "oof": {k: v for k, v in self.oof_metrics.items() if not isinstance(v, (list, dict))},
        }


# ----------------------------------------------------------------------------------------


def resolve_folds(imageset, folds, k: int, seed: int, stratify=None) -> np.ndarray:
    """Folds from an array, a ``folds.csv`` path, or made fresh when ``None``."""
    try:
        if folds is None:
            return make_folds(imageset, k=k, seed=seed, stratify=stratify)
        if isinstance(folds, (str, Path)):
            return read_folds(folds, imageset)
        arr = np.asarray(folds, dtype=np.int64)
        check_folds(imageset, arr)
        return arr
    except DatasetError as e:
        raise CVError(str(e)) from None


def _per_fold_extra(extra_train, k: int):
    """extra_train as {fold: ImageSet|None}; an ImageSet with a ``fold`` column is held
    out of that fold's training (images made from one latent share a fold)."""
    if extra_train is None:
        return {f: None for f in range(k)}
    if isinstance(extra_train, Mapping):
        return {f: extra_train.get(f) for f in range(k)}
    if isinstance(extra_train, (list, tuple)):
        if len(extra_train) != k:
            raise CVError(f"extra_train has {len(extra_train)} sets for {k} folds")
        return dict(enumerate(extra_train))
    out = {}
    has_fold = any("fold" in r.extra for r in extra_train.records)
    for f in range(k):
        if has_fold:
            keep = [i for i, r in enumerate(extra_train.records) if str(r.extra.get("fold", "")).strip() != str(f)]
            out[f] = extra_train.subset(keep)
        else:
            out[f] = extra_train
    return out


def _oof_rows(result: CVResult, subjects: Sequence[str | None], cell_names: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = result.class_names
    w.writerow(["file", "subject", "fold", *cell_names, "true", "pred", "correct", *[f"p_{c}" for c in names]])
    true = result.targets.argmax(1)
    pred = result.oof_probs.argmax(1)
    for i, f in enumerate(result.files):
        w.writerow(
            [f, subjects[i] or "", int(result.folds[i]), *result.cells[i], names[true[i]], names[pred[i]], int(true[i] == pred[i])]
            + [f"{p:.6f}" for p in result.oof_probs[i]]
        )
    return buf.getvalue()


def run_cv(
    imageset,
    config: CVConfig,
    folds: np.ndarray | str | Path | None = None,
    out_dir: str | Path | None = None,
    extra_train=None,
    keep_models: bool = False,
    before_write: Callable[[], None] | None = None,
) -> CVResult:
    """Cross-validate ``config.train`` on ``imageset``; see the module doc.

    ``folds``: fold per image, a folds.csv path, or None (made with ``config.k`` and
    ``config.fold_seed``).  ``extra_train``: an ImageSet added to every fold's training
    images (rows with a ``fold`` column skip the fold they belong to), a list with one
    ImageSet per fold, or ``{fold: ImageSet}``.  With ``out_dir`` every fold's model, log
    and metrics, the out-of-fold predictions, ``folds.csv`` and the summary are written;
    ``before_write`` is called once every check has passed, just before the first write (the
    CLI prepares ``out_dir`` there, so a run that fails its checks leaves nothing behind).
    """
    tc = config.train
    fold_arr = resolve_folds(imageset, folds, config.k, config.fold_seed, config.stratify)
    k = int(fold_arr.max()) + 1
    present = sorted(set(fold_arr.tolist()))
    if present != list(range(k)) or k < 2:
        raise CVError(f"folds must be numbered 0..k-1 with k >= 2, got {present}")

    target, aux_sets = prepare_target(imageset, config.target, config.aux)
    if target.num_classes < 2:
        raise CVError(f"--target {','.join(target.factors)}: only {target.num_classes} class; need at least 2")
    cell_factors = list(config.cell_factors or imageset.space.names)
    own = encode_images(imageset, target, tc.size, weight=config.own_weight, progress=tc.progress)
    aux_data = [encode_images(ds, target, tc.size, a.weight, factors, source=f"aux:{Path(a.path).name}") for ds, a, factors in aux_sets]
    extra_by_fold = _per_fold_extra(extra_train, k)
    extra_sets = {id(ds): ds for ds in extra_by_fold.values() if ds is not None and len(ds)}
    extra_enc = {key: encode_images(ds, target, tc.size, config.extra_weight, target.factors, source="extra") for key, ds in extra_sets.items()}
    # Every class must be trainable in every fold: all folds are checked before any trains.
    # "auto" class weights are the same for every fold (from all own and auxiliary images), so
    # folds stay comparable; a bad NAME=W fails here, before any write.
    data = prepare_classes(
        target, own, aux=aux_data, folds=fold_arr, class_weight=tc.class_weight, drop_empty=config.drop_empty,
        extra={f: None if ds is None or len(ds) == 0 else extra_enc[id(ds)] for f, ds in extra_by_fold.items()},
    )
    target, own = data.target, data.own

    out = Path(out_dir) if out_dir is not None else None
    if before_write is not None:
        before_write()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_folds(out / "folds.csv", imageset, fold_arr)
    cells = [imageset.cell_of(i, cell_factors) for i in range(len(imageset))]
    cell_order = imageset.space.cells(cell_factors)
    ordinal = len(target.factors) == 1 and imageset.space.factor(target.factors[0]).ordinal

    oof = np.zeros((len(imageset), target.num_classes), dtype=np.float32)
    fold_metrics, best_epochs, histories, ckpts, models = [], [], [], [], []
    for f in range(k):
        val_idx = np.flatnonzero(fold_arr == f)
        val = own.take(val_idx)
        fcfg = dataclasses.replace(tc, seed=tc.seed + f if config.seed_per_fold else tc.seed)
        res: TrainResult = train_classifier(
            data.train_images(f),
            val,
            target,
            fcfg,
            out_dir=None if out is None else out / f"fold{f}",
            class_weight=data.class_weight,
            meta_extra={"condition_space": imageset.space.to_dict(), "fold": f, "k": k},
            desc=f"fold {f + 1}/{k}",
        )
        probs = res.val_probs
        if config.tta != "none" or probs is None:
            norm = res.meta["normalisation"]
            device = next(res.model.parameters()).device
            probs = predict_probs(res.model, val.images, norm["mean"], norm["std"], tc.eval_batch, device, config.tta)
        oof[val_idx] = probs
        m = metrics.evaluate(
            probs, val.targets, target.class_names, cells=[cells[i] for i in val_idx], cell_names=cell_factors,
            ordinal=ordinal, cell_order=cell_order,
        )
        m["fold"] = f
        m["best_epoch"] = res.best_epoch
        fold_metrics.append(m)
        best_epochs.append(res.best_epoch)
        histories.append(res.history)
        ckpts.append(res.checkpoint)
        if keep_models:
            models.append(res.model)
        if out is not None:
            reports.write_report(out / f"fold{f}", m, target.class_names)

    summary = metrics.summarize_folds(fold_metrics)
    oof_metrics = metrics.evaluate(
        oof, own.targets, target.class_names, cells=cells, cell_names=cell_factors, ordinal=ordinal, cell_order=cell_order
    )
    result = CVResult(
        target, fold_arr, oof, own.targets, fold_metrics, summary, oof_metrics, best_epochs, histories, ckpts,
        list(own.files), cells, models if keep_models else None,
    )
    if out is not None:
        subjects = [r.subject for r in imageset.records]
        atomic_write_text(out / "oof_predictions.csv", _oof_rows(result, subjects, cell_factors))
        reports.write_summary(out, summary)
        reports.write_report(out, oof_metrics, target.class_names, prefix="oof_")
        atomic_write_text(out / "cv_result.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result
