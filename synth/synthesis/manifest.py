"""Manifests: a folder of generated images that is also a training dataset.

``labels.csv`` (read by :func:`synth.data.dataset.open_dataset`) and ``manifest.csv`` (the same
table, under the name people look for) list every image with its arg-max level per factor,
its subject (= the group of images made from one z, so grouped folds keep an identity in one
fold), the generation parameters and the full soft label ``p_<factor>=<level>`` on every row.
``conditions.yaml`` carries the level order.  The tables are written last, atomically, so an
interrupted run never looks like a finished dataset.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from synth.conditions import ConditionSpace
from synth.synthesis.errors import SynthesisError
from synth.utils.io import atomic_write_text, literal
from synth.utils.io import prepare_out_dir as _prepare_out_dir

__all__ = ["ManifestRow", "EXTRA_COLUMNS", "GENERATION_FILES", "write_manifest", "prepare_out_dir", "earlier_generation", "rows_to_csv"]

# What write_manifest puts beside the images.
GENERATION_FILES = ("conditions.yaml", "generation.json", "manifest.csv", "labels.csv")
# Generation parameters stored per row, after the factor and subject columns.
EXTRA_COLUMNS = ("type", "seed", "seed2", "group", "psi", "mix", "mix_factor", "mix_from", "mix_to", "step", "styles")


@dataclass
class ManifestRow:
    file: str
    label: np.ndarray
    group: str
    values: dict[str, Any] = field(default_factory=dict)  # EXTRA_COLUMNS entries


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def rows_to_csv(rows: Sequence[ManifestRow], space: ConditionSpace) -> str:
    header = ["file", *space.names, "subject", *EXTRA_COLUMNS, *space.soft_columns()]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        levels = space.decode(r.label)
        vals = {"group": r.group, **r.values}
        w.writerow([r.file, *[levels[n] for n in space.names], r.group, *[_fmt(vals.get(k)) for k in EXTRA_COLUMNS], *[f"{x:.6g}" for x in r.label]])
    return buf.getvalue()


def prepare_out_dir(out: str | Path, force: bool, outputs: Iterable[str] = ()) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``force``, which first removes the
    earlier ``outputs`` (globs; see :func:`synth.utils.io.remove_outputs`) and overwrites."""
    return _prepare_out_dir(out, force, outputs, error=SynthesisError)


def earlier_generation(out: str | Path) -> list[str]:
    """The files an earlier ``synth generate`` left in ``out`` (as literal globs).

    Only a folder with ``generation.json`` counts as a generation, so ``--force`` into a real
    dataset never deletes the images its labels.csv lists; the images are those its
    manifest.csv and labels.csv list.
    """
    out = Path(out)
    if not (out / "generation.json").is_file():
        return []
    names = list(GENERATION_FILES)
    for table in ("manifest.csv", "labels.csv"):
        try:
            text = (out / table).read_text(encoding="utf-8-sig")
            names += [r["file"].strip() for r in csv.DictReader(io.StringIO(text)) if (r.get("file") or "").strip()]
        except (OSError, UnicodeDecodeError, csv.Error):  # a damaged table: go by the other one
            continue
    return [literal(n) for n in dict.fromkeys(names)]


def write_manifest(out: str | Path, rows: Sequence[ManifestRow], space: ConditionSpace, settings: Mapping[str, Any] | None = None) -> None:
    """conditions.yaml, generation.json, manifest.csv and labels.csv (last: it makes the folder a dataset)."""
    out = Path(out)
    space.save(out / "conditions.yaml")
    if settings is not None:
        atomic_write_text(out / "generation.json", json.dumps(dict(settings), indent=2, default=str) + "\n")
    text = rows_to_csv(rows, space)
    atomic_write_text(out / "manifest.csv", text)
    atomic_write_text(out / "labels.csv", text)
