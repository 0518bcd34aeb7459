"""Condition fidelity: a judge classifier trained on real images scores generated ones.

A judge is a ``synth classify`` checkpoint (or a cross-validation folder: its models form the
gated ensemble).  Its metadata names the target factor(s); a joint target such as
``disease,age`` (class names ``syndrome_a|child``) is decoded into one marginal distribution per
factor, so one judge can score disease and age separately.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from classifiers.data import CLASS_SEP  # joint-target class names: levels joined with "|"
from synth.conditions import ConditionSpace
from synth.quality.errors import QualityError

__all__ = ["Judge", "load_judges", "condition_fidelity", "resize_for_judge"]


def resize_for_judge(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> uint8 [N, 3, size, size], bicubic like the classifier's loader."""
    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8)
    for i, im in enumerate(images):
        pil = Image.fromarray(np.asarray(im, dtype=np.uint8))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BICUBIC)
        out[i] = torch.from_numpy(np.ascontiguousarray(np.asarray(pil).transpose(2, 0, 1)))
    return out


@dataclass
class Judge:
    """A classifier (or ensemble) whose classes are cells of some factors of the space."""

    source: str
    factors: tuple[str, ...]
    class_names: tuple[str, ...]
    predict_fn: object  # callable: uint8 [N, H, W, 3] -> probabilities [N, K]
    n_models: int = 1
    gate: float = 0.5

    def probs(self, images: np.ndarray) -> np.ndarray:
        p = np.asarray(self.predict_fn(images), dtype=np.float64)
        if p.shape != (len(images), len(self.class_names)):
            raise QualityError(f"--judge {self.source}: returned probabilities of shape {p.shape}, "
                               f"expected ({len(images)}, {len(self.class_names)})")
        return p

    def check(self, space: ConditionSpace) -> None:
        """Every judged factor must be in the space and every class a combination of its levels."""
        for f in self.factors:
            if f not in space.names:
                raise QualityError(f"--judge {self.source}: judges factor {f!r}, which the generator lacks "
                                   f"(factors: {', '.join(space.names)})")
        for name in self.class_names:
            parts = name.split(CLASS_SEP)
            if len(parts) != len(self.factors):
                raise QualityError(f"--judge {self.source}: class {name!r} does not fit target {','.join(self.factors)}")
            for f, lv in zip(self.factors, parts):
                if lv not in space.factor(f).levels:
                    raise QualityError(f"--judge {self.source}: class {name!r} is not a level of {f!r} in the generator's "
                                       f"space (levels: {', '.join(space.factor(f).levels)})")

    def marginals(self, probs: np.ndarray, space: ConditionSpace) -> dict[str, np.ndarray]:
        """Per judged factor: [N, levels of the factor in space order] (sums over the other factors)."""
        out = {}
        for j, f in enumerate(self.factors):
            levels = space.factor(f).levels
            m = np.zeros((probs.shape[0], len(levels)))
            for k, name in enumerate(self.class_names):
                m[:, levels.index(name.split(CLASS_SEP)[j])] += probs[:, k]
            out[f] = m
        return out

    def judged_levels(self, factor: str) -> set[str]:
        j = self.factors.index(factor)
        return {name.split(CLASS_SEP)[j] for name in self.class_names}


def load_judges(specs: Sequence[str | Path], device: str = "cpu", gate: float = 0.5, batch: int = 64) -> list[Judge]:
    """Load ``synth classify`` checkpoints / cv folders as judges (one-line errors)."""
    from classifiers.checkpoint import ClassifierCheckpointError
    from classifiers.ensemble import Ensemble

    judges = []
    for spec in specs:
        try:
            ens = Ensemble.load(str(spec), device=device)
        except (ClassifierCheckpointError, ValueError) as e:
            raise QualityError(f"--judge: {str(e).splitlines()[0]}") from None
        target = ens.metas[0].get("target") or {}
        factors = tuple(target.get("factors") or ())
        if not factors:
            raise QualityError(f"--judge {spec}: checkpoint metadata names no target factor")

        def predict(images: np.ndarray, ens=ens) -> np.ndarray:
            by_size = {s: resize_for_judge(images, s) for s in set(ens.sizes)}
            return ens.predict(by_size, gate=gate, batch=batch).probs

        judges.append(Judge(str(spec), factors, tuple(ens.class_names), predict, len(ens.models), gate))
    return judges


def condition_fidelity(
    judges: Sequence[Judge], images: np.ndarray, cells: Sequence[tuple[str, ...]], space: ConditionSpace,
    probs_cache: dict | None = None,
) -> list[dict]:
    """Accuracy of each judge on each of its factors, overall and per cell (cells over all factors).

    A cell whose level the judge never outputs is reported with ``accuracy: None`` and excluded
    from the overall mean (the judge cannot be right there).
    """
    results = []
    for judge in judges:
        probs = judge.probs(images) if probs_cache is None or judge.source not in probs_cache else probs_cache[judge.source]
        if probs_cache is not None:
            probs_cache[judge.source] = probs
        for f, m in judge.marginals(probs, space).items():
            fi = space.names.index(f)
            levels = space.factor(f).levels
            true = np.array([levels.index(c[fi]) for c in cells])
            pred = m.argmax(1)
            ok = pred == true
            known = judge.judged_levels(f)
            judged = np.array([c[fi] in known for c in cells])
            per_cell = {}
            for cell in dict.fromkeys(tuple(c) for c in cells):
                idx = np.array([tuple(c) == cell for c in cells])
                entry = {"n": int(idx.sum()),
                         "accuracy": float(ok[idx].mean()) if cell[fi] in known else None,
                         "mean_p_true": float(m[idx, levels.index(cell[fi])].mean())}
                per_cell[CLASS_SEP.join(cell)] = entry
            per_level = {}
            for li, lv in enumerate(levels):
                idx = true == li
                if idx.any() and lv in known:
                    per_level[lv] = float(ok[idx].mean())
            results.append({
                "judge": judge.source, "factor": f, "n_models": judge.n_models,
                "accuracy": float(ok[judged].mean()) if judged.any() else None,
                "n": int(judged.sum()), "per_level": per_level, "per_cell": per_cell,
            })
    return results
