"""What ``synth project`` writes and how it is read back: compare.png, loss.csv, loss.png and
``projected_w.npz`` (:func:`save_projection`), loaded and checked as a :class:`ProjectedW`
(:func:`load_projected_w`, which never unpickles)."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from synth.conditions import ConditionError, ConditionSpace
from synth.synthesis.errors import SynthesisError
from synth.synthesis.projection.optimise import Projection, _noise_modules
from synth.synthesis.render import labelled_strip, save_png
from synth.utils.io import atomic_save, atomic_write_bytes, atomic_write_text

__all__ = ["PROJECT_OUTPUTS", "ProjectedW", "save_projection", "load_projected_w"]

# What `synth project` writes into --out (globs; --force removes exactly these first).
PROJECT_OUTPUTS = ("project.json", "*/projected_w.npz", "*/compare.png", "*/loss.csv", "*/loss.png")
NPZ_FORMAT = "synth-projected-w/1"


def _loss_csv(history: Sequence[Mapping[str, float]]) -> str:
    buf = io.StringIO()
    cols = ["step", "loss", "distance", "noise_reg", "lr", "w_noise"]
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(cols)
    for h in history:
        wr.writerow([int(h["step"])] + [f"{h[c]:.6g}" for c in cols[1:]])
    return buf.getvalue()


def _loss_plot(history: Sequence[Mapping[str, float]], distance: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(steps, [h["distance"] for h in history], label=f"distance ({distance})")
    ax.plot(steps, [h["loss"] for h in history], label="loss (+ noise regulariser)", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def save_projection(folder: str | Path, proj: Projection, target: np.ndarray, space: ConditionSpace,
                    levels: Mapping[str, str], label: np.ndarray, network: Mapping[str, Any], source: str = "") -> Path:
    """compare.png (target | projection), loss.csv, loss.png and, last, projected_w.npz."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_png(labelled_strip([target, proj.image], ["target", f"projected\n{proj.psnr:.1f} dB"]), folder / "compare.png")
    atomic_write_text(folder / "loss.csv", _loss_csv(proj.history))
    _loss_plot(proj.history, proj.distance, folder / "loss.png")
    arrays: dict[str, np.ndarray] = {
        "format": np.array(NPZ_FORMAT),
        "w": proj.w[None].astype(np.float32),  # [1, num_ws, w_dim], as NVlabs' projector writes it
        "w_space": np.array("W+" if proj.w_plus else "W"),
        "label": np.asarray(label, np.float32),
        "label_levels": np.array(json.dumps(dict(levels))),
        "condition_space": np.array(space.to_json()),
        "network": np.array(str(network.get("network", ""))),
        "network_sha256": np.array(str(network["network_sha256"])),
        "distance": np.array(proj.distance),
        "loss": np.array(proj.loss, np.float64),
        "distance_value": np.array(proj.distance_value, np.float64),
        "psnr": np.array(proj.psnr, np.float64),
        "steps": np.array(int(proj.config.get("steps", len(proj.history)))),
        "seed": np.array(int(proj.config.get("seed", 0))),
        "source": np.array(str(source)),
        "config": np.array(json.dumps(proj.config)),
        "w_offset_sd": np.array(proj.w_offset_sd, np.float64),
    }
    if proj.z is not None:
        arrays["z_anchor"] = np.asarray(proj.z, np.float32)
        arrays["z_residual"] = np.array(proj.z_residual, np.float64)
    for name, arr in proj.noise.items():
        arrays[f"noise:{name}"] = np.asarray(arr, np.float32)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(folder / "projected_w.npz", buf.getvalue())
    return folder / "projected_w.npz"


@dataclass
class ProjectedW:
    """A loaded ``projected_w.npz``: an identity for ``synth morph --w`` / ``synth generate --w``."""

    path: Path
    w: np.ndarray  # [num_ws, w_dim]
    w_plus: bool
    label: np.ndarray
    levels: dict[str, str]
    space: ConditionSpace
    network_sha256: str
    distance: str
    loss: float
    noise: dict[str, np.ndarray]
    z: np.ndarray | None = None  # anchor z: moves the face with the mapping network (else by mean-w offsets)

    @property
    def transfer(self) -> str:
        return "z-anchored" if self.z is not None else "mean-w offset"

    def record(self) -> dict[str, Any]:
        return {"w": str(self.path), "w_space": "W+" if self.w_plus else "W", "w_label": self.levels,
                "w_distance": self.distance, "w_loss": self.loss, "w_transfer": self.transfer}


def _str(z: Any, key: str, path: Path) -> str:
    a = z[key]
    if a.ndim != 0 or a.dtype.kind != "U":
        raise SynthesisError(f"--w {path}: '{key}' is not a text entry (not written by synth project?)")
    return str(a)


def load_projected_w(path: str | Path, G: torch.nn.Module | None = None, space: ConditionSpace | None = None,
                     network_sha256: str | None = None, network: str | Path | None = None) -> ProjectedW:
    """Read and check a ``projected_w.npz`` (never unpickles): against the network's hash,
    condition space and shapes when they are given.  Problems are one-line SynthesisErrors."""
    path = Path(path)
    if not path.is_file():
        raise SynthesisError(f"--w {path}: file not found")
    need = ("w", "label", "condition_space", "network_sha256")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in need if k not in z.files]
            if missing:
                raise SynthesisError(f"--w {path}: no '{missing[0]}' entry (not a projected_w.npz written by synth project)")
            data = {k: z[k] for k in z.files}
    except SynthesisError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise SynthesisError(f"--w {path}: not a readable projected_w.npz ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt'})") from None
    sha = _str(data, "network_sha256", path)
    if network_sha256 is not None and sha != network_sha256:
        raise SynthesisError(f"--w {path}: projected with another network (sha256 {sha[:12]}..., --network "
                             f"{network or ''} has {network_sha256[:12]}...); project again with this --network")
    try:
        w_space = ConditionSpace.from_json(_str(data, "condition_space", path))
    except ConditionError as e:
        raise SynthesisError(f"--w {path}: bad condition space ({e})") from None
    if space is not None and w_space != space:
        raise SynthesisError(f"--w {path}: its condition space differs from the network's")
    w = np.asarray(data["w"], np.float32)
    if w.ndim == 3 and w.shape[0] == 1:
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    label = np.asarray(data["label"], np.float32).reshape(-1)
    if w.ndim != 2 or not np.isfinite(w).all() or not np.isfinite(label).all() or label.size != w_space.c_dim:
        raise SynthesisError(f"--w {path}: w or label has the wrong shape or non-finite values")
    noise = {k[len("noise:"):]: np.asarray(v, np.float32) for k, v in data.items() if k.startswith("noise:")}
    if G is not None:
        if w.shape[0] == 1:
            w = np.repeat(w, G.num_ws, axis=0)
        if w.shape != (G.num_ws, G.w_dim):
            raise SynthesisError(f"--w {path}: w has shape {w.shape}, the network needs ({G.num_ws}, {G.w_dim})")
        shapes = {name: tuple(m._buffers["noise_const"].shape) for name, m in _noise_modules(G)}
        for k, v in noise.items():
            if shapes.get(k) != v.shape:
                raise SynthesisError(f"--w {path}: noise buffer {k!r} does not fit the network")
    z = np.asarray(data["z_anchor"], np.float32).reshape(-1) if "z_anchor" in data else None
    if z is not None and (not np.isfinite(z).all() or (G is not None and z.size != G.z_dim)):
        raise SynthesisError(f"--w {path}: 'z_anchor' has the wrong size or non-finite values")
    levels: dict[str, str] = {}
    if "label_levels" in data:
        try:
            levels = {str(k): str(v) for k, v in json.loads(_str(data, "label_levels", path)).items()}
        except (json.JSONDecodeError, AttributeError):
            raise SynthesisError(f"--w {path}: 'label_levels' is not valid JSON") from None
    if not levels:
        levels = w_space.decode(label)
    w_kind = _str(data, "w_space", path) if "w_space" in data else ("W+" if not np.allclose(w, w[:1]) else "W")
    return ProjectedW(
        path=path, w=w, w_plus=w_kind == "W+", label=label, levels=levels, space=w_space, network_sha256=sha,
        distance=_str(data, "distance", path) if "distance" in data else "",
        loss=float(data["loss"]) if "loss" in data else float("nan"), noise=noise, z=z,
    )
