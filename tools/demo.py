"""`make demo`: the whole story on the built-in face atlas, on a CPU, in minutes.

Each step is one `synth` command, printed before it runs, so the demo doubles as a
tutorial.  Outputs go to ``demo_out/`` (or ``--out``); the final lines say what to look at.

    python tools/demo.py [--out demo_out] [--quick]
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synth.synthesis.network import DEMO_CHECKPOINT, newest_snapshot  # noqa: E402

BUNDLED = ROOT / DEMO_CHECKPOINT


def run(step: str, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "synth", *args]
    print(f"\n=== {step}\n$ synth {' '.join(shlex.quote(a) for a in args)}", flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"demo: step '{step}' failed with exit code {res.returncode}")
    print(f"--- {step}: {time.time() - t0:.0f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="Output folder (replaced).")
    ap.add_argument("--quick", action="store_true", help="Smallest settings (a smoke test of every step).")
    a = ap.parse_args()
    out = (ROOT / a.out).resolve()
    quick = a.quick
    atlas = out / "atlas"
    t_start = time.time()

    run("1. render the synthetic face atlas (4 conditions x 5 age groups, ground truth known)",
        ["data", "atlas", str(atlas), "--kind", "faces", "--per-cell", "20", "--resolution", "64", "--seed", "0", "--force"])
    run("2. check the dataset and print image counts per condition cell", ["data", "check", str(atlas)])

    runs = out / "runs"
    kimg = "0.25" if quick else "2"
    run("3. train a conditional StyleGAN2-ADA with a factored disease x age embedding (short CPU run)",
        ["train", "--data", str(atlas), "--cond", "disease,age", "--preset", "cpu", "--resolution", "32",
         "--kimg", kimg, "--tick", "0.25" if quick else "0.5", "--snap", "100", "--out", str(runs), "--no-progress"])
    trained = newest_snapshot(runs)
    network = BUNDLED if BUNDLED.is_file() else trained
    if network is None:
        sys.exit("demo: training wrote no snapshot")
    print(f"\nGenerator used for the products below: {network.relative_to(ROOT) if network.is_relative_to(ROOT) else network}"
          + (" (bundled demo checkpoint, trained longer)" if network == BUNDLED else " (the short run above)"))

    per_cell = "1" if quick else "3"
    run("4. generate every synthetic image type with a manifest (soft labels for blends)",
        ["generate", "--network", str(network), "--type", "all", "--per-cell", per_cell, "--out", str(out / "synthetic"),
         "--force", "--mean-w-samples", "500"])
    run("5. morph identities from infant to older adult (strip, GIF, MP4, contact sheet)",
        ["morph", "--network", str(network), "--from", "infant", "--to", "older_adult", "--disease", "syndrome_a",
         "--seeds", "0-3", "--frames", "12" if quick else "40", "--out", str(out / "morphs"), "--mean-w-samples", "500"])
    run("6. build a teaching gallery and a quiz with an answer key",
        ["teach", "make", "--network", str(network), "--per-cell", "1" if quick else "2", "--quiz", "--out", str(out / "teach"),
         "--mean-w-samples", "500"])
    # small_cnn: timm's ImageNet architectures learn little from 400 images without
    # pretrained weights; this small registered CNN does (see BENCHMARKS.md).
    clf = ["--model", "small_cnn", "--size", "32", "--batch", "32", "--lr", "0.003", "--optimizer", "adamw",
           "--weight-decay", "0.01", "--no-progress"]
    epochs = "1" if quick else "15"
    run("7. cross-validate a small disease classifier on real images (mean +- SD over folds, per-cell table)",
        ["classify", "cv", "--data", str(atlas), "--target", "disease", "--epochs", epochs, "--folds", "5", *clf,
         "--out", str(out / "cv")])
    run("8. train an age-group judge on real images (scores the morphs' age progression below)",
        ["classify", "train", "--data", str(atlas), "--target", "age", "--epochs", epochs, *clf,
         "--out", str(out / "judge_age")])
    run("9. quality metrics: judge accuracy on generated images, morph monotonicity, KID/FID, memorisation",
        ["metrics", "--network", str(network), "--data", str(atlas), "--judge", str(out / "cv"),
         "--judge-age", str(out / "judge_age"), "--per-cell", "2" if quick else "10", "--seeds", "0-7",
         "--truncation", "0.6", "--kid-subsets", "20", "--mean-w-samples", "500", "--out", str(out / "metrics"),
         "--quiet"])
    run("10. a small ablation: real only, its step-matched control, real + unrelated, real + age progression",
        ["ablate", "--data", str(atlas), "--network", str(network), "--types", "unrelated,age_progression",
         "--folds", "3", "--epochs", epochs, *clf, "--out", str(out / "ablation"), "--force"])

    print(f"\nDemo finished in {(time.time() - t_start) / 60:.1f} min. Look at:")
    for rel, what in [
        ("atlas/", "the rendered atlas (labels.csv holds the ground truth)"),
        ("runs/", "the training run: options.json, stats.jsonl, image grids by disease x age"),
        ("synthetic/", "generated images of each type + manifest.csv"),
        ("morphs/contact_sheet.png", "age progression of four identities (GIF/MP4 per seed beside it)"),
        ("teach/index.html", "the teaching gallery (quiz/ and answer_key.csv for the quiz)"),
        ("cv/", "cross-validation metrics, per-cell accuracy and confusion matrices"),
        ("metrics/metrics.md", "judge accuracy on generated faces, morph monotonicity, KID/FID (the judges saw "
                               "the generator's training faces, so these flatter it: see BENCHMARKS.md)"),
        ("ablation/report.md", "gain of each synthetic type over real-only and over the step-matched control "
                               "real_matched, with CIs (3 folds: wide by design)"),
    ]:
        print(f"  {out / rel}  -  {what}")


if __name__ == "__main__":
    main()
