"""Classifier data: targets from condition factors, auxiliary sets, weights and augmentation.

A *target* is one factor (``disease``) or several joined into one class per cell
(``disease,age`` -> ``syndrome_a|infant`` ...), in condition-space order.  Soft labels are
honoured: a row's target distribution is its soft mix of the target factor, and for a joined
target the outer product of the factors' mixes.

Images are decoded once, resized to a square and kept as uint8 tensors in memory (a
process-wide cache keyed by dataset, file and size), so repeated cross-validation runs on
the same data never decode twice.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from synth.errors import UserError
from synth.conditions import ConditionError, ConditionSpace

__all__ = [
    "ClassifierDataError",
    "Target",
    "parse_target",
    "target_matrix",
    "LabelledImages",
    "encode_images",
    "encode_targets",
    "AuxSpec",
    "extend_target",
    "drop_empty_classes",
    "parse_aux",
    "parse_class_weight",
    "AugConfig",
    "build_augment",
    "AugmentedDataset",
    "clear_image_cache",
    "load_images",
    "CLASS_SEP",
]

CLASS_SEP = "|"


class ClassifierDataError(UserError):
    """Bad target, class weights, auxiliary set or augmentation option (one-line message)."""


# ----------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Target:
    """Which factors are classified and the resulting class names (in space order)."""

    factors: tuple[str, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index(self, name: str) -> int:
        try:
            return self.class_names.index(name)
        except ValueError:
            raise ClassifierDataError(f"unknown class {name!r} (classes: {', '.join(self.class_names)})") from None

    def to_dict(self) -> dict:
        return {"factors": list(self.factors), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: dict) -> "Target":
        return cls(tuple(d["factors"]), tuple(d["class_names"]))


def _class_names(space: ConditionSpace, factors: Sequence[str]) -> tuple[str, ...]:
    return tuple(CLASS_SEP.join(cell) for cell in space.cells(factors))


def parse_target(spec: str | Sequence[str], space: ConditionSpace) -> Target:
    """``"disease"`` or ``"disease,age"`` -> :class:`Target` over the space's cells."""
    factors = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s) for s in spec]
    factors = [f for f in factors if f]
    if not factors:
        raise ClassifierDataError("--target: name at least one factor, e.g. --target disease")
    if len(set(factors)) != len(factors):
        raise ClassifierDataError(f"--target: factor named twice in {','.join(factors)}")
    try:
        for f in factors:
            space.factor(f)
    except ConditionError as e:
        raise ClassifierDataError(f"--target: {e}") from None
    return Target(tuple(factors), _class_names(space, factors))


def target_matrix(imageset, factors: Sequence[str]) -> np.ndarray:
    """[N, cells] target distributions of ``imageset`` over the cells of ``factors``.

    Uses soft label vectors where rows have them (one-hot otherwise); a joined target is
    the outer product of the per-factor mixes, flattened in ``itertools.product`` order.
    """
    space = imageset.space
    lab = imageset.label_matrix().astype(np.float64)
    n = lab.shape[0]
    dist = np.ones((n, 1))
    for f in factors:
        blk = lab[:, space.block(f)]
        dist = (dist[:, :, None] * blk[:, None, :]).reshape(n, -1)
    return dist.astype(np.float32)


# ----------------------------------------------------------------------------------------
# Image cache

_CACHE: dict[tuple[str, str, int], torch.Tensor] = {}
_CACHE_BYTES = 0
_CACHE_LIMIT = 4 << 30  # beyond this, images are decoded but not kept
_CACHE_LOCK = threading.Lock()


def clear_image_cache() -> None:
    global _CACHE_BYTES
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE_BYTES = 0


def _to_square_uint8(img, size: int) -> torch.Tensor:
    from PIL import Image

    w, h = img.size
    if w != h:  # centre crop keeps the aspect of faces and lesions
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_images(imageset, size: int, progress: bool = False) -> torch.Tensor:
    """uint8 [N, 3, size, size] for every record, via the process-wide cache."""
    global _CACHE_BYTES
    from tqdm.auto import tqdm

    root = str(Path(imageset.root).resolve())
    out = torch.empty((len(imageset), 3, size, size), dtype=torch.uint8)
    it = range(len(imageset))
    if progress and len(imageset) > 200:
        it = tqdm(it, desc="decode", unit="img", leave=False)
    for i in it:
        key = (root, imageset[i].file, size)
        t = _CACHE.get(key)
        if t is None:
            t = _to_square_uint8(imageset.load_image(i), size)
            with _CACHE_LOCK:
                if _CACHE_BYTES + t.numel() <= _CACHE_LIMIT:
                    _CACHE[key] = t
                    _CACHE_BYTES += t.numel()
        out[i] = t
    return out


# ----------------------------------------------------------------------------------------
# Labelled image bundles


@dataclass
class LabelledImages:
    """Decoded images with their target distributions and loss weights (one source or several)."""

    images: torch.Tensor  # uint8 [N, 3, S, S]
    targets: np.ndarray  # float32 [N, K]
    weights: np.ndarray  # float32 [N] per-sample loss weights
    files: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)  # "own", "aux:<name>", "extra"

    def __len__(self) -> int:
        return self.images.shape[0]

    def hard_targets(self) -> np.ndarray:
        return self.targets.argmax(1)

    def take(self, idx: np.ndarray | Sequence[int]) -> "LabelledImages":
        idx = np.asarray(idx, dtype=np.int64)
        return LabelledImages(
            self.images[torch.from_numpy(idx)],
            self.targets[idx],
            self.weights[idx],
            [self.files[i] for i in idx],
            [self.source[i] for i in idx],
        )

    @staticmethod
    def concat(parts: Sequence["LabelledImages"]) -> "LabelledImages":
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            raise ClassifierDataError("no images to train on")
        k = {p.targets.shape[1] for p in parts}
        if len(k) != 1:
            raise ClassifierDataError(f"cannot join image sets with {sorted(k)} classes")
        return LabelledImages(
            torch.cat([p.images for p in parts]),
            np.concatenate([p.targets for p in parts]),
            np.concatenate([p.weights for p in parts]),
            sum((p.files for p in parts), []),
            sum((p.source for p in parts), []),
        )


def _map_columns(src_names: Sequence[str], dst_names: Sequence[str], what: str, used: np.ndarray | None = None) -> np.ndarray:
    """Matrix [len(src), len(dst)] sending each source class to the same-named class.

    Source classes that no image uses (``used`` False) may be missing from ``dst``.
    """
    m = np.zeros((len(src_names), len(dst_names)), dtype=np.float32)
    for i, n in enumerate(src_names):
        if n not in dst_names:
            if used is not None and not used[i]:
                continue
            raise ClassifierDataError(f"{what}: class {n!r} is not among the classifier's classes ({', '.join(dst_names)})")
        m[i, list(dst_names).index(n)] = 1.0
    return m


def encode_targets(imageset, target: Target, factors: Sequence[str] | None = None) -> np.ndarray:
    """[N, K] target distributions of ``imageset`` over ``target.class_names`` (matched by name)."""
    factors = tuple(factors or target.factors)
    try:
        own_names = _class_names(imageset.space, factors)
    except ConditionError as e:
        raise ClassifierDataError(f"{imageset.root}: {e}") from None
    dist = target_matrix(imageset, factors)
    if own_names != target.class_names:
        dist = dist @ _map_columns(own_names, target.class_names, str(imageset.root), used=dist.sum(0) > 0)
    return dist.astype(np.float32)


def encode_images(
    imageset,
    target: Target,
    size: int,
    weight: float = 1.0,
    factors: Sequence[str] | None = None,
    source: str = "own",
    progress: bool = False,
) -> LabelledImages:
    """Decode ``imageset`` and express its labels over ``target.class_names``.

    ``factors`` (default ``target.factors``) are the imageset's own factors to read; their
    cell names must all be classes of ``target`` (an auxiliary set maps by name).
    """
    dist = encode_targets(imageset, target, factors)
    images = load_images(imageset, size, progress=progress)
    return LabelledImages(
        images,
        dist.astype(np.float32),
        np.full(len(imageset), float(weight), dtype=np.float32),
        [r.file for r in imageset.records],
        [source] * len(imageset),
    )


# ----------------------------------------------------------------------------------------
# Auxiliary sets and class weights


@dataclass(frozen=True)
class AuxSpec:
    """An auxiliary labelled set trained jointly, with its own per-sample loss weight."""

    path: str
    weight: float = 1.0
    factors: tuple[str, ...] | None = None  # its factors to read; default = the target's or its only one

    def resolve_factors(self, space: ConditionSpace, target: Target) -> tuple[str, ...]:
        if self.factors:
            for f in self.factors:
                try:
                    space.factor(f)
                except ConditionError as e:
                    raise ClassifierDataError(f"--aux {self.path}: {e}") from None
            return tuple(self.factors)
        if all(f in space.names for f in target.factors):
            return target.factors
        if len(space.names) == 1:
            return (space.names[0],)
        raise ClassifierDataError(
            f"--aux {self.path}: has factors {', '.join(space.names)}, none matches --target "
            f"{','.join(target.factors)}; name one as DIR:WEIGHT:FACTOR"
        )


def parse_aux(spec: str) -> AuxSpec:
    """``DIR``, ``DIR:WEIGHT`` or ``DIR:WEIGHT:FACTOR[,FACTOR]``."""
    parts = spec.rsplit(":", 2)
    path, weight, factors = spec, 1.0, None
    # Only split off trailing fields that parse, so paths with ':' still work.
    if len(parts) >= 2:
        try:
            w = float(parts[-1])
            path, weight = spec.rsplit(":", 1)[0], w
        except ValueError:
            if len(parts) == 3:
                try:
                    w = float(parts[1])
                    path, weight, factors = parts[0], w, tuple(s for s in parts[2].split(",") if s)
                except ValueError:
                    pass
    if not math.isfinite(weight) or weight < 0:
        raise ClassifierDataError(f"--aux {spec}: weight must be a non-negative number")
    if not Path(path).exists():
        raise ClassifierDataError(f"--aux {spec}: {path} does not exist")
    return AuxSpec(path, weight, factors)


def drop_empty_classes(target: Target, parts: Sequence[LabelledImages | None]) -> tuple[Target, list[LabelledImages | None]]:
    """Remove classes that no image of ``parts`` carries any mass of.

    Level lists usually come from the known defaults, so a dataset without, say, older
    adults would otherwise ask the model to learn a class it never sees.
    """
    mass = sum((p.targets.sum(0) for p in parts if p is not None), np.zeros(target.num_classes))
    keep = np.flatnonzero(mass > 0)
    if len(keep) == target.num_classes:
        return target, list(parts)
    new = Target(target.factors, tuple(target.class_names[i] for i in keep))
    out = []
    for p in parts:
        if p is None:
            out.append(None)
            continue
        out.append(LabelledImages(p.images, np.ascontiguousarray(p.targets[:, keep]), p.weights, p.files, p.source))
    return new, out


def extend_target(target: Target, extra_names: Sequence[str]) -> Target:
    """Append classes an auxiliary set brings that the target does not have."""
    new = [n for n in extra_names if n not in target.class_names]
    return Target(target.factors, target.class_names + tuple(dict.fromkeys(new)))


def parse_class_weight(spec: str | dict | None, class_names: Sequence[str], targets: np.ndarray | None = None) -> np.ndarray | None:
    """``None``/``""`` -> None; ``auto`` -> inverse frequency (mean 1 over present classes);
    ``name=w,...`` -> weights (unnamed classes 1).  ``targets`` [N, K] is needed for auto."""
    if spec is None or spec == "" or spec == "none":
        return None
    k = len(class_names)
    if isinstance(spec, dict):
        items = list(spec.items())
    elif spec == "auto":
        if targets is None:
            raise ClassifierDataError("--class-weight auto needs the training targets")
        counts = np.asarray(targets, dtype=np.float64).sum(0)
        w = np.zeros(k)
        present = counts > 0
        w[present] = counts[present].sum() / (present.sum() * counts[present])
        return w.astype(np.float32)
    else:
        items = []
        for part in [p for p in str(spec).split(",") if p.strip()]:
            if "=" not in part:
                raise ClassifierDataError(f"--class-weight {spec}: expected NAME=WEIGHT[,NAME=WEIGHT] or auto")
            n, v = (s.strip() for s in part.rsplit("=", 1))
            items.append((n, v))
    w = np.ones(k, dtype=np.float32)
    for n, v in items:
        if n not in class_names:
            raise ClassifierDataError(f"--class-weight: unknown class {n!r} (classes: {', '.join(class_names)})")
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise ClassifierDataError(f"--class-weight: weight for {n!r} is not a number: {v!r}") from None
        if not math.isfinite(fv) or fv < 0:
            raise ClassifierDataError(f"--class-weight: weight for {n!r} must be >= 0")
        w[list(class_names).index(n)] = fv
    return w


# ----------------------------------------------------------------------------------------
# Augmentation (torchvision v2, on uint8 tensors)

AUG_KINDS = ("faces", "skin", "none")


@dataclass
class AugConfig:
    """Augmentation by image kind.

    ``faces``: light random-resized crop, small rotation, colour jitter, horizontal flip
    only (aligned faces are upright; vertical flips or transposes would make impossible
    faces).  ``skin``: all eight dihedral variants are valid views of a lesion.
    """

    kind: str = "faces"
    crop_scale: tuple[float, float] = (0.85, 1.0)
    rotation: float = 8.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    hflip: bool = True

    def __post_init__(self) -> None:
        if self.kind not in AUG_KINDS:
            raise ClassifierDataError(f"--aug {self.kind!r}: choose one of {', '.join(AUG_KINDS)}")


class _RandomRot90(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(x, k, dims=(-2, -1)) if k else x


def build_augment(cfg: AugConfig, size: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A transform on one uint8 [3, S, S] tensor (None for ``none``)."""
    from torchvision.transforms import v2

    if cfg.kind == "none":
        return None
    jitter = v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    if cfg.kind == "faces":
        ops = [
            v2.RandomResizedCrop(size, scale=cfg.crop_scale, ratio=(0.95, 1.05), antialias=True),
            v2.RandomRotation(cfg.rotation),
            jitter,
        ]
        if cfg.hflip:
            ops.append(v2.RandomHorizontalFlip())
        return v2.Compose(ops)
    # skin: dihedral group (flips + quarter turns) and a light colour jitter
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), _RandomRot90(), jitter])


class AugmentedDataset(torch.utils.data.Dataset):
    """(uint8 image [3,S,S], target [K], weight) with the augmentation applied on the fly."""

    def __init__(self, data: LabelledImages, augment: Callable | None = None):
        self.data = data
        self.augment = augment
        self.targets = torch.from_numpy(np.ascontiguousarray(data.targets, dtype=np.float32))
        self.weights = torch.from_numpy(np.ascontiguousarray(data.weights, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x = self.data.images[i]
        if self.augment is not None:
            x = self.augment(x)
        return x, self.targets[i], self.weights[i]
