"""Morphs, style-mixing grids, renders (GIF/MP4) and teaching sets with quiz scoring."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth.conditions import ConditionSpace
from synth.synthesis.errors import SynthesisError
from tests.helpers import assert_close, tiny_generator, run_synthesis_cli

SPACE = ConditionSpace.default(["disease", "age"], embed_total=32)
SKIN = ConditionSpace.from_levels({"stage": ["early", "intermediate", "late"]}, embed_total=16,
                                  ties={"stage": {"intermediate": ["early", "late"]}})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from synth.networks.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(d / "faces.ckpt", {"G_ema": tiny_generator(SPACE), "space": SPACE})
    save_checkpoint(d / "skin.ckpt", {"G_ema": tiny_generator(SKIN, 1), "space": SKIN})
    return d


run = run_synthesis_cli


def renderer(G, psi=0.7):
    from synth.synthesis.engine import Renderer

    return Renderer(G, psi=psi, noise_mode="const", mean_w_samples=64, batch=4)


# ----------------------------------------------------------------------------------------
# Morph


def test_morph_end_frames_equal_pure_condition_images():
    from synth.synthesis.morph import render_morph, resolve_morph

    G = tiny_generator(SPACE)
    rend = renderer(G)
    spec = resolve_morph(SPACE, "age", "infant", "older_adult", "syndrome_b")
    keys, anim = render_morph(rend, SPACE, spec, seed=11, steps=5, frames=7)
    assert keys.shape == (5, 16, 16, 3) and anim.shape == (7, 16, 16, 3)
    pure_a = renderer(G).images([11], SPACE.encode({"disease": "syndrome_b", "age": "infant"})[None])[0]
    pure_b = renderer(G).images([11], SPACE.encode({"disease": "syndrome_b", "age": "older_adult"})[None])[0]
    for first, last in ((keys[0], keys[-1]), (anim[0], anim[-1])):
        assert np.array_equal(first, pure_a) and np.array_equal(last, pure_b)
    assert not np.array_equal(keys[2], pure_a) and not np.array_equal(keys[2], pure_b)
    # ease in/out: the animation moves slowly at the ends, fast in the middle
    d = [np.abs(anim[i + 1].astype(int) - anim[i].astype(int)).sum() for i in range(6)]
    assert d[0] < d[3] and d[-1] < d[3]


def test_morph_spec_errors():
    from synth.synthesis.morph import resolve_morph

    with pytest.raises(SynthesisError, match="--from"):
        resolve_morph(SPACE, "age", "baby", "child")
    with pytest.raises(SynthesisError, match="both"):
        resolve_morph(SPACE, "age", "child", "child")
    with pytest.raises(SynthesisError, match="--disease"):
        resolve_morph(SPACE, "age", None, None, "flu")
    spec = resolve_morph(SPACE, "age", None, None)
    assert (spec.start, spec.end, spec.fixed) == ("infant", "older_adult", {"disease": "syndrome_a"})


def test_cli_morph_writes_strip_gif_mp4_and_sheet(tmp_path, ckpts):
    import imageio.v3 as iio
    import imageio_ffmpeg

    out = tmp_path / "m"
    r = run(["morph", "--network", ckpts / "faces.ckpt", "--from", "infant", "--to", "older_adult", "--disease", "syndrome_a",
             "--seeds", "0-1", "--frames", "6", "--steps", "3", "--out", out, "--quiet", "--mean-w-samples", "32"])
    assert r.exit_code == 0, r.output
    for s in (0, 1):
        gif = iio.imread(out / f"morph_s{s}.gif", index=None)
        assert gif.shape[0] == 6
        n, _ = imageio_ffmpeg.count_frames_and_secs(str(out / f"morph_s{s}.mp4"))
        assert n == 6
        assert (out / f"morph_s{s}.png").stat().st_size > 0
    info = json.loads((out / "morph.json").read_text())
    assert info["steps"] == 3 and [e["frames"] for e in info["seeds"]] == [6, 6]
    assert (out / "contact_sheet.png").exists()
    assert not list(out.glob(".*"))  # no temporary files left


def test_cli_morph_one_factor_skin_space(tmp_path, ckpts):
    out = tmp_path / "skin"
    r = run(["morph", "--network", ckpts / "skin.ckpt", "--factor", "stage", "--from", "early", "--to", "late",
             "--seeds", "3", "--no-video", "--out", out, "--quiet", "--mean-w-samples", "32"])
    assert r.exit_code == 0, r.output
    assert (out / "morph_s3.png").exists() and not (out / "morph_s3.gif").exists()
    info = json.loads((out / "morph.json").read_text())
    assert (info["factor"], info["from"], info["to"], info["fixed"]) == ("stage", "early", "late", {})
    # the strip holds the default 5 steps of one identity, and the stage moves it: first and last frames differ
    from synth.synthesis.engine import Renderer
    from synth.synthesis.morph import morph_label, resolve_morph
    from synth.networks.checkpoint import load_generator

    G, space, _ = load_generator(ckpts / "skin.ckpt")
    spec = resolve_morph(space, "stage", "early", "late", None)
    ends = Renderer(G, psi=info["psi"] if "psi" in info else 1.0, mean_w_samples=32).images(
        [3, 3], np.stack([morph_label(space, spec, 0.0), morph_label(space, spec, 1.0)]), noise_seed=3)
    assert not np.array_equal(ends[0], ends[1])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--from", "baby"], "--from"),
        (["--from", "child", "--to", "child"], "--from and --to"),
        (["--steps", "1"], "--steps"),
        (["--factor", "height"], "height"),
        (["--seeds", "1-x"], "--seeds"),
    ],
)
def test_cli_morph_bad_arguments(tmp_path, ckpts, extra, message):
    r = run(["morph", "--network", ckpts / "faces.ckpt", "--out", tmp_path / "o", "--quiet", *extra])
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], r.output


def test_cli_morph_missing_checkpoint(tmp_path):
    r = run(["morph", "--network", tmp_path / "missing.ckpt", "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "not found" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_default_network_prefers_runs_then_the_bundled_generator_with_the_factor(tmp_path, ckpts, monkeypatch):
    import shutil

    import synth.synthesis.network as netmod

    monkeypatch.setattr(netmod, "_SOURCE_ROOT", tmp_path / "no-source-tree")
    root = tmp_path / "proj"
    with pytest.raises(SynthesisError, match="--network: not given and no snapshot"):
        netmod.find_default_network(root)
    (root / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpts / "faces.ckpt", root / "checkpoints" / "demo-faces.ckpt")
    assert netmod.find_default_network(root) == root / "checkpoints" / "demo-faces.ckpt"
    with pytest.raises(SynthesisError, match="no generator with a 'stage' factor"):
        netmod.find_default_network(root, factor="stage")
    shutil.copy(ckpts / "skin.ckpt", root / "checkpoints" / "demo-skin.ckpt")
    assert netmod.find_default_network(root, factor="stage") == root / "checkpoints" / "demo-skin.ckpt"
    assert netmod.find_default_network(root, factor="age") == root / "checkpoints" / "demo-faces.ckpt"
    # a run snapshot wins over the bundled files, the newest run and kimg first
    for run, kimg in [("00000-a", "00010.000"), ("00001-b", "00002.000"), ("00001-b", "00004.000")]:
        (root / "runs" / run).mkdir(parents=True, exist_ok=True)
        shutil.copy(ckpts / "faces.ckpt", root / "runs" / run / f"network-snapshot-{kimg}.ckpt")
    newest = root / "runs" / "00001-b" / "network-snapshot-00004.000.ckpt"
    assert netmod.find_default_network(root) == newest
    assert netmod.find_default_network(root, factor="stage") == root / "checkpoints" / "demo-skin.ckpt"
    # the source tree's bundled files are found from any working directory
    monkeypatch.setattr(netmod, "_SOURCE_ROOT", root)
    assert netmod.find_default_network(tmp_path / "elsewhere", factor="stage") == root / "checkpoints" / "demo-skin.ckpt"


# ----------------------------------------------------------------------------------------
# Style mixing grid


def test_mix_grid_cells_take_row_layers_and_column_rest(tmp_path):
    from synth.synthesis.mix import style_mix_grid, write_mix_grid

    G = tiny_generator(SPACE)
    rend = renderer(G)
    fed = []
    h = G.synthesis.register_forward_pre_hook(lambda mod, args: fed.append(args[0].detach().clone()))
    lab = SPACE.encode({"disease": "syndrome_a", "age": "child"})
    try:
        grid = style_mix_grid(rend, lab, [0, 1], [10, 11, 12], [0, 1, 2])
    finally:
        h.remove()
    assert grid.cells.shape == (2, 3, 16, 16, 3)
    ws_r = rend.ws([0, 1], np.stack([lab] * 2))
    ws_c = rend.ws([10, 11, 12], np.stack([lab] * 3))
    cells_ws = torch.cat(fed[2:])  # after the row and column sources
    for r in range(2):
        for c in range(3):
            w = cells_ws[r * 3 + c]
            assert_close(w[:3], ws_r[r, :3])
            assert_close(w[3:], ws_c[c, 3:])
    path = write_mix_grid(grid, tmp_path, "syndrome_a / child", save_individual=True)
    assert path.exists() and len(list((tmp_path / "individual").glob("mix_r*_c*.png"))) == 6


def test_cli_mix(tmp_path, ckpts):
    from PIL import Image

    r = run(["mix", "--network", ckpts / "faces.ckpt", "--rows", "0-1", "--cols", "5-7", "--styles", "0-2",
             "--cond", "disease=syndrome_b,age=child", "--out", tmp_path / "mix", "--mean-w-samples", "32"])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "mix" / "mix.png").size[0] > 4 * 128
    r = run(["mix", "--network", ckpts / "faces.ckpt", "--cond", "disease=flu", "--out", tmp_path / "mix2"])
    assert r.exit_code != 0 and "flu" in r.output


# ----------------------------------------------------------------------------------------
# Teaching sets


def _srcs(html_text):
    return re.findall(r'<img src="([^"]+)"', html_text)


def test_teaching_set_gallery_and_quiz(tmp_path):
    from synth.synthesis.teach import make_teaching_set

    rend = renderer(tiny_generator(SPACE))
    res = make_teaching_set(rend, SPACE, tmp_path, per_cell=1, seed=3, quiz=True, quiz_per_cell=1, steps=3, progress=False,
                            exclude={"age": {"adolescent", "young_adult"}})
    index = (tmp_path / "index.html").read_text()
    srcs = _srcs(index)
    assert len(srcs) == 4 * 3 + 4  # one per kept cell + one morph strip per disease
    assert all((tmp_path / s).is_file() for s in srcs)
    assert "<style>" in index and "http" not in index
    heads = re.findall(r"<th>([a-z_]+)</th>", index)
    assert heads[:3] == ["infant", "child", "older_adult"]  # level order, not alphabetical
    assert heads[3:7] == list(SPACE.factor("disease").levels)
    quiz = (tmp_path / "quiz.html").read_text()
    qsrcs = _srcs(quiz)
    assert qsrcs == [f"quiz/{i:03d}.png" for i in range(1, 13)] and all((tmp_path / s).is_file() for s in qsrcs)
    for lv in ("syndrome_a", "older_adult"):  # quiz pages show no labels next to images
        assert lv not in re.sub(r"<ul>.*</ul>", "", quiz, flags=re.S)
    with open(tmp_path / "answer_key.csv") as f:
        key = list(csv.DictReader(f))
    assert [int(r["number"]) for r in key] == list(range(1, 13))
    assert {(r["disease"], r["age"]) for r in key} == {(d, a) for d in SPACE.factor("disease").levels for a in ("infant", "child", "older_adult")}
    assert [(r["disease"], r["age"]) for r in key] != sorted((r["disease"], r["age"]) for r in key)  # shuffled
    # a quiz image is exactly the rendering of its key's label and seed
    r0 = key[0]
    img = rend.images([int(r0["seed"])], SPACE.encode({"disease": r0["disease"], "age": r0["age"]})[None])[0]
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(tmp_path / r0["file"]).convert("RGB")), img)
    assert len(res.quiz) == 12


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_quiz_scoring_on_a_hand_made_sheet(tmp_path):
    from synth.synthesis.teach import score_quiz

    key = write_csv(tmp_path / "key.csv", ["number", "file", "disease", "age"], [
        [1, "quiz/001.png", "syndrome_a", "child"],
        [2, "quiz/002.png", "syndrome_a", "child"],
        [3, "quiz/003.png", "syndrome_b", "infant"],
        [4, "quiz/004.png", "unaffected", "infant"],
    ])
    ans = write_csv(tmp_path / "ans.csv", ["number", "disease", "age"], [
        [2, "Syndrome A", "child"],  # right (case/space tolerant)
        [1, "syndrome_b", "child"],  # disease wrong, age right
        [3, "syndrome_b", ""],  # age missing
    ])  # 4 missing entirely
    rep = score_quiz(ans, key)
    assert rep["items"] == 4 and rep["correct"] == 1 and rep["accuracy"] == 0.25
    assert rep["missing"] == [3, 4] and rep["answered"] == 2
    assert rep["per_factor"]["disease"] == {"correct": 2, "total": 4, "accuracy": 0.5}
    assert rep["per_factor"]["age"] == {"correct": 2, "total": 4, "accuracy": 0.5}
    assert rep["per_cell"]["syndrome_a/child"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert rep["per_cell"]["syndrome_b/infant"]["correct"] == 0

    r = run(["teach", "score", ans, "--key", key, "--out", tmp_path / "rep.json"])
    assert r.exit_code == 0 and "1/4" in r.output and "missing" in r.output
    assert json.loads((tmp_path / "rep.json").read_text())["per_factor"]["disease"]["correct"] == 2

    assert rep["unknown"] == []
    typo = write_csv(tmp_path / "typo.csv", ["number", "disease", "age"], [[3, "syndrom_b", "infant"], [4, "unaffected", "infant"]])
    rep = score_quiz(typo, key)
    assert rep["unknown"] == [(3, "disease", "syndrom_b")] and rep["correct"] == 1  # counted wrong, and listed
    r = run(["teach", "score", typo, "--key", key])
    assert r.exit_code == 0 and "warning: answer 3: disease 'syndrom_b' is not a level of the quiz" in r.output

    bad = write_csv(tmp_path / "bad.csv", ["number", "disease", "age"], [[9, "syndrome_a", "child"]])
    r = run(["teach", "score", bad, "--key", key])
    assert r.exit_code != 0 and "9" in r.output and len(r.output.strip().splitlines()) == 1
    nocol = write_csv(tmp_path / "nocol.csv", ["number", "disease"], [[1, "syndrome_a"]])
    r = run(["teach", "score", nocol, "--key", key])
    assert r.exit_code != 0 and "age" in r.output
    r = run(["teach", "score", tmp_path / "none.csv", "--key", key])
    assert r.exit_code != 0 and "not found" in r.output


def test_cli_teach_default_subcommand(tmp_path, ckpts):
    out = tmp_path / "t"
    r = run(["teach", "--network", ckpts / "skin.ckpt", "--per-cell", "1", "--quiz", "--out", out, "--quiet", "--mean-w-samples", "16"])
    assert r.exit_code == 0, r.output
    assert all((out / s).is_file() for s in _srcs((out / "index.html").read_text()))
    with open(out / "answer_key.csv") as f:
        assert {r["stage"] for r in csv.DictReader(f)} == {"early", "intermediate", "late"}
    with open(out / "answers_template.csv") as f:
        assert next(csv.reader(f)) == ["number", "stage"]
    r = run(["teach", "make", "--network", ckpts / "skin.ckpt", "--per-cell", "0", "--out", tmp_path / "t2"])
    assert r.exit_code != 0 and "--per-cell" in r.output


# ----------------------------------------------------------------------------------------
# Which generator made an output: the default pick is printed, every output records it


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


RECORDS = {  # command -> (extra arguments, JSON file, where in it the network record is)
    "generate": (["--type", "unrelated", "--per-cell", "1"], "generation.json", ()),
    "morph": (["--seeds", "0", "--steps", "2", "--no-video"], "morph.json", ()),
    "mix": (["--rows", "0", "--cols", "1"], "mix.json", ()),
    "teach": (["make", "--per-cell", "1", "--steps", "2"], "teach.json", ()),
    "metrics": (["--metrics", "progression", "--kind", "skin", "--seeds", "0-1", "--steps", "2",
                 "--feature-model", "test_resnet", "--feature-size", "32"], "metrics.json", ("settings",)),
}


def _invoke_synth(args):
    from synth.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", sorted(RECORDS))
def test_default_network_is_printed_and_every_output_records_network_and_hash(command, tmp_path, ckpts, monkeypatch):
    from synth.networks.checkpoint import save_checkpoint

    # a barely trained run snapshot in the working directory wins the default pick
    snap = tmp_path / "runs" / "00003-faces" / "network-snapshot-000000.100.ckpt"
    snap.parent.mkdir(parents=True)
    save_checkpoint(snap, {"G_ema": tiny_generator(SPACE, 5), "space": SPACE, "kimg": 0.1})
    monkeypatch.chdir(tmp_path)
    extra, name, where = RECORDS[command]
    quiet = [] if command == "mix" else ["--quiet"]
    r = _invoke_synth([command, *extra, "--out", tmp_path / "o", "--mean-w-samples", "8", *quiet])
    assert r.exit_code == 0, r.output
    rel = snap.relative_to(tmp_path)
    assert f"--network not given: using {rel} (0.1 kimg)" in r.stderr.splitlines()
    rec = json.loads((tmp_path / "o" / name).read_text())
    for key in where:
        rec = rec[key]
    assert rec["network"] == str(rel) and rec["network_sha256"] == _sha256(snap)
    assert rec["network_kimg"] == 0.1 and rec["network_default"] is True

    # an explicit --network is recorded too, and nothing is printed about a pick
    out = tmp_path / "explicit"
    r = _invoke_synth([command, *extra, "--network", ckpts / "faces.ckpt", "--out", out, "--mean-w-samples", "8", *quiet])
    assert r.exit_code == 0, r.output
    assert "--network not given" not in r.output
    rec = json.loads((out / name).read_text())
    for key in where:
        rec = rec[key]
    assert rec["network"] == str(ckpts / "faces.ckpt") and rec["network_sha256"] == _sha256(ckpts / "faces.ckpt")
    assert rec["network_kimg"] is None and rec["network_default"] is False
    if command == "teach":
        assert _sha256(ckpts / "faces.ckpt") in (out / "index.html").read_text()  # shown to the reader too
    if command == "metrics":
        assert _sha256(ckpts / "faces.ckpt") in (out / "metrics.md").read_text()


def test_mix_help_offers_no_factor_option_it_lacks():
    r = _invoke_synth(["mix", "--help"])
    assert r.exit_code == 0
    assert "--factor" not in r.output and "demo-skin" not in r.output
    assert "--factor stage" in _invoke_synth(["morph", "--help"]).output  # morph does take --factor
