"""The `synth` command line: one entry point, sub-commands per stage of the pipeline."""
from __future__ import annotations

import sys

import click

from synth import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="synth")
def main() -> None:
    """Synthetic medical images of rare genetic conditions.

    \b
    Typical flow:
      synth data atlas OUT           render the built-in synthetic atlas (ground truth known)
      synth data check DIR           validate a dataset and show image counts per condition cell
      synth data align IN OUT        FFHQ-style face alignment with dlib landmarks
      synth train --cond disease,age train a conditional StyleGAN2-ADA (factored embedding)
      synth classify cv --data DIR   cross-validated EfficientNet classifiers and metrics
      synth generate --type TYPE     synthetic images of each published type, with a manifest
      synth morph --from A --to B    age/stage progression of one identity (strip, GIF, MP4)
      synth project PHOTOS --label   find a real photo's latent, then morph or regenerate it (--w)
      synth mix / synth teach        style-mixing grids; teaching galleries and quizzes
      synth metrics                  condition fidelity, morph consistency, KID/FID, memorisation
      synth ablate --data DIR        accuracy gain of each synthetic image type, paired statistics
    """


def _register() -> None:
    from synth.data.cli import data
    from synth.synthesis.cli import COMMANDS as synthesis_commands
    from synth.training.augment_preview import augment_preview
    from synth.training.cli import train
    from classifiers.cli import classify
    from synth.quality.cli import metrics
    from synth.ablation.cli import ablate

    main.add_command(data)
    main.add_command(train)
    main.add_command(classify)
    main.add_command(metrics)
    main.add_command(ablate)
    main.add_command(augment_preview)
    for cmd in synthesis_commands:
        main.add_command(cmd)


_register()


def run() -> None:  # pragma: no cover - console entry for `python -m synth`
    main(prog_name="synth")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
