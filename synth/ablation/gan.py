"""The generator each fold's synthetic images come from.

With one GAN per fold, fold f's GAN sees only the images of the other folds, so its
held-out images never influence the synthetic training images (as in the study).  A shared
``--network`` is simpler but, if it was trained on all images, every held-out image leaked
into the generator and the measured gain is optimistic.

The study's fold GANs started from a generator pretrained on a large face pool and trained on
the fold's images plus about 2,500 unaffected faces.  Here: ``gan_base`` (our snapshot, e.g.
``synth train --cond none`` on other subjects) is the starting point of every fold GAN (every
tensor of the same name and shape copied, the label embedding new, as ``synth train --resume
BASE --cond ...``); ``gan_pool`` (a labelled dataset of other subjects) joins every fold GAN's
training images, never a classifier's; ``gan_judges`` (classifiers trained on other subjects)
score each fold GAN while it trains, and the snapshot the selection rule prefers
(:data:`synth.training.monitor.SELECTION_RULE`, fidelity and variety: ``best.ckpt``) becomes
the fold's generator, its figures recorded in ``gans/fold{f}/generator.json``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from synth.ablation.cache import read_json, try_claim, write_json
from synth.ablation.plan import AblationConfig, AblationError

__all__ = ["check_generator_space", "fold_gan_options", "fold_gan_done", "ensure_fold_gan", "load_fold_generator",
           "open_gan_base", "fold_gan_records", "check_gans_source", "GAN_SETTINGS"]

POLL_SECONDS = 2.0
# Set by the ablation itself (the fold's data, its length, its seed, its judges: --gan-judge) or
# meaningless for a fold GAN: a time limit would mark a half-trained GAN as finished.
_NOT_GAN_OPTIONS = ("data", "cond", "kimg", "seed", "time_limit", "judge", "device", "unconditional")
# ImageSet.join tag of the --gan-pool images in a fold GAN's training set (their files: @pool/...).
POOL_TAG = "pool"
# What a fold GAN takes from --gan-base so that every tensor of the base fits.
_BASE_ARCHITECTURE = ("resolution", "z_dim", "w_dim", "map_layers", "channel_base", "channel_max", "mbstd_group",
                      "num_fp16_res", "conv_clamp")
# What the fold GANs depend on (keys of AblationConfig.fingerprint): --gans-from takes another
# folder's fold GANs only when these and the folds are the same.
GAN_SETTINGS = ("data", "cond", "k", "seed", "gan_per_fold", "gan_kimg", "gan_resolution", "gan_preset", "gan_options",
                "gan_base", "gan_pool", "gan_judges")
# Scores of the monitor kept in generator.json for the report (see synth.training.monitor).
_SELECTION_KEYS = ("metric/select", "metric/judge/mean", "metric/diversity/mean", "metric/diversity/min")


def open_gan_base(path: str | None, tensors: bool = True):
    """(TrainingOptions, checkpoint) of ``--gan-base``, or (None, None); AblationError if it is
    not one of our training snapshots.  ``tensors=False`` reads the options from the file's
    metadata alone and returns None for the checkpoint (enough to check a run or to resume a
    fold GAN, which never needs the base's weights)."""
    if path is None:
        return None, None
    from synth.networks.checkpoint import CheckpointError, load_checkpoint, read_metadata
    from synth.training.training_loop import TrainingOptions, find_snapshot

    try:
        snap = find_snapshot(path)
        if tensors:
            ck = load_checkpoint(snap, map_location="cpu")
            options, has_g = ck.get("options"), ck.get("G") is not None
        else:
            meta = read_metadata(snap)
            ck, options, has_g = None, meta.get("values", {}).get("options"), "G" in meta.get("modules", {})
    except (CheckpointError, OSError, ValueError) as e:
        raise AblationError(f"--gan-base {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(options, dict) or not has_g:
        raise AblationError(f"--gan-base {path}: not a training snapshot of synth train (no options or no G)")
    return TrainingOptions.from_dict(options), ck


def check_generator_space(gspace, dspace, where: str) -> None:
    """The generator must know every factor and level the data uses."""
    if set(gspace.names) != set(dspace.names):
        raise AblationError(
            f"{where}: generator factors {', '.join(gspace.names)} differ from the data's {', '.join(dspace.names)} (check --cond)"
        )
    for name in dspace.names:
        missing = [lv for lv in dspace.factor(name).levels if lv not in gspace.factor(name).levels]
        if missing:
            raise AblationError(f"{where}: generator has no level {missing[0]!r} of factor {name!r}")


def check_gans_source(config: AblationConfig, folds, imageset) -> None:
    """--gans-from: refuse a folder whose fold GANs this run would not have trained itself
    (other GAN settings or other folds); changes nothing."""
    import numpy as np

    from synth.data.dataset import DatasetError
    from synth.data.folds import read_folds

    src = Path(config.gans_from)
    plan = read_json(src / "plan.json") if src.is_dir() else None
    if not isinstance(plan, dict) or not isinstance(plan.get("fingerprint"), dict):
        raise AblationError(f"--gans-from {src}: holds no ablation (plan.json missing)")
    theirs, ours = plan["fingerprint"], config.fingerprint()
    diff = [k for k in GAN_SETTINGS if theirs.get(k) != ours.get(k)]
    if diff:
        raise AblationError(f"--gans-from {src}: its fold GANs were made with other settings ({', '.join(diff)})")
    try:
        their_folds = read_folds(src / "folds.csv", imageset)
    except (DatasetError, OSError) as e:
        raise AblationError(f"--gans-from {src}: no usable folds.csv ({str(e).splitlines()[0]})") from None
    if not np.array_equal(their_folds, folds):
        raise AblationError(f"--gans-from {src}: its folds (folds.csv) differ from this run's")


def _take_fold_gan(src_out: Path, out: Path, fold: int) -> None:
    """Copy a finished fold GAN of another ablation folder into ``out`` (hard links where the file
    system allows: snapshots are only ever replaced, never written in place), all or nothing."""
    import os
    import shutil
    import tempfile

    def link_or_copy(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    src, dst = src_out / "gans" / f"fold{fold}", out / "gans" / f"fold{fold}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".fold{fold}.", suffix=".tmp", dir=dst.parent))
    try:
        shutil.copytree(src, tmp / "run", copy_function=link_or_copy,
                        ignore=lambda d, names: [n for n in names if n.endswith((".lock", ".tmp"))])
        marker = tmp / "run" / "generator.json"  # write_json replaces the link, never writes through it
        write_json(marker, {**read_json(marker), "taken_from": str(src)})
        if dst.exists():  # a half-trained GAN of this folder gives way to the finished one
            shutil.rmtree(dst)
        os.replace(tmp / "run", dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fold_gan_options(config: AblationConfig, fold: int, base=None):
    """TrainingOptions of fold ``fold``'s GAN: a preset, the study's balancing, the architecture
    of ``base`` (the TrainingOptions of --gan-base), the judges, overrides."""
    from synth.training.presets import preset_fields, resolve_preset
    from synth.training.training_loop import TrainingError, TrainingOptions

    try:
        pre = resolve_preset(config.gan_preset, config.gan_resolution)
    except ValueError as e:
        raise AblationError(f"--gan-resolution/--gan-preset: {e}") from None
    fields = preset_fields(pre)
    # snapshots at the preset's interval, so a killed (or time-limited) fold GAN resumes
    fields.update(kimg=config.gan_kimg, tick_kimg=min(pre.tick_kimg, config.gan_kimg))
    opts = TrainingOptions(data=str(config.data), cond=list(config.cond) if config.cond else [],
                           seed=config.seed + fold, device=config.device, progress=config.progress, **fields)
    if base is not None:
        if base.resolution != opts.resolution:
            raise AblationError(f"--gan-resolution {opts.resolution}: the --gan-base generator is {base.resolution} px")
        for name in _BASE_ARCHITECTURE:
            setattr(opts, name, getattr(base, name))
    if config.gan_judges:
        opts.judge = [str(j) for j in config.gan_judges]
        opts.metrics_every = max(config.gan_kimg / 10, opts.tick_kimg)  # about ten scores per GAN
    known = {f.name for f in dataclasses.fields(TrainingOptions)}
    for key, value in config.gan_options.items():
        if key not in known or key in _NOT_GAN_OPTIONS:
            raise AblationError(f"--gan-option {key}: not a per-fold GAN training option")
        setattr(opts, key, value)
    try:
        opts.validate()
    except TrainingError as e:
        raise AblationError(f"fold GAN: {e}") from None
    return opts


def fold_gan_done(out: Path, fold: int) -> Path | None:
    """The finished snapshot of fold ``fold``'s GAN, or None."""
    run_dir = out / "gans" / f"fold{fold}"
    done = read_json(run_dir / "generator.json")
    if done is not None and (run_dir / done["snapshot"]).is_file():
        return run_dir / done["snapshot"]
    return None


def _selection_stats(run_dir: Path) -> dict | None:
    """The monitor's scores of the snapshot best.ckpt holds (the last scoring marked best)."""
    import json

    best = None
    path = run_dir / "stats.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("metric/best"):
                best = rec
    if best is None:
        return None
    out = {"kimg": best.get("kimg")}
    out.update({k[len("metric/"):]: best[k] for k in sorted(best) if k.startswith("metric/judge/") or k in _SELECTION_KEYS})
    return out


def ensure_fold_gan(config: AblationConfig, fold: int, train_set, out: Path, log=None, wait: bool = True) -> Path | None:
    """Snapshot path of fold ``fold``'s GAN, training it on ``train_set`` if not cached.

    ``gans/fold{f}/generator.json`` marks a finished GAN.  Another process training the same
    fold's GAN is waited for (``wait``; else None is returned at once); a killed training
    restarts from its last snapshot.  With ``--gan-base`` a new GAN starts from the base's
    weights; with ``--gan-judge`` the fold's generator is best.ckpt (the selection rule).
    """
    from synth.networks.checkpoint import CheckpointError
    from synth.training.training_loop import Trainer, TrainingError, find_snapshot

    run_dir = out / "gans" / f"fold{fold}"
    marker = run_dir / "generator.json"
    while True:
        snap = fold_gan_done(out, fold)
        if snap is not None:
            return snap
        claim = try_claim(out / "gans" / f"fold{fold}.lock", stale_after=config.stale_after)
        if claim is None:
            if not wait:
                return None
            time.sleep(POLL_SECONDS)  # another process is training this GAN
            continue
        with claim:
            snap = fold_gan_done(out, fold)
            if snap is not None:
                return snap
            say = log or (lambda m: None)
            if config.gans_from is not None and fold_gan_done(Path(config.gans_from), fold) is not None:
                say(f"fold {fold}: GAN taken from {config.gans_from}")
                _take_fold_gan(Path(config.gans_from), out, fold)
                return fold_gan_done(out, fold)
            base_opts, _ = open_gan_base(config.gan_base, tensors=False)
            opts = fold_gan_options(config, fold, base_opts)
            try:
                trainer = Trainer(opts, run_dir, imageset=train_set, log=say)
                resumed = False
                if (run_dir / "latest.json").is_file():
                    try:
                        trainer.resume(find_snapshot(run_dir))
                        resumed = True
                    except (CheckpointError, TrainingError, KeyError, ValueError):
                        trainer = Trainer(opts, run_dir, imageset=train_set, log=say)
                if not resumed and config.gan_base is not None:  # the base's weights, only for a fresh GAN
                    say(trainer.import_snapshot(config.gan_base, open_gan_base(config.gan_base)[1]))
                trainer.train()
                if trainer.last_snapshot is None or trainer.cur_nimg < int(round(opts.kimg * 1000)):
                    trainer.save_snapshot()
            except (TrainingError, CheckpointError) as e:
                raise AblationError(f"GAN of fold {fold}: {str(e).splitlines()[0]}") from None
            snap = trainer.last_snapshot
            selected = "last"
            if opts.judge and (run_dir / "best.ckpt").is_file():
                snap, selected = run_dir / "best.ckpt", "best"
            n_pool = sum(r.file.startswith(f"@{POOL_TAG}/") for r in train_set.records)
            write_json(marker, {"snapshot": snap.name, "selected": selected, "kimg": trainer.cur_nimg / 1000,
                                "n_images": len(train_set), "n_pool": n_pool, "base": config.gan_base,
                                "judges": list(opts.judge), "selection": _selection_stats(run_dir) if opts.judge else None,
                                "options": opts.to_dict()})
            return snap


def load_fold_generator(path: Path, dspace, device: str):
    """(G, space) from a checkpoint, checked against the data's condition space."""
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.network import open_generator

    try:
        G, gspace, _meta, _p = open_generator(path, device=device)
    except SynthesisError as e:
        raise AblationError(str(e)) from None
    check_generator_space(gspace, dspace, f"--network {path}")
    return G, gspace


def fold_gan_records(out: Path, k: int) -> list[dict | None]:
    """generator.json of every fold GAN (None where a fold has none), for the report."""
    return [read_json(out / "gans" / f"fold{f}" / "generator.json") for f in range(k)]
