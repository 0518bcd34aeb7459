"""Running the selected metrics for one generator and writing ``metrics.json`` + ``metrics.md``."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from synth.conditions import ConditionSpace
from synth.quality.errors import QualityError
from synth.utils.io import atomic_write_text

__all__ = ["json_safe", "MetricsConfig", "METRICS", "OUTPUTS", "run_metrics", "render_markdown", "write_outputs", "ordinal_factor",
           "resolve_kind", "judge_feature_extractor"]

METRICS = ("fidelity", "progression", "fid", "memorisation", "variety")
# Everything a run writes into its --out folder (``synth metrics --force`` removes these first).
OUTPUTS = ("metrics.json", "metrics.md", "memorisation_top.png")


@dataclass
class MetricsConfig:
    """What to measure and how many images to draw (defaults favour a quick, honest look)."""

    metrics: tuple[str, ...] = METRICS
    per_cell: int = 50  # generated images per condition cell (fidelity, KID/FID, memorisation)
    seed: int = 1000  # first seed of the per-cell images (cell i, image j uses seed + i * per_cell + j)
    morph_seeds: tuple[int, ...] = tuple(range(16))  # one morph per seed and fixed level
    steps: int = 5  # morph keyframes (the study's 1, .75, .5, .25, 0 mix)
    truncation: float = 1.0
    kind: str = "auto"  # faces (dlib identity) | skin (backbone identity) | auto
    feature_model: str = "resnet18"
    feature_size: int = 128
    feature_seed: int = 0
    pixel_size: int = 32
    kid_subsets: int = 100
    kid_subset_size: int | None = None
    top: int = 8
    prdc_k: int = 5  # nearest neighbours of the precision/recall/density/coverage balls (variety)
    batch: int = 16
    device: str = "cpu"
    mean_w_samples: int = 2000
    progress: bool = True
    extra: dict = field(default_factory=dict)


def ordinal_factor(space: ConditionSpace) -> str | None:
    f = next((f for f in space.factors if f.ordinal), None)
    return f.name if f is not None else None


def resolve_kind(kind: str, space: ConditionSpace) -> str:
    """auto: skin when the progression factor is ``stage``, faces otherwise."""
    if kind != "auto":
        return kind
    return "skin" if ordinal_factor(space) == "stage" else "faces"


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _square_resize(img, size: int) -> np.ndarray:
    from PIL import Image

    w, h = img.size
    if w != h:  # centre crop, as the classifiers and the training loader do
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def real_image(imageset, i: int, size: int) -> np.ndarray:
    return _square_resize(imageset.load_image(i), size)


def embed_real(imageset, size: int, extractor, pixel_size: int, chunk: int = 256, progress: bool = True):
    """Features, low-res pixels, cells and file names of every real image.

    Images are decoded in chunks and dropped after embedding, so a large reference set
    (tens of thousands of faces) never sits in memory at full resolution.
    """
    from synth.quality.features import pixel_features

    feats, pix, cells, names = [], [], [], []
    n = len(imageset)
    with tqdm(total=n, desc="real images", unit="img", disable=not progress, leave=False) as bar:
        for s in range(0, n, chunk):
            idx = range(s, min(n, s + chunk))
            imgs = np.stack([real_image(imageset, i, size) for i in idx])
            feats.append(extractor(imgs, desc="real features"))
            pix.append(pixel_features(imgs, pixel_size))
            cells += [imageset.cell_of(i) for i in idx]
            names += [imageset[i].file for i in idx]
            bar.update(len(idx))
    return np.concatenate(feats), np.concatenate(pix), cells, names


def _per_cell_images(renderer, space: ConditionSpace, cfg: MetricsConfig):
    cells = space.cells()
    imgs, cell_of, names = [], [], []
    for ci, cell in enumerate(tqdm(cells, desc="generate", unit="cell", disable=not cfg.progress, leave=False)):
        seeds = [cfg.seed + ci * cfg.per_cell + j for j in range(cfg.per_cell)]
        label = space.encode(dict(zip(space.names, cell)))
        imgs.append(renderer.images(seeds, np.repeat(label[None], len(seeds), 0), noise_seed=cfg.seed + ci))
        cell_of += [tuple(cell)] * len(seeds)
        names += [f"{'/'.join(cell)} seed {s}" for s in seeds]
    return np.concatenate(imgs), cell_of, names, cells


def _morphs(renderer, space: ConditionSpace, factor: str, cfg: MetricsConfig):
    """Keyframes [Z, S, H, W, 3] of morphs from the first to the last level of ``factor``."""
    from synth.synthesis.morph import render_morph, resolve_morph

    others = [f for f in space.factors if f.name != factor]
    fixed_levels: list[str | None] = [None]
    if others:
        first = others[0]
        fixed_levels = [lv for lv in first.levels if lv != first.control] or list(first.levels)
    frames, groups, ids = [], [], []
    jobs = [(lv, s) for lv in fixed_levels for s in cfg.morph_seeds]
    for lv, seed in tqdm(jobs, desc="morphs", unit="morph", disable=not cfg.progress, leave=False):
        spec = resolve_morph(space, factor, None, None, lv)
        keys, _ = render_morph(renderer, space, spec, int(seed), cfg.steps, 0)
        frames.append(keys)
        groups.append(lv)
        ids.append({"seed": int(seed), "fixed": spec.fixed})
    return np.stack(frames), groups, ids


def run_metrics(G, space: ConditionSpace, cfg: MetricsConfig, judges: Sequence = (), judge_age=None,
                imageset=None, extractor=None, out: str | Path | None = None,
                variety_judge: str | Path | None = None) -> dict:
    """Compute the metrics named in ``cfg.metrics``; returns the JSON-ready result dict.

    ``judges``/``judge_age`` are :class:`synth.quality.fidelity.Judge`; ``imageset`` the real
    training set (needed by fid, memorisation and variety); ``extractor`` a FeatureExtractor
    (default: the seeded random backbone).  With ``out``, the memorisation side-by-side PNG is
    written there.  ``variety_judge`` is a classifier checkpoint / cv folder whose penultimate
    features are the PRDC feature space of the variety metric (else ``extractor``, else the
    random backbone).
    """
    from synth.quality import fid as fidmod
    from synth.quality import memorisation as memmod
    from synth.quality.features import pixel_features, random_backbone_extractor
    from synth.quality.fidelity import condition_fidelity
    from synth.quality.identity import DLIB_SAME_PERSON, BackboneDescriptor, DlibDescriptor, identity_similarity
    from synth.quality.progression import expected_grade, progression_consistency
    from synth.synthesis.engine import Renderer

    metrics = tuple(cfg.metrics)
    judges = list(judges)
    all_judges = judges + ([judge_age] if judge_age is not None else [])
    for j in all_judges:
        j.check(space)
    if "fidelity" in metrics and not all_judges:
        raise QualityError("--metrics fidelity needs at least one --judge (a classifier trained on real images)")
    if {"fid", "memorisation", "variety"} & set(metrics) and imageset is None:
        raise QualityError("--data is needed for fid, memorisation and variety (the real training images)")
    if imageset is not None and {"fid", "memorisation", "variety"} & set(metrics) and len(imageset) < 2:
        raise QualityError(f"--data {imageset.root}: needs at least 2 images, found {len(imageset)}")
    factor = ordinal_factor(space)
    if judge_age is not None and "progression" in metrics and factor not in judge_age.factors:
        raise QualityError(f"--judge-age {judge_age.source}: judges {', '.join(judge_age.factors)}, not the "
                           f"progression factor {factor!r}")
    if cfg.per_cell < 1:
        raise QualityError(f"--per-cell {cfg.per_cell}: must be >= 1")
    if cfg.steps < 2:
        raise QualityError(f"--steps {cfg.steps}: need at least 2")

    kind = resolve_kind(cfg.kind, space)
    backbone = None

    def get_backbone():
        nonlocal backbone
        if backbone is None:
            backbone = random_backbone_extractor(cfg.feature_model, cfg.feature_size, cfg.feature_seed, cfg.device,
                                                 max(cfg.batch, 1), cfg.progress)
        return backbone

    renderer = Renderer(G, psi=cfg.truncation, noise_mode="const", batch=cfg.batch, device=cfg.device,
                        mean_w_samples=cfg.mean_w_samples)
    result: dict[str, Any] = {
        "format": "synth-metrics/1",
        "settings": {k: v for k, v in asdict(cfg).items() if k not in ("progress", "extra")} | dict(cfg.extra),
        "space": space.to_dict(),
        "resolution": int(G.img_resolution),
        "kind": kind,
        "notes": [],
    }
    result["settings"]["metrics"] = list(metrics)

    gen = gen_cells = gen_names = None
    if {"fidelity", "fid", "memorisation", "variety"} & set(metrics):
        gen, gen_cells, gen_names, _ = _per_cell_images(renderer, space, cfg)

    if "fidelity" in metrics:
        res = condition_fidelity(all_judges, gen, gen_cells, space)
        result["fidelity"] = {"judges": [{"source": j.source, "factors": list(j.factors), "classes": list(j.class_names),
                                          "n_models": j.n_models} for j in all_judges],
                              "per_cell_images": cfg.per_cell, "results": res}

    if "progression" in metrics:
        if factor is None:
            result["notes"].append("progression skipped: the space has no ordinal factor (age, stage ...)")
        else:
            frames, groups, ids = _morphs(renderer, space, factor, cfg)
            z, s = frames.shape[:2]
            flat = frames.reshape(z * s, *frames.shape[2:])
            prog: dict[str, Any] = {"factor": factor, "levels": list(space.factor(factor).levels), "n_morphs": z,
                                    "steps": s, "fixed_levels": sorted({str(g) for g in groups})}
            judge = judge_age if judge_age is not None else next((j for j in judges if factor in j.factors), None)
            if judge is None:
                prog["grade"] = None
                result["notes"].append(f"progression grade skipped: no judge for {factor!r} (--judge-age)")
            else:
                m = judge.marginals(judge.probs(flat), space)[factor]
                grades = expected_grade(m).reshape(z, s)
                prog["grade"] = progression_consistency(grades) | {"judge": judge.source}
                prog["grade"]["sequences"] = [{**ids[i], "grades": [float(x) for x in grades[i]]} for i in range(z)]
            if kind == "faces":
                desc = DlibDescriptor()
                feats = desc(flat)
                ident = identity_similarity(feats.reshape(z, s, -1), groups, same_threshold=DLIB_SAME_PERSON)
            else:
                desc = BackboneDescriptor(get_backbone())
                ident = identity_similarity(desc(flat).reshape(z, s, -1), groups)
            prog["identity"] = ident | {"descriptor": desc.name}
            if z < 2 or ident["different_z_similarity"] is None:
                result["notes"].append("identity gap needs at least 2 morph seeds (--seeds)")
            result["progression"] = prog

    if imageset is not None and {"fid", "memorisation"} & set(metrics):
        ex = extractor if extractor is not None else get_backbone()
        result["features"] = ex.describe()
        if not ex.comparable:
            result["notes"].append("FID/KID use a randomly initialised backbone (no --inception): compare runs with each "
                                   "other only, never with published numbers")
        size = int(G.img_resolution)
        real_f, real_pix, real_cells, real_names = embed_real(imageset, size, ex, cfg.pixel_size, progress=cfg.progress)
        gen_f = ex(gen, desc="generated features")
        if "fid" in metrics:
            result["fid"] = fidmod.distribution_metrics(real_f, real_cells, gen_f, gen_cells, space.cells(),
                                                        cfg.kid_subsets, cfg.kid_subset_size, cfg.feature_seed)
        if "memorisation" in metrics:
            mem = memmod.memorisation_report(gen_f, real_f, pixel_features(gen, cfg.pixel_size), real_pix,
                                             gen_names, real_names, cfg.top)
            mem["pixel_size"] = cfg.pixel_size
            if out is not None and mem["closest_pairs"]:
                pairs = mem["closest_pairs"]
                memmod.side_by_side_png(
                    [gen[p["generated_index"]] for p in pairs], [real_image(imageset, p["real_index"], size) for p in pairs],
                    [f"{p['generated']}\n{p['real']}\nfeature d={p['feature_distance']:.3g}" for p in pairs],
                    Path(out) / "memorisation_top.png")
                mem["figure"] = "memorisation_top.png"
            result["memorisation"] = mem

    if "variety" in metrics:
        if variety_judge is not None:
            vex, vsize, source = (*judge_feature_extractor(variety_judge, cfg.device, max(cfg.batch, 1), cfg.progress),
                                  "judge")
        elif extractor is not None:
            vex, vsize, source = extractor, cfg.feature_size, "inception" if extractor.comparable else "given"
        else:
            vex, vsize, source = get_backbone(), cfg.feature_size, "random"
            result["notes"].append("variety PRDC uses a randomly initialised backbone (no --judge): random features "
                                   "tell faces apart poorly, so collapse shows less there; give a --judge")
        result["variety"] = _variety(gen, gen_cells, space, imageset, int(G.img_resolution), vex, vsize, source, cfg)
        result["variety"]["features"]["judge"] = str(variety_judge) if variety_judge is not None else None
    return json_safe(result)


def judge_feature_extractor(spec: str | Path, device: str = "cpu", batch: int = 32, progress: bool = False):
    """Penultimate (pre-logits) features of a judge classifier -> ``(FeatureExtractor, input size)``.

    A judge trained on the real faces separates what matters for the labels (and much else a
    random backbone misses), so k-NN balls in its feature space read collapse far better.  Of a
    cv folder the first fold model is used: the folds' feature spaces differ and cannot be mixed.
    Images are resized (bicubic) and normalised as for the judge's predictions.
    """
    import torch

    from classifiers.checkpoint import ClassifierCheckpointError, find_checkpoints, load_classifier
    from classifiers.ensemble import normalise
    from synth.quality.features import FeatureExtractor
    from synth.quality.fidelity import resize_for_judge

    try:
        files = find_checkpoints(str(spec))
        model, meta = load_classifier(files[0], device)
    except (ClassifierCheckpointError, ValueError) as e:
        raise QualityError(f"--judge: {str(e).splitlines()[0]}") from None
    if not (callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))):
        raise QualityError(f"--judge {spec}: model {meta.get('model')!r} has no forward_features/forward_head, "
                           "so its penultimate features cannot be read")
    size, norm = int(meta["size"]), meta["normalisation"]

    def fn(x: torch.Tensor) -> torch.Tensor:
        t = resize_for_judge(x.permute(0, 2, 3, 1).cpu().numpy(), size).to(x.device)
        feats = model.forward_features(normalise(t, norm["mean"], norm["std"]))
        return model.forward_head(feats, pre_logits=True).flatten(1)

    extra = f", first of {len(files)} fold models" if len(files) > 1 else ""
    name = f"penultimate features of judge {spec} ({meta.get('model')} @ {size}px{extra})"
    return FeatureExtractor(name, False, fn, batch, device, progress), size


def _variety(gen, gen_cells, space: ConditionSpace, imageset, resolution: int, ex, pixel_size: int, source: str,
             cfg: MetricsConfig) -> dict:
    """Within-cell pixel diversity and PRDC, per cell and overall (see docs/metrics.md).

    Real images of a cell are a seeded sample of at most ``per_cell`` (PRDC needs equal set
    sizes to be read against its real-vs-real values, and this bounds memory).  Pixels of one
    cell at a time, so a large judge input size never holds every cell's pixels at once.
    """
    from synth.quality.features import pixel_features
    from synth.quality.variety import mean_pairwise_distance, prdc

    k = cfg.prdc_k
    rng = np.random.default_rng(cfg.feature_seed)
    real_idx: dict[tuple, list[int]] = {}
    for i in range(len(imageset)):
        real_idx.setdefault(tuple(imageset.cell_of(i)), []).append(i)
    gen_idx: dict[tuple, list[int]] = {}
    for j, c in enumerate(gen_cells):
        gen_idx.setdefault(tuple(c), []).append(j)
    gen_f = ex(gen, desc="variety features")
    per_cell, pool_real, pool_gen = {}, [], []
    for cell in tqdm(space.cells(), desc="variety", unit="cell", disable=not cfg.progress, leave=False):
        cell = tuple(cell)
        gi, ri = gen_idx.get(cell, []), real_idx.get(cell, [])
        e: dict[str, Any] = {"n_real": len(ri), "n_generated": len(gi)}
        if len(ri) > cfg.per_cell:
            ri = sorted(rng.choice(ri, cfg.per_cell, replace=False).tolist())
        e["n_real_used"] = len(ri)
        if ri and gi:
            real = np.stack([real_image(imageset, i, resolution) for i in ri])
            if len(ri) >= 2 and len(gi) >= 2:
                d_real = mean_pairwise_distance(pixel_features(real, pixel_size))
                d_gen = mean_pairwise_distance(pixel_features(gen[gi], pixel_size))
                e |= {"pixel_distance_real": d_real, "pixel_distance_generated": d_gen,
                      "pixel_diversity": d_gen / d_real if d_real > 0 else None}
            rf, gf = ex(real, desc="variety features"), gen_f[gi]
            n = min(len(rf), len(gf))
            pool_real.append(rf)
            pool_gen.append(gf[rng.permutation(len(gf))[:n]])  # the pool matches the real cell mix
            if n > k:
                e["prdc"] = prdc(rf[rng.permutation(len(rf))[:n]], gf[rng.permutation(len(gf))[:n]], k) | {"n": n}
        if "prdc" not in e:
            e["note"] = f"PRDC needs more than k={k} real and generated images in the cell"
        per_cell["|".join(cell)] = e
    ratios = {c: e["pixel_diversity"] for c, e in per_cell.items() if e.get("pixel_diversity") is not None}
    worst = min(ratios, key=ratios.get) if ratios else None
    out: dict[str, Any] = {
        "features": {"name": ex.name, "source": source}, "k": k, "pixel_size": pixel_size,
        "pixel_diversity": {"mean": float(np.mean(list(ratios.values()))) if ratios else None,
                            "min": ratios[worst] if worst else None, "worst_cell": worst, "n_cells": len(ratios)},
    }
    # Overall: real half A against a generated set of the same size, and against real half B as
    # the reference a perfect generator would reach with these set sizes and features.
    real = np.concatenate(pool_real) if pool_real else np.zeros((0, 1))
    gen_pool = np.concatenate(pool_gen) if pool_gen else np.zeros((0, 1))
    h = len(real) // 2
    if h > k:
        perm = rng.permutation(len(real))
        a, b = real[perm[:h]], real[perm[h : 2 * h]]
        out["overall"] = prdc(a, gen_pool[rng.permutation(len(gen_pool))[:h]], k) | {"n": h}
        out["real_reference"] = prdc(a, b, k) | {"n": h}
    else:
        out["overall"] = out["real_reference"] = None
        out["note"] = f"overall PRDC needs more than 2 * k = {2 * k} real images across cells, found {len(real)}"
    out["per_cell"] = per_cell
    return out


# ----------------------------------------------------------------------------------------
# Markdown


def _f(v, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{nd}f}"
    return str(v)


def _cell(key: str) -> str:
    return key.replace("|", " / ")  # "|" would split a Markdown table cell


def render_markdown(r: dict) -> str:
    s = r["settings"]
    lines = ["# Generator quality metrics", "",
             f"- network: `{s.get('network', '?')}` ({r['resolution']} px"
             + (f", {s['network_kimg']:g} kimg" if isinstance(s.get("network_kimg"), (int, float)) else "")
             + (f", SHA-256 `{s['network_sha256']}`" if s.get("network_sha256") else "")
             + f"), truncation psi {s['truncation']}",
             f"- factors: {', '.join(f['name'] for f in r['space']['factors'])}; images per cell: {s['per_cell']}; "
             f"kind: {r['kind']}"]
    if "features" in r:
        lines.append(f"- feature extractor: {r['features']['name']}")
    for n in r.get("notes", []):
        lines.append(f"- note: {n}")
    if "fidelity" in r:
        res_list = r["fidelity"]["results"]
        lines += ["", "## Condition fidelity (judge accuracy on generated images)", ""]
        for k, res in enumerate(res_list, 1):
            lines.append(f"- [{k}] **{res['factor']}** judged by `{res['judge']}` ({res['n_models']} model(s)): "
                         f"accuracy {_f(res['accuracy'])} on {res['n']} images")
        if res_list:
            head = " | ".join(f"[{k}] {res['factor']}" for k, res in enumerate(res_list, 1))
            lines += ["", "Per cell: accuracy (mean probability of the asked-for level).", "",
                      f"| cell | n | {head} |", "|---|---|" + "---|" * len(res_list)]
            for cell in res_list[0]["per_cell"]:
                vals = []
                for res in res_list:
                    e = res["per_cell"][cell]
                    vals.append(f"{_f(e['accuracy'])} ({_f(e['mean_p_true'], 2)})")
                lines.append(f"| {_cell(cell)} | {res_list[0]['per_cell'][cell]['n']} | {' | '.join(vals)} |")
    if "progression" in r:
        p = r["progression"]
        lines += ["", f"## Progression consistency ({p['factor']}: {' -> '.join(p['levels'])})", "",
                  f"{p['n_morphs']} morphs x {p['steps']} steps (fixed: {', '.join(p['fixed_levels']) or '-'})", ""]
        g = p.get("grade")
        if g:
            lines += [f"- monotone expected grade: {_f(g['monotone_fraction'])} of sequences",
                      f"- Spearman rho (step vs grade): mean {_f(g['mean_rho'])}, median {_f(g['median_rho'])} "
                      f"({g['n_defined']} defined, {g['n_flat']} flat)",
                      f"- mean grade per step: {', '.join(_f(x, 2) for x in g.get('mean_grade_per_step', []))}"]
        i = p["identity"]
        lines += [f"- identity ({i['descriptor']}): same z {_f(i['same_z_similarity'])}, different z "
                  f"{_f(i['different_z_similarity'])}, gap {_f(i['gap'])} (cosine similarity)"]
        if "same_z_distance" in i:
            lines.append(f"- dlib distance: same z {_f(i['same_z_distance'])}, different z {_f(i['different_z_distance'])}; "
                         f"pairs under {i['threshold']}: same z {_f(i['same_z_under_threshold'])}, different z "
                         f"{_f(i['different_z_under_threshold'])}")
    if "fid" in r:
        o = r["fid"]["overall"]
        lines += ["", "## KID / FID", "", "| cell | n real | n generated | KID (x1e3) | KID subset | FID |", "|---|---|---|---|---|---|"]
        rows = [("overall", o)] + list(r["fid"]["per_cell"].items())
        for cell, e in rows:
            kid = f"{e['kid'] * 1e3:.3f} +- {e['kid_std'] * 1e3:.3f}" if "kid" in e else "-"
            lines.append(f"| {_cell(cell)} | {e['n_real']} | {e['n_generated']} | {kid} | {e.get('kid_subset_size', '-')} | "
                         f"{_f(e.get('fid'))} |")
        lines += ["", "FID is biased for small sets; prefer KID for rare cells (subset size shown)."]
    if "memorisation" in r:
        m = r["memorisation"]
        lines += ["", "## Memorisation (nearest real training image)", "",
                  f"{m['n_generated']} generated vs {m['n_real']} real images.", "",
                  "| space | generated NN min | generated NN median | real-real NN p5 | real-real NN median | "
                  "share below real p5 |", "|---|---|---|---|---|---|"]
        for name in ("feature", "pixel"):
            e = m[name]
            lines.append(f"| {name} | {_f(e['generated_nn_min'])} | {_f(e['generated_nn_median'])} | "
                         f"{_f(e.get('real_nn_p5'))} | {_f(e.get('real_nn_median'))} | {_f(e.get('fraction_below_real_p5'))} |")
        lines += ["", "Closest pairs (feature space):", "", "| generated | nearest real | feature distance | pixel distance to its own pixel NN |", "|---|---|---|---|"]
        for p in m["closest_pairs"]:
            lines.append(f"| {_cell(p['generated'])} | {p['real']} | {_f(p['feature_distance'])} | {_f(p['pixel_distance'])} |")
        if m.get("figure"):
            lines += ["", f"![closest pairs]({m['figure']})"]
    if "variety" in r:
        lines += _variety_markdown(r["variety"])
    return "\n".join(lines) + "\n"


def _variety_markdown(v: dict) -> list[str]:
    pd = v["pixel_diversity"]
    worst = f" ({_cell(pd['worst_cell'])})" if pd.get("worst_cell") else ""
    lines = ["", "## Variety (many faces per cell, or one?)", "",
             f"- pixel diversity at {v['pixel_size']} px (generated / real mean pairwise distance within a cell; "
             f"1 = as varied as the data, near 0 = one image per cell): mean {_f(pd['mean'])}, "
             f"min {_f(pd['min'])}{worst} over {pd['n_cells']} cells",
             f"- PRDC (k = {v['k']}) features: {v['features']['name']}"]
    if v["features"]["source"] == "random":
        lines.append("- **random features are weak for variety**: a random backbone tells faces apart poorly; "
                     "give a --judge for PRDC in a trained feature space")
    keys = ("precision", "recall", "density", "coverage")
    lines += ["", "| set | n | precision | recall | density | coverage |", "|---|---|---|---|---|---|"]
    for name, e in (("generated (overall)", v.get("overall")), ("real vs real (reference)", v.get("real_reference"))):
        if e:
            lines.append(f"| {name} | {e['n']} | " + " | ".join(_f(e[q]) for q in keys) + " |")
    if v.get("note"):
        lines.append(f"| overall | - | {v['note']} | | | |")
    lines += ["", "Per cell (real images sampled to at most the generated count):", "",
              "| cell | n real (used / all) | n generated | pixel diversity | precision | recall | density "
              "| coverage |",
              "|---|---|---|---|---|---|---|---|"]
    for cell, e in v["per_cell"].items():
        p = e.get("prdc") or {}
        lines.append(f"| {_cell(cell)} | {e['n_real_used']} / {e['n_real']} | {e['n_generated']} | "
                     f"{_f(e.get('pixel_diversity'))} | " + " | ".join(_f(p.get(q)) for q in keys) + " |")
    lines += ["", "Real against real reads coverage about 0.9 and pixel diversity 1; a collapsed cell keeps its "
              "precision but its recall, coverage and pixel diversity fall toward 0."]
    return lines


def write_outputs(result: dict, out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    jp, mp = out / "metrics.json", out / "metrics.md"
    atomic_write_text(jp, json.dumps(result, indent=2, allow_nan=False) + "\n")
    atomic_write_text(mp, render_markdown(result))
    return jp, mp
