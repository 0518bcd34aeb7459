"""`synth classify ...` through click's CliRunner: outputs on disk and one-line errors."""
from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from tests.helpers import grid_rows, write_tiny_dataset

FAST = ["--model", "test_efficientnet", "--size", "32", "--epochs", "1", "--batch", "8", "--lr", "1e-3",
        "--no-pretrained", "--device", "cpu", "--no-progress"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def ds(tmp_path):
    rows = grid_rows(["syndrome_a", "syndrome_b", "unaffected"], ["infant", "child"], per_cell=3)
    return write_tiny_dataset(tmp_path / "ds", rows, size=32)


def invoke(runner, args):
    from classifiers.cli import classify

    return runner.invoke(classify, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result) -> str:
    assert result.exit_code != 0
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert "Traceback" not in result.output
    return lines[-1]


def test_cv_evaluate_saliency_permutation_end_to_end(runner, ds, tmp_path):
    out = tmp_path / "cv"
    r = invoke(runner, ["cv", "--data", ds, "--folds", "3", "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    assert "accuracy:" in r.output and "+-" in r.output and "syndrome_a / infant" in r.output
    opts = json.loads((out / "options.json").read_text())
    assert opts["options"]["k"] == 3 and opts["command"] == "synth classify cv"
    assert sorted(p.name for p in out.glob("fold*/model.safetensors")) == ["model.safetensors"] * 3
    with open(out / "oof_predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {"fold", "true", "pred", "p_unaffected"} <= set(rows[0])

    ev = tmp_path / "ev"
    r = invoke(runner, ["evaluate", "--models", out, "--data", ds, "--gate", "0.99", "--tta", "flip", "--out", ev])
    assert r.exit_code == 0, r.output
    with open(ev / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    info = json.loads((ev / "evaluate.json").read_text())
    assert info["gate_fallback_count"] == sum(int(p["gate_fallback"]) for p in preds)
    assert all(int(p["models_used"]) == 3 for p in preds if p["gate_fallback"] == "1")
    assert (ev / "metrics.json").is_file() and (ev / "confusion_matrix.png").is_file()

    sal = tmp_path / "sal"
    r = invoke(runner, ["saliency", "--models", out / "fold0", "--data", ds, "--window", "8", "--stride", "8",
                        "--limit", "6", "--no-overlays", "--out", sal])
    assert r.exit_code == 0, r.output
    assert (sal / "maps.npz").is_file() and (sal / "composites.png").is_file()
    perm = tmp_path / "perm"
    r = invoke(runner, ["permutation-test", "--saliency", sal, "--group", "age", "--within", "",
                        "--embedder", "random", "--n-perm", "20", "--out", perm])
    assert r.exit_code == 0, r.output
    rep = json.loads((perm / "permutation_tests.json").read_text())
    p = rep["all"]["p"]
    assert 0 < p[0][1] <= 1 and p[0][1] == p[1][0]


def test_train_with_val_fold_writes_checkpoint_and_metrics(runner, ds, tmp_path):
    out = tmp_path / "train"
    r = invoke(runner, ["train", "--data", ds, "--val-fold", "0", "--folds", "3", "--class-weight", "syndrome_a=10",
                        "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["class_weight"] == [10.0, 1.0, 1.0] and meta["n_val"] == 6
    assert (out / "val_metrics.json").is_file() and (out / "log.jsonl").is_file()


def test_unknown_model_name_lists_close_matches(runner, ds, tmp_path):
    args = [a if a != "test_efficientnet" else "efficientnet_b44" for a in FAST]
    r = invoke(runner, ["cv", "--data", ds, "--out", tmp_path / "o", *args])
    line = one_line_error(r)
    assert r.exit_code == 2  # a bad option value: a usage error
    assert "unknown model 'efficientnet_b44'" in line and "efficientnet_b4" in line
    assert not (tmp_path / "o").exists()  # failed before writing anything


def test_class_without_images_in_a_training_fold(runner, tmp_path):
    rows = grid_rows(["syndrome_a", "unaffected"], ["child"], per_cell=6)
    rows.append({"file": "img/lonely.png", "disease": "syndrome_b", "age": "child", "subject": "only"})
    data = write_tiny_dataset(tmp_path / "ds", rows, size=32)
    r = invoke(runner, ["cv", "--data", data, "--folds", "3", "--out", tmp_path / "o", *FAST])
    line = one_line_error(r)
    assert "class 'syndrome_b' has no images in the training folds" in line
    assert not list((tmp_path / "o").glob("fold*/model.safetensors"))


def test_missing_weights_file_and_missing_cache(runner, ds, tmp_path, monkeypatch):
    fast = [a for a in FAST if a != "--no-pretrained"]
    r = invoke(runner, ["train", "--data", ds, "--pretrained", tmp_path / "absent.safetensors", "--out", tmp_path / "o", *fast])
    assert "weights file" in one_line_error(r) and "does not exist" in one_line_error(r)
    # bare --pretrained: only the local caches are searched (point them at empty folders)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf"), raising=False)
    r = invoke(runner, ["train", "--data", ds, "--pretrained", "--out", tmp_path / "o", *fast])
    line = one_line_error(r)
    assert "no local weights for test_efficientnet" in line and "--no-pretrained" in line


def test_missing_data_dir_and_corrupt_checkpoint(runner, ds, tmp_path):
    r = invoke(runner, ["cv", "--data", tmp_path / "nowhere", "--out", tmp_path / "o", *FAST])
    # a missing file is a problem with the input, not with the command line: exit 1
    assert r.exit_code == 1 and one_line_error(r) == f"Error: --data {tmp_path / 'nowhere'}: not found"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    r = invoke(runner, ["evaluate", "--models", bad, "--data", ds, "--out", tmp_path / "e"])
    assert "not a readable safetensors file" in one_line_error(r)
    r = invoke(runner, ["evaluate", "--models", tmp_path / "empty_dir_missing", "--data", ds, "--out", tmp_path / "e"])
    assert "checkpoint not found" in one_line_error(r)


def test_patch_mode_majority_vote_and_maps(runner, tmp_path):
    rows = grid_rows(["syndrome_a", "unaffected"], ["child"], per_cell=6)
    data = write_tiny_dataset(tmp_path / "ds", rows, size=64)
    no_size = [a for a in FAST if a not in ("--size", "32")]
    out = tmp_path / "p"
    r = invoke(runner, ["patches", "--data", data, "--patch", "32", "--val-fold", "0", "--folds", "3", "--maps", "2",
                        "--out", out, *no_size])
    assert r.exit_code == 0, r.output
    with open(out / "image_predictions.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 4 and all(p["patches"] == "4" for p in preds)
    assert all(0.5 <= float(p["vote_fraction"]) <= 1.0 for p in preds)  # winner has at least half of 2 classes' votes
    meta = json.loads((out / "model.json").read_text())
    assert meta["size"] == 32 and meta["aug"] == "skin" and meta["n_train"] == 8 * 4
    assert len(list((out / "maps").glob("*.png"))) == 2
    r = invoke(runner, ["patches", "--data", data, "--patch", "32", "--size", "48", "--out", out, *no_size])
    assert "patch mode trains at the patch size" in one_line_error(r)
    # a class the data lacks is refused before training, with nothing written
    r = invoke(runner, ["patches", "--data", data, "--patch", "32", "--val-fold", "0", "--folds", "3",
                        "--map-class", "syndrome_z", "--out", tmp_path / "p2", *no_size])
    assert r.exit_code == 1 and "--map-class 'syndrome_z': not a class" in one_line_error(r)
    assert not (tmp_path / "p2").exists()
    r = invoke(runner, ["evaluate", "--models", out, "--data", data, "--cells", "height", "--out", tmp_path / "e"])
    assert r.exit_code == 1 and "height" in one_line_error(r)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("command", ["cv", "train"])
@pytest.mark.parametrize("earlier", [None, "results"])
def test_failed_run_leaves_out_as_it_was(runner, tmp_path, command, earlier):
    """Data that fails the checks (one class only) is refused before the first write: no
    options.json in a new --out, and --force has not yet removed the earlier results."""
    data = write_tiny_dataset(tmp_path / "one", grid_rows(["syndrome_a"], ["infant", "child"], per_cell=3), size=32)
    out = tmp_path / "o"
    if earlier:
        (out / "fold0").mkdir(parents=True)
        (out / "options.json").write_text("{}")
        (out / "fold0" / "model.safetensors").write_bytes(b"earlier model")
    args = [command, "--data", data, "--out", out, *FAST, *(["--folds", "2"] if command == "cv" else [])]
    r = invoke(runner, [*args, *(["--force"] if earlier else [])])
    assert r.exit_code == 1 and "class" in one_line_error(r)
    if earlier:
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["fold0", "fold0/model.safetensors", "options.json"]
        assert (out / "options.json").read_text() == "{}"
    else:
        assert not out.exists()


def test_every_classify_option_has_help():
    import click

    from classifiers.cli import classify

    missing = [f"{name} {p.opts[0]}" for name, cmd in classify.commands.items() for p in cmd.params
               if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not missing


def test_cpu_defaults_warn_once_with_the_cpu_recipe(runner, ds, tmp_path):
    from classifiers.cli import CPU_RECIPE

    out = tmp_path / "busy"
    out.mkdir()
    (out / "x.txt").write_text("mine")  # refused after the warning: nothing trains
    r = invoke(runner, ["cv", "--data", ds, "--out", out, "--device", "cpu", "--no-progress"])
    assert r.exit_code == 1 and "folder is not empty" in one_line_error(r)
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warn) == 1 and "efficientnet_b4, 448 px, 30 epochs" in warn[0] and CPU_RECIPE in warn[0]
    assert CPU_RECIPE == "--model small_cnn --size 32 --epochs 15 --batch 32 --lr 0.003 --optimizer adamw --weight-decay 0.01"
    # any of --model/--size/--epochs given: the user chose, no warning
    for extra in (["--model", "small_cnn"], ["--size", "32"], ["--epochs", "2"]):
        r = invoke(runner, ["train", "--data", ds, "--out", out, "--device", "cpu", "--no-progress", *extra])
        assert r.exit_code == 1 and "warning:" not in r.output


def test_val_fold_without_images_is_one_line(runner, ds, tmp_path):
    import csv as _csv

    files = [r["file"] for r in _csv.DictReader((ds / "labels.csv").open())]
    folds = tmp_path / "folds.csv"
    # every image in fold 0 or 2: fold 1 holds nothing, fold 0 everything of one half
    folds.write_text("file,fold\n" + "".join(f"{f},{0 if i % 2 else 2}\n" for i, f in enumerate(files)))
    r = invoke(runner, ["train", "--data", ds, "--folds-csv", folds, "--val-fold", "1", "--out", tmp_path / "o", *FAST])
    line = one_line_error(r)
    assert r.exit_code == 2 and "--val-fold 1" in line and "no validation images" in line, line
    assert not (tmp_path / "o").exists()
