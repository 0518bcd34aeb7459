"""``synth classify``: train, cross-validate, evaluate and explain image classifiers.

Every command writes into ``--out DIR``: ``options.json`` (the exact options), metrics as
JSON/CSV, figures, and model checkpoints where it trains.  Errors in the input are reported
in one line with a non-zero exit status; nothing is half-written.  ``train`` and ``cv``
refuse a non-empty ``--out`` unless ``--force``, which first removes their earlier results;
both check every input first, so a failed run leaves ``--out`` as it was.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from synth.cli_errors import one_line_errors
from synth.utils.cli_types import DEVICE_OR_AUTO, SEED

__all__ = ["classify"]


# ----------------------------------------------------------------------------------------
# helpers




def _write_options(out: Path, command: str, options: dict[str, Any]) -> None:
    from synth.utils.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    clean = {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in options.items()}
    doc = {"command": f"synth classify {command}", "argv": sys.argv[1:], "options": clean}
    atomic_write_text(out / "options.json", json.dumps(doc, indent=2, default=str) + "\n")


def _report_files(prefix: str = "") -> list[str]:
    """Names :func:`classifiers.metrics.write_report` writes."""
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
    from synth.utils.io import check_out_dir

    return check_out_dir(out, force, error=ClassifierDataError)


def _prepare_out(out: Path, force: bool) -> Path:
    """Refuse a non-empty --out without --force; with it, remove earlier train/cv results."""
    from classifiers.data import ClassifierDataError
    from synth.utils.io import prepare_out_dir

    return prepare_out_dir(out, force, TRAIN_CV_OUTPUTS, error=ClassifierDataError)


_FORCE_HELP = "Write into a non-empty --out folder, first removing the results of an earlier train or cv there."


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _existing(kind: str | None = None):
    """Callback: the path must exist (``kind`` "file" or "folder": and be one).

    A missing or wrong path is a problem with a file the options name, so it is a one-line
    ``Error: --opt PATH: ...`` with exit status 1 (click's own ``exists=True`` would make it
    a usage error, status 2); see the exit-status rule in docs/cli.md."""

    def check(ctx, param, value):
        if value is None:
            return value
        opt = param.opts[0] if getattr(param, "opts", None) else param.name.upper()
        p = Path(value)
        if not p.exists():
            raise click.ClickException(f"{opt} {p}: not found")
        if kind == "file" and p.is_dir():
            raise click.ClickException(f"{opt} {p}: is a folder, expected a file")
        if kind == "folder" and not p.is_dir():
            raise click.ClickException(f"{opt} {p}: is not a folder")
        return p

    return check


_existing_dir_or_zip = _existing()
_existing_file = _existing("file")
_existing_folder = _existing("folder")


def _pretrained_value(pretrained: str | None, no_pretrained: bool) -> bool | str:
    if no_pretrained or pretrained in (None, ""):
        return False
    if pretrained == "default":
        return True
    return pretrained


def training_options(fn: Callable) -> Callable:
    """Options shared by ``train`` and ``cv`` (defaults follow the face study)."""
    opts = [
        click.option("--data", "data", required=True, callback=_existing_dir_or_zip, metavar="DIR|ZIP",
                     help="Dataset folder (labels.csv [+ conditions.yaml] or dataset.json) or a .zip of one."),
        click.option("--target", default="disease", show_default=True,
                     help="Factor to classify, or several joined into one class per cell (disease,age)."),
        click.option("--model", default="efficientnet_b4", show_default=True,
                     help="Any timm model name; small_cnn (or small_cnn_s) trains well from scratch on a CPU."),
        click.option("--size", default=448, show_default=True, type=int, help="Square input size in pixels."),
        click.option("--epochs", default=30, show_default=True, type=int, help="Training epochs (per fold in cv)."),
        click.option("--batch", default=64, show_default=True, type=int, help="Images per training step."),
        click.option("--lr", default=None, type=float,
                     help="Peak learning rate after warm-up [default: 3e-5 with --pretrained (the study), 1e-3 from random init]."),
        click.option("--weight-decay", default=0.0, show_default=True, type=float, help="Optimiser weight decay."),
        click.option("--optimizer", type=click.Choice(["adam", "adamw"]), default="adam", show_default=True,
                     help="adam (the study) or adamw (decoupled weight decay)."),
        click.option("--warmup", default=1.0, show_default=True, type=float, help="Warm-up length in epochs, then cosine decay."),
        click.option("--patience", default=0, show_default=True, type=int,
                     help="Stop after this many epochs without a better validation balanced accuracy (0: never)."),
        click.option("--class-weight", default=None,
                     help="'auto' (inverse frequency) or NAME=W[,NAME=W] (e.g. syndrome_a=10,unaffected=1)."),
        click.option("--aux", multiple=True, metavar="DIR[:WEIGHT[:FACTOR]]",
                     help="Auxiliary labelled set trained jointly; WEIGHT is its per-image loss weight; its classes are "
                          "matched by name or appended. Repeatable."),
        click.option("--own-weight", default=1.0, show_default=True, type=float,
                     help="Per-image loss weight of --data images (e.g. 5 or 10 against an auxiliary set)."),
        click.option("--aug", type=click.Choice(["faces", "skin", "none"]), default="faces", show_default=True,
                     help="faces: light crop/rotation/colour, horizontal flips only; skin: all dihedral flips/rotations."),
        click.option("--drop-rate", default=0.0, show_default=True, type=float, help="Dropout before the classifier head."),
        click.option("--pretrained", "pretrained", default=None, is_flag=False, flag_value="default", metavar="[PATH]",
                     help="Start from ImageNet weights: bare --pretrained = timm's default weights from the local cache "
                          "(nothing is downloaded); or a .safetensors/.pth file. Default: random initialisation."),
        click.option("--no-pretrained", is_flag=True, help="Random initialisation (the default; overrides --pretrained)."),
        click.option("--seed", default=0, show_default=True, type=SEED,
                     help="Seed of initialisation, augmentation and batch order (fold k of cv uses seed + k)."),
        click.option("--device", type=DEVICE_OR_AUTO, default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ..."),
        click.option("--workers", default=0, show_default=True, type=int, help="DataLoader worker processes."),
        click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice)."),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _train_config(o: dict):
    from classifiers.data import AugConfig
    from classifiers.train import TrainConfig

    pretrained = _pretrained_value(o["pretrained"], o["no_pretrained"])
    lr = o["lr"] if o["lr"] is not None else (3e-5 if pretrained else 1e-3)
    return TrainConfig(
        model=o["model"], size=o["size"], pretrained=pretrained,
        epochs=o["epochs"], batch=o["batch"], lr=lr, weight_decay=o["weight_decay"], optimizer=o["optimizer"],
        warmup=o["warmup"], patience=o["patience"], class_weight=o["class_weight"], aug=AugConfig(kind=o["aug"]),
        drop_rate=o["drop_rate"], seed=o["seed"], device=o["device"], num_workers=o["workers"],
        progress=not o["no_progress"],
    )


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
    from click.core import ParameterSource

    return any(ctx.get_parameter_source(n) not in (None, ParameterSource.DEFAULT) for n in names)


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
@click.option("--val-data", type=click.Path(path_type=Path), callback=_existing_dir_or_zip, default=None,
              help="Separate validation set (best epoch chosen on it).")
@click.option("--val-fold", type=int, default=None, help="Validate on this fold of --data (see --folds-csv / --folds).")
@click.option("--folds-csv", type=click.Path(path_type=Path), callback=_existing_file, default=None,
              help="folds.csv (file,fold) for --val-fold.")
@click.option("--folds", "k", default=5, show_default=True, type=int, help="Fold count when --val-fold makes folds.")
@click.option("--fold-seed", default=0, show_default=True, type=int, help="Seed of the folds --val-fold makes.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@one_line_errors
def train_cmd(**o) -> None:
    """Train one classifier (best epoch by validation balanced accuracy when validation is given)."""
    import numpy as np

    from classifiers import metrics
    from classifiers.cv import check_fold_classes, prepare_target, resolve_folds
    from classifiers.data import LabelledImages, drop_empty_classes, encode_images, parse_aux, parse_class_weight
    from classifiers.train import train_classifier
    from synth.data.dataset import open_dataset

    _set_threads(o["threads"])
    cfg = _train_config(o)
    if o["val_data"] is not None and o["val_fold"] is not None:
        raise click.UsageError("give either --val-data or --val-fold, not both")
    if o["folds_csv"] is not None and o["val_fold"] is None:
        raise click.UsageError("--folds-csv needs --val-fold")
    _preflight(cfg, click.get_current_context())
    _check_out(o["out"], o["force"])  # refuse before any slow work; nothing is written until all checks pass
    aux = [parse_aux(a) for a in o["aux"]]
    imageset = open_dataset(o["data"])
    target, aux_sets = prepare_target(imageset, o["target"], aux)
    train_set, val_set = imageset, None
    if o["val_data"] is not None:
        val_set = open_dataset(o["val_data"])
    elif o["val_fold"] is not None:
        folds = resolve_folds(imageset, o["folds_csv"], o["k"], o["fold_seed"])
        if not 0 <= o["val_fold"] <= folds.max():
            raise click.UsageError(f"--val-fold {o['val_fold']}: folds are 0..{folds.max()}")
        train_set = imageset.subset(np.flatnonzero(folds != o["val_fold"]))
        val_set = imageset.subset(np.flatnonzero(folds == o["val_fold"]))

    train = encode_images(train_set, target, cfg.size, o["own_weight"], progress=cfg.progress)
    aux_data = [encode_images(ds, target, cfg.size, a.weight, f, source=f"aux:{Path(a.path).name}") for ds, a, f in aux_sets]
    val = encode_images(val_set, target, cfg.size) if val_set is not None else None
    target, parts = drop_empty_classes(target, [train, *aux_data, val])
    train_all = LabelledImages.concat(parts[:-1])
    val = parts[-1]
    if target.num_classes < 2:
        raise click.ClickException(f"--target {o['target']}: the images carry only {target.num_classes} class; need at least 2")
    check_fold_classes(target.class_names, {0: train_all.targets}, train_all.targets.sum(0))
    cw = parse_class_weight(cfg.class_weight, target.class_names, train_all.targets)
    out = _prepare_out(o["out"], o["force"])  # the first write: every input has been checked
    _write_options(out, "train", o)
    res = train_classifier(
        train_all, val, target, cfg, out_dir=out, class_weight=cw,
        meta_extra={"condition_space": imageset.space.to_dict(), "data": str(o["data"])},
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
        metrics.write_report(out, m, target.class_names, prefix="val_")
        click.echo(f"validation: accuracy {_fmt(m['accuracy'])}%, balanced accuracy {_fmt(m['balanced_accuracy'])}%")


@classify.command("cv")
@training_options
@click.option("--folds", "k", default=5, show_default=True, type=int, help="Number of folds (grouped by subject, stratified by cell).")
@click.option("--folds-csv", type=click.Path(path_type=Path), callback=_existing_file, default=None,
              help="Use this folds.csv instead of making folds.")
@click.option("--fold-seed", default=0, show_default=True, type=int, help="Seed of the grouped, stratified folds.")
@click.option("--extra", type=click.Path(path_type=Path), callback=_existing_dir_or_zip, default=None,
              help="Extra (synthetic) labelled images added to training folds only; rows with a 'fold' column skip that fold.")
@click.option("--extra-weight", default=1.0, show_default=True, type=float, help="Per-image loss weight of --extra images.")
@click.option("--cells", "cell_factors", default=None, help="Factors of the per-cell accuracy table (default: all).")
@click.option("--tta", type=click.Choice(["none", "flip", "dihedral"]), default="none", show_default=True,
              help="Test-time augmentation for out-of-fold predictions.")
@click.option("--keep-empty", is_flag=True, help="Keep classes that no image carries (default: drop them).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder.")
@click.option("--force", is_flag=True, help=_FORCE_HELP)
@one_line_errors
def cv_cmd(**o) -> None:
    """k-fold cross-validation: one model per fold, out-of-fold predictions, mean +- SD, per-cell table."""
    from classifiers.cv import CVConfig, run_cv
    from classifiers.data import parse_aux
    from synth.data.dataset import open_dataset

    _set_threads(o["threads"])
    cfg = _train_config(o)
    _preflight(cfg, click.get_current_context())
    _check_out(o["out"], o["force"])  # refuse before any slow work
    aux = [parse_aux(a) for a in o["aux"]]
    imageset = open_dataset(o["data"])
    extra = open_dataset(o["extra"]) if o["extra"] is not None else None
    cells = [s.strip() for s in o["cell_factors"].split(",")] if o["cell_factors"] else None
    if cells:
        for c in cells:
            imageset.space.factor(c)
    cvc = CVConfig(
        train=cfg, target=o["target"], k=o["k"], fold_seed=o["fold_seed"], cell_factors=cells, aux=aux,
        own_weight=o["own_weight"], extra_weight=o["extra_weight"], tta=o["tta"], drop_empty=not o["keep_empty"],
    )
    out: Path = o["out"]

    def start() -> None:  # run_cv calls it once folds, classes and images have passed every check
        _prepare_out(out, o["force"])
        _write_options(out, "cv", o)

    res = run_cv(imageset, cvc, folds=o["folds_csv"], out_dir=out, extra_train=extra, before_write=start)
    k = len(res.fold_metrics)
    click.echo(f"classes: {', '.join(res.class_names)}; {len(res.folds)} images in {k} folds")
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        mean, sd = res.mean_sd(name)
        click.echo(f"{name}: {_fmt(mean)} +- {_fmt(sd)} % (mean +- SD over {k} folds)")
    if "per_cell" in res.summary:
        _print_cell_table(res.summary["per_cell"], res.summary.get("cell_names") or [])
    click.echo(f"results in {out}")


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


@classify.command("evaluate")
@click.option("--models", "models", multiple=True, required=True,
              help="Checkpoint file, training folder or cv folder (fold*/model.safetensors). Repeatable.")
@click.option("--data", required=True, callback=_existing_dir_or_zip, metavar="DIR|ZIP", help="Labelled test images.")
@click.option("--gate", default=0.5, show_default=True, type=float,
              help="Average only models whose max probability reaches this (per image); all if none does.")
@click.option("--tta", type=click.Choice(["none", "flip", "dihedral"]), default="none", show_default=True,
              help="flip: average with the horizontal mirror (faces); dihedral: 8 flips/rotations (skin, patches).")
@click.option("--cells", "cell_factors", default=None, help="Factors of the per-cell accuracy table (default: all).")
@click.option("--batch", default=64, show_default=True, type=int, help="Images per forward pass.")
@click.option("--device", type=DEVICE_OR_AUTO, default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: predictions.csv, evaluate.json, metrics and confusion matrix.")
@one_line_errors
def evaluate_cmd(**o) -> None:
    """Gated ensemble predictions (CSV) and metrics on a labelled image set."""
    import numpy as np

    from classifiers import metrics
    from classifiers.ensemble import Ensemble
    from classifiers.train import resolve_device
    from synth.data.dataset import open_dataset
    from synth.utils.io import atomic_write_text

    _set_threads(o["threads"])
    if not 0.0 <= o["gate"] <= 1.0:
        raise click.BadParameter("must be between 0 and 1", param_hint="--gate")
    device = resolve_device(o["device"])
    ens = Ensemble.load(list(o["models"]), device)
    imageset = open_dataset(o["data"])
    targets, target = _eval_targets(imageset, ens.metas[0])
    cell_factors = [s.strip() for s in o["cell_factors"].split(",")] if o["cell_factors"] else list(imageset.space.names)
    for c in cell_factors:
        imageset.space.factor(c)  # an unknown --cells factor fails before anything is written
    out: Path = o["out"]
    res = ens.predict(_load_images_for(imageset, ens.sizes), gate=o["gate"], tta=o["tta"], batch=o["batch"])
    _write_options(out, "evaluate", o)  # after the images loaded: a corrupt one leaves no output
    names = ens.class_names
    pred = res.probs.argmax(1)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "true", "pred", "correct", "models_used", "gate_fallback", *[f"p_{c}" for c in names]])
    for i, rec in enumerate(imageset.records):
        true = names[int(targets[i].argmax())] if targets is not None else ""
        ok = "" if targets is None else int(true == names[pred[i]])
        w.writerow([rec.file, true, names[pred[i]], ok, int(res.n_models_used[i]), int(res.fallback[i])]
                   + [f"{p:.6f}" for p in res.probs[i]])
    atomic_write_text(out / "predictions.csv", buf.getvalue())
    info = {"n": len(imageset), "models": [m["path"] for m in ens.metas], "gate": o["gate"], "tta": o["tta"],
            "gate_fallback_count": res.n_fallback}
    click.echo(f"{len(ens.models)} model(s), {len(imageset)} images; no model passed the gate for {res.n_fallback} image(s)")
    if targets is not None:
        m = metrics.evaluate(
            res.probs, targets, names, cells=[imageset.cell_of(i, cell_factors) for i in range(len(imageset))],
            cell_names=cell_factors, cell_order=imageset.space.cells(cell_factors),
        )
        m["gate_fallback_count"] = res.n_fallback
        metrics.write_report(out, m, names)
        info.update(accuracy=m["accuracy"], balanced_accuracy=m["balanced_accuracy"])
        click.echo(f"accuracy {_fmt(m['accuracy'])}%, balanced accuracy {_fmt(m['balanced_accuracy'])}%")
        _print_cell_table(m["per_cell"], cell_factors)
    else:
        click.echo(f"no {', '.join(target.factors)} labels in {o['data']}: predictions only")
    atomic_write_text(out / "evaluate.json", json.dumps(info, indent=2) + "\n")


@classify.command("saliency")
@click.option("--models", "models", multiple=True, required=True, help="Checkpoint(s), training or cv folder. Repeatable.")
@click.option("--data", required=True, callback=_existing_dir_or_zip, metavar="DIR|ZIP", help="Labelled images to explain.")
@click.option("--method", type=click.Choice(["occlusion", "ig"]), default="occlusion", show_default=True,
              help="occlusion (face study: window 20, stride 10) or Integrated Gradients (skin study).")
@click.option("--window", default=20, show_default=True, type=int, help="Occlusion window in pixels.")
@click.option("--stride", default=10, show_default=True, type=int, help="Occlusion stride in pixels.")
@click.option("--steps", default=32, show_default=True, type=int, help="Integrated Gradients steps.")
@click.option("--group", "group_factors", default=None,
              help="Factors whose cells get composite (mean) maps, e.g. disease,age (default: all).")
@click.option("--limit", default=None, type=int, help="Explain only the first N images.")
@click.option("--no-overlays", is_flag=True, help="Skip the per-image overlay PNGs.")
@click.option("--device", type=DEVICE_OR_AUTO, default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: maps.npz, composites.png and overlays/.")
@one_line_errors
def saliency_cmd(**o) -> None:
    """Saliency maps toward the true label, averaged over the ensemble, with group composites."""
    import numpy as np
    import torch

    from classifiers import attribution
    from classifiers.ensemble import Ensemble, normalise
    from classifiers.train import resolve_device
    from synth.data.dataset import open_dataset
    from synth.utils.io import atomic_save

    _set_threads(o["threads"])
    device = resolve_device(o["device"])
    ens = Ensemble.load(list(o["models"]), device)
    norms = {(m["size"], tuple(m["normalisation"]["mean"]), tuple(m["normalisation"]["std"])) for m in ens.metas}
    if len(norms) != 1:
        raise click.ClickException("--models: saliency needs models with the same input size and normalisation")
    size, mean, std = norms.pop()
    imageset = open_dataset(o["data"])
    if o["limit"]:
        imageset = imageset.subset(range(min(o["limit"], len(imageset))))
    targets, target = _eval_targets(imageset, ens.metas[0])
    if targets is None:
        raise click.ClickException(f"{o['data']}: no {', '.join(target.factors)} labels; saliency targets the true label")
    group_factors = [s.strip() for s in o["group_factors"].split(",")] if o["group_factors"] else list(imageset.space.names)
    for g in group_factors:
        imageset.space.factor(g)
    out: Path = o["out"]
    raw = _load_images_for(imageset, [size])[size]
    x = normalise(raw, mean, std).to(device)
    y = targets.argmax(1)
    if o["method"] == "occlusion":
        maps = attribution.occlusion_saliency(ens.models, x, y, window=o["window"], stride=o["stride"], progress=True)
    else:
        maps = attribution.integrated_gradients(ens.models, x, y, steps=o["steps"])
    cells = [imageset.cell_of(i, group_factors) for i in range(len(imageset))]
    files = np.array([r.file for r in imageset.records], dtype=str)
    arrays = {"maps": maps.astype(np.float32), "files": files, "targets": np.array([ens.class_names[i] for i in y], dtype=str)}
    for f in imageset.space.names:
        arrays[f"factor_{f}"] = np.array([r.labels[f] for r in imageset.records], dtype=str)

    def _save(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    _write_options(out, "saliency", o)  # the first write: images loaded, maps computed
    atomic_save(out / "maps.npz", _save)
    if not o["no_overlays"]:
        imgs = raw.permute(0, 2, 3, 1).numpy()
        attribution.save_overlays(out / "overlays", imgs, maps, [Path(f).stem for f in files])
    order = imageset.space.cells(group_factors)
    attribution.composite_maps(maps, cells, order=order, png_path=out / "composites.png")
    click.echo(f"{len(maps)} {o['method']} maps from {len(ens.models)} model(s) -> {out / 'maps.npz'}, composites.png")


@classify.command("permutation-test")
@click.option("--saliency", "saliency_dir", required=True, type=click.Path(path_type=Path), callback=_existing_folder, metavar="DIRECTORY",
              help="Output folder of `synth classify saliency` (maps.npz).")
@click.option("--group", "group_factor", default="age", show_default=True, help="Factor whose levels are compared pairwise.")
@click.option("--within", "within_factor", default="disease", show_default=True,
              help="Run one matrix per level of this factor ('' for all images together).")
@click.option("--n-perm", default=1000, show_default=True, type=int, help="Permutations per pair (study: 100-1000).")
@click.option("--embedder", type=click.Choice(["backbone", "random"]), default="backbone", show_default=True,
              help="backbone: timm network features (the study: ImageNet EfficientNet-B4); random: fixed random projection.")
@click.option("--embed-model", default="efficientnet_b4", show_default=True,
              help="timm backbone that embeds the maps for --embedder backbone.")
@click.option("--embed-weights", type=click.Path(path_type=Path), callback=_existing_file, default=None, metavar="FILE",
              help="Local weights for --embed-model (without them the backbone keeps a seeded random init).")
@click.option("--min-maps", default=2, show_default=True, type=int, help="Skip groups with fewer maps.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the permutations and of a random embedder.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: permutation_tests.json and p-value matrices.")
@one_line_errors
def permutation_test_cmd(**o) -> None:
    """Pairwise permutation tests between groups of saliency maps (e.g. age groups of one disease)."""
    import numpy as np

    from classifiers import attribution
    from synth.utils.io import atomic_write_text

    path = o["saliency_dir"] / "maps.npz"
    if not path.is_file():
        raise click.ClickException(f"{path}: not found; run `synth classify saliency` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise click.ClickException(f"{path}: cannot read saliency maps ({type(e).__name__})") from None
    maps = data["maps"]
    gkey = f"factor_{o['group_factor']}"
    if gkey not in data:
        have = [k[7:] for k in data if k.startswith("factor_")]
        raise click.ClickException(f"--group {o['group_factor']}: not a factor of the maps (factors: {', '.join(have)})")
    within = o["within_factor"] or ""
    if within and f"factor_{within}" not in data:
        raise click.ClickException(f"--within {within}: not a factor of the maps")
    out: Path = o["out"]
    if o["embedder"] == "random":
        embed = attribution.random_projection_embedder(maps.shape[1:], seed=o["seed"])
    else:
        embed = attribution.backbone_embedder(o["embed_model"], pretrained=o["embed_weights"] or False, seed=o["seed"])
    _write_options(out, "permutation-test", o)  # after the embedder (model, weights) loaded
    levels_within = list(dict.fromkeys(data[f"factor_{within}"].tolist())) if within else [""]
    report = {}
    for lv in levels_within:
        sel = np.ones(len(maps), bool) if not lv else data[f"factor_{within}"] == lv
        groups = {}
        for g in dict.fromkeys(data[gkey][sel].tolist()):
            m = maps[sel & (data[gkey] == g)]
            if len(m) >= o["min_maps"]:
                groups[g] = m
        if len(groups) < 2:
            click.echo(f"{within}={lv}: fewer than two groups with >= {o['min_maps']} maps, skipped")
            continue
        names, p, st = attribution.permutation_test_matrix(groups, embed, n_perm=o["n_perm"], seed=o["seed"], progress=True)
        prefix = f"{lv}_" if lv else ""
        attribution.write_permutation_outputs(out, names, p, st, prefix=prefix, title=f"{within} = {lv}" if lv else None)
        report[lv or "all"] = {"groups": names, "p": p.tolist(), "statistic": st.tolist(),
                               "n": {g: int(len(v)) for g, v in groups.items()}}
        click.echo(f"{within + '=' + lv if lv else 'all'}: {len(names)} groups, min p = {p[~np.eye(len(names), dtype=bool)].min():.3g}")
    atomic_write_text(out / "permutation_tests.json", json.dumps(report, indent=2) + "\n")


@classify.command("patches")
@training_options
@click.option("--patch", default=64, show_default=True, type=int, help="Patch side in pixels (non-overlapping tiles).")
@click.option("--resolution", default=None, type=int, help="Resize images to this square size before cutting (default: native).")
@click.option("--val-data", type=click.Path(path_type=Path), callback=_existing_dir_or_zip, default=None,
              help="Separate validation images.")
@click.option("--val-fold", type=int, default=None, help="Validate on this fold of --data.")
@click.option("--folds-csv", type=click.Path(path_type=Path), callback=_existing_file, default=None,
              help="folds.csv (file,fold) for --val-fold.")
@click.option("--folds", "k", default=5, show_default=True, type=int, help="Fold count when --val-fold makes folds.")
@click.option("--fold-seed", default=0, show_default=True, type=int, help="Seed of the folds --val-fold makes.")
@click.option("--map-class", default=None, help="Class drawn in the probability maps (default: the control level or the first class).")
@click.option("--maps", "n_maps", default=8, show_default=True, type=int, help="Probability maps for the first N validation images.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: model, patch_/image_ metrics, image_predictions.csv, maps/.")
@click.pass_context
@one_line_errors
def patches_cmd(ctx, **o) -> None:
    """Patch mode: train on image tiles (8 dihedral symmetries), diagnose images by majority vote.

    Validation images are diagnosed by majority vote over their patches (each averaged
    over the 8 symmetries); per-patch probabilities are drawn in five colour bands.
    """
    import dataclasses

    import numpy as np
    from click.core import ParameterSource

    from classifiers import metrics
    from classifiers.cv import check_fold_classes, resolve_folds
    from classifiers.data import AugConfig, drop_empty_classes, parse_class_weight, parse_target
    from classifiers.ensemble import predict_probs
    from classifiers.patch_mode import diagnose_images, patch_set
    from classifiers.patches import probability_map_png
    from classifiers.train import train_classifier
    from synth.data.dataset import open_dataset
    from synth.utils.io import atomic_write_text

    _set_threads(o["threads"])
    if ctx.get_parameter_source("size") != ParameterSource.DEFAULT and o["size"] != o["patch"]:
        raise click.UsageError("--size: patch mode trains at the patch size; set --patch instead")
    cfg = _train_config(o)
    aug = "skin" if ctx.get_parameter_source("aug") == ParameterSource.DEFAULT else o["aug"]
    cfg = dataclasses.replace(cfg, size=o["patch"], aug=AugConfig(kind=aug))
    _preflight(cfg)
    if o["aux"]:
        raise click.UsageError("--aux is not supported in patch mode")
    if o["val_data"] is not None and o["val_fold"] is not None:
        raise click.UsageError("give either --val-data or --val-fold, not both")
    imageset = open_dataset(o["data"])
    target = parse_target(o["target"], imageset.space)
    train_set, val_set = imageset, None
    if o["val_data"] is not None:
        val_set = open_dataset(o["val_data"])
    elif o["val_fold"] is not None:
        folds = resolve_folds(imageset, o["folds_csv"], o["k"], o["fold_seed"])
        if not 0 <= o["val_fold"] <= folds.max():
            raise click.UsageError(f"--val-fold {o['val_fold']}: folds are 0..{folds.max()}")
        train_set = imageset.subset(np.flatnonzero(folds != o["val_fold"]))
        val_set = imageset.subset(np.flatnonzero(folds == o["val_fold"]))
    out: Path = o["out"]
    tr = patch_set(train_set, target, o["patch"], o["own_weight"], o["resolution"])
    va = patch_set(val_set, target, o["patch"], 1.0, o["resolution"]) if val_set is not None else None
    target, parts = drop_empty_classes(target, [tr.data, va.data if va else None])
    tr.data = parts[0]
    if va is not None:
        va.data = parts[1]
    if target.num_classes < 2:
        raise click.ClickException(f"--target {o['target']}: the images carry only {target.num_classes} class; need at least 2")
    check_fold_classes(target.class_names, {0: tr.data.targets}, tr.data.targets.sum(0))
    cw = parse_class_weight(cfg.class_weight, target.class_names, tr.data.targets)
    names = list(target.class_names)
    map_class = o["map_class"]
    if map_class is None:
        f0 = imageset.space.factor(target.factors[0])
        map_class = f0.control if len(target.factors) == 1 and f0.control in names else names[0]
    if map_class not in names:  # checked before training: a class the data does not have
        raise click.ClickException(f"--map-class {map_class!r}: not a class ({', '.join(names)})")
    _write_options(out, "patches", o)  # the first write: every input has been checked
    res = train_classifier(tr.data, va.data if va else None, target, cfg, out_dir=out, class_weight=cw,
                           meta_extra={"condition_space": imageset.space.to_dict(), "patch": o["patch"],
                                       "resolution": o["resolution"], "mode": "patches"})
    click.echo(f"{len(tr.data)} training patches of {len(train_set)} images; best epoch {res.best_epoch}; {res.checkpoint}")
    if va is None:
        return
    norm = res.meta["normalisation"]
    probs = predict_probs(res.model, va.data.images, norm["mean"], norm["std"], cfg.eval_batch,
                          next(res.model.parameters()).device, tta="dihedral")
    pm = metrics.evaluate(probs, va.data.targets, names)
    metrics.write_report(out, pm, names, prefix="patch_")
    img_cls, frac, mean = diagnose_images(probs, va.owner, len(val_set))
    img_targets = np.stack([va.data.targets[va.owner == i][0] for i in range(len(val_set))])
    vote = np.eye(len(names), dtype=np.float32)[img_cls]  # majority vote as a one-hot "probability"
    im = metrics.evaluate(vote, img_targets, names)
    metrics.write_report(out, im, names, prefix="image_")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "true", "pred", "vote_fraction", "patches", *[f"mean_p_{c}" for c in names]])
    for i, rec in enumerate(val_set.records):
        w.writerow([rec.file, names[int(img_targets[i].argmax())], names[img_cls[i]], f"{frac[i]:.4f}",
                    int((va.owner == i).sum()), *[f"{p:.6f}" for p in mean[i]]])
    atomic_write_text(out / "image_predictions.csv", buf.getvalue())
    c = names.index(map_class)
    for i in range(min(o["n_maps"], len(val_set))):
        rows, cols = va.grids[i]
        grid = probs[va.owner == i, c].reshape(rows, cols)
        img = val_set.load_image(i)
        if o["resolution"]:
            img = img.resize((o["resolution"], o["resolution"]))
        probability_map_png(out / "maps" / f"{Path(val_set[i].file).stem}.png", np.clip(grid, 0, 1), image=img,
                            class_name=map_class, patch_size=o["patch"])
    click.echo(f"patch accuracy {_fmt(pm['accuracy'])}%, image accuracy (majority vote) {_fmt(im['accuracy'])}%")
