"""Image feature extractors for KID/FID, memorisation and skin identity.

Two sources, never a download:

* ``inception_extractor(path)``: torch-fidelity's InceptionV3 (2048-d pool features) with weights
  from a local file (``pt_inception-2015-12-05-6726825d.pth`` or the same tensors as safetensors).
  Only these numbers are comparable with published FID/KID.
* ``random_backbone_extractor(model, size, seed)``: a timm backbone with a seeded random
  initialisation and no classifier head.  A fixed random conv net is still a fixed nonlinear
  feature map (distances between image sets are meaningful within one study and one seed), but
  its values are **not comparable** with published FID, and its absolute scale depends on the
  architecture.  Reports label it as such.

All extractors take uint8 images ``[N, H, W, 3]`` (numpy) and return float64 ``[N, D]``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from synth.quality.errors import QualityError

__all__ = ["FeatureExtractor", "random_backbone_extractor", "inception_extractor", "pixel_features", "as_nchw_uint8"]


@dataclass
class FeatureExtractor:
    """A named image -> feature map.  ``comparable`` is True only for the standard Inception."""

    name: str
    comparable: bool
    fn: Callable[[torch.Tensor], torch.Tensor]  # uint8 [B, 3, H, W] -> float [B, D]
    batch: int = 32
    device: str = "cpu"
    progress: bool = False

    @torch.no_grad()
    def __call__(self, images: np.ndarray, desc: str = "features") -> np.ndarray:
        x = as_nchw_uint8(images)
        out = []
        starts = range(0, len(x), self.batch)
        for s in tqdm(starts, desc=desc, unit="batch", disable=not self.progress or len(starts) < 2, leave=False):
            out.append(self.fn(x[s : s + self.batch].to(self.device)).double().cpu())
        if not out:
            return np.zeros((0, 0), dtype=np.float64)
        return torch.cat(out).numpy()

    def describe(self) -> dict:
        return {"name": self.name, "comparable_with_published": self.comparable}


def as_nchw_uint8(images: np.ndarray) -> torch.Tensor:
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise QualityError(f"expected uint8 images [N, H, W, 3], got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def random_backbone_extractor(
    model: str = "resnet18", size: int = 128, seed: int = 0, device: str = "cpu", batch: int = 32, progress: bool = False
) -> FeatureExtractor:
    """Pooled features of a seeded, randomly initialised timm backbone (see module doc)."""
    import timm

    if not timm.is_model(model):
        raise QualityError(f"--feature-model: unknown timm model {model!r}")
    with torch.random.fork_rng(devices=[]):  # the seed fixes the weights without touching the caller's RNG
        torch.manual_seed(seed)
        net = timm.create_model(model, pretrained=False, num_classes=0)
    net = net.eval().requires_grad_(False).to(device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        # ImageNet-style normalisation keeps activations in the range the init was designed for.
        x = x.float() / 255.0
        if x.shape[-1] != size or x.shape[-2] != size:
            x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
        return net((x - mean) / std).flatten(1)

    return FeatureExtractor(f"random-init {model} @ {size}px (seed {seed}; NOT comparable with published FID/KID)",
                            False, fn, batch, device, progress)


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a tensor-only torch file (never unpickles code)."""
    from synth.utils.weights import WeightsFileError, read_state_dict

    try:
        return read_state_dict(path)
    except WeightsFileError as e:
        raise QualityError(f"--inception {e}") from None


def inception_extractor(path: str | Path, device: str = "cpu", batch: int = 32, progress: bool = False) -> FeatureExtractor:
    """torch-fidelity's InceptionV3 pool3 (2048-d) features with weights from a local file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = Path(path)
    sd = _read_tensor_file(path)
    # torch-fidelity reads its weights file with full unpickling; hand it a copy we wrote from
    # the tensors read safely above, so the user's file is never unpickled.
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "inception.pth"
        torch.save({k: v.contiguous() for k, v in sd.items()}, clean)
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(clean))
        except RuntimeError as e:
            raise QualityError(f"--inception {path}: weights do not fit torch-fidelity's InceptionV3 "
                               f"({str(e).splitlines()[0][:120]})") from None
    net = net.eval().to(device)

    def fn(x: torch.Tensor) -> torch.Tensor:
        return net(x)[0]  # the network resizes to 299 px itself (TF1-compatible bilinear)

    return FeatureExtractor("InceptionV3 pool3 (torch-fidelity, local weights)", True, fn, batch, device, progress)


def pixel_features(images: np.ndarray, size: int = 32) -> np.ndarray:
    """Low-resolution pixels in [0, 1], flattened [N, 3 * size * size] (area-averaged downscale)."""
    x = as_nchw_uint8(images).float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="area") if x.shape[-1] >= size else \
            torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.flatten(1).double().numpy()
