"""The generator each fold's synthetic images come from.

With one GAN per fold, fold f's GAN sees only the images of the other folds, so its
held-out images never influence the synthetic training images (as in the study).  A shared
``--network`` is simpler but, if it was trained on all images, every held-out image leaked
into the generator and the measured gain is optimistic.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from synth.ablation.cache import read_json, try_claim, write_json
from synth.ablation.plan import AblationConfig, AblationError

__all__ = ["check_generator_space", "fold_gan_options", "fold_gan_done", "ensure_fold_gan", "load_fold_generator"]

POLL_SECONDS = 2.0
# Set by the ablation itself (the fold's data, its length, its seed) or meaningless for a fold
# GAN: a time limit would mark a half-trained GAN as finished.
_NOT_GAN_OPTIONS = ("data", "cond", "kimg", "seed", "time_limit", "judge", "metrics_every", "judge_per_cell", "device")


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


def fold_gan_options(config: AblationConfig, fold: int):
    """TrainingOptions of fold ``fold``'s GAN: a preset, the study's balancing, overrides."""
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


def ensure_fold_gan(config: AblationConfig, fold: int, train_set, out: Path, log=None, wait: bool = True) -> Path | None:
    """Snapshot path of fold ``fold``'s GAN, training it on ``train_set`` if not cached.

    ``gans/fold{f}/generator.json`` marks a finished GAN.  Another process training the same
    fold's GAN is waited for (``wait``; else None is returned at once); a killed training
    restarts from its last snapshot.
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
            opts = fold_gan_options(config, fold)
            try:
                trainer = Trainer(opts, run_dir, imageset=train_set, log=log or (lambda m: None))
                if (run_dir / "latest.json").is_file():
                    try:
                        trainer.resume(find_snapshot(run_dir))
                    except (CheckpointError, TrainingError, KeyError, ValueError):
                        trainer = Trainer(opts, run_dir, imageset=train_set, log=log or (lambda m: None))
                trainer.train()
                if trainer.last_snapshot is None or trainer.cur_nimg < int(round(opts.kimg * 1000)):
                    trainer.save_snapshot()
            except (TrainingError, CheckpointError) as e:
                raise AblationError(f"GAN of fold {fold}: {str(e).splitlines()[0]}") from None
            snap = trainer.last_snapshot
            write_json(marker, {"snapshot": snap.name, "kimg": trainer.cur_nimg / 1000, "n_images": len(train_set),
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
