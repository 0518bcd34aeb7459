"""Generator quality metrics: progression statistics, identity, KID/FID, memorisation, judges and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from click.testing import CliRunner

from synth.conditions import ConditionSpace
from synth.quality.errors import QualityError
from tests.helpers import grid_rows, write_tiny_dataset
from tests.helpers import save_judge as _save_judge

SPACE = ConditionSpace.default(["disease", "age"], embed_total=32)
TINY_BACKBONE = "test_resnet"


def tiny_generator(space: ConditionSpace, seed: int = 0):
    from synth.networks import Generator

    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, space=space, img_resolution=16, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16})
    return G.eval()


def save_judge(path, factors, class_names, seed=0):
    return _save_judge(path, factors, class_names, seed=seed, model="test_efficientnet", size=32)


def joint_classes(space, factors):
    return ["|".join(c) for c in space.cells(factors)]


# ---- progression statistics ----------------------------------------------------------------


def test_expected_grade_monotone_and_spearman_on_hand_made_sequences():
    from synth.quality.progression import expected_grade, monotone_fraction, progression_consistency, spearman_summary

    probs = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])
    assert np.allclose(expected_grade(probs), [0.0, 0.5, 2.0])
    seqs = [[0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0], [1, 1, 1, 1]]
    assert monotone_fraction(seqs) == pytest.approx(0.5)  # increasing one and the flat one
    assert monotone_fraction(seqs, increasing=False) == pytest.approx(0.5)
    s = spearman_summary(seqs)
    assert s["n_flat"] == 1 and s["n_defined"] == 3
    assert s["mean_rho"] == pytest.approx((1.0 + 0.8 - 1.0) / 3)
    summary = progression_consistency(np.array(seqs[:2], dtype=float))
    assert summary["monotone_fraction"] == pytest.approx(0.5)
    assert summary["mean_grade_per_step"] == pytest.approx([0, 1.5, 1.5, 3])


# ---- identity --------------------------------------------------------------------------------


def test_identity_same_z_beats_different_z_with_backbone():
    from synth.quality.features import random_backbone_extractor
    from synth.quality.identity import BackboneDescriptor, identity_similarity

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.float64)
    frames = np.stack([np.clip(base + rng.normal(0, 8, size=base.shape), 0, 255) for _ in range(3)], axis=1)
    frames = frames.astype(np.uint8)  # [4 identities, 3 frames, 32, 32, 3]: noisy copies of each base image
    desc = BackboneDescriptor(random_backbone_extractor(TINY_BACKBONE, size=32, seed=0))
    feats = desc(frames.reshape(12, 32, 32, 3)).reshape(4, 3, -1)
    res = identity_similarity(feats)
    assert res["n_same_pairs"] == 4 * 3 and res["n_different_pairs"] == 6 * 3
    assert res["same_z_similarity"] > res["different_z_similarity"]
    assert res["gap"] > 0
    # groups restrict "different z" pairs to the same label
    grouped = identity_similarity(feats, groups=["a", "a", "b", "b"])
    assert grouped["n_different_pairs"] == 2 * 3


def test_identity_distance_threshold_fields():
    from synth.quality.identity import identity_similarity

    d = np.zeros((2, 2, 3))
    d[0, :, 0] = 1.0
    d[1, :, 1] = 1.0
    res = identity_similarity(d, same_threshold=0.6)
    assert res["same_z_distance"] == 0 and res["different_z_distance"] == pytest.approx(np.sqrt(2))
    assert res["same_z_under_threshold"] == 1.0 and res["different_z_under_threshold"] == 0.0
    assert res["gap"] == pytest.approx(1.0)


def test_dlib_descriptor_same_image_zero_distance():
    from synth.quality.identity import DlibDescriptor

    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(2, 32, 32, 3)).astype(np.uint8)
    d = DlibDescriptor()(np.concatenate([imgs, imgs[:1]]))
    assert d.shape == (3, 128)
    assert np.allclose(d[0], d[2]) and np.linalg.norm(d[0] - d[1]) > 0


# ---- KID / FID -------------------------------------------------------------------------------


def test_fid_kid_zero_for_identical_sets_positive_for_different():
    from synth.quality.fid import distribution_metrics, frechet_distance, kernel_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 8))
    b = rng.normal(loc=1.5, size=(40, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    assert frechet_distance(a, b) > 1.0
    # the low-rank form is the same quantity as torch-fidelity's covariance form
    assert frechet_distance(a, b, "low_rank") == pytest.approx(frechet_distance(a, b, "covariance"), rel=1e-6)
    wide_a, wide_b = rng.normal(size=(6, 20)), rng.normal(loc=0.5, size=(9, 20))  # fewer images than features
    assert frechet_distance(wide_a, wide_b, "low_rank") == pytest.approx(frechet_distance(wide_a, wide_b, "covariance"),
                                                                        rel=1e-6)
    assert abs(frechet_distance(wide_a, wide_a)) < 1e-9
    same, diff = kernel_distance(a, a, subsets=10, seed=0), kernel_distance(a, b, subsets=10, seed=0)
    assert diff["kid"] > 0.1 and abs(same["kid"]) < 0.05 * diff["kid"]
    assert same["kid_subset_size"] == 40  # small sets: the whole set per subset
    cells = [("x",)] * 20 + [("y",)] * 20
    res = distribution_metrics(a, cells, b[:3], [("x",)] * 2 + [("y",)], [("x",), ("y",), ("z",)], subsets=5)
    assert res["per_cell"]["x"]["n_real"] == 20 and res["per_cell"]["x"]["kid_subset_size"] == 2
    assert "fid" not in res["per_cell"]["y"] and "note" in res["per_cell"]["y"]  # one generated image only
    assert "z" not in res["per_cell"] and res["overall"]["n_generated"] == 3


def test_inception_extractor_reads_local_weights_safely(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from synth.quality.features import inception_extractor

    # Build the network once without weights to get tensors of the right names and shapes.
    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
    monkeypatch.setattr("torch_fidelity.feature_extractor_inceptionv3.torch.load", lambda *a, **k: {})
    torch.manual_seed(0)
    sd = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused").state_dict()
    monkeypatch.undo()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "inception.safetensors"))
    ex = inception_extractor(tmp_path / "inception.safetensors")
    imgs = np.random.default_rng(0).integers(0, 256, size=(1, 16, 16, 3)).astype(np.uint8)
    f = ex(imgs)
    assert f.shape == (1, 2048) and ex.comparable and np.isfinite(f).all()
    bad = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(QualityError, match="do not fit"):
        inception_extractor(tmp_path / "bad.safetensors")


# ---- memorisation ----------------------------------------------------------------------------


def test_memorisation_finds_exact_copy(tmp_path):
    from synth.quality.features import pixel_features
    from synth.quality.memorisation import memorisation_report, side_by_side_png

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(6, 16, 16, 3)).astype(np.uint8)
    gen = rng.integers(0, 256, size=(3, 16, 16, 3)).astype(np.uint8)
    gen[1] = real[4]
    rf, gf = rng.normal(size=(6, 5)), rng.normal(size=(3, 5)) + 3.0
    gf[1] = rf[4]
    rep = memorisation_report(gf, rf, pixel_features(gen, 8), pixel_features(real, 8),
                              [f"g{i}" for i in range(3)], [f"r{i}" for i in range(6)], top=2)
    top = rep["closest_pairs"][0]
    assert (top["generated"], top["real"], top["feature_distance"]) == ("g1", "r4", 0.0)
    assert rep["closest_pixel_pairs"][0]["real"] == "r4" and rep["closest_pixel_pairs"][0]["pixel_distance"] == 0.0
    assert rep["feature"]["generated_nn_min"] == 0.0 and rep["feature"]["real_nn_min"] > 0
    assert rep["feature"]["fraction_below_real_p5"] == pytest.approx(1 / 3)
    side_by_side_png([gen[1]], [real[4]], ["g1\nr4"], tmp_path / "pairs.png")
    assert (tmp_path / "pairs.png").stat().st_size > 0


# ---- judges ----------------------------------------------------------------------------------


def _constructed_judge(space, right: np.ndarray):
    """A joint disease,age judge that reads the true cell from pixel (0, 0) and is right where ``right``."""
    from synth.quality.fidelity import Judge

    names = joint_classes(space, ["disease", "age"])

    def predict(images):
        p = np.zeros((len(images), len(names)))
        for i, im in enumerate(images):
            k = int(im[0, 0, 0])
            p[i, k if right[i] else (k + 1) % len(names)] = 1.0  # wrong: the next class (same disease, next age)
        return p

    return Judge("constructed", ("disease", "age"), tuple(names), predict)


def test_judge_accuracy_per_cell_on_constructed_judge():
    from synth.quality.fidelity import condition_fidelity

    cells = SPACE.cells()[:2] * 2  # syndrome_a/infant, syndrome_a/child, twice
    images = np.zeros((4, 8, 8, 3), np.uint8)
    images[:, 0, 0, 0] = [0, 1, 0, 1]
    right = np.array([True, True, False, True])
    res = {r["factor"]: r for r in condition_fidelity([_constructed_judge(SPACE, right)], images, cells, SPACE)}
    # the wrong answer keeps the disease and moves the age by one bracket
    assert res["disease"]["accuracy"] == 1.0
    assert res["age"]["accuracy"] == pytest.approx(0.75)
    assert res["age"]["per_cell"]["syndrome_a|infant"]["accuracy"] == pytest.approx(0.5)
    assert res["age"]["per_cell"]["syndrome_a|child"]["accuracy"] == 1.0
    assert res["age"]["per_level"] == {"infant": 0.5, "child": 1.0}


def test_judge_class_mismatch_is_an_error():
    from synth.quality.fidelity import Judge

    good = Judge("j", ("disease",), SPACE.factor("disease").levels, lambda x: None)
    good.check(SPACE)
    with pytest.raises(QualityError, match="not a level of 'disease'"):
        Judge("j", ("disease",), ("syndrome_a", "measles"), lambda x: None).check(SPACE)
    with pytest.raises(QualityError, match="judges factor 'stage'"):
        Judge("j", ("stage",), ("early", "late"), lambda x: None).check(SPACE)


# ---- CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from synth.networks.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("quality")
    save_checkpoint(d / "g.ckpt", {"G_ema": tiny_generator(SPACE), "space": SPACE})
    rows = grid_rows(SPACE.factor("disease").levels, SPACE.factor("age").levels, per_cell=1)
    write_tiny_dataset(d / "data", rows, size=16)
    save_judge(d / "judge", ["disease", "age"], joint_classes(SPACE, ["disease", "age"]))
    save_judge(d / "stage_judge", ["stage"], ["early", "intermediate", "late"])
    save_judge(d / "disease_judge", ["disease"], SPACE.factor("disease").levels)
    return d


FAST = ["--per-cell", "2", "--seeds", "0-1", "--steps", "3", "--feature-model", TINY_BACKBONE, "--feature-size", "32",
        "--kid-subsets", "3", "--mean-w-samples", "20", "--pixel-size", "8", "--top", "3", "--quiet"]


def run_cli(args):
    from synth.quality.cli import metrics

    return CliRunner().invoke(metrics, args)


def test_cli_writes_metrics_json_and_md(setup, tmp_path):
    out = tmp_path / "m"
    r = run_cli(["--network", str(setup / "g.ckpt"), "--data", str(setup / "data"), "--judge", str(setup / "judge"),
                 "--kind", "skin", "--out", str(out), *FAST])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "metrics.json").read_text())
    assert res["settings"]["metrics"] == ["fidelity", "progression", "fid", "memorisation", "variety"]
    fid = {x["factor"]: x for x in res["fidelity"]["results"]}
    assert set(fid) == {"disease", "age"} and fid["age"]["n"] == 2 * len(SPACE.cells())
    assert 0.0 <= fid["age"]["accuracy"] <= 1.0
    prog = res["progression"]
    assert prog["factor"] == "age" and prog["steps"] == 3 and prog["n_morphs"] == 2 * 3  # 2 seeds x 3 affected diseases
    assert len(prog["grade"]["sequences"]) == 6 and prog["identity"]["n_different_pairs"] == 3 * 3
    assert res["fid"]["overall"]["n_real"] == len(SPACE.cells()) and "kid" in res["fid"]["overall"]
    assert res["features"]["comparable_with_published"] is False
    assert len(res["memorisation"]["closest_pairs"]) == 3 and (out / "memorisation_top.png").is_file()
    md = (out / "metrics.md").read_text()
    assert "## KID / FID" in md and "## Memorisation" in md and "Spearman" in md
    # same seed, same numbers
    out2 = tmp_path / "m2"
    r2 = run_cli(["--network", str(setup / "g.ckpt"), "--data", str(setup / "data"), "--judge", str(setup / "judge"),
                  "--kind", "skin", "--out", str(out2), *FAST])
    assert r2.exit_code == 0, r2.output
    res2 = json.loads((out2 / "metrics.json").read_text())
    assert res2["fid"] == res["fid"] and res2["fidelity"] == res["fidelity"]


def test_cli_default_metrics_follow_inputs(setup, tmp_path):
    r = run_cli(["--network", str(setup / "g.ckpt"), "--kind", "skin", "--out", str(tmp_path / "p"), *FAST])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert res["settings"]["metrics"] == ["progression"] and res["progression"]["grade"] is None
    assert any("--judge-age" in n for n in res["notes"])


def test_cli_skin_stage_progression_with_age_judge(setup, tmp_path):
    from synth.networks.checkpoint import save_checkpoint

    skin = ConditionSpace.default(["stage"], embed_total=16).with_ties({"stage": {"intermediate": ["early", "late"]}})
    save_checkpoint(tmp_path / "skin.ckpt", {"G_ema": tiny_generator(skin, 1), "space": skin})
    r = run_cli(["--network", str(tmp_path / "skin.ckpt"), "--judge-age", str(setup / "stage_judge"),
                 "--seeds", "0-2", "--per-cell", "2", "--out", str(tmp_path / "s"), *FAST[6:]])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert res["kind"] == "skin" and res["settings"]["metrics"] == ["fidelity", "progression"]
    g = res["progression"]["grade"]
    assert g["n_sequences"] == 3 and len(g["sequences"][0]["grades"]) == 5  # default 5 steps
    assert all(0.0 <= x <= 2.0 for s in g["sequences"] for x in s["grades"])
    assert "backbone" in res["progression"]["identity"]["descriptor"]
    assert res["fidelity"]["results"][0]["factor"] == "stage"


def test_cli_variety_per_cell_and_overall(setup, tmp_path):
    rows = grid_rows(SPACE.factor("disease").levels, SPACE.factor("age").levels, per_cell=4)
    write_tiny_dataset(tmp_path / "data4", rows, size=16, seed=1)
    base = ["--network", str(setup / "g.ckpt"), "--data", str(tmp_path / "data4"), "--metrics", "variety",
            "--per-cell", "4", "--prdc-k", "2", *FAST[2:]]
    keys = {"precision", "recall", "density", "coverage"}

    def check_prdc(e, n):
        assert keys <= set(e) and e["n"] == n
        assert all(0.0 <= e[q] <= 1.0 for q in ("precision", "recall", "coverage")) and e["density"] >= 0.0

    r = run_cli([*base, "--judge", str(setup / "judge"), "--out", str(tmp_path / "j")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "j" / "metrics.json").read_text())
    assert res["settings"]["metrics"] == ["variety"] and res["settings"]["prdc_k"] == 2
    v = res["variety"]
    assert v["features"]["source"] == "judge" and v["features"]["judge"] == str(setup / "judge")
    assert "penultimate" in v["features"]["name"] and v["pixel_size"] == 32 and v["k"] == 2  # the judge's input size
    assert len(v["per_cell"]) == len(SPACE.cells())
    for e in v["per_cell"].values():
        assert (e["n_real"], e["n_real_used"], e["n_generated"]) == (4, 4, 4)
        assert e["pixel_diversity"] > 0 and e["pixel_distance_real"] > 0
        check_prdc(e["prdc"], 4)
    pd = v["pixel_diversity"]
    assert pd["n_cells"] == len(SPACE.cells()) and 0 < pd["min"] <= pd["mean"]
    assert v["per_cell"][pd["worst_cell"]]["pixel_diversity"] == pd["min"]
    check_prdc(v["overall"], 40)  # 80 real images pooled, halved
    check_prdc(v["real_reference"], 40)
    md = (tmp_path / "j" / "metrics.md").read_text()
    assert "## Variety" in md and "real vs real (reference)" in md and "random features" not in md
    # no judge: the random backbone, flagged as weak
    r = run_cli([*base, "--out", str(tmp_path / "n")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "n" / "metrics.json").read_text())
    assert res["variety"]["features"]["source"] == "random" and res["variety"]["pixel_size"] == 32  # --feature-size
    assert any("random" in n and "variety" in n for n in res["notes"])
    assert "random features are weak" in (tmp_path / "n" / "metrics.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--network", "{d}/missing.ckpt"], "checkpoint not found"),
    (["--network", "{d}/g.ckpt", "--metrics", "variety"], "--data is needed"),
    (["--network", "{d}/g.ckpt", "--metrics", "fid"], "--data is needed"),
    (["--network", "{d}/g.ckpt", "--metrics", "fidelity"], "needs at least one --judge"),
    (["--network", "{d}/g.ckpt", "--judge", "{d}/stage_judge", "--metrics", "fidelity"], "judges factor 'stage'"),
    (["--network", "{d}/g.ckpt", "--judge-age", "{d}/disease_judge"], "not the progression factor 'age'"),
    (["--network", "{d}/g.ckpt", "--judge", "{d}/data/labels.csv"], "--judge"),
    (["--network", "{d}/g.ckpt", "--metrics", "fid,bogus"], "unknown metric"),
    (["--network", "{d}/g.ckpt", "--data", "{d}/data", "--metrics", "fid", "--inception", "{d}/data/labels.csv"],
     "--inception"),
])
def test_cli_one_line_errors(setup, tmp_path, args, message):
    out = tmp_path / "e"
    r = run_cli([a.format(d=setup) for a in args] + ["--out", str(out), *FAST])
    assert r.exit_code != 0
    assert message in r.output
    err_lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]
    assert len(err_lines) == 1 and "Traceback" not in r.output
    assert not (out / "metrics.json").exists()
