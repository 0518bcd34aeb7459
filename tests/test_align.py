"""FFHQ-style alignment: geometry, a real photograph, and the `align` command."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import scipy.ndimage
from click.testing import CliRunner
from PIL import Image

from synth.data.align import (
    REPORT_FILE,
    AlignError,
    align,
    canonical_eye_positions,
    default_landmarks_path,
    detect_landmarks,
    eye_centres,
    ffhq_align,
    ffhq_quad,
)

skdata = pytest.importorskip("skimage.data")


def ideal_landmarks(eye_avg, eye_dist, mouth_ratio=1.0, angle_deg=0.0) -> np.ndarray:
    """A synthetic 68-point set: only eyes (36-47) and mouth corners (48, 54) matter to FFHQ."""
    e, m = eye_dist, mouth_ratio * eye_dist
    pts = np.zeros((68, 2))
    ring = np.array([[-0.1, 0], [-0.05, -0.03], [0.05, -0.03], [0.1, 0], [0.05, 0.03], [-0.05, 0.03]]) * e
    pts[36:42] = ring + [-e / 2, 0]
    pts[42:48] = ring + [e / 2, 0]
    pts[48] = [-0.4 * e, m]
    pts[54] = [0.4 * e, m]
    pts[49:54] = pts[55:68] = [0, m]
    pts[0:36] = [0, 0.5 * m]
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return pts @ rot.T + np.asarray(eye_avg, dtype=float)


def eye_offsets(got, want):
    return np.abs(np.stack(got) - np.stack(want)).max()


# ----------------------------------------------------------------------------------------
# Geometry (no dlib)


@pytest.mark.parametrize("angle", [0.0, 17.0, -35.0])
@pytest.mark.parametrize("ratio", [0.8, 1.0, 1.3])
def test_transform_puts_ideal_eyes_on_canonical_positions(angle, ratio):
    lm = ideal_landmarks((300.0, 220.0), 60.0, ratio, angle)
    aligned = ffhq_align(Image.new("RGB", (500, 500)), lm, 64)
    got = aligned.map_points(np.stack(eye_centres(lm)))
    want = canonical_eye_positions(64, ratio)
    np.testing.assert_allclose(got, np.stack(want), atol=1e-6)
    assert aligned.image.size == (64, 64)


def test_canonical_positions_formula():
    left, right = canonical_eye_positions(256)
    # eyes at 3/8 and 5/8 of the width, at 0.475 of the height (pixel centres: -0.5)
    np.testing.assert_allclose(left, [95.5, 121.1])
    np.testing.assert_allclose(right, [159.5, 121.1])
    # a long face: the square is sized by the eye-to-mouth distance, so the eyes move closer
    l2, r2 = canonical_eye_positions(256, 2.0)
    assert r2[0] - l2[0] < right[0] - left[0]
    with pytest.raises(AlignError):
        canonical_eye_positions(256, 0.0)


def _dot_image(size, centres, radius):
    yy, xx = np.mgrid[: size[1], : size[0]]
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    for cx, cy in centres:
        arr[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = 255
    return Image.fromarray(arr)


def _blob_centroids(img: Image.Image, threshold=128):
    gray = np.asarray(img.convert("L")).astype(float)
    lab, n = scipy.ndimage.label(gray > threshold)
    cents = scipy.ndimage.center_of_mass(gray, lab, range(1, n + 1))
    return sorted((c[1], c[0]) for c in cents)  # (x, y), left to right


@pytest.mark.parametrize(
    "size, eye_avg, eye_dist, angle, res",
    [
        ((400, 300), (200.0, 140.0), 50.0, 12.0, 64),  # plain crop
        ((900, 900), (450.0, 400.0), 300.0, -8.0, 32),  # shrink path (large face, small output)
        ((260, 200), (70.0, 45.0), 50.0, 20.0, 64),  # square leaves the photo: reflect padding
    ],
)
def test_image_content_follows_returned_transform(size, eye_avg, eye_dist, angle, res):
    lm = ideal_landmarks(eye_avg, eye_dist, 1.0, angle)
    left, right = eye_centres(lm)
    img = _dot_image(size, [left, right], radius=eye_dist * 0.12)
    aligned = ffhq_align(img, lm, res)
    mapped = aligned.map_points(np.stack([left, right]))
    found = _blob_centroids(aligned.image)
    assert len(found) == 2, found
    np.testing.assert_allclose(np.array(found), mapped, atol=0.35)
    np.testing.assert_allclose(mapped, np.stack(canonical_eye_positions(res)), atol=1e-6)


def test_bad_landmarks_are_one_line_errors():
    with pytest.raises(AlignError, match=r"\[68, 2\]"):
        ffhq_quad(np.zeros((5, 2)))
    with pytest.raises(AlignError, match="degenerate"):
        ffhq_quad(np.zeros((68, 2)))
    with pytest.raises(AlignError, match="uint8 RGB"):
        detect_landmarks(np.zeros((10, 10), np.float32))


# ----------------------------------------------------------------------------------------
# A real photograph (dlib)


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()


@pytest.fixture(scope="module")
def astronaut_face(astronaut):
    faces = detect_landmarks(astronaut, upsample=1)
    assert faces, "dlib found no face in skimage.data.astronaut()"
    return faces[0]


def test_packaged_landmark_model_is_found():
    path = default_landmarks_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.is_file()


def test_detection_picks_the_face(astronaut, astronaut_face):
    assert astronaut_face.shape == (68, 2)
    left, right = eye_centres(astronaut_face)
    # the astronaut's face lies in the upper middle of the 512 x 512 photograph
    assert 150 < left[0] < right[0] < 300 and 80 < left[1] < 170 and abs(left[1] - right[1]) < 10


@pytest.mark.parametrize("res", [256, 128])
def test_astronaut_eyes_land_on_canonical_positions(astronaut, astronaut_face, res):
    aligned = ffhq_align(Image.fromarray(astronaut), astronaut_face, res)
    assert aligned.image.size == (res, res) and aligned.image.mode == "RGB"
    want = canonical_eye_positions(res)
    tol = 0.03 * res
    mapped = aligned.map_points(np.stack(eye_centres(astronaut_face)))
    assert eye_offsets(mapped, want) <= tol
    again = detect_landmarks(np.asarray(aligned.image), upsample=1)
    assert again, "no face re-detected in the aligned output"
    assert eye_offsets(eye_centres(again[0]), want) <= tol


def test_rotated_astronaut_comes_out_upright(astronaut):
    rotated = Image.fromarray(astronaut).rotate(10, resample=Image.BICUBIC)
    faces = detect_landmarks(np.asarray(rotated), upsample=1)
    assert faces
    left, right = eye_centres(faces[0])
    tilt = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    assert abs(tilt) > 6  # the input really is tilted
    aligned = ffhq_align(rotated, faces[0], 128)
    again = detect_landmarks(np.asarray(aligned.image), upsample=1)
    assert again
    l2, r2 = eye_centres(again[0])
    assert abs(l2[1] - r2[1]) <= 0.02 * 128  # eyes level
    assert eye_offsets((l2, r2), canonical_eye_positions(128)) <= 0.03 * 128


# ----------------------------------------------------------------------------------------
# The command


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture()
def photo_dir(tmp_path, astronaut):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(astronaut).save(src / "sub" / "astro.jpg", quality=95)
    Image.new("RGB", (96, 96), (128, 128, 128)).save(src / "blank.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG")
    (src / "notes.txt").write_text("not an image")
    (src / "labels.csv").write_text(
        "file,disease,age,subject\n"
        "sub/astro.jpg,unaffected,young_adult,s1\n"
        "blank.png,syndrome_a,child,s2\n"
        "broken.jpg,syndrome_b,infant,s3\n"
    )
    (src / "conditions.yaml").write_text("factors: []\n")
    (src / "dataset.json").write_text(json.dumps({"labels": [["sub/astro.jpg", 3], ["blank.png", 0]]}))
    return src


def test_cli_aligns_reports_and_rewrites_labels(photo_dir, tmp_path):
    out = tmp_path / "out"
    args = [str(photo_dir), str(out), "--resolution", "64", "--upsample", "0", "--quiet"]
    res = CliRunner().invoke(align, args)
    assert res.exit_code == 0, res.output
    report = {r["file"]: r for r in _read_csv(out / REPORT_FILE)}
    assert set(report) == {"sub/astro.jpg", "blank.png", "broken.jpg"}
    assert report["sub/astro.jpg"]["status"] == "aligned"
    assert report["sub/astro.jpg"]["output"] == "sub/astro.png"
    assert int(report["sub/astro.jpg"]["n_faces"]) >= 1
    row = report["sub/astro.jpg"]
    eyes = np.array([[row["left_eye_x"], row["left_eye_y"]], [row["right_eye_x"], row["right_eye_y"]]], float)
    assert eye_offsets(eyes, canonical_eye_positions(64)) <= 0.03 * 64
    assert report["blank.png"]["status"] == "no_face" and report["blank.png"]["n_faces"] == "0"
    assert report["broken.jpg"]["status"] == "unreadable" and report["broken.jpg"]["detail"]
    assert "no face: 1: blank.png" in res.output and "unreadable: 1: broken.jpg" in res.output

    with Image.open(out / "sub" / "astro.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    assert not (out / "blank.png").exists() and not (out / "broken.png").exists()
    labels = _read_csv(out / "labels.csv")
    assert labels == [{"file": "sub/astro.png", "disease": "unaffected", "age": "young_adult", "subject": "s1"}]
    assert (out / "conditions.yaml").read_text() == "factors: []\n"
    assert json.loads((out / "dataset.json").read_text()) == {"labels": [["sub/astro.png", 3]]}
    assert "labels.csv: kept 1 row(s), dropped 2" in res.output
    assert "dataset.json: kept 1 row(s), dropped 1" in res.output

    # a non-empty OUT_DIR needs --force; nothing is touched without it
    before = sorted(p.name for p in out.rglob("*"))
    res2 = CliRunner().invoke(align, args[:-3])
    assert res2.exit_code == 1 and "--force" in res2.output
    assert sorted(p.name for p in out.rglob("*")) == before
    res3 = CliRunner().invoke(align, [*args, "--force", "--strict"])
    assert res3.exit_code == 1 and "--strict" in res3.output


def test_cli_no_face_at_all_fails(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(src / "green.png")
    res = CliRunner().invoke(align, [str(src), str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 1 and "no face could be aligned" in res.output
    assert _read_csv(tmp_path / "out" / REPORT_FILE)[0]["status"] == "no_face"


def test_cli_input_errors(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    runner = CliRunner()
    res = runner.invoke(align, [str(src), str(tmp_path / "o1")])
    assert res.exit_code == 1 and "no images" in res.output
    Image.new("RGB", (8, 8)).save(src / "a.png")
    Image.new("RGB", (8, 8)).save(src / "a.jpg")
    res = runner.invoke(align, [str(src), str(tmp_path / "o2")])
    assert res.exit_code == 1 and "both be written as a.png" in res.output
    (src / "a.jpg").unlink()
    res = runner.invoke(align, [str(src), str(tmp_path / "o3"), "--landmarks", str(tmp_path / "no.dat")])
    assert res.exit_code == 1 and "no.dat" in res.output and "not found" in res.output
    (tmp_path / "junk.dat").write_bytes(b"not a shape predictor")
    res = runner.invoke(align, [str(src), str(tmp_path / "o4"), "--landmarks", str(tmp_path / "junk.dat")])
    assert res.exit_code == 1 and "junk.dat" in res.output and "not a dlib shape predictor" in res.output
    (src / "labels.csv").write_text("name,disease\na.png,unaffected\n")
    res = runner.invoke(align, [str(src), str(tmp_path / "o5")])
    assert res.exit_code == 1 and "labels.csv" in res.output and "'file'" in res.output
    res = runner.invoke(align, [str(src), str(src), "--force"])
    assert res.exit_code == 2 and "differ" in res.output
    for o in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / o).exists()  # checked before anything is written
