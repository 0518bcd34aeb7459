"""A grid to *look at* a generator's variety: one row per condition cell, several seeds per row.

    python tools/variety_grid.py checkpoints/demo-faces.ckpt docs/images/demo-faces-variety-psi1.png
    python tools/variety_grid.py G.ckpt grid.png --seeds 8 --truncation 0.6 --real train_atlas/ --real-per-cell 3

A generator that renders one face per cell shows the same person across a row, with small
colour shifts; real faces of a cell differ in skin tone, hair, sex and face shape. With
``--real`` the first columns of each row are real images of that cell, for comparison.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def variety_grid(G, space, seeds: int, psi: float, real=None, real_per_cell: int = 0, seed0: int = 0,
                 factors: list[str] | None = None, min_size: int = 64):
    """PIL image: rows = cells of ``factors`` (default all), columns = real images then seeds."""
    from synth.synthesis.engine import Renderer
    from synth.synthesis.render import labelled_grid

    names = list(factors or space.names)
    cells = space.cells(names)
    rest = {f.name: f.levels[0] for f in space.factors if f.name not in names}
    renderer = Renderer(G, psi=psi, mean_w_samples=1000)
    rng = np.random.default_rng(seed0)
    rows, row_labels = [], []
    for cell in cells:
        labels = {**rest, **dict(zip(names, cell))}
        vec = np.repeat(space.encode(labels)[None], seeds, axis=0)
        fakes = list(renderer.images(list(range(seed0, seed0 + seeds)), vec))
        row = []
        if real is not None and real_per_cell:
            idx = [i for i in range(len(real)) if real.cell_of(i, names) == tuple(cell)]
            picks = rng.choice(idx, size=min(real_per_cell, len(idx)), replace=False) if idx else []
            row += [np.asarray(real.load_image(int(i)).convert("RGB").resize(fakes[0].shape[:2][::-1])) for i in picks]
            row += [None] * (real_per_cell - len(picks))
        rows.append(row + fakes)
        row_labels.append("/".join(cell))
    cols = ([f"real {i}" for i in range(real_per_cell)] if real is not None else []) + [f"seed {seed0 + i}" for i in range(seeds)]
    return labelled_grid(rows, col_labels=cols, row_labels=row_labels, min_size=min_size)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("network", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seeds", type=int, default=6, show_default=True, help="Generated images (seeds) per cell.")
@click.option("--seed", "seed0", type=int, default=0, show_default=True, help="First seed.")
@click.option("--truncation", type=float, default=1.0, show_default=True, help="psi (1 = the full variety).")
@click.option("--real", type=click.Path(exists=True, path_type=Path), default=None,
              help="A dataset whose images of each cell open the row, for comparison.")
@click.option("--real-per-cell", type=int, default=3, show_default=True, help="Real images per row with --real.")
@click.option("--factors", default=None, help="Factors whose cells make the rows (default all), e.g. disease.")
def main(network, out, seeds, seed0, truncation, real, real_per_cell, factors):
    """Write a variety grid of NETWORK to OUT (PNG)."""
    from synth.data.dataset import DatasetError, open_dataset
    from synth.networks.checkpoint import CheckpointError, load_generator
    from synth.utils.io import atomic_write_bytes

    if seeds < 1:
        raise click.BadParameter(f"{seeds}: need at least one seed", param_hint="--seeds")
    try:
        G, space, _ = load_generator(network)
    except CheckpointError as e:
        raise click.ClickException(str(e).splitlines()[0]) from None
    if space is None:
        raise click.ClickException(f"{network}: an unconditional generator has no cells to lay out")
    names = [f.strip() for f in factors.split(",")] if factors else None
    if names and any(n not in space.names for n in names):
        raise click.BadParameter(f"{factors!r}: the generator's factors are {', '.join(space.names)}", param_hint="--factors")
    imageset = None
    if real is not None:
        try:
            imageset = open_dataset(real, cond=list(space.names))
        except DatasetError as e:
            raise click.ClickException(str(e).splitlines()[0]) from None
    img = variety_grid(G, space, seeds, truncation, imageset, real_per_cell if real else 0, seed0, names)
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(out, buf.getvalue())
    click.echo(f"wrote {out} ({img.width}x{img.height})")


if __name__ == "__main__":
    main()
