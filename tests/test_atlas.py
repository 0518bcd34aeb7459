"""The synthetic phenotype atlas: determinism, labels, caching, CLI and real features."""
from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from synth.conditions import ConditionSpace
from synth.data.atlas import AGE_BRACKETS, AtlasError, atlas_cache_dir, ensure_atlas, render_atlas
from synth.data.atlas import render as render_mod
from synth.data.atlas.cli import atlas as atlas_cmd
from synth.data.atlas.faces import FaceImage, face_geometry, plan_faces, render_face
from synth.data.atlas.skin import plan_skin

RES = 32


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def faces_atlas(tmp_path_factory) -> Path:
    return render_atlas(tmp_path_factory.mktemp("faces") / "a", "faces", per_cell=2, resolution=RES, seed=0,
                        progress=False)


@pytest.fixture(scope="module")
def skin_atlas(tmp_path_factory) -> Path:
    return render_atlas(tmp_path_factory.mktemp("skin") / "a", "skin", per_cell=2, resolution=RES, seed=0,
                        progress=False)


# ---- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["faces", "skin"])
def test_same_seed_same_bytes_different_seed_differs(tmp_path, kind, faces_atlas, skin_atlas):
    ref = faces_atlas if kind == "faces" else skin_atlas
    again = render_atlas(tmp_path / "b", kind, per_cell=2, resolution=RES, seed=0, progress=False)
    assert _digest(again) == _digest(ref)
    other = render_atlas(tmp_path / "c", kind, per_cell=2, resolution=RES, seed=1, progress=False)
    d_ref, d_other = _digest(ref), _digest(other)
    pngs = [k for k in d_ref if k.endswith(".png")]
    assert set(pngs) == {k for k in d_other if k.endswith(".png")}
    assert sum(d_ref[k] != d_other[k] for k in pngs) == len(pngs)


def test_image_depends_only_on_seed_and_index(faces_atlas):
    # order independence: re-rendering one index on its own reproduces the file
    from PIL import Image

    plan = plan_faces(2, 0)
    i = len(plan) - 3
    rng = np.random.default_rng([0, render_mod._KIND_CODE["faces"], 2, i])
    img = render_face(plan[i], RES, rng)
    on_disk = np.asarray(Image.open(faces_atlas / f"img/{i:06d}.png"))
    assert np.array_equal(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8), on_disk)


# ---- labels ------------------------------------------------------------------------------------


def test_face_labels_match_cells_ages_and_schema(faces_atlas):
    space = ConditionSpace.load(faces_atlas / "conditions.yaml")
    assert space == ConditionSpace.default(["disease", "age"])
    rows = _rows(faces_atlas)
    assert len(rows) == 4 * 5 * 2
    counts = Counter((r["disease"], r["age"]) for r in rows)
    assert counts == {cell: 2 for cell in space.cells()}
    bounds = {name: (lo, hi) for name, lo, hi in AGE_BRACKETS}
    for r in rows:
        space.check_labels({"disease": r["disease"], "age": r["age"]})
        lo, hi = bounds[r["age"]]
        assert lo <= float(r["age_years"]) < hi
        assert (faces_atlas / r["file"]).is_file()
        sev = float(r["severity"])
        assert (sev == 0.0) == (r["disease"] == "unaffected") and 0.0 <= sev <= 1.0


def test_subjects_keep_identity_and_disease(faces_atlas):
    rows = _rows(faces_atlas)
    fixed = ["disease", "severity", "skin_tone", "hair_colour", "hair_style", "face_width", "eye_colour"]
    by_subject = defaultdict(list)
    for r in rows:
        by_subject[r["subject"]].append(r)
    for subject_rows in by_subject.values():
        assert 1 <= len(subject_rows) <= 3
        for col in fixed:
            assert len({r[col] for r in subject_rows}) == 1, col
    # with more images, some subjects contribute several (grouped folds matter)
    plan = plan_faces(20, 0)
    sizes = Counter(Counter(im.subject.subject for im in plan).values())
    assert sizes[1] > 0 and sizes[2] + sizes[3] > 0 and max(sizes) <= 3
    assert Counter((im.subject.disease, im.age) for im in plan) == {c: 20 for c in ConditionSpace.default(
        ["disease", "age"]).cells()}


def test_skin_labels(skin_atlas):
    space = ConditionSpace.load(skin_atlas / "conditions.yaml")
    assert space.names == ("stage",)
    rows = _rows(skin_atlas)
    assert Counter(r["stage"] for r in rows) == {"early": 2, "intermediate": 2, "late": 2}
    plan = plan_skin(30, 0)
    mean_sev = {st: np.mean([im.subject.severity for im in plan if im.subject.stage == st])
                for st in ("early", "intermediate", "late")}
    assert mean_sev["early"] < mean_sev["intermediate"] < mean_sev["late"]


def test_skin_lesions_grow_with_stage(tmp_path):
    rows = _rows(render_atlas(tmp_path / "s", "skin", per_cell=12, resolution=16, seed=3, progress=False))
    mac = {st: np.mean([int(r["macules"]) for r in rows if r["stage"] == st]) for st in ("early", "intermediate", "late")}
    bumps = {st: sum(int(r["neurofibromas"]) for r in rows if r["stage"] == st) for st in ("early", "late")}
    assert mac["early"] < mac["intermediate"] < mac["late"]
    assert bumps["early"] == 0 and bumps["late"] > 0


# ---- features are real ----------------------------------------------------------------------------


def _subject(disease="unaffected", severity=0.0):
    plan = plan_faces(1, 5)
    base = next(im.subject for im in plan if im.subject.disease == "unaffected")
    return replace(base, disease=disease, severity=severity, mix_a=0.3, mix_b=0.3)


def test_age_changes_the_face_not_the_nuisance():
    subj = _subject()
    imgs = {age: render_face(FaceImage(subj, age), 64, np.random.default_rng(11)) for age in (1.0, 60.0)}
    diff = np.abs(imgs[1.0] - imgs[60.0]).mean(axis=2)
    corners = np.concatenate([diff[:6, :6].ravel(), diff[:6, -6:].ravel()])
    assert corners.max() < 1e-6  # same seed: same background, pose and noise
    assert diff[16:56, 16:48].mean() > 0.03  # the face itself changed
    infant, adult = face_geometry(subj, 1.0), face_geometry(subj, 60.0)
    # infants: features low on a large cranium, short lower face, big eyes
    assert (infant.chin - infant.eye_y) < (adult.chin - adult.eye_y)
    assert infant.eye_y > adult.eye_y and infant.eye_w > adult.eye_w


def test_disease_cues_are_local_and_change_with_age():
    rng_seed = 4
    base = _subject()
    for disease in ("syndrome_a", "syndrome_b", "other_condition"):
        sick = _subject(disease, 1.0)
        a = render_face(FaceImage(base, 25.0), 64, np.random.default_rng(rng_seed))
        b = render_face(FaceImage(sick, 25.0), 64, np.random.default_rng(rng_seed))
        diff = np.abs(a - b).mean(axis=2)
        assert diff.mean() > 1e-3, disease
        assert diff[:6].max() < 1e-6  # top rows are background: the cue is on the face
    sa, sb = _subject("syndrome_a", 1.0), _subject("syndrome_b", 1.0)
    # syndrome_a's wide mouth is strongest in childhood; syndrome_b's hooding grows with age
    ratio = lambda s, age: face_geometry(s, age).mouth_w / face_geometry(base, age).mouth_w
    assert ratio(sa, 6.0) > ratio(sa, 50.0) > 1.0
    hood = lambda s, age: face_geometry(s, age).hood - face_geometry(base, age).hood
    assert hood(sb, 50.0) > hood(sb, 1.0) > 0.0
    # other_condition carries weaker versions of both
    oc = _subject("other_condition", 1.0)
    assert 1.0 < ratio(oc, 6.0) < ratio(sa, 6.0)
    assert 0.0 < hood(oc, 50.0) < hood(sb, 50.0)


# ---- caching --------------------------------------------------------------------------------


def test_ensure_atlas_renders_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path / "cache"))
    calls = []
    real = render_mod._render_into

    def counting(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(render_mod, "_render_into", counting)
    first = ensure_atlas("skin", per_cell=1, resolution=16, seed=2, progress=False)
    assert first == atlas_cache_dir("skin", 1, 16, 2) == tmp_path / "cache" / "atlas" / "skin-1-16-2"
    assert len(_rows(first)) == 3 and len(calls) == 1
    before = _digest(first)
    second = ensure_atlas("skin", per_cell=1, resolution=16, seed=2, progress=False)
    assert second == first and len(calls) == 1 and _digest(second) == before
    # nothing but the finished folder is left behind
    assert [p.name for p in (tmp_path / "cache" / "atlas").iterdir()] == ["skin-1-16-2"]


def test_ensure_atlas_replaces_an_outdated_cache(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("SYNTH_CACHE", str(tmp_path))
    path = ensure_atlas("skin", per_cell=1, resolution=16, seed=0, progress=False)
    marker = path / "atlas.json"
    meta = json.loads(marker.read_text())
    marker.write_text(json.dumps({**meta, "version": meta["version"] - 1}))
    (path / "img" / "000000.png").write_bytes(b"stale")
    again = ensure_atlas("skin", per_cell=1, resolution=16, seed=0, progress=False)
    assert again == path and json.loads(marker.read_text()) == meta
    assert (path / "img" / "000000.png").read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in (tmp_path / "atlas").iterdir()] == ["skin-1-16-0"]


def test_failed_render_leaves_nothing(tmp_path, monkeypatch):
    def boom(dst, *a, **k):
        (dst / "img").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(render_mod, "_render_into", boom)
    with pytest.raises(RuntimeError):
        render_atlas(tmp_path / "out", "faces", per_cell=1, resolution=16, progress=False)
    assert list(tmp_path.iterdir()) == []


# ---- CLI and bad input ---------------------------------------------------------------------------


def test_cli_refuses_non_empty_folder_then_force_replaces(tmp_path):
    out = tmp_path / "atlas"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    runner = CliRunner()
    res = runner.invoke(atlas_cmd, [str(out), "--kind", "skin", "--per-cell", "1", "--resolution", "16", "--quiet"])
    assert res.exit_code != 0
    assert "not empty" in res.output and "--force" in res.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    res = runner.invoke(atlas_cmd, [str(out), "--kind", "skin", "--per-cell", "1", "--resolution", "16", "--quiet",
                                    "--force"])
    assert res.exit_code == 0, res.output
    assert not (out / "keep.txt").exists() and len(_rows(out)) == 3


@pytest.mark.parametrize("res", ["48", "8", "0"])
def test_cli_rejects_bad_resolution(tmp_path, res):
    result = CliRunner().invoke(atlas_cmd, [str(tmp_path / "x"), "--resolution", res])
    assert result.exit_code == 2
    assert "--resolution" in result.output and "power of two" in result.output
    assert not (tmp_path / "x").exists()


def test_api_rejects_bad_arguments(tmp_path):
    with pytest.raises(AtlasError, match="power of two"):
        render_atlas(tmp_path / "x", resolution=100)
    with pytest.raises(AtlasError, match="--kind"):
        render_atlas(tmp_path / "x", kind="xray")
    with pytest.raises(AtlasError, match="--per-cell"):
        ensure_atlas(per_cell=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AtlasError, match="not a folder"):
        render_atlas(tmp_path / "file", resolution=16)


def test_study_shaped_counts_and_overrides(tmp_path):
    import csv
    from collections import Counter

    from synth.data.atlas import render_atlas
    from synth.data.atlas.faces import STUDY_COUNTS
    from synth.data.atlas.render import AtlasError, parse_counts

    counts = parse_counts("study,infant=2,syndrome_b/older_adult=1", "faces", 20)
    assert counts[("unaffected", "child")] == 100 and counts[("syndrome_a", "child")] == 30
    assert counts[("syndrome_a", "infant")] == 2 and counts[("unaffected", "infant")] == 2  # a level: every cell with it
    assert counts[("syndrome_b", "older_adult")] == 1 and counts[("syndrome_a", "older_adult")] == STUDY_COUNTS[("syndrome_a", "older_adult")]
    assert parse_counts("late=5", "skin", 3) == {("early",): 3, ("intermediate",): 3, ("late",): 5}
    for bad, why in (("flu=3", "no level or cell"), ("infant=-1", "N >= 0"), ("child", "expected LEVEL=N"), ("infant=0,child=0,"
                     "adolescent=0,young_adult=0,older_adult=0", "every cell would be empty")):
        with pytest.raises(AtlasError, match=why):
            parse_counts(bad, "faces", 20)
    with pytest.raises(AtlasError, match="for faces"):
        parse_counts("study", "skin", 20)
    small = {c: max(1, n // 10) for c, n in STUDY_COUNTS.items()}  # the study's shape, a tenth of it
    out = render_atlas(tmp_path / "a", kind="faces", resolution=16, seed=3, progress=False, counts=small)
    rows = list(csv.DictReader(open(out / "labels.csv")))
    assert Counter((r["disease"], r["age"]) for r in rows) == Counter({c: n for c, n in small.items() if n})
    again = render_atlas(tmp_path / "b", kind="faces", resolution=16, seed=3, progress=False, counts=small)
    assert (out / "img" / "000003.png").read_bytes() == (again / "img" / "000003.png").read_bytes()  # same seed, same bytes
    assert json.loads((out / "atlas.json").read_text())["counts"]["unaffected/child"] == 10
