"""The optimisation: :func:`project` fits w (or w+) and the noise buffers of a generator to one
target image, :func:`anchor_z` the z whose w at the label is nearest to the result.

Also the pieces it is built from and that using a projection shares: the label's mean w and
spread (:func:`label_stats`), the noise buffers put in place while rendering
(:func:`projected_noise`), :func:`render_w` and :func:`psnr`."""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from synth.synthesis.engine import to_uint8
from synth.synthesis.errors import SynthesisError

__all__ = [
    "ProjectConfig",
    "Projection",
    "project",
    "anchor_z",
    "label_stats",
    "projected_noise",
    "render_w",
    "psnr",
]


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


def render_w(G: torch.nn.Module, w: np.ndarray | torch.Tensor, noise: Mapping[str, Any] | None = None,
             noise_mode: str = "const") -> np.ndarray:
    """uint8 [R, R, 3] of one w ([w_dim] or [num_ws, w_dim]) with the given noise buffers."""
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
