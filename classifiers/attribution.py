"""Where an ensemble of classifiers looks: occlusion and Integrated Gradients saliency
maps, per-image overlays and group composites.

The face study targeted occlusion (20 x 20 window, stride 10) at the true label and
averaged over the cross-validation ensemble; the skin study used Integrated Gradients.
The permutation test that compares groups of maps lives in :mod:`classifiers.permutation`;
its names stay importable from here.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from synth.errors import UserError
from synth.utils.io import atomic_save

__all__ = [
    "AttributionError",
    "occlusion_saliency",
    "integrated_gradients",
    "save_overlays",
    "composite_maps",
    "composite_grid_png",
]

# Names that moved to classifiers.permutation; still importable from here (resolved on first
# use, so classifiers.permutation, which imports AttributionError, makes no import cycle).
_MOVED = {name: "classifiers.permutation" for name in (
    "PermutationResult", "permutation_test", "permutation_test_matrix", "write_permutation_outputs",
    "backbone_embedder", "random_projection_embedder",
)}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class AttributionError(UserError):
    """Bad input to an attribution routine (one-line message)."""


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _check_inputs(models, images, targets) -> tuple[list[nn.Module], torch.Tensor, torch.Tensor]:
    # a single module (but not a ModuleList) is a one-model ensemble
    models = [models] if isinstance(models, nn.Module) and not isinstance(models, nn.ModuleList) else list(models)
    if not models:
        raise AttributionError("need at least one model")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise AttributionError(f"images must be a [N, C, H, W] tensor, got {shape}")
    t = torch.as_tensor(targets, dtype=torch.long, device=images.device).reshape(-1)
    if t.numel() != images.shape[0]:
        raise AttributionError(f"{t.numel()} targets given for {images.shape[0]} images")
    return models, images, t


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window start offsets along one axis; a last window flush with the edge is added so
    every pixel is covered at least once (a remainder would otherwise stay at zero)."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


class _EvalMode:
    """Put models in eval mode for the duration and restore their previous modes."""

    def __init__(self, models: Sequence[nn.Module]):
        self.models = models

    def __enter__(self):
        self.modes = [m.training for m in self.models]
        for m in self.models:
            m.eval()

    def __exit__(self, *exc):
        for m, mode in zip(self.models, self.modes):
            m.train(mode)


# --------------------------------------------------------------------------------------
# occlusion
# --------------------------------------------------------------------------------------
@torch.no_grad()
def occlusion_saliency(
    models: nn.Module | Sequence[nn.Module],
    images: torch.Tensor,
    targets,
    window: int = 20,
    stride: int = 10,
    baseline: float = 0.0,
    batch_size: int = 64,
    apply_softmax: bool = True,
    progress: bool = False,
) -> np.ndarray:
    """Occlusion saliency ``[N, H, W]``: how much the target-class probability drops when a
    ``window`` x ``window`` square (all channels) is set to ``baseline``.

    ``images`` is the already-normalised model input.  Each pixel gets the mean drop over
    the windows that cover it (as captum's ``Occlusion`` does); windows step by ``stride``
    and a final window flush with the right/bottom edge covers any remainder.  The map is
    averaged over the ensemble's models, which equals the drop of the ensemble's mean
    probability.  Positive = evidence for the target class.  ``apply_softmax=False``
    measures the drop of the raw output instead (for models that return probabilities).
    Occluded copies are batched ``batch_size`` at a time.
    """
    models, images, t = _check_inputs(models, images, targets)
    if window < 1 or stride < 1 or batch_size < 1:
        raise AttributionError(f"window, stride and batch_size must be positive (got {window}, {stride}, {batch_size})")
    n, _, h, w = images.shape
    wy, wx = min(window, h), min(window, w)
    positions = [(y, x) for y in _window_starts(h, wy, stride) for x in _window_starts(w, wx, stride)]
    coverage = torch.zeros(h, w, dtype=torch.float64)
    for y, x in positions:
        coverage[y:y + wy, x:x + wx] += 1

    def target_score(batch: torch.Tensor, cls: int) -> torch.Tensor:
        total = torch.zeros(batch.shape[0], dtype=torch.float64, device=batch.device)
        for m in models:
            out = m(batch)
            out = torch.softmax(out.float(), dim=1) if apply_softmax else out.float()
            total += out[:, cls].double()
        return total / len(models)

    maps = np.zeros((n, h, w), dtype=np.float32)
    from tqdm.auto import tqdm

    with _EvalMode(models):
        for i in tqdm(range(n), desc="occlusion", disable=not progress, leave=False):
            img = images[i]
            cls = int(t[i])
            base = target_score(img[None], cls)[0]
            acc = torch.zeros(h, w, dtype=torch.float64)
            for s in range(0, len(positions), batch_size):
                chunk = positions[s:s + batch_size]
                batch = img.unsqueeze(0).repeat(len(chunk), 1, 1, 1)
                for j, (y, x) in enumerate(chunk):
                    batch[j, :, y:y + wy, x:x + wx] = baseline
                drops = (base - target_score(batch, cls)).cpu()
                for j, (y, x) in enumerate(chunk):
                    acc[y:y + wy, x:x + wx] += drops[j]
            maps[i] = (acc / coverage).numpy()
    return maps


# --------------------------------------------------------------------------------------
# integrated gradients
# --------------------------------------------------------------------------------------
def integrated_gradients(
    models: nn.Module | Sequence[nn.Module],
    images: torch.Tensor,
    targets,
    steps: int = 32,
    baseline: torch.Tensor | float | None = None,
    reduce: str = "abs_sum",
    apply_softmax: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """Integrated Gradients (captum) of the target-class output, averaged over the ensemble.

    ``baseline`` defaults to zeros (a black image for inputs normalised to [-1, 1] is -1;
    pass it explicitly when that is what you mean).  The attributed output is the raw
    model output (logit) unless ``apply_softmax``.  ``reduce``: ``"abs_sum"`` (default,
    sum of absolute values over channels -> ``[N, H, W]``), ``"sum"`` (signed channel sum,
    so a map sums to f(x) - f(baseline)), or ``"none"`` (``[N, C, H, W]``).
    """
    from captum.attr import IntegratedGradients

    models, images, t = _check_inputs(models, images, targets)
    if reduce not in ("abs_sum", "sum", "none"):
        raise AttributionError(f"reduce must be abs_sum, sum or none, got {reduce!r}")
    if steps < 1:
        raise AttributionError(f"steps must be positive, got {steps}")
    if baseline is None:
        baseline = torch.zeros_like(images)
    elif not isinstance(baseline, torch.Tensor):
        baseline = torch.full_like(images, float(baseline))
    total = torch.zeros_like(images, dtype=torch.float32)
    with _EvalMode(models):
        for m in models:
            fwd = (lambda x, _m=m: torch.softmax(_m(x), dim=1)) if apply_softmax else m
            ig = IntegratedGradients(fwd)
            attr = ig.attribute(images, baselines=baseline, target=t, n_steps=steps,
                                internal_batch_size=batch_size)
            total += attr.detach().float()
    total /= len(models)
    if reduce == "abs_sum":
        total = total.abs().sum(dim=1)
    elif reduce == "sum":
        total = total.sum(dim=1)
    return total.cpu().numpy()


# --------------------------------------------------------------------------------------
# overlays and composites
# --------------------------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def _to_uint8_images(images) -> np.ndarray:
    """uint8 [N, H, W, 3] from uint8 HWC arrays or float [-1, 1] CHW tensors/arrays."""
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise AttributionError(f"images must be [N, H, W, 3] uint8 or [N, 3, H, W] in [-1, 1], got shape {x.shape}")
    if x.dtype == np.uint8:
        if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
            x = x.transpose(0, 2, 3, 1)
    else:
        if x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
            x = x.transpose(0, 2, 3, 1)
        x = np.clip((x.astype(np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


def _normalise_map(m: np.ndarray) -> np.ndarray:
    """Positive part scaled to [0, 1] by its maximum (all zeros stays zeros)."""
    m = np.clip(np.asarray(m, dtype=np.float32), 0, None)
    peak = float(m.max()) if m.size else 0.0
    return m / peak if peak > 0 else m


def _resize_map(m: np.ndarray, h: int, w: int) -> np.ndarray:
    if m.shape == (h, w):
        return m
    from PIL import Image

    return np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))


def _png_bytes_writer(arr: np.ndarray):
    from PIL import Image

    def write(tmp: Path) -> None:
        Image.fromarray(arr).save(tmp, format="PNG")

    return write


def save_overlays(
    out_dir: str | Path,
    images,
    maps,
    names: Sequence[str],
    cmap: str = "jet",
    alpha: float = 0.5,
) -> list[Path]:
    """Write ``<name>.png`` per image: the saliency map (positive part, scaled by its own
    maximum) in ``cmap`` blended over the image with weight ``alpha``.

    ``images``: uint8 ``[N, H, W, 3]`` or float ``[N, 3, H, W]`` in [-1, 1]; maps are resized
    to the image size when they differ.  Unsafe characters in names become ``_``.
    """
    from matplotlib import colormaps

    imgs = _to_uint8_images(images)
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    if not (len(imgs) == len(maps) == len(names)):
        raise AttributionError(f"got {len(imgs)} images, {len(maps)} maps and {len(names)} names")
    if not 0.0 <= alpha <= 1.0:
        raise AttributionError(f"alpha must be in [0, 1], got {alpha}")
    try:
        cm = colormaps[cmap]
    except KeyError:
        raise AttributionError(f"unknown colormap {cmap!r}") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for img, m, name in zip(imgs, maps, names):
        h, w = img.shape[:2]
        heat = cm(_normalise_map(_resize_map(m, h, w)))[..., :3]
        blend = (1 - alpha) * img.astype(np.float32) / 255.0 + alpha * heat
        arr = np.clip(blend * 255.0 + 0.5, 0, 255).astype(np.uint8)
        p = out / f"{_SAFE.sub('_', str(name)) or 'map'}.png"
        atomic_save(p, _png_bytes_writer(arr))
        paths.append(p)
    return paths


def composite_maps(maps, group_keys: Sequence[Hashable], order: Sequence[Hashable] | None = None,
                   png_path: str | Path | None = None, cmap: str = "inferno") -> dict:
    """Mean map per group (e.g. per age group), in ``order`` or first-appearance order.

    With ``png_path`` a labelled grid of the composites is written (see
    :func:`composite_grid_png`).  Groups in ``order`` without any map are left out.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or len(group_keys) != len(maps):
        raise AttributionError(f"need [N, H, W] maps and one group key per map (got {maps.shape}, {len(group_keys)} keys)")
    keys = list(group_keys)
    seen = list(dict.fromkeys(keys)) if order is None else [k for k in order if k in set(keys)]
    out = {}
    for k in seen:
        idx = [i for i, g in enumerate(keys) if g == k]
        out[k] = maps[idx].mean(axis=0)
    if png_path is not None:
        counts = {k: sum(1 for g in keys if g == k) for k in seen}
        composite_grid_png(png_path, out, counts=counts, cmap=cmap)
    return out


def _label(key) -> str:
    return " / ".join(str(x) for x in key) if isinstance(key, tuple) else str(key)


def composite_grid_png(path: str | Path, composites: Mapping, counts: Mapping | None = None,
                       cmap: str = "inferno", ncols: int | None = None, title: str | None = None,
                       shared_scale: bool = True) -> Path:
    """PNG grid of composite maps, one panel per group labelled ``group (n=...)``.

    ``shared_scale`` uses one colour scale for every panel so panels can be compared.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = list(composites.items())
    if not items:
        raise AttributionError("no composite maps to draw")
    ncols = ncols or min(len(items), 5)
    nrows = (len(items) + ncols - 1) // ncols
    vmin = min(float(np.min(m)) for _, m in items) if shared_scale else None
    vmax = max(float(np.max(m)) for _, m in items) if shared_scale else None
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.8 * nrows + (0.4 if title else 0)), squeeze=False)
    try:
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (k, m) in zip(axes.ravel(), items):
            im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
            lab = _label(k) + (f" (n={counts[k]})" if counts and k in counts else "")
            ax.set_title(lab, fontsize=9)
        if shared_scale:
            fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8)
        if title:
            fig.suptitle(title)
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return Path(path)
