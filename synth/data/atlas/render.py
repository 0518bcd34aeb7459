"""Render an atlas folder (PNG images + labels.csv + conditions.yaml) and cache it.

Every image has its own random generator seeded from (seed, kind, index), so output is
deterministic and does not depend on rendering order; PNGs carry no metadata, so the
same arguments give byte-identical folders.  A folder only appears once it is complete:
rendering goes to a temporary sibling that is renamed into place at the end.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from synth.errors import UserError
from synth.conditions import ConditionSpace

from . import draw
from .faces import plan_faces, render_face
from .skin import plan_skin, render_skin

__all__ = [
    "AtlasError",
    "ATLAS_VERSION",
    "KINDS",
    "check_resolution",
    "render_atlas",
    "ensure_atlas",
    "atlas_cache_dir",
    "atlas_space",
    "parse_counts",
]

# Bump when the pictures change, so cached atlases are re-rendered.
ATLAS_VERSION = 3  # 3: conditions.yaml leaves embed_dim to the training run
KINDS = ("faces", "skin")
_KIND_CODE = {"faces": 0xFACE, "skin": 0x5C1}
MARKER = "atlas.json"


class AtlasError(UserError):
    """Bad atlas arguments or an unusable output folder (one-line message)."""


def check_resolution(resolution: int) -> int:
    r = int(resolution)
    if r < 16 or r & (r - 1):
        raise AtlasError(f"--resolution must be a power of two >= 16, got {resolution}")
    return r


def _check_args(kind: str, per_cell: int, resolution: int, seed: int) -> None:
    if kind not in KINDS:
        raise AtlasError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if int(per_cell) < 1:
        raise AtlasError(f"--per-cell must be at least 1, got {per_cell}")
    check_resolution(resolution)
    if int(seed) < 0:
        raise AtlasError(f"--seed must be non-negative, got {seed}")


def atlas_space(kind: str) -> ConditionSpace:
    return ConditionSpace.default(["disease", "age"] if kind == "faces" else ["stage"])


def _csv_text(header: list[str], rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def parse_counts(spec: str, kind: str, per_cell: int) -> dict[tuple[str, ...], int]:
    """``--counts``: images per cell, from ``per_cell`` for every cell, then the comma-separated
    entries in order: ``study`` (faces: the study's skewed shape, :data:`STUDY_COUNTS`),
    ``LEVEL=N`` (every cell with that level of any factor) or ``DISEASE/AGE=N`` (one cell)."""
    from .faces import AGE_BRACKETS, DISEASES, STUDY_COUNTS
    from .skin import STAGES

    cells = [(d, a[0]) for d in DISEASES for a in AGE_BRACKETS] if kind == "faces" else [(s,) for s in STAGES]
    counts = {c: int(per_cell) for c in cells}
    levels = {lv for c in cells for lv in c}
    for token in [t.strip() for t in spec.split(",") if t.strip()]:
        if token == "study":
            if kind != "faces":
                raise AtlasError("--counts study: the study's shape is for faces (disease x age)")
            counts.update(STUDY_COUNTS)
            continue
        key, eq, value = token.partition("=")
        try:
            n = int(value)
        except ValueError:
            n = -1
        if not eq or n < 0:
            raise AtlasError(f"--counts {token!r}: expected LEVEL=N or {'DISEASE/AGE' if kind == 'faces' else 'STAGE'}=N "
                             f"with N >= 0, or study")
        parts = tuple(p.strip() for p in key.split("/"))
        if len(parts) == len(cells[0]) and tuple(parts) in counts:
            counts[tuple(parts)] = n
        elif len(parts) == 1 and parts[0] in levels:
            for c in cells:
                if parts[0] in c:
                    counts[c] = n
        else:
            raise AtlasError(f"--counts {token!r}: {key!r} is no level or cell of the {kind} atlas "
                             f"(levels: {', '.join(sorted(levels))})")
    if not any(counts.values()):
        raise AtlasError(f"--counts {spec!r}: every cell would be empty")
    return counts


def _render_into(dst: Path, kind: str, per_cell: int | dict, resolution: int, seed: int, progress: bool) -> int:
    """Write a complete atlas into the (empty) folder ``dst``; returns the image count."""
    (dst / "img").mkdir(parents=True, exist_ok=True)
    plan = plan_faces(per_cell, seed) if kind == "faces" else plan_skin(per_cell, seed)
    rows: list[dict[str, str]] = []
    for i, spec in enumerate(tqdm(plan, desc=f"atlas {kind}", unit="img", disable=not progress)):
        rng = np.random.default_rng([int(seed), _KIND_CODE[kind], 2, i])
        name = f"img/{i:06d}.png"
        subj = spec.subject
        if kind == "faces":
            img = render_face(spec, resolution, rng)
            row = {"file": name, "disease": subj.disease, "age": spec.age, "subject": subj.subject,
                   "age_years": f"{spec.age_years:.2f}", "severity": f"{subj.severity:.4f}"}
        else:
            img, n_mac, n_bump = render_skin(spec, resolution, rng)
            row = {"file": name, "stage": subj.stage, "subject": subj.subject,
                   "severity": f"{subj.severity:.4f}", "macules": str(n_mac), "neurofibromas": str(n_bump)}
        row.update(subj.identity_columns())
        rows.append(row)
        (dst / name).write_bytes(draw.to_png_bytes(img))
    space = atlas_space(kind)
    (dst / "labels.csv").write_text(_csv_text(list(rows[0]), rows))
    space.save(dst / "conditions.yaml")
    meta = {
        "format": "synth-atlas/1",
        "version": ATLAS_VERSION,
        "kind": kind,
        "per_cell": int(per_cell) if not isinstance(per_cell, dict) else None,
        **({"counts": {"/".join(c): n for c, n in per_cell.items()}} if isinstance(per_cell, dict) else {}),
        "resolution": int(resolution),
        "seed": int(seed),
        "images": len(rows),
        "factors": list(space.names),
    }
    # the marker is written last: its presence means the folder is complete
    (dst / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
    return len(rows)


def _make_tmp(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder permissions
    return tmp


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` folder to ``target``, replacing what is there."""
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, trash / "old")
        os.replace(tmp, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, target)


def render_atlas(
    out_dir: str | os.PathLike,
    kind: str = "faces",
    per_cell: int = 20,
    resolution: int = 64,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    counts: dict[tuple[str, ...], int] | None = None,
) -> Path:
    """Render an atlas into ``out_dir`` and return its path.

    ``out_dir`` must be missing or empty unless ``overwrite`` is set, in which case its
    previous contents are replaced once the new atlas is complete. ``counts`` (from
    :func:`parse_counts`) replaces ``per_cell`` with a count per cell.
    """
    _check_args(kind, per_cell, resolution, seed)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AtlasError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AtlasError(f"{out}: folder is not empty (use --force to replace it)")
    resolved = out.resolve()
    if overwrite and (resolved == Path(resolved.anchor) or resolved == Path.home().resolve()
                      or Path.cwd().resolve().is_relative_to(resolved)):
        raise AtlasError(f"{out}: refusing to replace this folder (it holds the working folder, home or root)")
    tmp = _make_tmp(out)
    try:
        _render_into(tmp, kind, counts if counts is not None else int(per_cell), int(resolution), int(seed), progress)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def atlas_cache_dir(kind: str = "faces", per_cell: int = 20, resolution: int = 64, seed: int = 0) -> Path:
    """Where :func:`ensure_atlas` keeps an atlas: ``$SYNTH_CACHE/atlas/<key>`` (default
    ``~/.cache/synth/atlas/<key>``), key ``<kind>-<per_cell>-<resolution>-<seed>``."""
    env = os.environ.get("SYNTH_CACHE")
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "synth"
    return root / "atlas" / f"{kind}-{int(per_cell)}-{int(resolution)}-{int(seed)}"


def _is_current(path: Path) -> bool:
    try:
        meta = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("version") == ATLAS_VERSION


def ensure_atlas(
    kind: str = "faces", per_cell: int = 20, resolution: int = 64, seed: int = 0, progress: bool = True
) -> Path:
    """Return a cached atlas folder, rendering it the first time (or after a renderer change)."""
    _check_args(kind, per_cell, resolution, seed)
    target = atlas_cache_dir(kind, per_cell, resolution, seed)
    if _is_current(target):
        return target
    tmp = _make_tmp(target)
    try:
        _render_into(tmp, kind, int(per_cell), int(resolution), int(seed), progress)
        if _is_current(target):  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        try:
            _replace_dir(tmp, target)
        except OSError:
            if not _is_current(target):
                raise
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
