"""Projection distances: callables (synth, target) -> scalar on images [1, C, H, W] in [-1, 1].

:class:`PyramidL2` (the fallback), :class:`LPIPSDistance` (only from backbone weights already on
disk: nothing is downloaded) and :class:`DFeatures` (the discriminator's block features);
:func:`make_distance` picks one from the ``synth project`` options."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synth.networks.checkpoint import CheckpointError, build_module, load_checkpoint, read_metadata
from synth.synthesis.errors import SynthesisError

__all__ = [
    "LPIPS_BACKBONES",
    "PyramidL2",
    "LPIPSDistance",
    "DFeatures",
    "find_lpips_backbone",
    "make_distance",
    "open_discriminator",
]

# torchvision's ImageNet checkpoints of the LPIPS backbones, as the torch hub caches them.
LPIPS_BACKBONES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


class PyramidL2:
    """Mean squared error summed over an image pyramid (full, 1/2, 1/4, ... >= ``min_size`` px)."""

    name = "pyramid-l2"

    def __init__(self, min_size: int = 4):
        self.min_size = int(min_size)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = (x - y).square().mean()
        while x.shape[-1] >= 2 * self.min_size:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
            loss = loss + (x - y).square().mean()
        return loss


class LPIPSDistance:
    """LPIPS of the ``lpips`` package; small images are upsampled to 64 px, big ones reduced to 256."""

    def __init__(self, model: torch.nn.Module, net: str):
        self.model = model.eval().requires_grad_(False)
        self.name = f"lpips-{net}"

    @staticmethod
    def _size(x: torch.Tensor) -> torch.Tensor:
        r = x.shape[-1]
        if r > 256:
            return F.interpolate(x, size=(256, 256), mode="area")
        if r < 64:
            return F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        return x

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(self._size(x), self._size(y)).sum()


class DFeatures:
    """Normalised squared distance of the discriminator's block features (and its epilogue's)."""

    name = "d-features"

    def __init__(self, D: torch.nn.Module, label: np.ndarray):
        self.D = D.eval().requires_grad_(False)
        dev = next(D.parameters()).device
        self.c = torch.as_tensor(np.asarray(label, np.float32), device=dev).reshape(1, -1)
        self._target: tuple[torch.Tensor, list[torch.Tensor]] | None = None  # (target, its features)

    def _feats(self, img: torch.Tensor) -> list[torch.Tensor]:
        D = self.D
        x, out = None, []
        for r in D.block_resolutions:
            x = getattr(D, f"b{r}")(x, img, force_fp32=True)
            out.append(x.float())
        cmap = D.mapping(None, self.c.expand(img.shape[0], -1)) if D.c_dim > 0 else None
        out.append(D.b4(x, cmap, return_features=True)[1])
        return out

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._target is None or self._target[0] is not y:  # holding y keeps its identity unique
            with torch.no_grad():
                self._target = (y, self._feats(y))
        fx = self._feats(x)
        return sum((a - b).square().mean() / (b.square().mean() + 1e-8) for a, b in zip(fx, self._target[1]))


class _Sum:
    def __init__(self, parts: Sequence[tuple[float, Callable]]):
        self.parts = list(parts)
        self.name = "+".join(p.name for _, p in self.parts)

    def __call__(self, x, y):
        return sum(w * p(x, y) for w, p in self.parts)


def find_lpips_backbone(net: str, weights: str | Path | None = None) -> Path | None:
    """The local torchvision checkpoint of an LPIPS backbone: ``weights`` when given (it must
    exist), else the torch hub cache's file (``torch.hub.get_dir()/checkpoints``), else None."""
    if net not in LPIPS_BACKBONES:
        raise SynthesisError(f"--lpips-net {net!r}: expected one of {', '.join(LPIPS_BACKBONES)}")
    if weights is not None:
        p = Path(weights)
        if not p.is_file():
            raise SynthesisError(f"--lpips-weights {p}: file not found")
        return p
    p = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net]
    return p if p.is_file() else None


def _load_lpips(net: str, backbone: Path, device: str | torch.device) -> LPIPSDistance:
    """LPIPS with a randomly initialised backbone (no download), then the backbone's weights
    from the local torchvision file and LPIPS's own linear layers from the package."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    try:
        sd = torch.load(backbone, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same one-line error
        raise SynthesisError(f"--lpips-weights {backbone}: not a readable torch checkpoint ({type(e).__name__})") from None
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    if not isinstance(sd, Mapping):
        raise SynthesisError(f"--lpips-weights {backbone}: not a state dict")
    feats = {k[len("features."):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith("features.")}
    own = dict(model.net.named_parameters())
    new = {}
    for name, p in own.items():  # "slice2.5.weight" is torchvision's "features.5.weight"
        key = name.split(".", 1)[1]
        t = feats.get(key)
        if t is None or tuple(t.shape) != tuple(p.shape):
            raise SynthesisError(f"--lpips-weights {backbone}: not a torchvision {net} checkpoint (features.{key} missing or misshapen)")
        new[name] = t
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(new[name])
    return LPIPSDistance(model.to(device), net)


def make_distance(kind: str = "auto", lpips_net: str = "vgg", lpips_weights: str | Path | None = None,
                  D: torch.nn.Module | None = None, label: np.ndarray | None = None, d_weight: float = 1.0,
                  device: str | torch.device = "cpu") -> Callable:
    """The projection distance: ``lpips`` (weights must be on disk), ``pyramid`` or ``auto``
    (LPIPS when its backbone file is found, else the pyramid).  With ``D``, its features are added
    to the pyramid distance."""
    if kind not in ("auto", "lpips", "pyramid"):
        raise SynthesisError(f"--distance {kind!r}: expected auto, lpips or pyramid")
    dist: Callable | None = None
    if kind in ("auto", "lpips"):
        nets = [lpips_net] if (kind == "lpips" or lpips_weights is not None or lpips_net != "vgg") else ["vgg", "alex"]
        for net in nets:
            path = find_lpips_backbone(net, lpips_weights)
            if path is not None:
                dist = _load_lpips(net, path, device)
                break
        if dist is None and kind == "lpips":
            want = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[lpips_net]
            raise SynthesisError(f"--distance lpips: backbone weights not found ({want}); pass --lpips-weights FILE "
                                 "or use --distance pyramid (nothing is downloaded)")
    if dist is None:
        dist = PyramidL2()
        if D is not None:
            if label is None:
                raise SynthesisError("discriminator features need the label")
            dist = _Sum([(1.0, dist), (float(d_weight), DFeatures(D, label))])
    elif D is not None:
        raise SynthesisError("--d-features: only with the pyramid distance (LPIPS was found; add --distance pyramid)")
    return dist


def open_discriminator(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The discriminator of a training snapshot (exported generators have none: a one-line error)."""
    try:
        if "D" not in read_metadata(path).get("modules", {}):
            raise SynthesisError(f"--d-features: {path} has no discriminator (an exported generator?); "
                                 "use a training snapshot or leave --d-features out")
        ck = load_checkpoint(path)
        return build_module(ck["D"], device, where=str(path)).eval().requires_grad_(False)
    except CheckpointError as e:
        raise SynthesisError(f"--network: {e}") from None
