"""Projection: find the w (or w+) of an aligned photo for a chosen condition label.

The StyleGAN2 projector (Karras et al. 2020, NVlabs ``projector.py``), made conditional:
optimisation starts from the *label's* mean w (over many z), perturbs w with noise that ramps
down over the first 75% of the steps, ramps the learning rate up and then down (cosine), and
optimises the per-pixel noise buffers as well, with the multi-scale autocorrelation
regulariser that keeps them noise-like.  The distance is

* ``lpips-vgg`` / ``lpips-alex``: LPIPS (``lpips`` package) when the torchvision backbone
  weights are on disk (``--lpips-weights FILE`` or the torch hub cache); nothing is ever
  downloaded: the backbone is built with random weights and loaded from the local file, and
  LPIPS's linear layers ship inside the ``lpips`` package;
* ``pyramid-l2`` (the fallback): mean squared pixel error summed over an image pyramid
  (full size, 1/2, 1/4, ... down to 4 px), so coarse shape and fine detail both count;
  ``+d-features`` adds the discriminator's block features when the checkpoint has a D.

A projected face keeps the label it was projected for.  ``synth project`` also fits an *anchor
z*, the z whose w at that label is nearest to the projection (:func:`anchor_z`), and the face
moves to another label c' as ``w + mapping(z, c') - mapping(z, c)``: the generator's conditional
mapping decides what the new label changes, as in a seed's morph, and what the mapping cannot
reach stays as it is.  Without an anchor (``--no-z-anchor``, or an NVlabs file) the move is
``w + mean_w(c') - mean_w(c)``.  Both reproduce the projection exactly at c' = c, psi = 1
(:func:`identity_ws`, used by ``synth morph --w`` and ``synth generate --w``).  The optimised
noise buffers travel in ``projected_w.npz`` and are put in place while the identity is rendered
(:func:`projected_noise`).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from synth.conditions import ConditionError, ConditionSpace
from synth.data.dataset import IMAGE_EXTENSIONS
from synth.synthesis.errors import SynthesisError
from synth.utils.io import atomic_save, atomic_write_bytes, atomic_write_text

__all__ = [
    "ProjectConfig",
    "Projection",
    "ProjectedW",
    "IMAGE_SUFFIXES",
    "PROJECT_OUTPUTS",
    "LPIPS_BACKBONES",
    "collect_images",
    "load_target",
    "parse_label",
    "label_stats",
    "find_lpips_backbone",
    "make_distance",
    "PyramidL2",
    "LPIPSDistance",
    "DFeatures",
    "open_discriminator",
    "project",
    "psnr",
    "render_w",
    "save_projection",
    "load_projected_w",
    "identity_ws",
    "anchor_z",
    "IdentityRenderer",
    "projected_noise",
    "plan_identity",
    "plan_identities",
]

IMAGE_SUFFIXES = IMAGE_EXTENSIONS  # the dataset loader's list: one set of readable files for every command
# What `synth project` writes into --out (globs; --force removes exactly these first).
PROJECT_OUTPUTS = ("project.json", "*/projected_w.npz", "*/compare.png", "*/loss.csv", "*/loss.png")
# torchvision's ImageNet checkpoints of the LPIPS backbones, as the torch hub caches them.
LPIPS_BACKBONES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
NPZ_FORMAT = "synth-projected-w/1"


@dataclass(frozen=True)
class ProjectConfig:
    """Optimisation settings (defaults: the StyleGAN2 projector's)."""

    steps: int = 500
    seed: int = 0
    w_plus: bool = False
    initial_lr: float = 0.1
    lr_rampup: float = 0.05  # fraction of the steps
    lr_rampdown: float = 0.25
    initial_noise_factor: float = 0.05  # w noise, in units of the label's w spread
    noise_ramp: float = 0.75
    noise_reg_weight: float = 1e5
    optimize_noise: bool = True
    w_prior: float = 0.0  # weight of the squared distance of w from the label's mean w, in units of its spread
    anchor_z: bool = True  # also fit the z whose w (at the label) is nearest: how --w moves the face to other labels
    mean_w_samples: int = 10000
    mean_w_seed: int = 0

    def check(self) -> "ProjectConfig":
        if self.steps < 1:
            raise SynthesisError(f"--steps {self.steps}: need at least 1")
        if not (math.isfinite(self.initial_lr) and self.initial_lr > 0):
            raise SynthesisError(f"--lr {self.initial_lr}: must be a positive number")
        if not (math.isfinite(self.w_prior) and self.w_prior >= 0):
            raise SynthesisError(f"--w-prior {self.w_prior}: must be a number >= 0")
        if self.mean_w_samples < 2:
            raise SynthesisError(f"--mean-w-samples {self.mean_w_samples}: need at least 2")
        return self


# ----------------------------------------------------------------------------------------
# inputs


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively, sorted, hidden files skipped) in folders."""
    if not inputs:
        raise SynthesisError("no images given: name image files or a folder of aligned photos")
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            inside = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in q.relative_to(p).parts))
            if not inside:
                raise SynthesisError(f"{p}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(inside)
        elif p.is_file():
            found.append(p)
        else:
            raise SynthesisError(f"{p}: not found")
    return list(dict.fromkeys(found))


def load_target(path: str | Path, resolution: int, resize: bool = False) -> np.ndarray:
    """uint8 RGB [R, R, 3] of an aligned photo; a one-line error when it cannot be one."""
    from PIL import Image

    from synth.data.dataset import DatasetError, decode_image

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
    from synth.conditions import parse_cond_assignments

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


def _first(t: torch.Tensor) -> torch.Tensor:
    return t[:, 0] if t.ndim == 3 else t


@torch.no_grad()
def label_stats(G: torch.nn.Module, label: np.ndarray, num_samples: int = 10000, seed: int = 0,
                batch: int = 2000) -> tuple[torch.Tensor, float]:
    """(mean w [w_dim], spread) of one label over ``num_samples`` z: the projector's start and the
    unit of its w noise (spread = sqrt of the mean squared distance to the mean)."""
    c = torch.as_tensor(np.asarray(label, np.float32)).reshape(1, -1)
    w = torch.cat([ws.double() for ws in G.mapping.sample_ws(c, num_samples, seed, batch)])
    avg = w.mean(dim=0)
    std = float(((w - avg).square().sum(dim=1).mean()).sqrt())
    return avg.float(), std


# ----------------------------------------------------------------------------------------
# distances: callables (synth, target) -> scalar; images [1, C, H, W] in [-1, 1]


class PyramidL2:
    """Mean squared error summed over an image pyramid (full, 1/2, 1/4, ... >= ``min_size`` px)."""

    name = "pyramid-l2"

    def __init__(self, min_size: int = 4):
        self.min_size = int(min_size)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = (x - y).square().mean()
        while x.shape[-1] >= 2 * self.min_size:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            loss = loss + (x - y).square().mean()
        return loss


class LPIPSDistance:
    """LPIPS of the ``lpips`` package; small images are upsampled to 64 px, big ones reduced to 256."""

    def __init__(self, model: torch.nn.Module, net: str):
        self.model = model.eval().requires_grad_(False)
        self.name = f"lpips-{net}"

    @staticmethod
    def _size(x: torch.Tensor) -> torch.Tensor:
        r = x.shape[-1]
        if r > 256:
            return F.interpolate(x, size=(256, 256), mode="area")
        if r < 64:
            return F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        return x

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(self._size(x), self._size(y)).sum()


class DFeatures:
    """Normalised squared distance of the discriminator's block features (and its epilogue's)."""

    name = "d-features"

    def __init__(self, D: torch.nn.Module, label: np.ndarray):
        self.D = D.eval().requires_grad_(False)
        dev = next(D.parameters()).device
        self.c = torch.as_tensor(np.asarray(label, np.float32), device=dev).reshape(1, -1)
        self._target: tuple[torch.Tensor, list[torch.Tensor]] | None = None  # (target, its features)

    def _feats(self, img: torch.Tensor) -> list[torch.Tensor]:
        D = self.D
        x, out = None, []
        for r in D.block_resolutions:
            x = getattr(D, f"b{r}")(x, img, force_fp32=True)
            out.append(x.float())
        cmap = D.mapping(None, self.c.expand(img.shape[0], -1)) if D.c_dim > 0 else None
        out.append(D.b4(x, cmap, return_features=True)[1])
        return out

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._target is None or self._target[0] is not y:  # holding y keeps its identity unique
            with torch.no_grad():
                self._target = (y, self._feats(y))
        fx = self._feats(x)
        return sum((a - b).square().mean() / (b.square().mean() + 1e-8) for a, b in zip(fx, self._target[1]))


class _Sum:
    def __init__(self, parts: Sequence[tuple[float, Callable]]):
        self.parts = list(parts)
        self.name = "+".join(p.name for _, p in self.parts)

    def __call__(self, x, y):
        return sum(w * p(x, y) for w, p in self.parts)


def find_lpips_backbone(net: str, weights: str | Path | None = None) -> Path | None:
    """The local torchvision checkpoint of an LPIPS backbone: ``weights`` when given (it must
    exist), else the torch hub cache's file (``torch.hub.get_dir()/checkpoints``), else None."""
    if net not in LPIPS_BACKBONES:
        raise SynthesisError(f"--lpips-net {net!r}: expected one of {', '.join(LPIPS_BACKBONES)}")
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise SynthesisError(f"--lpips-weights {p}: file not found")
        return p
    p = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]
    return p if p.is_file() else None


def _load_lpips(net: str, backbone: Path, device: str | torch.device) -> LPIPSDistance:
    """LPIPS with a randomly initialised backbone (no download), then the backbone's weights
    from the local torchvision file and LPIPS's own linear layers from the package."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    try:
        sd = torch.load(backbone, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise SynthesisError(f"--lpips-weights {backbone}: not a readable torch checkpoint ({type(e).__name__})") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, Mapping):
        raise SynthesisError(f"--lpips-weights {backbone}: not a state dict")
    feats = {k[len("features."):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith("features.")}
    own = dict(model.net.named_parameters())
    new = {}
    for name, p in own.items():  # "slice2.5.weight" is torchvision's "features.5.weight"
        key = name.split(".", 1)[1]
        t = feats.get(key)
        if t is None or tuple(t.shape) != tuple(p.shape):
            raise SynthesisError(f"--lpips-weights {backbone}: not a torchvision {net} checkpoint (features.{key} missing or misshapen)")
        new[name] = t
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(new[name])
    return LPIPSDistance(model.to(device), net)


def make_distance(kind: str = "auto", lpips_net: str = "vgg", lpips_weights: str | Path | None = None,
                  D: torch.nn.Module | None = None, label: np.ndarray | None = None, d_weight: float = 1.0,
                  device: str | torch.device = "cpu") -> Callable:
    """The projection distance: ``lpips`` (weights must be on disk), ``pyramid`` or ``auto``
    (LPIPS when its backbone file is found, else the pyramid).  With ``D``, its features are added
    to the pyramid distance."""
    if kind not in ("auto", "lpips", "pyramid"):
        raise SynthesisError(f"--distance {kind!r}: expected auto, lpips or pyramid")
    dist: Callable | None = None
    if kind in ("auto", "lpips"):
        nets = [lpips_net] if (kind == "lpips" or lpips_weights is not None or lpips_net != "vgg") else ["vgg", "alex"]
        for net in nets:
            path = find_lpips_backbone(net, lpips_weights)
            if path is not None:
                dist = _load_lpips(net, path, device)
                break
        if dist is None and kind == "lpips":
            want = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[lpips_net]
            raise SynthesisError(f"--distance lpips: backbone weights not found ({want}); pass --lpips-weights FILE "
                                 "or use --distance pyramid (nothing is downloaded)")
    if dist is None:
        dist = PyramidL2()
        if D is not None:
            if label is None:
                raise SynthesisError("discriminator features need the label")
            dist = _Sum([(1.0, dist), (float(d_weight), DFeatures(D, label))])
    elif D is not None:
        raise SynthesisError("--d-features: only with the pyramid distance (LPIPS was found; add --distance pyramid)")
    return dist


def open_discriminator(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The discriminator of a training snapshot (exported generators have none: a one-line error)."""
    from synth.networks.checkpoint import CheckpointError, build_module, load_checkpoint, read_metadata

    try:
        if "D" not in read_metadata(path).get("modules", {}):
            raise SynthesisError(f"--d-features: {path} has no discriminator (an exported generator?); "
                                 "use a training snapshot or leave --d-features out")
        ck = load_checkpoint(path)
        return build_module(ck["D"], device, where=str(path)).eval().requires_grad_(False)
    except CheckpointError as e:
        raise SynthesisError(f"--network: {e}") from None


# ----------------------------------------------------------------------------------------
# the optimisation


@dataclass
class Projection:
    """Result of :func:`project`: w [num_ws, w_dim] (rows equal unless w+), the noise buffers,
    per-step history and the reconstruction."""

    w: np.ndarray
    w_plus: bool
    noise: dict[str, np.ndarray]
    history: list[dict[str, float]]
    loss: float  # final distance + noise regulariser, at the final w without w noise
    distance_value: float
    initial_distance: float
    image: np.ndarray  # uint8 [R, R, 3]
    initial_image: np.ndarray
    psnr: float
    initial_psnr: float
    distance: str
    config: dict = field(default_factory=dict)
    z: np.ndarray | None = None  # anchor z [z_dim] (see :func:`anchor_z`)
    z_residual: float = float("nan")  # distance of mapping(z, label) from mean(w), in spread units
    w_offset_sd: float = float("nan")  # root mean squared distance of w from the label's mean w, in spread units


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when equal)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _noise_modules(G: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(f"{name}.noise_const" if name else "noise_const", m) for name, m in G.synthesis.named_modules()
            if "noise_const" in getattr(m, "_buffers", {}) and m._buffers["noise_const"] is not None]


@contextlib.contextmanager
def projected_noise(G: torch.nn.Module, noise: Mapping[str, np.ndarray | torch.Tensor] | None) -> Iterator[None]:
    """Put projected noise buffers (names as in ``G.synthesis``) in place; restore G's own after."""
    if not noise:
        yield
        return
    saved = []
    try:
        for name, m in _noise_modules(G):
            if name in noise:
                old = m._buffers["noise_const"]
                saved.append((m, old))
                m._buffers["noise_const"] = torch.as_tensor(np.asarray(noise[name]), dtype=old.dtype, device=old.device)
        yield
    finally:
        for m, old in saved:
            m._buffers["noise_const"] = old


def _to_image(x: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    t = torch.as_tensor(np.array(x), dtype=torch.float32).permute(2, 0, 1)[None]
    return t / 127.5 - 1.0


def _noise_reg(bufs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The StyleGAN2 projector's regulariser: squared autocorrelation at shift 1, per pyramid level."""
    reg = torch.zeros([], device=bufs[0].device) if bufs else torch.zeros([])
    for b in bufs:
        v = b[None, None]
        while True:
            reg = reg + (v * torch.roll(v, shifts=1, dims=3)).mean() ** 2 + (v * torch.roll(v, shifts=1, dims=2)).mean() ** 2
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return reg


def _w_prior(w: torch.Tensor, w_avg: torch.Tensor, w_std: float) -> torch.Tensor:
    """Mean squared distance of w (each layer's, for W+) from the label's mean w, in spread units."""
    return (w - w_avg.to(w.device)).square().sum(dim=-1).mean() / max(w_std, 1e-8) ** 2


def render_w(G: torch.nn.Module, w: np.ndarray | torch.Tensor, noise: Mapping[str, Any] | None = None,
             noise_mode: str = "const") -> np.ndarray:
    """uint8 [R, R, 3] of one w ([w_dim] or [num_ws, w_dim]) with the given noise buffers."""
    from synth.synthesis.engine import to_uint8

    dev = next(G.parameters()).device
    ws = torch.as_tensor(np.asarray(w, np.float32), device=dev)
    if ws.ndim == 1:
        ws = ws[None].repeat(G.num_ws, 1)
    with torch.no_grad(), projected_noise(G, noise):
        return to_uint8(G.synthesis(ws[None], noise_mode=noise_mode))[0]


def project(
    G: torch.nn.Module,
    target: np.ndarray,
    label: np.ndarray,
    distance: Callable,
    config: ProjectConfig = ProjectConfig(),
    progress: bool = True,
    desc: str = "project",
) -> Projection:
    """Optimise w (or w+) and the noise buffers so that G(w) matches ``target`` (uint8 [R, R, 3]).

    Deterministic for a given ``config.seed`` (the w noise is drawn from its own generator).
    G's own noise buffers are left as they were; the optimised ones are returned."""
    cfg = config.check()
    dev = next(G.parameters()).device
    R = int(G.img_resolution)
    tgt_np = np.asarray(target, np.uint8)
    if tgt_np.shape != (R, R, 3):
        raise SynthesisError(f"target has shape {tgt_np.shape}, expected ({R}, {R}, 3)")
    if np.asarray(label).shape != (G.c_dim,):
        raise SynthesisError(f"label has {np.asarray(label).size} entries, the generator expects {G.c_dim}")
    G = G.eval()
    grad_flags = [(p, p.requires_grad) for p in G.parameters()]
    G.requires_grad_(False)  # gradients go to w and the noise buffers only
    tgt = _to_image(tgt_np).to(dev)
    if G.img_channels == 1:
        tgt = tgt.mean(dim=1, keepdim=True)
    w_avg, w_std = label_stats(G, label, cfg.mean_w_samples, cfg.mean_w_seed)
    num_ws = int(G.num_ws)
    start = w_avg[None, None].repeat(1, num_ws if cfg.w_plus else 1, 1)
    w_opt = start.clone().to(dev).requires_grad_(True)
    gen = torch.Generator().manual_seed(int(cfg.seed))

    mods = _noise_modules(G)
    originals = [(m, m._buffers["noise_const"]) for _, m in mods]
    bufs: list[torch.Tensor] = []
    history: list[dict[str, float]] = []
    try:
        for _, m in mods:
            b = m._buffers["noise_const"].detach().clone()
            if cfg.optimize_noise:
                b.requires_grad_(True)
            m._buffers["noise_const"] = b
            bufs.append(b)
        params = [w_opt] + (bufs if cfg.optimize_noise else [])
        opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=cfg.initial_lr)

        def synth(w: torch.Tensor) -> torch.Tensor:
            ws = w if cfg.w_plus else w.repeat(1, num_ws, 1)
            return G.synthesis(ws, noise_mode="const")

        with torch.no_grad():
            init_img = synth(w_opt)
            initial_distance = float(distance(init_img, tgt))
        bar = tqdm(range(cfg.steps), desc=desc, unit="step", disable=not progress, leave=False)
        for step in bar:
            t = step / cfg.steps
            w_noise_scale = w_std * cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp) ** 2
            lr_ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown)
            lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
            lr_ramp = lr_ramp * min(1.0, t / cfg.lr_rampup) if cfg.lr_rampup > 0 else lr_ramp
            lr = cfg.initial_lr * lr_ramp
            for g in opt.param_groups:
                g["lr"] = lr
            w_noise = torch.randn(w_opt.shape, generator=gen).to(dev) * w_noise_scale
            img = synth(w_opt + w_noise)
            dist = distance(img, tgt)
            reg = _noise_reg(bufs) if cfg.optimize_noise else torch.zeros([], device=dev)
            loss = dist + cfg.noise_reg_weight * reg
            if cfg.w_prior > 0:
                loss = loss + cfg.w_prior * _w_prior(w_opt, w_avg, w_std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if cfg.optimize_noise:
                with torch.no_grad():
                    for b in bufs:
                        b -= b.mean()
                        b *= b.square().mean().rsqrt()
            rec = {"step": step + 1, "loss": float(loss.detach()), "distance": float(dist.detach()), "noise_reg": float(reg.detach()),
                   "lr": lr, "w_noise": w_noise_scale}
            history.append(rec)
            if progress and (step % 10 == 0 or step + 1 == cfg.steps):
                bar.set_postfix(dist=f"{rec['distance']:.4g}")
        bar.close()
        with torch.no_grad():
            final = synth(w_opt)
            dist_final = float(distance(final, tgt))
            reg_final = float(_noise_reg(bufs)) if cfg.optimize_noise else 0.0
            prior_final = float(_w_prior(w_opt, w_avg, w_std))
            noise = {name: b.detach().cpu().numpy().astype(np.float32) for (name, _), b in zip(mods, bufs)}
    finally:
        for m, old in originals:
            m._buffers["noise_const"] = old
        for p, flag in grad_flags:
            p.requires_grad_(flag)

    z_anchor, z_res = (anchor_z(G, w_opt.detach()[0], label, seed=cfg.seed) if cfg.anchor_z else (None, float("nan")))
    w_final = w_opt.detach()
    w_final = (w_final if cfg.w_plus else w_final.repeat(1, num_ws, 1))[0].cpu().numpy().astype(np.float32)
    from synth.synthesis.engine import to_uint8

    image = to_uint8(final)[0]
    initial_image = to_uint8(init_img)[0]
    return Projection(
        w=w_final, w_plus=cfg.w_plus, noise=noise if cfg.optimize_noise else {}, history=history,
        loss=dist_final + cfg.noise_reg_weight * reg_final + cfg.w_prior * prior_final, w_offset_sd=prior_final ** 0.5, distance_value=dist_final, initial_distance=initial_distance,
        image=image, initial_image=initial_image, psnr=psnr(image, tgt_np), initial_psnr=psnr(initial_image, tgt_np),
        distance=getattr(distance, "name", type(distance).__name__), config=asdict(cfg),
        z=z_anchor, z_residual=z_res / max(w_std, 1e-8) if z_anchor is not None else float("nan"),
    )


def anchor_z(G: torch.nn.Module, w: np.ndarray | torch.Tensor, label: np.ndarray, seed: int = 0, starts: int = 16,
             steps: int = 300, lr: float = 0.1) -> tuple[np.ndarray, float]:
    """The z whose w at ``label`` is nearest to ``w`` (the mean over layers for W+), by Adam from
    ``starts`` random z (only the mapping network runs): -> (z [z_dim], remaining distance).

    A projected face moves to another label c' as ``w + mapping(z, c') - mapping(z, c)``: the
    generator's own conditional mapping decides what changes, as it does for a seed's morph, and
    the part of w the mapping cannot reach is carried along unchanged."""
    dev = next(G.parameters()).device
    wt = torch.as_tensor(np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w, np.float32), device=dev)
    wt = wt.reshape(-1, wt.shape[-1]).mean(dim=0, keepdim=True)
    c = torch.as_tensor(np.asarray(label, np.float32), device=dev).reshape(1, -1).expand(starts, -1)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    z = torch.randn([starts, G.z_dim], generator=gen).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    flags = [(p, p.requires_grad) for p in G.mapping.parameters()]
    G.mapping.requires_grad_(False)
    try:
        with torch.enable_grad():
            for step in range(steps):
                for g in opt.param_groups:
                    g["lr"] = lr * min(1.0, (1.0 - step / steps) / 0.25)
                loss = (_first(G.mapping(z, c)) - wt).square().sum(dim=1)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        with torch.no_grad():
            d = (_first(G.mapping(z, c)) - wt).square().sum(dim=1).sqrt()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    k = int(d.argmin())
    return z[k].detach().cpu().numpy().astype(np.float32), float(d[k])


# ----------------------------------------------------------------------------------------
# outputs


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
    from synth.synthesis.render import labelled_strip, save_png

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


# ----------------------------------------------------------------------------------------
# using a projection


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


@torch.no_grad()
def identity_ws(renderer, ident: ProjectedW, labels: np.ndarray) -> torch.Tensor:
    """[N, num_ws, w_dim]: the projected identity moved to each label vector c'.

    With an anchor z (written by ``synth project``): ``w + mapping(z, c') - mapping(z, c)``;
    without one (e.g. an NVlabs projected_w.npz): ``w + mean_w(c') - mean_w(c)`` (per-label means
    of the renderer).  Then truncation toward mean_w(c') with the renderer's psi.  At c' = c and
    psi = 1 this is exactly the projected w."""
    labels = np.asarray(labels, np.float32).reshape(-1, ident.label.size)
    dev = renderer.device
    w = torch.as_tensor(ident.w, device=dev)
    if ident.z is not None:
        G = renderer.G
        z = torch.as_tensor(ident.z, device=dev)[None]
        src = _first(G.mapping(z, torch.as_tensor(ident.label, device=dev)[None]))[0]
    else:
        src = renderer.mean_w(ident.label)
    out = []
    for lab in labels:
        if ident.z is not None:
            moved = w + (_first(G.mapping(z, torch.as_tensor(lab, device=dev)[None]))[0] - src)
        else:
            moved = w + (renderer.mean_w(lab) - src)
        if renderer.psi != 1.0:
            dst = renderer.mean_w(lab)
            moved = dst + renderer.psi * (moved - dst)
        out.append(moved)
    return torch.stack(out) if out else w[None][:0]


class IdentityRenderer:
    """A :class:`~synth.synthesis.engine.Renderer` whose "seeds" are indices into projected
    identities: ``images([k, ...], labels)`` renders identity k at each label (its w moved by
    :func:`identity_ws`, its optimised noise buffers in place), so morphs, viewers and generated
    products take projected faces with no change to their code."""

    def __init__(self, base, identities: Sequence[ProjectedW]):
        if not identities:
            raise SynthesisError("--w: no projected identity given")
        self.base = base
        self.identities = list(identities)

    def __getattr__(self, name: str):  # psi, noise_mode, batch, G, device, num_ws, mean_w, ...
        return getattr(self.base, name)

    def _ident(self, k) -> ProjectedW:
        try:
            return self.identities[int(k)]
        except (IndexError, TypeError, ValueError):
            raise SynthesisError(f"projected identity {k!r} out of range (0..{len(self.identities) - 1})") from None

    @torch.no_grad()
    def ws(self, seeds: Sequence[int], labels: np.ndarray) -> torch.Tensor:
        labels = np.asarray(labels, np.float32).reshape(len(seeds), -1)
        return torch.cat([identity_ws(self.base, self._ident(k), lab[None]) for k, lab in zip(seeds, labels)])

    def images(self, seeds: Sequence[int], labels: np.ndarray, noise_seed: int | None = 0) -> np.ndarray:
        """uint8 [N, H, W, 3], rendered per identity (each with its own noise buffers)."""
        labels = np.asarray(labels, np.float32).reshape(len(seeds), -1)
        out: list[np.ndarray | None] = [None] * len(seeds)
        for k in dict.fromkeys(int(s) for s in seeds):
            idx = [i for i, s in enumerate(seeds) if int(s) == k]
            ident = self._ident(k)
            ws = identity_ws(self.base, ident, labels[idx])
            with projected_noise(self.base.G, ident.noise):
                imgs = self.base.synthesize(ws, noise_seed=int(noise_seed or 0))
            for i, im in zip(idx, imgs):
                out[i] = im
        return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def plan_identities(space: ConditionSpace, ptype: str, identities: Sequence[ProjectedW], roles, **kw):
    """:func:`plan_identity` for each identity; item ``seed`` = its index (for
    :class:`IdentityRenderer`), ``group`` (the dataset subject) and file tag ``w<index>``."""
    items = []
    for k, ident in enumerate(identities):
        for it in plan_identity(space, ptype, ident.levels, roles, **kw):
            it.seed, it.group, it.extra = k, f"w{k}", {**it.extra, "id": f"w{k}"}
            items.append(it)
    return items


def plan_identity(space: ConditionSpace, ptype: str, levels: Mapping[str, str], roles, *, steps: int = 5,
                  age_from: str | None = None, age_to: str | None = None, mixes: Sequence[float] = (0.55,),
                  exclude: Mapping[str, set] | None = None):
    """Render plan (:class:`~synth.synthesis.labels.Item` list) of one projected identity:

    * ``age_related``: the identity at every level of the age factor (its other levels kept);
    * ``age_progression``: from ``age_from`` (default: its own level) to ``age_to`` (default: the
      last level, or the first when it is already the last) in ``steps`` steps;
    * ``blended``: its disease mixed with every other disease level, per ``mixes`` weight.
    Other types make a fresh identity per image, so they do not take ``--w``."""
    from synth.synthesis.labels import Item, _block_mix, progression_weights

    exclude = {k: set(v) for k, v in (exclude or {}).items()}
    base = space.encode(levels)
    group = "projected"
    items = []
    if ptype in ("age_related", "age_progression"):
        if roles.age is None:
            raise SynthesisError(f"--type {ptype}: the model has no ordinal factor to vary (use --factor)")
        f = space.factor(roles.age)
        if ptype == "age_related":
            for lv in f.levels:
                if lv in exclude.get(f.name, set()):
                    continue
                items.append(Item(ptype, space.encode({**levels, f.name: lv}), None, group))
            if not items:
                raise SynthesisError("--exclude-level: every level is excluded; nothing to generate")
            return items
        a0 = age_from or levels[f.name]
        a1 = age_to or (f.levels[-1] if a0 != f.levels[-1] else f.levels[0])
        for opt, lv in (("--from", a0), ("--to", a1)):
            if lv not in f.levels:
                raise SynthesisError(f"{opt} {lv!r}: not a level of {f.name!r} (levels: {', '.join(f.levels)})")
        if a0 == a1:
            raise SynthesisError(f"--from and --to are both {a0!r}; nothing to progress")
        start = space.encode({**levels, f.name: a0})
        for k, wgt in enumerate(progression_weights(steps)):
            lab = _block_mix(space, start, f.name, a0, a1, wgt)
            items.append(Item(ptype, lab, None, group, mix=round(wgt, 6), mix_factor=f.name, mix_from=a0, mix_to=a1, step=k))
        return items
    if ptype == "blended":
        factor = roles.disease if roles.disease is not None else space.names[0]
        f = space.factor(factor)
        d1 = levels[factor]
        partners = [lv for lv in f.levels if lv != d1 and lv not in exclude.get(factor, set())]
        if not partners:
            raise SynthesisError(f"--type blended: no other level of {factor!r} to blend with")
        for c in mixes:
            if not 0.0 <= float(c) <= 1.0:
                raise SynthesisError(f"--mix {c}: must be between 0 and 1")
            for d2 in partners:
                lab = _block_mix(space, base, factor, d1, d2, float(c))
                items.append(Item(ptype, lab, None, group, mix=float(c), mix_factor=factor, mix_from=d1, mix_to=d2))
        return items
    raise SynthesisError(f"--type {ptype} --w: {ptype} makes a fresh identity per image; with --w use "
                         "age_related, age_progression or blended")


def safe_name(name: str) -> str:
    """A folder name for an image's outputs."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "image"
