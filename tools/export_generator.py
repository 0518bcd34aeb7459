"""Export the EMA generator of a training snapshot as a small, sampling-only checkpoint.

    python tools/export_generator.py runs/00003-.../network-snapshot-000040.ckpt checkpoints/demo-faces.ckpt

Keeps G_ema, the condition space, the training options, kimg and the training cell counts;
drops D, the raw G, optimiser moments and RNG states (needed only to resume training).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

KEEP = ("G_ema", "space", "options", "kimg", "augment_p", "cell_counts", "progress")


@click.command()
@click.argument("snapshot", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--note", default=None, help="Free text stored in the checkpoint (e.g. the command that trained it).")
@click.option("--counts-from", type=click.Path(exists=True, path_type=Path), default=None,
              help="Dataset whose cell counts to store, for snapshots written without them.")
def main(snapshot: Path, out: Path, note: str | None, counts_from: Path | None) -> None:
    from synth.networks.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    try:
        ck = load_checkpoint(snapshot)
    except CheckpointError as e:
        raise click.ClickException(str(e))
    if "G_ema" not in ck:
        raise click.ClickException(f"{snapshot}: no G_ema in this checkpoint")
    state = {k: ck[k] for k in KEEP if k in ck}
    state["exported_from"] = snapshot.name
    if counts_from is not None:
        from synth.data import open_dataset

        space = ck["space"]
        imageset = open_dataset(counts_from, space=space)
        state["cell_counts"] = [
            {"labels": dict(zip(space.names, cell)), "count": int(n)} for cell, n in imageset.cell_counts().items()
        ]
    if note:
        state["note"] = note
    save_checkpoint(out, state)
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, kimg {ck.get('kimg')})")


if __name__ == "__main__":
    sys.exit(main())
