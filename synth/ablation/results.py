"""results.json: the finished cells of an ablation, scored and compared (:func:`collect_results`).

:func:`collect_results` reads every cell file (``cells/fold{f}/{arm}.json``, one per fold, arm
and classifier seed), checks it against the run (classes, held-out files, test predictions)
and returns the dict that :func:`synth.ablation.report.write_report` writes as results.json
(and renders as report.md, per_arm.csv, per_cell.csv and gain.png).

A fold's score of an arm is the mean over its classifier seeds; the out-of-fold prediction
of an image is the mean of its fold's seeds' probabilities (one ensemble per fold).  ``S``
below is what :func:`synth.ablation.stats.ablation_statistics` returns, ``M`` what
:func:`classifiers.metrics.evaluate` returns.  Undefined numbers are ``null``.

Schema (keys in file order)::

    format          str    "synth-ablation-results/1"
    config          dict   AblationConfig.to_dict(): every setting of the run, as in plan.json
                           ("train": the classifier's TrainConfig.to_dict())
    arms            list   one Arm.to_dict() per arm, in run order (reference, matched controls,
                           then type x ratio): {"name": str, "type": str | null (null: real
                           images only), "ratio": float, "mixes": [float], "matched": bool,
                           "only": bool (synthetic images without real ones)}
    reference       str    the arm every other is compared with: "real"
    class_names     [str]  the target's classes (those the real images have), column order
    cell_names      [str]  the factors a condition cell is made of (all factors of --cond)
    k               int    number of folds
    fold_sizes      [int]  held-out real images per fold
    n_images        int    real images in --data
    seeds           int    classifier seeds per (fold, arm)
    generator       dict   where the synthetic images came from:
        mode            str          "per_fold" (--gan-per-fold) or "shared" (--network)
        network         str | null   --network path
        network_sha256  str | null   SHA-256 of that file
        gan_kimg        float | null --gan-kimg of the fold GANs (null when shared)
        may_leak        bool         true when shared: the network may have seen held-out images
        gan_base        str | null   --gan-base: the snapshot every fold GAN started from
        gan_pool        str | null   --gan-pool: images of other subjects added to every fold GAN's
        gan_judges      [str]        --gan-judge: the judges that chose each fold GAN's snapshot
        folds           [dict] | null each fold GAN's generator.json: "snapshot" (file name),
                                     "selected" ("best": the selection rule's best.ckpt, or
                                     "last"), "kimg", "n_images" (of which "n_pool" from the
                                     pool), "base", "judges", "selection" (the monitor's scores
                                     of the chosen snapshot: "kimg", "select", "judge/...",
                                     "diversity/mean", "diversity/min"; null without judges),
                                     "options" (its TrainingOptions)
    cv              dict   cross-validation on the held-out folds:
        statistics      {"accuracy": S, "balanced_accuracy": S}: per-fold scores of every arm
                        against "real" (paired t, corrected resampled t with n_train/n_test the
                        mean real training/held-out images per fold; McNemar for accuracy)
        oof             {arm: M}: the pooled out-of-fold ensemble predictions, per class and
                        per condition cell
        folds           {arm: [row per fold]}, row = {"fold": int, "accuracy": float,
                        "balanced_accuracy": float (seed means), "seed_accuracies": [float],
                        "n_synthetic": int, "n_repeated": int (seed 0's cell),
                        "best_epoch": [int per seed]}
        rare_cells      {"rule": str, "cells": [[str]], "n": int held-out images in them, "arms":
                        {arm: {"accuracy", "correct", "ci_low", "ci_high" (Wilson 95%),
                        "vs_real" and "vs_matched" (with "control"): {"difference", "ci_low",
                        "ci_high" (paired bootstrap over subjects), "mcnemar_p"}}}}: the rare
                        cells (see rare_cell_statistics), where the study claims its gain
        matched         {control arm name: {"ratio": float, "accuracy": S, "balanced_accuracy":
                        S}}: the control against itself and the synthetic arms of its ratio
                        (reference = the control); {} without matched controls
    test            dict | null   null without --test-data; else every fold model on the test set:
        n_images        int   test images
        ensemble        {arm: M}: the gated average of the arm's k x seeds fold models
                        (:func:`classifiers.ensemble.gated_average`)
        statistics      {"accuracy": S, "balanced_accuracy": S}: per-fold test scores (seed
                        means) against "real"; no corrected t (n_train, n_test null); McNemar
                        on the ensembles' predictions
        matched         as cv.matched, on the test scores
    epoch_selection dict   how each classifier's scored epoch was chosen:
        mode            str          "inner", "last" or "held_out"
        inner_val       float | null share of the training folds held back ("inner" only)
        epochs          int          epochs each classifier trained
        best_epochs     {arm: [int]} 0-based best epoch of every (fold, seed) classifier,
                        fold-major; near epochs - 1: still improving (not converged)

``S`` (:func:`~synth.ablation.stats.ablation_statistics`)::

    {"reference": str, "k": int, "alpha": 0.05, "small_k": bool (k < 5),
     "n_train": float | null, "n_test": float | null,
     "arms": {arm: {"scores": [float per fold], "mean": float, "sd": float | null,
                    "pooled": float,       # accuracy: of the out-of-fold ensemble (cv) or the
                                           # test ensemble; balanced_accuracy: from M (oof/ensemble)
                    "seed_sd": float | null,  # cv.statistics.accuracy only: SD between seeds
                                              # within a fold, mean over folds (null: one seed)
                    # every arm but the reference:
                    "difference": P,       # arm - reference per fold: mean, sd, t CI, paired t
                    "corrected": P,        # Nadeau-Bengio corrected t (when n_train, n_test given)
                    "mcnemar": {"reference_only": int, "arm_only": int, "statistic": float,
                                "p_value": float, "exact": bool}}}}   # accuracy only
    P = {"mean", "sd", "ci_low", "ci_high", "t", "p_value", "df"} (floats)

``M`` (:func:`classifiers.metrics.evaluate` with condition cells)::

    {"n": int, "class_names": [str], "accuracy": float, "balanced_accuracy": float,
     "macro_sensitivity", "macro_specificity", "macro_precision", "macro_f1", "macro_auc": float,
     "per_class": {class: {"support": int, "sensitivity", "specificity", "precision", "f1",
                           "auc": float}},
     "confusion_matrix": [[int]] (rows true, columns predicted),
     "cell_names": [str], "per_cell": [{"cell": [str], "n": int, "correct": int, "accuracy": float,
     "ci_low": float, "ci_high": float (Wilson 95%)}]}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from synth.ablation.cache import read_json
from synth.ablation.gan import fold_gan_records
from synth.ablation.folder import cell_name, cell_path
from synth.ablation.plan import REFERENCE_ARM, AblationError, Arm

__all__ = ["collect_results", "matched_statistics", "RESULTS_FORMAT"]

RESULTS_FORMAT = "synth-ablation-results/1"


def _sha256(path: str | None) -> str | None:
    from synth.synthesis.network import file_sha256

    return file_sha256(path) if path and Path(path).is_file() else None


def matched_statistics(arms: list[Arm], acc, bal, correct, n_train, n_test, pooled_metrics) -> dict:
    """Each synthetic arm against the matched control of its ratio: what the synthetic
    images add beyond as many more real presentations (steps) with the same label mix."""
    from synth.ablation.stats import ablation_statistics

    out = {}
    for ctrl in (a for a in arms if a.matched):
        group = [a.name for a in arms if a.adds_synthetic and a.ratio == ctrl.ratio]
        if not group:
            continue
        names = [ctrl.name, *group]
        out[ctrl.name] = {
            "ratio": ctrl.ratio,
            "accuracy": ablation_statistics({n: acc[n] for n in names}, n_train, n_test, correct, ctrl.name),
            "balanced_accuracy": ablation_statistics({n: bal[n] for n in names}, n_train, n_test, None, ctrl.name),
        }
        for n in names:  # pooled balanced accuracy of the out-of-fold (ensemble) predictions
            out[ctrl.name]["balanced_accuracy"]["arms"][n]["pooled"] = pooled_metrics[n]["balanced_accuracy"]
    return out


RARE_SHARE = 0.5  # a rare cell has fewer real images than this share of the median cell


def _cell_intervals(by_arm: dict) -> None:
    """Add the Wilson 95% interval (``ci_low``, ``ci_high``) to every per-cell accuracy."""
    from classifiers.stats import wilson_interval

    for m in by_arm.values():
        for c in m.get("per_cell", []):
            c["ci_low"], c["ci_high"] = wilson_interval(c["correct"], c["n"])


def rare_cell_statistics(run, correct: dict[str, np.ndarray], n_boot: int = 2000) -> dict:
    """Accuracy on the held-out images of the rare cells (fewer real images than
    :data:`RARE_SHARE` x the median cell: in the study's shape the affected infants and older
    adults) for every arm, and each arm's gain there over ``real`` and over its matched control:
    pooled out-of-fold predictions, Wilson intervals, a paired bootstrap over subjects for the
    gain and McNemar's test."""
    from collections import Counter

    from classifiers.stats import bootstrap_ci, mcnemar, wilson_interval

    counts = Counter(run.cells)
    sizes = [n for n in counts.values() if n > 0]
    median = float(np.median(sizes)) if sizes else 0.0
    rare = [c for c in run.cell_order if 0 < counts.get(c, 0) < RARE_SHARE * median]
    out: dict = {"rule": f"cells with fewer real images than {RARE_SHARE:g} x the median cell ({median:g})",
                 "cells": [list(c) for c in rare], "n": 0, "arms": {}}
    if not rare:
        return out
    rare_set = set(rare)
    mask = np.array([c in rare_set for c in run.cells])
    groups = run.imageset.groups()[mask]
    out["n"] = int(mask.sum())
    controls = {a.ratio: a.name for a in run.arms if a.matched}

    def gain(ok: np.ndarray, ref: np.ndarray) -> dict:
        ci = bootstrap_ci(ref.astype(np.int64), ok.astype(np.int64), metric=lambda t, p: float(p.mean() - t.mean()),
                          n_boot=n_boot, groups=groups, seed=0)
        m = mcnemar(ok, ref)
        return {"difference": float(ok.mean() - ref.mean()), "ci_low": ci.low, "ci_high": ci.high,
                "mcnemar_p": m.p_value}

    for arm in run.arms:
        ok = correct[arm.name][mask]
        low, high = wilson_interval(int(ok.sum()), int(ok.size))
        entry = {"accuracy": float(ok.mean()), "correct": int(ok.sum()), "ci_low": low, "ci_high": high}
        if arm.name != REFERENCE_ARM:
            entry["vs_real"] = gain(ok, correct[REFERENCE_ARM][mask])
        ctrl = controls.get(arm.ratio)
        if arm.adds_synthetic and ctrl is not None:
            entry["vs_matched"] = {"control": ctrl, **gain(ok, correct[ctrl][mask])}
        out["arms"][arm.name] = entry
    return out


def collect_results(run) -> dict:
    """results.json of ``run`` (a :class:`synth.ablation.runner._Run` whose cells all exist):
    every cell file is read and checked against the run (classes, held-out images, test
    predictions), then scored; raises AblationError naming the first cell that does not fit."""
    from classifiers import metrics
    from classifiers.ensemble import gated_average
    from synth.ablation.stats import ablation_statistics

    names = list(run.target.class_names)
    targets = run.own.targets
    y = targets.argmax(1)
    files = [r.file for r in run.imageset.records]
    sizes = np.bincount(run.folds, minlength=run.k)
    n_test = float(sizes.mean())
    n_train = float(len(run.folds) - n_test)
    acc, bal, correct, oof_metrics, fold_rows = {}, {}, {}, {}, {}
    t_acc, t_bal, t_correct, t_metrics = {}, {}, {}, {}
    n_seeds = run.config.seeds
    seed_sd: dict[str, float | None] = {}
    for arm in run.arms:
        oof = np.zeros_like(targets)
        by_fold: list[list[dict]] = []  # [fold][seed] records
        model_probs = []
        for f in range(run.k):
            idx = np.flatnonzero(run.folds == f)
            seed_recs = []
            for r in range(n_seeds):
                path = cell_path(run.out, f, arm.name, r)
                rec = read_json(path)
                if rec is None:
                    raise AblationError(f"cell {cell_name(f, arm.name, r)} has no result")
                if rec["class_names"] != names:
                    raise AblationError(f"{path}: classes differ from this run; use --force")
                if rec["val"]["files"] != [files[i] for i in idx]:
                    raise AblationError(f"{path}: held-out images differ from folds.csv; use --force")
                if run.test is not None:
                    if rec.get("test") is None:
                        raise AblationError(f"{path}: has no test predictions; use --force")
                    model_probs.append(np.asarray(rec["test"]["probs"], dtype=np.float32))
                seed_recs.append(rec)
            # the seeds' mean probabilities: one ensemble prediction per held-out image
            oof[idx] = np.mean([np.asarray(rec["val"]["probs"], dtype=np.float32) for rec in seed_recs], axis=0)
            by_fold.append(seed_recs)

        def fold_mean(recs, scope, metric):
            return float(np.mean([rec[scope]["metrics"][metric] for rec in recs]))

        acc[arm.name] = [fold_mean(rs, "val", "accuracy") for rs in by_fold]
        bal[arm.name] = [fold_mean(rs, "val", "balanced_accuracy") for rs in by_fold]
        # spread between classifier seeds within a fold, averaged over folds
        seed_sd[arm.name] = (float(np.mean([np.std([rec["val"]["metrics"]["accuracy"] for rec in rs], ddof=1)
                                            for rs in by_fold])) if n_seeds > 1 else None)
        correct[arm.name] = oof.argmax(1) == y
        oof_metrics[arm.name] = metrics.evaluate(oof, targets, names, cells=run.cells, cell_names=run.cell_factors,
                                                 cell_order=run.cell_order)
        fold_rows[arm.name] = [
            {"fold": f, "accuracy": acc[arm.name][f], "balanced_accuracy": bal[arm.name][f],
             "seed_accuracies": [rec["val"]["metrics"]["accuracy"] for rec in rs],
             "n_synthetic": rs[0]["n_synthetic"], "n_repeated": rs[0].get("n_repeated", 0), "best_epoch": [rec["best_epoch"] for rec in rs]}
            for f, rs in enumerate(by_fold)
        ]
        if run.test is not None:
            ens = gated_average(np.stack(model_probs)).probs
            t_acc[arm.name] = [fold_mean(rs, "test", "accuracy") for rs in by_fold]
            t_bal[arm.name] = [fold_mean(rs, "test", "balanced_accuracy") for rs in by_fold]
            t_correct[arm.name] = ens.argmax(1) == run.test.targets.argmax(1)
            t_metrics[arm.name] = metrics.evaluate(ens, run.test.targets, names, cells=run.test_cells,
                                                   cell_names=run.cell_factors, cell_order=run.cell_order)
    cfg = run.config
    results: dict = {
        "format": RESULTS_FORMAT,
        "config": cfg.to_dict(),
        "arms": [a.to_dict() for a in run.arms],
        "reference": REFERENCE_ARM,
        "class_names": names,
        "cell_names": run.cell_factors,
        "k": run.k,
        "fold_sizes": sizes.tolist(),
        "n_images": len(run.imageset),
        "seeds": n_seeds,
        "generator": {
            "mode": "per_fold" if cfg.gan_per_fold else "shared",
            "network": cfg.network,
            "network_sha256": _sha256(cfg.network),
            "gan_kimg": cfg.gan_kimg if cfg.gan_per_fold else None,
            # A shared network trained on all images has seen every held-out image.
            "may_leak": not cfg.gan_per_fold,
            "gan_base": cfg.gan_base,
            "gan_pool": cfg.gan_pool,
            "gan_judges": list(cfg.gan_judges),
            "folds": fold_gan_records(run.out, run.k) if cfg.gan_per_fold else None,
        },
        "cv": {
            "statistics": {
                "accuracy": ablation_statistics(acc, n_train, n_test, correct, REFERENCE_ARM),
                "balanced_accuracy": ablation_statistics(bal, n_train, n_test, None, REFERENCE_ARM),
            },
            "oof": oof_metrics,
            "folds": fold_rows,
        },
        "test": None,
    }
    for arm in run.arms:  # pooled balanced accuracy of the out-of-fold (ensemble) predictions
        results["cv"]["statistics"]["balanced_accuracy"]["arms"][arm.name]["pooled"] = oof_metrics[arm.name]["balanced_accuracy"]
        results["cv"]["statistics"]["accuracy"]["arms"][arm.name]["seed_sd"] = seed_sd[arm.name]
    results["cv"]["matched"] = matched_statistics(run.arms, acc, bal, correct, n_train, n_test, oof_metrics)
    results["cv"]["rare_cells"] = rare_cell_statistics(run, correct)
    results["epoch_selection"] = {
        "mode": cfg.epoch_selection, "inner_val": cfg.inner_val if cfg.epoch_selection == "inner" else None,
        "epochs": cfg.train.epochs,
        # 0-based best epoch of every (fold, seed) classifier per arm: near the last epoch means
        # the classifiers were still improving (not converged)
        "best_epochs": {arm: [e for row in rows for e in row["best_epoch"]] for arm, rows in fold_rows.items()},
    }
    for part in (oof_metrics, t_metrics):
        _cell_intervals(part)
    if run.test is not None:
        results["test"] = {
            "n_images": len(run.test_set),
            "ensemble": t_metrics,
            "statistics": {
                "accuracy": ablation_statistics(t_acc, None, None, t_correct, REFERENCE_ARM),
                "balanced_accuracy": ablation_statistics(t_bal, None, None, None, REFERENCE_ARM),
            },
            "matched": matched_statistics(run.arms, t_acc, t_bal, t_correct, None, None, t_metrics),
        }
        for arm in run.arms:
            results["test"]["statistics"]["balanced_accuracy"]["arms"][arm.name]["pooled"] = t_metrics[arm.name]["balanced_accuracy"]
    return results
