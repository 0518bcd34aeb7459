#!/usr/bin/env python
"""Judge panel: score conditional generators with judges that never helped choose them.

    python tools/eval_generator.py checkpoints/demo-faces.ckpt runs/00003-x/network-snapshot-000240.ckpt --out panel/

The command line of :mod:`synth.quality.panel`, whose docstring gives the protocol (atlases
of other subjects, the panel, what is scored per checkpoint, panel.json and panel.md).

See docs/metrics.md, "Judge panel (tools/eval_generator.py)".
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import click

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synth.quality.panel.report import run_panel  # noqa: E402
from synth.quality.panel.settings import PanelConfig, PanelError  # noqa: E402

# ----------------------------------------------------------------------------------------
# CLI


def _user_errors() -> tuple[type[BaseException], ...]:
    from classifiers.checkpoint import ClassifierCheckpointError
    from classifiers.data import ClassifierDataError
    from classifiers.models import ModelError
    from synth.conditions import ConditionError
    from synth.data.atlas import AtlasError
    from synth.data.dataset import DatasetError
    from synth.quality.errors import QualityError
    from synth.synthesis.errors import SynthesisError
    from synth.networks.checkpoint import CheckpointError

    return (PanelError, ClassifierCheckpointError, ClassifierDataError, ModelError, ConditionError, AtlasError,
            DatasetError, QualityError, SynthesisError, CheckpointError)


def _log_fn(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            click.echo(f"[panel] {msg}", err=True)

    return log


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in str(value).split(",") if x.strip())
    except ValueError:
        raise click.ClickException(f"{option} {value!r}: expected integers separated by commas") from None
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="CKPT [CKPT ...]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for panel.json and panel.md (created; those two files are replaced).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where atlases and trained judges are kept and reused [default: $SYNTH_CACHE/eval_generator, "
                   "else ~/.cache/synth/eval_generator].")
@click.option("--per-cell", default=None, type=int,
              help="Generated images per condition cell [default: faces 20, skin 100].")
@click.option("--truncation", default=1.0, show_default=True, type=float,
              help="Truncation psi toward each condition's mean w (1 = none, the honest choice for variety).")
@click.option("--judge-per-cell", default=None, type=int,
              help="Atlas images per cell for judge training, and of the second real set [default: faces 60, skin 300].")
@click.option("--epochs", default=15, show_default=True, type=int,
              help="Judge training epochs (architectures with a slower recipe, e.g. resnet10t, train twice as long).")
@click.option("--seed", default=0, show_default=True, type=int, help="First z seed of the generated images.")
@click.option("--judge-seeds", default="0,1", show_default=True, help="Initialisation seeds of each judge architecture.")
@click.option("--archs", default="small_cnn,small_cnn_s", show_default=True,
              help="Judge architectures (timm names, random init). resnet10t is more independent but ~4x slower.")
@click.option("--atlas-seeds", default="11,12", show_default=True,
              help="Atlas seeds JUDGE_TRAIN,SECOND_REAL: subjects neither seen in training (seed 0) nor in selection.")
@click.option("--atlas-resolution", default=64, show_default=True, type=int, help="Resolution the atlases are drawn at.")
@click.option("--identities", default=16, show_default=True, type=int,
              help="Identities drawn at every level of the ordinal factor (age, stage) for morph monotonicity.")
@click.option("--prdc-k", default=5, show_default=True, type=int, help="Neighbour count of precision/recall/density/coverage.")
@click.option("--batch", default=32, show_default=True, type=int, help="Generator batch size.")
@click.option("--threads", default=None, type=int, help="torch CPU threads (e.g. 1 on a shared machine).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--quiet", is_flag=True, help="No progress output (errors still go to stderr).")
def main(checkpoints, out, cache, per_cell, truncation, judge_per_cell, epochs, seed, judge_seeds, archs, atlas_seeds,
         atlas_resolution, identities, prdc_k, batch, threads, device, quiet) -> None:
    """Score generator checkpoints with a judge panel that never took part in choosing them.

    \b
    CKPT: a training snapshot (runs/.../network-snapshot-*.ckpt) or an exported generator
    (checkpoints/demo-faces.ckpt, checkpoints/demo-skin.ckpt); all of one kind (faces or skin).

    \b
    The panel is trained on atlas subjects of seed 11 and checked on new subjects of seed 12,
    never on the training atlas (seed 0) or the judges that chose the snapshot. Reported per
    checkpoint: label fidelity of every judge (generated / real accuracy, worst judge),
    precision / recall / density / coverage in judge features with a real-vs-real reference,
    within-cell pixel diversity, judged-attribute entropy ratios (skin tone, hair colour, hair
    style; skin: skin tone, freckles) and morph monotonicity of the ordinal factor.

    \b
    Example (one thread: about 6 minutes the first time, about 15 s once the judges are cached):
      python tools/eval_generator.py checkpoints/demo-faces.ckpt --out panel/ --threads 1
    """
    if threads is not None:
        if threads < 1:
            raise click.ClickException(f"--threads {threads}: must be >= 1")
        import torch

        torch.set_num_threads(threads)
    cfg = PanelConfig(per_cell=per_cell, truncation=truncation, judge_per_cell=judge_per_cell, epochs=epochs, seed=seed,
                      judge_seeds=_int_list(judge_seeds, "--judge-seeds"),
                      archs=tuple(a.strip() for a in archs.split(",") if a.strip()),
                      atlas_seeds=_int_list(atlas_seeds, "--atlas-seeds"), atlas_resolution=atlas_resolution,
                      identities=identities, prdc_k=prdc_k, batch=batch, device=device, cache=cache,
                      progress=not quiet)
    try:
        run_panel(list(checkpoints), out, cfg, log=_log_fn(quiet))
    except _user_errors() as e:
        raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


if __name__ == "__main__":
    sys.exit(main())
