#!/usr/bin/env python
"""Judge panel: score conditional generators with judges that never helped choose them.

    python tools/eval_generator.py checkpoints/demo-faces.ckpt runs/00003-x/network-snapshot-000240.ckpt --out panel/

A snapshot chosen with some judge classifiers and then scored by the same judges flatters
itself (the bundled face generator read 72.8% disease on its selection judges and about 30%
on an independent one).  This tool trains its own panel on atlas subjects that neither
trained nor chose the generator, and reports numbers that a lucky snapshot cannot inflate:

1. Two atlases of *other* subjects than the training atlas (training atlases use seed 0):
   ``--atlas-seeds 11,12`` = the judges' training set and a second real set, kind taken
   from the checkpoint's condition space (faces: disease x age, skin: stage).  Rendered once
   and cached under ``--cache``.
2. The panel: per factor, every architecture of ``--archs`` x every seed of ``--judge-seeds``
   (default small_cnn and small_cnn_s x seeds 0, 1, random init, 32 px), trained with the
   project's classifier trainer; plus attribute judges (faces: skin tone in four fixed bins,
   hair colour, hair style; skin: skin tone bins, freckle bins) of the first architecture.
   Trained judges are cached (keyed by every setting that changes them).
3. Per checkpoint: ``--per-cell`` images per cell with fixed seeds at ``--truncation`` psi,
   and: label fidelity of every judge, generated against the second real set (ratio);
   precision / recall / density / coverage in the penultimate features of the panel's first
   judge, with real-vs-real coverage as the reference; within-cell pixel diversity relative to
   real images of the cell; judged-attribute entropy ratio and total variation per cell; and
   morph monotonicity: ``--identities`` faces drawn at every level of the ordinal factor (the
   ``age_related`` product), judged by the first judge of that factor, Spearman rho per face.
4. ``OUT/panel.json`` (every number, the panel and its real accuracies, checkpoint paths and
   SHA-256) and ``OUT/panel.md`` (one table, one row per checkpoint), written atomically.

See docs/metrics.md, "Judge panel (tools/eval_generator.py)".
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import click

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

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


def _user_errors() -> tuple[type[BaseException], ...]:
    from classifiers.checkpoint import ClassifierCheckpointError
    from classifiers.data import ClassifierDataError
    from classifiers.models import ModelError
    from synth.conditions import ConditionError
    from synth.data.atlas import AtlasError
    from synth.data.dataset import DatasetError
    from synth.quality.errors import QualityError
    from synth.synthesis.errors import SynthesisError
    from synth.networks.checkpoint import CheckpointError

    return (PanelError, ClassifierCheckpointError, ClassifierDataError, ModelError, ConditionError, AtlasError,
            DatasetError, QualityError, SynthesisError, CheckpointError)


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


def _log_fn(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            click.echo(f"[panel] {msg}", err=True)

    return log


# ----------------------------------------------------------------------------------------
# Atlases


@dataclass
class RealSet:
    """One atlas at the judges' size: uint8 [N, 3, 32, 32] images, cells, attribute classes."""

    path: Path
    seed: int
    imageset: Any
    images: Any  # torch uint8 [N, 3, S, S]
    cells: list[tuple[str, ...]]
    attributes: dict[str, np.ndarray]
    info: dict[str, Any]

    def by_cell(self) -> dict[tuple[str, ...], np.ndarray]:
        out: dict[tuple[str, ...], list[int]] = {}
        for i, c in enumerate(self.cells):
            out.setdefault(c, []).append(i)
        return {c: np.array(v) for c, v in out.items()}


def _atlas_current(path: Path, kind: str, per_cell: int, resolution: int, seed: int) -> bool:
    from synth.data.atlas import ATLAS_VERSION

    try:
        meta = json.loads((path / "atlas.json").read_text())
    except (OSError, ValueError):
        return False
    want = {"version": ATLAS_VERSION, "kind": kind, "per_cell": per_cell, "resolution": resolution, "seed": seed}
    return isinstance(meta, dict) and all(meta.get(k) == v for k, v in want.items())


def ensure_real_set(cfg: PanelConfig, kind: str, seed: int, role: str, log) -> RealSet:
    from classifiers.data import load_images
    from synth.data.atlas import render_atlas
    from synth.data.dataset import open_dataset

    n, res = cfg.judge_per_cell, cfg.atlas_resolution
    path = cfg.cache_root() / "atlas" / f"{kind}-{n}-{res}-{seed}"
    if _atlas_current(path, kind, n, res, seed):
        log(f"{role} atlas: cached {path}")
    else:
        t0 = time.perf_counter()
        log(f"{role} atlas: rendering {kind}, {n} per cell, {res} px, seed {seed} -> {path}")
        render_atlas(path, kind=kind, per_cell=n, resolution=res, seed=seed, progress=cfg.progress, overwrite=True)
        log(f"{role} atlas: rendered in {time.perf_counter() - t0:.1f} s")
    imageset = open_dataset(path)
    images = load_images(imageset, JUDGE_SIZE)
    names = list(KIND_FACTORS[kind])
    cells = [imageset.cell_of(i, names) for i in range(len(imageset))]
    attrs = {}
    for a in attributes_of(kind):
        try:
            values = [r.extra[a.name] for r in imageset.records]
        except KeyError:
            raise PanelError(f"{path}/labels.csv: no {a.name!r} column (re-render the atlas)") from None
        attrs[a.name] = a.encode(values)
    info = {"role": role, "path": str(path), "kind": kind, "seed": seed, "per_cell": n, "resolution": res,
            "images": len(imageset)}
    return RealSet(path, seed, imageset, images, cells, attrs, info)


# ----------------------------------------------------------------------------------------
# Judges


@dataclass
class PanelJudge:
    name: str  # "disease/small_cnn/s0", "attr:hair_colour/small_cnn/s0"
    target: str  # factor or attribute name
    role: str  # "factor" | "attribute"
    arch: str
    seed: int
    class_names: tuple[str, ...]
    model: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: Any
    path: Path
    cached: bool
    train_seconds: float | None
    recipe: dict[str, Any] = field(default_factory=dict)
    real: dict[str, Any] = field(default_factory=dict)  # accuracy on the second real set

    def probs(self, images) -> np.ndarray:
        from classifiers.ensemble import predict_probs

        return predict_probs(self.model, images, self.mean, self.std, 128, self.device).astype(np.float64)

    def features(self, images) -> np.ndarray:
        """Penultimate (pre-logits) features of uint8 [N, 3, S, S] images."""
        import torch

        from classifiers.ensemble import normalise

        out = []
        self.model.eval()
        with torch.no_grad():
            for s in range(0, images.shape[0], 128):
                x = normalise(images[s : s + 128].to(self.device), self.mean, self.std)
                h = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
                out.append(h.float().reshape(h.shape[0], -1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "role": self.role, "model": self.arch, "seed": self.seed,
                "classes": list(self.class_names), "recipe": self.recipe, "checkpoint": str(self.path),
                "cached": self.cached, "train_seconds": self.train_seconds, "real": self.real}


def _judge_key(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _train_or_load(cfg: PanelConfig, kind: str, data, target, role: str, arch: str, seed: int, atlas: RealSet, log) -> PanelJudge:
    from classifiers.checkpoint import CKPT_NAME, ClassifierCheckpointError, load_classifier, save_classifier
    from classifiers.data import AugConfig
    from classifiers.train import TrainConfig, resolve_device, train_classifier
    from synth.data.atlas import ATLAS_VERSION

    recipe = cfg.recipe(arch)
    aug = AugConfig(kind="skin" if kind == "skin" else "faces")
    if role == "attribute":  # colour jitter would blur the very attributes judged (skin tone, hair colour)
        aug = AugConfig(kind=aug.kind, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    tcfg = TrainConfig(model=arch, size=JUDGE_SIZE, pretrained=False, epochs=recipe["epochs"], batch=BATCH,
                       lr=recipe["lr"], optimizer="adamw", weight_decay=WEIGHT_DECAY, aug=aug, seed=seed,
                       device=cfg.device, progress=cfg.progress)
    target_name = target.factors[0]
    spec = {"panel_version": PANEL_VERSION, "atlas_version": ATLAS_VERSION, "kind": kind, "atlas_seed": atlas.seed,
            "atlas_per_cell": cfg.judge_per_cell, "atlas_resolution": cfg.atlas_resolution, "role": role,
            "target": target_name, "classes": list(target.class_names),
            "train": {k: v for k, v in tcfg.to_dict().items() if k not in ("device", "progress", "num_workers", "eval_batch")}}
    spec = json.loads(json.dumps(spec))  # as it reads back from the checkpoint (tuples become lists)
    label = f"{'attr:' if role == 'attribute' else ''}{target_name}/{arch}/s{seed}"
    folder = cfg.cache_root() / "judges" / f"{kind}-{label.replace('/', '-').replace(':', '_')}-{_judge_key(spec)}"
    device = resolve_device(cfg.device)
    cached, secs = False, None
    model = meta = None
    if (folder / CKPT_NAME).is_file():
        try:
            model, meta = load_classifier(folder, device=device)
            cached = meta.get("panel_spec") == spec
        except ClassifierCheckpointError:
            cached = False
    if cached:
        log(f"judge {label}: cached ({folder.name})")
    else:
        log(f"judge {label}: training {recipe['epochs']} epochs on {len(data)} images (lr {recipe['lr']:g})")
        t0 = time.perf_counter()
        # no out_dir: without validation the trainer would save every epoch, and a run stopped
        # half-way would leave a checkpoint that looks finished; save once, at the end
        res = train_classifier(data, None, target, tcfg, out_dir=None, desc=label,
                               meta_extra={"panel_spec": spec, "data": str(atlas.path)})
        save_classifier(folder / CKPT_NAME, res.model, res.meta)
        secs = time.perf_counter() - t0
        model, meta = load_classifier(folder, device=device)
        log(f"judge {label}: trained in {secs:.1f} s (last-epoch loss {res.history[-1]['loss']:.3f})")
    norm = meta["normalisation"]
    return PanelJudge(label, target_name, role, arch, seed, tuple(meta["class_names"]), model, tuple(norm["mean"]),
                      tuple(norm["std"]), device, folder / CKPT_NAME, cached, secs,
                      {"lr": recipe["lr"], "epochs": recipe["epochs"], "batch": BATCH, "optimizer": "adamw",
                       "weight_decay": WEIGHT_DECAY, "size": JUDGE_SIZE})


@dataclass
class Panel:
    kind: str
    factors: tuple[str, ...]
    judges: dict[str, list[PanelJudge]]  # factor -> judges (arch-major, then seed)
    attributes: dict[str, PanelJudge]  # attribute name -> judge
    train_set: RealSet
    real_set: RealSet

    @property
    def feature_judge(self) -> PanelJudge:
        return self.judges[self.factors[0]][0]


def build_panel(cfg: PanelConfig, kind: str, log) -> Panel:
    from classifiers.data import LabelledImages, Target, encode_images, parse_target

    train_set = ensure_real_set(cfg, kind, cfg.atlas_seeds[0], "judge-training", log)
    real_set = ensure_real_set(cfg, kind, cfg.atlas_seeds[1], "second real", log)
    judges: dict[str, list[PanelJudge]] = {}
    for factor in KIND_FACTORS[kind]:
        target = parse_target(factor, train_set.imageset.space)
        data = encode_images(train_set.imageset, target, JUDGE_SIZE)
        judges[factor] = [_train_or_load(cfg, kind, data, target, "factor", arch, s, train_set, log)
                          for arch in cfg.archs for s in cfg.judge_seeds]
    attrs: dict[str, PanelJudge] = {}
    n = len(train_set.imageset)
    for a in attributes_of(kind):
        target = Target((a.name,), a.classes)
        y = train_set.attributes[a.name]
        onehot = np.zeros((n, len(a.classes)), np.float32)
        onehot[np.arange(n), y] = 1.0
        data = LabelledImages(train_set.images, onehot, np.ones(n, np.float32),
                              [r.file for r in train_set.imageset.records], ["own"] * n)
        attrs[a.name] = _train_or_load(cfg, kind, data, target, "attribute", cfg.archs[0], cfg.judge_seeds[0],
                                       train_set, log)
    panel = Panel(kind, KIND_FACTORS[kind], judges, attrs, train_set, real_set)
    _score_on_real(panel)
    return panel


def _score_on_real(panel: Panel) -> None:
    """Each judge's accuracy on the second real set (ground-truth labels)."""
    rs = panel.real_set
    space = rs.imageset.space
    for factor, js in panel.judges.items():
        levels = space.factor(factor).levels
        fi = space.names.index(factor)
        true = np.array([levels.index(c[fi]) for c in rs.cells])
        for j in js:
            pred = j.probs(rs.images).argmax(1)
            per_level = {lv: float((pred[true == k] == k).mean()) for k, lv in enumerate(levels) if (true == k).any()}
            j.real = {"accuracy": float((pred == true).mean()), "balanced_accuracy": float(np.mean(list(per_level.values()))),
                      "n": int(len(true)), "per_level": per_level}
    for name, j in panel.attributes.items():
        true = rs.attributes[name]
        pred = j.probs(rs.images).argmax(1)
        k = len(j.class_names)
        bal = float(np.mean([(pred[true == c] == c).mean() for c in range(k) if (true == c).any()]))
        j.real = {"accuracy": float((pred == true).mean()), "balanced_accuracy": bal, "chance": 1.0 / k,
                  "informative": bool(bal >= INFORMATIVE * (1.0 / k)), "n": int(len(true)),
                  "class_counts": {c: int((true == i).sum()) for i, c in enumerate(j.class_names)},
                  "predicted_counts": {c: int((pred == i).sum()) for i, c in enumerate(j.class_names)}}


# ----------------------------------------------------------------------------------------
# Checkpoints


def kind_of(space, path: Path) -> str:
    """faces or skin, from a generator's condition space (which must be the atlas's)."""
    from synth.data.atlas import atlas_space

    for kind, names in KIND_FACTORS.items():
        if tuple(space.names) == names:
            atlas = atlas_space(kind)
            for f in names:
                if tuple(space.factor(f).levels) != tuple(atlas.factor(f).levels):
                    raise PanelError(f"{path}: factor {f!r} has levels {', '.join(space.factor(f).levels)}, the atlas "
                                     f"has {', '.join(atlas.factor(f).levels)}; the panel judges atlas levels only")
            return kind
    raise PanelError(f"{path}: condition space {' x '.join(space.names)} is not an atlas space "
                     f"(faces: disease x age; skin: stage)")


def open_checkpoint(path: Path, device: str):
    """-> (G_ema, space, meta, kind) of a training snapshot or an exported generator."""
    from synth.networks.checkpoint import CheckpointError, load_generator

    if not path.exists():
        raise PanelError(f"{path}: checkpoint not found")
    if path.is_dir():
        raise PanelError(f"{path}: is a folder, expected a checkpoint file (.ckpt)")
    try:
        G, space, meta = load_generator(path, device=device)
    except CheckpointError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PanelError(msg if str(path) in msg else f"{path}: {msg}") from None
    if space is None:
        raise PanelError(f"{path}: checkpoint has no condition space (an unconditional generator?)")
    return G, space, meta, kind_of(space, path)


def _sub_by_cell(cells: Sequence[tuple[str, ...]], n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` images per cell (a fixed random choice), in cell order."""
    rng = np.random.default_rng(seed)
    by: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(cells):
        by.setdefault(tuple(c), []).append(i)
    out = []
    for c in sorted(by):
        idx = np.array(by[c])
        out.append(np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False)))
    return np.concatenate(out)


def _pixels(images) -> np.ndarray:
    return images.reshape(images.shape[0], -1).numpy().astype(np.float64) / 255.0


def _group(values: np.ndarray, cells: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], np.ndarray]:
    out: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(cells):
        out.setdefault(tuple(c), []).append(i)
    return {c: values[np.array(v)] for c, v in out.items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return float(a / b)


def real_reference(panel: Panel, cfg: PanelConfig) -> dict[str, Any]:
    """Real-vs-real PRDC: the second real set against the judges' set, both n per cell."""
    from synth.quality.errors import QualityError
    from synth.quality.variety import prdc

    n = min(cfg.per_cell, cfg.judge_per_cell)
    fj = panel.feature_judge
    ref_idx = _sub_by_cell(panel.train_set.cells, n, 0)
    oth_idx = _sub_by_cell(panel.real_set.cells, n, 1)
    ref = fj.features(panel.train_set.images[ref_idx])
    oth = fj.features(panel.real_set.images[oth_idx])
    try:
        rr = prdc(ref, oth, k=cfg.prdc_k)
    except QualityError as e:
        rr = {"precision": None, "recall": None, "density": None, "coverage": None, "note": str(e)}
    return {"ref_features": ref, "real_idx": oth_idx, "per_cell": n, "n_reference": len(ref_idx), "n": len(oth_idx),
            "prdc": rr}


def evaluate_checkpoint(path: Path, panel: Panel, cfg: PanelConfig, reference: dict[str, Any], log) -> dict[str, Any]:
    import torch

    from synth.quality.errors import QualityError
    from synth.quality.fidelity import Judge, condition_fidelity, resize_for_judge
    from synth.quality.progression import expected_grade
    from synth.quality.report import ordinal_factor
    from synth.quality.variety import attribute_variety, prdc, within_cell_diversity
    from synth.synthesis.counts import resolve_roles
    from synth.synthesis.engine import Renderer
    from synth.synthesis.labels import SeedStream, plan_products
    from synth.synthesis.network import network_record
    from classifiers.train import resolve_device

    device = resolve_device(cfg.device)
    G, space, meta, kind = open_checkpoint(path, str(device))
    rec = network_record(path, meta)
    t0 = time.perf_counter()
    renderer = Renderer(G, psi=cfg.truncation, noise_mode="const", batch=cfg.batch, device=device)
    cells = space.cells()
    imgs, gen_cells = [], []
    for ci, cell in enumerate(cells):
        seeds = [cfg.seed + ci * cfg.per_cell + j for j in range(cfg.per_cell)]
        label = space.encode(dict(zip(space.names, cell)))
        imgs.append(renderer.images(seeds, np.repeat(label[None], len(seeds), 0), noise_seed=cfg.seed + ci))
        gen_cells += [tuple(cell)] * len(seeds)
    gen = resize_for_judge(np.concatenate(imgs), JUDGE_SIZE)
    log(f"{path.name}: generated {len(gen)} images ({cfg.per_cell} per cell, psi {cfg.truncation:g}) "
        f"in {time.perf_counter() - t0:.1f} s")

    # label fidelity
    fidelity: dict[str, Any] = {}
    for factor, js in panel.judges.items():
        rows = []
        for j in js:
            jj = Judge(j.name, (factor,), j.class_names, j.probs)
            jj.check(space)
            res = condition_fidelity([jj], gen, gen_cells, space)[0]
            acc_real = j.real["accuracy"]
            rows.append({"judge": j.name, "model": j.arch, "seed": j.seed, "accuracy_generated": res["accuracy"],
                         "accuracy_real": acc_real, "ratio": _ratio(res["accuracy"], acc_real),
                         "per_level_generated": res["per_level"], "per_level_real": j.real["per_level"],
                         "per_cell_generated": {k: v["accuracy"] for k, v in res["per_cell"].items()}})
        worst = min(rows, key=lambda r: (r["accuracy_generated"] if r["accuracy_generated"] is not None else 2.0,
                                         r["ratio"] if r["ratio"] is not None else 2.0))
        ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
        fidelity[factor] = {"judges": rows,
                            "worst": {k: worst[k] for k in ("judge", "accuracy_generated", "accuracy_real", "ratio")},
                            "min_ratio": min(ratios) if ratios else None,
                            "mean_ratio": float(np.mean(ratios)) if ratios else None,
                            "chance": 1.0 / len(space.factor(factor).levels)}

    # variety: within-cell pixel diversity (against the second real set), PRDC in judge features
    rs = panel.real_set
    real_pix = _group(_pixels(rs.images), rs.cells)
    gen_pix = _group(_pixels(gen), gen_cells)
    div = within_cell_diversity(real_pix, gen_pix)
    n = reference["per_cell"]
    fake_idx = np.concatenate([np.flatnonzero([c == tuple(cell) for c in gen_cells])[:n] for cell in cells])
    fake_f = panel.feature_judge.features(gen[fake_idx])
    try:
        pr = prdc(reference["ref_features"], fake_f, k=cfg.prdc_k)
    except QualityError as e:
        pr = {"precision": None, "recall": None, "density": None, "coverage": None, "note": str(e)}
    rr = reference["prdc"]
    variety = {
        "within_cell_diversity": {"mean": div["mean"], "min": div["min"],
                                  "per_cell": {"|".join(k): v for k, v in div["per_cell"].items()},
                                  "space": f"pixels at {JUDGE_SIZE} px in [0, 1], real = second real set"},
        "prdc": {**pr, "k": cfg.prdc_k, "n_generated": int(len(fake_idx)), "n_reference": reference["n_reference"],
                 "features": f"penultimate layer of {panel.feature_judge.name}",
                 "reference": f"judge-training atlas (seed {panel.train_set.seed}), {n} per cell"},
        "real_vs_real": {**rr, "k": cfg.prdc_k, "n": reference["n"],
                         "what": f"second real set (seed {rs.seed}) against the same reference"},
        "coverage_ratio": _ratio(pr.get("coverage"), rr.get("coverage")),
    }

    # judged attributes: entropy ratio and total variation per cell
    # (real: the same number of images per cell as generated, since plug-in entropy grows with the sample)
    attributes: dict[str, Any] = {}
    real_idx = reference["real_idx"]
    real_cells = [rs.cells[i] for i in real_idx]
    for name, j in panel.attributes.items():
        k = len(j.class_names)
        g = j.probs(gen[fake_idx]).argmax(1)
        r = j.probs(rs.images[real_idx]).argmax(1)
        av = attribute_variety(_group(r, real_cells), _group(g, [gen_cells[i] for i in fake_idx]), k)
        attributes[name] = {"judge": j.name, "classes": list(j.class_names), "entropy_ratio": av["entropy_ratio"],
                            "tv": av["tv"], "n_per_cell": n, "judge_informative": j.real["informative"],
                            "generated_share": [float((g == c).mean()) for c in range(k)],
                            "real_share": [float((r == c).mean()) for c in range(k)],
                            "per_cell": {"|".join(c): v for c, v in av["per_cell"].items()}}

    # morph monotonicity: one z at every level of the ordinal factor (the age_related product)
    morphs: dict[str, Any] | None = None
    factor = ordinal_factor(space)
    if factor is not None and factor in panel.judges:
        from scipy.stats import spearmanr

        roles = resolve_roles(space, factor)
        others = [f for f in space.names if f != factor]
        if others:
            first = space.factor(others[0])
            oi = list(space.names).index(others[0])
            share = {lv: cfg.identities // len(first.levels) + (i < cfg.identities % len(first.levels))
                     for i, lv in enumerate(first.levels)}
            counts = {c: share[c[oi]] for c in cells if share[c[oi]] > 0}
        else:
            counts = {c: cfg.identities for c in cells}
        start = cfg.seed + len(cells) * cfg.per_cell
        items = plan_products(space, "age_related", counts, SeedStream(None, start), roles)
        levels = space.factor(factor).levels
        n_lv = len(levels)
        t1 = time.perf_counter()
        frames = renderer.images([it.seed for it in items], np.stack([it.label for it in items]), noise_seed=start)
        judge = panel.judges[factor][0]
        jj = Judge(judge.name, (factor,), judge.class_names, judge.probs)
        m = jj.marginals(judge.probs(resize_for_judge(frames, JUDGE_SIZE)), space)[factor]
        grades = expected_grade(m)
        seqs = []
        for s in range(0, len(items), n_lv):
            chunk = items[s : s + n_lv]
            lv_idx = [levels.index(space.decode(it.label)[factor]) for it in chunk]
            g = grades[s : s + n_lv][np.argsort(lv_idx)]
            rho = None if np.ptp(g) == 0 else float(spearmanr(np.arange(n_lv), g).statistic)
            fixed = {f: space.decode(chunk[0].label)[f] for f in others}
            seqs.append({"seed": int(chunk[0].seed), **fixed, "grades": [float(x) for x in g], "rho": rho})
        rhos = [q["rho"] for q in seqs if q["rho"] is not None]
        morphs = {"factor": factor, "levels": list(levels), "judge": judge.name, "n_identities": len(seqs),
                  "monotone_fraction": float(np.mean([q["rho"] is not None and q["rho"] >= 0.9 for q in seqs])) if seqs else None,
                  "rule": "Spearman rho (level order vs judged expected level) >= 0.9",
                  "mean_rho": float(np.mean(rhos)) if rhos else None, "n_flat": len(seqs) - len(rhos),
                  "mean_grade_per_level": [float(x) for x in np.mean([q["grades"] for q in seqs], 0)] if seqs else [],
                  "sequences": seqs}
        log(f"{path.name}: judged {len(seqs)} identities x {n_lv} {factor} levels in {time.perf_counter() - t1:.1f} s")
    del G
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"path": str(path), "name": path.name, "sha256": rec["network_sha256"], "kimg": rec["network_kimg"],
            "kind": kind, "resolution": int(renderer.G.img_resolution), "space": space.to_dict(),
            "n_generated": int(len(gen)), "fidelity": fidelity, "variety": variety, "attributes": attributes,
            "morphs": morphs}


# ----------------------------------------------------------------------------------------
# Output


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def header_sentence(result: dict) -> str:
    a = result["atlases"]
    return (f"The panel judges were trained on atlas subjects (seed {a['judge_training']['seed']}) that were not used to "
            f"train or choose the generator (training atlases use seed 0); \"real\" numbers come from a second set of new "
            f"subjects (seed {a['second_real']['seed']}).")


def render_markdown(result: dict) -> str:
    s = result["settings"]
    factors = result["panel"]["factors"]
    attrs = [a["target"] for a in result["panel"]["attribute_judges"]]
    ordinal = next((c["morphs"]["factor"] for c in result["checkpoints"] if c.get("morphs")), None)
    rr = result["real_vs_real"]
    lines = [f"# Judge panel ({result['kind']})", "", header_sentence(result), "",
             f"Panel: {len(result['panel']['factor_judges'])} factor judges ({', '.join(s['archs'])} x seeds "
             f"{', '.join(str(x) for x in s['judge_seeds'])} per factor, {JUDGE_SIZE} px, {s['epochs']} epochs, "
             f"{s['judge_per_cell']} training images per cell) and {len(attrs)} attribute judges. "
             f"Generated: {s['per_cell']} images per cell at truncation psi {s['truncation']:g}, seeds from {s['seed']}.",
             ""]
    head = ["checkpoint", "kimg"]
    head += [f"{f} gen/real (worst judge)" for f in factors]
    head += ["precision", "recall", "coverage (real-vs-real)", "within-cell diversity (min)"]
    head += [f"{a.replace('_', ' ')} entropy ratio" for a in attrs]
    if ordinal:
        head += [f"monotone {ordinal} morphs", "mean rho"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in result["checkpoints"]:
        row = [f"`{c['name']}`", "-" if c["kimg"] is None else f"{c['kimg']:g}"]
        for f in factors:
            w = c["fidelity"][f]["worst"]
            row.append(f"{_num(w['ratio'])} ({_pct(w['accuracy_generated'])} / {_pct(w['accuracy_real'])})")
        p = c["variety"]["prdc"]
        row += [_num(p.get("precision")), _num(p.get("recall")),
                f"{_num(p.get('coverage'))} ({_num(rr.get('coverage'))})"]
        d = c["variety"]["within_cell_diversity"]
        row.append(f"{_num(d['mean'])} ({_num(d['min'])})")
        row += [_num(c["attributes"][a]["entropy_ratio"]) if c["attributes"][a]["judge_informative"] else "n/a"
                for a in attrs]
        if ordinal:
            m = c.get("morphs") or {}
            row += [_pct(m.get("monotone_fraction")), _num(m.get("mean_rho"))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "gen/real: the judge's accuracy on generated images over its accuracy on the second real set; the "
              "worst judge is the one with the lowest accuracy on generated images. Coverage in brackets: the second "
              "real set against the same reference. Diversity: mean pairwise pixel distance within a cell, generated "
              "over real (worst cell in brackets). Entropy ratio: judged attribute classes within a cell, generated "
              "over real, mean over cells."
              + (f" Monotone morphs: share of identities whose judged {ordinal} rises with Spearman rho >= 0.9."
                 if ordinal else ""), ""]
    weak = [a for a in result["panel"]["attribute_judges"] if not a["real"]["informative"]]
    for a in weak:
        lines += [f"n/a: the {a['target'].replace('_', ' ')} judge reads {_pct(a['real']['balanced_accuracy'])} balanced "
                  f"accuracy on the second real set (chance {_pct(a['real']['chance'])}), too close to chance to judge "
                  f"that attribute's variety.", ""]
    return "\n".join(lines)


def write_outputs(result: dict, out: Path) -> tuple[Path, Path]:
    from synth.utils.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / "panel.json", out / "panel.md"
    atomic_write_text(jp, json.dumps(result, indent=2, allow_nan=False) + "\n")
    atomic_write_text(mp, render_markdown(result))
    return jp, mp


def run_panel(checkpoints: Sequence[Path], out: Path, cfg: PanelConfig, log=print) -> dict:
    """Check every input, build (or reuse) the panel, score each checkpoint, write panel.json/.md."""
    from classifiers.train import resolve_device

    cfg.check()
    device = resolve_device(cfg.device)
    if out.exists() and not out.is_dir():
        raise PanelError(f"--out {out}: exists and is not a folder")
    if not checkpoints:
        raise PanelError("name at least one checkpoint (CKPT)")
    # every checkpoint is opened (and its kind found) before any slow work
    kinds = {}
    for p in checkpoints:
        _, _, _, kinds[p] = open_checkpoint(p, "cpu")
    if len(set(kinds.values())) > 1:
        raise PanelError("checkpoints of different kinds (" + ", ".join(f"{p.name}: {k}" for p, k in kinds.items())
                         + "); evaluate faces and skin generators in separate runs")
    kind = next(iter(kinds.values()))
    cfg = cfg.for_kind(kind)
    log(f"{len(checkpoints)} checkpoint(s), kind {kind}; cache {cfg.cache_root()}; device {device}")
    t0 = time.perf_counter()
    panel = build_panel(cfg, kind, log)
    for f, js in panel.judges.items():
        log(f"panel {f}: real accuracy " + ", ".join(f"{j.name} {100 * j.real['accuracy']:.1f}%" for j in js))
    reference = real_reference(panel, cfg)
    rows = [evaluate_checkpoint(p, panel, cfg, reference, log) for p in checkpoints]
    settings = {
        "per_cell": cfg.per_cell, "truncation": cfg.truncation, "judge_per_cell": cfg.judge_per_cell,
        "epochs": cfg.epochs, "seed": cfg.seed, "judge_seeds": list(cfg.judge_seeds), "archs": list(cfg.archs),
        "atlas_seeds": list(cfg.atlas_seeds), "atlas_resolution": cfg.atlas_resolution, "identities": cfg.identities,
        "prdc_k": cfg.prdc_k, "judge_size": JUDGE_SIZE, "device": str(device), "cache": str(cfg.cache_root()),
        "noise_mode": "const", "panel_version": PANEL_VERSION,
        "seed_rule": "cell i, image j uses z seed SEED + i * PER_CELL + j; morph identities follow",
    }
    result = {
        "format": FORMAT,
        "kind": kind,
        "statement": "",
        "settings": settings,
        "atlases": {"judge_training": panel.train_set.info, "second_real": panel.real_set.info},
        "panel": {
            "factors": list(panel.factors),
            "factor_judges": [j.describe() for js in panel.judges.values() for j in js],
            "attribute_judges": [j.describe() for j in panel.attributes.values()],
            "feature_judge": panel.feature_judge.name,
            "morph_judge": {f: js[0].name for f, js in panel.judges.items()},
            "all_cached": all(j.cached for js in panel.judges.values() for j in js)
                          and all(j.cached for j in panel.attributes.values()),
        },
        "real_vs_real": {**reference["prdc"], "k": cfg.prdc_k, "per_cell": reference["per_cell"],
                         "n": reference["n"], "n_reference": reference["n_reference"]},
        "checkpoints": rows,
        "seconds": time.perf_counter() - t0,
    }
    result["statement"] = header_sentence(result)
    from synth.quality.report import json_safe

    result = json_safe(result)
    jp, mp = write_outputs(result, out)
    log(f"wrote {jp} and {mp} ({result['seconds']:.0f} s)")
    return result


# ----------------------------------------------------------------------------------------
# CLI


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in str(value).split(",") if x.strip())
    except ValueError:
        raise click.ClickException(f"{option} {value!r}: expected integers separated by commas") from None
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="CKPT [CKPT ...]")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for panel.json and panel.md (created; those two files are replaced).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where atlases and trained judges are kept and reused [default: $SYNTH_CACHE/eval_generator, "
                   "else ~/.cache/synth/eval_generator].")
@click.option("--per-cell", default=None, type=int,
              help="Generated images per condition cell [default: faces 20, skin 100].")
@click.option("--truncation", default=1.0, show_default=True, type=float,
              help="Truncation psi toward each condition's mean w (1 = none, the honest choice for variety).")
@click.option("--judge-per-cell", default=None, type=int,
              help="Atlas images per cell for judge training, and of the second real set [default: faces 60, skin 300].")
@click.option("--epochs", default=15, show_default=True, type=int,
              help="Judge training epochs (architectures with a slower recipe, e.g. resnet10t, train twice as long).")
@click.option("--seed", default=0, show_default=True, type=int, help="First z seed of the generated images.")
@click.option("--judge-seeds", default="0,1", show_default=True, help="Initialisation seeds of each judge architecture.")
@click.option("--archs", default="small_cnn,small_cnn_s", show_default=True,
              help="Judge architectures (timm names, random init). resnet10t is more independent but ~4x slower.")
@click.option("--atlas-seeds", default="11,12", show_default=True,
              help="Atlas seeds JUDGE_TRAIN,SECOND_REAL: subjects neither seen in training (seed 0) nor in selection.")
@click.option("--atlas-resolution", default=64, show_default=True, type=int, help="Resolution the atlases are drawn at.")
@click.option("--identities", default=16, show_default=True, type=int,
              help="Identities drawn at every level of the ordinal factor (age, stage) for morph monotonicity.")
@click.option("--prdc-k", default=5, show_default=True, type=int, help="Neighbour count of precision/recall/density/coverage.")
@click.option("--batch", default=32, show_default=True, type=int, help="Generator batch size.")
@click.option("--threads", default=None, type=int, help="torch CPU threads (e.g. 1 on a shared machine).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--quiet", is_flag=True, help="No progress output (errors still go to stderr).")
def main(checkpoints, out, cache, per_cell, truncation, judge_per_cell, epochs, seed, judge_seeds, archs, atlas_seeds,
         atlas_resolution, identities, prdc_k, batch, threads, device, quiet) -> None:
    """Score generator checkpoints with a judge panel that never took part in choosing them.

    \b
    CKPT: a training snapshot (runs/.../network-snapshot-*.ckpt) or an exported generator
    (checkpoints/demo-faces.ckpt, checkpoints/demo-skin.ckpt); all of one kind (faces or skin).

    \b
    The panel is trained on atlas subjects of seed 11 and checked on new subjects of seed 12,
    never on the training atlas (seed 0) or the judges that chose the snapshot. Reported per
    checkpoint: label fidelity of every judge (generated / real accuracy, worst judge),
    precision / recall / density / coverage in judge features with a real-vs-real reference,
    within-cell pixel diversity, judged-attribute entropy ratios (skin tone, hair colour, hair
    style; skin: skin tone, freckles) and morph monotonicity of the ordinal factor.

    \b
    Example (one thread: about 6 minutes the first time, about 15 s once the judges are cached):
      python tools/eval_generator.py checkpoints/demo-faces.ckpt --out panel/ --threads 1
    """
    if threads is not None:
        if threads < 1:
            raise click.ClickException(f"--threads {threads}: must be >= 1")
        import torch

        torch.set_num_threads(threads)
    cfg = PanelConfig(per_cell=per_cell, truncation=truncation, judge_per_cell=judge_per_cell, epochs=epochs, seed=seed,
                      judge_seeds=_int_list(judge_seeds, "--judge-seeds"),
                      archs=tuple(a.strip() for a in archs.split(",") if a.strip()),
                      atlas_seeds=_int_list(atlas_seeds, "--atlas-seeds"), atlas_resolution=atlas_resolution,
                      identities=identities, prdc_k=prdc_k, batch=batch, device=device, cache=cache,
                      progress=not quiet)
    try:
        run_panel(list(checkpoints), out, cfg, log=_log_fn(quiet))
    except _user_errors() as e:
        raise click.ClickException(str(e).splitlines()[0] if str(e) else type(e).__name__) from None


if __name__ == "__main__":
    sys.exit(main())
