"""Safe import of official StyleGAN2-ADA snapshot pickles (``network-snapshot-*.pkl``).

Official snapshots pickle each network through a persistence wrapper whose reconstruction
*executes the embedded source code* of the defining module.  Here a restricted unpickler maps
that reconstruction to a stub that only keeps the class name and the module state, so no code
from the file ever runs.  Allowed globals: the persistence hook, ``dnnlib.util.EasyDict`` (read
as a dict), torch tensor/parameter/storage rebuild functions, numpy scalars/arrays/dtypes,
``collections.OrderedDict`` and a few inert builtins.  Anything else is refused with a one-line
error naming the file and the global.  Tensor storages inside such pickles are legacy
``torch.save`` blobs; they are read with ``torch.load(weights_only=True)``, torch's own
restricted loader.

:func:`import_official` copies every tensor whose name and shape match, and performs the
conditional surgery needed to start a conditional model from an unconditional checkpoint:

* ``mapping.fc0.weight``: the z columns are kept (rescaled by sqrt(new_in / old_in) so that
  their *effective* equalized-lr weight is unchanged), the label columns start as the
  standard init scaled by ``label_init`` (default 0.1: the label starts as a small push).
* ``mapping.embed.<factor>.*`` (G and D) and D's whole label mapping start fresh.
* D ``b4.out`` starts fresh when its width (1 vs cmap_dim) differs.

Every tensor is reported by name as loaded, reshaped, fresh, skipped or ignored
(``resample_filter`` buffers, which this implementation derives instead of storing).
"""
from __future__ import annotations

import codecs
import collections
import io
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from synth.errors import UserError

__all__ = [
    "LegacyImportError",
    "ImportReport",
    "NetworkReport",
    "load_official_pickle",
    "import_official",
    "transfer_weights",
    "generator_kwargs_from_official",
    "discriminator_kwargs_from_official",
]

NETWORK_KEYS = ("G", "D", "G_ema")


class LegacyImportError(UserError):
    """An official pickle that cannot be imported safely (one-line message naming the file)."""


class PersistentStub:
    """What a persisted network becomes: its class name and module state, no code."""

    def __init__(self, class_name: str, state: Mapping):
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict that tolerates pickle state."""

    def __setstate__(self, state):  # EasyDict keeps its data in the dict itself
        if isinstance(state, Mapping):
            self.update(state)


def _reconstruct_persistent_obj(meta: Any) -> PersistentStub:
    # The embedded ``module_src`` is deliberately dropped unread: it is never executed.
    if not isinstance(meta, Mapping) or meta.get("type") != "class":
        raise pickle.UnpicklingError("persistent object with unsupported metadata")
    state = meta.get("state")
    if not isinstance(state, Mapping):
        raise pickle.UnpicklingError(f"persistent object {meta.get('class_name')!r} has no module state")
    return PersistentStub(str(meta.get("class_name")), state)


def _load_storage_bytes(b: bytes):
    # Legacy torch.save blob of one storage; torch's weights-only loader reads it without
    # running arbitrary code.
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "range"): range,
        # protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1'); torch allows it too
        ("_codecs", "encode"): codecs.encode,
    }
    import torch._utils as tu

    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state", "_rebuild_device_tensor_from_numpy"):
        if hasattr(tu, name):
            allowed[("torch._utils", name)] = getattr(tu, name)
    for name in ("FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage",
                 "IntStorage", "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage"):
        if hasattr(torch, name):
            allowed[("torch", name)] = getattr(torch, name)
    for name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        allowed[("torch", name)] = getattr(torch, name)
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy < 2
        from numpy.core import multiarray as ma
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = ma.scalar
        allowed[(mod, "_reconstruct")] = ma._reconstruct
    frombuffer = getattr(getattr(np, "_core", np.__dict__.get("core")), "numeric")._frombuffer
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol-5 arrays
        allowed[(mod, "_frombuffer")] = frombuffer
    return {k: v for k, v in allowed.items() if v is not None}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: dict):
        super().__init__(file)
        self._allowed = allowed

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Forbidden(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:60]!r}")


class _Forbidden(pickle.UnpicklingError):
    pass


def _read_pickle(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LegacyImportError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), _allowed_globals()).load()
    except _Forbidden as e:
        raise LegacyImportError(f"{path}: refusing to load, the pickle references forbidden global {e}") from None
    except LegacyImportError:
        raise
    except Exception as e:  # truncated/corrupt data, bad storages ...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LegacyImportError(f"{path}: not a readable StyleGAN2-ADA pickle ({type(e).__name__}: {msg})") from None


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return obj.item()
    return obj


def _flatten(stub: PersistentStub, prefix: str, out: dict[str, torch.Tensor], where: str) -> None:
    state = stub.state
    for key in ("_parameters", "_buffers"):
        for name, t in (state.get(key) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise LegacyImportError(f"{where}: {prefix}{name} is not a tensor")
            out[prefix + name] = t.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentStub):
            raise LegacyImportError(f"{where}: submodule {prefix}{name} is not a persisted network module")
        _flatten(child, f"{prefix}{name}.", out, where)


def load_official_pickle(path: str | Path) -> dict[str, dict]:
    """Read G, D and G_ema from an official snapshot without executing anything.

    Returns ``{key: {"class_name", "init_kwargs", "state_dict": {name: tensor}}}`` for each of
    ``G``, ``D``, ``G_ema`` present; state dicts are flattened from the nested modules.
    """
    path = Path(path)
    obj = _read_pickle(path)
    if not isinstance(obj, Mapping):
        raise LegacyImportError(f"{path}: expected a snapshot dict with G/D/G_ema, got {type(obj).__name__}")
    out: dict[str, dict] = {}
    for key in NETWORK_KEYS:
        net = obj.get(key)
        if net is None:
            continue
        if not isinstance(net, PersistentStub):
            raise LegacyImportError(f"{path}: entry {key!r} is not a persisted network")
        sd: dict[str, torch.Tensor] = {}
        _flatten(net, "", sd, str(path))
        out[key] = {
            "class_name": net.class_name,
            "init_kwargs": _plain(net.state.get("_init_kwargs") or {}),
            "state_dict": sd,
        }
    if not out:
        raise LegacyImportError(f"{path}: snapshot has none of G, D, G_ema")
    return out


def generator_kwargs_from_official(init_kwargs: Mapping, space=None) -> dict:
    """Our Generator kwargs for the architecture described by an official G's init kwargs."""
    k = dict(init_kwargs)
    syn = dict(k.get("synthesis_kwargs") or {})
    mapk = dict(k.get("mapping_kwargs") or {})
    if syn.get("architecture", "skip") != "skip":
        raise LegacyImportError(f"only the 'skip' generator architecture is supported, got {syn.get('architecture')!r}")
    return dict(
        z_dim=int(k.get("z_dim", 512)), w_dim=int(k.get("w_dim", 512)), space=space,
        img_resolution=int(k["img_resolution"]), img_channels=int(k.get("img_channels", 3)),
        mapping_kwargs={"num_layers": int(mapk.get("num_layers", 8))},
        synthesis_kwargs={
            "channel_base": int(syn.get("channel_base", 32768)), "channel_max": int(syn.get("channel_max", 512)),
            "num_fp16_res": int(syn.get("num_fp16_res", 0)), "conv_clamp": syn.get("conv_clamp"),
        },
    )


def discriminator_kwargs_from_official(init_kwargs: Mapping, space=None) -> dict:
    """Our Discriminator kwargs for the architecture described by an official D's init kwargs."""
    k = dict(init_kwargs)
    if k.get("architecture", "resnet") != "resnet":
        raise LegacyImportError(f"only the 'resnet' discriminator architecture is supported, got {k.get('architecture')!r}")
    epi = dict(k.get("epilogue_kwargs") or {})
    return dict(
        space=space, img_resolution=int(k["img_resolution"]), img_channels=int(k.get("img_channels", 3)),
        channel_base=int(k.get("channel_base", 32768)), channel_max=int(k.get("channel_max", 512)),
        num_fp16_res=int(k.get("num_fp16_res", 0)), conv_clamp=k.get("conv_clamp"),
        mbstd_group_size=epi.get("mbstd_group_size", 4), mbstd_num_channels=int(epi.get("mbstd_num_channels", 1)),
    )


# ----------------------------------------------------------------------------------------
# Report


def _shape(t) -> str:
    return "[" + ",".join(str(s) for s in t) + "]"


@dataclass
class NetworkReport:
    """What happened to each tensor of one target network."""

    target: str
    source: str
    loaded: list[str] = field(default_factory=list)
    reshaped: list[tuple[str, str]] = field(default_factory=list)  # (name, note)
    fresh: list[tuple[str, str]] = field(default_factory=list)  # target tensors left at their init
    skipped: list[tuple[str, str]] = field(default_factory=list)  # source tensors not used
    ignored: list[str] = field(default_factory=list)  # derived buffers (resample_filter)
    unexpected: list[str] = field(default_factory=list)  # names that break strict mode

    def summary(self) -> str:
        lines = [
            f"{self.target} <- {self.source}: {len(self.loaded)} loaded, {len(self.reshaped)} reshaped, "
            f"{len(self.fresh)} fresh, {len(self.skipped)} skipped, {len(self.ignored)} ignored"
        ]
        lines += [f"  loaded    {n}" for n in self.loaded]
        lines += [f"  reshaped  {n}: {note}" for n, note in self.reshaped]
        lines += [f"  fresh     {n}: {note}" for n, note in self.fresh]
        lines += [f"  skipped   {n}: {note}" for n, note in self.skipped]
        lines += [f"  ignored   {n}" for n in self.ignored]
        return "\n".join(lines)


@dataclass
class ImportReport:
    path: str
    networks: list[NetworkReport] = field(default_factory=list)

    def __getitem__(self, target: str) -> NetworkReport:
        for r in self.networks:
            if r.target == target:
                return r
        raise KeyError(target)

    @property
    def unexpected(self) -> list[str]:
        return [f"{r.target}.{n}" for r in self.networks for n in r.unexpected]

    def summary(self) -> str:
        return "\n".join([f"import from {self.path}"] + [r.summary() for r in self.networks])


# ----------------------------------------------------------------------------------------
# Surgery


def _is_label_param(name: str, is_d: bool) -> bool:
    """Tensors that exist only because the target is conditional (expected to start fresh)."""
    if name.startswith("mapping.embed."):
        return True
    if is_d and (name.startswith("mapping.") or name.startswith("b4.out.")):
        return True
    return False


def _fc0_surgery(src: torch.Tensor, dst: torch.Tensor, z_dim: int, label_init: float, gen: torch.Generator) -> torch.Tensor | None:
    """New fc0 weight keeping the z columns of ``src``; None when the shapes cannot be reconciled."""
    if src.ndim != 2 or dst.ndim != 2 or src.shape[0] != dst.shape[0] or src.shape[1] < z_dim or dst.shape[1] < z_dim:
        return None
    out = torch.empty(dst.shape, dtype=torch.float32)
    # stored weights are scaled at run time by lr_mul/sqrt(fan_in): rescale so the z
    # columns keep their effective value under the new fan-in
    out[:, :z_dim] = src[:, :z_dim].float() * math.sqrt(dst.shape[1] / src.shape[1])
    n_label = dst.shape[1] - z_dim
    if n_label:
        # standard init is N(0,1)/lr_mul in stored units; dst carries that scale already
        std = float(dst.float().std()) if dst.numel() > 1 else 1.0
        out[:, z_dim:] = torch.randn([dst.shape[0], n_label], generator=gen) * std * label_init
    return out


def _import_into(
    net: nn.Module, target: str, src_key: str, src_sd: Mapping[str, torch.Tensor], is_d: bool,
    label_init: float, gen: torch.Generator,
) -> NetworkReport:
    rep = NetworkReport(target=target, source=src_key)
    dst_sd = net.state_dict()
    used: set[str] = set()
    new_values: dict[str, torch.Tensor] = {}
    z_dim = getattr(net, "z_dim", 0)
    for name, dst in dst_sd.items():
        src = src_sd.get(name)
        if src is not None and tuple(src.shape) == tuple(dst.shape):
            new_values[name] = src
            rep.loaded.append(name)
            used.add(name)
            continue
        if src is not None and not is_d and name == "mapping.fc0.weight":
            w = _fc0_surgery(src, dst, z_dim, label_init, gen)
            if w is not None:
                new_values[name] = w
                used.add(name)
                rep.reshaped.append(
                    (name, f"{_shape(src.shape)} -> {_shape(dst.shape)}: kept {z_dim} z columns, "
                           f"{dst.shape[1] - z_dim} label columns new (x{label_init} init)")
                )
                continue
        if src is not None:
            used.add(name)
            note = f"shape differs: source {_shape(src.shape)}, model {_shape(dst.shape)}; kept the model's init"
            rep.fresh.append((name, note))
            if not _is_label_param(name, is_d):
                rep.unexpected.append(name)
            continue
        rep.fresh.append((name, "not in the source; kept the model's init"))
        if not _is_label_param(name, is_d):
            rep.unexpected.append(name)
    for name in src_sd:
        if name in used:
            continue
        if name.endswith("resample_filter"):
            rep.ignored.append(name)
            continue
        rep.skipped.append((name, "no tensor of that name in the model"))
        # the official conditional embedding has no counterpart in the factored one
        if not name.startswith("mapping.embed."):
            rep.unexpected.append(name)
    with torch.no_grad():
        for name, value in new_values.items():
            dst_sd[name].copy_(value.to(dst_sd[name].dtype))
    return rep


def import_official(
    path: str | Path,
    G: nn.Module | None = None,
    D: nn.Module | None = None,
    G_ema: nn.Module | None = None,
    report: bool = True,
    strict: bool = False,
    label_init: float = 0.1,
    seed: int = 0,
) -> ImportReport:
    """Copy an official snapshot's weights into our networks, with conditional surgery.

    G takes the source ``G``, G_ema the source ``G_ema`` (either falls back to the other) and
    D the source ``D``.  ``report=True`` prints :meth:`ImportReport.summary`.  ``strict=True``
    raises :class:`LegacyImportError` (and changes nothing) if anything other than the known
    conditional tensors had to be reshaped, skipped or left fresh.
    """
    path = Path(path)
    return transfer_weights(load_official_pickle(path), str(path), G, D, G_ema, report, strict, label_init, seed)


def transfer_weights(
    nets: Mapping[str, Mapping],
    where: str,
    G: nn.Module | None = None,
    D: nn.Module | None = None,
    G_ema: nn.Module | None = None,
    report: bool = True,
    strict: bool = False,
    label_init: float = 0.1,
    seed: int = 0,
) -> ImportReport:
    """The surgery of :func:`import_official` from state dicts: ``nets`` maps ``G``/``G_ema``/``D``
    to ``{"state_dict": {...}}``, e.g. an unconditional snapshot of ours (``where`` names it)."""
    gen = torch.Generator().manual_seed(int(seed))
    plan = []
    for target, net, prefs, is_d in (("G", G, ("G", "G_ema"), False), ("G_ema", G_ema, ("G_ema", "G"), False), ("D", D, ("D",), True)):
        if net is None:
            continue
        src_key = next((k for k in prefs if k in nets), None)
        if src_key is None:
            raise LegacyImportError(f"{where}: has no {' or '.join(prefs)} network to import into {target}")
        plan.append((target, net, src_key, is_d))
    if not plan:
        raise LegacyImportError(f"{where}: give at least one of G, D, G_ema to import into")

    # back up first so that a strict failure (or any error) leaves the caller's networks untouched
    rep = ImportReport(path=where)
    backups = {target: {k: v.clone() for k, v in net.state_dict().items()} for target, net, _, _ in plan}
    try:
        for target, net, src_key, is_d in plan:
            rep.networks.append(_import_into(net, target, src_key, nets[src_key]["state_dict"], is_d, label_init, gen))
        if strict and rep.unexpected:
            shown = ", ".join(rep.unexpected[:8]) + (" ..." if len(rep.unexpected) > 8 else "")
            raise LegacyImportError(f"{where}: strict import failed, unexpected mismatches: {shown}")
    except BaseException:
        with torch.no_grad():
            for target, net, _, _ in plan:
                for k, v in net.state_dict().items():
                    v.copy_(backups[target][k])
        raise
    if report:
        print(rep.summary())
    return rep
