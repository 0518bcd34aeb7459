#!/usr/bin/env python
"""Calibrate the synthetic atlas: how hard are its labels for a small CNN?

Renders a training atlas and a larger held-out atlas with a different seed, trains a
small CNN from scratch (two heads: disease and age group) on CPU, and reports held-out
accuracies as JSON.  The atlas is meant to be learnable but not trivial: disease
accuracy roughly 55-85 % (chance 25 %), age clearly above chance (20 %).

    python tools/calibrate_atlas.py --out calibration.json
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from synth.data.atlas import atlas_space, render_atlas  # noqa: E402
from synth.utils.io import atomic_write_text  # noqa: E402


def load_atlas(path: Path, factors) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as [N, 3, R, R] in [-1, 1] and level indices as [N, n_factors]."""
    import csv

    with open(path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    x = np.stack([np.asarray(Image.open(path / r["file"]).convert("RGB")) for r in rows])
    x = torch.from_numpy(x).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    y = torch.tensor([[f.index(r[f.name]) for f in factors] for r in rows])
    return x, y


class MultiHead(nn.Module):
    """The registered ``small_cnn`` backbone (classifiers/small_cnn.py) with one linear head
    per factor, so every factor is read off the same features."""

    def __init__(self, head_sizes, width: int = 16):
        super().__init__()
        from classifiers.small_cnn import SmallCNN

        self.backbone = SmallCNN(num_classes=0, width=width, drop_rate=0.2)
        self.heads = nn.ModuleList(nn.Linear(self.backbone.num_features, n) for n in head_sizes)

    def forward(self, x):
        h = self.backbone(x)
        return [head(h) for head in self.heads]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # flips and small shifts: the labels do not depend on either
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = max(1, x.shape[-1] // 16)
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return xp[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]


def evaluate(model, x, y, factors, batch=200) -> dict:
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            preds.append(torch.stack([o.argmax(1) for o in model(x[i:i + batch])], dim=1))
    p = torch.cat(preds)
    out: dict = {}
    for j, f in enumerate(factors):
        t, q = y[:, j], p[:, j]
        cm = torch.zeros(f.size, f.size, dtype=torch.long)
        for a, b in zip(t.tolist(), q.tolist()):
            cm[a, b] += 1
        out[f"{f.name}_accuracy"] = round(float((q == t).float().mean()), 4)
        if f.ordinal:
            out[f"{f.name}_within_one_level"] = round(float(((q - t).abs() <= 1).float().mean()), 4)
        out[f"{f.name}_recall"] = {lv: round(float((q[t == i] == i).float().mean()), 4) for i, lv in enumerate(f.levels)}
        out[f"{f.name}_confusion"] = {"rows_true_cols_pred": list(f.levels), "matrix": cm.tolist()}
    names = [f.name for f in factors]
    if "disease" in names and "age" in names:
        d, a = names.index("disease"), names.index("age")
        hit = p[:, d] == y[:, d]
        out["disease_accuracy_by_age"] = {
            lv: round(float(hit[y[:, a] == i].float().mean()), 4) for i, lv in enumerate(factors[a].levels)
        }
    return out


@click.command()
@click.option("--kind", type=click.Choice(["faces", "skin"]), default="faces", show_default=True)
@click.option("--train-per-cell", default=20, show_default=True, help="Training atlas images per label cell.")
@click.option("--test-per-cell", default=100, show_default=True, help="Held-out atlas images per cell.")
@click.option("--resolution", default=64, show_default=True, help="Atlas resolution.")
@click.option("--train-seed", default=0, show_default=True)
@click.option("--test-seed", default=1, show_default=True)
@click.option("--epochs", default=40, show_default=True, help="Training epochs over the training atlas.")
@click.option("--batch", default=32, show_default=True)
@click.option("--lr", default=2e-3, show_default=True)
@click.option("--width", default=16, show_default=True, help="CNN width (channels of the first stage).")
@click.option("--threads", default=1, show_default=True,
              help="torch CPU threads (1 is fastest on a busy machine: OpenMP threads spin-wait).")
@click.option("--seed", default=0, show_default=True, help="Training seed.")
@click.option("--work-dir", type=click.Path(file_okay=False), default=None,
              help="Where to render the atlases (default: a temporary folder, removed afterwards).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here too.")
def main(kind, train_per_cell, test_per_cell, resolution, train_seed, test_seed, epochs, batch, lr, width, threads, seed,
         work_dir, out):
    """Train a small CNN on a rendered atlas and report held-out accuracy for every factor
    (faces: disease and age group; skin: stage)."""
    if train_seed == test_seed:
        raise click.UsageError("--train-seed and --test-seed must differ (the held-out atlas must hold new subjects)")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        render_atlas(tmp / "train", kind, train_per_cell, resolution, train_seed, progress=False)
        render_atlas(tmp / "test", kind, test_per_cell, resolution, test_seed, progress=False)
        render_s = time.perf_counter() - t0
        factors = atlas_space(kind).factors
        xtr, ytr = load_atlas(tmp / "train", factors)
        xte, yte = load_atlas(tmp / "test", factors)

    model = MultiHead([f.size for f in factors], width)
    steps_per_epoch = (len(xtr) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in tqdm(range(epochs), desc="train", unit="epoch"):
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            outs = model(augment(xtr[idx], gen))
            loss = sum(F.cross_entropy(o, ytr[idx, j]) for j, o in enumerate(outs))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    train_s = time.perf_counter() - t0
    train_eval = evaluate(model, xtr, ytr, factors)
    report = {
        "train_images": len(xtr),
        "test_images": len(xte),
        "resolution": resolution,
        "train_seed": train_seed,
        "test_seed": test_seed,
        "epochs": epochs,
        "width": width,
        "threads": threads,
        "seed": seed,
        "kind": kind,
        "chance": {f.name: round(1.0 / f.size, 4) for f in factors},
        **evaluate(model, xte, yte, factors),
        "train_accuracy": {f.name: train_eval[f"{f.name}_accuracy"] for f in factors},
        "render_seconds": round(render_s, 1),
        "train_seconds": round(train_s, 1),
    }
    text = json.dumps(report, indent=2)
    if out:
        atomic_write_text(out, text + "\n")
    click.echo(text)


if __name__ == "__main__":
    main()
