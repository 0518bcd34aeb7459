"""What the cells of an ablation train on, besides the real training images of their fold.

* synthetic sets: fold f's images of one product type, generated from fold f's GAN (or the
  shared ``--network``) with the study count rule on fold f's training images times the
  arm's ratio, written once to ``synthetic/fold{f}/{arm}/`` and claimed by one worker;
* the perfect-generator set (``--types perfect``, atlas data only): new atlas subjects
  rendered for the same cells and counts;
* the matched control's repeats: real training images again, cell by cell, as many as the
  synthetic arms of its ratio get;
* the inner validation split that chooses each classifier's epoch, and the real images the
  classifier fits on (the training folds less that split).

:class:`TrainingSets` holds these as methods of the run (:class:`synth.ablation.runner._Run`
inherits them), since they read the run's data, folds and generators.
"""
from __future__ import annotations

import shutil
import time
import zlib
from pathlib import Path

import numpy as np

from synth.ablation.cache import try_claim
from synth.ablation.gan import POOL_TAG, ensure_fold_gan, load_fold_generator
from synth.ablation.plan import PERFECT_TYPE, AblationError, Arm

__all__ = ["TrainingSets", "POLL_SECONDS"]

POLL_SECONDS = 2.0  # how often a worker looks again at what another worker holds


def _open(path, cond, what: str, space=None):
    from synth.data.dataset import DatasetError, open_dataset

    try:
        return open_dataset(path, cond=list(cond) if cond else None, space=space)
    except DatasetError as e:
        raise AblationError(f"{what}: {str(e).splitlines()[0]}") from None


class TrainingSets:
    """The training sets of a run's cells (mixed into :class:`synth.ablation.runner._Run`).

    Reads the run's ``config``, ``out``, ``imageset``, ``space``, ``folds``, ``cells``,
    ``cell_factors``, ``cell_order``, ``target``, ``own`` (the encoded real images), ``_atlas``
    (atlas.json of ``--data`` for the perfect arm), ``_shared`` (the ``--network`` generator),
    ``_pool`` (the ``--gan-pool`` images or None)
    and keeps ``_generators`` (one fold GAN in memory) and ``_inner`` (inner splits by fold).
    """

    # ---- generators and synthetic sets -----------------------------------------------------
    def generator(self, fold: int):
        if self.config.network is not None:
            return self._shared
        if fold not in self._generators:
            snap = ensure_fold_gan(self.config, fold, self.gan_training_set(fold), self.out)
            self._generators = {fold: load_fold_generator(snap, self.space, self.config.device)}  # keep one in memory
        return self._generators[fold]

    def gan_training_set(self, fold: int):
        """What fold ``fold``'s GAN trains on: the fold's training images, plus ``--gan-pool``'s
        images of other subjects (never a classifier's)."""
        train_set = self.imageset.subset(np.flatnonzero(self.folds != fold))
        return train_set if self._pool is None else train_set.join(self._pool, POOL_TAG)

    def synthetic_dir(self, fold: int, arm: Arm) -> Path:
        return self.out / "synthetic" / f"fold{fold}" / arm.name

    def synthetic(self, fold: int, arm: Arm):
        """Fold ``fold``'s synthetic training images of ``arm`` (generated once, then cached)."""
        d = self.synthetic_dir(fold, arm)
        while True:
            if (d / "labels.csv").is_file():  # written last: the set is complete
                return _open(d, None, f"synthetic set {d}")
            claim = try_claim(d.with_name(d.name + ".lock"), stale_after=self.config.stale_after)
            if claim is not None:
                break
            time.sleep(POLL_SECONDS)  # another worker is generating it (a few seconds)
        with claim:
            if (d / "labels.csv").is_file():
                return _open(d, None, f"synthetic set {d}")
            if d.exists():
                shutil.rmtree(d)  # left over from a killed run
            self._generate(fold, arm, d)
        return _open(d, None, f"synthetic set {d}")

    def _study_counts(self, fold: int, space, ratio: float):
        """-> (counts, roles): images per cell of ``space`` that a synthetic arm of ``ratio`` gets in
        fold ``fold`` (the study count rule on the fold's training images, times the ratio).
        Raises ConditionError."""
        from synth.synthesis.counts import parse_exclusions, resolve_roles, study_counts

        names = list(space.names)
        counts_in = {c: 0 for c in space.cells()}
        for i in np.flatnonzero(self.folds != fold):
            counts_in[tuple(self.imageset[i].labels[n] for n in names)] += 1
        cfg = self.config
        roles = resolve_roles(space, cfg.age_factor if cfg.age_factor in names else None)
        base = study_counts(space, counts_in, roles, parse_exclusions(cfg.exclude, space))
        return {c: int(n * ratio + 0.5) for c, n in base.items()}, roles

    def _render_perfect(self, fold: int, arm: Arm, d: Path) -> None:
        """The perfect-generator set: the atlas renders new subjects (its own seed stream, never
        the data's) for exactly the cells and counts the synthetic arms of ``arm.ratio`` get."""
        from synth.conditions import ConditionError
        from synth.data.atlas import atlas_space, render_atlas

        meta = self._atlas
        try:
            counts, _roles = self._study_counts(fold, self.space, arm.ratio)
        except ConditionError as e:
            raise AblationError(f"{arm.name}, fold {fold}: {str(e).splitlines()[0]}") from None
        order = atlas_space(meta["kind"]).names
        names = list(self.space.names)
        cells = {tuple(cell[names.index(n)] for n in order): n for cell, n in counts.items() if n}
        if not cells:
            raise AblationError(f"--ratio {arm.ratio}: every {PERFECT_TYPE} cell count rounds to zero")
        seed = 1_000_000 + int(meta.get("seed", 0)) * 1000 + self.config.seed * 100 + fold * 10 + round(arm.ratio)
        render_atlas(d, kind=meta["kind"], resolution=int(meta["resolution"]), seed=seed, progress=False, counts=cells)

    def _generate(self, fold: int, arm: Arm, d: Path) -> None:
        from synth.conditions import ConditionError
        from synth.synthesis.errors import SynthesisError
        from synth.synthesis.generate import generate_products

        if arm.type == PERFECT_TYPE:
            self._render_perfect(fold, arm, d)
            return
        G, gspace = self.generator(fold)
        cfg = self.config
        try:
            counts, roles = self._study_counts(fold, gspace, arm.ratio)
            if sum(counts.values()) == 0:
                raise AblationError(f"--ratio {arm.ratio}: every synthetic cell count rounds to zero")
            generate_products(
                G, gspace, arm.type, counts, seeds=self.seed_base(fold, arm), psi=cfg.psi, out_dir=d,
                age_factor=roles.age, mixes=arm.mixes or tuple(cfg.mixes), batch=cfg.gen_batch, device=cfg.device,
                progress=False, settings={"fold": fold, "arm": arm.name, "ratio": arm.ratio,
                                          "generator": cfg.network or str(self.out / "gans" / f"fold{fold}")},
            )
        except (ConditionError, SynthesisError) as e:
            raise AblationError(f"{arm.name}, fold {fold}: {str(e).splitlines()[0]}") from None

    def matched_repeats(self, fold: int, arm: Arm) -> np.ndarray:
        """Real training images (indices) that the matched control adds: per cell, as many as
        the synthetic arms of ``arm.ratio`` get there (the study count rule on this fold's
        training images), whole copies of the cell first, then a seeded random remainder.  A
        cell with synthetic images but no real training image draws from the training images of
        its class.  The same images for every seed, like the synthetic sets."""
        from synth.conditions import ConditionError

        names = self.cell_factors
        train_idx = self.fit_indices(fold)  # never the inner validation images: they choose the epoch
        by_cell: dict[tuple, list[int]] = {}
        for i in train_idx:
            by_cell.setdefault(self.cells[i], []).append(int(i))
        try:
            counts, _roles = self._study_counts(fold, self.space, arm.ratio)
        except ConditionError as e:
            raise AblationError(f"{arm.name}, fold {fold}: {str(e).splitlines()[0]}") from None
        rng = np.random.default_rng([self.config.seed, fold, round(arm.ratio * 1000)])
        picked: list[np.ndarray] = []
        for cell in self.cell_order:
            n = counts.get(cell, 0)
            if n == 0:
                continue
            pool = np.asarray(by_cell.get(cell, []), dtype=np.int64)
            if pool.size == 0:  # the class of the cell: its levels of the target factors
                same = [i for i in train_idx if all(self.cells[i][names.index(f)] == cell[names.index(f)]
                                                    for f in self.target.factors)]
                if not same:
                    raise AblationError(f"{arm.name}, fold {fold}: no training image of cell {'/'.join(cell)}'s class")
                pool = np.asarray(same, dtype=np.int64)
            picked += [np.tile(pool, n // pool.size), rng.choice(pool, n % pool.size, replace=False)]
        return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)

    def seed_base(self, fold: int, arm: Arm) -> int:
        # Same start for every ratio of one type (a larger ratio's images include a smaller
        # one's), different per fold and type; below 2**31 for the z generator.
        t = zlib.crc32(f"{arm.type}:{arm.mixes}".encode()) % 1000
        return (self.config.seed * 1_000_003 + fold * 10_000_019 + t * 100_003) % (2**31 - 10**6)

    # ---- the real images a cell learns from ---------------------------------------------------
    def inner_split(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(fit, inner validation) indices of fold ``fold``'s training images: subjects kept
        whole, classes in proportion, the same split for every arm and seed."""
        from sklearn.model_selection import StratifiedGroupKFold

        if fold in self._inner:
            return self._inner[fold]
        train_idx = np.flatnonzero(self.folds != fold)
        n_splits = max(2, round(1 / self.config.inner_val))
        y = self.own.targets[train_idx].argmax(1)
        groups = self.imageset.groups()[train_idx]
        if len(set(groups)) < n_splits:
            raise AblationError(f"fold {fold}: {len(set(groups))} subjects are too few for a {self.config.inner_val:g} "
                                f"inner validation split; lower --inner-val or use --epoch-selection last")
        # a class rarer than the number of splits cannot be stratified over them: split coarser
        # (a larger inner share) down to 2, then give up stratification (tiny data)
        rarest = int(np.bincount(y).min()) if len(y) else 0
        seed = self.config.seed * 1000 + fold
        if rarest >= 2:
            cv = StratifiedGroupKFold(n_splits=min(n_splits, rarest), shuffle=True, random_state=seed)
            fit, val = next(cv.split(np.zeros(len(train_idx)), y, groups))
        else:
            from sklearn.model_selection import GroupShuffleSplit

            cv = GroupShuffleSplit(n_splits=1, test_size=self.config.inner_val, random_state=seed)
            fit, val = next(cv.split(np.zeros(len(train_idx)), y, groups))
        self._inner[fold] = (train_idx[fit], train_idx[val])
        return self._inner[fold]

    def fit_indices(self, fold: int) -> np.ndarray:
        """The real images a classifier of fold ``fold`` learns from."""
        if self.config.epoch_selection == "inner":
            return self.inner_split(fold)[0]
        return np.flatnonzero(self.folds != fold)
