"""Skin patches for a three-stage NF1-like progression with known ground truth.

A hidden per-subject ``severity`` (progress 0..1) sets the stage: early patches show a few
small café-au-lait macules (irregular tan ovals); they grow in number and size with
stage, and late patches add small raised neurofibromas (shaded bumps).  Stage ranges
overlap slightly at the edges so intermediate really sits between the others.
Nuisance: skin tone, zoom, lighting, hair-like strokes, mottled texture, noise, blur.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Mapping

import numpy as np

from . import draw
from .faces import skin_rgb

__all__ = ["STAGES", "SkinSubject", "SkinImage", "plan_skin", "render_skin", "skin_counts"]

STAGES = ("early", "intermediate", "late")
# progress range per stage (neighbouring ranges overlap a little)
STAGE_RANGES = {"early": (0.0, 0.36), "intermediate": (0.32, 0.68), "late": (0.64, 1.0)}


@dataclass(frozen=True)
class SkinSubject:
    subject: str
    stage: str
    severity: float
    skin_tone: float
    hair_density: float
    freckles: float

    def identity_columns(self) -> dict[str, str]:
        return {
            "skin_tone": f"{self.skin_tone:.4f}",
            "hair_density": f"{self.hair_density:.4f}",
            "freckles": f"{self.freckles:.4f}",
        }


@dataclass(frozen=True)
class SkinImage:
    subject: SkinSubject
    site: int  # which patch of this subject (different body sites look different)


def plan_skin(per_cell: int | Mapping[tuple[str], int], seed: int) -> list[SkinImage]:
    """Exactly ``per_cell`` patches per stage (a number, or a map ``(stage,) -> count``), from
    subjects with 1-3 patches each."""
    rng = np.random.default_rng([int(seed), 0x5C1, 1])
    out: list[SkinImage] = []
    n_sub = 0
    for stage in STAGES:
        left = int(per_cell.get((stage,), 0)) if isinstance(per_cell, Mapping) else int(per_cell)
        while left > 0:
            k = min(left, int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25])))
            lo, hi = STAGE_RANGES[stage]
            subj = SkinSubject(
                subject=f"s{n_sub:05d}",
                stage=stage,
                severity=float(rng.uniform(lo, hi)),
                skin_tone=float(rng.beta(1.4, 1.4)),
                hair_density=float(rng.uniform(0.0, 1.0)),
                freckles=float(rng.uniform(0.0, 1.0) ** 3),
            )
            n_sub += 1
            out.extend(SkinImage(subj, j) for j in range(k))
            left -= k
    return out


def skin_counts(severity: float, rng: np.random.Generator) -> tuple[int, int]:
    """(macules, neurofibromas) for one patch: both grow with progress."""
    macules = 1 + int(rng.poisson(0.5 + 6.0 * severity))
    bumps = int(rng.poisson(max(0.0, severity - 0.6) * 22.0))
    return macules, bumps


def _macule_sdf(u, v, cx, cy, r0, aspect, angle, harm):
    du, dv = u - cx, v - cy
    c, s = math.cos(angle), math.sin(angle)
    du, dv = c * du + s * dv, (-s * du + c * dv) / aspect
    rho = np.sqrt(du * du + dv * dv)
    th = np.arctan2(dv, du)
    r = r0 * (1.0 + sum(a * np.cos(k * th + p) for k, a, p in harm))
    return (rho - r) * aspect


def render_skin(spec: SkinImage, resolution: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int]:
    """Draw one skin patch; returns (float32 RGB [R, R, 3], macule count, neurofibroma count)."""
    s = spec.subject
    res = int(resolution)
    x, y = draw.grid(res)
    zoom = float(rng.uniform(0.85, 1.2))
    u, v = x / zoom, y / zoom
    aa = 2.0 / res / zoom
    p = s.severity

    skin = skin_rgb(s.skin_tone) * np.float32(rng.normal(1.0, 0.04))
    img = np.empty((res, res, 3), np.float32)
    img[:] = skin
    # mottled texture and pores
    img *= (1.0 + 0.05 * draw.lowfreq(rng, res, 6))[..., None]
    img *= (1.0 + 0.025 * rng.standard_normal((res, res)).astype(np.float32))[..., None]

    # freckles: small faint brown dots (a nuisance that looks a little like tiny macules)
    for _ in range(int(rng.poisson(25 * s.freckles))):
        cx, cy = rng.uniform(-1, 1, size=2)
        d = draw.ellipse_sdf(u, v, cx, cy, 0.012, 0.012)
        draw.blend(img, skin * 0.82, 0.5 * draw.soft(d, aa * 1.5))

    n_mac, n_bump = skin_counts(p, rng)
    contrast = 0.55 + 0.35 * (1.0 - s.skin_tone)  # macules are harder to see on dark skin
    tan = skin * np.array([0.80, 0.68, 0.56], np.float32)
    for _ in range(n_mac):
        cx, cy = rng.uniform(-0.85, 0.85, size=2)
        r0 = (0.05 + 0.16 * p) * float(rng.uniform(0.6, 1.3))
        harm = [(k, float(rng.uniform(0.0, 0.12 / k)), float(rng.uniform(0, 6.3))) for k in (2, 3, 5)]
        d = _macule_sdf(u, v, cx, cy, r0, float(rng.uniform(0.55, 1.0)), float(rng.uniform(0, math.pi)), harm)
        draw.blend(img, tan, contrast * float(rng.uniform(0.6, 1.0)) * draw.soft(d, 0.02 + aa))

    # neurofibromas: raised bumps shaded by the light, with a soft shadow
    ldir = rng.uniform(0, 2 * math.pi)
    lx, ly = math.cos(ldir), math.sin(ldir)
    bump_rgb = skin * np.array([1.0, 0.86, 0.84], np.float32)
    for _ in range(n_bump):
        cx, cy = rng.uniform(-0.85, 0.85, size=2)
        r = (0.025 + 0.03 * float(rng.uniform(0, 1))) * (0.8 + 0.5 * p)
        sh = draw.ellipse_sdf(u, v, cx - 0.35 * r * lx, cy - 0.35 * r * ly, r * 1.1, r * 1.1)
        draw.blend(img, skin * 0.6, 0.5 * draw.soft(sh, r * 0.8))
        du, dv = (u - cx) / r, (v - cy) / r
        inside = draw.coverage(draw.ellipse_sdf(u, v, cx, cy, r, r), aa)
        nz = np.sqrt(np.clip(1.0 - du * du - dv * dv, 0.0, 1.0))
        lam = np.clip(0.55 + 0.45 * (-du * lx - dv * ly) * 0.8 + 0.35 * nz, 0.3, 1.3)
        draw.blend(img, bump_rgb[None, None, :] * lam[..., None], inside)

    # hair-like strokes
    for _ in range(int(rng.poisson(18 * s.hair_density))):
        cx, cy = rng.uniform(-1, 1, size=2)
        ang = float(rng.normal(0.6, 0.4))
        length = float(rng.uniform(0.08, 0.22))
        bend = float(rng.normal(0, 2.0))
        ca, sa = math.cos(ang), math.sin(ang)
        ur, vr = ca * (u - cx) + sa * (v - cy), -sa * (u - cx) + ca * (v - cy)
        stroke = draw.curve_y(ur, vr, 0.0, length, lambda q, bend=bend: bend * q * q, 0.006, aa)
        draw.blend(img, skin * 0.35, 0.6 * stroke)

    light = float(rng.uniform(0.0, 0.25))
    ld = rng.uniform(0, 2 * math.pi)
    img *= (1.0 + light * (math.cos(ld) * x + math.sin(ld) * y))[..., None]
    sigma = float(rng.uniform(0.0, 0.8)) * res / 64.0
    if sigma > 0.05:
        from scipy.ndimage import gaussian_filter  # imported here: scipy.ndimage is slow to import

        img = gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    img += float(rng.uniform(0.003, 0.015)) * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0), n_mac, n_bump
