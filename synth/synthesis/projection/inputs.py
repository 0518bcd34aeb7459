"""Inputs of a projection: the aligned photos (:func:`collect_images`, :func:`load_target`) and
the condition label they are projected for (:func:`parse_label`)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from synth.conditions import ConditionError, ConditionSpace, parse_cond_assignments
from synth.data.dataset import IMAGE_EXTENSIONS, DatasetError, decode_image
from synth.synthesis.errors import SynthesisError

__all__ = ["collect_images", "load_target", "parse_label"]


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted, hidden files skipped) in folders."""
    if not inputs:
        raise SynthesisError("no images given: name image files or a folder of aligned photos")
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            inside = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                            and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not inside:
                raise SynthesisError(f"{p}: no images in this folder ({', '.join(IMAGE_EXTENSIONS)})")
            found.extend(inside)
        elif p.is_file():
            found.append(p)
        else:
            raise SynthesisError(f"{p}: not found")
    return list(dict.fromkeys(found))


def load_target(path: str | Path, resolution: int, resize: bool = False) -> np.ndarray:
    """uint8 RGB [R, R, 3] of an aligned photo; a one-line error when it cannot be one."""
    path = Path(path)
    align = f"synth data align IN_DIR OUT_DIR --resolution {resolution}"
    try:
        # the dataset loader's reader: 16-bit and float greyscale keep their values (Pillow's own
        # RGB conversion clips them, and a 16-bit scan became a white target)
        img = decode_image(path.read_bytes(), str(path))
    except OSError as e:
        raise SynthesisError(f"{path}: not a readable image ({type(e).__name__})") from None
    except DatasetError as e:
        raise SynthesisError(str(e).replace("unreadable or corrupt image", "not a readable image")) from None
    w, h = img.size
    if w != h:
        raise SynthesisError(f"{path}: {w}x{h} px is not square, so not an aligned face; align it first ({align})")
    if w != resolution:
        if not resize:
            raise SynthesisError(f"{path}: {w}x{h} px but the generator makes {resolution}x{resolution}; "
                                 f"align it to that size ({align}) or pass --resize")
        img = img.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).copy()


def parse_label(space: ConditionSpace, spec: str | Mapping[str, str]) -> tuple[dict[str, str], np.ndarray]:
    """``disease=syndrome_a,age=infant`` -> (levels, one-hot label vector); every factor needed."""
    text = spec if isinstance(spec, str) else ",".join(f"{k}={v}" for k, v in spec.items())
    try:
        levels = parse_cond_assignments(text) if isinstance(spec, str) else {str(k): str(v) for k, v in spec.items()}
    except ConditionError as e:
        raise SynthesisError(f"--label {text!r}: {e}") from None
    for k in levels:
        if k not in space.names:
            raise SynthesisError(f"--label {text!r}: the network has no factor {k!r} (factors: {', '.join(space.names)})")
    for f in space.factors:
        if f.name not in levels:
            raise SynthesisError(f"--label {text!r}: no level for factor {f.name!r} (levels: {', '.join(f.levels)})")
        if levels[f.name] not in f.levels:
            raise SynthesisError(f"--label {text!r}: {levels[f.name]!r} is not a level of factor {f.name!r} "
                                 f"known to the network (levels: {', '.join(f.levels)})")
    levels = {f.name: levels[f.name] for f in space.factors}
    return levels, space.encode(levels)
