"""Classifier backbones from timm, with pretrained weights that never need the network.

Weights come from a local file (safetensors, or a torch state dict read with
``weights_only=True``) or from timm's Hugging Face / torch-hub cache when it already holds
them.  When weights were asked for but cannot be found, :func:`resolve_pretrained` says
so in one line *before* any training starts.
"""
from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from synth.errors import UserError
from synth.utils.weights import WeightsFileError, read_state_dict

__all__ = [
    "ModelError",
    "check_model_name",
    "resolve_pretrained",
    "create_model",
    "load_state_dict_file",
    "model_normalisation",
]


class ModelError(UserError):
    """Unknown model name or unusable weights (one-line message)."""


def _timm():
    """timm, with this package's own models (``small_cnn``...) in its registry."""
    import timm

    import classifiers.small_cnn  # noqa: F401  (registers the models)

    return timm


def check_model_name(name: str) -> str:
    """Return ``name`` if timm knows it, else raise with close matches."""
    timm = _timm()

    if timm.is_model(name):
        return name
    all_names = timm.list_models()
    # Wildcard search first (``*b4*``-style close matches), then edit distance.
    stem = name.split(".")[0]
    pattern = f"*{stem.replace('-', '_')}*"
    close = [n for n in all_names if fnmatch.fnmatch(n, pattern)][:8]
    if not close:
        close = difflib.get_close_matches(stem, all_names, n=6, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise ModelError(f"--model: unknown model {name!r}{hint}")


def _cache_candidates(name: str) -> list[Path]:
    """Places where timm would have stored weights for ``name`` after an online run."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    cands: list[Path] = []
    if cfg is None:
        return cands
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str):
                    cands.append(Path(hit))
        except Exception:  # no hub library or a broken cache: simply nothing cached
            pass
    url = getattr(cfg, "url", None)
    if url:
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if hub_dir.is_file():
            cands.append(hub_dir)
    return cands


def _searched_places(name: str) -> str:
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    places = []
    if cfg is not None and getattr(cfg, "hf_hub_id", None):
        places.append(f"huggingface cache {cfg.hf_hub_id}")
    places.append(str(Path(torch.hub.get_dir()) / "checkpoints"))
    return ", ".join(places)


def resolve_pretrained(name: str, pretrained: bool | str | os.PathLike | None) -> Path | None:
    """Turn the ``--pretrained`` option into a weights file, or None for random init.

    ``True`` means "timm's default weights, from the local cache only"; a path means that
    file.  Raises :class:`ModelError` when weights were asked for but are not on disk.
    """
    if pretrained is None or pretrained is False or pretrained == "":
        return None
    check_model_name(name)
    if pretrained is True:
        hits = _cache_candidates(name)
        if not hits:
            raise ModelError(
                f"--pretrained: no local weights for {name} (looked in {_searched_places(name)}); "
                "pass --pretrained PATH or --no-pretrained"
            )
        return hits[0]
    path = Path(pretrained)
    if not path.is_file():
        raise ModelError(f"--pretrained: weights file {path} does not exist")
    return path


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code (safetensors, or torch with weights_only)."""
    try:
        return read_state_dict(path)
    except WeightsFileError as e:
        raise ModelError(str(e)) from None


def _load_backbone_weights(model: torch.nn.Module, path: Path, in_chans: int) -> None:
    sd = load_state_dict_file(path)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    own = model.state_dict()
    # Adapt the stem to a different channel count the way timm does for its own loads.
    first = cfg.get("first_conv")
    if in_chans != 3 and first:
        from timm.models._manipulate import adapt_input_conv

        for fc in [first] if isinstance(first, str) else list(first):
            k = fc + ".weight"
            if k in sd and sd[k].shape[1] != in_chans:
                sd[k] = adapt_input_conv(in_chans, sd[k])
    # Drop the ImageNet head when the class count differs; the new head stays random.
    dropped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    head = cfg.get("classifier")
    heads = [head] if isinstance(head, str) else list(head or [])
    bad = [k for k in dropped if not any(k.startswith(h + ".") for h in heads)]
    if bad:
        raise ModelError(f"{path}: weights do not fit {type(model).__name__} (shape mismatch at {bad[0]})")
    for k in dropped:
        del sd[k]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not any(k.startswith(h + ".") for h in heads)]
    if missing:
        raise ModelError(f"{path}: weights lack {len(missing)} tensor(s) of the model, e.g. {missing[0]}")
    if len(unexpected) > 0.5 * len(own):
        raise ModelError(f"{path}: weights belong to a different architecture ({len(unexpected)} unknown tensors)")


def create_model(
    name: str = "efficientnet_b4",
    num_classes: int = 2,
    pretrained: bool | str | os.PathLike | None = False,
    in_chans: int = 3,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
) -> torch.nn.Module:
    """A timm model with ``num_classes`` outputs; weights only from local files (see module doc)."""
    timm = _timm()

    check_model_name(name)
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}")
    weights = resolve_pretrained(name, pretrained)
    kw = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, pretrained=False)
    if drop_path_rate is not None:
        kw["drop_path_rate"] = drop_path_rate
    try:
        model = timm.create_model(name, **kw)
    except TypeError:  # a few architectures take no drop_path_rate
        kw.pop("drop_path_rate", None)
        model = timm.create_model(name, **kw)
    if weights is not None:
        _load_backbone_weights(model, weights, in_chans)
    return model


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, ...]
    std: tuple[float, ...]


def model_normalisation(model: torch.nn.Module, in_chans: int = 3) -> Normalisation:
    """Per-channel mean/std the backbone expects for [0, 1] inputs (timm's pretrained cfg)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = tuple(float(x) for x in cfg.get("mean", (0.5,) * 3))
    std = tuple(float(x) for x in cfg.get("std", (0.5,) * 3))
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return Normalisation(mean, std)
