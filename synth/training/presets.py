"""Training presets: the reference configurations plus a small one that trains on a CPU.

A preset fills every architecture and optimisation value of :class:`TrainingOptions`;
command-line options then override single values.  ``auto`` follows the reference formula
(resolution and GPU count decide batch, channels, learning rate, R1 gamma and EMA);
``paper256`` and ``stylegan2`` are the fixed published tables; ``cpu`` is a small network
(32-64 px, few channels) that shows recognisable faces within minutes on a laptop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Preset", "PRESETS", "resolve_preset", "preset_fields"]

PRESETS = ("auto", "paper256", "stylegan2", "cpu", "cpu-v1")


@dataclass
class Preset:
    """Architecture + optimisation values a preset decides."""

    name: str
    resolution: int
    batch: int
    mbstd_group: int
    channel_base: int
    channel_max: int
    map_layers: int
    lr: float
    gamma: float
    ema_kimg: float
    ema_rampup: float | None
    z_dim: int = 512
    w_dim: int = 512
    cmap_dim: int | None = None
    kimg: float = 25000
    tick_kimg: float = 4.0
    snap: int = 50
    pl_weight: float = 2.0
    ada_kimg: float = 500.0
    reuse_fakes: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_preset(name: str, resolution: int, gpus: int = 1) -> Preset:
    """The preset ``name`` at ``resolution`` for ``gpus`` processes (batch is the global batch)."""
    if name not in PRESETS:
        raise ValueError(f"--preset {name!r}: choose one of {', '.join(PRESETS)}")
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"--resolution {resolution}: must be a power of two >= 4")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    res = resolution
    if name == "auto":
        batch = max(min(gpus * min(4096 // res, 32), 64), gpus)
        fmaps = 1 if res >= 512 else 0.5
        return Preset(
            name=name,
            resolution=res,
            batch=batch,
            mbstd_group=min(batch // gpus, 4),
            channel_base=int(fmaps * 32768),
            channel_max=512,
            map_layers=2,
            lr=0.002 if res >= 1024 else 0.0025,
            gamma=0.0002 * res**2 / batch,
            ema_kimg=batch * 10 / 32,
            ema_rampup=0.05,
        )
    if name == "paper256":
        return Preset(name, res, 64, 8, 16384, 512, 8, 0.0025, 1.0, 20.0, None)
    if name == "stylegan2":
        return Preset(name, res, 32, 4, 32768, 512, 8, 0.002, 10.0, 10.0, None)
    # cpu: few channels (32 at the output resolution, 64 below it), batch 32, z = w = 128, no
    # path-length regulariser (as the reference's small-resolution config: that pass
    # differentiates through G twice), D's fake pass reuses G's images, short ticks, EMA
    # half-life 1 kimg so a short run's EMA generator is not dominated by the random
    # initialisation, and ada_kimg 100 so augmentation can rise within a few tens of kimg.
    # About 2x the images per second of ``cpu-v1``, the earlier version (64 channels up to
    # 32 px, batch 16, z = w = 512, path length on), kept as the benchmark's baseline.
    if name == "cpu-v1":
        return Preset(name, res, 16, 4, 2048, 64, 2, 0.0025, 0.5, 1.0, 0.05, z_dim=512, w_dim=512,
                      kimg=200, tick_kimg=1.0, snap=10, pl_weight=2.0, ada_kimg=500.0)
    return Preset(
        name=name,
        resolution=res,
        batch=32,
        mbstd_group=4,
        channel_base=32 * res,
        channel_max=64,
        map_layers=2,
        lr=0.0025,
        gamma=0.5,
        ema_kimg=1.0,
        ema_rampup=0.05,
        z_dim=128,
        w_dim=128,
        kimg=200,
        tick_kimg=2.0,
        snap=5,
        pl_weight=0.0,
        ada_kimg=100.0,
        reuse_fakes=True,
    )


def preset_fields(pre: Preset, precision: str = "fp32") -> dict:
    """The :class:`~synth.training.options.TrainingOptions` values a preset decides: the one
    place that turns a preset into options (``synth train`` and the ablation's per-fold GANs)."""
    return dict(
        preset=pre.name, resolution=pre.resolution, z_dim=pre.z_dim, w_dim=pre.w_dim, map_layers=pre.map_layers,
        channel_base=pre.channel_base, channel_max=pre.channel_max, mbstd_group=pre.mbstd_group, cmap_dim=pre.cmap_dim,
        batch=pre.batch, lr=pre.lr, gamma=pre.gamma, ema_kimg=pre.ema_kimg, ema_rampup=pre.ema_rampup, kimg=pre.kimg,
        tick_kimg=pre.tick_kimg, snap=pre.snap, pl_weight=pre.pl_weight, ada_kimg=pre.ada_kimg, reuse_fakes=pre.reuse_fakes,
        # mixed precision needs activations clamped (the reference's conv_clamp for fp16/bf16)
        conv_clamp=256.0 if precision != "fp32" else None,
    )
