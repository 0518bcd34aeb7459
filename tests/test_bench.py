"""The benchmark's preset mode builds exactly the options `synth train --preset` resolves."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))


def test_bench_preset_options_match_the_train_cli():
    from bench import preset_options

    from synth.training.cli import train

    for name in ("cpu", "cpu-v1"):
        r = CliRunner().invoke(train, ["--preset", name, "--resolution", "32", "--aug", "fixed", "--p", "0.2", "--dry-run"])
        assert r.exit_code == 0, r.output
        cli = json.loads(r.output)["options"]
        ours = preset_options(name, 32).to_dict()
        cli["progress"] = ours["progress"]
        assert ours == cli, {k: (ours[k], cli[k]) for k in ours if ours[k] != cli.get(k)}


def test_bench_preset_runs_a_tiny_step():
    from bench import bench_preset

    r = bench_preset("cpu", 8, iters=2, warmup=1, batch=4, channel_base=32, channel_max=8, mbstd_group=2)
    assert r["mode"] == "preset" and r["batch"] == 4 and r["iters"] == 2 and r["img_per_s"] > 0
    # the figures agree with each other: seconds per kimg is 1000 / images per second
    assert abs(r["sec_per_kimg"] * r["img_per_s"] / 1000 - 1) < 0.02
    assert r["img_per_cpu_s"] > 0 and r["peak_mem_mb"] > 0
    # the overrides reached the networks: channel_max 8 at 8 px is a far smaller model than the preset's
    big = bench_preset("cpu", 8, iters=1, warmup=0, batch=4, mbstd_group=2)
    assert 0 < r["G_params"] < big["G_params"] and 0 < r["D_params"] < big["D_params"]
