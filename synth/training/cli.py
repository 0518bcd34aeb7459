"""``synth train``: train a conditional StyleGAN2-ADA on a labelled image folder."""
from __future__ import annotations

import json
import os
import re
from dataclasses import fields
from pathlib import Path

import click

from synth.cli_errors import message
from synth.conditions import ConditionError, parse_tie
from synth.errors import UserError
from synth.training.presets import PRESETS, preset_fields, resolve_preset
from synth.utils.cli_types import DEVICE, SEED

__all__ = ["train", "resolve_options", "next_run_dir", "claim_run_dir"]

# CLI option name -> TrainingOptions field, for values a preset provides.
_PRESET_FIELDS = {
    "batch": "batch",
    "gamma": "gamma",
    "lr": "lr",
    "kimg": "kimg",
    "tick": "tick_kimg",
    "snap": "snap",
    "map_layers": "map_layers",
    "channel_base": "channel_base",
    "channel_max": "channel_max",
    "ema_kimg": "ema_kimg",
    "pl_weight": "pl_weight",
    "ada_kimg": "ada_kimg",
}


def next_run_dir(out: Path, desc: str) -> Path:
    """``out/NNNNN-desc`` with the next free number (numbers are never reused)."""
    nums = [int(m.group(1)) for p in (out.iterdir() if out.is_dir() else []) if (m := re.match(r"^(\d+)-", p.name))]
    return out / f"{(max(nums) + 1 if nums else 0):05d}-{desc}"


def claim_run_dir(run_dir: Path) -> Path:
    """Create the run folder exclusively; if another run took that number first (two
    ``synth train --out`` started together), take the next free one."""
    out, desc = run_dir.parent, run_dir.name.split("-", 1)[1]
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            run_dir = next_run_dir(out, desc)
            if run_dir.exists():  # listed before the other run created it: go one past
                num = int(run_dir.name.split("-", 1)[0]) + 1
                run_dir = out / f"{num:05d}-{desc}"
    raise click.ClickException(f"--out {out}: no free run number")


def _parse_cond(value: str) -> list[str]:
    """``--cond``: factor names in grid order; ``none``: unconditional ([])."""
    names = [c.strip() for c in value.split(",") if c.strip()]
    if not names:
        raise click.BadParameter(f"{value!r}: name the factors (e.g. disease,age), or none for unconditional training",
                                 param_hint="--cond")
    if [n.lower() for n in names] == ["none"]:
        return []
    if any(n.lower() == "none" for n in names):
        raise click.BadParameter(f"{value!r}: none cannot be combined with factors", param_hint="--cond")
    return names


def _native_resolution(imageset) -> int:
    if len(imageset) == 0:
        raise click.UsageError(f"--data {imageset.root}: dataset has no images")
    w, h = imageset.load_image(0).size
    res = min(w, h)
    return 1 << (res.bit_length() - 1)  # largest power of two that fits


def resolve_options(params: dict, given: set[str], imageset=None):
    """TrainingOptions from a preset and the CLI values the user actually gave."""
    from synth.training.training_loop import TrainingOptions

    preset_name = params["preset"] or ("cpu" if params["device"] == "cpu" else "auto")
    if params["resolution"] is not None:
        res = params["resolution"]
    elif preset_name.startswith("cpu"):
        res = 32
    elif imageset is not None:
        res = _native_resolution(imageset)
    else:
        res = 64  # the built-in atlas
    gpus = int(os.environ.get("WORLD_SIZE", 1))
    try:
        pre = resolve_preset(preset_name, res, gpus)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    o = TrainingOptions(
        # absolute, so `--resume` works from any working directory
        data=str(Path(params["data"]).resolve()) if params["data"] is not None else None,
        cond=_parse_cond(params["cond"]),
        unconditional=_parse_cond(params["cond"]) == [],
        ties=list(params["tie"]),
        **preset_fields(pre, params["precision"]),
    )
    for opt, fld in _PRESET_FIELDS.items():
        if params.get(opt) is not None:
            setattr(o, fld, params[opt])
    if params.get("z_dim") is not None:
        o.z_dim = o.w_dim = params["z_dim"]
    if params.get("embed_dim") is not None:
        o.embed_dim = params["embed_dim"]
    if params["batch"] is not None and "mbstd_group" not in given:
        o.mbstd_group = min(o.mbstd_group, max(params["batch"] // gpus, 1))
    if params["batch"] is not None and preset_name == "auto" and "gamma" not in given:
        o.gamma = 0.0002 * res**2 / o.batch  # the auto formula follows the batch actually used
    for name in ("mirror", "balance", "aug", "aug_kind", "aug_spec", "target", "seed", "device", "precision", "grid_per", "fake_labels",
                 "affected_fraction"):
        setattr(o, name, params[name])
    o.aux_weight = params["aux_weight"]
    o.aux_mode = params["aux_mode"]
    o.lecam_weight = params["lecam"]
    if params["cond_ramp"] is not None:
        o.cond_start_kimg, o.cond_end_kimg = params["cond_ramp"]
    _apply_runtime(o, params)
    if params["p"] is not None:
        o.p = params["p"]
    elif params["aug"] == "fixed":
        raise click.UsageError("--aug fixed needs --p (the constant augment probability)")
    o.progress = not params.get("no_progress", False)
    return o


# Architecture a transfer takes from its base snapshot (TrainingOptions field -> CLI option).
_ARCHITECTURE = {"resolution": "resolution", "z_dim": "z_dim", "w_dim": "z_dim", "map_layers": "map_layers",
                 "channel_base": "channel_base", "channel_max": "channel_max", "mbstd_group": "batch",
                 "num_fp16_res": "precision", "conv_clamp": "precision"}

# TrainingOptions field -> CLI option, where the names differ (besides _PRESET_FIELDS).
_CLI_NAMES = {"lecam_weight": "lecam", "cond_start_kimg": "cond_ramp", "cond_end_kimg": "cond_ramp"}


def _architecture_from_official(opts, path: Path, given: set[str]) -> None:
    """Resolution, z/w width, mapping depth and channels of an official pickle's G, so that a
    transfer loads every synthesis weight (a preset's smaller network would keep most of them
    at their random init), unless the user sets a value on purpose."""
    from synth.networks.legacy import generator_kwargs_from_official, load_official_pickle

    nets = load_official_pickle(path)
    src = nets.get("G_ema") or nets.get("G")
    if src is None:
        raise click.UsageError(f"--resume {path}: the pickle has no generator")
    k = generator_kwargs_from_official(src["init_kwargs"])
    taken = {"resolution": k["img_resolution"], "z_dim": k["z_dim"], "w_dim": k["w_dim"],
             "map_layers": k["mapping_kwargs"]["num_layers"], "channel_base": k["synthesis_kwargs"]["channel_base"],
             "channel_max": k["synthesis_kwargs"]["channel_max"]}
    for name, value in taken.items():
        if _ARCHITECTURE[name] not in given:
            setattr(opts, name, int(value))


def _parse_embed_dim(ctx, param, value):
    if value is None:
        return None
    try:
        dims = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a width (e.g. 64) or one per factor (e.g. 64,64)") from None
    if any(d < 1 for d in dims):
        raise click.BadParameter(f"{value!r}: widths must be positive")
    return dims


def _parse_ramp(ctx, param, value):
    if value is None:
        return None
    try:
        start, end = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give START,END in kimg, e.g. 5,20") from None
    return start, end


_RUNTIME = ("compile", "threads", "judge", "metrics_every", "judge_per_cell", "time_limit")


def _apply_runtime(o, params: dict, only: set[str] | None = None) -> None:
    """Options that may change on resume (speed and fidelity monitoring); ``only``: just these."""
    for name in _RUNTIME:
        if only is not None and name not in only:
            continue  # a resumed run keeps what it had unless the option is given again
        value = params[name]
        setattr(o, name, [str(Path(j).resolve()) for j in value] if name == "judge" else value)


def _check_resume_overrides(stored, params: dict, given: set[str], fresh) -> None:
    """On a true resume only schedule/device options may change; say which one differs."""
    from synth.training.training_loop import TrainingOptions

    for f in fields(TrainingOptions):
        if f.name in TrainingOptions.RESUME_MUTABLE:
            continue
        cli = next((k for k, v in _PRESET_FIELDS.items() if v == f.name), None) or _CLI_NAMES.get(f.name, f.name)
        if cli in given or (f.name == "ties" and "tie" in given):
            new, old = getattr(fresh, f.name), getattr(stored, f.name)
            if (list(new) if isinstance(new, tuple) else new) != (list(old) if isinstance(old, tuple) else old):
                raise click.UsageError(
                    f"--{cli.replace('_', '-')} {new!r} differs from the snapshot's {old!r}; a resumed run keeps its "
                    f"settings (only {', '.join('--' + m.replace('_', '-') for m in ('kimg', 'tick', 'snap', 'device', 'precision', 'compile', 'threads', 'judge', 'metrics-every'))} may change)"
                )


@click.command("train", context_settings={"show_default": True, "help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Dataset folder (labels.csv [+ conditions.yaml]) or .zip. Default: the built-in face atlas.")
@click.option("--cond", default="disease,age",
              help="Factors to condition on, in grid order (rows, columns); none: unconditional training on the images "
                   "alone (any image folder, labels.csv or dataset.json with labels null), e.g. a base model to fine-tune.")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="Architecture/optimisation preset. Default: cpu on --device cpu, auto otherwise.")
@click.option("--resolution", type=int, default=None, help="Training resolution (power of two). Default: cpu preset 32, else the data's.")
@click.option("--kimg", type=float, default=None,
              help="Train until this many thousand real images were shown. Default: the preset's (cpu 200, others 25000).")
@click.option("--batch", type=int, default=None, help="Total batch size (over all processes).")
@click.option("--gamma", type=float, default=None, help="R1 regularisation weight.")
@click.option("--lr", type=float, default=None, help="Adam learning rate of G and D.")
@click.option("--ema-kimg", type=float, default=None, help="Half-life of the generator EMA in kimg.")
@click.option("--map-layers", type=int, default=None, help="Mapping network depth.")
@click.option("--channel-base", type=int, default=None, help="Channels = min(channel_base / res, channel_max).")
@click.option("--channel-max", type=int, default=None, help="Maximum channels per layer.")
@click.option("--z-dim", type=int, default=None, help="Latent (z and w) width.")
@click.option("--embed-dim", callback=_parse_embed_dim, default=None, metavar="W[,W...]",
              help="Label embedding width per factor (one value for all, or one per factor). Default: embed_dim in the "
                   "data's conditions.yaml, else the w width split over the factors (cpu preset: 64+64 for disease x age).")
@click.option("--mirror/--no-mirror", default=False, help="Randomly x-flip real images.")
@click.option("--aug", type=click.Choice(["ada", "fixed", "none"]), default="ada", help="Augmentation mode.")
@click.option("--target", type=float, default=0.6, help="ADA target for E[sign(D(real))].")
@click.option("--p", type=float, default=None, help="Augment probability: constant for --aug fixed, start value for ada.")
@click.option("--aug-kind", type=click.Choice(["faces", "skin", "generic"]), default="faces",
              help="Image kind: faces disable x-flip, skin disables hue/luma flip.")
@click.option("--aug-spec", default="bgc", help="Augmentation pipeline (b=blit, g=geometric, c=colour, f=filter ...).")
@click.option("--balance/--no-balance", default=True, help="Sample real images so every condition cell has equal weight.")
@click.option("--affected-fraction", type=float, default=None,
              help="With --balance: share of affected images (not at the control level) in each batch, e.g. 0.5.")
@click.option("--fake-labels", type=click.Choice(["data", "cells"]), default="data",
              help="Labels of generated images: drawn like the real ones, or uniform over all cells.")
@click.option("--tie", multiple=True, metavar="FACTOR:LEVEL=A+B",
              help="Tie a level's embedding to the mean of others, e.g. stage:intermediate=early+late (repeatable).")
@click.option("--aux-weight", type=float, default=0.0,
              help="Auxiliary classifier on D's features (one head per factor, AC-GAN); its weight in D's and G's loss. 0 = off.")
@click.option("--aux-mode", type=click.Choice(["ac", "adc"]), default="ac",
              help="ac: the heads predict the level; adc: a real and a fake output per level (ADC-GAN), so G cannot "
                   "satisfy the classifier with artefacts.")
@click.option("--cond-ramp", callback=_parse_ramp, default=None, metavar="START,END",
              help="Transitional conditioning: unconditional until START kimg, label weight ramped to 1 by END kimg.")
@click.option("--lecam", type=float, default=0.0, help="LeCam regulariser weight on D's outputs (limited data). 0 = off.")
@click.option("--pl-weight", type=float, default=None, help="Path-length regulariser weight (0 = off). Default: the preset's.")
@click.option("--ada-kimg", type=float, default=None,
              help="ADA speed: kimg for p to move by 1. Short runs need a small value. Default: the preset's.")
@click.option("--judge", type=click.Path(exists=True, path_type=Path), multiple=True,
              help="Classifier checkpoint or CV folder that scores G_ema while training (repeatable; see --metrics-every).")
@click.option("--metrics-every", type=float, default=None,
              help="With --judge: score G_ema every this many kimg into stats.jsonl and keep best.ckpt by judged accuracy.")
@click.option("--judge-per-cell", type=int, default=10, help="Generated images per condition cell for each judge score.")
@click.option("--compile", "compile", is_flag=True, help="torch.compile the main G and D passes (slow first step).")
@click.option("--threads", type=int, default=None, help="torch CPU threads. Default: torch's choice.")
@click.option("--time-limit", type=float, default=None,
              help="Stop after this many minutes of training in this process (at a tick end, with a snapshot); --resume goes on.")
@click.option("--resume", type=click.Path(exists=True, path_type=Path), default=None,
              help="Our snapshot or run folder (true resume), or an official .pkl (weights only, reported surgery).")
@click.option("--partial-transfer", is_flag=True,
              help="With --resume FILE.pkl: train on even if some synthesis weights of the pickle do not fit and keep "
                   "their random initialisation (refused by default: that is not fine-tuning).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), help="Parent folder of numbered run folders.")
@click.option("--seed", type=SEED, default=0, help="Random seed.")
@click.option("--snap", type=int, default=None, help="Snapshot every N ticks.")
@click.option("--tick", type=float, default=None, help="Tick length in kimg (stats, grid, progress line).")
@click.option("--grid-per", type=click.Choice(["row", "cell"]), default="row",
              help="Grid latents: one z per row (same face across columns) or per cell.")
@click.option("--device", type=DEVICE, default="cpu", help="cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", help="Autocast precision (CUDA only).")
@click.option("--no-progress", is_flag=True, help="No progress bar (log lines only).")
@click.option("--dry-run", is_flag=True, help="Print the resolved options as JSON and exit without writing anything.")
@click.pass_context
def train(ctx: click.Context, **params) -> None:
    """Train a conditional StyleGAN2-ADA with a factored label embedding.

    \b
    Examples:
      synth train --preset cpu --kimg 50                       # built-in face atlas, CPU
      synth train --data faces/ --cond disease,age --preset paper256 \\
                  --resume ffhq-res256-mirror-paper256-noaug.pkl --device cuda
      synth train --data nf1/ --cond stage --tie stage:intermediate=early+late --aug-kind skin
      synth train --resume runs/00003-faces-disease-age-cpu-32   # continue a run exactly

    Each run writes runs/NNNNN-<desc>/ with options.json, log.txt, stats.jsonl, image grids
    (rows = levels of the first factor, columns = levels of the second) and snapshots
    (.ckpt, loadable without executing code); latest.json names the newest snapshot.
    """
    from synth.data.dataset import open_dataset
    from synth.networks.checkpoint import ModuleEntry, load_checkpoint
    from synth.training.training_loop import (
        TrainingDiverged,
        TrainingError,
        TrainingOptions,
        Trainer,
        find_snapshot,
    )

    given = {k for k in params if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    for spec in params["tie"]:
        try:
            parse_tie(spec)
        except ConditionError as e:
            raise click.BadParameter(str(e), param_hint="--tie") from None

    if params["out"].exists() and not params["out"].is_dir():
        raise click.UsageError(f"--out {params['out']}: is a file; give a folder for the numbered run folders")
    resume = params["resume"]
    official = resume is not None and resume.suffix == ".pkl"
    true_resume = resume is not None and not official
    transfer = False  # an unconditional snapshot of ours into a new conditional run
    try:
        imageset = None
        snap = None
        ck = None
        if true_resume:
            snap = find_snapshot(resume)
            ck = load_checkpoint(snap)
            transfer = bool((ck.get("options") or {}).get("unconditional")) and "cond" in given and _parse_cond(params["cond"]) != []
            true_resume = not transfer
            if "options" not in ck or "progress" not in ck or (true_resume and not all(isinstance(ck.get(k), ModuleEntry) for k in ("G", "D"))):
                raise click.UsageError(f"--resume {snap}: not a training snapshot (an exported generator has no discriminator "
                                       f"or optimiser state and cannot be resumed); resume the run folder or snapshot it came from")
        if transfer:
            base = TrainingOptions.from_dict(ck["options"])
            cond = _parse_cond(params["cond"])
            if params["data"] is not None:
                imageset = open_dataset(params["data"], cond=cond)
            opts = resolve_options({**params, "preset": params["preset"] or base.preset}, given, imageset)
            # The base's architecture, unless the user overrides a value on purpose.
            for name, cli in _ARCHITECTURE.items():
                if cli not in given:
                    setattr(opts, name, getattr(base, name))
            dataname = params["data"].stem if params["data"] is not None else "atlas"
            desc = f"{dataname}-{'-'.join(opts.cond)}-{opts.preset}-{opts.resolution}-from-uncond"
            run_dir = next_run_dir(params["out"], re.sub(r"[^A-Za-z0-9_.-]", "_", desc))
        elif true_resume:
            stored = TrainingOptions.from_dict(ck["options"])
            if stored.embed_dim is None and ck.get("space") is not None:
                stored.embed_dim = list(ck["space"].embed_dims)  # a snapshot from before widths were recorded
            fresh = resolve_options({**params, "preset": params["preset"] or stored.preset}, given) if given else stored
            _check_resume_overrides(stored, params, given, fresh)
            done_kimg = float(ck["progress"].get("cur_nimg", 0)) / 1000
            if "kimg" in given and params["kimg"] <= done_kimg:
                raise click.UsageError(f"--kimg {params['kimg']:g}: the run is already at {done_kimg:.3f} kimg; "
                                       f"give a larger total to continue it")
            opts = stored
            for name, cli in (("kimg", "kimg"), ("tick_kimg", "tick"), ("snap", "snap"), ("device", "device"), ("precision", "precision")):
                if cli in given:
                    setattr(opts, name, params[cli])
            _apply_runtime(opts, params, only=given & set(_RUNTIME))
            if "data" in given:
                opts.data = str(Path(params["data"]).resolve())
            opts.progress = not params["no_progress"]
            run_dir = snap.parent
            if opts.data is not None and not Path(opts.data).exists():
                raise click.UsageError(f"--data: the snapshot's dataset {opts.data} is gone; pass --data with the same images")
        else:
            if params["data"] is not None:
                cond = _parse_cond(params["cond"])
                imageset = open_dataset(params["data"], cond=cond or None, unlabelled=not cond)
            opts = resolve_options(params, given, imageset)
            if official:
                _architecture_from_official(opts, resume, given)
            opts.validate()
            dataname = params["data"].stem if params["data"] is not None else "atlas"
            desc = f"{dataname}-{'-'.join(opts.cond) or 'uncond'}-{opts.preset}-{opts.resolution}"
            run_dir = next_run_dir(params["out"], re.sub(r"[^A-Za-z0-9_.-]", "_", desc))
        opts.validate()
        world = int(os.environ.get("WORLD_SIZE", 1))
        if opts.batch % world:
            # Checked before the process group starts; every rank fails, only rank 0 says why.
            if int(os.environ.get("RANK", 0)) != 0:
                raise SystemExit(1)
            raise TrainingError(f"--batch {opts.batch} must be divisible by the {world} processes")
    except ValueError as e:  # UserError (every layer's input errors) and the pickle importer's
        raise click.ClickException(message(e)) from None

    if params["dry_run"]:
        out = {"run_dir": str(run_dir), "resume": str(snap or resume) if resume else None,
               "resume_kind": "official" if official else "snapshot" if true_resume else "transfer" if transfer else None,
               "gpus": int(os.environ.get("WORLD_SIZE", 1)), "options": opts.to_dict()}
        click.echo(json.dumps(out, indent=2))
        return

    rank = int(os.environ.get("RANK", 0))
    fresh_run = not true_resume and not run_dir.exists()
    if fresh_run and int(os.environ.get("WORLD_SIZE", 1)) == 1:
        try:
            run_dir = claim_run_dir(run_dir)
        except PermissionError:
            raise click.ClickException(f"--out {params['out']}: permission denied (not writable?)") from None
    trainer = None
    try:
        if rank == 0 and imageset is not None:
            _warn_about_data(imageset, opts)
        if true_resume and rank == 0:
            for tmp in run_dir.glob(".*.tmp"):  # half-written files of a process killed mid-write
                tmp.unlink(missing_ok=True)
                click.echo(f"removed {tmp.name}: left by an interrupted write")
        trainer = Trainer(opts, run_dir, imageset=imageset, log=click.echo)
        if true_resume:
            trainer.resume(snap, ck)
            ck = None  # the snapshot's tensors now live in the networks; free the copy
            trainer.log(f"resumed from {snap} at kimg {trainer.cur_nimg / 1000:.3f} (tick {trainer.cur_tick}, augment p {trainer.augment_p():.4f})")
        elif official:
            trainer.log(trainer.import_official(resume, partial=params["partial_transfer"]))
        elif transfer:
            trainer.log(trainer.import_snapshot(snap, ck))
            ck = None
        if rank == 0:
            from synth.utils.io import atomic_write_text

            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "options.json", json.dumps(opts.to_dict(), indent=2))
            if not true_resume:
                trainer.log(f"run folder {run_dir}")
        trainer.train()
    except KeyboardInterrupt:
        if _drop_unfinished(run_dir, fresh_run, trainer, rank):
            raise click.ClickException("interrupted before the first snapshot; nothing was kept") from None
        raise click.ClickException(f"interrupted; continue with: synth train --resume {run_dir}") from None
    except TrainingDiverged as e:
        raise click.ClickException(str(e)) from None
    except UserError as e:
        _drop_unfinished(run_dir, fresh_run, trainer, rank)
        raise click.ClickException(message(e)) from None
    except PermissionError as e:  # a read-only --out or run folder
        _drop_unfinished(run_dir, fresh_run, trainer, rank)
        raise click.ClickException(f"{e.filename or e}: permission denied (not writable?)") from None
    if rank == 0:
        click.echo(f"done: {trainer.cur_nimg / 1000:.3f} kimg, last snapshot {trainer.last_snapshot}")


def _drop_unfinished(run_dir: Path, fresh_run: bool, trainer, rank: int) -> bool:
    """Remove a new run folder that holds no snapshot yet, so a failed start leaves no debris."""
    import shutil

    if rank != 0 or not fresh_run or not run_dir.is_dir():
        return False
    if trainer is not None and trainer.last_snapshot is not None:
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True


def _warn_about_data(imageset, opts) -> None:
    """One warning line for each thing about the data that a user would want to know first."""
    if imageset.space is None:
        return
    empty = [c for c, n in imageset.cell_counts(opts.cond or None).items() if n == 0]
    if empty:
        shown = ", ".join("/".join(c) for c in empty[:5]) + (" ..." if len(empty) > 5 else "")
        click.echo(f"warning: {len(empty)} condition cell(s) have no training images ({shown}); "
                   f"the generator can only guess them", err=True)
    from synth.data.dataset import image_sizes

    sizes = image_sizes(imageset)
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(4)) + (" ..." if len(sizes) > 4 else "")
        click.echo(f"warning: the images have {len(sizes)} sizes ({shown}); each is centre-cropped to a square and "
                   f"resized to {opts.resolution} px", err=True)
    elif any(w != h for w, h in sizes):
        (w, h), = sizes
        click.echo(f"warning: the images are {w}x{h} px, not square; each is centre-cropped to {min(w, h)}x{min(w, h)}", err=True)
    small = min(min(w, h) for w, h in sizes)
    if small < opts.resolution:
        click.echo(f"warning: --resolution {opts.resolution} is above the data's smallest side ({small} px): images are upsampled", err=True)


def main() -> None:  # ``python -m synth.training.cli``
    train()


if __name__ == "__main__":
    main()
