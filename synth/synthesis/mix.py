"""Style-mixing grids: structure from one image, colour from another (the skin study's figure).

Layout: the first row shows the column sources, the first column the row sources; the cell at
(row r, column c) takes the ``layers`` (coarse + middle: pose, shape, lesion layout) from row
source r and every other layer (fine: skin and lesion colour) from column source c.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synth.synthesis.engine import Renderer
from synth.synthesis.render import labelled_grid, save_png

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


def write_mix_grid(grid: MixGrid, out: str | Path, title: str, save_individual: bool = False) -> Path:
    """``mix.png`` (labelled grid) and, optionally, every source and cell as its own PNG."""
    out = Path(out)
    images: list[list[np.ndarray | None]] = [[None, *list(grid.cols)]]
    for r in range(len(grid.row_seeds)):
        images.append([grid.rows[r], *list(grid.cells[r])])
    lay = f"{grid.layers[0]}-{grid.layers[-1]}" if grid.layers == list(range(grid.layers[0], grid.layers[-1] + 1)) else ",".join(map(str, grid.layers))
    col_labels = [f"{title}\nlayers {lay}: row\nothers: column"] + [f"col seed {s}" for s in grid.col_seeds]
    row_labels = ["", *[f"row seed {s}" for s in grid.row_seeds]]
    path = out / "mix.png"
    save_png(labelled_grid(images, col_labels=col_labels, row_labels=row_labels), path)
    if save_individual:
        for r, s in enumerate(grid.row_seeds):
            save_png(grid.rows[r], out / "individual" / f"row_s{s}.png")
        for c, s in enumerate(grid.col_seeds):
            save_png(grid.cols[c], out / "individual" / f"col_s{s}.png")
        for r, rs in enumerate(grid.row_seeds):
            for c, cs in enumerate(grid.col_seeds):
                save_png(grid.cells[r, c], out / "individual" / f"mix_r{rs}_c{cs}.png")
    return path
