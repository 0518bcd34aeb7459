"""Labelled image sets: read a folder (labels.csv or NVlabs dataset.json) or a zip of one.

``open_dataset`` returns an :class:`ImageSet`: records with level names per factor, optional
soft labels and subject ids, plus the :class:`~synth.conditions.ConditionSpace` that gives the
labels their meaning.  :mod:`synth.data.torch_dataset` turns an ImageSet into (image, label)
tensors for training and oversamples rare condition cells.
"""
from __future__ import annotations

import csv
import io
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from synth.conditions import KNOWN_LEVELS, ConditionError, ConditionSpace
from synth.data.storage import IMAGE_EXTENSIONS, LABELS_CSV, NVLABS_JSON, DatasetError, _JoinedStorage, _Storage

__all__ = [
    "DatasetError",
    "Record",
    "ImageSet",
    "open_dataset",
    "open_image",
    "to_rgb",
    "decode_image",
    "image_sizes",
    "write_labels_csv",
    "IMAGE_EXTENSIONS",
    "LABELS_CSV",
    "SCHEMA_FILE",
]

SCHEMA_FILE = "conditions.yaml"
RESERVED_COLUMNS = ("file", "subject")


@dataclass
class Record:
    """One image: its path inside the dataset and what it shows."""

    file: str
    labels: dict[str, str]
    soft: np.ndarray | None = None
    subject: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def open_image(data: bytes, name: str) -> Image.Image:
    """Decode fully (so truncated files fail here, not later), in the file's own mode."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises many types for bad files
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))  # the name is ours, not the buffer's
        raise DatasetError(f"{name}: unreadable or corrupt image ({type(e).__name__}: {why})".splitlines()[0]) from None
    return img


_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _wide_to_8bit(img: Image.Image, name: str) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale as 8-bit 'L'.

    Pillow's own conversion clips at 255, so a 16-bit scan turns white.  Integer 16-bit
    modes map 0..65535 onto 0..255; 'I' and 'F' hold no fixed range, so values that fit
    0..255 are kept, values that fit 0..65535 are read as 16-bit, anything else is refused.
    """
    arr = np.asarray(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        scale = 65535
    else:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise DatasetError(f"{name}: {img.mode} image holds NaN or infinite values; cannot read it as 8-bit")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 65535:
            raise DatasetError(
                f"{name}: {img.mode} image values {lo:g}..{hi:g} fit neither 0..255 nor 0..65535; save it as 8- or 16-bit"
            )
        scale = 255 if hi <= 255 else 65535
    grey = np.rint(arr.astype(np.float64) * (255.0 / scale)).astype(np.uint8)
    return Image.fromarray(grey, mode="L")


def to_rgb(img: Image.Image, name: str) -> Image.Image:
    """The image as 8-bit RGB with its real values, or a one-line error naming ``name``."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        img = _wide_to_8bit(img, name)
    try:
        return img.convert("RGB")
    except (ValueError, OSError):
        raise DatasetError(f"{name}: image mode {img.mode} is not supported; save it as RGB or greyscale") from None


def image_sizes(imageset: "ImageSet") -> "Counter[tuple[int, int]]":
    """How many images of each (width, height); reads file headers only, and names the first
    file that is missing or not an image."""
    sizes: Counter = Counter()
    for i in range(len(imageset)):
        try:
            data = imageset.read_bytes(i)
        except (FileNotFoundError, KeyError, IsADirectoryError):
            raise DatasetError(f"{imageset.path_of(i)}: missing image file") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                sizes[im.size] += 1
        except Exception as e:  # PIL raises many types for bad files
            raise DatasetError(f"{imageset.path_of(i)}: unreadable or corrupt image ({type(e).__name__})") from None
    return sizes


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode fully (so truncated files fail here, not later) and convert to RGB."""
    return to_rgb(open_image(data, name), name)


# ----------------------------------------------------------------------------------------


class ImageSet:
    """A labelled image collection with its condition space (None: unlabelled, one cell ``()``)."""

    def __init__(self, storage: _Storage, space: ConditionSpace | None, records: list[Record]):
        self._storage = storage
        self.space = space
        self.records = records

    @property
    def root(self) -> Path:
        return self._storage.path

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def path_of(self, i: int) -> str:
        return self._storage.display(self.records[i].file)

    def read_bytes(self, i: int) -> bytes:
        return self._storage.read(self.records[i].file)

    def load_image(self, i: int) -> Image.Image:
        rec = self.records[i]
        try:
            data = self._storage.read(rec.file)
        except (FileNotFoundError, KeyError):
            raise DatasetError(f"{self.path_of(i)}: missing image file") from None
        return decode_image(data, self.path_of(i))

    def label_vector(self, i: int) -> np.ndarray:
        rec = self.records[i]
        if self.space is None:
            return np.zeros(0, dtype=np.float32)
        return rec.soft.copy() if rec.soft is not None else self.space.encode(rec.labels)

    def label_matrix(self) -> np.ndarray:
        if not self.records or self.space is None:
            return np.zeros((len(self.records), self.space.c_dim if self.space is not None else 0), dtype=np.float32)
        return np.stack([self.label_vector(i) for i in range(len(self))]).astype(np.float32)

    def cell_of(self, i: int, factors: Sequence[str] | None = None) -> tuple[str, ...]:
        if self.space is None:
            return ()
        names = list(factors) if factors is not None else list(self.space.names)
        return tuple(self.records[i].labels[n] for n in names)

    def cell_counts(self, factors: Sequence[str] | None = None) -> dict[tuple[str, ...], int]:
        """Image count of every cell of the named factors, zeros included, in level order."""
        if self.space is None:
            return {(): len(self)}
        counts = {cell: 0 for cell in self.space.cells(factors)}
        for i in range(len(self)):
            counts[self.cell_of(i, factors)] += 1
        return counts

    def groups(self) -> np.ndarray:
        return np.array([r.subject if r.subject else f"file:{r.file}" for r in self.records], dtype=object)

    def is_affected(self) -> np.ndarray:
        if self.space is None:
            return np.zeros(len(self), dtype=bool)
        return np.array([self.space.is_affected(r.labels) for r in self.records], dtype=bool)

    def subset(self, indices: Iterable[int]) -> "ImageSet":
        return ImageSet(self._storage, self.space, [self.records[int(i)] for i in indices])

    def join(self, other: "ImageSet", tag: str) -> "ImageSet":
        """This set's images followed by ``other``'s (e.g. a pool of unaffected faces added to a
        GAN's training images), in this set's condition space.  ``other``'s files are named
        ``@tag/<file>`` and its subjects ``@tag/<subject>``, so neither can collide with ours."""
        if (self.space is None) != (other.space is None) or (self.space is not None and self.space.names != other.space.names):
            raise DatasetError(f"{other.root}: its factors ({', '.join(other.space.names) if other.space else 'none'}) "
                               f"differ from {self.root}'s ({', '.join(self.space.names) if self.space else 'none'})")
        if self.space is not None:
            for name in self.space.names:
                extra = sorted({r.labels[name] for r in other.records} - set(self.space.factor(name).levels))
                if extra:
                    raise DatasetError(f"{other.root}: level {extra[0]!r} of factor {name!r} is not one of {self.root}'s")
        parts: dict[str, tuple[Any, str]] = {r.file: (self._storage, r.file) for r in self.records}
        records = list(self.records)
        for r in other.records:
            name = f"@{tag}/{r.file}"
            parts[name] = (other._storage, r.file)
            subject = f"@{tag}/{r.subject}" if r.subject else None
            soft = r.soft if r.soft is not None and other.space == self.space else None  # else the hard labels
            records.append(Record(name, dict(r.labels), soft, subject, dict(r.extra)))
        return ImageSet(_JoinedStorage(parts, self.root), self.space, records)

    def __repr__(self) -> str:
        return f"ImageSet({self.root}, {len(self)} images, {self.space!r})"


# ----------------------------------------------------------------------------------------
# Reading


def _read_schema(storage: _Storage) -> ConditionSpace | None:
    if not storage.exists(SCHEMA_FILE):
        return None
    import yaml

    where = storage.display(SCHEMA_FILE)
    try:
        data = yaml.safe_load(storage.read(SCHEMA_FILE).decode("utf-8"))
        return ConditionSpace.from_dict(data)
    except ConditionError as e:
        raise DatasetError(f"{where}: {e}") from None
    except Exception as e:
        raise DatasetError(f"{where}: not a valid condition schema ({type(e).__name__})") from None


def _space_from_rows(
    rows: list[dict[str, str]], factors: Sequence[str], where: str, lenient: bool = False
) -> ConditionSpace:
    """Level order from known defaults, else order of first appearance (never alphabetical).

    ``lenient`` keeps the known order even when rows use other levels, so that those rows are
    reported one by one as unknown levels (``synth data check``) instead of failing here.
    """
    levels: dict[str, list[str]] = {}
    for name in factors:
        seen = list(dict.fromkeys(r[name].strip() for r in rows if (r.get(name) or "").strip()))
        known = KNOWN_LEVELS.get(name)
        if known and (lenient or all(v in known for v in seen)):
            levels[name] = list(known)
        else:
            if known:
                unknown = [v for v in seen if v not in known]
                raise DatasetError(
                    f"{where}: factor {name!r} has level(s) {', '.join(unknown)} outside the default order "
                    f"({', '.join(known)}); list the levels in {SCHEMA_FILE}"
                )
            warnings.warn(
                f"{where}: no {SCHEMA_FILE}; levels of {name!r} ordered by first appearance: {', '.join(seen)}",
                stacklevel=3,
            )
            levels[name] = seen
    return ConditionSpace.from_levels(levels)


def _outside_reason(file: str) -> str | None:
    """Why a listed path may lead out of the dataset folder (None if it stays inside).

    Absolute paths and '..' parts are refused when the dataset is opened, so no command
    trains on, checks or copies a file that is not part of the dataset.
    """
    if file.startswith(("/", "\\")) or PureWindowsPath(file).drive or PurePosixPath(file).is_absolute():
        return "is an absolute path"
    if ".." in PurePosixPath(file.replace("\\", "/")).parts:
        return "leaves the dataset folder ('..')"
    return None


def _factor_columns(header: Sequence[str]) -> list[str]:
    return [h for h in header if h not in RESERVED_COLUMNS and not h.startswith("p_")]


def _read_labels_csv(
    storage: _Storage,
    cond: Sequence[str] | None,
    space: ConditionSpace | None,
    problems: list[tuple[str, str]] | None = None,
) -> ImageSet:
    """Parse labels.csv.  With ``problems`` given, bad rows are recorded as (kind, message) and
    skipped instead of raising, so a check can report every problem at once."""
    where = storage.display(LABELS_CSV)
    try:
        text = storage.read(LABELS_CSV).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    if "file" not in header:
        raise DatasetError(f"{where}: missing required column 'file'")
    rows = [dict(r) for r in reader]
    schema = space or _read_schema(storage)
    hint = ""
    if cond:
        factors = list(cond)
    elif schema is not None:
        factors = list(schema.names)
    else:
        factors = [c for c in _factor_columns(header) if c in KNOWN_LEVELS]
        if not factors:
            raise DatasetError(f"{where}: cannot tell which columns are factors; pass --cond or add {SCHEMA_FILE}")
    missing = [f for f in factors if f not in header]
    if missing:
        raise DatasetError(f"{where}: missing factor column(s) {', '.join(missing)}")
    if schema is not None:
        try:
            schema = schema.subset(factors)
        except ConditionError as e:
            raise DatasetError(f"{where}: {e}") from None
    else:
        # Known factors keep their default order; rows with other levels fail one by one below,
        # naming their line, with a hint to write a schema.
        schema = _space_from_rows(rows, factors, where, lenient=True)
        hint = f"; to use other levels, list them in {SCHEMA_FILE}"

    soft_cols = [h for h in header if h.startswith("p_") and "=" in h]
    soft_map: dict[str, tuple[str, str]] = {}
    for col in soft_cols:
        fac, lvl = col[2:].split("=", 1)
        if fac in schema.names:
            soft_map[col] = (fac, lvl)
    records: list[Record] = []
    seen_files: dict[str, int] = {}

    def fail(kind: str, message: str) -> None:
        if problems is None:
            raise DatasetError(message)
        problems.append((kind, message))

    for lineno, row in enumerate(rows, start=2):
        file = (row.get("file") or "").strip()
        if not file:
            fail("bad row", f"{where}: line {lineno}: empty 'file'")
            continue
        if file in seen_files:
            fail("duplicate file", f"{where}: line {lineno}: {file} already listed on line {seen_files[file]}")
            continue
        seen_files[file] = lineno
        outside = _outside_reason(file)
        if outside:
            fail("path outside the dataset", f"{where}: line {lineno}: {file} {outside}; list files relative to the dataset folder")
            continue
        labels = {f: (row.get(f) or "").strip() for f in factors}
        try:
            labels = schema.check_labels(labels)
        except ConditionError as e:
            fail("unknown level", f"{where}: line {lineno} ({file}): {e}{hint}")
            continue
        soft = None
        if soft_map and any((row.get(c) or "").strip() for c in soft_map):
            try:
                mixes: dict[str, dict[str, float]] = {}
                for col, (fac, lvl) in soft_map.items():
                    val = (row.get(col) or "").strip()
                    if val:
                        mixes.setdefault(fac, {})[lvl] = float(val)
                for fac in schema.names:  # factors without soft columns keep their hard level
                    mixes.setdefault(fac, {labels[fac]: 1.0})
                soft = schema.encode_soft(mixes)
            except (ConditionError, ValueError) as e:
                fail("bad soft label", f"{where}: line {lineno} ({file}): bad soft label ({e})")
                continue
        subject = (row.get("subject") or "").strip() or None
        extra = {k: v for k, v in row.items() if k not in factors and k not in RESERVED_COLUMNS and k not in soft_map and k}
        records.append(Record(file, labels, soft, subject, extra))
    return ImageSet(storage, schema, records)


def _read_nvlabs_json(storage: _Storage, cond: Sequence[str] | None, space: ConditionSpace | None) -> ImageSet:
    """NVlabs dataset.json: labels are class indices or label vectors (multi-hot over the space)."""
    where = storage.display(NVLABS_JSON)
    try:
        data = json.loads(storage.read(NVLABS_JSON).decode("utf-8"))
        pairs = data["labels"]
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DatasetError(f"{where}: not valid JSON") from None
    except (KeyError, TypeError):
        raise DatasetError(f"{where}: expected {{'labels': [[file, label], ...]}}") from None
    if pairs is None:
        raise DatasetError(f"{where}: 'labels' is null (unconditional dataset); train it with --cond none")
    schema = space or _read_schema(storage)
    if schema is not None and cond:
        schema = schema.subset(list(cond))
    records = []
    ints = all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[1], int) for p in pairs)
    if schema is None:
        if not ints:
            raise DatasetError(f"{where}: vector labels need a {SCHEMA_FILE} naming factors and levels")
        n = max(p[1] for p in pairs) + 1 if pairs else 1
        name = (cond or ["class"])[0]
        schema = ConditionSpace.from_levels({name: [str(i) for i in range(n)]})
    for k, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DatasetError(f"{where}: entry {k} is not [file, label]")
        file, label = pair
        outside = _outside_reason(str(file))
        if outside:
            raise DatasetError(f"{where}: entry {k}: {file} {outside}; list files relative to the dataset folder")
        try:
            if isinstance(label, int):
                if len(schema.factors) != 1:
                    raise ConditionError("integer label needs a single-factor space")
                f = schema.factors[0]
                if not 0 <= label < f.size:
                    raise ConditionError(f"class index {label} outside 0..{f.size - 1}")
                labels = {f.name: f.levels[label]}
                soft = None
            else:
                vec = np.asarray(label, dtype=np.float32)
                schema.validate(vec, soft=True)
                labels = schema.decode(vec)
                soft = None if schema.is_hard(vec) else vec
        except ConditionError as e:
            raise DatasetError(f"{where}: entry {k} ({file}): {e}") from None
        records.append(Record(str(file), labels, soft, None, {}))
    return ImageSet(storage, schema, records)


def _read_unlabelled(storage: _Storage) -> ImageSet:
    """Every image of a dataset, labels ignored: the files of labels.csv or dataset.json if
    there is one (so a labelled dataset trains unconditionally on exactly its images), else
    every image file under the folder."""
    if storage.exists(LABELS_CSV):
        where = storage.display(LABELS_CSV)
        try:
            rows = list(csv.DictReader(io.StringIO(storage.read(LABELS_CSV).decode("utf-8-sig"))))
        except UnicodeDecodeError:
            raise DatasetError(f"{where}: not UTF-8 text") from None
        files = [(r.get("file") or "").strip() for r in rows]
        if any(not f for f in files):
            raise DatasetError(f"{where}: missing required column 'file' (or an empty file name)")
    elif storage.exists(NVLABS_JSON):
        where = storage.display(NVLABS_JSON)
        try:
            data = json.loads(storage.read(NVLABS_JSON).decode("utf-8"))
            pairs = data["labels"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise DatasetError(f"{where}: expected {{'labels': [[file, label], ...]}} or {{'labels': null}}") from None
        files = [str(p[0]) if isinstance(p, (list, tuple)) else "" for p in pairs] if pairs is not None else storage.list_images()
    else:
        where = str(storage.path)
        files = storage.list_images()
    for f in files:
        outside = _outside_reason(f)
        if outside:
            raise DatasetError(f"{where}: {f} {outside}; list files relative to the dataset folder")
    return ImageSet(storage, None, [Record(f, {}) for f in files])


def open_dataset(
    path: str | Path,
    cond: Sequence[str] | None = None,
    space: ConditionSpace | None = None,
    unlabelled: bool = False,
) -> ImageSet:
    """Open a labelled dataset folder or zip.

    ``cond`` selects and orders the factors (e.g. ``["disease", "age"]``); ``space`` overrides
    the schema (e.g. the space stored in a checkpoint).  Label order comes from ``space``, the
    dataset's ``conditions.yaml`` or the known defaults, never from sorting.  ``unlabelled``
    opens any image folder (or the images of a labelled one) without labels, for unconditional
    training; its space is None.
    """
    storage = _Storage(Path(path))
    if unlabelled:
        imageset = _read_unlabelled(storage)
        where = str(path)
    elif storage.exists(LABELS_CSV):
        imageset, where = _read_labels_csv(storage, cond, space), storage.display(LABELS_CSV)
    elif storage.exists(NVLABS_JSON):
        imageset, where = _read_nvlabs_json(storage, cond, space), storage.display(NVLABS_JSON)
    else:
        raise DatasetError(f"{path}: no {LABELS_CSV} or {NVLABS_JSON} found")
    if not imageset.records:
        raise DatasetError(f"{where}: lists no images")
    return imageset


def write_labels_csv(
    path: str | Path,
    rows: ImageSet | Sequence[Record],
    space: ConditionSpace | None = None,
    extra_columns: Sequence[str] | None = None,
) -> None:
    """Write records as a labels.csv (atomically), with soft columns when any row is soft."""
    from synth.utils.io import atomic_write_text

    if isinstance(rows, ImageSet):
        space = space or rows.space
        records = rows.records
    else:
        records = list(rows)
    if space is None:
        raise DatasetError("write_labels_csv needs a condition space")
    has_subject = any(r.subject for r in records)
    has_soft = any(r.soft is not None for r in records)
    if extra_columns is None:
        extra_columns = list(dict.fromkeys(k for r in records for k in r.extra))
    header = ["file", *space.names] + (["subject"] if has_subject else []) + list(extra_columns)
    if has_soft:
        header += space.soft_columns()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in records:
        row = [r.file, *[r.labels[n] for n in space.names]]
        if has_subject:
            row.append(r.subject or "")
        row += [r.extra.get(k, "") for k in extra_columns]
        if has_soft:
            vec = r.soft if r.soft is not None else space.encode(r.labels)
            row += [f"{v:.6g}" for v in vec]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())
