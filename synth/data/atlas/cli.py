"""``synth data atlas``: render the built-in synthetic phenotype atlas."""
from __future__ import annotations

import click

from .render import KINDS, AtlasError, check_resolution, parse_counts, render_atlas


def _resolution(ctx, param, value):
    try:
        return check_resolution(value)
    except AtlasError:
        raise click.BadParameter(f"must be a power of two >= 16, got {value}") from None


@click.command("atlas")
@click.argument("out_dir", type=click.Path(file_okay=False, writable=True))
@click.option("--kind", type=click.Choice(KINDS), default="faces", show_default=True,
              help="faces: disease x age faces; skin: NF1-like skin patches by stage.")
@click.option("--per-cell", type=click.IntRange(min=1), default=20, show_default=True,
              help="Images in every label cell (faces: 4 diseases x 5 age groups; skin: 3 stages).")
@click.option("--counts", default=None, metavar="SPEC",
              help="Skewed cell counts instead of --per-cell everywhere: 'study' (faces: 100 unaffected per age group, "
                   "affected cells of 4-30 with rare infants and older adults, the Williams/22q study's shape), "
                   "LEVEL=N or DISEASE/AGE=N, comma-separated, applied in order over --per-cell.")
@click.option("--resolution", type=int, default=64, show_default=True, callback=_resolution,
              help="Image size in pixels (a power of two >= 16).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Same seed, same bytes.")
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it is not empty (only once the new atlas is complete).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def atlas(out_dir, kind, per_cell, counts, resolution, seed, force, quiet):
    """Render a labelled synthetic atlas with known ground truth into OUT_DIR.

    Writes img/*.png, labels.csv (file, factor columns, subject, severity, identity
    parameters; faces also age_years) and conditions.yaml.  Each subject keeps one
    identity over 1-3 images, so use grouped folds.

    \b
    Examples:
      synth data atlas atlas_faces --kind faces --per-cell 20 --resolution 64
      synth data atlas study_faces --counts study          # 716 faces shaped like the study's
      synth data atlas rare --counts study,infant=2,syndrome_b/older_adult=1
    """
    try:
        cell_counts = parse_counts(counts, kind, per_cell) if counts is not None else None
        path = render_atlas(out_dir, kind=kind, per_cell=per_cell, resolution=resolution, seed=seed,
                            progress=not quiet, overwrite=force, counts=cell_counts)
    except AtlasError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {path}")


main = atlas

if __name__ == "__main__":  # pragma: no cover
    atlas()
