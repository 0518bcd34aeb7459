"""Benchmark the StyleGAN2 networks on CPU against a straightforward reference-style implementation.

The baseline (``naive``) reproduces what the reference's plain-PyTorch fallback does: the
modulated conv as a per-sample grouped conv, FIR resampling through explicit zero insertion
and a generic ``upfirdn2d`` (pad, depthwise conv with the 2-D filter, slice), and bias/activation
as separate ops.  It reads the *same* weights as the optimised networks, and the script checks
that both produce the same images before timing them.

    python tools/bench_networks.py --res 32 --res 64 --threads 2 --batch 16
    python tools/bench_networks.py --res 32 --train      # also time G+D forward/backward
"""
from __future__ import annotations

import math
import statistics
import time

import click
import torch
import torch.nn.functional as F

from synth.conditions import ConditionSpace
from synth.networks import Discriminator, Generator

# ---- naive reference-style ops ------------------------------------------------------------


def upfirdn2d_naive(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    N, C, H, W = x.shape
    if up > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(N, C, H * up, W * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    w = (f * gain).flip([0, 1])[None, None].repeat(C, 1, 1, 1)
    x = F.conv2d(x, w, groups=C)
    return x[:, :, ::down, ::down]


def bias_act_naive(x, b, act="linear", gain=None):
    x = x + b.reshape(1, -1, 1, 1)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        x = x * (math.sqrt(2) if gain is None else gain)
    return x


def modconv_naive(x, weight, styles, up=1, demodulate=True, f=None):
    N, Ci, H, W = x.shape
    Co, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
    x = x.reshape(1, N * Ci, H, W)
    w = w.reshape(N * Co, Ci, kh, kw)
    if up == 2:
        wt = w.reshape(N, Co, Ci, kh, kw).transpose(1, 2).reshape(N * Ci, Co, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=2, groups=N)
        x = upfirdn2d_naive(x, f, pad=(1, 1, 1, 1), gain=4)
    else:
        x = F.conv2d(x, w, padding=kh // 2, groups=N)
    return x.reshape(N, Co, *x.shape[2:])


def fc_naive(layer, x):
    return F.linear(x, layer.weight * layer.weight_gain, layer.bias * layer.bias_gain)


def synthesis_naive(G, ws):
    """Skip-architecture synthesis with noise_mode='const', written the plain way."""
    syn = G.synthesis
    f = syn.b4.resample_filter
    x = img = None
    w_idx = 0
    for r in syn.block_resolutions:
        blk = getattr(syn, f"b{r}")
        bws = ws[:, w_idx : w_idx + blk.num_conv + blk.num_torgb]
        w_idx += blk.num_conv
        i = 0
        layers = [blk.conv1] if blk.in_channels == 0 else [blk.conv0, blk.conv1]
        if blk.in_channels == 0:
            x = blk.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        for layer in layers:
            s = fc_naive(layer.affine, bws[:, i])
            i += 1
            x = modconv_naive(x, layer.weight, s, up=layer.up, f=f)
            x = x + layer.noise_const * layer.noise_strength
            x = bias_act_naive(x, layer.bias, "lrelu")
        if img is not None:
            img = upfirdn2d_naive(img, f, up=2, pad=(2, 1, 2, 1), gain=4)
        s = fc_naive(blk.torgb.affine, bws[:, i]) * blk.torgb.weight_gain
        y = modconv_naive(x, blk.torgb.weight, s, demodulate=False)
        y = bias_act_naive(y, blk.torgb.bias)
        img = y if img is None else img + y
    return img


# ---- timing -------------------------------------------------------------------------------


def bench_space() -> ConditionSpace:
    return ConditionSpace.default(["disease", "age"])  # 4 + 5 levels: c_dim 9


def make_networks(res: int, space: ConditionSpace):
    torch.manual_seed(0)
    kw = dict(channel_base=4096, channel_max=128)
    G = Generator(512, 512, space, res, 3, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=kw).eval()
    D = Discriminator(space, res, 3, mapping_kwargs=dict(num_layers=2), **kw)
    with torch.no_grad():  # non-zero noise strengths so the noise path is exercised
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    return G, D


def timed_interleaved(fns: dict, rounds: int, warmup: int = 1) -> dict:
    """Median seconds per call of each function, run round-robin so load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


@click.command()
@click.option("--res", "resolutions", type=int, multiple=True, default=(32, 64), show_default=True, help="Resolutions to time.")
@click.option("--batch", type=int, default=16, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True, help="torch.set_num_threads value.")
@click.option("--rounds", type=int, default=7, show_default=True, help="Timed rounds (median is reported).")
@click.option("--train", is_flag=True, help="Also time a G+D forward/backward step (non-saturating loss).")
def main(resolutions, batch, threads, rounds, train):
    """Time generation img/s (no_grad, noise_mode const) of the networks vs a naive baseline."""
    torch.set_num_threads(threads)
    space = bench_space()
    for res in resolutions:
        G, D = make_networks(res, space)
        z = torch.randn(batch, 512)
        c = torch.from_numpy(space.encode({"disease": "syndrome_a", "age": "child"})).expand(batch, -1).contiguous()
        variants = {  # label: (fused_modconv, channels_last)
            "ours (default)": (None, None),
            "ours unfused NCHW": (False, False),
            "ours fused NCHW": (True, False),
        }

        def run(fused, cl):
            G.synthesis.channels_last = cl
            return G(z, c, noise_mode="const", fused_modconv=fused)

        with torch.no_grad():
            ref = synthesis_naive(G, G.mapping(z, c))
            diffs = {k: (run(*v) - ref).abs().max().item() for k, v in variants.items()}
            fns = {k: (lambda v=v: run(*v)) for k, v in variants.items()}
            fns["naive"] = lambda: synthesis_naive(G, G.mapping(z, c))
            secs = timed_interleaved(fns, rounds)
        base = batch / secs["naive"]
        for label, sec in secs.items():
            ips = batch / sec
            click.echo(
                f"res {res:3d} generate {label:18s} {ips:7.1f} img/s  ({ips / base:4.2f}x naive)"
                f"  max|diff| {diffs.get(label, 0.0):.1e}"
            )
        G.synthesis.channels_last = None
        if train:
            G.train()
            D.train()

            def step(fused, cl):
                G.synthesis.channels_last = D.channels_last = cl
                G.zero_grad(set_to_none=True)
                D.zero_grad(set_to_none=True)
                img = G(z, c, fused_modconv=fused)
                loss = F.softplus(-D(img, c)).mean() + F.softplus(D(img.detach(), c)).mean()
                loss.backward()

            tv = {"default (unfused, channels_last)": (False, True), "unfused NCHW": (False, False), "fused NCHW": (True, False)}
            secs = timed_interleaved({k: (lambda v=v: step(*v)) for k, v in tv.items()}, max(rounds // 2, 2))
            for label, sec in secs.items():
                click.echo(f"res {res:3d} G+D fwd/bwd {label:34s} {batch / sec:6.1f} img/s")


if __name__ == "__main__":
    main()
