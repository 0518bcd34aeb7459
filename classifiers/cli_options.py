"""The options of ``synth classify`` and their typed values.

Options that several commands share are declared once, in groups (:func:`option_group`):
:func:`training_options` (``train``, ``cv``, ``patches``), :func:`validation_options`
(``train``, ``patches``), :func:`ensemble_options` and :data:`runtime_options` (``evaluate``,
``saliency``), and the single options ``--cells``, ``--tta``, ``--out`` and ``--force``.

Each command turns click's keyword arguments into one frozen dataclass with
:func:`from_params` (``TrainArgs``, ``CVArgs`` ...); an option group's values form a nested
dataclass of their own (:class:`TrainingArgs`, :class:`ValidationArgs` ...).  Field names are
the click parameter names.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

import click

from synth.utils.cli_types import DEVICE_OR_AUTO, SEED

if TYPE_CHECKING:
    from classifiers.train import TrainConfig

__all__ = [
    "option_group",
    "training_options",
    "validation_options",
    "ensemble_options",
    "runtime_options",
    "cells_option",
    "tta_option",
    "out_option",
    "force_option",
    "existing_dir_or_zip",
    "existing_file",
    "existing_folder",
    "from_params",
    "TrainingArgs",
    "ValidationArgs",
    "EnsembleArgs",
    "RuntimeArgs",
    "TrainArgs",
    "CVArgs",
    "EvaluateArgs",
    "SaliencyArgs",
    "PermutationTestArgs",
    "PatchesArgs",
]


# ----------------------------------------------------------------------------------------
# option groups


def option_group(*options: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """One decorator that applies ``options`` (click.option decorators) in the order listed,
    so the group's options appear in ``--help`` in that order."""

    def apply(fn: Callable) -> Callable:
        for o in reversed(options):
            fn = o(fn)
        return fn

    return apply


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


existing_dir_or_zip = _existing()
existing_file = _existing("file")
existing_folder = _existing("folder")

_FORCE_HELP = "Write into a non-empty --out folder, first removing the results of an earlier train or cv there."

device_option = click.option("--device", type=DEVICE_OR_AUTO, default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
threads_option = click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's choice).")
runtime_options = option_group(device_option, threads_option)
force_option = click.option("--force", is_flag=True, help=_FORCE_HELP)
cells_option = click.option("--cells", "cell_factors", default=None, help="Factors of the per-cell accuracy table (default: all).")


def out_option(text: str = "Output folder.") -> Callable[[Callable], Callable]:
    """``--out DIRECTORY`` (required); ``text`` is its help."""
    return click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help=text)


def tta_option(text: str) -> Callable[[Callable], Callable]:
    """``--tta none|flip|dihedral``; ``text`` is its help."""
    return click.option("--tta", type=click.Choice(["none", "flip", "dihedral"]), default="none", show_default=True, help=text)


training_options = option_group(
    click.option("--data", "data", required=True, callback=existing_dir_or_zip, metavar="DIR|ZIP",
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
    device_option,
    click.option("--workers", default=0, show_default=True, type=int, help="DataLoader worker processes."),
    threads_option,
    click.option("--no-progress", is_flag=True, help="Hide progress bars."),
)
training_options.__doc__ = "Options shared by ``train``, ``cv`` and ``patches`` (defaults follow the face study)."


def validation_options(val_data_help: str, val_fold_help: str) -> Callable[[Callable], Callable]:
    """Validation images of ``train`` and ``patches``: a separate set, or one fold of --data."""
    return option_group(
        click.option("--val-data", type=click.Path(path_type=Path), callback=existing_dir_or_zip, default=None,
                     help=val_data_help),
        click.option("--val-fold", type=int, default=None, help=val_fold_help),
        click.option("--folds-csv", type=click.Path(path_type=Path), callback=existing_file, default=None,
                     help="folds.csv (file,fold) for --val-fold."),
        click.option("--folds", "k", default=5, show_default=True, type=int, help="Fold count when --val-fold makes folds."),
        click.option("--fold-seed", default=0, show_default=True, type=int, help="Seed of the folds --val-fold makes."),
    )


def ensemble_options(models_help: str, data_help: str) -> Callable[[Callable], Callable]:
    """The trained models and the labelled images of ``evaluate`` and ``saliency``."""
    return option_group(
        click.option("--models", "models", multiple=True, required=True, help=models_help),
        click.option("--data", required=True, callback=existing_dir_or_zip, metavar="DIR|ZIP", help=data_help),
    )


# ----------------------------------------------------------------------------------------
# typed values

_Args = TypeVar("_Args")


def _fields(cls) -> set[str]:
    """The click parameter names a dataclass reads, nested groups included."""
    hints = typing.get_type_hints(cls)
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        names |= _fields(hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else {f.name}
    return names


def _build(cls: type[_Args], params: Mapping[str, Any]) -> _Args:
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _build(hints[f.name], params) if dataclasses.is_dataclass(hints[f.name]) else params[f.name]
                  for f in dataclasses.fields(cls)})


def from_params(cls: type[_Args], params: Mapping[str, Any]) -> _Args:
    """``cls`` (a dataclass below) from click's keyword arguments; a field whose type is an
    option group's dataclass is built from the same arguments.  Every argument must be read."""
    unread = set(params) - _fields(cls)
    if unread:
        raise TypeError(f"{cls.__name__} does not read the option(s) {', '.join(sorted(unread))}")
    return _build(cls, params)


@dataclass(frozen=True)
class TrainingArgs:
    """:func:`training_options`."""

    data: Path
    target: str
    model: str
    size: int
    epochs: int
    batch: int
    lr: float | None
    weight_decay: float
    optimizer: str
    warmup: float
    patience: int
    class_weight: str | None
    aux: tuple[str, ...]
    own_weight: float
    aug: str
    drop_rate: float
    pretrained: str | None
    no_pretrained: bool
    seed: int
    device: str
    workers: int
    threads: int | None
    no_progress: bool

    @property
    def pretrained_value(self) -> bool | str:
        """False (random init), True (timm's default weights) or a weights file."""
        if self.no_pretrained or self.pretrained in (None, ""):
            return False
        if self.pretrained == "default":
            return True
        return self.pretrained

    def train_config(self) -> "TrainConfig":
        from classifiers.data import AugConfig
        from classifiers.train import TrainConfig

        pretrained = self.pretrained_value
        lr = self.lr if self.lr is not None else (3e-5 if pretrained else 1e-3)
        return TrainConfig(
            model=self.model, size=self.size, pretrained=pretrained,
            epochs=self.epochs, batch=self.batch, lr=lr, weight_decay=self.weight_decay, optimizer=self.optimizer,
            warmup=self.warmup, patience=self.patience, class_weight=self.class_weight, aug=AugConfig(kind=self.aug),
            drop_rate=self.drop_rate, seed=self.seed, device=self.device, num_workers=self.workers,
            progress=not self.no_progress,
        )


@dataclass(frozen=True)
class ValidationArgs:
    """:func:`validation_options`."""

    val_data: Path | None
    val_fold: int | None
    folds_csv: Path | None
    k: int
    fold_seed: int


@dataclass(frozen=True)
class EnsembleArgs:
    """:func:`ensemble_options`."""

    models: tuple[str, ...]
    data: Path


@dataclass(frozen=True)
class RuntimeArgs:
    """:data:`runtime_options`."""

    device: str
    threads: int | None


@dataclass(frozen=True)
class TrainArgs:
    training: TrainingArgs
    validation: ValidationArgs
    out: Path
    force: bool


@dataclass(frozen=True)
class CVArgs:
    training: TrainingArgs
    k: int
    folds_csv: Path | None
    fold_seed: int
    extra: Path | None
    extra_weight: float
    cell_factors: str | None
    tta: str
    keep_empty: bool
    out: Path
    force: bool


@dataclass(frozen=True)
class EvaluateArgs:
    ensemble: EnsembleArgs
    gate: float
    tta: str
    cell_factors: str | None
    batch: int
    runtime: RuntimeArgs
    out: Path


@dataclass(frozen=True)
class SaliencyArgs:
    ensemble: EnsembleArgs
    method: str
    window: int
    stride: int
    steps: int
    group_factors: str | None
    limit: int | None
    no_overlays: bool
    runtime: RuntimeArgs
    out: Path


@dataclass(frozen=True)
class PermutationTestArgs:
    saliency_dir: Path
    group_factor: str
    within_factor: str
    n_perm: int
    embedder: str
    embed_model: str
    embed_weights: Path | None
    min_maps: int
    seed: int
    out: Path


@dataclass(frozen=True)
class PatchesArgs:
    training: TrainingArgs
    patch: int
    resolution: int | None
    validation: ValidationArgs
    map_class: str | None
    n_maps: int
    out: Path
