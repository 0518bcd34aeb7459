"""Cross-validation folds: stratified by condition cell, grouped by subject, seeded.

All images of one subject (or of one generated identity) fall in the same fold, so a model is
never tested on a person it has seen.  Folds are stored in ``folds.csv`` (``file,fold``) so
every tool of an experiment uses the same partition.
"""
from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from synth.data.dataset import DatasetError, ImageSet
from synth.utils.io import atomic_write_text

__all__ = ["make_folds", "write_folds", "read_folds", "check_folds"]


def make_folds(
    imageset: ImageSet,
    k: int = 5,
    seed: int = 0,
    stratify: Sequence[str] | None = None,
) -> np.ndarray:
    """Fold index (0..k-1) per record: grouped by subject, stratified by condition cell.

    ``stratify`` names the factors whose cells are balanced across folds (default: all).
    Deterministic given the seed.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(imageset)
    if k < 2:
        raise DatasetError(f"--folds {k}: need at least 2 folds")
    groups = imageset.groups()
    n_groups = len(set(groups.tolist()))
    if n_groups < k:
        raise DatasetError(f"{imageset.root}: only {n_groups} subjects, cannot make {k} grouped folds")
    strata = np.array(["|".join(imageset.cell_of(i, stratify)) for i in range(n)])
    folds = np.full(n, -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Tiny cells cannot be spread over every fold; that is expected and reported by `data check`.
        warnings.simplefilter("ignore", UserWarning)
        try:
            for fold, (_, test_idx) in enumerate(splitter.split(np.zeros(n), strata, groups)):
                folds[test_idx] = fold
        except ValueError as e:  # scikit-learn's word for "too few members to split"
            raise DatasetError(f"{imageset.root}: cannot make {k} grouped folds ({e})".splitlines()[0]) from None
    assert (folds >= 0).all()
    return folds


def check_folds(imageset: ImageSet, folds: np.ndarray) -> None:
    """Raise DatasetError if a subject spans two folds or the array does not fit."""
    folds = np.asarray(folds)
    if folds.shape != (len(imageset),):
        raise DatasetError(f"folds has {folds.shape[0]} entries for {len(imageset)} images")
    seen: dict[str, int] = {}
    for g, f in zip(imageset.groups(), folds):
        if seen.setdefault(g, int(f)) != int(f):
            raise DatasetError(f"subject {g!r} appears in folds {seen[g]} and {int(f)}")


def write_folds(path: str | Path, imageset: ImageSet, folds: np.ndarray) -> None:
    check_folds(imageset, folds)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "subject", "fold"])
    for rec, f in zip(imageset.records, folds):
        w.writerow([rec.file, rec.subject or "", int(f)])
    atomic_write_text(path, buf.getvalue())


def read_folds(path: str | Path, imageset: ImageSet) -> np.ndarray:
    """Fold per record of ``imageset``, matched by file name; every image must be listed."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read folds ({e.strerror})") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "file" not in reader.fieldnames or "fold" not in reader.fieldnames:
        raise DatasetError(f"{path}: expected columns 'file' and 'fold'")
    by_file: dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        try:
            by_file[row["file"]] = int(row["fold"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: line {lineno}: fold {row.get('fold')!r} is not an integer") from None
    missing = [r.file for r in imageset.records if r.file not in by_file]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} image(s) have no fold, e.g. {missing[0]}")
    folds = np.array([by_file[r.file] for r in imageset.records], dtype=np.int64)
    if folds.min() < 0:
        raise DatasetError(f"{path}: negative fold index")
    check_folds(imageset, folds)
    return folds
