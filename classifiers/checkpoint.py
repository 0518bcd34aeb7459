"""Classifier checkpoints: one safetensors file whose header carries JSON metadata.

The metadata (model name, classes, target, condition space, image size, normalisation,
training config) is enough to rebuild the network with timm and to preprocess images the
way training did.  Nothing is unpickled: loading never executes code from the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from classifiers.models import ModelError, create_model
from synth.errors import UserError
from synth.utils.io import atomic_path, atomic_write_text

__all__ = ["ClassifierCheckpointError", "save_classifier", "load_classifier", "read_meta", "find_checkpoints", "CKPT_NAME"]

FORMAT = "synth-classifier/1"
CKPT_NAME = "model.safetensors"


class ClassifierCheckpointError(UserError):
    """Missing, corrupt or foreign classifier checkpoint (one-line message)."""


def save_classifier(path: str | os.PathLike, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``model``'s weights and ``meta`` atomically; also a readable ``.json`` beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / CKPT_NAME
    meta = dict(meta)
    meta["format"] = FORMAT
    # safetensors refuses shared or non-contiguous storage; clone to plain tensors.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    text = json.dumps(meta, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"synth_classifier": text})
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True))
    return path


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CKPT_NAME
    if not path.is_file():
        raise ClassifierCheckpointError(f"{path}: classifier checkpoint not found")
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a checkpoint without loading its tensors."""
    from safetensors import safe_open

    path = _resolve(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:
        raise ClassifierCheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__})") from None
    if "synth_classifier" not in header:
        raise ClassifierCheckpointError(f"{path}: safetensors file without classifier metadata")
    try:
        meta = json.loads(header["synth_classifier"])
    except json.JSONDecodeError:
        raise ClassifierCheckpointError(f"{path}: classifier metadata is not valid JSON") from None
    if meta.get("format") != FORMAT:
        raise ClassifierCheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return meta


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the network from metadata, load weights, return ``(model.eval(), meta)``."""
    from safetensors.torch import load_file

    path = _resolve(path)
    meta = read_meta(path)
    try:
        model = create_model(
            meta["model"], num_classes=len(meta["class_names"]), pretrained=False, in_chans=int(meta.get("in_chans", 3))
        )
    except (ModelError, KeyError) as e:
        raise ClassifierCheckpointError(f"{path}: cannot rebuild model ({e})") from None
    try:
        state = load_file(str(path))
        model.load_state_dict(state, strict=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClassifierCheckpointError(f"{path}: weights do not load ({msg[:200]})") from None
    meta["path"] = str(path)
    return model.to(device).eval(), meta


def find_checkpoints(spec: str | os.PathLike | list) -> list[Path]:
    """Checkpoint files from a file, a run folder, a cv folder (``fold*/``) or a list."""
    if isinstance(spec, (list, tuple)):
        return [p for s in spec for p in find_checkpoints(s)]
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        if (p / CKPT_NAME).is_file():
            return [p / CKPT_NAME]
        hits = sorted(p.glob(f"*/{CKPT_NAME}"))
        if hits:
            return hits
        raise ClassifierCheckpointError(f"{p}: no {CKPT_NAME} in it or in its sub-folders")
    raise ClassifierCheckpointError(f"{p}: classifier checkpoint not found")
