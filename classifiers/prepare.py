"""From labelled images to the classes a classifier learns: the data chain every training path shares.

``synth classify train``, ``synth classify patches``, cross-validation (:func:`classifiers.cv.run_cv`)
and the ablation all prepare their data the same way:

1. :func:`prepare_target`: the target over the dataset's condition space, widened by the
   classes of any auxiliary sets (which are opened here);
2. encode every image set over that target (:func:`classifiers.data.encode_images`, or the
   patch sets of patch mode) - the caller's step, since what is encoded differs;
3. :func:`prepare_classes`: drop the classes no image carries, refuse fewer than two classes,
   check that the training images of every fold carry every class, and resolve the class
   weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from classifiers.data import (
    AuxSpec,
    ClassifierDataError,
    LabelledImages,
    Target,
    drop_empty_classes,
    extend_target,
    parse_class_weight,
    parse_target,
)
from synth.data.dataset import DatasetError, open_dataset

__all__ = ["CVError", "PreparedData", "prepare_target", "prepare_classes", "check_fold_classes"]


class CVError(ClassifierDataError):
    """Folds that cannot train every class, or folds that do not fit the data."""


def prepare_target(imageset, target_spec, aux: Sequence[AuxSpec]) -> tuple[Target, list[tuple[Any, AuxSpec, tuple[str, ...]]]]:
    """The target over ``imageset``'s space, extended by auxiliary sets' classes."""
    target = target_spec if isinstance(target_spec, Target) else parse_target(target_spec, imageset.space)
    opened = []
    for a in aux:
        try:
            ds = open_dataset(a.path)
        except DatasetError as e:
            raise ClassifierDataError(f"--aux: {e}") from None
        factors = a.resolve_factors(ds.space, target)
        names = ["|".join(c) for c in ds.space.cells(factors)]
        target = extend_target(target, names)
        opened.append((ds, a, factors))
    return target, opened


def check_fold_classes(class_names: Sequence[str], fold_targets: Mapping[int, np.ndarray], total: np.ndarray) -> None:
    """Raise if a class has no training image for some fold (its model could never learn it)."""
    for fold, t in sorted(fold_targets.items()):
        counts = (t > 0).sum(0)
        empty = [i for i, c in enumerate(counts) if c == 0]
        if empty:
            i = empty[0]
            raise CVError(
                f"class {class_names[i]!r} has no images in the training folds of fold {fold} "
                f"({int(total[i])} image(s) in total); add images, merge the class or use fewer --folds"
            )


@dataclass
class PreparedData:
    """Encoded images over the final class set, with the class weights (see :func:`prepare_classes`)."""

    target: Target
    own: LabelledImages  # the dataset's own images
    aux: list[LabelledImages] = field(default_factory=list)  # trained on in every fold
    extra: dict[int, LabelledImages | None] = field(default_factory=dict)  # per fold: extra training images
    held_out: list[LabelledImages | None] = field(default_factory=list)  # never trained on (validation)
    folds: np.ndarray | None = None  # fold of each own image; None: one "fold 0" trains on all of them
    class_weight: np.ndarray | None = None  # [K], or None for unweighted

    def train_images(self, fold: int = 0) -> LabelledImages:
        """The images the model of ``fold`` trains on: the own images outside that fold (all of
        them without folds), every auxiliary set and the fold's extra images."""
        own = self.own if self.folds is None else self.own.take(np.flatnonzero(self.folds != fold))
        return LabelledImages.concat([own, *self.aux, self.extra.get(fold)])


def prepare_classes(
    target: Target,
    own: LabelledImages,
    *,
    aux: Sequence[LabelledImages] = (),
    extra: Mapping[int, LabelledImages | None] | None = None,
    held_out: Sequence[LabelledImages | None] = (),
    folds: np.ndarray | None = None,
    class_weight: str | dict | None = None,
    drop_empty: bool = True,
    target_name: str | None = None,
) -> PreparedData:
    """Settle the classes of encoded image sets and check that every model can learn them all.

    Args:
        target: the target the sets were encoded over (:func:`prepare_target`).
        own: the dataset's own images; with ``folds``, fold ``f``'s model trains on those
            outside fold ``f``, without it on all of them (one training set, "fold 0").
        aux: auxiliary sets every model trains on.
        extra: extra (synthetic) training images per fold (None: none for that fold); one set
            may serve several folds.
        held_out: sets that follow the class set but are never trained on (validation images;
            None entries pass through).
        folds: fold of each ``own`` image, numbered 0..k-1.
        class_weight: ``None``, ``"auto"`` or ``NAME=W[,NAME=W]`` (:func:`parse_class_weight`);
            ``auto`` counts the own and auxiliary images (not extra ones), so every fold gets
            the same weights.
        drop_empty: drop the classes that no image of any set (own, aux, extra, held out)
            carries, e.g. default levels absent from the data.
        target_name: the target as the user wrote it, for messages (default: its factors
            joined by ``,``).

    Steps, in order: drop empty classes; refuse fewer than two classes; check that the training
    images of every fold carry every class (:func:`check_fold_classes`); resolve the class
    weights.  Raises :class:`CVError` (a :class:`ClassifierDataError`) when a check fails, and
    :class:`ClassifierDataError` for bad class weights.
    """
    aux, held_out = list(aux), list(held_out)
    extra = dict(extra or {})
    if drop_empty:
        shared = list({id(e): e for e in extra.values() if e is not None}.values())  # each set once
        target, parts = drop_empty_classes(target, [own, *aux, *held_out, *shared])
        own = parts[0]
        aux = parts[1 : 1 + len(aux)]
        held_out = parts[1 + len(aux) : 1 + len(aux) + len(held_out)]
        dropped = {id(old): new for old, new in zip(shared, parts[1 + len(aux) + len(held_out) :])}
        extra = {f: None if e is None else dropped[id(e)] for f, e in extra.items()}
    if target.num_classes < 2:
        name = target_name if target_name is not None else ",".join(target.factors)
        raise CVError(f"--target {name}: the images carry only {target.num_classes} class; need at least 2")

    always = [a.targets for a in aux]  # auxiliary images train in every fold
    fold_ids = [0] if folds is None else range(int(folds.max()) + 1)
    fold_targets = {}
    for f in fold_ids:
        own_targets = own.targets if folds is None else own.targets[folds != f]
        fold_extra = [] if extra.get(f) is None else [extra[f].targets]
        fold_targets[f] = np.concatenate([own_targets, *always, *fold_extra])
    total = own.targets.sum(0) + sum((t.sum(0) for t in always), np.zeros(target.num_classes))
    check_fold_classes(target.class_names, fold_targets, total)

    weights = parse_class_weight(class_weight, target.class_names, np.concatenate([own.targets, *always]))
    return PreparedData(target, own, aux, extra, held_out, folds, weights)
