"""FFHQ-style face alignment: dlib 68-point landmarks, then a rotated square crop around the face.

The recipe is the one used to build FFHQ (and, in the studies this toolkit reproduces, to align
the patient photographs before GAN training): the crop is a square oriented by the eye line and
the eye-to-mouth direction, sized from the eye distance and the eye-to-mouth distance, centred a
little below the eyes.  When the square leaves the photograph the missing area is filled by
reflection, blurred and faded towards the median colour, so the GAN never sees hard black edges.

Coordinates: landmarks and eye positions use pixel-index coordinates (pixel ``i`` is centred on
``i``), like dlib.  PIL's geometric transforms work with pixel *edges* (pixel ``i`` spans
``[i, i+1]``), so the crop square is built from ``landmarks + 0.5``.

Command line: ``synth data align IN_DIR OUT_DIR``.

Why one file (about 640 lines): it is the single recipe behind ``synth data align``, laid
out in the order the command runs it: landmarks, the FFHQ crop geometry, crop and pad, the
folder run (report and label files), the command.  The folder half is the only caller of
the image half and shares its constants (report columns, statuses, the landmark model), so
split in two, each half would be read with the other one open.
"""
from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
from PIL import Image, ImageOps

from synth.errors import UserError
from synth.data.dataset import IMAGE_EXTENSIONS, LABELS_CSV, NVLABS_JSON, SCHEMA_FILE, to_rgb
from synth.utils.io import atomic_path, atomic_write_text

__all__ = [
    "AlignError",
    "Aligned",
    "AlignSummary",
    "LANDMARKS_FILE",
    "REPORT_FILE",
    "default_landmarks_path",
    "resolve_landmarks_path",
    "detect_landmarks",
    "eye_centres",
    "ffhq_quad",
    "ffhq_align",
    "canonical_eye_positions",
    "align_folder",
    "align",
]

LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
REPORT_FILE = "alignment_report.csv"
STATUSES = ("aligned", "no_face", "unreadable")
REPORT_COLUMNS = (
    "file", "output", "status", "n_faces",
    "left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "detail",
)
# FFHQ renders the rotated square at 4x the output size, then downsamples with Lanczos: the
# bilinear quad transform alone would alias.
SUPERSAMPLE = 4
# Ratio |eye_to_mouth| / |eye_to_eye| of the "ideal" face used for the canonical eye positions.
# Real faces are close to 1 (skimage's astronaut: 0.86); the eye height is 1/2 - ratio/40 of the
# image, so a ratio off by 0.2 moves it by 0.5% (see canonical_eye_positions).
IDEAL_MOUTH_RATIO = 1.0


class AlignError(UserError):
    """Alignment cannot run as asked (one-line message naming the file or option)."""


# ----------------------------------------------------------------------------------------
# Landmarks


def default_landmarks_path() -> Path:
    """Where the ``face_recognition_models`` package keeps dlib's 68-point model.

    The package is located without importing it: its ``__init__`` imports ``pkg_resources``,
    which recent setuptools no longer ships.  (``importlib.resources.files`` would import it.)
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise AlignError(
            "dlib landmark model not found: install face-recognition-models or pass --landmarks PATH"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models" / LANDMARKS_FILE


def resolve_landmarks_path(landmarks: str | os.PathLike | None = None) -> Path:
    """The explicit path if given, else the packaged model; a missing file is an AlignError."""
    path = Path(landmarks) if landmarks is not None else default_landmarks_path()
    if not path.is_file():
        hint = "" if landmarks is not None else " (install face-recognition-models or pass --landmarks PATH)"
        raise AlignError(f"--landmarks: landmark model {path} not found{hint}")
    return path


@functools.lru_cache(maxsize=4)
def _load_models(landmarks_path: str):
    """Detector and shape predictor, loaded once per process (the 68-point model is ~100 MB)."""
    import dlib  # imported lazily: only alignment needs it

    try:
        predictor = dlib.shape_predictor(landmarks_path)
    except RuntimeError as e:
        msg = f"--landmarks: {landmarks_path} is not a dlib shape predictor ({e})"
        raise AlignError(msg.splitlines()[0]) from None
    return dlib.get_frontal_face_detector(), predictor


def detect_landmarks(
    img: np.ndarray,
    upsample: int = 1,
    landmarks: str | os.PathLike | None = None,
) -> list[np.ndarray]:
    """68 landmarks ([68, 2] float64, x/y in pixel-index coordinates) for every face in ``img``.

    ``img`` is a uint8 RGB array [H, W, 3].  ``upsample`` doubles the image that many times
    before detection so smaller faces are found (slower).  Faces come largest first (box area,
    then detector score), so ``[0]`` is the face to align.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise AlignError(f"detect_landmarks needs a uint8 RGB array [H, W, 3], got {img.dtype} {img.shape}")
    if upsample < 0:
        raise AlignError(f"--upsample must be >= 0, got {upsample}")
    detector, predictor = _load_models(str(resolve_landmarks_path(landmarks)))
    img = np.ascontiguousarray(img)
    boxes, scores, _ = detector.run(img, int(upsample), 0.0)
    order = sorted(range(len(boxes)), key=lambda i: (-boxes[i].area(), -scores[i]))
    out = []
    for i in order:
        shape = predictor(img, boxes[i])
        out.append(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64))
    return out


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) eye centres as they appear in the image (landmarks 36-41 and 42-47)."""
    lm = _check_landmarks(landmarks)
    return lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise AlignError(f"landmarks must be a [68, 2] array (dlib 68-point layout), got {lm.shape}")
    return lm


# ----------------------------------------------------------------------------------------
# Geometry


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The FFHQ crop square [4, 2] (top-left, bottom-left, bottom-right, top-right) in pixel-index
    coordinates of the source image."""
    lm = _check_landmarks(landmarks)
    eye_left, eye_right = eye_centres(lm)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    # The horizontal axis blends the eye line with the eye-to-mouth direction turned by -90
    # degrees, so neither a tilted mouth nor one squinting eye alone sets the rotation.
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1.0, 1.0])
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm < 1e-6:
        raise AlignError("landmarks are degenerate (eyes and mouth coincide)")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * np.array([-1.0, 1.0])  # x turned by +90 degrees (image y points down)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def canonical_eye_positions(
    resolution: int, mouth_ratio: float = IDEAL_MOUTH_RATIO
) -> tuple[np.ndarray, np.ndarray]:
    """Expected (left, right) eye centres, in output pixel-index coordinates, after ffhq_align.

    Derivation.  Take an upright ideal face: eyes at ``eye_avg -/+ (e/2, 0)``, mouth centre at
    ``eye_avg + (0, m)`` with ``m = mouth_ratio * e``.  Then ``eye_to_eye = (e, 0)`` and
    ``eye_to_mouth = (0, m)``; ``flipud(eye_to_mouth) * [-1, 1] = (-m, 0)``, so
    ``x = (e + m, 0)``, normalised to ``(1, 0)`` and scaled to ``s = max(2e, 1.8m)``:
    ``x = (s, 0)`` and ``y = (0, s)``.  The square has side ``2s`` and top-left corner
    ``c - x - y = eye_avg + (-s, 0.1m - s)``.  Relative to that corner, divided by ``2s``, the
    eyes sit at

        u = 1/2 -/+ e / (4s),     v = 1/2 - 0.05 m / s.

    For ``m <= e / 0.9`` (every usual face) ``s = 2e``: ``u = 3/8 and 5/8``,
    ``v = 1/2 - mouth_ratio / 40`` (0.475 for the default ratio 1).  A rotated or scaled face
    gives the same numbers, since the recipe only uses the face's own vectors.  The output pixel
    covering ``[u, u + 1/R)`` has index ``u R``, hence the ``- 0.5`` shift to pixel-index
    coordinates.
    """
    if mouth_ratio <= 0:
        raise AlignError(f"mouth_ratio must be > 0, got {mouth_ratio}")
    s = max(2.0, 1.8 * mouth_ratio)  # in units of the eye distance e
    du = 1.0 / (4.0 * s)
    v = 0.5 - 0.05 * mouth_ratio / s
    left = np.array([0.5 - du, v]) * resolution - 0.5
    right = np.array([0.5 + du, v]) * resolution - 0.5
    return left, right


def _quad_to_output_matrix(quad_edge: np.ndarray, resolution: int) -> np.ndarray:
    """3x3 affine matrix: source pixel-index coords -> output pixel-index coords.

    Every intermediate step of ffhq_align (shrink, crop, pad) moves the image and the square
    together, so the composite map is fixed by the square in source coordinates alone: its
    top-left corner goes to (0, 0), top-right to (R, 0), bottom-left to (0, R) (pixel edges).
    """
    q0, q1, _, q3 = quad_edge
    # Output edge coords (u, v) -> source edge coords: q0 + (q3 - q0) u / R + (q1 - q0) v / R.
    fwd = np.eye(3)
    fwd[:2, 0] = (q3 - q0) / resolution
    fwd[:2, 1] = (q1 - q0) / resolution
    fwd[:2, 2] = q0
    to_edge = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    from_edge = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    return from_edge @ np.linalg.inv(fwd) @ to_edge


class Aligned(NamedTuple):
    """Result of ffhq_align: the aligned image and the source -> output coordinate map."""

    image: Image.Image
    transform: np.ndarray  # 3x3 affine on homogeneous pixel-index coordinates (x, y, 1)
    quad: np.ndarray  # the crop square [4, 2] in source pixel-index coordinates

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Map [N, 2] (or [2]) source pixel coordinates into the aligned image."""
        pts = np.asarray(points, dtype=np.float64)
        flat = pts.reshape(-1, 2)
        out = flat @ self.transform[:2, :2].T + self.transform[:2, 2]
        return out.reshape(pts.shape)


# ----------------------------------------------------------------------------------------
# The image operations


def _shrink(img: Image.Image, quad: np.ndarray, qsize: float, resolution: int):
    """Downsample very large faces first (integer factor) so the quad transform stays sharp
    and cheap; the square is scaled by the factors actually applied after rounding."""
    factor = int(np.floor(qsize / resolution * 0.5))
    if factor <= 1:
        return img, quad, qsize
    size = (max(1, int(np.rint(img.width / factor))), max(1, int(np.rint(img.height / factor))))
    scale = np.array([size[0] / img.width, size[1] / img.height])
    img = img.resize(size, Image.LANCZOS)
    return img, quad * scale, qsize / factor


def _crop(img: Image.Image, quad: np.ndarray, border: int):
    """Cut the square's bounding box plus a border out of the image (clipped to the image)."""
    lo = np.floor(quad.min(axis=0)).astype(int) - border
    hi = np.ceil(quad.max(axis=0)).astype(int) + border
    box = (max(lo[0], 0), max(lo[1], 0), min(hi[0], img.width), min(hi[1], img.height))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise AlignError("face square lies outside the image")
    if box[2] - box[0] < img.width or box[3] - box[1] < img.height:
        img = img.crop(box)
        quad = quad - np.array(box[:2], dtype=np.float64)
    return img, quad


def _pad(img: Image.Image, quad: np.ndarray, qsize: float, border: int):
    """Extend the image by reflection where the square (plus border) leaves it.

    Reflected content is blurred progressively and faded towards the median colour with
    distance from the original edge, so mirrored features (a second chin, half an ear) do
    not read as real structure; the blur reaches a third of the pad width back into the photo
    so the seam is invisible.
    """
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array([
        max(border - lo[0], 0), max(border - lo[1], 0),
        max(hi[0] - img.width + border, 0), max(hi[1] - img.height + border, 0),
    ])  # left, top, right, bottom
    if pad.max() <= border - 4:  # the square only grazes the edge: the border covers it
        return img, quad
    pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
    pad = np.maximum(pad, 1)
    left, top, right, bottom = (int(p) for p in pad)
    arr = np.asarray(img, dtype=np.float32)
    # numpy's reflect mode cannot reflect further than the image is wide; repeat until done.
    while left or top or right or bottom:
        h, w = arr.shape[:2]
        step = [min(left, w - 1), min(top, h - 1), min(right, w - 1), min(bottom, h - 1)]
        if max(step) == 0:  # 1-pixel image: reflection is impossible, repeat the edge
            step = [left, top, right, bottom]
            arr = np.pad(arr, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="edge")
        else:
            arr = np.pad(arr, ((step[1], step[3]), (step[0], step[2]), (0, 0)), mode="reflect")
        left, top, right, bottom = left - step[0], top - step[1], right - step[2], bottom - step[3]
    h, w = arr.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    # 0 on the original edge, 1 at the outer edge of the padding, negative inside the photo.
    ramp_x = 1.0 - np.minimum(xx / pad[0], (w - 1 - xx) / pad[2])
    ramp_y = 1.0 - np.minimum(yy / pad[1], (h - 1 - yy) / pad[3])
    ramp = np.maximum(ramp_x, ramp_y).astype(np.float32)[..., None]
    sigma = qsize * 0.02
    import scipy.ndimage  # only padding needs it; keeps `synth --help` quick

    blurred = scipy.ndimage.gaussian_filter(arr, [sigma, sigma, 0])
    arr = arr + (blurred - arr) * np.clip(ramp * 3.0 + 1.0, 0.0, 1.0)
    arr = arr + (np.median(arr, axis=(0, 1)) - arr) * np.clip(ramp, 0.0, 1.0)
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
    return img, quad + pad[:2].astype(np.float64)


def ffhq_align(img: Image.Image, landmarks: np.ndarray, resolution: int = 256, pad: bool = True) -> Aligned:
    """Align one face with the FFHQ recipe; returns the RGB image (``resolution`` square) and the
    source -> output coordinate transform (see :class:`Aligned`).

    ``pad=False`` fills the part of the square outside the photo with black instead of the
    blurred reflection.
    """
    if int(resolution) < 8:
        raise AlignError(f"--resolution must be >= 8, got {resolution}")
    resolution = int(resolution)
    if img.mode != "RGB":
        img = img.convert("RGB")
    quad_idx = ffhq_quad(landmarks)
    quad_edge = quad_idx + 0.5  # PIL geometry works on pixel edges
    transform = _quad_to_output_matrix(quad_edge, resolution)
    quad = quad_edge.copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))

    img, quad, qsize = _shrink(img, quad, qsize, resolution)
    border = max(int(np.rint(qsize * 0.1)), 3)
    img, quad = _crop(img, quad, border)
    if pad:
        img, quad = _pad(img, quad, qsize, border)

    size = resolution * SUPERSAMPLE
    img = img.transform((size, size), Image.QUAD, tuple(quad.flatten()), Image.BILINEAR)
    img = img.resize((resolution, resolution), Image.LANCZOS)
    return Aligned(img, transform, quad_idx)


# ----------------------------------------------------------------------------------------
# Folders


@dataclass
class AlignSummary:
    """What align_folder did, one report row per input image."""

    out_dir: Path
    rows: list[dict[str, str]] = field(default_factory=list)
    # label file name -> (rows kept, rows dropped because their image was not aligned)
    labels_written: dict[str, tuple[int, int]] = field(default_factory=dict)

    def files_with(self, status: str) -> list[str]:
        return [r["file"] for r in self.rows if r["status"] == status]

    def count(self, status: str) -> int:
        return len(self.files_with(status))

    def lines(self, max_names: int = 10) -> list[str]:
        """Human summary: counts, then the files that were not aligned (never silently lost)."""
        out = [f"aligned {self.count('aligned')} of {len(self.rows)} image(s) into {self.out_dir}"]
        for status in ("no_face", "unreadable"):
            names = self.files_with(status)
            if names:
                more = len(names) - max_names
                shown = ", ".join(names[:max_names]) + (f" (and {more} more)" if more > 0 else "")
                out.append(f"{status.replace('_', ' ')}: {len(names)}: {shown}")
        for name, (kept, dropped) in self.labels_written.items():
            out.append(f"{name}: kept {kept} row(s), dropped {dropped} (no aligned image)")
        out.append(f"report: {self.out_dir / REPORT_FILE}")
        return out


def _read_image(path: Path) -> Image.Image:
    """Decode fully (so truncated files fail here), honour EXIF rotation, convert to RGB
    as datasets do (16-bit scans keep their greys instead of turning white)."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        return to_rgb(im, str(path))


def _list_images(in_dir: Path, out_dir: Path) -> list[str]:
    """Image files under in_dir (relative POSIX paths, sorted), skipping out_dir if nested."""
    found = []
    out_res = out_dir.resolve()
    for p in sorted(in_dir.rglob("*")):
        if not p.is_file() or p.name.startswith(".") or not p.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        if out_res == p.resolve() or out_res in p.resolve().parents:
            continue
        found.append(p.relative_to(in_dir).as_posix())
    return found


def _output_name(rel: str) -> str:
    return str(Path(rel).with_suffix(".png").as_posix())


def _norm_rel(name: str) -> str:
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _fmt(v: float) -> str:
    return f"{v:.2f}"


def _save_png(img: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


@dataclass
class _LabelFiles:
    """The input's label files, parsed before any image is written so a bad one fails early."""

    csv_header: list[str] | None = None
    csv_rows: list[dict[str, str]] = field(default_factory=list)
    json_data: dict | None = None
    schema_text: str | None = None


def _read_label_files(in_dir: Path) -> _LabelFiles:
    found = _LabelFiles()
    csv_path = in_dir / LABELS_CSV
    if csv_path.is_file():
        try:
            text = csv_path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise AlignError(f"{csv_path}: not UTF-8 text") from None
        reader = csv.DictReader(io.StringIO(text))
        header = list(reader.fieldnames or [])
        if "file" not in header:
            raise AlignError(f"{csv_path}: missing required column 'file'")
        found.csv_header, found.csv_rows = header, [dict(r) for r in reader]
    json_path = in_dir / NVLABS_JSON
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AlignError(f"{json_path}: not valid JSON ({e})".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise AlignError(f"{json_path}: expected a JSON object with a 'labels' list")
        found.json_data = data
    schema = in_dir / SCHEMA_FILE
    if schema.is_file():
        try:
            found.schema_text = schema.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise AlignError(f"{schema}: not UTF-8 text") from None
    return found


def _write_label_files(
    labels: _LabelFiles, out_dir: Path, renamed: dict[str, str], summary: AlignSummary
) -> None:
    """Carry the label files over: file names point at the PNGs, rows of images that were not
    aligned are dropped (they are listed in the alignment report instead)."""
    if labels.csv_header is not None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=labels.csv_header, lineterminator="\n")
        writer.writeheader()
        kept = 0
        for row in labels.csv_rows:
            new = renamed.get(_norm_rel(row.get("file") or ""))
            if new is not None:
                writer.writerow({**row, "file": new})
                kept += 1
        atomic_write_text(out_dir / LABELS_CSV, buf.getvalue())
        summary.labels_written[LABELS_CSV] = (kept, len(labels.csv_rows) - kept)
    if labels.json_data is not None:
        data = dict(labels.json_data)
        entries = data.get("labels")
        if isinstance(entries, list):  # "labels": null (unlabelled set) is copied as is
            kept_entries = []
            for entry in entries:
                ok = isinstance(entry, list) and entry
                new = renamed.get(_norm_rel(str(entry[0]))) if ok else None
                if new is not None:
                    kept_entries.append([new, *entry[1:]])
            data["labels"] = kept_entries
            summary.labels_written[NVLABS_JSON] = (len(kept_entries), len(entries) - len(kept_entries))
        atomic_write_text(out_dir / NVLABS_JSON, json.dumps(data))
    if labels.schema_text is not None:
        atomic_write_text(out_dir / SCHEMA_FILE, labels.schema_text)


def _check_dirs(in_dir: Path, out_dir: Path, force: bool) -> None:
    if not in_dir.is_dir():
        raise AlignError(f"IN_DIR: {in_dir} is not a folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise AlignError(f"OUT_DIR: {out_dir} exists and is not a folder")
    if out_dir.resolve() == in_dir.resolve():
        raise AlignError("OUT_DIR must differ from IN_DIR (the originals would be overwritten)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise AlignError(f"OUT_DIR: {out_dir} is not empty; pass --force to write into it")


def align_folder(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    resolution: int = 256,
    upsample: int = 1,
    landmarks: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
) -> AlignSummary:
    """Align every image under ``in_dir`` into PNGs under ``out_dir`` (same relative paths).

    Writes ``alignment_report.csv`` (one row per input image: aligned / no_face / unreadable,
    face count, eye centres in the output) and a rewritten ``labels.csv`` / ``dataset.json``
    when the input has one.  Everything is checked before the first image is written.
    """
    from tqdm import tqdm

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    _check_dirs(in_dir, out_dir, force)
    if int(resolution) < 8:
        raise AlignError(f"--resolution must be >= 8, got {resolution}")
    if upsample < 0:
        raise AlignError(f"--upsample must be >= 0, got {upsample}")
    landmarks_path = resolve_landmarks_path(landmarks)
    files = _list_images(in_dir, out_dir)
    if not files:
        raise AlignError(f"IN_DIR: no images ({', '.join(IMAGE_EXTENSIONS)}) found in {in_dir}")
    targets: dict[str, str] = {}
    for rel in files:
        out = _output_name(rel)
        if out in targets:
            raise AlignError(f"IN_DIR: {targets[out]} and {rel} would both be written as {out}; rename one")
        targets[out] = rel
    label_files = _read_label_files(in_dir)
    # Load (and so validate) the landmark model before anything is written.
    _load_models(str(landmarks_path))

    summary = AlignSummary(out_dir=out_dir)
    renamed: dict[str, str] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for rel in tqdm(files, desc="align", unit="img", disable=not progress):
        row = {k: "" for k in REPORT_COLUMNS}
        row.update(file=rel, n_faces="0")
        try:
            img = _read_image(in_dir / rel)
        except Exception as e:  # PIL raises many exception types for bad files
            row.update(status="unreadable", detail=f"{type(e).__name__}: {e}".splitlines()[0])
            summary.rows.append(row)
            continue
        faces = detect_landmarks(np.asarray(img), upsample=upsample, landmarks=landmarks)
        row["n_faces"] = str(len(faces))
        if not faces:
            row.update(status="no_face", detail=f"no face found at upsample {upsample}")
            summary.rows.append(row)
            continue
        try:
            aligned = ffhq_align(img, faces[0], resolution)
        except AlignError as e:  # degenerate landmarks: report the image, keep going
            row.update(status="no_face", detail=str(e))
            summary.rows.append(row)
            continue
        left, right = aligned.map_points(np.stack(eye_centres(faces[0])))
        out_rel = _output_name(rel)
        _save_png(aligned.image, out_dir / out_rel)
        renamed[rel] = out_rel
        row.update(
            output=out_rel, status="aligned",
            left_eye_x=_fmt(left[0]), left_eye_y=_fmt(left[1]),
            right_eye_x=_fmt(right[0]), right_eye_y=_fmt(right[1]),
            detail="largest of several faces" if len(faces) > 1 else "",
        )
        summary.rows.append(row)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(REPORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary.rows)
    atomic_write_text(out_dir / REPORT_FILE, buf.getvalue())
    _write_label_files(label_files, out_dir, renamed, summary)
    return summary


# ----------------------------------------------------------------------------------------
# CLI


@click.command("align", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("in_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--resolution", default=256, show_default=True, type=click.IntRange(min=8),
              help="Side of the aligned square PNGs in pixels.")
@click.option("--upsample", default=1, show_default=True, type=click.IntRange(min=0),
              help="Double the image this many times before face detection (finds smaller faces, slower).")
@click.option("--landmarks", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"dlib 68-point model; default: {LANDMARKS_FILE} from face-recognition-models.")
@click.option("--force", is_flag=True,
              help="Write into a non-empty OUT_DIR (files of the same name are replaced).")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any image was not aligned.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def align(in_dir: Path, out_dir: Path, resolution: int, upsample: int, landmarks: Path | None,
          force: bool, strict: bool, quiet: bool) -> None:
    """Align the faces in IN_DIR the way FFHQ was built, writing PNGs to OUT_DIR.

    \b
    Every image under IN_DIR (recursively; jpg, jpeg, png, bmp, webp, tif) is searched for
    faces with dlib; the largest face is rotated upright, centred and cropped to a square
    (eyes at 3/8 and 5/8 of the width, just above mid-height), with blurred reflection where
    the square leaves the photo.  Outputs keep their relative paths with a .png extension.

    \b
    OUT_DIR also gets alignment_report.csv (status aligned / no_face / unreadable per input
    image) and, if IN_DIR has labels.csv or dataset.json, a copy pointing at the new files,
    without the rows of images that were not aligned.  conditions.yaml is copied as is.
    Exit status 1 if no image could be aligned (or, with --strict, if any could not).
    """
    if out_dir.resolve() == in_dir.resolve():  # wrong whatever the folders hold: a usage error (exit 2)
        raise click.UsageError("OUT_DIR must differ from IN_DIR (the originals would be overwritten)")
    try:
        summary = align_folder(in_dir, out_dir, resolution=resolution, upsample=upsample,
                               landmarks=landmarks, force=force, progress=not quiet)
    except AlignError as e:  # a folder or file the arguments name does not fit: exit 1
        raise click.ClickException(str(e).splitlines()[0]) from None
    for line in summary.lines():
        click.echo(line)
    n_ok = summary.count("aligned")
    if n_ok == 0:
        raise click.ClickException("no face could be aligned; see the report")
    if strict and n_ok < len(summary.rows):
        raise click.ClickException(f"--strict: {len(summary.rows) - n_ok} image(s) not aligned")
