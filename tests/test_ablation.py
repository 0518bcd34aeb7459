"""Augmentation-gain ablation: statistics, fold hygiene, resume, reports and CLI errors."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth.conditions import ConditionSpace
from tests.helpers import grid_rows, write_tiny_dataset

SCHEMA = ("factors:\n- {name: disease, levels: [syndrome_a, syndrome_b, unaffected], embed_dim: 8, control: unaffected}\n"
          "- {name: age, levels: [infant, child, adolescent], embed_dim: 8, ordinal: true}\n")
SPACE = ConditionSpace.from_dict({"factors": [
    {"name": "disease", "levels": ["syndrome_a", "syndrome_b", "unaffected"], "embed_dim": 8, "control": "unaffected"},
    {"name": "age", "levels": ["infant", "child", "adolescent"], "embed_dim": 8, "ordinal": True},
]})
# a per-fold GAN small enough for a few CPU steps
TINY_GAN = dict(resolution=16, batch=4, z_dim=16, w_dim=16, map_layers=1, channel_base=256, channel_max=16,
                mbstd_group=2, progress=False, aug="none")


def tiny_train(**kw):
    from classifiers.train import TrainConfig

    # timm's ~100k-parameter EfficientNet, fast at 32 px
    base = dict(model="test_efficientnet", size=32, epochs=1, batch=8, lr=1e-3, aug="none", progress=False, device="cpu",
                warmup=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("abl")
    rows = grid_rows(["syndrome_a", "syndrome_b", "unaffected"], ["infant", "child", "adolescent"], per_cell=2)
    return write_tiny_dataset(root / "ds", rows, schema=SCHEMA)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    from synth.networks import Generator
    from synth.networks.checkpoint import save_checkpoint

    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, space=SPACE, img_resolution=16, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16}).eval()
    path = tmp_path_factory.mktemp("net") / "g.ckpt"
    save_checkpoint(path, {"G_ema": G, "space": SPACE})
    return path


def config(data, network=None, **kw):
    from synth.ablation import AblationConfig

    base = dict(data=str(data), types=["unrelated", "age_progression"], k=2, network=str(network) if network else None,
                train=tiny_train(), psi=1.0, progress=False, matched_control=False)
    base.update(kw)
    return AblationConfig(**base)


class Recorder:
    """Wraps train_classifier: counts trainings, remembers what each one saw, can fail."""

    def __init__(self, fail_after: int | None = None):
        import classifiers.train

        self.real = classifiers.train.train_classifier
        self.calls: list[dict] = []
        self.fail_after = fail_after

    def __call__(self, train, val, target, cfg, **kw):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # what a killed run looks like to the caller
        self.calls.append({"train_files": list(train.files), "source": list(train.source),
                           "val_files": list(val.files) if val is not None else [], "desc": kw.get("desc"), "seed": cfg.seed,
                           "epoch_size": kw.get("epoch_size")})
        return self.real(train, val, target, cfg, **kw)


# ----------------------------------------------------------------------------------------


def test_statistics_match_hand_computed_values():
    from synth.ablation import ablation_statistics

    scores = {"real": [0.6, 0.7, 0.8], "arm": [0.7, 0.75, 0.9]}
    correct = {"real": np.array([1, 1, 0, 0, 1, 0], bool), "arm": np.array([1, 0, 1, 1, 1, 1], bool)}
    st = ablation_statistics(scores, n_train=20, n_test=10, correct=correct)
    d = st["arms"]["arm"]["difference"]
    # differences 0.1, 0.05, 0.1: mean 1/12, sd sqrt(1/1200), se = sd / sqrt(3), t = 5
    mean, sd = 1 / 12, math.sqrt((2 * (1 / 60) ** 2 + (1 / 30) ** 2) / 2)
    assert d["mean"] == pytest.approx(mean) and d["sd"] == pytest.approx(sd)
    assert d["t"] == pytest.approx(5.0)
    t975 = 4.302652729911275  # t quantile, 2 degrees of freedom
    assert d["ci_low"] == pytest.approx(mean - t975 * sd / math.sqrt(3))
    assert d["ci_high"] == pytest.approx(mean + t975 * sd / math.sqrt(3))
    assert d["p_value"] == pytest.approx(2 * (1 - (0.5 + 5 / (2 * math.sqrt(27)))))  # closed form of the t(2) cdf
    c = st["arms"]["arm"]["corrected"]
    se = sd * math.sqrt(1 / 3 + 10 / 20)  # Nadeau-Bengio: var * (1/k + n_test/n_train)
    assert c["t"] == pytest.approx(mean / se)
    assert c["ci_low"] == pytest.approx(mean - t975 * se) and c["p_value"] > d["p_value"]
    m = st["arms"]["arm"]["mcnemar"]
    assert (m["reference_only"], m["arm_only"]) == (1, 3)
    assert m["p_value"] == pytest.approx(2 * 5 / 16) and m["exact"]  # binomial: 2 * P(X <= 1 | 4, 1/2)
    assert st["arms"]["real"]["mean"] == pytest.approx(0.7) and st["arms"]["arm"]["pooled"] == pytest.approx(5 / 6)
    assert st["small_k"] and "difference" not in st["arms"]["real"]
    assert "corrected" not in ablation_statistics(scores, None, None)["arms"]["arm"]


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    from synth.ablation.cache import try_claim

    lock = tmp_path / "cell.lock"
    first = try_claim(lock)
    assert first is not None and try_claim(lock) is None  # held by a live process (us)
    first.release()
    import socket

    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345, "time": 0}))  # no such process
    again = try_claim(lock)
    assert again is not None
    again.release()
    assert not lock.exists()


def test_arms_and_bad_types():
    from synth.ablation import AblationError, build_arms

    arms = build_arms(["unrelated", "blended", "blended:0.75"], [1.0, 2.0])
    assert [a.name for a in arms] == ["real", "unrelated", "unrelated_x2", "blended", "blended_x2", "blended75", "blended75_x2"]
    assert arms[5].mixes == (0.75,) and arms[3].mixes == (0.55,)
    with pytest.raises(AblationError, match="unknown type 'sideways'"):
        build_arms(["sideways"], [1.0])
    with pytest.raises(AblationError, match="--ratio"):
        build_arms(["unrelated"], [0.0])


def test_ablation_folds_resume_and_report(tmp_path, data, network, monkeypatch):
    import synth.ablation.runner as runner
    from synth.ablation import run_ablation
    from synth.data.dataset import open_dataset
    from synth.data.folds import read_folds

    out = tmp_path / "out"
    cfg = config(data, network, test_data=str(data))
    # a run killed after 4 of its 6 cells ...
    rec = Recorder(fail_after=4)
    monkeypatch.setattr(runner, "train_classifier", rec)
    with pytest.raises(KeyboardInterrupt):
        run_ablation(cfg, out)
    assert len(list((out / "cells").glob("fold*/*.json"))) == 4
    assert not list((out / "cells").glob("fold*/*.lock"))  # claims are released on the way out
    # ... resumes with the two missing cells only
    rec2 = Recorder()
    monkeypatch.setattr(runner, "train_classifier", rec2)
    res = run_ablation(cfg, out)
    assert len(rec2.calls) == 2 and len(res.trained) == 2

    ds = open_dataset(data)
    folds = read_folds(out / "folds.csv", ds)
    real_files = {r.file for r in ds.records}
    for call in rec.calls + rec2.calls:
        fold = int(call["desc"].split()[1])
        held_out = {r.file for r, f in zip(ds.records, folds) if f == fold}
        # the epoch is chosen on an inner split of the training folds: never a held-out image
        inner = set(call["val_files"])
        assert inner and not inner & held_out
        real_train = [f for f, s in zip(call["train_files"], call["source"]) if s == "own"]
        assert set(real_train) | inner == real_files - held_out and not set(real_train) & inner
        subject = {r.file: r.subject for r in ds.records}
        assert not {subject[f] for f in inner} & {subject[f] for f in real_train}  # subjects kept whole
        syn = [f for f, s in zip(call["train_files"], call["source"]) if s == "extra"]
        assert ("real" in call["desc"]) == (not syn)
        assert all(f.startswith(f"synthetic/fold{fold}/") for f in syn)  # only this fold's synthetic set
        assert call["seed"] == fold  # every arm of a fold starts from the same initialisation

    # all images of one z (one progression) sit in one fold's set; counts follow the training folds
    for fold in range(2):
        syn = open_dataset(out / "synthetic" / f"fold{fold}" / "age_progression")
        groups = [r.subject for r in syn.records]
        assert all(groups.count(g) == 5 for g in groups)  # 5 progression steps per identity
        other = open_dataset(out / "synthetic" / f"fold{1 - fold}" / "age_progression")
        assert not set(groups) & {r.subject for r in other.records}
        train_idx = [i for i, f in enumerate(folds) if f != fold]
        n_aff = {d: sum(ds[i].labels["disease"] == d for i in train_idx) for d in ("syndrome_a", "syndrome_b")}
        unrel = open_dataset(out / "synthetic" / f"fold{fold}" / "unrelated")
        for d, n in n_aff.items():  # study rule: per age, round(mean count over the ages)
            assert sum(r.labels["disease"] == d for r in unrel.records) == 3 * int(n / 3 + 0.5)
        assert not any(r.labels["disease"] == "unaffected" for r in unrel.records)

    # a deleted cell is the only one redone; the report is rebuilt from all cells
    (out / "cells" / "fold1" / "unrelated.json").unlink()
    rec3 = Recorder()
    monkeypatch.setattr(runner, "train_classifier", rec3)
    res2 = run_ablation(cfg, out)
    assert [c["desc"] for c in rec3.calls] == ["fold 1 / unrelated"]
    for name in ("report.md", "results.json", "per_arm.csv", "per_cell.csv", "gain.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    import hashlib

    assert results["generator"]["network_sha256"] == hashlib.sha256(network.read_bytes()).hexdigest()
    st = results["cv"]["statistics"]["accuracy"]
    assert set(st["arms"]) == {"real", "unrelated", "age_progression"}
    cells = [json.loads((out / "cells" / f"fold{f}" / "real.json").read_text()) for f in range(2)]
    assert st["arms"]["real"]["scores"] == [c["val"]["metrics"]["accuracy"] for c in cells]
    gain = np.subtract(st["arms"]["unrelated"]["scores"], st["arms"]["real"]["scores"]).mean()
    assert st["arms"]["unrelated"]["difference"]["mean"] == pytest.approx(gain)
    assert st["n_test"] == pytest.approx(len(ds) / 2) and st["n_train"] == pytest.approx(len(ds) / 2)
    assert results["test"]["statistics"]["accuracy"]["arms"]["real"]["scores"]
    report = (out / "report.md").read_text()
    assert "only 2 folds" in report and "leaked" in report
    sel = results["epoch_selection"]
    assert sel["mode"] == "inner" and sel["inner_val"] == 0.2 and set(sel["best_epochs"]) == set(st["arms"])
    assert all(0 <= e < sel["epochs"] for e in sel["best_epochs"]["real"]) and len(sel["best_epochs"]["real"]) == 2
    assert "scored at the best epoch on an inner validation split (20% of the training folds" in report
    assert "Mean best epoch of" in report
    cell = json.loads((out / "cells" / "fold0" / "real.json").read_text())
    assert cell["epoch_selection"] == "inner" and cell["n_inner_val"] > 0
    assert res2.results["cv"]["statistics"] == results["cv"]["statistics"]

    # another plan in the same folder is refused (--force would wipe it)
    from synth.ablation import AblationError

    with pytest.raises(AblationError, match="different settings"):
        run_ablation(config(data, network, test_data=str(data), seed=3), out)


def test_matched_control_repeats_real_images_with_the_synthetic_counts(tmp_path, data, network, monkeypatch):
    from collections import Counter

    import synth.ablation.runner as runner
    from synth.ablation import AblationConfig, run_ablation
    from synth.data.dataset import open_dataset

    out = tmp_path / "out"
    rec = Recorder()
    monkeypatch.setattr(runner, "train_classifier", rec)
    # the last epoch is scored: no inner split takes images out of these tiny cells
    res = run_ablation(config(data, network, types=["unrelated"], matched_control=True, ratios=[2.0],
                              epoch_selection="last"), out)
    assert [a.name for a in res.arms] == ["real", "real_matched_x2", "unrelated_x2"]
    ds = open_dataset(data)
    cell_of = {r.file: (r.labels["disease"], r.labels["age"]) for r in ds.records}
    calls = {(int(c["desc"].split()[1]), c["desc"].split(" / ")[1]): c for c in rec.calls}
    for fold in range(2):
        real, ctrl, syn = (calls[fold, a] for a in ("real", "real_matched_x2", "unrelated_x2"))
        assert set(ctrl["source"]) == {"own"}  # real images only...
        n_real = len(real["train_files"])
        extra = ctrl["train_files"][n_real:]
        assert ctrl["train_files"][:n_real] == real["train_files"] and set(extra) <= set(real["train_files"])
        # ...as many more as the synthetic arm gets, in the same cells
        syn_set = open_dataset(out / "synthetic" / f"fold{fold}" / "unrelated_x2")
        assert Counter(cell_of[f] for f in extra) == Counter((r.labels["disease"], r.labels["age"]) for r in syn_set.records)
        assert len(extra) == sum(s == "extra" for s in syn["source"]) > 0
        assert json.loads((out / "cells" / f"fold{fold}" / "real_matched_x2.json").read_text())["n_repeated"] == len(extra)

    results = json.loads((out / "results.json").read_text())
    m = results["cv"]["matched"]["real_matched_x2"]["accuracy"]
    st = results["cv"]["statistics"]["accuracy"]["arms"]
    assert m["reference"] == "real_matched_x2" and set(m["arms"]) == {"real_matched_x2", "unrelated_x2"}
    gain = np.subtract(st["unrelated_x2"]["scores"], st["real_matched_x2"]["scores"]).mean()
    assert m["arms"]["unrelated_x2"]["difference"]["mean"] == pytest.approx(gain)
    assert "Gain over the matched control `real_matched_x2`" in (out / "report.md").read_text()
    import csv

    rows = list(csv.DictReader((out / "per_arm.csv").open()))
    vs = {(r["scope"], r["metric"], r["arm"], r["reference"]) for r in rows}
    assert ("cv", "accuracy", "unrelated_x2", "real_matched_x2") in vs and ("cv", "accuracy", "unrelated_x2", "real") in vs
    assert ("cv", "accuracy", "real_matched_x2", "real_matched_x2") not in vs  # no row of a control against itself

    # a folder made before the control existed reports (and resumes) without it; one made before
    # the inner split keeps its epoch choice (on the held-out fold), so its cells stay comparable
    plan = json.loads((out / "plan.json").read_text())
    del plan["config"]["matched_control"]
    del plan["config"]["epoch_selection"]
    old = AblationConfig.from_dict(plan["config"])
    assert old.matched_control is False and old.epoch_selection == "held_out"
    from synth.ablation import AblationError

    with pytest.raises(AblationError, match="--inner-val"):
        run_ablation(config(data, network, inner_val=0.9), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_one_factor_stage_data_with_factor_option(tmp_path):
    # NF1-like data: one ordinal factor, age_progression steps through the stages (--factor stage)
    from synth.networks import Generator
    from synth.networks.checkpoint import save_checkpoint

    schema = "factors:\n- {name: stage, levels: [early, intermediate, late], embed_dim: 8, ordinal: true}\n"
    rows = [{"file": f"img/{k:04d}.png", "stage": st, "subject": f"s{k:04d}"}
            for k, st in enumerate(["early", "intermediate", "late"] * 4)]
    data = write_tiny_dataset(tmp_path / "ds", rows, schema=schema)
    space = ConditionSpace.from_dict({"factors": [
        {"name": "stage", "levels": ["early", "intermediate", "late"], "embed_dim": 8, "ordinal": True}]})
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, space=space, img_resolution=16, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16}).eval()
    save_checkpoint(tmp_path / "g.ckpt", {"G_ema": G, "space": space})
    from synth.cli import main

    args = ["ablate", "--data", str(data), "--network", str(tmp_path / "g.ckpt"), "--cond", "stage", "--target", "stage",
            "--types", "age_progression", "--folds", "2", "--model", "test_efficientnet", "--epochs", "1", "--batch", "4",
            "--aug", "none", "--psi", "1.0", "--no-progress", "--out", str(tmp_path / "out")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1 and "need the ordinal factor 'age' (--factor)" in r.output
    r = CliRunner().invoke(main, [*args, "--factor", "stage"])
    assert r.exit_code == 0, r.output
    assert "real_matched" in r.output and "age_progression" in r.output
    syn = json.loads((tmp_path / "out" / "cells" / "fold0" / "age_progression.json").read_text())
    ctrl = json.loads((tmp_path / "out" / "cells" / "fold0" / "real_matched.json").read_text())
    # the control follows the count rule (6 training images, 2 per stage -> 2 more per stage); a
    # progression type makes whole 5-step progressions, so its own count may differ by rounding
    assert ctrl["n_repeated"] == 6 and syn["n_synthetic"] == 5


def test_gan_per_fold_trains_on_training_folds_only(tmp_path, data, monkeypatch):
    from synth.ablation import run_ablation
    from synth.data.dataset import open_dataset
    from synth.data.folds import read_folds

    cfg = config(data, None, gan_per_fold=True, types=["unrelated"], gan_kimg=0.004, gan_resolution=16, gan_options=TINY_GAN)
    out = tmp_path / "out"
    res = run_ablation(cfg, out)
    ds = open_dataset(data)
    folds = read_folds(out / "folds.csv", ds)
    for f in range(2):
        info = json.loads((out / "gans" / f"fold{f}" / "generator.json").read_text())
        assert info["n_images"] == int((folds != f).sum()) and info["kimg"] == pytest.approx(0.004)
        assert (out / "gans" / f"fold{f}" / info["snapshot"]).is_file()
    assert res.results["generator"]["mode"] == "per_fold" and not res.results["generator"]["may_leak"]
    assert len(res.trained) == 4


@pytest.mark.parametrize("args, message", [
    (["--types", "unrelated,sideways"], "unknown type 'sideways'"),
    (["--ratio", "0"], "--ratio"),
    (["--ratio", "-1"], "--ratio"),
    (["--data", "MISSING"], "--data"),
    (["--network", "MISSING"], "--network"),
    (["--network", None], "--network"),
    (["--gan-per-fold"], "exclude each other"),
    (["--model", "no_such_net"], "unknown model"),
])
def test_cli_bad_arguments_fail_in_one_line(tmp_path, data, network, args, message):
    from synth.ablation.cli import ablate

    opts = {"--data": str(data), "--network": str(network), "--out": str(tmp_path / "o"), "--folds": "2",
            "--model": "test_efficientnet", "--size": "32", "--epochs": "1"}
    extra = []
    for i in range(0, len(args), 2):
        key, val = args[i], args[i + 1] if i + 1 < len(args) else None
        if key == "--gan-per-fold":
            extra.append(key)
            continue
        if val is None:
            opts.pop(key)
        else:
            opts[key] = str(tmp_path / val) if val == "MISSING" else val
    argv = [x for kv in opts.items() for x in kv] + extra + ["--no-progress"]
    r = CliRunner().invoke(ablate, argv)
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], r.output
    assert not (tmp_path / "o" / "cells").exists()


@pytest.mark.parametrize("earlier", [None, "empty", "results"])
def test_failed_ablate_leaves_out_as_it_was(tmp_path, data, network, earlier):
    """A classifier checkpoint as --network fails; before the fix it left plan.json behind
    (and --force had already wiped the earlier results), so the corrected command was refused."""
    import torch.nn as nn

    from classifiers.checkpoint import save_classifier
    from synth.ablation.cli import ablate
    from synth.ablation.runner import check_out_dir

    clf = save_classifier(tmp_path / "clf" / "model.safetensors", nn.Linear(4, 2), {"model": "small_cnn"})
    out = tmp_path / "o"
    if earlier is not None:
        out.mkdir()
    if earlier == "results":  # an earlier ablation with other settings; --force would replace it
        (out / "plan.json").write_text('{"fingerprint": {"seed": 99}}')
        (out / "cells" / "fold0").mkdir(parents=True)
        (out / "cells" / "fold0" / "real.json").write_text("{}")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) if out.exists() else None
    argv = ["--data", str(data), "--network", str(clf), "--out", str(out), "--folds", "2", "--types", "unrelated",
            "--model", "test_efficientnet", "--size", "32", "--epochs", "1", "--no-progress"]
    r = CliRunner().invoke(ablate, argv + (["--force"] if earlier == "results" else []), catch_exceptions=False)
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(clf) in lines[0], r.output
    if before is None:
        assert not out.exists()
    else:
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    if earlier != "results":  # the corrected command would not be refused
        assert check_out_dir(out, config(data, network, types=["unrelated"]), force=False) is False


def test_perfect_generator_arm_renders_new_atlas_subjects_for_the_synthetic_counts(tmp_path, monkeypatch):
    """The ceiling of the experiment: fresh atlas faces of new subjects, same cells and counts as
    the synthetic arms, never one of the data's images; refused for data that is no atlas."""
    from collections import Counter

    import synth.ablation.runner as runner
    from synth.ablation import AblationError, run_ablation
    from synth.conditions import ConditionSpace
    from synth.data.atlas import render_atlas
    from synth.data.dataset import open_dataset
    from synth.networks import Generator
    from synth.networks.checkpoint import save_checkpoint

    atlas = render_atlas(tmp_path / "atlas", kind="faces", per_cell=4, resolution=16, seed=0, progress=False)
    space = ConditionSpace.default(["disease", "age"], embed_total=16)
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, space=space, img_resolution=16, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16}).eval()
    save_checkpoint(tmp_path / "g.ckpt", {"G_ema": G, "space": space})
    rec = Recorder()
    monkeypatch.setattr(runner, "train_classifier", rec)
    out = tmp_path / "out"
    res = run_ablation(config(atlas, tmp_path / "g.ckpt", types=["unrelated", "perfect"], matched_control=True,
                              epoch_selection="last"), out)
    assert [a.name for a in res.arms] == ["real", "real_matched", "unrelated", "perfect"]
    real_pixels = {open_dataset(atlas).read_bytes(i) for i in range(len(open_dataset(atlas)))}
    for fold in range(2):
        perfect = open_dataset(out / "synthetic" / f"fold{fold}" / "perfect")
        unrel = open_dataset(out / "synthetic" / f"fold{fold}" / "unrelated")
        cells = lambda ds: Counter((r.labels["disease"], r.labels["age"]) for r in ds.records)  # noqa: E731
        assert cells(perfect) == cells(unrel) and len(perfect) > 0  # the synthetic arms' cells and counts
        assert not any(perfect.read_bytes(i) in real_pixels for i in range(len(perfect)))  # new faces
    report = (out / "report.md").read_text()
    assert "### Power check: the perfect generator `perfect`" in report
    # data that is not an atlas has no new subjects to draw
    from tests.helpers import grid_rows, write_tiny_dataset

    plain = write_tiny_dataset(tmp_path / "plain", grid_rows(["syndrome_a", "unaffected"], ["infant", "child"], per_cell=3))
    with pytest.raises(AblationError, match="needs an atlas"):
        run_ablation(config(plain, tmp_path / "g.ckpt", types=["perfect"], cond=["disease", "age"]), tmp_path / "o2")


def test_replace_mode_and_synthetic_only_arms(tmp_path, data, network, monkeypatch):
    """--replace: a synthetic arm's epoch is as long as the real set's; --synthetic-only: the
    synthetic images alone, the same set as the arm with real images, scored on real folds."""
    import synth.ablation.runner as runner
    from synth.ablation import run_ablation

    out = tmp_path / "out"
    rec = Recorder()
    monkeypatch.setattr(runner, "train_classifier", rec)
    res = run_ablation(config(data, network, types=["unrelated"], replace=True, synthetic_only=True,
                              epoch_selection="last"), out)
    assert [a.name for a in res.arms] == ["real", "unrelated", "unrelated_only"]
    calls = {(int(c["desc"].split()[1]), c["desc"].split(" / ")[1]): c for c in rec.calls}
    for fold in range(2):
        real, syn, only = (calls[fold, a] for a in ("real", "unrelated", "unrelated_only"))
        n_real = len(real["train_files"])
        assert real["epoch_size"] is None and syn["epoch_size"] == n_real  # the same steps as real
        assert len(syn["train_files"]) > n_real  # ...drawn from real and synthetic images together
        extra = [f for f, s in zip(syn["train_files"], syn["source"]) if s == "extra"]
        assert set(only["source"]) == {"extra"} and only["train_files"] == extra  # the same synthetic set, alone
        assert only["epoch_size"] is None
        assert only["val_files"] == real["val_files"]  # scored on the real held-out fold
        cell = json.loads((out / "cells" / f"fold{fold}" / "unrelated_only.json").read_text())
        assert cell["n_train_real"] == 0 and cell["n_synthetic"] == len(extra)
        assert json.loads((out / "cells" / f"fold{fold}" / "unrelated.json").read_text())["epoch_size"] == n_real
    assert sorted(p.name for p in (out / "synthetic" / "fold0").iterdir() if p.is_dir()) == ["unrelated"]
    report = (out / "report.md").read_text()
    assert "Replace mode" in report and "`unrelated_only`" in report
    results = json.loads((out / "results.json").read_text())
    assert results["cv"]["matched"] == {} and results["config"]["replace"] is True


def test_epoch_size_sets_the_steps_of_an_epoch(monkeypatch):
    import classifiers.train as train_mod
    from classifiers.data import LabelledImages
    from classifiers.train import train_classifier

    from classifiers.data import parse_target

    target = parse_target("disease", SPACE)
    n = 20
    images = LabelledImages(images=torch.randint(0, 255, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)),
                            targets=np.eye(3, dtype=np.float32)[np.arange(n) % 3], weights=np.ones(n, dtype=np.float32),
                            files=[f"{i}.png" for i in range(n)], source=["own"] * n)
    steps = []
    real_step = train_mod.Trainer.step
    monkeypatch.setattr(train_mod.Trainer, "step", lambda self, *a: steps.append(1) or real_step(self, *a))
    res = train_classifier(images, None, target, tiny_train(epochs=2, batch=4), epoch_size=8)
    assert len(steps) == 2 * 2 and res.meta["epoch_size"] == 8  # 8 images of batch 4, twice
    steps.clear()
    train_classifier(images, None, target, tiny_train(epochs=1, batch=4))
    assert len(steps) == 5  # all 20 images without it
    from classifiers.data import ClassifierDataError

    with pytest.raises(ClassifierDataError, match="epoch size 21"):
        train_classifier(images, None, target, tiny_train(), epoch_size=21)


def test_fold_gans_from_a_base_with_a_pool_chosen_by_judges(tmp_path, data, monkeypatch):
    """The study's fold GANs: each starts from the base's weights, trains on the fold's images plus
    the pool of other subjects, and is chosen by the judges with the selection rule."""
    from synth.ablation import AblationError, run_ablation
    from synth.data.dataset import open_dataset
    from synth.data.folds import read_folds
    from synth.networks.checkpoint import load_checkpoint
    from synth.training.cli import train as train_cmd
    from tests.helpers import save_judge

    pool = write_tiny_dataset(tmp_path / "pool", grid_rows(["unaffected"], ["infant", "child", "adolescent"], per_cell=3),
                              seed=99, schema=SCHEMA)
    r = CliRunner().invoke(train_cmd, [
        "--data", str(pool), "--cond", "none", "--kimg", "0.004", "--resolution", "16", "--batch", "4", "--z-dim", "16",
        "--map-layers", "1", "--channel-base", "256", "--channel-max", "16", "--aug", "none", "--out", str(tmp_path / "b"),
        "--no-progress", "--seed", "3"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    base = next((tmp_path / "b").iterdir())
    judge = save_judge(tmp_path / "judge" / "model.safetensors", ["disease"], SPACE.factor("disease").levels)
    # lr 0: the fold GANs keep the base's weights, so the transfer is visible in their snapshots
    gan = dict(TINY_GAN, lr=0.0, judge_per_cell=2)
    cfg = config(data, None, gan_per_fold=True, types=["unrelated"], gan_kimg=0.008, gan_resolution=16, gan_options=gan,
                 gan_base=str(base), gan_pool=str(pool), gan_judges=[str(judge)], epoch_selection="last")
    out = tmp_path / "out"
    import synth.networks.checkpoint as ckpt_mod

    base_reads = []  # the base's weights are read by each fresh fold GAN, never to check or resume
    real_load = ckpt_mod.load_checkpoint
    monkeypatch.setattr(ckpt_mod, "load_checkpoint",
                        lambda p, *a, **k: (base_reads.append(1) if Path(p).parent == base else None) or real_load(p, *a, **k))
    res = run_ablation(cfg, out)
    assert len(base_reads) == 2
    folds = read_folds(out / "folds.csv", open_dataset(data))
    base_g = load_checkpoint(base / json.loads((base / "latest.json").read_text())["snapshot"])["G_ema"].state_dict
    for f in range(2):
        info = json.loads((out / "gans" / f"fold{f}" / "generator.json").read_text())
        assert info["n_pool"] == 9 and info["n_images"] == int((folds != f).sum()) + 9
        assert info["selected"] == "best" and info["snapshot"] == "best.ckpt" and info["base"] == str(base)
        assert info["selection"]["select"] is not None and "judge/disease" in info["selection"]
        fold_g = load_checkpoint(out / "gans" / f"fold{f}" / "best.ckpt")["G_ema"].state_dict
        synth_keys = [k for k in base_g if k.startswith("synthesis.")]
        assert synth_keys and all(torch.equal(fold_g[k], base_g[k]) for k in synth_keys)
    assert res.results["generator"]["gan_pool"] == str(pool) and len(res.results["generator"]["folds"]) == 2
    report = (out / "report.md").read_text()
    assert "### Fold GANs" in report and "best.ckpt (best)" in report
    (out / "gans" / "fold0" / "generator.json").unlink()  # as if killed after its last snapshot
    base_reads.clear()
    run_ablation(cfg, out)
    assert base_reads == [] and (out / "gans" / "fold0" / "generator.json").is_file()
    # another folder (other classifier settings) takes these fold GANs instead of training its own
    import dataclasses

    from synth.training.training_loop import Trainer

    monkeypatch.setattr(Trainer, "train", lambda self: pytest.fail("a fold GAN was trained again"))
    cfg2 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=cfg.train.epochs + 1), gans_from=str(out))
    run_ablation(cfg2, tmp_path / "out2")
    for f in range(2):
        theirs, ours = out / "gans" / f"fold{f}", tmp_path / "out2" / "gans" / f"fold{f}"
        assert json.loads((ours / "generator.json").read_text())["taken_from"] == str(theirs)
        assert (ours / "best.ckpt").read_bytes() == (theirs / "best.ckpt").read_bytes()
    assert "taken_from" not in json.loads((out / "gans" / "fold0" / "generator.json").read_text())
    # fold GANs made with other settings are refused before anything is written
    with pytest.raises(AblationError, match=r"other settings \(gan_kimg\)"):
        run_ablation(dataclasses.replace(cfg2, gan_kimg=0.016), tmp_path / "out3")
    assert not (tmp_path / "out3").exists()
    with pytest.raises(AblationError, match="--gans-from: only with --gan-per-fold"):
        run_ablation(config(data, tmp_path / "nowhere.ckpt", gans_from=str(out)), tmp_path / "out4")
    # the pool must hold other subjects: the data itself is refused, before anything is written
    with pytest.raises(AblationError, match="also in --data"):
        run_ablation(config(data, None, gan_per_fold=True, types=["unrelated"], gan_options=TINY_GAN,
                            gan_resolution=16, gan_pool=str(data)), tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
    with pytest.raises(AblationError, match="--gan-base: only with --gan-per-fold"):
        run_ablation(config(data, tmp_path / "nowhere.ckpt", gan_base=str(base)), tmp_path / "o3")


def test_rare_cells_get_their_own_accuracy_and_gain(tmp_path, network, monkeypatch):
    """Cells with fewer than half the median cell's real images are the rare ones: their pooled
    accuracy, Wilson interval and paired gains agree with the per-cell table."""
    from synth.ablation import run_ablation

    rows = grid_rows(["syndrome_a", "syndrome_b", "unaffected"], ["infant", "child", "adolescent"], per_cell=6)
    rare = {("syndrome_a", "infant"), ("syndrome_b", "adolescent")}
    kept, seen = [], {}
    for r in rows:
        cell = (r["disease"], r["age"])
        seen[cell] = seen.get(cell, 0) + 1
        if cell not in rare or seen[cell] <= 2:
            kept.append(r)
    data = write_tiny_dataset(tmp_path / "skewed", kept, schema=SCHEMA)
    out = tmp_path / "out"
    res = run_ablation(config(data, network, types=["unrelated"], matched_control=True, epoch_selection="last"), out)
    rc = res.results["cv"]["rare_cells"]
    assert sorted(map(tuple, rc["cells"])) == sorted(rare) and rc["n"] == 4
    oof = res.results["cv"]["oof"]
    for arm, e in rc["arms"].items():
        cells = [c for c in oof[arm]["per_cell"] if tuple(c["cell"]) in rare]
        assert e["correct"] == sum(c["correct"] for c in cells) and e["accuracy"] == pytest.approx(e["correct"] / 4)
        assert e["ci_low"] <= e["accuracy"] <= e["ci_high"]
        if arm != "real":
            d = e["vs_real"]
            assert d["difference"] == pytest.approx(e["accuracy"] - rc["arms"]["real"]["accuracy"])
            assert d["ci_low"] <= d["difference"] <= d["ci_high"] and 0 <= d["mcnemar_p"] <= 1
    assert rc["arms"]["unrelated"]["vs_matched"]["control"] == "real_matched"
    for c in oof["real"]["per_cell"]:
        if c["n"]:
            assert c["ci_low"] <= c["accuracy"] <= c["ci_high"]
    report = (out / "report.md").read_text()
    assert "### Rare cells" in report and "syndrome_a/infant" in report
    assert "ci_low,ci_high" in (out / "per_cell.csv").read_text().splitlines()[0]
    # uniform cells: no rare cell, and the report says so
    res2 = run_ablation(config(write_tiny_dataset(tmp_path / "even", rows, schema=SCHEMA), network, types=["unrelated"],
                               epoch_selection="last"), tmp_path / "out2")
    assert res2.results["cv"]["rare_cells"]["cells"] == []
    assert "No rare cells" in (tmp_path / "out2" / "report.md").read_text()
