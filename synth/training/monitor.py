"""Condition fidelity while training: judge classifiers score the EMA generator every few ticks.

FID/KID say whether images look real, not whether they show the *asked* condition; a judge
trained on real data (``synth classify``) does.  Watching judge accuracy per factor during
training shows when conditioning starts to work, or collapses, long before a final
``synth metrics`` run.  Everything here is a thin wrapper over the metrics code, so a tick's
numbers mean what ``synth metrics`` means:

* images come from :class:`synth.synthesis.engine.Renderer` with the same seed layout as
  ``synth metrics`` (cell i, image j uses ``seed + i * per_cell + j``), const noise and
  truncation toward each condition's mean w, so ``--seed S --per-cell N`` there renders the
  same pictures as this monitor on the same weights (up to a rare one-step uint8 rounding
  difference: that command maps z one cell at a time, this one all cells at once);
* accuracies come from :func:`synth.quality.fidelity.condition_fidelity`;
* KID from :func:`synth.quality.fid.kernel_distance` on the offline default features (a seeded
  random-init timm backbone: comparable across ticks of one run, not with published KID).

z never comes from the global RNG (``np.random.RandomState(seed)`` per image) and nothing here
draws from torch's global generator, so scoring neither changes the training run's random
stream nor depends on it: the same weights give the same scores at every tick.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from synth.conditions import ConditionSpace
from synth.quality.errors import QualityError
from synth.quality.fidelity import Judge, condition_fidelity, load_judges

__all__ = ["FidelityMonitor", "SELECTION_RULE", "selection_score"]

# How best.ckpt is chosen. Judge accuracy alone rewards a generator that renders each cell's
# mean face (one face per cell scores well on a judge), so the score is the judges' mean
# accuracy scaled down by how far the cells' variety falls short of the real images': a
# snapshot whose cells vary at least 85% as much as the real cells keeps its accuracy, a
# collapsed one (ratio 0.3) keeps about a third of it.
DIVERSITY_FLOOR = 0.85
SELECTION_RULE = (f"select = judge/mean * min(1, diversity/mean / {DIVERSITY_FLOOR}); diversity/mean = mean over cells of "
                  "the mean pairwise pixel distance among generated images of a cell over that among the real images of the cell")


def selection_score(judge_mean: float | None, diversity: float | None) -> float | None:
    """The score of :data:`SELECTION_RULE` (None without judges; without a diversity figure, the accuracy)."""
    if judge_mean is None:
        return None
    if diversity is None:
        return float(judge_mean)
    return float(judge_mean) * min(1.0, float(diversity) / DIVERSITY_FLOOR)


class FidelityMonitor:
    """Score a generator with judges (``judge/<factor>``, ``judge/mean``) and, given real images, KID.

    ``judges``: ``synth classify`` checkpoints / cv folders, or ready :class:`Judge` objects.
    ``device`` is where judges and the feature backbone run; generation runs wherever the
    generator's weights are.  Loading and checking happen here, so a judge that does not fit
    the space fails at the start of training, not at the first tick.
    """

    def __init__(self, judges: Sequence[str | Path | Judge], space: ConditionSpace, per_cell: int = 10,
                 truncation: float = 1.0, seed: int = 0, kid: bool = True, device: str | torch.device = "cpu",
                 real_images: np.ndarray | None = None, real_cells: Sequence[tuple] | None = None,
                 batch: int = 64, feature_model: str = "resnet18",
                 feature_size: int = 128, kid_subsets: int = 100, mean_w_samples: int = 2000, gate: float = 0.5):
        if per_cell < 1:
            raise QualityError(f"--per-cell {per_cell}: must be >= 1")
        if not np.isfinite(truncation):
            raise QualityError(f"--truncation {truncation}: must be a finite number")
        paths = [j for j in judges if not isinstance(j, Judge)]
        loaded = iter(load_judges(paths, device=str(device), gate=gate, batch=batch))
        self.judges = [j if isinstance(j, Judge) else next(loaded) for j in judges]
        for j in self.judges:
            j.check(space)  # QualityError "--judge <path>: ..." on one line
        self.space, self.per_cell, self.truncation, self.seed = space, int(per_cell), float(truncation), int(seed)
        self.batch, self.mean_w_samples, self.kid_subsets = int(batch), int(mean_w_samples), int(kid_subsets)
        # The fixed evaluation set: every cell, per_cell seeds each (the synth metrics layout).
        self.cells = [tuple(c) for c in space.cells() for _ in range(self.per_cell)]
        self.seeds = [self.seed + i for i in range(len(self.cells))]
        self.labels = np.stack([space.encode(dict(zip(space.names, c))) for c in self.cells]).astype(np.float32)
        self.extractor, self.real_features = None, None
        if kid and real_images is not None:
            from synth.quality.features import random_backbone_extractor

            if len(real_images) < 2 or len(self.cells) < 2:
                raise QualityError(f"KID needs at least 2 real and 2 generated images "
                                   f"(got {len(real_images)} and {len(self.cells)})")
            self.extractor = random_backbone_extractor(feature_model, feature_size, seed=0, device=str(device), batch=batch)
            self.real_features = self.extractor(real_images, desc="real features")  # once: the real set is fixed
        # Within-cell variety against the real images of each cell (pixels at the training size).
        self.real_by_cell: dict[tuple, np.ndarray] = {}
        if real_images is not None and real_cells is not None:
            if len(real_cells) != len(real_images):
                raise QualityError(f"{len(real_cells)} cells given for {len(real_images)} real images")
            for cell in set(map(tuple, real_cells)):
                idx = [i for i, c in enumerate(real_cells) if tuple(c) == cell]
                if len(idx) >= 2:
                    self.real_by_cell[cell] = real_images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0
        if not self.judges and self.extractor is None:
            raise QualityError("fidelity monitor: nothing to score (give --judge, or real images for KID)")

    @torch.no_grad()
    def generate(self, G_ema: torch.nn.Module) -> np.ndarray:
        """uint8 [cells * per_cell, H, W, 3] in ``self.cells`` order; G_ema's train/eval mode is restored."""
        from synth.synthesis.engine import Renderer

        was_training = G_ema.training
        try:
            dev = next(G_ema.parameters()).device
            # A fresh Renderer per call: its per-label mean-w cache would be stale once G_ema moves.
            r = Renderer(G_ema, psi=self.truncation, noise_mode="const", batch=self.batch, device=dev,
                         mean_w_samples=self.mean_w_samples)
            return r.images(self.seeds, self.labels)
        finally:
            G_ema.train(was_training)

    @torch.no_grad()
    def score(self, G_ema: torch.nn.Module) -> dict[str, float]:
        """``judge/<factor>``: fraction of images whose judged level (argmax of the factor's
        marginal) is the asked level, over the levels the judge knows; several judges of one
        factor are averaged.  ``judge/mean``: mean over judged factors.  ``kid`` with real images."""
        images = self.generate(G_ema)
        out: dict[str, float] = {}
        by_factor: dict[str, list[float]] = {}
        for r in condition_fidelity(self.judges, images, self.cells, self.space) if self.judges else []:
            if r["accuracy"] is not None:  # None: the judge knows none of the asked levels
                by_factor.setdefault(r["factor"], []).append(r["accuracy"])
        for f, accs in by_factor.items():
            out[f"judge/{f}"] = float(np.mean(accs))
        if by_factor:
            out["judge/mean"] = float(np.mean([out[f"judge/{f}"] for f in by_factor]))
        if self.extractor is not None:
            from synth.quality.fid import kernel_distance
            from synth.quality.variety import prdc

            fake = self.extractor(images, desc="generated features")
            out["kid"] = kernel_distance(self.real_features, fake, subsets=self.kid_subsets, seed=self.seed)["kid"]
            k = min(5, len(fake) - 1, len(self.real_features) - 1)
            if k >= 1:
                # random-backbone features: weak, but comparable between ticks of one run
                out.update({f"variety/{m}": v for m, v in prdc(self.real_features, fake, k=k).items()})
        if self.real_by_cell and self.per_cell >= 2:
            from synth.quality.variety import within_cell_diversity

            flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
            fake_by_cell = {cell: flat[[i for i, c in enumerate(self.cells) if c == cell]] for cell in self.real_by_cell}
            div = within_cell_diversity(self.real_by_cell, fake_by_cell)
            if div["mean"] is not None:
                out["diversity/mean"], out["diversity/min"] = float(div["mean"]), float(div["min"])
        select = selection_score(out.get("judge/mean"), out.get("diversity/mean"))
        if select is not None:
            out["select"] = select
        return out
