"""Training throughput of the classifier trainer against a plain timm loop (JSON report).

For each model and input size, both loops train the same architecture from random init
on random batches: first ``--warmup`` untimed steps, then ``--iters`` timed steps.

* ``trainer``: :class:`classifiers.train.Trainer.step` - uint8 batch, normalisation,
  channels_last (as configured), soft-label weighted CE, AdamW, warm-up/cosine schedule.
* ``plain``: the ~20-line loop everybody writes (float batch, CE, AdamW, step).

The ratio trainer/plain shows the overhead (or gain) of the trainer's extras.  CPU numbers
depend heavily on what else runs on the machine; compare ratios from the same run only.

    python tools/bench_classifiers.py --out bench_classifiers.json
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _plain_loop(name: str, size: int, batch: int, classes: int, warmup: int, iters: int, device) -> float:
    import timm
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=classes).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return batch * iters / (time.perf_counter() - t0)


def _trainer_loop(name: str, size: int, batch: int, classes: int, warmup: int, iters: int, device, channels_last: bool) -> float:
    import torch

    from classifiers.train import TrainConfig, Trainer

    torch.manual_seed(0)
    cfg = TrainConfig(model=name, size=size, batch=batch, lr=1e-4, optimizer="adamw", device=str(device),
                      channels_last=channels_last, progress=False)
    tr = Trainer(cfg, classes, None, total_steps=warmup + iters, warmup_steps=1)
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    t = torch.nn.functional.one_hot(torch.randint(0, classes, (batch,)), classes).float()
    w = torch.ones(batch)
    for _ in range(warmup):
        tr.step(x, t, w)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        tr.step(x, t, w)
    _sync(device)
    return batch * iters / (time.perf_counter() - t0)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@click.command()
@click.option("--models", default="efficientnet_b0,efficientnet_b4", show_default=True)
@click.option("--sizes", default="64,128", show_default=True)
@click.option("--batch", default=16, show_default=True, type=int)
@click.option("--warmup", default=2, show_default=True, type=int, help="Untimed steps first.")
@click.option("--iters", default=4, show_default=True, type=int, help="Timed steps.")
@click.option("--threads", default=2, show_default=True, type=int)
@click.option("--device", default="cpu", show_default=True)
@click.option("--nchw", is_flag=True, help="Also time the trainer without channels_last.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON file (default: stdout only).")
def main(models, sizes, batch, warmup, iters, threads, device, nchw, out) -> None:
    """Images/s of the classifier trainer's step vs a plain timm loop."""
    import timm
    import torch

    from synth.utils.io import atomic_write_text

    torch.set_num_threads(threads)
    rows = []
    for name in [m.strip() for m in models.split(",") if m.strip()]:
        for size in [int(s) for s in sizes.split(",")]:
            plain = _plain_loop(name, size, batch, 4, warmup, iters, device)
            trainer = _trainer_loop(name, size, batch, 4, warmup, iters, device, channels_last=True)
            row = {
                "model": name, "size": size, "batch": batch,
                "plain_img_s": round(plain, 2),
                "trainer_img_s": round(trainer, 2),
                "ratio_trainer_over_plain": round(trainer / plain, 3),
            }
            if nchw:  # the trainer without channels_last, to see what that layout buys
                trainer_nchw = _trainer_loop(name, size, batch, 4, warmup, iters, device, channels_last=False)
                row["trainer_nchw_img_s"] = round(trainer_nchw, 2)
                row["ratio_trainer_nchw_over_plain"] = round(trainer_nchw / plain, 3)
            rows.append(row)
            click.echo(json.dumps(row), err=True)
    report = {
        "bench": "classifier training throughput (random init, random data)",
        "device": str(device),
        "threads": threads,
        "warmup_steps": warmup,
        "timed_steps": iters,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "machine": platform.machine(),
        "note": "shared CPU: absolute numbers vary with load; compare ratios within one run",
        "results": rows,
    }
    text = json.dumps(report, indent=2) + "\n"
    if out is not None:
        atomic_write_text(out, text)
    click.echo(text)


if __name__ == "__main__":
    main()
