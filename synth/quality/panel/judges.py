"""The judge panel's data and judges: two atlases of new subjects (the judges' training set
and a second real set), per-factor judges of several architectures and seeds, and attribute
judges; atlases and trained judges are cached under ``PanelConfig.cache_root()``."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synth.quality.panel.settings import (BATCH, INFORMATIVE, JUDGE_SIZE, KIND_FACTORS, PANEL_VERSION, WEIGHT_DECAY,
                                          PanelConfig, PanelError, attributes_of)

__all__ = ["RealSet", "ensure_real_set", "PanelJudge", "Panel", "build_panel"]


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
