"""What an ablation runs: its configuration, its arms and the checks on both.

An *arm* is one training recipe: ``real`` (real training images only), real images plus
one synthetic product type at a size ``ratio`` times the study count rule, or the matched
control ``real_matched`` of a ratio: the real images plus as many *real* training images
again, drawn cell by cell with the synthetic arms' counts.  The control trains for the same
number of steps on the same label mix as the synthetic arms, so the gain over it is what the
synthetic images themselves add (over ``real``, more optimisation steps count as gain too).
The other way to hold steps equal is ``replace``: every arm keeps the real set's epoch length,
and an epoch of a synthetic arm draws that many images from the real and synthetic images
together, so synthetic images replace a share of the real presentations.  A *synthetic-only*
arm (``{type}_only``, with ``synthetic_only``) trains on one type's images alone and is scored
on the real held-out fold: the classification accuracy score of the generator.
Every arm is trained once per cross-validation fold; a (fold, arm) pair is a *cell*.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from synth.errors import UserError
from classifiers.train import TrainConfig
from synth.synthesis.labels import PRODUCT_TYPES

__all__ = ["AblationError", "AblationConfig", "Arm", "parse_type_token", "build_arms", "matched_name", "REFERENCE_ARM",
           "MATCHED_ARM", "GAN_RUNTIME_OPTIONS"]

REFERENCE_ARM = "real"
MATCHED_ARM = "real_matched"
# Per-fold GAN options that change how fast it trains, not what it learns: may differ
# between the workers (and sessions) that share an output folder.
GAN_RUNTIME_OPTIONS = ("threads", "progress", "compile")


class AblationError(UserError):
    """An ablation that cannot run as configured (one-line message naming the option)."""


@dataclass(frozen=True)
class Arm:
    """One training recipe.  ``type`` is None for real-only arms: the reference, and the
    matched controls (``matched``: real images repeated to the count of ``ratio``).  ``only``:
    the synthetic images of ``type`` without any real image."""

    name: str
    type: str | None = None
    ratio: float = 0.0
    mixes: tuple[float, ...] = ()
    matched: bool = False
    only: bool = False

    @property
    def real_only(self) -> bool:
        """Trains on real images only (needs no generator)."""
        return self.type is None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "ratio": self.ratio, "mixes": list(self.mixes),
                "matched": self.matched, "only": self.only}

    @property
    def source(self) -> "Arm":
        """The arm whose synthetic set this one trains on: itself, or for a synthetic-only arm the
        arm of the same type and ratio with real images (both read one set of images)."""
        return dataclasses.replace(self, name=self.name.removesuffix("_only"), only=False) if self.only else self

    @property
    def adds_synthetic(self) -> bool:
        """Real training images plus synthetic ones (the arms whose gain the ablation measures)."""
        return self.type is not None and not self.only


@dataclass
class AblationConfig:
    """Everything that decides an ablation (stored as ``plan.json`` in the output folder).

    Generator: ``gan_per_fold`` trains one GAN per fold on that fold's training images only;
    otherwise ``network`` is used for every fold (if it was trained on all images, held-out
    images leaked into it).  ``gan_options`` overrides single :class:`TrainingOptions`
    fields of the per-fold GANs (e.g. a tiny architecture or the conditioning recipe).
    ``seeds`` classifiers with different seeds are trained per (fold, arm); their mean is the
    fold's score, which takes the classifier's own seed noise out of the comparison.
    """

    data: str
    types: Sequence[str] = ("unrelated", "age_related", "age_progression", "blended", "style_mixed")
    cond: Sequence[str] | None = ("disease", "age")
    ratios: Sequence[float] = (1.0,)
    k: int = 5
    gan_per_fold: bool = False
    network: str | None = None
    gan_kimg: float = 2.0
    gan_resolution: int = 32
    gan_preset: str = "cpu"
    gan_options: dict[str, Any] = field(default_factory=dict)
    # The study's fold GANs: fine-tuned from a base generator (our snapshot, e.g. pretrained without
    # labels on other subjects), trained on the fold's images plus a pool of other subjects'
    # images (e.g. unaffected faces), each snapshot scored by judges trained on other subjects and
    # the fold's generator chosen by the selection rule (best.ckpt).
    gan_base: str | None = None
    gan_pool: str | None = None
    gan_judges: Sequence[str] = ()
    # Another ablation folder whose finished fold GANs this one takes over (same data, folds and
    # GAN settings): classifier settings can change without retraining hours of GANs.  Not part
    # of the fingerprint: the GANs are the same ones this folder would train.
    gans_from: str | None = None
    seeds: int = 1
    matched_control: bool = True  # a real_matched arm per ratio (see the module docstring)
    # every arm keeps the real set's epoch length; synthetic images replace real presentations
    replace: bool = False
    synthetic_only: bool = False  # a {type}_only arm per synthetic arm: its images alone
    # Which epoch of each classifier is scored on the held-out fold: "inner" picks the best
    # epoch on a grouped, stratified ``inner_val`` share of the training folds (never the
    # held-out fold); "last" takes the last epoch; "held_out" picks it on the held-out fold
    # itself (optimistic: the scoring images chose the model), kept only to finish folders
    # made before the inner split existed.
    epoch_selection: str = "inner"
    inner_val: float = 0.2
    stale_after: float = 600.0  # seconds without heartbeat before another worker takes a claim over
    wait: bool = True  # a worker with nothing left to claim waits for the others, then writes the report
    target: str = "disease"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        model="small_cnn", size=32, epochs=15, batch=32, lr=3e-3, optimizer="adamw", weight_decay=0.01))
    test_data: str | None = None
    seed: int = 0
    psi: float = 0.6
    mixes: Sequence[float] = (0.55,)
    exclude: Sequence[str] | None = None  # FACTOR=LEVEL cells that get no synthetic images; default the control level
    age_factor: str | None = "age"
    device: str = "cpu"
    gen_batch: int = 16
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "train"}
        d["train"] = self.train.to_dict()
        for key in ("types", "cond", "ratios", "mixes", "exclude", "gan_judges"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AblationConfig":
        """The inverse of :meth:`to_dict` (``plan.json``'s ``config``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and k != "train"}
        kw.setdefault("matched_control", False)  # plans written before the control existed had none
        kw.setdefault("epoch_selection", "held_out")  # ... and before the inner validation split
        tknown = {f.name for f in dataclasses.fields(TrainConfig)}
        kw["train"] = TrainConfig(**{k: v for k, v in d.get("train", {}).items() if k in tknown})
        return cls(**kw)

    def fingerprint(self) -> dict[str, Any]:
        """The settings finished cells depend on.  Arms (types, ratios) may be added to an
        existing output folder; anything else must match what the folder was made with."""
        d = self.to_dict()
        for key in ("types", "ratios", "seeds", "matched_control", "synthetic_only", "progress", "device", "gen_batch", "stale_after", "wait",
                    "gans_from"):
            d.pop(key)
        d["gan_options"] = {k: v for k, v in d["gan_options"].items() if k not in GAN_RUNTIME_OPTIONS}
        d["train"] = {k: v for k, v in d["train"].items() if k not in ("progress", "device", "num_workers", "eval_batch")}
        return json.loads(json.dumps(d))  # as stored in plan.json (tuples become lists)


# The perfect-generator control (atlas data only): freshly rendered atlas faces of new subjects
# for the same cells and counts as the synthetic arms, what an ideal generator would add. Its
# gain is the experiment's ceiling and its power check.
PERFECT_TYPE = "perfect"


def parse_type_token(token: str, default_mixes: Sequence[float]) -> tuple[str, tuple[float, ...], str]:
    """``unrelated`` -> (type, (), name); ``blended`` or ``blended:0.75`` -> mixes and a name
    that shows a non-default mix (``blended75``)."""
    token = token.strip()
    base, _, arg = token.partition(":")
    if base == PERFECT_TYPE and not arg:
        return base, (), base
    if base not in PRODUCT_TYPES:
        raise AblationError(f"--types: unknown type {base!r} (choose from {', '.join(PRODUCT_TYPES)}, or {PERFECT_TYPE} "
                            f"with atlas data)")
    if base != "blended":
        if arg:
            raise AblationError(f"--types {token}: only blended takes a mix (blended:0.75)")
        return base, (), base
    if not arg:
        mixes = tuple(float(m) for m in default_mixes)
        name = "blended" if mixes == (0.55,) else "blended" + "-".join(f"{round(m * 100):02d}" for m in mixes)
    else:
        try:
            mixes = (float(arg),)
        except ValueError:
            raise AblationError(f"--types {token}: mix {arg!r} is not a number") from None
        name = f"blended{round(mixes[0] * 100):02d}"
    for m in mixes:
        if not (0.0 < m < 1.0):
            raise AblationError(f"--types {token}: mix {m} must be between 0 and 1 (exclusive)")
    return base, mixes, name


def _ratio_suffix(ratio: float) -> str:
    return f"x{ratio:g}".replace(".", "p")


def matched_name(ratio: float) -> str:
    return MATCHED_ARM if ratio == 1.0 else f"{MATCHED_ARM}_{_ratio_suffix(ratio)}"


def build_arms(types: Sequence[str], ratios: Sequence[float], default_mixes: Sequence[float] = (0.55,),
               matched_control: bool = False, synthetic_only: bool = False) -> list[Arm]:
    """The reference arm, the matched control of each ratio (``matched_control``), then one
    arm per type and ratio (a ratio suffix only when not 1), each followed by its
    synthetic-only arm (``synthetic_only``: ``{name}_only``)."""
    if not types:
        raise AblationError("--types: name at least one synthetic image type")
    ratios = list(ratios) or [1.0]
    for r in ratios:
        if not (isinstance(r, (int, float)) and math.isfinite(r) and r > 0):
            raise AblationError(f"--ratio {r}: must be a positive number")
    if len(set(ratios)) != len(ratios):
        raise AblationError("--ratio: a ratio is given twice")
    arms = [Arm(REFERENCE_ARM)]
    if matched_control:
        arms += [Arm(matched_name(float(r)), None, float(r), (), matched=True) for r in ratios]
    seen: set[str] = set()
    for token in types:
        base, mixes, name = parse_type_token(token, default_mixes)
        if name in seen:
            raise AblationError(f"--types: {token!r} is given twice")
        seen.add(name)
        for r in ratios:
            arm_name = name if r == 1.0 else f"{name}_{_ratio_suffix(r)}"
            arms.append(Arm(arm_name, base, float(r), mixes))
            if synthetic_only:
                arms.append(Arm(f"{arm_name}_only", base, float(r), mixes, only=True))
    return arms
