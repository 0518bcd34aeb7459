"""The judge panel's settings: :class:`PanelConfig`, the judges' training recipes, and the
nuisance attributes the atlas records per image (judged for variety)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["PanelError", "PanelConfig", "Attribute", "attributes_of", "FORMAT", "PANEL_VERSION", "JUDGE_SIZE",
           "KIND_FACTORS", "KIND_DEFAULTS"]

FORMAT = "synth-judge-panel/1"
# Bump when judge training changes in a way the cache key does not see, so cached judges are retrained.
PANEL_VERSION = 1
JUDGE_SIZE = 32  # judges see 32 px images: the CPU recipe of BENCHMARKS.md
KIND_FACTORS = {"faces": ("disease", "age"), "skin": ("stage",)}
# Per-architecture learning recipe (random init, 32 px, AdamW, batch 32).  small_cnn is the
# measured CPU recipe; resnet10t needs a lower rate and twice the epochs to learn at 32 px.
RECIPES: dict[str, dict[str, float]] = {
    "small_cnn": {"lr": 3e-3, "epoch_factor": 1},
    "small_cnn_s": {"lr": 3e-3, "epoch_factor": 1},
    "resnet10t": {"lr": 1e-3, "epoch_factor": 2},
}
DEFAULT_RECIPE = {"lr": 1e-3, "epoch_factor": 1}
BATCH, WEIGHT_DECAY = 32, 0.01
# An attribute judge whose balanced accuracy on the second real set stays under 1.5 x chance
# cannot tell the classes apart (freckles are invisible at 32 px): its entropy ratio is not shown.
INFORMATIVE = 1.5


class PanelError(ValueError):
    """Bad input for the panel (one-line message naming the file or option)."""


# ----------------------------------------------------------------------------------------
# Attributes


@dataclass(frozen=True)
class Attribute:
    """A nuisance attribute the atlas writes per image: a category column or a binned float."""

    name: str
    classes: tuple[str, ...]
    edges: tuple[float, ...] | None = None  # fixed bin edges for a float column

    def encode(self, values: Sequence[str]) -> np.ndarray:
        """labels.csv strings -> class indices."""
        if self.edges is not None:
            from synth.quality.variety import bin_continuous

            return bin_continuous([float(v) for v in values], self.edges)
        idx = {c: i for i, c in enumerate(self.classes)}
        try:
            return np.array([idx[v] for v in values], dtype=np.int64)
        except KeyError as e:
            raise PanelError(f"labels.csv: {self.name} value {e.args[0]!r} is not one of {', '.join(self.classes)}") from None


def _bin_names(edges: Sequence[float]) -> tuple[str, ...]:
    e = [f"{x:g}" for x in edges]
    return (f"<{e[0]}", *[f"{a}-{b}" for a, b in zip(e[:-1], e[1:])], f">={e[-1]}")


def attributes_of(kind: str) -> list[Attribute]:
    from synth.data.atlas.faces import HAIR_COLOURS, HAIR_STYLES
    from synth.quality.variety import SKIN_TONE_EDGES

    tone = Attribute("skin_tone", _bin_names(SKIN_TONE_EDGES), tuple(SKIN_TONE_EDGES))
    if kind == "faces":
        return [tone, Attribute("hair_colour", tuple(HAIR_COLOURS)), Attribute("hair_style", tuple(HAIR_STYLES))]
    # freckles = uniform^3 in [0, 1]: the same fixed edges (most patches fall in the first bin)
    return [tone, Attribute("freckles", _bin_names(SKIN_TONE_EDGES), tuple(SKIN_TONE_EDGES))]


# ----------------------------------------------------------------------------------------
# Settings


# Defaults by kind (None on the command line): about 400 generated images and a judge atlas
# of 1200 faces or 900 skin patches (the skin atlas has only three cells).
KIND_DEFAULTS = {"faces": {"per_cell": 20, "judge_per_cell": 60}, "skin": {"per_cell": 100, "judge_per_cell": 300}}


@dataclass
class PanelConfig:
    per_cell: int | None = None  # None: by kind (KIND_DEFAULTS)
    truncation: float = 1.0
    judge_per_cell: int | None = None
    epochs: int = 15
    seed: int = 0  # first z seed of the generated images
    judge_seeds: tuple[int, ...] = (0, 1)
    archs: tuple[str, ...] = ("small_cnn", "small_cnn_s")
    atlas_seeds: tuple[int, int] = (11, 12)  # judge training set, second real set
    atlas_resolution: int = 64
    identities: int = 16
    prdc_k: int = 5
    batch: int = 32  # generator batch
    device: str = "auto"
    cache: Path | None = None
    progress: bool = True

    def check(self) -> None:
        checks = [
            (self.per_cell is None or self.per_cell >= 2, f"--per-cell {self.per_cell}: must be >= 2 (diversity needs pairs)"),
            (math.isfinite(self.truncation) and self.truncation >= 0, f"--truncation {self.truncation}: must be a finite number >= 0"),
            (self.judge_per_cell is None or self.judge_per_cell >= 2, f"--judge-per-cell {self.judge_per_cell}: must be >= 2"),
            (self.epochs >= 1, f"--epochs {self.epochs}: must be >= 1"),
            (self.seed >= 0, f"--seed {self.seed}: must be >= 0"),
            (len(self.judge_seeds) >= 1, "--judge-seeds: give at least one seed"),
            (len(set(self.judge_seeds)) == len(self.judge_seeds), "--judge-seeds: a seed is named twice"),
            (len(self.archs) >= 1, "--archs: give at least one model"),
            (len(set(self.archs)) == len(self.archs), "--archs: a model is named twice"),
            (len(self.atlas_seeds) == 2, "--atlas-seeds: give two seeds, JUDGE_TRAIN,SECOND_REAL (e.g. 11,12)"),
            (self.identities >= 1, f"--identities {self.identities}: must be >= 1"),
            (self.prdc_k >= 1, f"--prdc-k {self.prdc_k}: must be >= 1"),
            (self.batch >= 1, f"--batch {self.batch}: must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise PanelError(msg)
        a, b = self.atlas_seeds
        if a == b:
            raise PanelError(f"--atlas-seeds {a},{b}: the judges' atlas and the second real set need different seeds")
        if 0 in self.atlas_seeds:
            raise PanelError("--atlas-seeds: seed 0 is the training atlas; the panel must use other subjects")
        if min(self.atlas_seeds) < 0:
            raise PanelError("--atlas-seeds: seeds must be >= 0")
        from synth.data.atlas.render import check_resolution

        try:
            check_resolution(self.atlas_resolution)
        except ValueError as e:
            raise PanelError(str(e).replace("--resolution", "--atlas-resolution")) from None
        from classifiers.models import ModelError, check_model_name

        for m in self.archs:
            try:
                check_model_name(m)
            except ModelError as e:
                raise PanelError(str(e).replace("--model", "--archs")) from None

    def for_kind(self, kind: str) -> "PanelConfig":
        """A copy with the per-kind defaults filled in."""
        import dataclasses

        d = KIND_DEFAULTS[kind]
        return dataclasses.replace(self, per_cell=self.per_cell if self.per_cell is not None else d["per_cell"],
                                   judge_per_cell=self.judge_per_cell if self.judge_per_cell is not None
                                   else d["judge_per_cell"])

    def cache_root(self) -> Path:
        if self.cache is not None:
            return Path(self.cache).expanduser()
        env = os.environ.get("SYNTH_CACHE")
        root = Path(env).expanduser() if env else Path.home() / ".cache" / "synth"
        return root / "eval_generator"

    def recipe(self, arch: str) -> dict[str, Any]:
        r = RECIPES.get(arch, DEFAULT_RECIPE)
        return {"lr": float(r["lr"]), "epochs": int(self.epochs * r["epoch_factor"])}
