"""Training and generation throughput of the conditional StyleGAN2-ADA (prints JSON).

    python tools/bench.py train --resolution 32 --batch 16 --channel-base 4096 --channel-max 128 --map-layers 2
    python tools/bench.py generate --resolution 64 --batch 16
    python tools/bench.py all --out bench.json

``train`` runs full training minibatches through the real training loop (G main, G reg every
4, D main, D reg every 16, ADA on at a fixed p = 0.2, EMA) on a conditional model with
c_dim 9 (disease 4 x age 5); ``generate`` times no-grad generation with the same config.
Both report images/s (wall clock), images per CPU-second (``img_per_cpu_s``: with
``--threads 1`` this approximates the single-core speed even on a machine shared with other
jobs) and peak memory (RSS on CPU, max allocated on CUDA).
"""
from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _bench_dataset(root: Path, resolution: int, seed: int = 0):
    """One random image per disease x age cell (c_dim = 4 + 5 = 9)."""
    from PIL import Image

    from synth.conditions import KNOWN_LEVELS
    from synth.data.dataset import open_dataset

    rng = np.random.default_rng(seed)
    lines = ["file,disease,age"]
    for d in KNOWN_LEVELS["disease"]:
        for a in KNOWN_LEVELS["age"]:
            name = f"{d}-{a}.png"
            Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(root / name)
            lines.append(f"{name},{d},{a}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return open_dataset(root, cond=["disease", "age"])


def _options(resolution, batch, channel_base, channel_max, map_layers, device, precision, z_dim):
    from synth.training.training_loop import TrainingOptions

    return TrainingOptions(
        data=None, cond=["disease", "age"], resolution=resolution, batch=batch, channel_base=channel_base,
        channel_max=channel_max, map_layers=map_layers, mbstd_group=min(4, batch), z_dim=z_dim, w_dim=z_dim,
        aug="fixed", p=0.2, device=device, precision=precision, progress=False,
        conv_clamp=256.0 if precision != "fp32" else None,
    )


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_steps(trainer, iters: int, warmup: int, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``iters`` training minibatches after ``warmup`` untimed ones."""
    import torch

    for _ in range(warmup):
        trainer.step()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        trainer.step()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_train(resolution=32, batch=16, channel_base=4096, channel_max=128, map_layers=2, iters=16, warmup=2,
                device="cpu", precision="fp32", z_dim=512, seed=0) -> dict:
    from synth.training.stats import peak_memory_mb
    from synth.training.training_loop import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        imageset = _bench_dataset(Path(tmp), resolution)
        opts = _options(resolution, batch, channel_base, channel_max, map_layers, device, precision, z_dim)
        opts.seed = seed
        t = Trainer(opts, None, imageset=imageset)
        # Any 16 consecutive minibatches hold 4 G-reg and 1 D-reg passes: use --iters 16k
        # for a representative mix of lazy phases.
        dt, cpu = _time_steps(t, iters, warmup, device)
        return {
            "mode": "train", "resolution": resolution, "batch": batch, "iters": iters,
            "img_per_s": round(iters * batch / dt, 2), "sec_per_kimg": round(dt / (iters * batch) * 1000, 2),
            "img_per_cpu_s": round(iters * batch / cpu, 2),
            "peak_mem_mb": round(peak_memory_mb(device), 1),
            "G_params": sum(p.numel() for p in t.G.parameters()), "D_params": sum(p.numel() for p in t.D.parameters()),
        }


def preset_options(name: str, resolution: int, device: str = "cpu"):
    """TrainingOptions of preset ``name`` exactly as ``synth train --preset NAME`` resolves them."""
    from synth.training.cli import resolve_options, train

    # Every option at its CLI default, then the preset, a fixed augment p and no monitoring.
    params = {p.name: (() if p.multiple else p.default if isinstance(p.default, bool) else False
                       if getattr(p, "is_flag", False) else p.default) for p in train.params}
    params.update(preset=name, resolution=resolution, device=device, aug="fixed", p=0.2, no_progress=True)
    o = resolve_options(params, set())
    o.progress = False
    return o


def bench_preset(preset="cpu", resolution=32, iters=32, warmup=4, device="cpu", seed=0, **overrides) -> dict:
    """Training minibatches of a preset (its batch, widths, regularisers), on the bench dataset."""
    from synth.training.stats import peak_memory_mb
    from synth.training.training_loop import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        imageset = _bench_dataset(Path(tmp), resolution)
        opts = preset_options(preset, resolution, device)
        for k, v in overrides.items():
            setattr(opts, k, v)
        t = Trainer(opts, None, imageset=imageset)
        dt, cpu = _time_steps(t, iters, warmup, device)
        n = iters * opts.batch
        return {
            "mode": "preset", "preset": preset, **({"overrides": overrides} if overrides else {}),
            "resolution": resolution, "batch": opts.batch, "iters": iters,
            "img_per_s": round(n / dt, 2), "sec_per_kimg": round(dt / n * 1000, 2), "img_per_cpu_s": round(n / cpu, 2),
            "peak_mem_mb": round(peak_memory_mb(device), 1),
            "G_params": sum(p.numel() for p in t.G.parameters()), "D_params": sum(p.numel() for p in t.D.parameters()),
        }


def bench_generate(resolution=32, batch=16, channel_base=4096, channel_max=128, map_layers=2, iters=16, warmup=2,
                   device="cpu", precision="fp32", z_dim=512, seed=0) -> dict:
    import torch

    from synth.conditions import ConditionSpace
    from synth.networks import Generator
    from synth.training.stats import peak_memory_mb

    torch.manual_seed(seed)
    space = ConditionSpace.default(["disease", "age"])
    G = Generator(z_dim=z_dim, w_dim=z_dim, space=space, img_resolution=resolution, img_channels=3,
                  mapping_kwargs={"num_layers": map_layers},
                  synthesis_kwargs={"channel_base": channel_base, "channel_max": channel_max}).eval().requires_grad_(False).to(device)
    cells = torch.from_numpy(np.stack([space.encode(dict(zip(space.names, c))) for c in space.cells()]))
    c = cells[torch.arange(batch) % len(cells)].to(device)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else torch.autocast("cuda", enabled=False) if device.startswith("cuda") else None

    def run():
        z = torch.randn(batch, z_dim, device=device)
        if ctx is None:
            return G(z, c, noise_mode="random")
        with ctx:
            return G(z, c, noise_mode="random")

    with torch.no_grad():
        for _ in range(warmup):
            run()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(iters):
            run()
        _sync(device)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"mode": "generate", "resolution": resolution, "batch": batch, "iters": iters,
            "img_per_s": round(iters * batch / dt, 2), "img_per_cpu_s": round(iters * batch / cpu, 2),
            "peak_mem_mb": round(peak_memory_mb(device), 1)}


def _env(threads: int, device: str) -> dict:
    import torch

    return {"torch": torch.__version__, "threads": threads, "device": device, "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name() if device.startswith("cuda") else None}


def _common(f):
    f = click.option("--resolution", type=int, default=32, show_default=True)(f)
    f = click.option("--batch", type=int, default=16, show_default=True)(f)
    f = click.option("--channel-base", type=int, default=4096, show_default=True)(f)
    f = click.option("--channel-max", type=int, default=128, show_default=True)(f)
    f = click.option("--map-layers", type=int, default=2, show_default=True)(f)
    f = click.option("--z-dim", type=int, default=512, show_default=True, help="z and w width")(f)
    f = click.option("--iters", type=int, default=16, show_default=True, help="timed minibatches")(f)
    f = click.option("--warmup", type=int, default=2, show_default=True)(f)
    f = click.option("--threads", type=int, default=2, show_default=True, help="torch CPU threads")(f)
    f = click.option("--device", default="cpu", show_default=True)(f)
    f = click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)(f)
    return f


@click.group()
def cli() -> None:
    """Throughput benchmarks for the training engine (JSON on stdout)."""


def _setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


@cli.command()
@_common
def train(threads, **kw) -> None:
    """Full training minibatches per second (G/D main + lazy regularisers + ADA p=0.2)."""
    _setup(threads)
    click.echo(json.dumps({**bench_train(**kw), "env": _env(threads, kw["device"])}, indent=2))


@cli.command()
@_common
def generate(threads, **kw) -> None:
    """No-grad generation images per second."""
    _setup(threads)
    kw.pop("precision") if kw["device"] == "cpu" else None
    click.echo(json.dumps({**bench_generate(**kw), "env": _env(threads, kw["device"])}, indent=2))


@cli.command()
@click.option("--preset", "presets", multiple=True, default=("cpu-v1", "cpu"), show_default=True)
@click.option("--resolution", type=int, default=32, show_default=True)
@click.option("--iters", type=int, default=32, show_default=True, help="timed minibatches")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def preset(presets, resolution, iters, threads, device) -> None:
    """Training speed of whole presets in one run; ratios against the first one."""
    _setup(threads)
    results = [bench_preset(p, resolution, iters=iters, device=device) for p in presets]
    for r in results:
        r["ratio_vs_" + presets[0]] = round(r["img_per_s"] / results[0]["img_per_s"], 3)
    click.echo(json.dumps({"results": results, "env": _env(threads, device)}, indent=2))


@cli.command("all")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write the results to this JSON file.")
@click.option("--iters", type=int, default=16, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def all_(out, iters, threads, device) -> None:
    """The standard set: train and generate at 32 and 64 px (batch 16, channel_base 4096, max 128, map 2)."""
    from synth.utils.io import atomic_write_text

    _setup(threads)
    results = []
    for res in (32, 64):
        results.append(bench_train(resolution=res, iters=iters, device=device))
        click.echo(json.dumps(results[-1]), err=True)
        results.append(bench_generate(resolution=res, iters=iters, device=device))
        click.echo(json.dumps(results[-1]), err=True)
    # The cpu preset against the earlier one (cpu-v1), measured in this run: the speed of
    # actual CPU training, including the auxiliary classifier recipe.
    base = None
    for name, extra in (("cpu-v1", {}), ("cpu", {}), ("cpu", {"aux_weight": 1.0}), ("cpu", {"aux_weight": 1.0, "lecam_weight": 0.01,
                        "cond_start_kimg": 5.0, "cond_end_kimg": 20.0})):
        r = bench_preset(name, 32, iters=max(iters * 2, 8), device=device, **extra)
        base = base or r["img_per_s"]
        r["ratio_vs_cpu-v1"] = round(r["img_per_s"] / base, 3)
        results.append(r)
        click.echo(json.dumps(r), err=True)
    doc = {"results": results, "env": _env(threads, device),
           "reference_img_per_s": {"train@32": 15, "train@64": 4.4, "generate@32": 100, "generate@64": 57}}
    text = json.dumps(doc, indent=2)
    if out is not None:
        atomic_write_text(out, text + "\n")
    click.echo(text)


if __name__ == "__main__":
    cli()
