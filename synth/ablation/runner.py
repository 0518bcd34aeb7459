"""Running an ablation: folds, generators, synthetic sets, one classifier per (fold, arm).

This module checks the configuration, opens the real images and their classes (the data
chain in ``_Run.__init__``), trains one cell, and shares the cells between workers.  The rest
of a run lives in:

* :mod:`synth.ablation.sets`: what a cell trains on besides its fold's real images
  (synthetic, perfect-generator and matched-control sets, the inner validation split);
* :mod:`synth.ablation.results`: results.json from the finished cells (its schema);
* :mod:`synth.ablation.folder`: the output folder's layout, plan.json and cell paths.

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
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.train import train_classifier
from synth.ablation.cache import read_json, try_claim, write_json
from synth.ablation.folder import cell_name, cell_path, check_out_dir, load_plan, prepare_out_dir
from synth.ablation.gan import check_gans_source, ensure_fold_gan, fold_gan_done, fold_gan_options, load_fold_generator, open_gan_base
from synth.ablation.plan import PERFECT_TYPE, AblationConfig, AblationError, Arm, build_arms
from synth.ablation.results import collect_results
from synth.ablation.sets import POLL_SECONDS, TrainingSets, _open

__all__ = ["AblationResult", "run_ablation", "report_only", "load_plan", "check_out_dir", "prepare_out_dir", "cell_path",
           "classifier_seed"]  # load_plan, check_out_dir, prepare_out_dir, cell_path: from .folder


@dataclass
class AblationResult:
    out_dir: Path
    arms: list[Arm]
    folds: np.ndarray
    results: dict | None  # the content of results.json (None: other workers still hold cells)
    trained: list[tuple[int, str, int]] = field(default_factory=list)  # (fold, arm, seed) cells this call trained


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
    for name, value in (("--gan-base", config.gan_base), ("--gan-pool", config.gan_pool),
                        ("--gan-judge", config.gan_judges[0] if config.gan_judges else None)):
        if value is not None and not config.gan_per_fold:
            raise AblationError(f"{name}: only with --gan-per-fold (it shapes the per-fold GANs)")
    if config.gan_base is not None and not Path(config.gan_base).exists():
        raise AblationError(f"--gan-base {config.gan_base}: not found")
    if config.gan_pool is not None and not Path(config.gan_pool).exists():
        raise AblationError(f"--gan-pool {config.gan_pool}: not found")
    if config.gans_from is not None:
        if not config.gan_per_fold:
            raise AblationError("--gans-from: only with --gan-per-fold (it takes another folder's fold GANs)")
        if not Path(config.gans_from).is_dir():
            raise AblationError(f"--gans-from {config.gans_from}: not found (give an ablation output folder)")
    for judge in config.gan_judges:
        if not Path(judge).exists():
            raise AblationError(f"--gan-judge {judge}: not found")
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
    return build_arms(config.types, config.ratios, config.mixes, matched_control=config.matched_control,
                      synthetic_only=config.synthetic_only)


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


class _Run(TrainingSets):
    """State shared by the cells of one ``run_ablation`` call."""

    def __init__(self, config: AblationConfig, out: Path, arms: list[Arm], reuse: bool = True):
        """Open and check everything the run needs (data, folds, targets, the generator);
        writes nothing.  ``reuse``: take the folds of an earlier run in ``out``."""
        from classifiers.data import ClassifierDataError, encode_images, parse_target
        from classifiers.prepare import prepare_classes

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
            # Classes come from the real images only, so every arm predicts the same classes; "auto"
            # class weights come from all real images, so arms and folds stay comparable.
            data = prepare_classes(target, own, folds=self.folds, target_name=config.target,
                                   class_weight="auto" if self.tc.class_weight == "auto" else None)
            self.target, self.own, self.class_weight = data.target, data.own, data.class_weight
            self.test = None
            if config.test_data is not None:
                # read with the training space, so levels and cells mean the same in both sets
                self.test_set = _open(config.test_data, config.cond, "--test-data", space=self.space)
                self.test = encode_images(self.test_set, self.target, self.tc.size, factors=self.target.factors)
                self.test_cells = [self.test_set.cell_of(i, self.cell_factors) for i in range(len(self.test_set))]
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
        self._pool = None
        if self.config.gan_pool is not None:
            self._pool = self._open_pool(Path(self.config.gan_pool))
        if self.config.gan_per_fold:  # the fold GANs' options (and the base) fail here, not hours later
            fold_gan_options(self.config, 0, open_gan_base(self.config.gan_base, tensors=False)[0])
        if self.config.gans_from is not None:
            check_gans_source(self.config, self.folds, self.imageset)

    def _open_pool(self, path: Path):
        """--gan-pool, read in the data's condition space (so its factors and levels are the data's);
        refused when one of its images is also one of the data's (the held-out folds would reach the
        fold GANs through it)."""
        import hashlib

        pool = _open(path, self.config.cond, "--gan-pool", space=self.space)
        if len(pool) == 0:
            raise AblationError(f"--gan-pool {path}: has no images")
        ours = {hashlib.sha256(self.imageset.read_bytes(i)).digest() for i in range(len(self.imageset))}
        try:
            shared = [pool[i].file for i in range(len(pool)) if hashlib.sha256(pool.read_bytes(i)).digest() in ours]
        except (OSError, KeyError) as e:
            raise AblationError(f"--gan-pool {path}: cannot read an image ({e})") from None
        if shared:
            raise AblationError(f"--gan-pool {path}: {len(shared)} image(s) are also in --data (e.g. {shared[0]}); the "
                                f"pool must hold other subjects, or held-out images reach the fold GANs")
        return pool

    # ---- one cell --------------------------------------------------------------------------
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
        parts = [] if arm.only else [self.own.take(train_idx)]
        n_syn = n_rep = 0
        if arm.matched:
            rep = self.matched_repeats(fold, arm)
            n_rep = len(rep)
            parts.append(self.own.take(rep))
        elif arm.type is not None:
            syn = self.synthetic(fold, arm.source)
            try:
                enc = encode_images(syn, self.target, self.tc.size, factors=self.target.factors, source="extra")
            except ClassifierDataError as e:
                raise AblationError(f"{arm.name}, fold {fold}: {str(e).splitlines()[0]}") from None
            n_syn = len(enc)
            # mark synthetic files so they can never be mistaken for real ones downstream
            enc.files = [f"synthetic/fold{fold}/{arm.source.name}/{f}" for f in enc.files]
            parts.append(enc)
        train = LabelledImages.concat(parts)
        val = self.own.take(val_idx)
        fcfg = dataclasses.replace(self.tc, seed=classifier_seed(self.tc.seed, fold, seed))
        # replace: an epoch of an arm with synthetic images is as long as the real set's, so every
        # arm takes the same steps and synthetic images replace a share of real presentations
        epoch_size = len(train_idx) if self.config.replace and arm.adds_synthetic else None
        res = train_classifier(
            train, select, self.target, fcfg, out_dir=None, class_weight=self.class_weight, epoch_size=epoch_size,
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
            "class_names": names, "n_train_real": 0 if arm.only else int(len(train_idx)),
            "n_synthetic": n_syn, "n_repeated": n_rep, "epoch_size": len(train) if epoch_size is None else epoch_size,
            "best_epoch": res.best_epoch, "epoch_selection": selection,
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
                ensure_fold_gan(self.config, fold, self.gan_training_set(fold), self.out, wait=False)

    def _ready(self, fold: int, arm: Arm) -> bool:
        """Whether the cell can start now (a cell needing a GAN another worker trains waits)."""
        return arm.real_only or arm.type == PERFECT_TYPE or not self.config.gan_per_fold \
            or fold_gan_done(self.out, fold) is not None \
            or (self.synthetic_dir(fold, arm.source) / "labels.csv").is_file()

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
        """The content of results.json (:func:`synth.ablation.results.collect_results`)."""
        return collect_results(self)


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
