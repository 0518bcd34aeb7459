"""Training snapshots in one safe file: safetensors tensors + a JSON metadata blob.

A ``.ckpt`` file is a plain safetensors file.  Its ``__metadata__`` carries one JSON string
(key ``synth``) with the format version, the network configs (``.config()``), the condition
space, training options, counters and the non-tensor parts of optimiser and RNG states.
Loading never executes code (no pickle), so a snapshot from a stranger is as safe to open
as an image.

``save_checkpoint`` takes a flat dict and sorts each value by type:

* ``nn.Module``            -> its ``state_dict`` under ``<name>.`` and its ``config()``
* optimiser ``state_dict`` -> state tensors under ``<name>.state.<param>.<key>``, the rest in JSON
* ``torch.Tensor``         -> stored under ``t.<name>``
* ``numpy.ndarray``        -> stored under ``a.<name>`` (returned as numpy)
* ``ConditionSpace``       -> its dict
* anything else            -> must be JSON-serialisable

``load_checkpoint`` returns the same names: modules as :class:`ModuleEntry` (class name,
config, state dict) so the caller decides where to build them.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from synth.errors import UserError
from synth.conditions import ConditionError, ConditionSpace
from synth.utils.io import atomic_write_bytes

__all__ = [
    "CheckpointError",
    "ModuleEntry",
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "read_space",
    "build_module",
    "load_generator",
    "is_checkpoint",
]

FORMAT = "synth-checkpoint"
VERSION = 1
_META_KEY = "synth"
# A safetensors header longer than this is certainly not one of ours (guards a corrupt length).
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(UserError):
    """A checkpoint that cannot be used as given (one-line message naming the file)."""


@dataclass
class ModuleEntry:
    """A network stored in a checkpoint: enough to rebuild it without its source code."""

    cls: str
    config: dict
    state_dict: dict[str, torch.Tensor]

    def build(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        return build_module(self, device)


def _is_optimizer_state(v: Any) -> bool:
    return isinstance(v, Mapping) and set(v.keys()) == {"state", "param_groups"}


def _tensor_for_storage(t: torch.Tensor) -> torch.Tensor:
    # safetensors refuses shared or non-contiguous storage; a private contiguous copy is cheap.
    return t.detach().to("cpu").contiguous().clone()


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a crash mid-write leaves the old file intact)."""
    from safetensors.torch import save as st_save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "modules": {},
        "optimizers": {},
        "tensors": [],
        "arrays": {},
        "values": {},
    }
    for name, value in state.items():
        if "." in name:
            raise CheckpointError(f"{path}: entry name {name!r} must not contain '.'")
        if isinstance(value, torch.nn.Module):
            cfg = value.config() if hasattr(value, "config") else {}
            meta["modules"][name] = {"class": type(value).__name__, "config": cfg}
            for k, t in value.state_dict().items():
                tensors[f"{name}.{k}"] = _tensor_for_storage(t)
        elif isinstance(value, ModuleEntry):
            meta["modules"][name] = {"class": value.cls, "config": value.config}
            for k, t in value.state_dict.items():
                tensors[f"{name}.{k}"] = _tensor_for_storage(t)
        elif _is_optimizer_state(value):
            scalars: dict[str, dict[str, Any]] = {}
            for pid, pstate in value["state"].items():
                for k, v in pstate.items():
                    if isinstance(v, torch.Tensor):
                        tensors[f"{name}.state.{pid}.{k}"] = _tensor_for_storage(v)
                    else:
                        scalars.setdefault(str(pid), {})[k] = v
            meta["optimizers"][name] = {
                "param_groups": value["param_groups"],
                "state_ids": [str(p) for p in value["state"].keys()],
                "scalars": scalars,
            }
        elif isinstance(value, torch.Tensor):
            meta["tensors"].append(name)
            tensors[f"t.{name}"] = _tensor_for_storage(value)
        elif isinstance(value, np.ndarray):
            meta["arrays"][name] = str(value.dtype)
            arr = value if value.dtype != np.uint32 else value.astype(np.int64)  # safetensors lacks uint32
            tensors[f"a.{name}"] = torch.from_numpy(np.ascontiguousarray(arr)).clone()
        elif isinstance(value, ConditionSpace):
            meta["values"][name] = {"__condition_space__": value.frozen().to_dict()}
        else:
            meta["values"][name] = value
    try:
        blob = json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: metadata is not JSON-serialisable ({e})") from None
    data = st_save(tensors, metadata={_META_KEY: blob})
    atomic_write_bytes(path, data)


def _read_header(path: Path, data: bytes) -> dict:
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated or empty file ({len(data)} bytes), not a synth checkpoint")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise CheckpointError(f"{path}: truncated or not a safetensors file (header length {n}, file {len(data)} bytes)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header")
    md = header.get("__metadata__") or {}
    if _META_KEY not in md:
        raise CheckpointError(f"{path}: a safetensors file but not a synth checkpoint (no '{_META_KEY}' metadata)")
    try:
        meta = json.loads(md[_META_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {meta.get('format') if isinstance(meta, dict) else None!r}")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')} is newer than this toolkit ({VERSION})")
    # Every tensor's byte range must lie inside the file: catches truncation with an intact header.
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        try:
            end = max(end, int(v["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise CheckpointError(f"{path}: corrupt entry {k!r} in safetensors header") from None
    if 8 + n + end > len(data):
        raise CheckpointError(f"{path}: truncated file ({len(data)} bytes, expected {8 + n + end})")
    return meta


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a .ckpt file")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror})") from None


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata only (cheap enough for listing runs)."""
    path = Path(path)
    return _read_header(path, _read_bytes(path))


def _decode_value(value: Any) -> Any:
    """A metadata value as saved: condition spaces come back as :class:`ConditionSpace`."""
    if isinstance(value, dict) and "__condition_space__" in value:
        return ConditionSpace.from_dict(value["__condition_space__"])
    return value


def read_space(path: str | Path) -> ConditionSpace | None:
    """The condition space saved under ``space``, from the metadata alone (no tensors decoded)."""
    try:
        return _decode_value(read_metadata(path)["values"].get("space"))
    except (KeyError, TypeError, AttributeError, ValueError, ConditionError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(e).__name__}: {e})".splitlines()[0]) from None


def is_checkpoint(path: str | Path) -> bool:
    try:
        read_metadata(path)
        return True
    except CheckpointError:
        return False


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (never executes code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    data = _read_bytes(path)
    meta = _read_header(path, data)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt tensor data ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if str(map_location) != "cpu":
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    out: dict[str, Any] = {}
    try:
        for name, info in meta["modules"].items():
            prefix = name + "."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix) and not k.startswith(prefix + "state.")}
            out[name] = ModuleEntry(info["class"], info["config"], sd)
        for name, info in meta["optimizers"].items():
            state: dict[int, dict[str, Any]] = {}
            for pid in info["state_ids"]:
                st = dict(info["scalars"].get(pid, {}))
                prefix = f"{name}.state.{pid}."
                st.update({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
                state[int(pid)] = st
            out[name] = {"state": state, "param_groups": info["param_groups"]}
        for name in meta["tensors"]:
            out[name] = tensors[f"t.{name}"]
        for name, dtype in meta["arrays"].items():
            out[name] = tensors[f"a.{name}"].cpu().numpy().astype(dtype)
        for name, value in meta["values"].items():
            out[name] = _decode_value(value)
    except (KeyError, TypeError, ValueError, ConditionError) as e:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(e).__name__}: {e})".splitlines()[0]) from None
    return out


def build_module(entry: ModuleEntry, device: str | torch.device = "cpu", where: str = "") -> torch.nn.Module:
    """Rebuild a Generator/Discriminator from its stored config and load its weights strictly."""
    from synth import networks

    cls = getattr(networks, entry.cls, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise CheckpointError(f"{where or 'checkpoint'}: unknown network class {entry.cls!r}")
    try:
        module = cls.from_config(entry.config)
    except Exception as e:
        raise CheckpointError(f"{where or 'checkpoint'}: cannot build {entry.cls} from stored config ({e})".splitlines()[0]) from None
    load_state_strict(module, entry.state_dict, where=where or "checkpoint", name=entry.cls)
    return module.to(device)


def load_state_strict(module: torch.nn.Module, sd: Mapping[str, torch.Tensor], where: str, name: str) -> None:
    """load_state_dict with a one-line message naming missing, extra or reshaped tensors."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    extra = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or extra or shape:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
        if shape:
            parts.append(f"shape mismatch {', '.join(shape[:3])}")
        raise CheckpointError(f"{where}: {name} weights do not fit the network ({'; '.join(parts)})")
    module.load_state_dict(dict(sd), strict=True)


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True):
    """-> (G, space, meta): the (EMA) generator of a snapshot, in eval mode, ready to sample."""
    path = Path(path)
    ck = load_checkpoint(path)
    key = "G_ema" if ema and "G_ema" in ck else "G"
    if not isinstance(ck.get(key), ModuleEntry):
        raise CheckpointError(f"{path}: no generator ({key}) in checkpoint")
    G = build_module(ck[key], device, where=str(path)).eval().requires_grad_(False)
    space = ck.get("space") if isinstance(ck.get("space"), ConditionSpace) else getattr(G, "space", None)
    meta = {k: v for k, v in ck.items() if not isinstance(v, (ModuleEntry, torch.Tensor)) and not _is_optimizer_state(v)}
    return G, space, meta
