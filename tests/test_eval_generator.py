"""tools/eval_generator.py: the judge panel end to end on a tiny generator, its cache and its errors."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from synth.conditions import ConditionSpace
from tests.helpers import tiny_generator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

FACES = ConditionSpace.default(["disease", "age"], embed_total=32)
SKIN = ConditionSpace.default(["stage"], embed_total=16)
# tiny panel: 3 atlas faces per cell, 1 epoch, 3 generated images per cell, 4 morph identities
TINY = ["--judge-per-cell", "3", "--epochs", "1", "--per-cell", "3", "--identities", "4", "--batch", "16",
        "--threads", "1"]


def run_tool(args):
    from eval_generator import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from synth.networks.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("panel")
    # a training snapshot (G, G_ema, kimg, progress) and an exported generator (G_ema + space only)
    save_checkpoint(d / "network-snapshot-000012.ckpt", {"G": tiny_generator(FACES, 1), "G_ema": tiny_generator(FACES, 0),
                                                         "space": FACES, "kimg": 12.0})
    save_checkpoint(d / "exported.ckpt", {"G_ema": tiny_generator(FACES, 2), "space": FACES})
    save_checkpoint(d / "skin.ckpt", {"G_ema": tiny_generator(SKIN, 3), "space": SKIN, "kimg": 4.0})
    return d


def _in01(v, allow_none=True):
    return (v is None and allow_none) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def test_faces_panel_end_to_end_and_cache_reuse(ckpts, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    snap, exported = ckpts / "network-snapshot-000012.ckpt", ckpts / "exported.ckpt"
    r = run_tool([snap, exported, "--out", out, "--cache", cache, *TINY])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "panel.json").read_text())
    assert res["format"] == "synth-judge-panel/1" and res["kind"] == "faces"
    assert "not used to train or choose the generator" in res["statement"]
    assert res["atlases"]["judge_training"]["seed"] == 11 and res["atlases"]["second_real"]["seed"] == 12
    assert res["atlases"]["second_real"]["images"] == 3 * len(FACES.cells())

    panel = res["panel"]
    assert panel["factors"] == ["disease", "age"]
    judges = panel["factor_judges"]
    assert len(judges) == 2 * 2 * 2  # 2 factors x 2 architectures x 2 seeds
    assert {j["model"] for j in judges} == {"small_cnn", "small_cnn_s"} and {j["seed"] for j in judges} == {0, 1}
    assert all(_in01(j["real"]["accuracy"], False) and j["cached"] is False for j in judges)
    assert [a["target"] for a in panel["attribute_judges"]] == ["skin_tone", "hair_colour", "hair_style"]
    assert panel["attribute_judges"][0]["classes"] == ["<0.25", "0.25-0.5", "0.5-0.75", ">=0.75"]
    for a in panel["attribute_judges"]:
        assert _in01(a["real"]["balanced_accuracy"], False) and isinstance(a["real"]["informative"], bool)
    assert panel["all_cached"] is False
    rr = res["real_vs_real"]
    assert all(_in01(rr[k]) for k in ("precision", "recall", "coverage")) and rr["density"] >= 0

    assert [c["path"] for c in res["checkpoints"]] == [str(snap), str(exported)]
    for c, path in zip(res["checkpoints"], (snap, exported)):
        assert c["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert c["n_generated"] == 3 * len(FACES.cells())
        for factor in ("disease", "age"):
            fid = c["fidelity"][factor]
            assert len(fid["judges"]) == 4
            for j in fid["judges"]:
                assert _in01(j["accuracy_generated"], False) and _in01(j["accuracy_real"], False)
                assert j["ratio"] is None or j["ratio"] >= 0
            w = fid["worst"]
            assert w["accuracy_generated"] == min(j["accuracy_generated"] for j in fid["judges"])
            assert w["judge"] in {j["judge"] for j in fid["judges"]}
        v = c["variety"]
        assert all(_in01(v["prdc"][k]) for k in ("precision", "recall", "coverage")) and v["prdc"]["density"] >= 0
        assert v["prdc"]["n_generated"] == v["prdc"]["n_reference"] == 3 * len(FACES.cells())
        assert v["real_vs_real"]["coverage"] == rr["coverage"]
        div = v["within_cell_diversity"]
        assert len(div["per_cell"]) == len(FACES.cells()) and div["mean"] > 0 and div["min"] <= div["mean"]
        for name in ("skin_tone", "hair_colour", "hair_style"):
            a = c["attributes"][name]
            assert a["entropy_ratio"] is None or a["entropy_ratio"] >= 0
            assert _in01(a["tv"], False)
            assert sum(a["generated_share"]) == pytest.approx(1.0)
        m = c["morphs"]
        assert m["factor"] == "age" and m["n_identities"] == 4 and len(m["sequences"]) == 4
        assert all(len(s["grades"]) == 5 and all(0 <= g <= 4 for g in s["grades"]) for s in m["sequences"])
        assert {s["disease"] for s in m["sequences"]} == set(FACES.factor("disease").levels)  # one identity each
        assert all(s["rho"] is None or -1 <= s["rho"] <= 1 for s in m["sequences"])
        assert _in01(m["monotone_fraction"], False)
    assert res["checkpoints"][0]["kimg"] == 12.0 and res["checkpoints"][1]["kimg"] is None

    md = (out / "panel.md").read_text()
    assert "not used to train or choose the generator" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| `")]
    assert len(rows) == 2 and "network-snapshot-000012.ckpt" in rows[0] and "| 12 |" in rows[0]
    assert "disease gen/real (worst judge)" in md and "monotone age morphs" in md and "hair style entropy ratio" in md

    # second evaluation: every judge and atlas comes from the cache, the numbers are the same
    out2 = tmp_path / "out2"
    r2 = run_tool([snap, "--out", out2, "--cache", cache, *TINY])
    assert r2.exit_code == 0, r2.output
    res2 = json.loads((out2 / "panel.json").read_text())
    assert res2["panel"]["all_cached"] is True
    assert all(j["cached"] and j["train_seconds"] is None for j in res2["panel"]["factor_judges"])
    assert ": training" not in r2.output and "judge disease/small_cnn/s0: cached" in r2.output
    assert ": training" in r.output  # the first run did train
    assert "atlas: cached" in r2.output
    assert res2["checkpoints"][0]["fidelity"] == res["checkpoints"][0]["fidelity"]
    assert res2["checkpoints"][0]["variety"] == res["checkpoints"][0]["variety"]


def test_skin_panel(ckpts, tmp_path):
    out = tmp_path / "skin"
    r = run_tool([ckpts / "skin.ckpt", "--out", out, "--cache", tmp_path / "cache", "--archs", "small_cnn_s",
                  "--judge-seeds", "0", "--judge-per-cell", "6", "--epochs", "1", "--per-cell", "3",
                  "--identities", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "[panel]" not in r.output  # --quiet
    res = json.loads((out / "panel.json").read_text())
    assert res["kind"] == "skin" and res["panel"]["factors"] == ["stage"]
    assert [a["target"] for a in res["panel"]["attribute_judges"]] == ["skin_tone", "freckles"]
    c = res["checkpoints"][0]
    assert set(c["fidelity"]) == {"stage"} and len(c["fidelity"]["stage"]["judges"]) == 1
    assert c["morphs"]["factor"] == "stage" and c["morphs"]["n_identities"] == 3
    assert all(len(s["grades"]) == 3 for s in c["morphs"]["sequences"])
    md = (out / "panel.md").read_text()
    assert "stage gen/real (worst judge)" in md and "freckles entropy ratio" in md and "monotone stage morphs" in md


@pytest.mark.parametrize("args, message", [
    (["{d}/missing.ckpt"], "missing.ckpt: checkpoint not found"),
    (["{d}"], "is a folder"),
    (["{d}/exported.ckpt", "{d}/skin.ckpt"], "different kinds"),
    (["{d}/exported.ckpt", "--per-cell", "1"], "--per-cell 1"),
    (["{d}/exported.ckpt", "--atlas-seeds", "0,12"], "seed 0 is the training atlas"),
    (["{d}/exported.ckpt", "--atlas-seeds", "11"], "--atlas-seeds"),
    (["{d}/exported.ckpt", "--archs", "no_such_net"], "--archs: unknown model"),
    (["{d}/exported.ckpt", "--judge-seeds", "a"], "--judge-seeds"),
])
def test_bad_input_is_one_line_error(ckpts, tmp_path, args, message):
    out = tmp_path / "e"
    r = run_tool([a.format(d=ckpts) for a in args] + ["--out", out, "--cache", tmp_path / "cache", "--quiet"])
    assert r.exit_code != 0
    assert message in r.output, r.output
    assert len([ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]) == 1
    assert "Traceback" not in r.output and not (out / "panel.json").exists()


def test_not_a_checkpoint_names_the_file(tmp_path):
    bad = tmp_path / "junk.ckpt"
    bad.write_text("hello")
    r = run_tool([bad, "--out", tmp_path / "e", "--cache", tmp_path / "cache", "--quiet"])
    assert r.exit_code != 0 and "junk.ckpt" in r.output and "Traceback" not in r.output


def test_one_swap_of_neighbours_still_rises():
    """Over five levels one swapped pair is rho 0.9 exactly (scipy: 0.8999999999999998): monotone by
    the rule; two swaps or a flat morph are not."""
    from scipy.stats import spearmanr

    from synth.quality.panel.scoring import rises

    one_swap = float(spearmanr(range(5), [0, 1, 3, 2, 4]).statistic)
    assert one_swap < 0.9 and rises(one_swap)
    assert not rises(float(spearmanr(range(5), [1, 0, 3, 2, 4]).statistic)) and not rises(None)
