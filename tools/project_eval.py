"""Project held-out atlas faces, morph them to other ages, and score the morphs independently.

    python tools/project_eval.py --out project_eval/ [--faces 20] [--steps 500] [--modes W,W+]
                                 [--judge-age DIR] [--network checkpoints/demo-faces.ckpt]

1. Held-out faces: the atlas plan with ``--atlas-seed`` (default 11: neither the generator's
   training atlas, seed 0, nor the judge's, seed 7), the first ``--faces / 4`` subjects of each
   disease at the youngest age, drawn at 64 px exactly as ``synth data atlas`` draws them and
   resized to the generator's 32 px with Lanczos (as the dataset loader does).
2. Ground truth: the atlas draws the *same subject* (identity parameters, severity, pose,
   lighting) at the middle of every other age bracket, so each morph has a true aged face.
3. Projection (``synth.synthesis.project``, the code of ``synth project``) into W and/or W+
   for the face's own label (disease, infant); the projected_w.npz files are written and read
   back as ``synth morph --w`` reads them.
4. Morph: the identity moved to every age of its disease (:func:`identity_ws`, psi 1), both
   ways: z-anchored (``synth project``'s default) and by mean-w offsets (``--no-z-anchor``).
5. Scores: an independent ``small_cnn`` age judge (BENCHMARKS.md protocol: trained on a
   2000-face atlas with seed 7, validated on the 400 training faces; trained here unless
   ``--judge-age`` or ``OUT/judge_age`` exists); identity against the true aged face of the
   same subject (PSNR, the projector's distance, dlib descriptor distance) next to two
   baselines (the true aged faces of the *other* subjects, and the label's mean-w face), with
   rank-1 re-identification among the held-out subjects; reconstruction PSNR and distance.

Prints and writes ``OUT/project_eval.json``; ``OUT/sheet_<mode>.png`` shows targets, projections,
morphs and true aged faces.
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

MID_AGE = {"infant": 1.0, "child": 6.0, "adolescent": 15.0, "young_adult": 27.5, "older_adult": 57.5}


def held_out_faces(seed: int, per_disease: int, bracket: str = "infant"):
    """[(plan index, FaceImage)]: the first ``per_disease`` distinct subjects per disease at ``bracket``."""
    from synth.data.atlas.faces import DISEASES, plan_faces

    plan = plan_faces(max(10, 2 * per_disease), seed)
    picks, seen = [], set()
    for d in DISEASES:
        got = 0
        for i, spec in enumerate(plan):
            if got == per_disease:
                break
            if spec.subject.disease == d and spec.age == bracket and spec.subject.subject not in seen:
                seen.add(spec.subject.subject)
                picks.append((i, spec))
                got += 1
    return picks


def draw(spec, index: int, seed: int, resolution: int, age_years: float | None = None) -> np.ndarray:
    """The atlas image (64 px, PNG-rounded) of ``spec`` [at another age], resized to ``resolution``."""
    from PIL import Image

    from synth.data.atlas.draw import to_png_bytes
    from synth.data.atlas.faces import FaceImage, render_face
    from synth.data.atlas.render import _KIND_CODE

    if age_years is not None:
        spec = FaceImage(spec.subject, float(age_years))
    img = render_face(spec, 64, np.random.default_rng([int(seed), _KIND_CODE["faces"], 2, int(index)]))
    im = Image.open(io.BytesIO(to_png_bytes(img))).convert("RGB")
    if im.width != resolution:
        im = im.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def train_judge(out: Path, threads: int) -> Path:
    from synth.data.atlas import ensure_atlas

    judge_atlas = ensure_atlas("faces", per_cell=100, resolution=64, seed=7, progress=False)
    train_atlas = ensure_atlas("faces", per_cell=20, resolution=64, seed=0, progress=False)
    cmd = [sys.executable, "-m", "synth", "classify", "train", "--data", str(judge_atlas), "--val-data", str(train_atlas),
           "--target", "age", "--model", "small_cnn", "--size", "32", "--epochs", "15", "--batch", "32", "--lr", "0.003",
           "--optimizer", "adamw", "--weight-decay", "0.01", "--threads", str(threads), "--no-progress", "--out", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def pyramid(a: np.ndarray, b: np.ndarray) -> float:
    import torch

    from synth.synthesis.project import PyramidL2
    from synth.synthesis.projection.optimise import _to_image

    with torch.no_grad():
        return float(PyramidL2()(_to_image(a), _to_image(b)))


def stats(xs) -> dict:
    xs = np.asarray([x for x in xs if x is not None and np.isfinite(x)], np.float64)
    return {"mean": round(float(xs.mean()), 4), "sd": round(float(xs.std(ddof=1)), 4) if len(xs) > 1 else 0.0, "n": int(len(xs))}


def judged(judge, images: np.ndarray, target: str, levels: list[str]) -> dict:
    p = judge.probs(np.asarray(images))
    names = [n for n in judge.class_names]
    pred = [names[i] for i in p.argmax(1)]
    grade = [levels.index(x) for x in pred]
    return {"accuracy": round(float(np.mean([x == target for x in pred])), 4), "mean_grade": round(float(np.mean(grade)), 3),
            "counts": {lv: pred.count(lv) for lv in levels}}


def identity_scores(morphs, truth, mean_faces, ages, desc) -> dict:
    """Per age: the morph against the same subject's true aged face, the other subjects' and the
    label's mean-w face; rank-1 re-identification among the held-out subjects."""
    from synth.synthesis.project import psnr

    out = {}
    for lv in ages:
        m, gt = morphs[lv], truth[lv]
        n = len(m)
        pyr = np.array([[pyramid(m[k], gt[j]) for j in range(n)] for k in range(n)])
        ps = np.array([[psnr(m[k], gt[j]) for j in range(n)] for k in range(n)])
        off = ~np.eye(n, dtype=bool)
        row = {
            "psnr_same_subject": stats(np.diag(ps)),
            "psnr_other_subjects": stats(ps[off]),
            "psnr_label_mean_face": stats([psnr(mean_faces[lv][k], gt[k]) for k in range(n)]),
            "distance_same_subject": stats(np.diag(pyr)),
            "distance_other_subjects": stats(pyr[off]),
            "distance_label_mean_face": stats([pyramid(mean_faces[lv][k], gt[k]) for k in range(n)]),
            "rank1_reid_distance": round(float(np.mean(pyr.argmin(1) == np.arange(n))), 4),
        }
        if desc is not None:
            dm, dg = desc(m), desc(gt)
            dd = np.linalg.norm(dm[:, None] - dg[None], axis=-1)
            row.update({"dlib_same_subject": stats(np.diag(dd)), "dlib_other_subjects": stats(dd[off]),
                        "dlib_label_mean_face": stats(np.linalg.norm(desc(mean_faces[lv]) - dg, axis=-1)),
                        "rank1_reid_dlib": round(float(np.mean(dd.argmin(1) == np.arange(n))), 4)})
        out[lv] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("project_eval"))
    ap.add_argument("--network", type=Path, default=ROOT / "checkpoints" / "demo-faces.ckpt")
    ap.add_argument("--faces", type=int, default=20, help="Held-out faces (a multiple of 4: equal per disease).")
    ap.add_argument("--atlas-seed", type=int, default=11)
    ap.add_argument("--steps", type=int, default=500, help="synth project --steps (its default).")
    ap.add_argument("--modes", default="W,W+")
    ap.add_argument("--mean-w-samples", type=int, default=10000)
    ap.add_argument("--w-prior", type=float, default=0.0, help="synth project --w-prior (0: the StyleGAN2 projector).")
    ap.add_argument("--judge-age", type=Path, default=None, help="Age judge (synth classify train output); else trained.")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-dlib", action="store_true")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from synth.quality.fidelity import load_judges
    from synth.synthesis.engine import Renderer
    from synth.synthesis.network import network_record, open_generator
    from synth.synthesis.project import (IdentityRenderer, ProjectConfig, PyramidL2, load_projected_w, parse_label,
                                         project, render_w, save_projection)
    from synth.synthesis.render import labelled_grid, save_png

    t0 = time.time()
    c0 = time.process_time()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    judge_dir = a.judge_age or out / "judge_age"
    t_judge = time.time()
    if a.judge_age is None and not (judge_dir / "model.safetensors").is_file():
        train_judge(judge_dir, a.threads)
    t_judge = time.time() - t_judge
    judge = load_judges([judge_dir])[0]

    G, space, meta, path = open_generator(a.network, log=None)
    net = network_record(path, meta)
    R = int(G.img_resolution)
    ages = list(space.factor("age").levels)
    faces = held_out_faces(a.atlas_seed, a.faces // 4, ages[0])
    targets = np.stack([draw(s, i, a.atlas_seed, R) for i, s in faces])
    truth = {lv: np.stack([draw(s, i, a.atlas_seed, R, MID_AGE[lv]) for i, s in faces]) for lv in ages[1:]}
    truth[ages[0]] = targets
    labels = [parse_label(space, {"disease": s.subject.disease, "age": ages[0]}) for _, s in faces]
    n = len(faces)

    desc = None
    if not a.no_dlib:
        try:
            from synth.quality.identity import DlibDescriptor

            desc = DlibDescriptor()
        except Exception as e:  # noqa: BLE001 - optional measure
            print(f"dlib descriptor unavailable ({type(e).__name__}: {e}); skipped", flush=True)

    rend = Renderer(G, psi=1.0, noise_mode="const", batch=16, mean_w_samples=a.mean_w_samples)
    result: dict = {
        "network": net, "faces": n, "atlas_seed": a.atlas_seed, "age_projected": ages[0], "steps": a.steps, "w_prior": a.w_prior,
        "distance": PyramidL2.name, "judge_age": str(judge_dir), "truth_ages_years": MID_AGE,
        "judge_on_true_faces": {lv: judged(judge, truth[lv], lv, ages) for lv in ages},
    }
    # the generator's own morphs (seeds 0..n-1, psi 1) for reference: how its age labels are judged
    seed_imgs = {lv: rend.images(list(range(n)), np.stack([space.encode({"disease": s.subject.disease, "age": lv})
                                                           for _, s in faces])) for lv in ages}
    result["judge_on_seed_morphs"] = {lv: judged(judge, seed_imgs[lv], lv, ages) for lv in ages}
    mean_faces = {lv: rend.synthesize(torch.stack([rend.mean_w(space.encode({"disease": s.subject.disease, "age": lv}))
                                                   for _, s in faces])[:, None].repeat(1, G.num_ws, 1)) for lv in ages}

    t_proj = {}
    for mode in [m.strip() for m in a.modes.split(",") if m.strip()]:
        cfg = ProjectConfig(steps=a.steps, w_plus=(mode == "W+"), w_prior=a.w_prior, mean_w_samples=a.mean_w_samples)
        ts = time.time()
        idents, recon = [], []
        for k, ((i, spec), (levels, vec)) in enumerate(zip(faces, labels)):
            p = project(G, targets[k], vec, PyramidL2(), cfg, progress=False)
            folder = out / "projections" / mode.replace("+", "plus") / f"face{k:02d}_{spec.subject.subject}"
            npz = save_projection(folder, p, targets[k], space, levels, vec, net, source=f"atlas seed {a.atlas_seed} image {i}")
            ident = load_projected_w(npz, G=G, space=space, network_sha256=net["network_sha256"])
            assert np.array_equal(render_w(G, ident.w, ident.noise), p.image)
            idents.append(ident)
            recon.append(p)
            print(f"[{mode}] face {k + 1}/{n} {spec.subject.disease}: PSNR {p.initial_psnr:.1f} -> {p.psnr:.1f} dB, "
                  f"distance {p.initial_distance:.4f} -> {p.distance_value:.4f}", flush=True)
        t_proj[mode] = time.time() - ts
        transfers = {}
        for transfer in ("z-anchored", "mean-w offset"):
            ids = idents if transfer == "z-anchored" else [replace(i, z=None) for i in idents]
            assert all(i.transfer == transfer for i in ids)
            ir = IdentityRenderer(rend, ids)
            morphs = {lv: ir.images(list(range(n)), np.stack([space.encode({**ids[k].levels, "age": lv}) for k in range(n)]))
                      for lv in ages}
            assert all(np.array_equal(morphs[ages[0]][k], recon[k].image) for k in range(n))  # frame 0 = the projection
            transfers[transfer] = {"judged_age_of_morphs": {lv: judged(judge, morphs[lv], lv, ages) for lv in ages[1:]},
                                   "identity_vs_true_aged_face": identity_scores(morphs, truth, mean_faces, ages, desc)}
            if transfer == "z-anchored":
                sheet_morphs = morphs
        result[mode] = {
            "reconstruction": {
                "psnr": stats([p.psnr for p in recon]), "psnr_mean_w_start": stats([p.initial_psnr for p in recon]),
                "distance": stats([p.distance_value for p in recon]),
                "distance_mean_w_start": stats([p.initial_distance for p in recon]),
                "w_offset_sd": stats([p.w_offset_sd for p in recon]), "z_residual_sd": stats([p.z_residual for p in recon]),
                "judge_age_on_projections": judged(judge, np.stack([p.image for p in recon]), ages[0], ages),
            },
            "transfer": transfers,
            "projection_seconds_per_face": round(t_proj[mode] / n, 2),
        }
        morphs = sheet_morphs
        rows, row_labels = [], []
        for k in range(min(n, 8)):
            rows += [[targets[k], recon[k].image] + [morphs[lv][k] for lv in ages[1:]],
                     [None, None] + [truth[lv][k] for lv in ages[1:]]]
            row_labels += [faces[k][1].subject.disease, "true aged"]
        save_png(labelled_grid(rows, col_labels=["target", f"projected ({mode})"] + [f"morph {lv}" for lv in ages[1:]],
                               row_labels=row_labels, min_size=64), out / f"sheet_{mode.replace('+', 'plus')}.png")
    import resource

    child_cpu = sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime"))
    result["seconds"] = {"wall": round(time.time() - t0, 1), "cpu": round(time.process_time() - c0 + child_cpu, 1),
                         "judge_training_wall": round(t_judge, 1), "projection_wall": {k: round(v, 1) for k, v in t_proj.items()}}
    text = json.dumps(result, indent=2)
    (out / "project_eval.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
