"""Scoring one generator checkpoint with the judge panel: label fidelity, variety (pixel
diversity, precision / recall / density / coverage in judge features), judged-attribute
variety and morph monotonicity."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from synth.quality.panel.judges import Panel
from synth.quality.panel.settings import JUDGE_SIZE, KIND_FACTORS, PanelConfig, PanelError

__all__ = ["kind_of", "open_checkpoint", "real_reference", "evaluate_checkpoint", "rises", "MONOTONE_RHO"]


# A morph "rises" when the judged level follows the level order with Spearman rho >= 0.9.  Over
# five levels one swap of neighbours gives rho = 0.9 exactly, which scipy returns as
# 0.8999999999999998: the tolerance keeps such a morph on the side the rule means it to be.
MONOTONE_RHO = 0.9


def rises(rho: float | None) -> bool:
    """Whether a morph with Spearman ``rho`` counts as monotone (None, a flat morph: no)."""
    return rho is not None and rho >= MONOTONE_RHO - 1e-9


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
                  "monotone_fraction": float(np.mean([rises(q["rho"]) for q in seqs])) if seqs else None,
                  "rule": f"Spearman rho (level order vs judged expected level) >= {MONOTONE_RHO}",
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
