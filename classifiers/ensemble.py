"""Prediction with one model or a gated ensemble, with optional flip test-time augmentation.

The ensemble follows the published protocol: average the class probabilities of the models
that are confident about an image (maximum probability >= ``gate``).  When no model
passes for an image, all models are averaged instead and the image is flagged, so the
output is always a proper distribution and nothing is divided by zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from classifiers.checkpoint import ClassifierCheckpointError, find_checkpoints, load_classifier

__all__ = ["TTA_MODES", "normalise", "predict_probs", "gated_average", "GatedResult", "Ensemble"]

TTA_MODES = ("none", "flip", "dihedral")


def normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or [0, 255] float) [N, C, H, W] -> normalised float32."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def _views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    if tta == "none":
        return [x]
    if tta == "flip":  # horizontal only: a mirrored face is still a plausible face
        return [x, x.flip(-1)]
    if tta == "dihedral":  # lesions and patches have no canonical orientation
        return [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_MODES)}")


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch: int = 64,
    device: str | torch.device = "cpu",
    tta: str = "none",
    channels_last: bool = False,
) -> np.ndarray:
    """Softmax probabilities [N, K] of ``model`` on uint8 ``images`` (TTA views averaged)."""
    if tta not in TTA_MODES:
        raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_MODES)}")
    was_training = model.training
    model.eval()
    out = []
    device = torch.device(device)
    for i in range(0, images.shape[0], batch):
        x = normalise(images[i : i + batch].to(device), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        p = None
        views = _views(x, tta)
        for v in views:
            with torch.autocast(device.type, enabled=device.type == "cuda", dtype=torch.bfloat16):
                logits = model(v)
            q = torch.softmax(logits.float(), dim=-1)
            p = q if p is None else p + q
        out.append((p / len(views)).cpu())
    if was_training:
        model.train()
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32)


@dataclass
class GatedResult:
    probs: np.ndarray  # [N, K] ensemble probabilities
    passed: np.ndarray  # [M, N] bool: model m was confident on image n
    fallback: np.ndarray  # [N] bool: no model passed, all were averaged

    @property
    def n_fallback(self) -> int:
        return int(self.fallback.sum())

    @property
    def n_models_used(self) -> np.ndarray:
        return np.where(self.fallback, self.passed.shape[0], self.passed.sum(0))


def gated_average(model_probs: np.ndarray, gate: float = 0.5) -> GatedResult:
    """Average [M, N, K] probabilities over models whose max probability >= gate (per image)."""
    p = np.asarray(model_probs, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"expected probabilities [models, images, classes], got shape {p.shape}")
    passed = p.max(axis=2) >= gate  # [M, N]
    fallback = ~passed.any(axis=0)
    use = passed.copy()
    use[:, fallback] = True  # guard: nobody confident -> everybody votes
    w = use.astype(np.float64)
    probs = (p * w[:, :, None]).sum(0) / w.sum(0)[:, None]
    return GatedResult(probs.astype(np.float32), passed, fallback)


class Ensemble:
    """Several classifiers over the same classes (e.g. the k models of a cross-validation)."""

    def __init__(self, models: Sequence[torch.nn.Module], metas: Sequence[dict], device: str | torch.device = "cpu"):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        names = [tuple(m["class_names"]) for m in metas]
        if len(set(names)) != 1:
            raise ValueError("ensemble models disagree on class names")
        self.models = list(models)
        self.metas = list(metas)
        self.device = torch.device(device)
        self.class_names = list(names[0])

    @classmethod
    def load(cls, paths, device: str | torch.device = "cpu") -> "Ensemble":
        files = find_checkpoints(paths)
        loaded = [load_classifier(p, device) for p in files]
        try:
            return cls([m for m, _ in loaded], [meta for _, meta in loaded], device)
        except ValueError as e:
            raise ClassifierCheckpointError(f"{paths}: {e}") from None

    @property
    def sizes(self) -> list[int]:
        return [int(m["size"]) for m in self.metas]

    def model_probs(self, images_by_size: dict[int, torch.Tensor], tta: str = "none", batch: int = 64) -> np.ndarray:
        """[M, N, K] probabilities; ``images_by_size`` holds uint8 images at each model's size."""
        out = []
        for model, meta in zip(self.models, self.metas):
            norm = meta["normalisation"]
            out.append(
                predict_probs(model, images_by_size[int(meta["size"])], norm["mean"], norm["std"], batch, self.device, tta)
            )
        return np.stack(out)

    def predict(self, images_by_size: dict[int, torch.Tensor], gate: float = 0.5, tta: str = "none", batch: int = 64) -> GatedResult:
        return gated_average(self.model_probs(images_by_size, tta, batch), gate)
