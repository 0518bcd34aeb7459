"""Image grids laid out by condition: rows = levels of the first factor (e.g. diseases),
columns = levels of the second (e.g. ages), with a labelled header row and column.

A fixed z per row shows one "person" across the column conditions (how age changes a face);
a fixed z per cell shows unrelated samples.  Further factors are held at their first level.
With a single factor the columns are independent samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from synth.conditions import ConditionSpace

__all__ = ["GridLayout", "grid_layout", "render_fakes", "render_reals", "compose_grid", "MIN_TILE"]

MIN_TILE = 64  # tiny training resolutions are upscaled so the header text stays readable


@dataclass
class GridLayout:
    row_names: list[str]
    col_names: list[str]
    labels: np.ndarray  # [R, C, c_dim]
    cells: list[list[dict[str, str]]]  # level names per tile


def grid_layout(space: ConditionSpace | None, samples: int = 6) -> GridLayout:
    if space is None:  # unconditional: rows of independent samples
        cols = [f"sample {i}" for i in range(samples)]
        rows = [f"row {r}" for r in range(4)]
        return GridLayout(rows, cols, np.zeros((len(rows), samples, 0), dtype=np.float32), [[{} for _ in cols] for _ in rows])
    f0 = space.factors[0]
    rest = {f.name: f.levels[0] for f in space.factors[1:]}
    if len(space.factors) == 1:
        cols = [f"sample {i}" for i in range(samples)]
        cells = [[{f0.name: lv} for _ in cols] for lv in f0.levels]
    else:
        f1 = space.factors[1]
        cols = list(f1.levels)
        cells = [[{**rest, f0.name: a, f1.name: b} for b in f1.levels] for a in f0.levels]
    labels = np.stack([np.stack([space.encode(c) for c in row]) for row in cells]).astype(np.float32)
    return GridLayout(list(f0.levels), cols, labels, cells)


def grid_latents(layout: GridLayout, z_dim: int, seed: int = 0, per: str = "row") -> torch.Tensor:
    """Fixed latents [R, C, z_dim] from their own generator (the training RNG is untouched)."""
    if per not in ("row", "cell"):
        raise ValueError(f"grid latents per 'row' or 'cell', got {per!r}")
    g = torch.Generator().manual_seed(seed)
    R, C = layout.labels.shape[:2]
    if per == "row" and len(layout.col_names) and not layout.col_names[0].startswith("sample "):
        z = torch.randn(R, 1, z_dim, generator=g).expand(R, C, z_dim)
    else:
        z = torch.randn(R, C, z_dim, generator=g)
    return z.contiguous()


@torch.no_grad()
def render_fakes(
    G: torch.nn.Module,
    layout: GridLayout,
    z: torch.Tensor,
    device: torch.device | str = "cpu",
    truncation_psi: float = 1.0,
    batch: int = 32,
) -> Image.Image:
    R, C = layout.labels.shape[:2]
    zz = z.reshape(R * C, -1)
    cc = torch.from_numpy(layout.labels.reshape(R * C, -1))
    out = []
    for i in range(0, R * C, batch):
        img = G(zz[i : i + batch].to(device), cc[i : i + batch].to(device), truncation_psi=truncation_psi, noise_mode="const")
        out.append(img.float().cpu())
    imgs = torch.cat(out).reshape(R, C, *out[0].shape[1:])
    return compose_grid(_to_uint8(imgs), layout.row_names, layout.col_names)


def render_reals(dataset, layout: GridLayout, seed: int = 0) -> Image.Image:
    """One real image per cell (a random one, seeded); empty cells stay grey."""
    imageset = dataset.imageset
    space = imageset.space
    rng = np.random.default_rng(seed)
    R, C = layout.labels.shape[:2]
    res = dataset.resolution
    tiles = np.full((R, C, 3, res, res), 96, dtype=np.uint8)
    if space is None:  # unconditional: a random sample of the images
        picks = rng.choice(len(imageset), size=min(R * C, len(imageset)), replace=False)
        for k, pick in enumerate(picks):
            tiles[k // C, k % C] = dataset.raw_image(int(pick))
        return compose_grid(tiles, layout.row_names, layout.col_names)
    by_cell: dict[tuple, list[int]] = {}
    for i, rec in enumerate(imageset.records):
        by_cell.setdefault(tuple(rec.labels[n] for n in space.names), []).append(i)
    single = len(space.factors) == 1
    for r in range(R):
        for c in range(C):
            key = tuple(layout.cells[r][c][n] for n in space.names)
            idx = by_cell.get(key, [])
            if single:
                pick = idx[c] if c < len(idx) else None
            else:
                # Further factors are fixed in the layout; fall back to any image of the (row, col) cell.
                if not idx:
                    names = space.names[:2]
                    idx = [i for i, rec in enumerate(imageset.records) if all(rec.labels[n] == layout.cells[r][c][n] for n in names)]
                pick = int(rng.choice(idx)) if idx else None
            if pick is not None:
                tiles[r, c] = dataset.raw_image(pick)
    return compose_grid(tiles, layout.row_names, layout.col_names)


def _to_uint8(imgs: torch.Tensor) -> np.ndarray:
    return ((imgs.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def compose_grid(tiles: np.ndarray, row_names: list[str], col_names: list[str], pad: int = 2) -> Image.Image:
    """uint8 tiles [R, C, 3, H, W] -> one RGB image with a header row and column of names."""
    R, C, _, H, W = tiles.shape
    scale = max(1, -(-MIN_TILE // H))
    th, tw = H * scale, W * scale
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = lambda s: int(probe.textlength(s, font=font))  # noqa: E731
    left = max([text_w(s) for s in row_names] + [0]) + 2 * pad + 4
    top = 16
    canvas = Image.new("RGB", (left + C * (tw + pad) + pad, top + R * (th + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(col_names):
        x = left + pad + c * (tw + pad)
        label = name
        while label and text_w(label) > tw:  # clip long names to the tile width
            label = label[:-1]
        draw.text((x + max(0, (tw - text_w(label)) // 2), 2), label, fill=(0, 0, 0), font=font)
    for r, name in enumerate(row_names):
        y = top + pad + r * (th + pad)
        draw.text((pad, y + th // 2 - 6), name, fill=(0, 0, 0), font=font)
        for c in range(C):
            tile = Image.fromarray(tiles[r, c].transpose(1, 2, 0))
            if scale > 1:
                tile = tile.resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (left + pad + c * (tw + pad), y))
    return canvas
