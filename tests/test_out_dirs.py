"""--out folders that hold results: refused without --force; --force removes the earlier
results (only those) so old and new never mix."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.helpers import grid_rows, tiny_generator, write_tiny_dataset

FAST = ["--model", "small_cnn_s", "--size", "16", "--epochs", "1", "--batch", "8", "--no-pretrained",
        "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    rows = grid_rows(["syndrome_a", "unaffected"], ["infant", "child"], per_cell=3)
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "ds", rows, size=16)


@pytest.fixture(scope="module")
def gen_ckpt(tmp_path_factory):
    from synth.conditions import ConditionSpace
    from synth.networks.checkpoint import save_checkpoint

    space = ConditionSpace.default(["disease", "age"], embed_total=32)
    path = tmp_path_factory.mktemp("ckpt") / "g.ckpt"
    save_checkpoint(path, {"G_ema": tiny_generator(space), "space": space})
    return path


def classify(*args):
    from classifiers.cli import classify as group

    return CliRunner().invoke(group, [str(a) for a in args])


def listing(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def refused(r) -> None:
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "folder is not empty" in lines[0] and "--force" in lines[0]
    assert "Traceback" not in r.output


# ---- synth classify cv | train -------------------------------------------------------------------


def test_cv_refuses_a_results_folder_and_force_replaces_the_earlier_cv(ds, tmp_path):
    out = tmp_path / "cv"
    assert classify("cv", "--data", ds, "--folds", "3", "--out", out, *FAST).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before, options = listing(out), (out / "options.json").read_bytes()

    refused(classify("cv", "--data", ds, "--folds", "2", "--out", out, *FAST))
    assert listing(out) == before and (out / "options.json").read_bytes() == options

    r = classify("cv", "--data", ds, "--folds", "2", "--out", out, "--force", *FAST)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.glob("fold[0-9]*")) == ["fold0", "fold1"]  # no stale fold2 model
    assert json.loads((out / "options.json").read_text())["options"]["k"] == 2
    assert (out / "notes.txt").read_text() == "mine"


def test_train_into_a_cv_folder_needs_force_which_removes_the_cv(ds, tmp_path):
    from classifiers.checkpoint import find_checkpoints

    out = tmp_path / "cv"
    assert classify("cv", "--data", ds, "--folds", "2", "--out", out, *FAST).exit_code == 0
    (out / "fold0" / "my_plot.png").write_bytes(b"mine")
    before = listing(out)

    refused(classify("train", "--data", ds, "--out", out, *FAST))
    assert listing(out) == before  # no model.safetensors dropped among the fold models

    r = classify("train", "--data", ds, "--out", out, "--force", *FAST)
    assert r.exit_code == 0, r.output
    assert find_checkpoints(out) == [out / "model.safetensors"]
    assert not (out / "fold1").exists() and not (out / "oof_predictions.csv").exists()
    assert not (out / "folds.csv").exists() and not (out / "summary.json").exists()
    assert listing(out / "fold0") == ["my_plot.png"]  # unrelated files stay
    assert json.loads((out / "options.json").read_text())["command"] == "synth classify train"


# ---- synth metrics ---------------------------------------------------------------------------------


def test_metrics_refuses_a_results_folder_and_force_drops_the_stale_figure(gen_ckpt, tmp_path):
    from synth.quality.cli import metrics

    out = tmp_path / "m"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    (out / "memorisation_top.png").write_bytes(b"old figure")
    (out / "notes.txt").write_text("mine")
    args = ["--network", str(gen_ckpt), "--metrics", "progression", "--kind", "skin", "--seeds", "0-1", "--steps", "3",
            "--feature-model", "test_resnet", "--feature-size", "32", "--mean-w-samples", "8", "--quiet", "--out", str(out)]
    r = CliRunner().invoke(metrics, args)
    refused(r)
    assert (out / "metrics.json").read_text() == "{}"

    r = CliRunner().invoke(metrics, [*args, "--force"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "metrics.md", "notes.txt"]
    assert json.loads((out / "metrics.json").read_text())["settings"]["metrics"] == ["progression"]


# ---- synth generate --------------------------------------------------------------------------------


def generate(gen_ckpt, out, *extra):
    from synth.synthesis.cli import generate as cmd

    return CliRunner().invoke(cmd, ["--network", str(gen_ckpt), "--type", "unrelated", "--out", str(out),
                                    "--mean-w-samples", "8", "--quiet", *extra])


def test_generate_force_removes_the_images_of_an_earlier_generation_only(gen_ckpt, tmp_path):
    from synth.data.dataset import open_dataset

    out = tmp_path / "gen"
    assert generate(gen_ckpt, out, "--per-cell", "2").exit_code == 0
    (out / "unrelated" / "mine.png").write_bytes(b"not listed")
    (out / "notes.txt").write_text("mine")
    r = generate(gen_ckpt, out, "--per-cell", "1", "--force")
    assert r.exit_code == 0, r.output
    listed = {rec.file for rec in open_dataset(out).records}
    pngs = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert pngs == listed | {"unrelated/mine.png"}  # no stale, unlabelled image of the bigger first run
    assert (out / "notes.txt").read_text() == "mine"

    # a real dataset is no generation: the images its labels.csv lists are not ours to delete
    rows = grid_rows(["syndrome_a"], ["child"], per_cell=2)
    root = write_tiny_dataset(tmp_path / "real", rows)
    assert generate(gen_ckpt, root, "--per-cell", "1", "--force").exit_code == 0
    assert all((root / row["file"]).is_file() for row in rows)


# ----------------------------------------------------------------------------------------
# Two writers on one folder


def _sleeper():
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_second_writer_is_refused_while_the_first_runs_and_a_dead_ones_lock_is_taken_over(gen_ckpt, tmp_path):
    import socket

    from synth.cli import main
    from synth.utils.io import LOCK_NAME

    out = tmp_path / "g"
    out.mkdir()
    other = _sleeper()  # stands in for a running `synth generate` that holds the folder
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "command": "synth generate"}))
        args = ["generate", "--type", "unrelated", "--per-cell", "1", "--network", str(gen_ckpt), "--out", str(out),
                "--quiet", "--mean-w-samples", "16"]
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and f"in use by another command (synth generate, pid {other.pid}" in r.output, r.output
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the second run written
    finally:
        other.kill()
        other.wait()
    r = CliRunner().invoke(main, args)  # its process is gone: the lock is debris and is taken over
    assert r.exit_code == 0, r.output
    assert (out / "manifest.csv").is_file() and not (out / LOCK_NAME).exists()  # released when the command ends


def test_two_training_runs_started_together_get_their_own_folders(tmp_path):
    from synth.training.cli import claim_run_dir, next_run_dir

    out = tmp_path / "runs"
    first = next_run_dir(out, "ds-disease-age-cpu-16")
    second = next_run_dir(out, "ds-disease-age-cpu-16")  # both listed the folder before either created its run
    assert first == second
    assert claim_run_dir(first) == out / "00000-ds-disease-age-cpu-16"
    assert claim_run_dir(second) == out / "00001-ds-disease-age-cpu-16"
    (out / "00003-other").mkdir()
    assert claim_run_dir(out / "00001-ds-disease-age-cpu-16") == out / "00004-ds-disease-age-cpu-16"


def test_failed_or_interrupted_generation_leaves_the_folder_as_it_was(gen_ckpt, tmp_path, monkeypatch):
    from synth.cli import main
    from synth.synthesis.engine import Renderer

    base = ["generate", "--type", "unrelated", "--network", str(gen_ckpt), "--quiet", "--mean-w-samples", "16", "--batch", "4"]
    # too few seeds for the images asked: refused, and no empty --out is left behind
    r = CliRunner().invoke(main, [*base, "--per-cell", "3", "--seeds", "0-1", "--out", str(tmp_path / "few")])
    assert r.exit_code != 0 and not (tmp_path / "few").exists(), r.output
    # Ctrl-C half way: the images written so far go, a folder that existed keeps its own files
    calls = {"n": 0}
    real_synthesize = Renderer.synthesize

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_synthesize(self, *a, **k)

    monkeypatch.setattr(Renderer, "synthesize", interrupted)
    r = CliRunner().invoke(main, [*base, "--per-cell", "2", "--out", str(tmp_path / "new")])
    assert r.exit_code != 0 and calls["n"] == 3
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "old"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    calls["n"] = 0
    r = CliRunner().invoke(main, [*base, "--per-cell", "2", "--out", str(keep), "--force"])
    assert r.exit_code != 0 and calls["n"] == 3
    assert sorted(p.name for p in keep.rglob("*")) == ["notes.txt"]
