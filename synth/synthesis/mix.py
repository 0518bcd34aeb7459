"""Style-mixing grids: structure from one image, colour from another (the skin study's figure).

Layout: the first row shows the column sources, the first column the row sources; the cell at
(row r, column c) takes the ``layers`` (coarse + middle: pose, shape, lesion layout) from row
source r and every other layer (fine: skin and lesion colour) from column source c.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from synth.synthesis.engine import Renderer
from synth.synthesis.render import labelled_grid, save_png
from synth.utils.io import atomic_write_text

__all__ = ["MixGrid", "style_mix_grid", "write_mix_grid"]


@dataclass
class MixGrid:
    rows: np.ndarray  # uint8 [R, H, W, 3] row sources
    cols: np.ndarray  # uint8 [C, H, W, 3] column sources
    cells: np.ndarray  # uint8 [R, C, H, W, 3]
    row_seeds: list[int]
    col_seeds: list[int]
    layers: list[int]


def style_mix_grid(renderer: Renderer, label: np.ndarray, row_seeds: Sequence[int], col_seeds: Sequence[int], layers: Sequence[int]) -> MixGrid:
    """Render sources and every mixed cell for one condition label."""
    row_seeds, col_seeds = [int(s) for s in row_seeds], [int(s) for s in col_seeds]
    lab = np.asarray(label, dtype=np.float32)[None]
    ws_r = renderer.ws(row_seeds, np.repeat(lab, len(row_seeds), 0))
    ws_c = renderer.ws(col_seeds, np.repeat(lab, len(col_seeds), 0))
    rows = renderer.synthesize(ws_r, noise_seed=row_seeds[0])
    cols = renderer.synthesize(ws_c, noise_seed=col_seeds[0])
    R, C = len(row_seeds), len(col_seeds)
    # all cells in one pass: row r repeated over columns, columns tiled over rows
    a = ws_r.repeat_interleave(C, dim=0)
    b = ws_c.repeat(R, 1, 1)
    cells = renderer.synthesize(renderer.style_mix(a, b, layers), noise_seed=row_seeds[0])
    return MixGrid(rows, cols, cells.reshape(R, C, *cells.shape[1:]), row_seeds, col_seeds, list(layers))


def write_mix_grid(grid: MixGrid, out: str | Path, title: str, save_individual: bool = False,
                   settings: Mapping[str, Any] | None = None) -> Path:
    """``mix.png`` (labelled grid), ``mix.json`` (seeds, layers, ``settings`` such as the
    network and its SHA-256) and, optionally, every source and cell as its own PNG."""
    out = Path(out)
    images: list[list[np.ndarray | None]] = [[None, *list(grid.cols)]]
    for r in range(len(grid.row_seeds)):
        images.append([grid.rows[r], *list(grid.cells[r])])
    lay = f"{grid.layers[0]}-{grid.layers[-1]}" if grid.layers == list(range(grid.layers[0], grid.layers[-1] + 1)) else ",".join(map(str, grid.layers))
    col_labels = [f"{title}\nlayers {lay}: row\nothers: column"] + [f"col seed {s}" for s in grid.col_seeds]
    row_labels = ["", *[f"row seed {s}" for s in grid.row_seeds]]
    path = out / "mix.png"
    save_png(labelled_grid(images, col_labels=col_labels, row_labels=row_labels), path)
    files: list[str] = []
    if save_individual:
        named = [(grid.rows[r], f"row_s{s}.png") for r, s in enumerate(grid.row_seeds)]
        named += [(grid.cols[c], f"col_s{s}.png") for c, s in enumerate(grid.col_seeds)]
        named += [(grid.cells[r, c], f"mix_r{rs}_c{cs}.png") for r, rs in enumerate(grid.row_seeds)
                  for c, cs in enumerate(grid.col_seeds)]
        for img, name in named:
            save_png(img, out / "individual" / name)
            files.append(f"individual/{name}")
    info = {"title": title, "row_seeds": grid.row_seeds, "col_seeds": grid.col_seeds, "layers": grid.layers,
            **dict(settings or {}), "grid": "mix.png", "individual": files}
    atomic_write_text(out / "mix.json", json.dumps(info, indent=2, default=str) + "\n")
    return path
