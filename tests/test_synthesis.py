"""Synthetic image products: count rule, label plans, rendering, manifests and the generate CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synth.conditions import ConditionSpace
from synth.synthesis.counts import parse_exclusions, resolve_roles, study_counts, uniform_counts
from synth.synthesis.errors import SynthesisError
from tests.helpers import assert_close, run_synthesis_cli, save_tiny_generator, tiny_generator
from synth.synthesis.labels import (
    SeedStream,
    default_style_layers,
    parse_layers,
    parse_seeds,
    plan_products,
    progression_weights,
)

SPACE = ConditionSpace.default(["disease", "age"], embed_total=32)
AGES = SPACE.factor("age").levels


@pytest.fixture(scope="module")
def gen_ckpt(tmp_path_factory):
    return save_tiny_generator(tmp_path_factory.mktemp("ckpt") / "g.ckpt", SPACE)


run = run_synthesis_cli


# A hand-made training count table (disease x age).
TABLE = {
    "syndrome_a": [10, 3, 0, 5, 2],  # total 20 -> mean 4
    "syndrome_b": [1, 2, 3, 4, 6],  # total 16 -> 3.2 -> 3
    "other_condition": [7, 0, 0, 0, 0],  # total 7 -> 1.4 -> 1
    "unaffected": [100, 100, 100, 100, 100],  # control: excluded
}
EXPECTED = {"syndrome_a": 4, "syndrome_b": 3, "other_condition": 1}


def table_counts():
    return {(d, a): n for d, row in TABLE.items() for a, n in zip(AGES, row)}


def study():
    roles = resolve_roles(SPACE)
    return study_counts(SPACE, table_counts(), roles, parse_exclusions(None, SPACE)), roles


def test_study_count_rule_hand_computed():
    counts, _ = study()
    assert set(counts) == {(d, a) for d in EXPECTED for a in AGES}  # control excluded by default
    for (d, a), n in counts.items():
        assert n == EXPECTED[d], (d, a)
    # rare age groups get more than they had, common ones fewer
    assert counts[("syndrome_a", "adolescent")] > TABLE["syndrome_a"][2]
    assert counts[("syndrome_a", "infant")] < TABLE["syndrome_a"][0]
    # half rounds up: 12 images over 5 ages of disease with 2.4 -> 2; 13 -> 2.6 -> 3
    t = {(d, a): 0 for d in TABLE for a in AGES}
    t[("syndrome_a", "infant")] = 13
    t[("syndrome_b", "infant")] = 12
    c = study_counts(SPACE, t, resolve_roles(SPACE), parse_exclusions(None, SPACE))
    assert c[("syndrome_a", "child")] == 3 and c[("syndrome_b", "child")] == 2


def test_exclusions_and_uniform_counts():
    ex = parse_exclusions(["disease=syndrome_b", "age=infant"], SPACE)
    u = uniform_counts(SPACE, 2, ex)
    assert all(c[0] != "syndrome_b" and c[1] != "infant" for c in u)
    assert len(u) == 3 * 4 and set(u.values()) == {2}
    assert ("unaffected", "child") in u  # an explicit list replaces the default control exclusion
    assert len(uniform_counts(SPACE, 1, parse_exclusions(["none"], SPACE))) == 20
    with pytest.raises(Exception, match="unknown level"):
        parse_exclusions(["disease=nope"], SPACE)


@pytest.mark.parametrize("ptype", ["unrelated", "age_related", "age_progression", "style_mixed", "blended"])
def test_each_type_follows_the_count_rule(ptype):
    counts, roles = study()
    items = plan_products(SPACE, ptype, counts, SeedStream(None, 0), roles, mixes=(0.55,))
    # every type totals sum over kept cells (40 here; 43 affected training images before rounding)
    assert len(items) == sum(counts.values()) == 40
    per_disease = {}
    for it in items:
        d = SPACE.decode(it.label)["disease"]
        per_disease[d] = per_disease.get(d, 0) + 1
    assert per_disease == {d: 5 * n for d, n in EXPECTED.items()}
    if ptype in ("unrelated", "age_related", "blended", "style_mixed"):
        cells = {}
        for it in items:
            lv = SPACE.decode(it.label)
            cells[(lv["disease"], lv["age"])] = cells.get((lv["disease"], lv["age"]), 0) + 1
        assert cells == counts


def test_age_related_and_progression_share_z_and_vary_only_age():
    counts, roles = study()
    for ptype in ("age_related", "age_progression"):
        items = plan_products(SPACE, ptype, counts, SeedStream(None, 100), roles)
        groups = {}
        for it in items:
            groups.setdefault(it.group, []).append(it)
        assert len(groups) == 4 + 3 + 1
        dis = SPACE.block("disease")
        for g, its in groups.items():
            assert len(its) == 5 and len({it.seed for it in its}) == 1 and g == f"s{its[0].seed}"
            assert all(np.array_equal(it.label[dis], its[0].label[dis]) for it in its)
            assert len({it.label.tobytes() for it in its}) == 5  # the age part changes
        if ptype == "age_related":
            assert [SPACE.decode(it.label)["age"] for it in groups[next(iter(groups))]] == list(AGES)
        else:
            its = groups[next(iter(groups))]
            assert [it.mix for it in its] == [1.0, 0.75, 0.5, 0.25, 0.0]
            age = SPACE.block("age")
            for it in its:
                blk = it.label[age]
                assert blk[0] == pytest.approx(it.mix) and blk[-1] == pytest.approx(1 - it.mix)
                assert blk[1:-1].sum() == 0
    assert progression_weights(5) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_blended_soft_labels_match_the_mix():
    counts = uniform_counts(SPACE, 4, parse_exclusions(None, SPACE))
    items = plan_products(SPACE, "blended", counts, SeedStream(None, 0), resolve_roles(SPACE), mixes=(0.55, 0.75))
    assert len(items) == 2 * 60
    pairs = set()
    for it in items:
        for f, sl in SPACE.blocks():
            assert it.label[sl].sum() == pytest.approx(1.0, abs=1e-6)
        d = SPACE.factor("disease")
        blk = it.label[SPACE.block("disease")]
        assert blk[d.index(it.mix_from)] == pytest.approx(it.mix)
        assert blk[d.index(it.mix_to)] == pytest.approx(1 - it.mix)
        assert it.mix_to != it.mix_from and "unaffected" not in (it.mix_from, it.mix_to)
        pairs.add((it.mix_from, it.mix_to, it.mix))
    assert len(pairs) == 6 * 2  # every ordered pair of the 3 affected diseases, for each mix


def test_one_factor_space_blends_its_own_levels():
    sk = ConditionSpace.from_levels({"stage": ["early", "intermediate", "late"]}, embed_total=16)
    roles = resolve_roles(sk, "stage")
    counts = study_counts(sk, {("early",): 107, ("intermediate",): 71, ("late",): 103}, roles, {})
    assert counts == {("early",): 94, ("intermediate",): 94, ("late",): 94}  # 281 / 3
    items = plan_products(sk, "blended", {("early",): 2, ("late",): 2}, SeedStream(None, 0), roles, mixes=(0.75,))
    assert {(it.mix_from, it.mix_to) for it in items} == {("early", "late"), ("late", "early")}


def test_all_skips_types_a_space_cannot_make():
    from synth.synthesis.generate import plan_all

    ds = ConditionSpace.from_levels({"disease": ["syndrome_a", "syndrome_b", "unaffected"]}, embed_total=16)
    roles = resolve_roles(ds)
    assert roles.age is None and roles.disease == "disease"
    counts = uniform_counts(ds, 2, parse_exclusions(None, ds))
    items = plan_all(ds, "all", counts, SeedStream(None, 0), roles)
    assert [t for t in ("unrelated", "age_related", "age_progression", "blended", "style_mixed")
            if any(it.type == t for it in items)] == ["unrelated", "blended", "style_mixed"]
    with pytest.raises(SynthesisError, match="ordinal"):
        plan_all(ds, "age_related", counts, SeedStream(None, 0), roles)


def test_seed_and_layer_parsing():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    for bad in ("a-b", "5-1", ""):
        with pytest.raises(SynthesisError):
            parse_seeds(bad)
    assert default_style_layers(14) == list(range(7))
    assert default_style_layers(6) == [0, 1, 2]
    assert parse_layers("0-2", 6) == [0, 1, 2]
    with pytest.raises(SynthesisError, match="outside"):
        parse_layers("0-6", 6)
    s = SeedStream([5, 6])
    assert (s(), s()) == (5, 6)
    with pytest.raises(SynthesisError, match="--seeds"):
        s()


# ----------------------------------------------------------------------------------------
# Rendering


def test_generate_all_is_a_dataset_with_soft_labels_and_subjects(tmp_path):
    from synth.data.dataset import open_dataset
    from synth.synthesis.engine import Renderer
    from synth.synthesis.generate import generate_products

    G = tiny_generator(SPACE)
    counts = uniform_counts(SPACE, 1, parse_exclusions(None, SPACE))
    rend = Renderer(G, psi=0.7, mean_w_samples=64, batch=32)
    rows = generate_products(G, SPACE, "all", counts, 0, 0.7, tmp_path / "out", mixes=(0.55, 0.75), progress=False, renderer=rend)
    ds = open_dataset(tmp_path / "out")
    assert len(ds) == len(rows) == 15 * 6  # 5 types, blended twice
    assert ds.space == SPACE
    by_file = {r.file: r for r in ds.records}
    for row in rows:
        rec = by_file[row.file]
        assert rec.subject == row.group
        np.testing.assert_allclose(rec.soft, row.label, atol=1e-6)
        assert rec.labels == SPACE.decode(row.label)
        assert Image.open(tmp_path / "out" / row.file).size == (16, 16)
    blended = [r for r in ds.records if r.extra["type"] == "blended"]
    assert {r.extra["mix"] for r in blended} == {"0.55", "0.75"}
    for r in blended:
        assert r.soft[SPACE.block("disease")].max() == pytest.approx(float(r.extra["mix"]))
    # no two types share a z; grouped folds see one subject per z
    assert len({(r.extra["type"], r.subject) for r in ds.records}) == len({r.subject for r in ds.records})
    groups = ds.groups()
    assert list(groups) == [r.group for r in rows]
    assert len(set(groups[[r.extra["type"] == "age_related" for r in ds.records]])) == 3  # 3 identities x 5 ages
    with open(tmp_path / "out" / "manifest.csv") as f:
        header = next(csv.reader(f))
    assert header[:4] == ["file", "disease", "age", "subject"] and "p_age=older_adult" in header


def test_age_related_images_share_identity_and_psi_changes_images(tmp_path):
    from synth.synthesis.engine import Renderer

    G = tiny_generator(SPACE)
    rend = Renderer(G, psi=1.0, mean_w_samples=64)
    labs = np.stack([SPACE.encode({"disease": "syndrome_a", "age": a}) for a in AGES])
    ws = rend.ws([7] * 5, labs)
    z = rend.z([7] * 5)
    assert torch.equal(z[0], z[4])
    assert not torch.allclose(ws[0], ws[4])  # same z, the age label moves w
    one = rend.images([7], labs[:1])
    again = Renderer(G, psi=1.0, mean_w_samples=64).images([7], labs[:1])
    assert np.array_equal(one, again)  # same seed, same image
    trunc = Renderer(G, psi=0.0, mean_w_samples=64)
    w0 = trunc.ws([1, 2], labs[:2])
    # psi 0 collapses every seed onto that label's average w
    assert_close(w0[0, 0], trunc.mean_w(labs[0]))
    assert_close(w0[1, 0], trunc.mean_w(labs[1]))


def test_style_mixed_takes_named_layers_from_each_source(tmp_path):
    from synth.synthesis.engine import Renderer
    from synth.synthesis.generate import generate_products

    G = tiny_generator(SPACE)
    fed = []
    h = G.synthesis.register_forward_pre_hook(lambda mod, args, kwargs=None: fed.append(args[0].detach().clone()))
    try:
        counts = {("syndrome_a", "child"): 2}
        rend = Renderer(G, psi=0.8, mean_w_samples=64)
        rows = generate_products(G, SPACE, "style_mixed", counts, [3, 4, 5, 6], 0.8, tmp_path / "o", style_layers=[0, 1],
                                 progress=False, renderer=rend)
    finally:
        h.remove()
    ws = torch.cat(fed)
    lab = np.stack([SPACE.encode({"disease": "syndrome_a", "age": "child"})] * 2)
    coarse, fine = rend.ws([3, 5], lab), rend.ws([4, 6], lab)
    assert_close(ws[:, :2], coarse[:, :2])
    assert_close(ws[:, 2:], fine[:, 2:])
    assert [r.values["seed"] for r in rows] == [3, 5] and [r.values["seed2"] for r in rows] == [4, 6]
    assert rows[0].values["styles"] == "0-1" and rows[0].group == "s3x4"


# ----------------------------------------------------------------------------------------
# CLI


def test_cli_generate_with_training_data(tmp_path, tiny_dataset, gen_ckpt):
    from synth.data.dataset import open_dataset

    out = tmp_path / "gen"
    r = run(["generate", "--network", gen_ckpt, "--type", "unrelated", "--data", tiny_dataset, "--out", out,
             "--mean-w-samples", "32", "--quiet", "--seed", "5"])
    assert r.exit_code == 0, r.output
    ds = open_dataset(out)
    assert len(ds) == 3 * 5 * 2  # tiny_dataset has 2 images per cell; control excluded
    assert sorted(int(r.extra["seed"]) for r in ds.records) == list(range(5, 35))
    assert ds.cell_counts(["disease"])[("unaffected",)] == 0
    first = (out / ds.records[0].file).read_bytes()
    r2 = run(["generate", "--network", gen_ckpt, "--type", "unrelated", "--data", tiny_dataset, "--out", out,
              "--mean-w-samples", "32", "--quiet", "--seed", "5", "--force"])
    assert r2.exit_code == 0 and (out / ds.records[0].file).read_bytes() == first


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--type", "unrelated"], "--data"),
        (["--type", "unrelated", "--per-cell", "1", "--seeds", "x"], "--seeds"),
        (["--type", "unrelated", "--per-cell", "2", "--seeds", "0-3"], "--seeds"),
        (["--type", "unrelated", "--per-cell", "1", "--exclude-level", "disease=nope"], "nope"),
        (["--type", "blended", "--per-cell", "1", "--exclude-level", "disease=syndrome_b",
          "--exclude-level", "disease=other_condition", "--exclude-level", "disease=unaffected"], "two kept levels"),
        (["--type", "style_mixed", "--per-cell", "1", "--styles", "0-9"], "--styles"),
        (["--type", "age_progression", "--per-cell", "1", "--from", "child", "--to", "child"], "--from"),
        (["--type", "unrelated", "--per-cell", "1", "--factor", "height"], "--factor"),
    ],
)
def test_cli_generate_bad_arguments(tmp_path, gen_ckpt, extra, message):
    out = tmp_path / "o"
    r = run(["generate", "--network", gen_ckpt, "--out", out, "--quiet", "--mean-w-samples", "8", *extra])
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.startswith("Error")]
    assert len(lines) == 1 and message in lines[0], r.output
    assert not (out / "labels.csv").exists()


def test_cli_generate_refuses_missing_network_and_non_empty_out(tmp_path, gen_ckpt, monkeypatch):
    import synth.synthesis.network as netmod

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(netmod, "_SOURCE_ROOT", tmp_path / "no-source-tree")  # hide the bundled generators
    r = run(["generate", "--type", "unrelated", "--per-cell", "1", "--out", "o"])
    assert r.exit_code != 0 and "--network" in r.output and len(r.output.strip().splitlines()) == 1
    r = run(["generate", "--network", tmp_path / "nope.ckpt", "--type", "unrelated", "--per-cell", "1", "--out", "o"])
    assert r.exit_code != 0 and "not found" in r.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    r = run(["generate", "--network", gen_ckpt, "--type", "unrelated", "--per-cell", "1", "--out", tmp_path / "full"])
    assert r.exit_code != 0 and "--force" in r.output
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    # the newest run snapshot is found without --network
    run_dir = tmp_path / "runs" / "00003-test"
    run_dir.mkdir(parents=True)
    (run_dir / "network-snapshot-000000.004.ckpt").write_bytes(gen_ckpt.read_bytes())
    r = run(["generate", "--type", "unrelated", "--per-cell", "1", "--out", "o2", "--quiet", "--mean-w-samples", "8"])
    assert r.exit_code == 0, r.output
    picked = Path("runs") / "00003-test" / "network-snapshot-000000.004.ckpt"
    assert r.stderr.splitlines() == [f"--network not given: using {picked} (kimg not recorded)"]
    assert json.loads((tmp_path / "o2" / "generation.json").read_text())["network"] == str(picked)
