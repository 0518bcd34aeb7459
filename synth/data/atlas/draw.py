"""Vectorised anti-aliased drawing on a coordinate grid.

Shapes are signed distance fields (negative inside) evaluated on every pixel at once;
coverage is the SDF passed through a one-pixel ramp, which anti-aliases edges without
supersampling.  Everything works in float32 RGB in [0, 1].
"""
from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image

__all__ = [
    "grid",
    "ellipse_sdf",
    "coverage",
    "soft",
    "blend",
    "lowfreq",
    "curve_y",
    "curve_x",
    "to_png_bytes",
]


@functools.lru_cache(maxsize=8)
def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    c = ((np.arange(res, dtype=np.float32) + 0.5) / res) * 2.0 - 1.0
    x, y = np.meshgrid(c, c)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1]; x to the right, y downwards."""
    return _grid(int(res))


def ellipse_sdf(u, v, cx, cy, a, b, angle: float = 0.0):
    """Approximate signed distance to an ellipse (exact on the axes, close elsewhere).

    ``a``/``b`` may be arrays (per-pixel half-axes), which is how egg-shaped heads are made.
    """
    du, dv = u - cx, v - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    k0 = np.sqrt((du / a) ** 2 + (dv / b) ** 2)
    k1 = np.sqrt((du / (a * a)) ** 2 + (dv / (b * b)) ** 2) + 1e-6
    return k0 * (k0 - 1.0) / k1


def coverage(sdf, aa: float):
    """Fraction of a pixel inside the shape: a linear ramp one pixel (``aa``) wide."""
    return np.clip(0.5 - sdf / aa, 0.0, 1.0)


def soft(sdf, width: float):
    """A feathered mask: 1 deep inside, 0 outside, smooth over ``width``."""
    t = np.clip(0.5 - sdf / width, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def blend(img: np.ndarray, colour, alpha) -> None:
    """In place: img = img + alpha * (colour - img); colour is RGB or an HxWx3 array.

    Only the bounding box of non-zero alpha is touched: most shapes are small, and this
    is where rendering spends its time.
    """
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim == 0:
        alpha = np.full(img.shape[:2], alpha, np.float32)
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(alpha.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    colour = np.asarray(colour, dtype=np.float32)
    if colour.ndim == 3:
        colour = colour[r0:r1, c0:c1]
    sub = img[r0:r1, c0:c1]
    sub += alpha[r0:r1, c0:c1, None] * (colour - sub)


@functools.lru_cache(maxsize=16)
def _interp_matrix(res: int, cells: int) -> np.ndarray:
    # Linear interpolation weights from `cells` control points to `res` pixels.
    pos = (np.arange(res) + 0.5) / res * (cells - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, cells - 2)
    t = pos - lo
    m = np.zeros((res, cells), dtype=np.float32)
    m[np.arange(res), lo] = 1.0 - t
    m[np.arange(res), lo + 1] = t
    m.setflags(write=False)
    return m


def lowfreq(rng: np.random.Generator, res: int, cells: int = 4) -> np.ndarray:
    """Smooth random field (zero mean, unit-ish amplitude): a cells x cells grid upsampled."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    m = _interp_matrix(int(res), int(cells))
    return m @ g @ m.T


def curve_y(u, v, x0, x1, fy, thickness: float, aa: float):
    """Coverage of a stroke along y = fy(x) for x in [x0, x1] (a curve that is mostly horizontal)."""
    h = 1e-3
    y = fy(u)
    slope = (fy(u + h) - fy(u - h)) / (2 * h)
    d = np.abs(v - y) / np.sqrt(1.0 + slope * slope) - thickness / 2
    # round-ish caps: distance beyond the end points along x
    ext = np.maximum(np.maximum(x0 - u, u - x1), 0.0)
    d = np.sqrt(np.maximum(d, 0.0) ** 2 + ext**2) + np.minimum(d, 0.0)
    return coverage(d, aa)


def curve_x(u, v, y0, y1, fx, thickness: float, aa: float):
    """Coverage of a stroke along x = fx(y) for y in [y0, y1] (a curve that is mostly vertical)."""
    return curve_y(v, u, y0, y1, fx, thickness, aa)


def to_png_bytes(img: np.ndarray) -> bytes:
    """float RGB in [0, 1] -> PNG bytes (no metadata, so equal pixels give equal bytes)."""
    arr = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
