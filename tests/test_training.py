"""Training engine: losses, loop, snapshots, true resume, presets and the `train` CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from synth.networks.checkpoint import load_checkpoint, load_generator
from synth.training.cli import train
from synth.training.loss import lazy_correction
from synth.training.presets import resolve_preset
from synth.training.training_loop import LATEST, Trainer, TrainingDiverged, TrainingOptions

# 16 px, a few channels, 4 images a batch: a tick of 8 images is 2 minibatches.
TINY = dict(resolution=16, batch=4, z_dim=16, w_dim=16, map_layers=1, channel_base=256, channel_max=16,
            mbstd_group=2, tick_kimg=0.008, snap=1, progress=False, g_reg_interval=2, d_reg_interval=2,
            aug="ada", p=0.2, ada_interval=1, ada_kimg=1.0)
TINY_CLI = ["--resolution", "16", "--batch", "4", "--z-dim", "16", "--map-layers", "1", "--channel-base", "256",
            "--channel-max", "16", "--tick", "0.008", "--snap", "1", "--no-progress"]


def small_space_opts(data: Path, **kw) -> TrainingOptions:
    return TrainingOptions(data=str(data), cond=["disease", "age"], **{**TINY, **kw})


@pytest.fixture
def small_dataset(tmp_path):
    from tests.helpers import grid_rows, write_tiny_dataset

    rows = grid_rows(["syndrome_a", "unaffected"], ["infant", "child", "adolescent"], per_cell=2)
    schema = "factors:\n- {name: disease, levels: [syndrome_a, unaffected], embed_dim: 8, control: unaffected}\n" \
             "- {name: age, levels: [infant, child, adolescent], embed_dim: 8}\n"
    return write_tiny_dataset(tmp_path / "ds", rows, schema=schema)


def test_lazy_regularisation_corrections():
    lr, betas = lazy_correction(0.0025, (0.0, 0.99), 16)
    r = 16 / 17
    assert lr == pytest.approx(0.0025 * r)
    assert betas == (0.0, pytest.approx(0.99**r)) and all(isinstance(b, float) for b in betas)
    lr4, b4 = lazy_correction(0.002, (0, 0.99), 4)
    assert lr4 == pytest.approx(0.002 * 0.8) and b4[1] == pytest.approx(0.99**0.8) and isinstance(b4[0], float)
    assert lazy_correction(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))


def test_trainer_applies_corrections_to_optimisers(small_dataset):
    t = Trainer(small_space_opts(small_dataset, g_reg_interval=4, d_reg_interval=16, affected_fraction=0.3), None)
    affected = t.imageset.is_affected()
    assert t.sample_p[affected].sum() == pytest.approx(0.3)  # batches balanced affected vs unaffected
    assert t.G_opt.param_groups[0]["lr"] == pytest.approx(0.0025 * 4 / 5)
    assert t.D_opt.param_groups[0]["betas"][1] == pytest.approx(0.99 ** (16 / 17))
    assert t.D_opt.param_groups[0]["eps"] == 1e-8
    assert [p.name for p in t.phases] == ["Gmain", "Greg", "Dmain", "Dreg"]


def test_presets_follow_reference_formulas():
    a = resolve_preset("auto", 256, 1)
    assert (a.batch, a.mbstd_group, a.channel_base, a.channel_max, a.map_layers) == (16, 4, 16384, 512, 2)
    assert a.gamma == pytest.approx(0.0002 * 256**2 / 16) and a.ema_kimg == pytest.approx(5.0) and a.lr == 0.0025
    big = resolve_preset("auto", 1024, 8)
    assert big.batch == 32 and big.channel_base == 32768 and big.lr == 0.002 and big.mbstd_group == 4
    p = resolve_preset("paper256", 256)
    assert (p.batch, p.mbstd_group, p.channel_base, p.lr, p.gamma, p.ema_kimg, p.map_layers) == (64, 8, 16384, 0.0025, 1.0, 20.0, 8)
    s = resolve_preset("stylegan2", 256)
    assert (s.batch, s.channel_base, s.lr, s.gamma, s.ema_kimg) == (32, 32768, 0.002, 10.0, 10.0)
    c = resolve_preset("cpu", 32)
    assert c.channel_base == 1024 and c.channel_max == 64 and c.batch == 32 and 0.1 <= c.gamma <= 1
    assert (c.z_dim, c.pl_weight, c.reuse_fakes, c.ada_kimg) == (128, 0.0, True, 100.0)
    assert resolve_preset("cpu", 64).channel_base == 2048  # 32 channels at the output resolution
    v1 = resolve_preset("cpu-v1", 32)  # the earlier cpu preset, the benchmark's baseline
    assert (v1.channel_base, v1.batch, v1.z_dim, v1.pl_weight) == (2048, 16, 512, 2.0)
    with pytest.raises(ValueError, match="power of two"):
        resolve_preset("auto", 48)


def test_r1_and_path_length_gradients_are_finite(small_dataset):
    t = Trainer(small_space_opts(small_dataset), None)
    real, c = t._next_reals()
    z = torch.randn(4, 16)
    for phase, module in (("Dreg", t.D), ("Greg", t.G)):
        module.requires_grad_(True)
        stats = t.loss.accumulate_gradients(phase, real, c, z, c, gain=2)
        module.requires_grad_(False)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
        assert torch.isfinite(stats["total"])
    assert float(t.loss.pl_mean) > 0  # the path-length mean moved off zero


def test_short_run_writes_stats_grids_and_snapshot(small_dataset, tmp_path):
    run = tmp_path / "run"
    t = Trainer(small_space_opts(small_dataset, kimg=0.016), run)
    last = t.train()
    assert t.cur_nimg == 16 and t.cur_tick == 2 and last["kimg"] == 0.016
    lines = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [x["tick"] for x in lines] == [1, 2]
    for key in ("sec_per_kimg", "augment_p", "loss/G", "loss/D_real", "loss/D_fake", "peak_mem_mb"):
        assert key in lines[-1]
    assert any("loss/r1_penalty" in x for x in lines) and any("loss/pl_penalty" in x for x in lines)
    grid = Image.open(run / "fakes-00000.016.png")
    assert grid.width > grid.height  # 2 rows (diseases) x 3 columns (ages) plus headers
    assert (run / "reals.png").exists() and (run / "fakes-init.png").exists()
    pointer = json.loads((run / LATEST).read_text())
    assert pointer["snapshot"] == "network-snapshot-00000.016.ckpt" and pointer["kimg"] == 0.016
    G, space, meta = load_generator(run / pointer["snapshot"])
    assert space == t.space and meta["progress"]["cur_nimg"] == 16
    with torch.no_grad():
        img = G(torch.randn(3, 16), torch.from_numpy(np.stack([space.encode({"disease": "unaffected", "age": "child"})] * 3)))
    assert img.shape == (3, 3, 16, 16) and torch.isfinite(img).all()
    assert "tick 2" in (run / "log.txt").read_text()
    # The snapshot carries the training cell counts, so generation can apply the study's
    # count rule without the training data.
    from synth.synthesis.counts import counts_from_meta

    assert counts_from_meta(meta, space) == t.imageset.cell_counts()
    assert sum(counts_from_meta(meta, space).values()) == len(t.imageset)


def test_resume_continues_exactly(small_dataset, tmp_path):
    straight = Trainer(small_space_opts(small_dataset, kimg=0.016), tmp_path / "a")
    straight.train()
    first = Trainer(small_space_opts(small_dataset, kimg=0.008), tmp_path / "b")
    first.train()
    resumed = Trainer(small_space_opts(small_dataset, kimg=0.016), tmp_path / "b")
    resumed.resume(tmp_path / "b")
    assert resumed.cur_nimg == 8 and resumed.cur_tick == 1 and resumed.batch_idx == 2
    assert resumed.augment_p() == pytest.approx(first.augment_p())
    resumed.train()
    assert (resumed.cur_nimg, resumed.cur_tick, resumed.batch_idx) == (straight.cur_nimg, straight.cur_tick, straight.batch_idx)
    assert resumed.augment_p() == pytest.approx(straight.augment_p())
    assert straight.augment_p() != 0.2  # ADA moved p, so the comparison is meaningful
    assert float(resumed.loss.pl_mean) == pytest.approx(float(straight.loss.pl_mean))
    for name in ("G_opt", "D_opt"):
        sa, sb = getattr(straight, name).state_dict()["state"], getattr(resumed, name).state_dict()["state"]
        assert [float(s["step"]) for s in sa.values()] == [float(s["step"]) for s in sb.values()]
        for k in sa:
            assert torch.allclose(sa[k]["exp_avg"], sb[k]["exp_avg"], atol=1e-6)
    for m in ("G", "D", "G_ema"):
        for (n, a), (_, b) in zip(getattr(straight, m).state_dict().items(), getattr(resumed, m).state_dict().items()):
            assert torch.allclose(a, b, atol=1e-5), f"{m}.{n}"
    stats = [json.loads(x)["kimg"] for x in (tmp_path / "b" / "stats.jsonl").read_text().splitlines()]
    assert stats == [0.008, 0.016]


def test_resume_rejects_other_condition_space(small_dataset, tmp_path):
    Trainer(small_space_opts(small_dataset, kimg=0.008), tmp_path / "a").train()
    other = Trainer(small_space_opts(small_dataset, kimg=0.016, ties=["age:child=infant+adolescent"]), tmp_path / "c")
    from synth.networks.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="condition space") as e:
        other.resume(tmp_path / "a")
    assert "network-snapshot" in str(e.value)


def test_non_finite_loss_stops_without_bad_snapshot(small_dataset, tmp_path):
    run = tmp_path / "run"
    t = Trainer(small_space_opts(small_dataset, kimg=0.008), run)
    t.train()
    good = json.loads((run / LATEST).read_text())["snapshot"]
    with torch.no_grad():
        next(t.D.parameters()).fill_(float("nan"))
    t.opts.kimg = 0.024
    with pytest.raises(TrainingDiverged, match="non-finite") as e:
        t.train()
    assert good in str(e.value) and "\n" not in str(e.value)
    assert json.loads((run / LATEST).read_text())["snapshot"] == good
    assert sorted(p.name for p in run.glob("*.ckpt")) == [good]
    ck = load_checkpoint(run / good)
    assert all(torch.isfinite(v).all() for v in ck["D"].state_dict.values())


# ---- CLI ---------------------------------------------------------------------------------------


def _invoke(args):
    from synth.training.cli import train

    return CliRunner().invoke(train, args, catch_exceptions=False)


def test_cli_dry_run_prints_options_and_writes_nothing(small_dataset, tmp_path):
    out = tmp_path / "runs"
    r = _invoke(["--data", str(small_dataset), "--out", str(out), "--preset", "cpu", "--resolution", "16",
                 "--gamma", "0.7", "--batch", "8", "--tie", "age:child=infant+adolescent", "--dry-run"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    o = d["options"]
    assert o["gamma"] == 0.7 and o["batch"] == 8 and o["channel_base"] == 512 and o["preset"] == "cpu"
    assert o["ties"] == ["age:child=infant+adolescent"] and d["run_dir"].endswith("00000-ds-disease-age-cpu-16")
    assert not out.exists()


def test_cli_trains_resumes_and_guards_settings(small_dataset, tmp_path):
    out = tmp_path / "runs"
    r = _invoke(["--data", str(small_dataset), "--out", str(out), "--kimg", "0.008", *TINY_CLI])
    assert r.exit_code == 0, r.output
    (run,) = out.iterdir()
    assert run.name == "00000-ds-disease-age-cpu-16"
    assert json.loads((run / "options.json").read_text())["resolution"] == 16
    debris = run / ".network-snapshot-00000.016.ckpt.1a2b3c4d.tmp"  # a snapshot write killed half way
    debris.write_bytes(b"half")
    r = _invoke(["--resume", str(run), "--kimg", "0.016", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "resumed from" in r.output and "kimg 0.008" in r.output
    assert not debris.exists() and "left by an interrupted write" in r.output
    kimgs = [json.loads(x)["kimg"] for x in (run / "stats.jsonl").read_text().splitlines()]
    assert kimgs == [0.008, 0.016]
    r = CliRunner().invoke(__import__("synth.training.cli", fromlist=["train"]).train,
                           ["--resume", str(run), "--kimg", "0.024", "--gamma", "5"])
    assert r.exit_code == 2 and "--gamma" in r.output and "snapshot" in r.output
    r = _invoke(["--resume", str(run), "--kimg", "0.010", "--no-progress"])  # below where the run is
    assert r.exit_code == 2 and "the run is already at 0.016 kimg" in r.output and "done" not in r.output


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--aug", "fixed"], "--p"),
        (["--resolution", "24"], "power of two"),
        (["--tie", "stage-early"], "--tie"),
        (["--precision", "bf16"], "cuda"),
    ],
)
def test_cli_bad_options_fail_with_one_line(small_dataset, tmp_path, args, expect):
    from synth.training.cli import train

    r = CliRunner().invoke(train, ["--data", str(small_dataset), "--out", str(tmp_path / "runs"), "--dry-run", *args])
    assert r.exit_code != 0 and expect in r.output, r.output
    assert not (tmp_path / "runs").exists()


def test_cli_official_pickle_errors_are_one_line(small_dataset, tmp_path):
    bogus = tmp_path / "ffhq.pkl"
    bogus.write_bytes(b"\x80\x04not really a pickle")
    out = tmp_path / "runs"
    from synth.training.cli import train

    r = CliRunner().invoke(train, ["--data", str(small_dataset), "--out", str(out), "--resume", str(bogus), *TINY_CLI])
    assert r.exit_code == 1, r.output
    err = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(err) == 1 and "ffhq.pkl" in err[0]
    assert not out.exists()


def test_time_limit_stops_at_a_tick_with_a_snapshot_and_resume_continues(small_dataset, tmp_path):
    t = Trainer(small_space_opts(small_dataset, kimg=0.032, time_limit=1e-6), tmp_path / "run")
    t.train()
    assert t.cur_nimg == 8 and t.last_snapshot is not None and t.last_snapshot.is_file()
    assert "time limit" in (tmp_path / "run" / "log.txt").read_text()
    more = Trainer(small_space_opts(small_dataset, kimg=0.016), tmp_path / "run")
    more.resume(tmp_path / "run")
    more.train()
    assert more.cur_nimg == 16


def test_cli_stores_absolute_data_and_resumes_from_another_directory(small_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(small_dataset.parent)
    r = _invoke(["--data", small_dataset.name, "--out", str(tmp_path / "runs"), *TINY_CLI, "--kimg", "0.008"])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "options.json").read_text())["data"] == str(small_dataset.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = _invoke(["--resume", str(run), "--kimg", "0.016", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "kimg 0.016" in r.output


def test_cli_failed_start_leaves_no_run_folder(small_dataset, tmp_path, monkeypatch):
    from synth.training.training_loop import TrainingError

    out = tmp_path / "runs"

    def fail(self):
        assert (out / "00000-ds-disease-age-cpu-16" / "options.json").is_file()  # the folder was started
        raise TrainingError("boom")

    monkeypatch.setattr(Trainer, "step", fail)
    r = CliRunner().invoke(train, ["--data", str(small_dataset), "--out", str(out), *TINY_CLI, "--kimg", "0.008"],
                           catch_exceptions=False)
    assert r.exit_code != 0 and "boom" in r.output
    assert not any(out.iterdir())
    # a corrupt first image is refused by name before anything is written
    sorted((small_dataset / "img").iterdir())[0].write_bytes(b"not a png")
    r = CliRunner().invoke(train, ["--data", str(small_dataset), "--out", str(out), *TINY_CLI, "--kimg", "0.008"],
                           catch_exceptions=False)
    assert r.exit_code != 0 and "corrupt image" in r.output and not any(out.iterdir())


def test_cli_warns_about_empty_cells_and_upsampling(tmp_path):
    from tests.helpers import grid_rows, write_tiny_dataset

    rows = [r for r in grid_rows(["syndrome_a", "unaffected"], ["infant", "child"], per_cell=2)
            if not (r["disease"] == "syndrome_a" and r["age"] == "child")]
    schema = "factors:\n- {name: disease, levels: [syndrome_a, unaffected], embed_dim: 8, control: unaffected}\n" \
             "- {name: age, levels: [infant, child], embed_dim: 8}\n"
    ds = write_tiny_dataset(tmp_path / "ds", rows, schema=schema, size=8)
    r = CliRunner().invoke(train, ["--data", str(ds), "--out", str(tmp_path / "runs"), *TINY_CLI, "--dry-run"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(train, ["--data", str(ds), "--out", str(tmp_path / "runs"), *TINY_CLI, "--kimg", "0.004"])
    assert "1 condition cell(s) have no training images (syndrome_a/child)" in r.output
    assert "--resolution 16 is above the data's smallest side (8 px)" in r.output
    # mixed sizes and non-square images: said, with what is done to them
    from PIL import Image

    Image.new("RGB", (12, 8)).save(ds / rows[0]["file"])
    r = CliRunner().invoke(train, ["--data", str(ds), "--out", str(tmp_path / "runs2"), *TINY_CLI, "--kimg", "0.004"])
    assert "the images have 2 sizes (8x8: 5, 12x8: 1); each is centre-cropped to a square and resized to 16 px" in r.output


def test_cli_tick_error_names_the_option(small_dataset, tmp_path):
    r = CliRunner().invoke(train, ["--data", str(small_dataset), "--out", str(tmp_path / "r"), *TINY_CLI, "--tick", "-1"])
    assert r.exit_code != 0 and "--tick:" in r.output and "--tick-kimg" not in r.output


@pytest.mark.parametrize("name", ["cpu", "cpu-v1", "auto", "paper256", "stylegan2"])
def test_one_place_turns_a_preset_into_options(name):
    from dataclasses import fields

    from synth.training.presets import preset_fields

    pre = resolve_preset(name, 32)
    f = preset_fields(pre)
    assert set(f) <= {x.name for x in fields(TrainingOptions)}
    o = TrainingOptions(**f)
    o.validate()
    assert (o.preset, o.resolution, o.channel_max, o.batch, o.conv_clamp) == (name, 32, pre.channel_max, pre.batch, None)
    assert preset_fields(pre, "bf16")["conv_clamp"] == 256.0  # mixed precision clamps, in every caller
