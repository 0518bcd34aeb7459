"""``synth metrics``: condition fidelity, progression consistency, KID/FID, memorisation and variety."""
from __future__ import annotations

from pathlib import Path

import click

from synth.cli_errors import one_line_errors
from synth.utils.cli_types import DEVICE

__all__ = ["metrics"]


def _metric_list(ctx, param, value):
    from synth.quality.report import METRICS

    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise click.BadParameter(f"unknown metric(s) {', '.join(bad) or '(none)'}; choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))


def _truncation(ctx, param, value):
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.network import check_truncation

    try:
        return check_truncation(value)
    except SynthesisError as e:
        raise click.UsageError(str(e), ctx) from None


def _seeds(ctx, param, value):
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.labels import parse_seeds

    try:
        return tuple(parse_seeds(value))
    except SynthesisError as e:
        raise click.UsageError(str(e), ctx) from None


@click.command("metrics")
@click.option("--network", type=click.Path(path_type=Path), default=None,
              help="Generator checkpoint (.ckpt). Default: newest runs/*/ snapshot, else checkpoints/demo-faces.ckpt; "
                   "the one picked is printed on stderr. metrics.json records its path and SHA-256.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Real training images (folder with labels.csv, or .zip): needed by fid, memorisation and variety.")
@click.option("--judge", "judges", multiple=True, type=click.Path(path_type=Path),
              help="Classifier trained on real data (`synth classify train|cv` checkpoint or folder); repeat for one "
                   "judge per factor. A joint disease,age judge scores both factors.")
@click.option("--judge-age", type=click.Path(path_type=Path), default=None,
              help="Judge of the ordinal factor (age or stage) used for progression consistency; also scored for fidelity.")
@click.option("--metrics", "metric_names", callback=_metric_list, default=None,
              help="Comma list of fidelity,progression,fid,memorisation,variety. Default: all whose inputs were "
                   "given (fidelity needs --judge, fid/memorisation/variety need --data).")
@click.option("--per-cell", type=click.IntRange(min=1), default=50, show_default=True,
              help="Generated images per condition cell (fidelity, KID/FID, memorisation, variety).")
@click.option("--seeds", default="0-15", show_default=True, callback=_seeds,
              help="Seeds of the progression morphs, e.g. 0-15 or 1,5,9.")
@click.option("--seed", type=click.IntRange(min=0), default=1000, show_default=True,
              help="First seed of the per-cell images.")
@click.option("--steps", type=click.IntRange(min=2), default=5, show_default=True, help="Keyframes per morph.")
@click.option("--truncation", "psi", type=float, default=1.0, show_default=True, callback=_truncation,
              help="Truncation psi toward each condition's mean w (a finite number >= 0; 1 = none; the study "
                   "generated with 0.6).")
@click.option("--kind", type=click.Choice(["auto", "faces", "skin"]), default="auto", show_default=True,
              help="Identity measure: faces = dlib face descriptor, skin = frozen backbone; auto = skin for a 'stage' model.")
@click.option("--inception", type=click.Path(path_type=Path), default=None,
              help="Local torch-fidelity InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth or .safetensors). "
                   "Without it KID/FID use a seeded random backbone (not comparable with published numbers).")
@click.option("--feature-model", default="resnet18", show_default=True,
              help="timm backbone (random init) for features when no --inception is given, and for skin identity.")
@click.option("--feature-size", type=click.IntRange(min=16), default=128, show_default=True,
              help="Input size of the random backbone; also the pixel resolution of variety's diversity "
                   "when no --judge is given (else the judge's input size).")
@click.option("--pixel-size", type=click.IntRange(min=4), default=32, show_default=True,
              help="Resolution of the pixel-space memorisation check.")
@click.option("--kid-subsets", type=click.IntRange(min=1), default=100, show_default=True, help="KID random subsets.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True,
              help="Closest generated/real pairs listed and drawn.")
@click.option("--prdc-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Nearest neighbours of the precision/recall/density/coverage balls (variety).")
@click.option("--gate", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Ensemble gate: average the judge models whose max probability is at least this.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("metrics"), show_default=True,
              help="Folder for metrics.json, metrics.md and memorisation_top.png.")
@click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, help="Images per forward pass.")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda.")
@click.option("--mean-w-samples", type=click.IntRange(min=1), default=2000, show_default=True,
              help="z samples per label for the per-condition average w used by truncation.")
@click.option("--force", is_flag=True, help="Write into a non-empty --out folder, first removing the results of an "
                                          "earlier `synth metrics` there.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def metrics(network, data, judges, judge_age, metric_names, per_cell, seeds, seed, steps, psi, kind, inception,
            feature_model, feature_size, pixel_size, kid_subsets, top, prdc_k, gate, out, batch, device, mean_w_samples,
            force, quiet):
    """Measure a conditional generator against real data and judge classifiers.

    \b
    fidelity      judge accuracy on generated images, per factor and per condition cell
    progression   along age/stage morphs (fixed z): monotone judged grade, Spearman rho,
                  identity similarity of frames of one z vs different z
    fid           KID and FID per cell and overall
    memorisation  nearest real training image of each generated image (features and pixels)
    variety       within-cell pixel diversity and precision/recall/density/coverage, per cell
                  and overall (features: the first judge's penultimate layer, else --inception,
                  else the random backbone)

    Writes OUT/metrics.json and OUT/metrics.md.  A non-empty OUT is refused unless --force,
    which first removes the results of an earlier run there.  Nothing is downloaded.
    """
    from synth.data.dataset import open_dataset
    from synth.quality.errors import QualityError
    from synth.quality.features import inception_extractor
    from synth.quality.fidelity import load_judges
    from synth.quality.report import METRICS, OUTPUTS, MetricsConfig, run_metrics, write_outputs
    from synth.synthesis.network import network_record, open_generator
    from synth.utils.io import check_out_dir, prepare_out_dir

    check_out_dir(out, force, error=QualityError)  # refuse before any slow work
    if data is not None and not data.exists():
        raise QualityError(f"--data {data}: not found")
    for opt, j in [("--judge", j) for j in judges] + ([("--judge-age", judge_age)] if judge_age else []):
        if not Path(j).exists():
            raise QualityError(f"{opt} {j}: not found")
    morph_seeds = seeds
    if metric_names is None:  # everything the given inputs allow
        metric_names = tuple(m for m in METRICS
                             if not (m == "fidelity" and not (judges or judge_age))
                             and not (m in ("fid", "memorisation", "variety") and data is None))
    G, space, meta, net_path = open_generator(network, device=device)
    loaded = load_judges(judges, device=device, gate=gate)
    jage = load_judges([judge_age], device=device, gate=gate)[0] if judge_age else None
    imageset = (open_dataset(data, space=space)
                if data is not None and {"fid", "memorisation", "variety"} & set(metric_names) else None)
    extractor = inception_extractor(inception, device=device, batch=batch, progress=not quiet) if inception else None
    cfg = MetricsConfig(
        metrics=metric_names, per_cell=per_cell, seed=seed, morph_seeds=morph_seeds, steps=steps, truncation=psi,
        kind=kind, feature_model=feature_model, feature_size=feature_size, pixel_size=pixel_size,
        kid_subsets=kid_subsets, top=top, prdc_k=prdc_k, batch=batch, device=device, mean_w_samples=mean_w_samples,
        progress=not quiet,
        extra={**network_record(net_path, meta, meta.get("network_default")), "data": str(data) if data else None,
               "inception": str(inception) if inception else None, "gate": gate},
    )
    out = prepare_out_dir(out, force, OUTPUTS, error=QualityError)  # no stale figure beside new numbers
    variety_judge = (judges[0] if judges else judge_age) if "variety" in metric_names else None
    result = run_metrics(G, space, cfg, loaded, jage, imageset, extractor, out, variety_judge=variety_judge)
    jp, mp = write_outputs(result, out)
    click.echo(f"wrote {jp} and {mp}")
