"""``synth ablate``: does adding synthetic images of each type help the classifier?"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import click

from synth.cli_errors import message
from synth.errors import UserError
from synth.utils.cli_types import DEVICE, SEED

__all__ = ["ablate"]

DEFAULT_TYPES = "unrelated,age_related,age_progression,blended,style_mixed"


def _positive(ctx, param, value):
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value}: must be a positive number")
    return value


def _psi(ctx, param, value):
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.network import check_truncation

    try:
        return check_truncation(value, "--psi")
    except SynthesisError as e:
        raise click.UsageError(str(e), ctx) from None


@click.command("ablate", context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--data", default=None, type=click.Path(path_type=Path),
              help="Labelled dataset folder or .zip (required unless --report-only).")
@click.option("--cond", default="disease,age", help="Factors of the data (and of the generator).")
@click.option("--types", "types", default=DEFAULT_TYPES,
              help="Synthetic image types, comma separated; blended:0.75 sets the mix of one blended arm.")
@click.option("--folds", "k", type=click.IntRange(min=2), default=5, help="Number of grouped, stratified folds.")
@click.option("--gan-per-fold", is_flag=True, help="Train one GAN per fold on its training folds only (cached in OUT/gans/).")
@click.option("--network", type=click.Path(path_type=Path), default=None,
              help="One generator checkpoint for all folds (leaks held-out images if it was trained on all data); "
                   "loaded and checked before anything is written; results.json records its SHA-256.")
@click.option("--gan-kimg", type=float, default=2.0, callback=_positive, help="Length of each per-fold GAN training (short CPU default).")
@click.option("--gan-resolution", type=int, default=32, help="Resolution of the per-fold GANs.")
@click.option("--gan-preset", type=click.Choice(["cpu", "auto", "paper256", "stylegan2"]), default="cpu", help="Per-fold GAN preset.")
@click.option("--gan-option", "gan_options", multiple=True, metavar="KEY=VALUE",
              help="Override one training option of the per-fold GANs (repeat), e.g. aux_weight=1 aux_mode=adc "
                   "lecam_weight=0.01 (the recipe of the bundled generator; names as in options.json).")
@click.option("--gan-base", type=click.Path(path_type=Path), default=None,
              help="With --gan-per-fold: a snapshot of synth train (e.g. trained with --cond none on a pool of other "
                   "subjects) that every fold GAN starts from, as in the study's FFHQ start.")
@click.option("--gan-pool", type=click.Path(path_type=Path), default=None,
              help="With --gan-per-fold: a labelled dataset of other subjects (e.g. unaffected faces) added to every "
                   "fold GAN's training images, never to a classifier's; refused if it shares an image with --data.")
@click.option("--gan-judge", "gan_judges", type=click.Path(path_type=Path), multiple=True,
              help="With --gan-per-fold: a classifier (trained on other subjects) that scores each fold GAN while it "
                   "trains (repeatable); the snapshot the selection rule prefers (fidelity and variety) is used.")
@click.option("--gans-from", type=click.Path(path_type=Path), default=None,
              help="With --gan-per-fold: take each finished fold GAN from another ablation folder made with the same "
                   "data, folds and GAN settings (to rerun the classifiers with other settings without retraining "
                   "the GANs); files are hard-linked where possible.")
@click.option("--ratio", "ratios", type=float, multiple=True,
              help="Synthetic images per study-rule count (repeat for a sweep). Default 1.0.")
@click.option("--mix", "mixes", type=float, multiple=True, help="Disease weight of plain 'blended' arms. Default 0.55.")
@click.option("--psi", type=float, default=0.6, callback=_psi,
              help="Truncation psi when generating, a finite number >= 0 (the study used 0.6).")
@click.option("--exclude-level", "exclude", multiple=True, metavar="FACTOR=LEVEL",
              help="Cells that get no synthetic images. Default: the control level (unaffected).")
@click.option("--factor", "age_factor", default="age", show_default=True,
              help="The ordinal factor that age_related and age_progression step through, and that the count "
                   "rule averages over (stage for NF1-like skin data).")
@click.option("--target", default="disease", help="Factor(s) the classifier predicts.")
@click.option("--model", default="small_cnn",
              help="timm model name, random init unless --pretrained. The defaults are a measured CPU recipe "
                   "(BENCHMARKS.md); the study used efficientnet_b4 --pretrained PATH --size 448 --lr 3e-5.")
@click.option("--pretrained", default=None, help="Local weights file for the classifier backbone.")
@click.option("--size", type=int, default=32, help="Classifier input size in pixels.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, help="Classifier training epochs per cell.")
@click.option("--batch", type=click.IntRange(min=1), default=32, help="Classifier batch size.")
@click.option("--lr", type=float, default=3e-3, callback=_positive, help="Peak learning rate.")
@click.option("--optimizer", type=click.Choice(["adam", "adamw"]), default="adamw", help="Classifier optimiser.")
@click.option("--weight-decay", type=float, default=0.01, help="Classifier weight decay.")
@click.option("--drop-rate", type=float, default=0.0, help="Dropout before the classifier head.")
@click.option("--class-weight", default=None, help="'auto' or NAME=W,... (same for every arm).")
@click.option("--aug", type=click.Choice(["faces", "skin", "none"]), default="faces", help="Classifier augmentation.")
@click.option("--test-data", type=click.Path(path_type=Path), default=None, help="Fixed test set scored by every fold model.")
@click.option("--seed", type=SEED, default=0, help="Seed of folds, GANs, synthetic images and classifiers.")
@click.option("--seeds", "n_seeds", type=click.IntRange(min=1), default=1,
              help="Classifier seeds per (fold, arm); a fold's score is their mean (more seeds: narrower intervals). "
                   "Raising it on a finished folder trains only the new seeds.")
@click.option("--matched-control/--no-matched-control", default=True, show_default=True,
              help="Also train 'real_matched' (per ratio): the real images plus as many real training images again, "
                   "cell by cell with the synthetic counts, so it trains for the same steps on the same label mix. "
                   "The gain over it is what the synthetic images add beyond more training.")
@click.option("--replace", is_flag=True,
              help="Every arm keeps the real set's epoch length: an epoch of a synthetic arm draws as many images as "
                   "the real training set has from the real and synthetic images together, so synthetic images replace "
                   "a share of the real presentations and every arm takes the same steps as 'real'.")
@click.option("--synthetic-only", is_flag=True,
              help="Also train '<type>_only' per synthetic arm: its synthetic images alone, scored on the real "
                   "held-out fold (the generator's classification accuracy score).")
@click.option("--epoch-selection", type=click.Choice(["inner", "last", "held-out"]), default="inner",
              help="Which epoch of each classifier is scored: the best on an inner, grouped validation split of the "
                   "training folds (never the held-out fold); the last; or held-out (optimistic: the scoring images "
                   "choose the model; only to finish folders made before the inner split).")
@click.option("--inner-val", type=float, default=0.2, help="With --epoch-selection inner: share of the training folds held out to choose the epoch.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads of this worker (e.g. 1 per worker when several share a machine).")
@click.option("--claim-timeout", type=float, default=600.0, callback=_positive,
              help="Seconds without a heartbeat after which another worker takes a cell over (a dead worker's).")
@click.option("--no-wait", is_flag=True,
              help="Exit when every remaining cell is held by other workers, without the report (see --report-only).")
@click.option("--report-only", is_flag=True,
              help="Train nothing: write the report of the finished ablation in --out (its plan.json gives the settings).")
@click.option("--device", type=DEVICE, default="cpu", help="cpu, cuda or cuda:N.")
@click.option("--status", is_flag=True, help="Print what --out has done, what is claimed (by whom) and what is left, and exit.")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default=None,
              help="Run --workers workers of this command through submitit: SLURM array jobs, or local processes "
                   "(waits for them and writes the report).")
@click.option("--workers", type=click.IntRange(min=1), default=2, help="Workers for --executor and --emit-commands.")
@click.option("--emit-commands", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write --workers worker command lines to this file (a swarm file, SLURM array lines or GNU "
                   "parallel input) and exit; the report command follows as a comment.")
@click.option("--slurm-partition", default=None, help="With --executor slurm: the partition.")
@click.option("--slurm-gpus", type=click.IntRange(min=0), default=None, help="With --executor slurm: GPUs per job.")
@click.option("--slurm-cpus", type=click.IntRange(min=1), default=None, help="With --executor slurm: CPUs per job.")
@click.option("--slurm-mem", type=float, default=None, help="With --executor slurm: memory per job in GB.")
@click.option("--slurm-time", type=click.IntRange(min=1), default=None, help="With --executor slurm: time limit in minutes.")
@click.option("--slurm-account", default=None, help="With --executor slurm: the account to charge.")
@click.option("--slurm-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML with partition, gpus, cpus, mem_gb, time_min, account (options given override it).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder (finished cells are reused).")
@click.option("--force", is_flag=True, help="Delete this folder's earlier ablation outputs and rerun everything.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.pass_context
def ablate(ctx: click.Context, **p) -> None:
    """Measure the classifier gain of each synthetic image type (the study's Table 2).

    For every fold, a classifier is trained on the real training folds alone (arm 'real')
    and on the real training folds plus one synthetic type (one arm per type and ratio),
    then scored on the held-out fold (and --test-data). Synthetic images are made from the
    training folds' cell counts and never enter a held-out fold. The control 'real_matched'
    adds real images instead of synthetic ones (same count, same cells): a synthetic arm
    trains for more steps than 'real', and only its gain over 'real_matched' is due to the
    synthetic images.

    \b
    Examples:
      synth ablate --data faces/ --network runs/00001-faces/network-snapshot-000200.000.ckpt --out abl/
      synth ablate --data faces/ --gan-per-fold --gan-kimg 50 --types unrelated,age_progression \\
                   --ratio 0.5 --ratio 1 --ratio 2 --test-data faces_test/ --out abl/

    \b
    Resuming and sharing: every finished (fold, arm, seed) is cached under OUT/cells/;
    rerunning the same command continues where a killed run stopped. Several processes (on
    one machine or on several sharing a file system, e.g. a SLURM array) may run the same
    command on one OUT at once: each fold GAN, synthetic set and cell is claimed by one of
    them (a .lock file with a heartbeat); a claim whose worker died is taken over (at once on
    the same host, after --claim-timeout elsewhere). Workers wait for each other and each
    writes the same report; with --no-wait they exit instead, and `synth ablate --report-only
    --out OUT` writes it later. Adding types, ratios or seeds to a finished folder trains only
    the new cells. --force wipes the folder's ablation outputs first; never combine it with
    another running process.

    Writes report.md, results.json, per_arm.csv, per_cell.csv and gain.png.
    """
    from classifiers.models import ModelError, check_model_name
    from classifiers.train import TrainConfig
    from synth.ablation.plan import AblationConfig, AblationError, build_arms
    from synth.ablation.runner import report_only, run_ablation

    if p["status"]:
        from synth.ablation.status import ablation_status, format_status

        try:
            click.echo(format_status(ablation_status(p["out"])))
        except UserError as e:
            raise click.ClickException(message(e)) from None
        return
    if p["threads"]:
        import torch

        torch.set_num_threads(p["threads"])
    if p["report_only"]:
        try:
            result = report_only(p["out"])
        except UserError as e:
            raise click.ClickException(message(e)) from None
        _summary(result)
        return
    if p["data"] is None:
        raise click.UsageError("Missing option '--data'")
    if p["gan_per_fold"] and p["network"] is not None:
        raise click.UsageError("--network and --gan-per-fold exclude each other; choose one")
    if not p["gan_per_fold"] and p["network"] is None:
        raise click.UsageError("--network: give a generator checkpoint, or use --gan-per-fold")
    for r in p["ratios"]:
        if not r > 0:
            raise click.BadParameter(f"{r}: must be > 0", param_hint="--ratio")
    # Bad option values are usage errors (exit 2); what the files hold is checked by the run (exit 1).
    try:
        build_arms([t.strip() for t in p["types"].split(",") if t.strip()], list(p["ratios"]) or [1.0],
                   list(p["mixes"]) or [0.55], matched_control=p["matched_control"], synthetic_only=p["synthetic_only"])
        check_model_name(p["model"])
    except (AblationError, ModelError) as e:
        raise click.UsageError(str(e).splitlines()[0]) from None
    if p["emit_commands"] is not None or p["executor"] is not None:
        _hand_out(ctx, p)
        return
    try:
        train = TrainConfig(
            model=p["model"], size=p["size"], epochs=p["epochs"], batch=p["batch"], lr=p["lr"],
            optimizer=p["optimizer"], weight_decay=p["weight_decay"], drop_rate=p["drop_rate"],
            pretrained=p["pretrained"] or False, class_weight=p["class_weight"], aug=p["aug"], seed=p["seed"],
            device=p["device"], progress=not p["no_progress"],
        )
        config = AblationConfig(
            data=str(p["data"].resolve()), cond=[c.strip() for c in p["cond"].split(",") if c.strip()],
            types=[t.strip() for t in p["types"].split(",") if t.strip()], ratios=list(p["ratios"]) or [1.0],
            k=p["k"], gan_per_fold=p["gan_per_fold"], network=str(p["network"].resolve()) if p["network"] else None,
            gan_kimg=p["gan_kimg"], gan_resolution=p["gan_resolution"], gan_preset=p["gan_preset"],
            target=p["target"], train=train, test_data=str(p["test_data"].resolve()) if p["test_data"] else None,
            seed=p["seed"], psi=p["psi"], mixes=list(p["mixes"]) or [0.55], exclude=list(p["exclude"]) or None,
            device=p["device"], progress=not p["no_progress"], gan_options=_gan_options(p["gan_options"]),
            age_factor=p["age_factor"], seeds=p["n_seeds"], matched_control=p["matched_control"],
            replace=p["replace"], synthetic_only=p["synthetic_only"],
            gan_base=str(p["gan_base"].resolve()) if p["gan_base"] else None,
            gan_pool=str(p["gan_pool"].resolve()) if p["gan_pool"] else None,
            gan_judges=[str(j.resolve()) for j in p["gan_judges"]],
            gans_from=str(p["gans_from"].resolve()) if p["gans_from"] else None,
            epoch_selection=p["epoch_selection"].replace("-", "_"), inner_val=p["inner_val"], stale_after=p["claim_timeout"], wait=not p["no_wait"],
        )
        result = run_ablation(config, p["out"], force=p["force"])
    except UserError as e:
        raise click.ClickException(message(e)) from None
    if result.results is None:
        click.echo(f"{len(result.trained)} cell(s) trained; the rest are held by other workers. "
                   f"When all are done: synth ablate --report-only --out {result.out_dir}")
        return
    _summary(result)


def _gan_options(items) -> dict:
    """KEY=VALUE strings -> {key: value}; values are read as JSON (numbers, true, null) or text."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--gan-option")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _summary(result) -> None:
    st = result.results["cv"]["statistics"]["accuracy"]
    n_cells = len(result.arms) * st["k"] * result.results.get("seeds", 1)
    click.echo(f"{len(result.trained)} cell(s) trained, {n_cells - len(result.trained)} from cache")
    from synth.ablation.report import gains_over_matched

    vs_matched = gains_over_matched(result.results["cv"])

    def pts(d):
        return f"{100 * d['mean']:+.1f} pts [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"

    for arm, e in st["arms"].items():
        d, dm = e.get("difference"), vs_matched.get(arm)
        gain = "" if d is None else f"  gain {pts(d)}"
        gain += "" if dm is None else f"; over real_matched {pts(dm)}"
        click.echo(f"  {arm:<24s} accuracy {100 * e['mean']:.1f}%{gain}")
    if st["small_k"]:
        click.echo(f"  note: only {st['k']} folds; the intervals are wide")
    click.echo(f"report: {result.out_dir / 'report.md'}")


def _hand_out(ctx: click.Context, p: dict) -> None:
    """--emit-commands / --executor: the same command, as --workers workers on one --out."""
    from synth.ablation.cluster import SlurmSettings, emit_commands, submit, worker_args

    if p["emit_commands"] is not None and p["executor"] is not None:
        raise click.UsageError("--emit-commands and --executor exclude each other; choose one")
    args = worker_args(ctx)
    if p["emit_commands"] is not None:
        report = emit_commands(p["emit_commands"], args, p["workers"], p["out"])
        click.echo(f"wrote {p['workers']} worker command(s) to {p['emit_commands']}; run them at once (any machine that "
                   f"sees --out), then: {report}")
        return
    override = dict(partition=p["slurm_partition"], gpus=p["slurm_gpus"], cpus=p["slurm_cpus"], mem_gb=p["slurm_mem"],
                    time_min=p["slurm_time"], account=p["slurm_account"])
    try:
        slurm = (SlurmSettings.from_yaml(p["slurm_config"], **override) if p["slurm_config"] is not None
                 else SlurmSettings(**{k: v for k, v in override.items() if v is not None}))
        jobs = submit(run_worker, args, p["workers"], p["executor"], p["out"], slurm, log=click.echo)
    except UserError as e:
        raise click.ClickException(message(e)) from None
    report = f"synth ablate --report-only --out {p['out'].resolve()}"
    if p["executor"] == "slurm":
        click.echo(f"submitted {len(jobs)} worker job(s); watch with: synth ablate --status --out {p['out']}; "
                   f"when they are done: {report}")
        return
    codes = [job.result() for job in jobs]  # local processes: wait for them
    if any(codes):
        raise click.ClickException(f"{sum(c != 0 for c in codes)} worker(s) failed (logs in {p['out'] / 'jobs'}); "
                                   f"rerun the command to finish their cells")
    from synth.ablation.runner import report_only

    try:
        result = report_only(p["out"])
    except UserError as e:
        raise click.ClickException(message(e)) from None
    _summary(result)


def run_worker(args: Sequence[str]) -> int:
    """One worker, in this process: what each job submitted by ``--executor`` runs (submitit pickles
    this function by name, so it lives at module level beside the command it calls)."""
    try:
        ablate.main(args=list(args), prog_name="synth ablate", standalone_mode=False)
    except click.ClickException as e:  # one line in the job's log, and its exit status
        e.show()
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0)
    return 0
