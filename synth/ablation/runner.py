"""Running an ablation: folds, generators, synthetic sets, one classifier per (fold, arm).

Layout of the output folder::

    plan.json                 the configuration (a folder is only reused for the same plan)
    folds.csv                 the grouped, stratified partition every arm shares
    gans/fold{f}/             per-fold GAN run (with --gan-per-fold)
    synthetic/fold{f}/{arm}/  that fold's synthetic training images (a dataset folder)
    cells/fold{f}/{arm}.json  finished cell: held-out (and test) predictions and metrics
                              (classifier seed r > 0: {arm}.seed{r}.json)
    report.md, results.json, per_arm.csv, per_cell.csv, gain.png

Synthetic images of fold f are generated from fold f's training-fold cell counts and only
ever join fold f's training images, never a held-out fold.  Each finished cell is cached;
a killed run resumes with the unfinished cells, and several processes may work on one
folder at the same time (each GAN, synthetic set and cell is claimed by one process, see
:mod:`.cache`; a dead worker's claims are taken over).  With ``seeds`` > 1 every (fold, arm)
is trained with that many classifier seeds; a fold's score is their mean.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.train import train_classifier
from synth.ablation.cache import read_json, try_claim, write_json
from synth.ablation.gan import ensure_fold_gan, fold_gan_done, fold_gan_options, load_fold_generator
from synth.ablation.plan import PERFECT_TYPE, REFERENCE_ARM, AblationConfig, AblationError, Arm, build_arms

__all__ = ["AblationResult", "run_ablation", "report_only", "load_plan", "check_out_dir", "prepare_out_dir", "cell_path",
           "classifier_seed"]

POLL_SECONDS = 2.0
_OUTPUTS = ("plan.json", "folds.csv", "gans", "synthetic", "cells", "report.md", "results.json", "per_arm.csv",
            "per_cell.csv", "gain.png")


@dataclass
class AblationResult:
    out_dir: Path
    arms: list[Arm]
    folds: np.ndarray
    results: dict | None  # the content of results.json (None: other workers still hold cells)
    trained: list[tuple[int, str, int]] = field(default_factory=list)  # (fold, arm, seed) cells this call trained


def _sha256(path: str | None) -> str | None:
    from synth.synthesis.network import file_sha256

    return file_sha256(path) if path and Path(path).is_file() else None


def cell_path(out: Path, fold: int, arm: str, seed: int = 0) -> Path:
    """Result file of cell (fold, arm) with classifier seed index ``seed``."""
    return out / "cells" / f"fold{fold}" / (f"{arm}.json" if seed == 0 else f"{arm}.seed{seed}.json")


def cell_name(fold: int, arm: str, seed: int = 0, seeds: int = 1) -> str:
    """How logs and errors name a cell: 'fold 2 / unrelated', plus ' / seed 1' when several seeds run."""
    return f"fold {fold} / {arm}" + (f" / seed {seed}" if seeds > 1 or seed else "")


def classifier_seed(base: int, fold: int, seed: int) -> int:
    # Same initialisation for every arm of a fold and seed index, so arms stay paired.
    return base + fold + 1000 * seed


# ----------------------------------------------------------------------------------------
# checks and set-up


def _check_config(config: AblationConfig) -> list[Arm]:
    if not config.data or not Path(config.data).exists():
        raise AblationError(f"--data {config.data}: not found")
    if config.test_data is not None and not Path(config.test_data).exists():
        raise AblationError(f"--test-data {config.test_data}: not found")
    if config.k < 2:
        raise AblationError(f"--folds {config.k}: need at least 2 folds")
    if config.epoch_selection not in ("inner", "last", "held_out"):
        raise AblationError(f"--epoch-selection {config.epoch_selection!r}: choose inner, last or held-out")
    if config.epoch_selection == "inner" and not 0.05 <= config.inner_val <= 0.5:
        raise AblationError(f"--inner-val {config.inner_val}: give a share of the training folds between 0.05 and 0.5")
    if config.gan_per_fold and config.network is not None:
        raise AblationError("--network and --gan-per-fold exclude each other; choose one")
    if not config.gan_per_fold:
        if config.network is None:
            raise AblationError("--network: give a generator checkpoint, or use --gan-per-fold")
        if not Path(config.network).is_file():
            raise AblationError(f"--network {config.network}: checkpoint not found")
    if not config.gan_kimg > 0:
        raise AblationError(f"--gan-kimg {config.gan_kimg}: must be > 0")
    if not (isinstance(config.seeds, int) and config.seeds >= 1):
        raise AblationError(f"--seeds {config.seeds}: must be a whole number >= 1")
    if not config.stale_after > 0:
        raise AblationError(f"--claim-timeout {config.stale_after}: must be > 0")
    if not (np.isfinite(config.psi) and config.psi >= 0):
        raise AblationError(f"--psi {config.psi}: must be a finite number >= 0 (1 = no truncation)")
    return build_arms(config.types, config.ratios, config.mixes, matched_control=config.matched_control)


def _is_temp(p: Path) -> bool:
    """A half-written file of :func:`synth.utils.io.create_temp` (``.NAME.HEX.tmp``)."""
    return p.name.startswith(".") and p.name.endswith(".tmp")


def check_out_dir(out: Path, config: AblationConfig, force: bool) -> bool:
    """Refuse an ``out`` this ablation cannot use; change nothing.  True when ``out`` holds
    this plan already (a resume)."""
    if out.exists() and not out.is_dir():
        raise AblationError(f"--out {out}: exists and is not a folder")
    # Another worker starting at the same moment may have created ``out`` and be writing plan.json:
    # its temporary file alone does not make the folder foreign.
    # Job logs of --executor (jobs/) are written before the first worker starts.
    if force or not (out.is_dir() and any(not _is_temp(p) and p.name != "jobs" for p in out.iterdir())):
        return False
    old = read_json(out / "plan.json")
    if old is None:
        raise AblationError(f"--out {out}: folder is not empty and holds no ablation (plan.json); use another folder or --force")
    if old.get("fingerprint") != config.fingerprint():
        diff = sorted(k for k in set(old.get("fingerprint", {})) | set(config.fingerprint())
                      if old.get("fingerprint", {}).get(k) != config.fingerprint().get(k))
        raise AblationError(
            f"--out {out}: holds an ablation with different settings ({', '.join(diff)}); use another folder or --force"
        )
    return True


def prepare_out_dir(out: Path, config: AblationConfig, force: bool) -> None:
    """Create ``out``; reuse it only for the same plan; ``force`` wipes earlier results.

    The first write of a run: :func:`run_ablation` calls it only once everything else
    (data, network, folds, targets) has been checked, so a failed run leaves no plan.json."""
    check_out_dir(out, config, force)
    if force and out.is_dir():
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", {"format": "synth-ablation/1", "fingerprint": config.fingerprint(), "config": config.to_dict()})


def _open(path, cond, what: str, space=None):
    from synth.data.dataset import DatasetError, open_dataset

    try:
        return open_dataset(path, cond=list(cond) if cond else None, space=space)
    except DatasetError as e:
        raise AblationError(f"{what}: {str(e).splitlines()[0]}") from None


def _folds(out: Path, imageset, config: AblationConfig, reuse: bool = True) -> tuple[np.ndarray, bool]:
    """-> (folds, made): the folds of ``out/folds.csv`` when ``reuse`` and it exists, else
    new ones (``made``: not yet written; see :meth:`_Run.write_folds`)."""
    from synth.data.dataset import DatasetError
    from synth.data.folds import make_folds, read_folds

    path = out / "folds.csv"
    try:
        if reuse and path.is_file():
            folds = read_folds(path, imageset)
            if int(folds.max()) + 1 != config.k:
                raise AblationError(f"{path}: has {int(folds.max()) + 1} folds, --folds is {config.k}; use --force")
            return folds, False
        return make_folds(imageset, k=config.k, seed=config.seed), True
    except DatasetError as e:
        raise AblationError(f"--folds {config.k}: {str(e).splitlines()[0]}") from None
    except ValueError as e:  # scikit-learn refuses impossible splits
        raise AblationError(f"--folds {config.k}: cannot make grouped, stratified folds ({str(e).splitlines()[0]})") from None


# ----------------------------------------------------------------------------------------
# the run


class _Run:
    """State shared by the cells of one ``run_ablation`` call."""

    def __init__(self, config: AblationConfig, out: Path, arms: list[Arm], reuse: bool = True):
        """Open and check everything the run needs (data, folds, targets, the generator);
        writes nothing.  ``reuse``: take the folds of an earlier run in ``out``."""
        from classifiers.cv import check_fold_classes
        from classifiers.data import ClassifierDataError, drop_empty_classes, encode_images, parse_class_weight, parse_target

        self.config, self.out, self.arms = config, out, arms
        self.tc = config.train
        if config.gan_per_fold:
            fold_gan_options(config, 0)  # preset, resolution and GAN options are valid
        self.imageset = _open(config.data, config.cond, "--data")
        self.space = self.imageset.space
        self.folds, self._new_folds = _folds(out, self.imageset, config, reuse)
        self.k = int(self.folds.max()) + 1
        self.cell_factors = list(self.space.names)
        self.cells = [self.imageset.cell_of(i, self.cell_factors) for i in range(len(self.imageset))]
        self.cell_order = self.space.cells(self.cell_factors)
        try:
            target = parse_target(config.target, self.space)
            own = encode_images(self.imageset, target, self.tc.size, progress=config.progress)
            # Classes come from the real images only, so every arm predicts the same classes.
            self.target, (self.own,) = drop_empty_classes(target, [own])
            if self.target.num_classes < 2:
                raise AblationError(f"--target {config.target}: the images carry only one class")
            check_fold_classes(
                self.target.class_names,
                {f: self.own.targets[self.folds != f] for f in range(self.k)},
                self.own.targets.sum(0),
            )
            self.test = None
            if config.test_data is not None:
                # read with the training space, so levels and cells mean the same in both sets
                self.test_set = _open(config.test_data, config.cond, "--test-data", space=self.space)
                self.test = encode_images(self.test_set, self.target, self.tc.size, factors=self.target.factors)
                self.test_cells = [self.test_set.cell_of(i, self.cell_factors) for i in range(len(self.test_set))]
            self.class_weight = None
            if self.tc.class_weight == "auto":
                # One set of weights from all real images, so arms and folds stay comparable.
                self.class_weight = parse_class_weight("auto", self.target.class_names, self.own.targets)
        except ClassifierDataError as e:
            raise AblationError(str(e).splitlines()[0]) from None
        self._check_roles()
        self._generators: dict[int, tuple[Any, Any]] = {}
        self._inner: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.trained: list[tuple[int, str, int]] = []

    def write_folds(self) -> None:
        """Write folds.csv if this run made the folds (after :func:`prepare_out_dir`)."""
        from synth.data.folds import write_folds

        if self._new_folds:
            write_folds(self.out / "folds.csv", self.imageset, self.folds)
            self._new_folds = False

    def _check_roles(self) -> None:
        self._atlas = None
        if any(a.type == PERFECT_TYPE for a in self.arms):
            meta = read_json(Path(self.config.data) / "atlas.json")
            if not isinstance(meta, dict) or meta.get("kind") not in ("faces", "skin"):
                raise AblationError(f"--types {PERFECT_TYPE}: needs an atlas (synth data atlas) as --data: it renders "
                                    f"new subjects of it; {self.config.data} has no atlas.json")
            from synth.data.atlas import atlas_space

            if set(atlas_space(meta["kind"]).names) != set(self.space.names):
                raise AblationError(f"--types {PERFECT_TYPE}: --cond must name every factor of the atlas "
                                    f"({', '.join(atlas_space(meta['kind']).names)})")
            self._atlas = meta
        needs_age = {a.type for a in self.arms} & {"age_related", "age_progression"}
        if needs_age and (self.config.age_factor not in self.space.names):
            raise AblationError(
                f"--types {', '.join(sorted(needs_age))}: need the ordinal factor {self.config.age_factor!r} (--factor) in --cond"
            )
        if self.config.network is not None:
            G, gspace = load_fold_generator(Path(self.config.network), self.space, self.config.device)
            self._shared = (G, gspace)

    # ---- generators and synthetic sets -----------------------------------------------------
    def generator(self, fold: int):
        if self.config.network is not None:
            return self._shared
        if fold not in self._generators:
            train_set = self.imageset.subset(np.flatnonzero(self.folds != fold))
            snap = ensure_fold_gan(self.config, fold, train_set, self.out)
            self._generators = {fold: load_fold_generator(snap, self.space, self.config.device)}  # keep one in memory
        return self._generators[fold]

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

    # ---- one cell --------------------------------------------------------------------------
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

    def run_cell(self, fold: int, arm: Arm, seed: int = 0) -> dict:
        from classifiers import metrics
        from classifiers.data import ClassifierDataError, LabelledImages, encode_images
        from classifiers.ensemble import predict_probs

        train_idx = self.fit_indices(fold)
        val_idx = np.flatnonzero(self.folds == fold)
        selection = self.config.epoch_selection
        # the images that choose the epoch: an inner split of the training folds, none, or
        # (legacy) the held-out fold itself
        select = (self.own.take(self.inner_split(fold)[1]) if selection == "inner"
                  else self.own.take(val_idx) if selection == "held_out" else None)
        parts = [self.own.take(train_idx)]
        n_syn = n_rep = 0
        if arm.matched:
            rep = self.matched_repeats(fold, arm)
            n_rep = len(rep)
            parts.append(self.own.take(rep))
        elif not arm.real_only:
            syn = self.synthetic(fold, arm)
            try:
                enc = encode_images(syn, self.target, self.tc.size, factors=self.target.factors, source="extra")
            except ClassifierDataError as e:
                raise AblationError(f"{arm.name}, fold {fold}: {str(e).splitlines()[0]}") from None
            n_syn = len(enc)
            # mark synthetic files so they can never be mistaken for real ones downstream
            enc.files = [f"synthetic/fold{fold}/{arm.name}/{f}" for f in enc.files]
            parts.append(enc)
        train = LabelledImages.concat(parts)
        val = self.own.take(val_idx)
        fcfg = dataclasses.replace(self.tc, seed=classifier_seed(self.tc.seed, fold, seed))
        res = train_classifier(
            train, select, self.target, fcfg, out_dir=None, class_weight=self.class_weight,
            meta_extra={"fold": fold, "arm": arm.name, "seed_index": seed},
            desc=cell_name(fold, arm.name, seed, self.config.seeds),
        )
        norm = res.meta["normalisation"]
        device = next(res.model.parameters()).device
        probs = res.val_probs if selection == "held_out" else None
        if probs is None:
            probs = predict_probs(res.model, val.images, norm["mean"], norm["std"], self.tc.eval_batch, device)
        names = list(self.target.class_names)
        m = metrics.evaluate(probs, val.targets, names, cells=[self.cells[i] for i in val_idx],
                             cell_names=self.cell_factors, cell_order=self.cell_order)
        rec = {
            "fold": fold, "arm": arm.to_dict(), "seed_index": seed, "classifier_seed": fcfg.seed,
            "worker": {"host": socket.gethostname(), "pid": os.getpid()},
            "class_names": names, "n_train_real": int(len(train_idx)),
            "n_synthetic": n_syn, "n_repeated": n_rep, "best_epoch": res.best_epoch, "epoch_selection": selection,
            "n_inner_val": 0 if select is None or selection != "inner" else int(len(select)),
            "val": {"files": [self.imageset[i].file for i in val_idx], "probs": np.round(probs, 6).tolist(), "metrics": m},
            "test": None,
        }
        if self.test is not None:
            tp = predict_probs(res.model, self.test.images, norm["mean"], norm["std"], self.tc.eval_batch, device)
            tm = metrics.evaluate(tp, self.test.targets, names, cells=self.test_cells, cell_names=self.cell_factors,
                                  cell_order=self.cell_order)
            rec["test"] = {"probs": np.round(tp, 6).tolist(), "metrics": tm}
        return rec

    def _matched_statistics(self, acc, bal, correct, n_train, n_test, pooled_metrics) -> dict:
        """Each synthetic arm against the matched control of its ratio: what the synthetic
        images add beyond as many more real presentations (steps) with the same label mix."""
        from synth.ablation.stats import ablation_statistics

        out = {}
        for ctrl in (a for a in self.arms if a.matched):
            group = [a.name for a in self.arms if not a.real_only and a.ratio == ctrl.ratio]
            if not group:
                continue
            names = [ctrl.name, *group]
            out[ctrl.name] = {
                "ratio": ctrl.ratio,
                "accuracy": ablation_statistics({n: acc[n] for n in names}, n_train, n_test, correct, ctrl.name),
                "balanced_accuracy": ablation_statistics({n: bal[n] for n in names}, n_train, n_test, None, ctrl.name),
            }
            for n in names:  # pooled balanced accuracy of the out-of-fold (ensemble) predictions
                out[ctrl.name]["balanced_accuracy"]["arms"][n]["pooled"] = pooled_metrics[n]["balanced_accuracy"]
        return out

    # ---- scheduling --------------------------------------------------------------------------
    def todo(self) -> list[tuple[int, Arm, int]]:
        return [(f, a, r) for f in range(self.k) for a in self.arms for r in range(self.config.seeds)]

    def missing(self) -> list[tuple[int, Arm, int]]:
        return [c for c in self.todo() if not cell_path(self.out, c[0], c[1].name, c[2]).is_file()]

    def train_gans(self) -> None:
        """Train every fold GAN no other worker is training (those are left to their owners)."""
        if not self.config.gan_per_fold:
            return
        for fold in range(self.k):
            if fold_gan_done(self.out, fold) is None:
                train_set = self.imageset.subset(np.flatnonzero(self.folds != fold))
                ensure_fold_gan(self.config, fold, train_set, self.out, wait=False)

    def _ready(self, fold: int, arm: Arm) -> bool:
        """Whether the cell can start now (a cell needing a GAN another worker trains waits)."""
        return arm.real_only or arm.type == PERFECT_TYPE or not self.config.gan_per_fold \
            or fold_gan_done(self.out, fold) is not None \
            or (self.synthetic_dir(fold, arm) / "labels.csv").is_file()

    def run_all(self) -> bool:
        """Train this worker's share of the cells; True when every cell exists at the end
        (with ``wait`` it waits for cells claimed by other workers)."""
        from tqdm.auto import tqdm

        todo = self.todo()
        self.train_gans()
        pending = self.missing()
        bar = tqdm(total=len(todo), initial=len(todo) - len(pending), desc="ablation", unit="cell",
                   disable=not self.config.progress)
        try:
            while pending:
                waiting = []
                for fold, arm, r in pending:
                    path = cell_path(self.out, fold, arm.name, r)
                    if path.is_file():
                        bar.update(1)
                        continue
                    if not self._ready(fold, arm):
                        waiting.append((fold, arm, r))
                        continue
                    claim = try_claim(path.with_suffix(".lock"), stale_after=self.config.stale_after)
                    if claim is None:
                        waiting.append((fold, arm, r))  # another process works on it
                        continue
                    with claim:
                        if not path.is_file():  # finished by someone else meanwhile?
                            bar.set_postfix_str(cell_name(fold, arm.name, r, self.config.seeds))
                            write_json(path, self.run_cell(fold, arm, r))
                            self.trained.append((fold, arm.name, r))
                    bar.update(1)
                pending = waiting
                if pending:
                    if not self.config.wait:
                        return False
                    self.train_gans()  # a fold GAN whose worker died is taken over here
                    time.sleep(POLL_SECONDS)
        finally:
            bar.close()
        return True

    # ---- collecting --------------------------------------------------------------------------
    def collect(self) -> dict:
        from classifiers import metrics
        from classifiers.ensemble import gated_average
        from synth.ablation.stats import ablation_statistics

        names = list(self.target.class_names)
        targets = self.own.targets
        y = targets.argmax(1)
        files = [r.file for r in self.imageset.records]
        sizes = np.bincount(self.folds, minlength=self.k)
        n_test = float(sizes.mean())
        n_train = float(len(self.folds) - n_test)
        acc, bal, correct, oof_metrics, fold_rows = {}, {}, {}, {}, {}
        t_acc, t_bal, t_correct, t_metrics = {}, {}, {}, {}
        n_seeds = self.config.seeds
        seed_sd: dict[str, float | None] = {}
        for arm in self.arms:
            oof = np.zeros_like(targets)
            by_fold: list[list[dict]] = []  # [fold][seed] records
            model_probs = []
            for f in range(self.k):
                idx = np.flatnonzero(self.folds == f)
                seed_recs = []
                for r in range(n_seeds):
                    path = cell_path(self.out, f, arm.name, r)
                    rec = read_json(path)
                    if rec is None:
                        raise AblationError(f"cell {cell_name(f, arm.name, r)} has no result")
                    if rec["class_names"] != names:
                        raise AblationError(f"{path}: classes differ from this run; use --force")
                    if rec["val"]["files"] != [files[i] for i in idx]:
                        raise AblationError(f"{path}: held-out images differ from folds.csv; use --force")
                    if self.test is not None:
                        if rec.get("test") is None:
                            raise AblationError(f"{path}: has no test predictions; use --force")
                        model_probs.append(np.asarray(rec["test"]["probs"], dtype=np.float32))
                    seed_recs.append(rec)
                # the seeds' mean probabilities: one ensemble prediction per held-out image
                oof[idx] = np.mean([np.asarray(rec["val"]["probs"], dtype=np.float32) for rec in seed_recs], axis=0)
                by_fold.append(seed_recs)

            def fold_mean(recs, scope, metric):
                return float(np.mean([rec[scope]["metrics"][metric] for rec in recs]))

            acc[arm.name] = [fold_mean(rs, "val", "accuracy") for rs in by_fold]
            bal[arm.name] = [fold_mean(rs, "val", "balanced_accuracy") for rs in by_fold]
            # spread between classifier seeds within a fold, averaged over folds
            seed_sd[arm.name] = (float(np.mean([np.std([rec["val"]["metrics"]["accuracy"] for rec in rs], ddof=1)
                                                for rs in by_fold])) if n_seeds > 1 else None)
            correct[arm.name] = oof.argmax(1) == y
            oof_metrics[arm.name] = metrics.evaluate(oof, targets, names, cells=self.cells, cell_names=self.cell_factors,
                                                     cell_order=self.cell_order)
            fold_rows[arm.name] = [
                {"fold": f, "accuracy": acc[arm.name][f], "balanced_accuracy": bal[arm.name][f],
                 "seed_accuracies": [rec["val"]["metrics"]["accuracy"] for rec in rs],
                 "n_synthetic": rs[0]["n_synthetic"], "n_repeated": rs[0].get("n_repeated", 0), "best_epoch": [rec["best_epoch"] for rec in rs]}
                for f, rs in enumerate(by_fold)
            ]
            if self.test is not None:
                ens = gated_average(np.stack(model_probs)).probs
                t_acc[arm.name] = [fold_mean(rs, "test", "accuracy") for rs in by_fold]
                t_bal[arm.name] = [fold_mean(rs, "test", "balanced_accuracy") for rs in by_fold]
                t_correct[arm.name] = ens.argmax(1) == self.test.targets.argmax(1)
                t_metrics[arm.name] = metrics.evaluate(ens, self.test.targets, names, cells=self.test_cells,
                                                       cell_names=self.cell_factors, cell_order=self.cell_order)
        cfg = self.config
        results: dict = {
            "format": "synth-ablation-results/1",
            "config": cfg.to_dict(),
            "arms": [a.to_dict() for a in self.arms],
            "reference": REFERENCE_ARM,
            "class_names": names,
            "cell_names": self.cell_factors,
            "k": self.k,
            "fold_sizes": sizes.tolist(),
            "n_images": len(self.imageset),
            "seeds": n_seeds,
            "generator": {
                "mode": "per_fold" if cfg.gan_per_fold else "shared",
                "network": cfg.network,
                "network_sha256": _sha256(cfg.network),
                "gan_kimg": cfg.gan_kimg if cfg.gan_per_fold else None,
                # A shared network trained on all images has seen every held-out image.
                "may_leak": not cfg.gan_per_fold,
            },
            "cv": {
                "statistics": {
                    "accuracy": ablation_statistics(acc, n_train, n_test, correct, REFERENCE_ARM),
                    "balanced_accuracy": ablation_statistics(bal, n_train, n_test, None, REFERENCE_ARM),
                },
                "oof": oof_metrics,
                "folds": fold_rows,
            },
            "test": None,
        }
        for arm in self.arms:  # pooled balanced accuracy of the out-of-fold (ensemble) predictions
            results["cv"]["statistics"]["balanced_accuracy"]["arms"][arm.name]["pooled"] = oof_metrics[arm.name]["balanced_accuracy"]
            results["cv"]["statistics"]["accuracy"]["arms"][arm.name]["seed_sd"] = seed_sd[arm.name]
        results["cv"]["matched"] = self._matched_statistics(acc, bal, correct, n_train, n_test, oof_metrics)
        results["epoch_selection"] = {
            "mode": cfg.epoch_selection, "inner_val": cfg.inner_val if cfg.epoch_selection == "inner" else None,
            "epochs": cfg.train.epochs,
            # 0-based best epoch of every (fold, seed) classifier per arm: near the last epoch means
            # the classifiers were still improving (not converged)
            "best_epochs": {arm: [e for row in rows for e in row["best_epoch"]] for arm, rows in fold_rows.items()},
        }
        if self.test is not None:
            results["test"] = {
                "n_images": len(self.test_set),
                "ensemble": t_metrics,
                "statistics": {
                    "accuracy": ablation_statistics(t_acc, None, None, t_correct, REFERENCE_ARM),
                    "balanced_accuracy": ablation_statistics(t_bal, None, None, None, REFERENCE_ARM),
                },
                "matched": self._matched_statistics(t_acc, t_bal, t_correct, None, None, t_metrics),
            }
            for arm in self.arms:
                results["test"]["statistics"]["balanced_accuracy"]["arms"][arm.name]["pooled"] = t_metrics[arm.name]["balanced_accuracy"]
        return results


def run_ablation(config: AblationConfig, out_dir: str | Path, force: bool = False) -> AblationResult:
    """Run (or resume, or share with other workers) the ablation ``config`` in ``out_dir``.

    Finished cells found in ``out_dir`` are reused unless ``force``, which deletes every
    earlier output of the folder first (never use it while another process works there).
    With ``config.wait`` False, a worker that finds only cells other workers hold returns
    without a report (``results`` is None); ``report_only`` writes it once all cells exist.
    """
    from synth.ablation.report import write_report

    arms = _check_config(config)
    out = Path(out_dir)
    check_out_dir(out, config, force)  # refuse before any slow work
    run = _Run(config, out, arms, reuse=not force)  # every check; nothing written yet
    prepare_out_dir(out, config, force)  # the first write: plan.json
    if force:
        from classifiers.data import clear_image_cache

        clear_image_cache()  # regenerated synthetic images reuse file names
    run.write_folds()
    if not run.run_all():
        return AblationResult(out, arms, run.folds, None, run.trained)
    results = run.collect()
    write_report(out, results)
    return AblationResult(out, arms, run.folds, results, run.trained)


def load_plan(out_dir: str | Path) -> AblationConfig:
    """The configuration an ablation folder was made with (its ``plan.json``)."""
    out = Path(out_dir)
    plan = read_json(out / "plan.json") if out.is_dir() else None
    if plan is None or "config" not in plan:
        raise AblationError(f"--out {out}: holds no ablation (plan.json missing)")
    try:
        return AblationConfig.from_dict(plan["config"])
    except (TypeError, ValueError) as e:
        raise AblationError(f"{out / 'plan.json'}: not a valid ablation plan ({str(e).splitlines()[0]})") from None


def report_only(out_dir: str | Path, config: AblationConfig | None = None) -> AblationResult:
    """Write the report of the finished ablation in ``out_dir`` (trains nothing).

    ``config`` defaults to the folder's ``plan.json`` (with more seeds, types or ratios given,
    those cells must exist too)."""
    from synth.ablation.report import write_report

    out = Path(out_dir)
    config = config or load_plan(out)
    config.progress = False
    arms = _check_config(config)
    check_out_dir(out, config, force=False)
    if not (out / "folds.csv").is_file():
        raise AblationError(f"--out {out}: has no folds.csv; no worker has started this ablation")
    run = _Run(config, out, arms, reuse=True)
    missing = run.missing()
    if missing:
        f, a, r = missing[0]
        raise AblationError(f"--report-only: {len(missing)} of {len(run.todo())} cells are not finished "
                            f"(first: {cell_name(f, a.name, r)}); run the workers first")
    results = run.collect()
    write_report(out, results)
    return AblationResult(out, arms, run.folds, results, [])
