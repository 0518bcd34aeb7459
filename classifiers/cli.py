"""``synth classify``: train, cross-validate, evaluate and explain image classifiers.

Every command writes into ``--out DIR``: ``options.json`` (the exact options), metrics as
JSON/CSV, figures, and model checkpoints where it trains.  Errors in the input are reported
in one line with a non-zero exit status; nothing is half-written.  ``train`` and ``cv``
refuse a non-empty ``--out`` unless ``--force``, which first removes their earlier results;
both check every input first, so a failed run leaves ``--out`` as it was.

The options and their typed values live in :mod:`classifiers.cli_options`.  Modules that
import torch are imported inside the commands, so ``--help`` stays fast.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from pathlib import Path
from typing import Any, Mapping

import click
import numpy as np
from click.core import ParameterSource

from classifiers import metrics, reports
from classifiers.cli_options import (
    CVArgs,
    EvaluateArgs,
    PatchesArgs,
    PermutationTestArgs,
    SaliencyArgs,
    TrainArgs,
    ValidationArgs,
    cells_option,
    ensemble_options,
    existing_dir_or_zip,
    existing_file,
    existing_folder,
    force_option,
    from_params,
    out_option,
    runtime_options,
    training_options,
    tta_option,
    validation_options,
)
from synth.cli_errors import one_line_errors
from synth.data.dataset import open_dataset
from synth.utils.cli_types import SEED
from synth.utils.io import atomic_save, atomic_write_text, check_out_dir, prepare_out_dir

__all__ = ["classify"]


# ----------------------------------------------------------------------------------------
# helpers


def _write_options(out: Path, command: str, options: Mapping[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    doc = {"command": f"synth classify {command}", "argv": sys.argv[1:], "options": clean}
    atomic_write_text(out / "options.json", json.dumps(doc, indent=2, default=str) + "\n")


def _report_files(prefix: str = "") -> list[str]:
    """Names :func:`classifiers.reports.write_report` writes."""
    return [f"{prefix}{n}" for n in ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png", "per_cell.csv")]


_MODEL_FILES = ("model.safetensors", "model.json", "log.jsonl")
_FOLD_DIRS = ("fold[0-9]", "fold[0-9][0-9]")
# What `classify train` and `classify cv` write (globs relative to --out).  --force removes
# both sets: checkpoint discovery prefers a top-level model.safetensors over fold*/ ones, so
# a folder holding both would evaluate the wrong models.
TRAIN_CV_OUTPUTS = (
    "options.json", *_MODEL_FILES, *_report_files(), *_report_files("val_"),
    "folds.csv", "oof_predictions.csv", "cv_result.json", *_report_files("oof_"),
    "summary.json", "summary.csv", "per_class_summary.csv", "per_cell_summary.csv",
    *[f"{d}/{n}" for d in _FOLD_DIRS for n in (*_MODEL_FILES, *_report_files())],
)


def _check_out(out: Path, force: bool) -> Path:
    """Refuse a non-empty --out without --force; changes nothing (see :func:`_prepare_out`)."""
    from classifiers.data import ClassifierDataError

    return check_out_dir(out, force, error=ClassifierDataError)


def _prepare_out(out: Path, force: bool) -> Path:
    """Refuse a non-empty --out without --force; with it, remove earlier train/cv results."""
    from classifiers.data import ClassifierDataError

    return prepare_out_dir(out, force, TRAIN_CV_OUTPUTS, error=ClassifierDataError)


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


CPU_RECIPE = "--model small_cnn --size 32 --epochs 15 --batch 32 --lr 0.003 --optimizer adamw --weight-decay 0.01"


def _preflight(cfg, ctx: click.Context | None = None) -> None:
    """Cheap checks that must fail before any image is decoded.

    An unknown --model is a bad option value (usage error, exit 2).  With ``ctx``: when the
    run would use the CPU and none of --model, --size, --epochs was given, warn (one line on
    stderr) that the study's defaults take hours there, naming the measured CPU recipe."""
    from classifiers.models import ModelError, check_model_name, resolve_pretrained
    from classifiers.train import resolve_device

    try:
        check_model_name(cfg.model)
    except ModelError as e:
        raise click.UsageError(str(e).splitlines()[0]) from None
    resolve_pretrained(cfg.model, cfg.pretrained)
    device = resolve_device(cfg.device)
    if ctx is not None and device.type == "cpu" and not _given(ctx, "model", "size", "epochs"):
        click.echo(f"warning: training on the CPU: the defaults ({cfg.model}, {cfg.size} px, {cfg.epochs} epochs) take "
                   f"hours there; the CPU recipe is {CPU_RECIPE}", err=True)


def _given(ctx: click.Context, *names: str) -> bool:
    """Whether any of the options ``names`` was set by the user (command line or environment)."""
    return any(ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT) for n in names)


def _validation_split(imageset, v: ValidationArgs):
    """(training images, validation images or None) of --val-data / --val-fold."""
    from classifiers.cv import resolve_folds

    if v.val_data is not None:
        return imageset, open_dataset(v.val_data)
    if v.val_fold is not None:
        folds = resolve_folds(imageset, v.folds_csv, v.k, v.fold_seed)
        if not 0 <= v.val_fold <= folds.max():
            raise click.UsageError(f"--val-fold {v.val_fold}: folds are 0..{folds.max()}")
        train, val = np.flatnonzero(folds != v.val_fold), np.flatnonzero(folds == v.val_fold)
        if len(train) == 0 or len(val) == 0:
            where = f"--folds-csv {v.folds_csv}" if v.folds_csv is not None else "the folds"
            raise click.UsageError(f"--val-fold {v.val_fold}: {where} leave no {'training' if len(train) == 0 else 'validation'} "
                                   "images; use a fold that holds some images but not all")
        return imageset.subset(train), imageset.subset(val)
    return imageset, None


def _factor_list(spec: str | None, imageset) -> list[str]:
    """Factors named in a comma-separated option (default: all of the space), each checked."""
    names = [s.strip() for s in spec.split(",")] if spec else list(imageset.space.names)
    for n in names:
        imageset.space.factor(n)  # an unknown factor fails before anything is written
    return names


def _fmt(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _print_cell_table(rows: list[dict], cell_names: list[str]) -> None:
    click.echo("per-cell accuracy (%): " + " / ".join(cell_names))
    for r in rows:
        if not r["n"]:
            continue  # empty cells stay in the CSV files, not on screen
        acc = r["accuracy"]
        if isinstance(acc, dict):
            sd = acc.get("sd")
            txt = f"{_fmt(acc.get('mean'))}" + (f" +- {_fmt(sd)}" if sd is not None else "")
        else:
            txt = _fmt(acc)
        click.echo(f"  {' / '.join(r['cell']):<32} n={r['n']:<5} {txt}")


def _load_images_for(imageset, sizes) -> dict:
    from classifiers.data import load_images

    return {s: load_images(imageset, s, progress=True) for s in sorted(set(sizes))}


def _eval_targets(imageset, meta):
    """Targets of ``imageset`` over the checkpoint's classes (None when it lacks the factors)."""
    from classifiers.data import Target, encode_targets

    target = Target(tuple(meta["target"]["factors"]), tuple(meta["class_names"]))
    if not all(f in imageset.space.names for f in target.factors):
        return None, target
    return encode_targets(imageset, target), target


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------


@click.group("classify", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def classify() -> None:
    """Image classifiers (timm EfficientNet and others): train, cross-validate, evaluate, explain.

    \b
      synth classify cv --data DIR --target disease --out runs/cv     5-fold CV, mean +- SD, per-cell table
      synth classify evaluate --models runs/cv --data TEST --out ...  gated ensemble on a test set
      synth classify saliency --models runs/cv --data TEST --out ...  occlusion / IG maps, composites
    """


@classify.command("train")
@training_options
@validation_options("Separate validation set (best epoch chosen on it).",
                    "Validate on this fold of --data (see --folds-csv / --folds).")
@out_option()
@force_option
@one_line_errors
def train_cmd(**params) -> None:
    """Train one classifier (best epoch by validation balanced accuracy when validation is given)."""
    from classifiers.data import encode_images, parse_aux
    from classifiers.prepare import prepare_classes, prepare_target
    from classifiers.train import train_classifier

    a = from_params(TrainArgs, params)
    t, v = a.training, a.validation
    _set_threads(t.threads)
    cfg = t.train_config()
    if v.val_data is not None and v.val_fold is not None:
        raise click.UsageError("give either --val-data or --val-fold, not both")
    if v.folds_csv is not None and v.val_fold is None:
        raise click.UsageError("--folds-csv needs --val-fold")
    _preflight(cfg, click.get_current_context())
    _check_out(a.out, a.force)  # refuse before any slow work; nothing is written until all checks pass
    aux = [parse_aux(s) for s in t.aux]
    imageset = open_dataset(t.data)
    target, aux_sets = prepare_target(imageset, t.target, aux)
    train_set, val_set = _validation_split(imageset, v)

    train = encode_images(train_set, target, cfg.size, t.own_weight, progress=cfg.progress)
    aux_data = [encode_images(ds, target, cfg.size, s.weight, f, source=f"aux:{Path(s.path).name}") for ds, s, f in aux_sets]
    val = encode_images(val_set, target, cfg.size) if val_set is not None else None
    data = prepare_classes(target, train, aux=aux_data, held_out=[val], class_weight=cfg.class_weight, target_name=t.target)
    target, train_all, val = data.target, data.train_images(), data.held_out[0]
    out = _prepare_out(a.out, a.force)  # the first write: every input has been checked
    _write_options(out, "train", params)
    res = train_classifier(
        train_all, val, target, cfg, out_dir=out, class_weight=data.class_weight,
        meta_extra={"condition_space": imageset.space.to_dict(), "data": str(t.data)},
    )
    click.echo(f"classes: {', '.join(target.class_names)}")
    click.echo(f"trained {len(res.history)} epoch(s); best epoch {res.best_epoch}; checkpoint {res.checkpoint}")
    if val is not None and res.val_probs is not None:
        cell_factors = list(val_set.space.names)
        m = metrics.evaluate(
            res.val_probs, val.targets, target.class_names,
            cells=[val_set.cell_of(i, cell_factors) for i in range(len(val_set))], cell_names=cell_factors,
            cell_order=val_set.space.cells(cell_factors),
        )
        reports.write_report(out, m, target.class_names, prefix="val_")
        click.echo(f"validation: accuracy {_fmt(m['accuracy'])}%, balanced accuracy {_fmt(m['balanced_accuracy'])}%")


@classify.command("cv")
@training_options
@click.option("--folds", "k", default=5, show_default=True, type=int, help="Number of folds (grouped by subject, stratified by cell).")
@click.option("--folds-csv", type=click.Path(path_type=Path), callback=existing_file, default=None,
              help="Use this folds.csv instead of making folds.")
@click.option("--fold-seed", default=0, show_default=True, type=int, help="Seed of the grouped, stratified folds.")
@click.option("--extra", type=click.Path(path_type=Path), callback=existing_dir_or_zip, default=None,
              help="Extra (synthetic) labelled images added to training folds only; rows with a 'fold' column skip that fold.")
@click.option("--extra-weight", default=1.0, show_default=True, type=float, help="Per-image loss weight of --extra images.")
@cells_option
@tta_option("Test-time augmentation for out-of-fold predictions.")
@click.option("--keep-empty", is_flag=True, help="Keep classes that no image carries (default: drop them).")
@out_option()
@force_option
@one_line_errors
def cv_cmd(**params) -> None:
    """k-fold cross-validation: one model per fold, out-of-fold predictions, mean +- SD, per-cell table."""
    from classifiers.cv import CVConfig, run_cv
    from classifiers.data import parse_aux

    a = from_params(CVArgs, params)
    t = a.training
    _set_threads(t.threads)
    cfg = t.train_config()
    _preflight(cfg, click.get_current_context())
    _check_out(a.out, a.force)  # refuse before any slow work
    aux = [parse_aux(s) for s in t.aux]
    imageset = open_dataset(t.data)
    extra = open_dataset(a.extra) if a.extra is not None else None
    cells = _factor_list(a.cell_factors, imageset) if a.cell_factors else None
    cvc = CVConfig(
        train=cfg, target=t.target, k=a.k, fold_seed=a.fold_seed, cell_factors=cells, aux=aux,
        own_weight=t.own_weight, extra_weight=a.extra_weight, tta=a.tta, drop_empty=not a.keep_empty,
    )

    def start() -> None:  # run_cv calls it once folds, classes and images have passed every check
        _prepare_out(a.out, a.force)
        _write_options(a.out, "cv", params)

    res = run_cv(imageset, cvc, folds=a.folds_csv, out_dir=a.out, extra_train=extra, before_write=start)
    k = len(res.fold_metrics)
    click.echo(f"classes: {', '.join(res.class_names)}; {len(res.folds)} images in {k} folds")
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        mean, sd = res.mean_sd(name)
        click.echo(f"{name}: {_fmt(mean)} +- {_fmt(sd)} % (mean +- SD over {k} folds)")
    if "per_cell" in res.summary:
        _print_cell_table(res.summary["per_cell"], res.summary.get("cell_names") or [])
    click.echo(f"results in {a.out}")


@classify.command("evaluate")
@ensemble_options("Checkpoint file, training folder or cv folder (fold*/model.safetensors). Repeatable.",
                  "Labelled test images.")
@click.option("--gate", default=0.5, show_default=True, type=float,
              help="Average only models whose max probability reaches this (per image); all if none does.")
@tta_option("flip: average with the horizontal mirror (faces); dihedral: 8 flips/rotations (skin, patches).")
@cells_option
@click.option("--batch", default=64, show_default=True, type=int, help="Images per forward pass.")
@runtime_options
@out_option("Output folder: predictions.csv, evaluate.json, metrics and confusion matrix.")
@one_line_errors
def evaluate_cmd(**params) -> None:
    """Gated ensemble predictions (CSV) and metrics on a labelled image set."""
    from classifiers.ensemble import Ensemble
    from classifiers.train import resolve_device

    a = from_params(EvaluateArgs, params)
    _set_threads(a.runtime.threads)
    if not 0.0 <= a.gate <= 1.0:
        raise click.BadParameter("must be between 0 and 1", param_hint="--gate")
    ens = Ensemble.load(list(a.ensemble.models), resolve_device(a.runtime.device))
    imageset = open_dataset(a.ensemble.data)
    targets, target = _eval_targets(imageset, ens.metas[0])
    cell_factors = _factor_list(a.cell_factors, imageset)
    res = ens.predict(_load_images_for(imageset, ens.sizes), gate=a.gate, tta=a.tta, batch=a.batch)
    _write_options(a.out, "evaluate", params)  # after the images loaded: a corrupt one leaves no output
    names = ens.class_names
    pred = res.probs.argmax(1)
    rows = []
    for i, rec in enumerate(imageset.records):
        true = names[int(targets[i].argmax())] if targets is not None else ""
        ok = "" if targets is None else int(true == names[pred[i]])
        rows.append([rec.file, true, names[pred[i]], ok, int(res.n_models_used[i]), int(res.fallback[i])]
                    + [f"{p:.6f}" for p in res.probs[i]])
    header = ["file", "true", "pred", "correct", "models_used", "gate_fallback", *[f"p_{c}" for c in names]]
    atomic_write_text(a.out / "predictions.csv", _csv(header, rows))
    info = {"n": len(imageset), "models": [m["path"] for m in ens.metas], "gate": a.gate, "tta": a.tta,
            "gate_fallback_count": res.n_fallback}
    click.echo(f"{len(ens.models)} model(s), {len(imageset)} images; no model passed the gate for {res.n_fallback} image(s)")
    if targets is not None:
        m = metrics.evaluate(
            res.probs, targets, names, cells=[imageset.cell_of(i, cell_factors) for i in range(len(imageset))],
            cell_names=cell_factors, cell_order=imageset.space.cells(cell_factors),
        )
        m["gate_fallback_count"] = res.n_fallback
        reports.write_report(a.out, m, names)
        info.update(accuracy=m["accuracy"], balanced_accuracy=m["balanced_accuracy"])
        click.echo(f"accuracy {_fmt(m['accuracy'])}%, balanced accuracy {_fmt(m['balanced_accuracy'])}%")
        _print_cell_table(m["per_cell"], cell_factors)
    else:
        click.echo(f"no {', '.join(target.factors)} labels in {a.ensemble.data}: predictions only")
    atomic_write_text(a.out / "evaluate.json", json.dumps(info, indent=2) + "\n")


@classify.command("saliency")
@ensemble_options("Checkpoint(s), training or cv folder. Repeatable.", "Labelled images to explain.")
@click.option("--method", type=click.Choice(["occlusion", "ig"]), default="occlusion", show_default=True,
              help="occlusion (face study: window 20, stride 10) or Integrated Gradients (skin study).")
@click.option("--window", default=20, show_default=True, type=int, help="Occlusion window in pixels.")
@click.option("--stride", default=10, show_default=True, type=int, help="Occlusion stride in pixels.")
@click.option("--steps", default=32, show_default=True, type=int, help="Integrated Gradients steps.")
@click.option("--group", "group_factors", default=None,
              help="Factors whose cells get composite (mean) maps, e.g. disease,age (default: all).")
@click.option("--limit", default=None, type=int, help="Explain only the first N images.")
@click.option("--no-overlays", is_flag=True, help="Skip the per-image overlay PNGs.")
@runtime_options
@out_option("Output folder: maps.npz, composites.png and overlays/.")
@one_line_errors
def saliency_cmd(**params) -> None:
    """Saliency maps toward the true label, averaged over the ensemble, with group composites."""
    from classifiers import attribution
    from classifiers.ensemble import Ensemble, normalise
    from classifiers.train import resolve_device

    a = from_params(SaliencyArgs, params)
    _set_threads(a.runtime.threads)
    device = resolve_device(a.runtime.device)
    ens = Ensemble.load(list(a.ensemble.models), device)
    norms = {(m["size"], tuple(m["normalisation"]["mean"]), tuple(m["normalisation"]["std"])) for m in ens.metas}
    if len(norms) != 1:
        raise click.ClickException("--models: saliency needs models with the same input size and normalisation")
    size, mean, std = norms.pop()
    imageset = open_dataset(a.ensemble.data)
    if a.limit:
        imageset = imageset.subset(range(min(a.limit, len(imageset))))
    targets, target = _eval_targets(imageset, ens.metas[0])
    if targets is None:
        raise click.ClickException(f"{a.ensemble.data}: no {', '.join(target.factors)} labels; saliency targets the true label")
    group_factors = _factor_list(a.group_factors, imageset)
    raw = _load_images_for(imageset, [size])[size]
    x = normalise(raw, mean, std).to(device)
    y = targets.argmax(1)
    if a.method == "occlusion":
        maps = attribution.occlusion_saliency(ens.models, x, y, window=a.window, stride=a.stride, progress=True)
    else:
        maps = attribution.integrated_gradients(ens.models, x, y, steps=a.steps)
    cells = [imageset.cell_of(i, group_factors) for i in range(len(imageset))]
    files = np.array([r.file for r in imageset.records], dtype=str)
    arrays = {"maps": maps.astype(np.float32), "files": files, "targets": np.array([ens.class_names[i] for i in y], dtype=str)}
    for f in imageset.space.names:
        arrays[f"factor_{f}"] = np.array([r.labels[f] for r in imageset.records], dtype=str)

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    _write_options(a.out, "saliency", params)  # the first write: images loaded, maps computed
    atomic_save(a.out / "maps.npz", _save)
    if not a.no_overlays:
        imgs = raw.permute(0, 2, 3, 1).numpy()
        attribution.save_overlays(a.out / "overlays", imgs, maps, [Path(f).stem for f in files])
    order = imageset.space.cells(group_factors)
    attribution.composite_maps(maps, cells, order=order, png_path=a.out / "composites.png")
    click.echo(f"{len(maps)} {a.method} maps from {len(ens.models)} model(s) -> {a.out / 'maps.npz'}, composites.png")


@classify.command("permutation-test")
@click.option("--saliency", "saliency_dir", required=True, type=click.Path(path_type=Path), callback=existing_folder, metavar="DIRECTORY",
              help="Output folder of `synth classify saliency` (maps.npz).")
@click.option("--group", "group_factor", default="age", show_default=True, help="Factor whose levels are compared pairwise.")
@click.option("--within", "within_factor", default="disease", show_default=True,
              help="Run one matrix per level of this factor ('' for all images together).")
@click.option("--n-perm", default=1000, show_default=True, type=int, help="Permutations per pair (study: 100-1000).")
@click.option("--embedder", type=click.Choice(["backbone", "random"]), default="backbone", show_default=True,
              help="backbone: timm network features (the study: ImageNet EfficientNet-B4); random: fixed random projection.")
@click.option("--embed-model", default="efficientnet_b4", show_default=True,
              help="timm backbone that embeds the maps for --embedder backbone.")
@click.option("--embed-weights", type=click.Path(path_type=Path), callback=existing_file, default=None, metavar="FILE",
              help="Local weights for --embed-model (without them the backbone keeps a seeded random init).")
@click.option("--min-maps", default=2, show_default=True, type=int, help="Skip groups with fewer maps.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the permutations and of a random embedder.")
@out_option("Output folder: permutation_tests.json and p-value matrices.")
@one_line_errors
def permutation_test_cmd(**params) -> None:
    """Pairwise permutation tests between groups of saliency maps (e.g. age groups of one disease)."""
    from classifiers import permutation

    a = from_params(PermutationTestArgs, params)
    path = a.saliency_dir / "maps.npz"
    if not path.is_file():
        raise click.ClickException(f"{path}: not found; run `synth classify saliency` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise click.ClickException(f"{path}: cannot read saliency maps ({type(e).__name__})") from None
    maps = data["maps"]
    gkey = f"factor_{a.group_factor}"
    if gkey not in data:
        have = [k[7:] for k in data if k.startswith("factor_")]
        raise click.ClickException(f"--group {a.group_factor}: not a factor of the maps (factors: {', '.join(have)})")
    within = a.within_factor or ""
    if within and f"factor_{within}" not in data:
        raise click.ClickException(f"--within {within}: not a factor of the maps")
    if a.embedder == "random":
        embed = permutation.random_projection_embedder(maps.shape[1:], seed=a.seed)
    else:
        embed = permutation.backbone_embedder(a.embed_model, pretrained=a.embed_weights or False, seed=a.seed)
    _write_options(a.out, "permutation-test", params)  # after the embedder (model, weights) loaded
    levels_within = list(dict.fromkeys(data[f"factor_{within}"].tolist())) if within else [""]
    report = {}
    for lv in levels_within:
        sel = np.ones(len(maps), bool) if not lv else data[f"factor_{within}"] == lv
        groups = {}
        for g in dict.fromkeys(data[gkey][sel].tolist()):
            m = maps[sel & (data[gkey] == g)]
            if len(m) >= a.min_maps:
                groups[g] = m
        if len(groups) < 2:
            click.echo(f"{within}={lv}: fewer than two groups with >= {a.min_maps} maps, skipped")
            continue
        names, p, st = permutation.permutation_test_matrix(groups, embed, n_perm=a.n_perm, seed=a.seed, progress=True)
        prefix = f"{lv}_" if lv else ""
        permutation.write_permutation_outputs(a.out, names, p, st, prefix=prefix, title=f"{within} = {lv}" if lv else None)
        report[lv or "all"] = {"groups": names, "p": p.tolist(), "statistic": st.tolist(),
                               "n": {g: int(len(v)) for g, v in groups.items()}}
        click.echo(f"{within + '=' + lv if lv else 'all'}: {len(names)} groups, min p = {p[~np.eye(len(names), dtype=bool)].min():.3g}")
    atomic_write_text(a.out / "permutation_tests.json", json.dumps(report, indent=2) + "\n")


@classify.command("patches")
@training_options
@click.option("--patch", default=64, show_default=True, type=int, help="Patch side in pixels (non-overlapping tiles).")
@click.option("--resolution", default=None, type=int, help="Resize images to this square size before cutting (default: native).")
@validation_options("Separate validation images.", "Validate on this fold of --data.")
@click.option("--map-class", default=None, help="Class drawn in the probability maps (default: the control level or the first class).")
@click.option("--maps", "n_maps", default=8, show_default=True, type=int, help="Probability maps for the first N validation images.")
@out_option("Output folder: model, patch_/image_ metrics, image_predictions.csv, maps/.")
@click.pass_context
@one_line_errors
def patches_cmd(ctx, **params) -> None:
    """Patch mode: train on image tiles (8 dihedral symmetries), diagnose images by majority vote.

    Validation images are diagnosed by majority vote over their patches (each averaged
    over the 8 symmetries); per-patch probabilities are drawn in five colour bands.
    """
    from classifiers.data import AugConfig, parse_target
    from classifiers.ensemble import predict_probs
    from classifiers.patch_mode import diagnose_images, patch_set
    from classifiers.patches import probability_map_png
    from classifiers.prepare import prepare_classes
    from classifiers.train import train_classifier

    a = from_params(PatchesArgs, params)
    t, v = a.training, a.validation
    _set_threads(t.threads)
    if ctx.get_parameter_source("size") != ParameterSource.DEFAULT and t.size != a.patch:
        raise click.UsageError("--size: patch mode trains at the patch size; set --patch instead")
    aug = "skin" if ctx.get_parameter_source("aug") == ParameterSource.DEFAULT else t.aug
    cfg = dataclasses.replace(t.train_config(), size=a.patch, aug=AugConfig(kind=aug))
    _preflight(cfg)
    if t.aux:
        raise click.UsageError("--aux is not supported in patch mode")
    if v.val_data is not None and v.val_fold is not None:
        raise click.UsageError("give either --val-data or --val-fold, not both")
    imageset = open_dataset(t.data)
    target = parse_target(t.target, imageset.space)
    train_set, val_set = _validation_split(imageset, v)
    tr = patch_set(train_set, target, a.patch, t.own_weight, a.resolution)
    va = patch_set(val_set, target, a.patch, 1.0, a.resolution) if val_set is not None else None
    data = prepare_classes(target, tr.data, held_out=[va.data if va else None], class_weight=cfg.class_weight,
                           target_name=t.target)
    target, tr.data = data.target, data.own
    if va is not None:
        va.data = data.held_out[0]
    names = list(target.class_names)
    map_class = a.map_class
    if map_class is None:
        f0 = imageset.space.factor(target.factors[0])
        map_class = f0.control if len(target.factors) == 1 and f0.control in names else names[0]
    if map_class not in names:  # checked before training: a class the data does not have
        raise click.ClickException(f"--map-class {map_class!r}: not a class ({', '.join(names)})")
    _write_options(a.out, "patches", params)  # the first write: every input has been checked
    res = train_classifier(tr.data, va.data if va else None, target, cfg, out_dir=a.out, class_weight=data.class_weight,
                           meta_extra={"condition_space": imageset.space.to_dict(), "patch": a.patch,
                                       "resolution": a.resolution, "mode": "patches"})
    click.echo(f"{len(tr.data)} training patches of {len(train_set)} images; best epoch {res.best_epoch}; {res.checkpoint}")
    if va is None:
        return
    norm = res.meta["normalisation"]
    probs = predict_probs(res.model, va.data.images, norm["mean"], norm["std"], cfg.eval_batch,
                          next(res.model.parameters()).device, tta="dihedral")
    pm = metrics.evaluate(probs, va.data.targets, names)
    reports.write_report(a.out, pm, names, prefix="patch_")
    img_cls, frac, mean = diagnose_images(probs, va.owner, len(val_set))
    img_targets = np.stack([va.data.targets[va.owner == i][0] for i in range(len(val_set))])
    vote = np.eye(len(names), dtype=np.float32)[img_cls]  # majority vote as a one-hot "probability"
    im = metrics.evaluate(vote, img_targets, names)
    reports.write_report(a.out, im, names, prefix="image_")
    rows = [[rec.file, names[int(img_targets[i].argmax())], names[img_cls[i]], f"{frac[i]:.4f}",
             int((va.owner == i).sum()), *[f"{p:.6f}" for p in mean[i]]] for i, rec in enumerate(val_set.records)]
    header = ["file", "true", "pred", "vote_fraction", "patches", *[f"mean_p_{c}" for c in names]]
    atomic_write_text(a.out / "image_predictions.csv", _csv(header, rows))
    c = names.index(map_class)
    for i in range(min(a.n_maps, len(val_set))):
        rows_, cols = va.grids[i]
        grid = probs[va.owner == i, c].reshape(rows_, cols)
        img = val_set.load_image(i)
        if a.resolution:
            img = img.resize((a.resolution, a.resolution))
        probability_map_png(a.out / "maps" / f"{Path(val_set[i].file).stem}.png", np.clip(grid, 0, 1), image=img,
                            class_name=map_class, patch_size=a.patch)
    click.echo(f"patch accuracy {_fmt(pm['accuracy'])}%, image accuracy (majority vote) {_fmt(im['accuracy'])}%")
