"""Where an ensemble of classifiers looks: occlusion and Integrated Gradients saliency,
overlays, group composites and the permutation test that compares groups of maps.

The face study targeted occlusion (20 x 20 window, stride 10) at the true label and
averaged over the cross-validation ensemble; the skin study used Integrated Gradients.
Group differences (e.g. two age groups of one disease) are tested by the Euclidean
distance between backbone embeddings of the two group-mean maps against a null made by
shuffling group membership.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Callable, Hashable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from synth.errors import UserError
from synth.utils.io import atomic_save, atomic_write_text

__all__ = [
    "AttributionError",
    "occlusion_saliency",
    "integrated_gradients",
    "save_overlays",
    "composite_maps",
    "composite_grid_png",
    "PermutationResult",
    "permutation_test",
    "permutation_test_matrix",
    "write_permutation_outputs",
    "backbone_embedder",
    "random_projection_embedder",
]


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


# --------------------------------------------------------------------------------------
# permutation test
# --------------------------------------------------------------------------------------
class PermutationResult(NamedTuple):
    statistic: float
    p_value: float


def _group_distance(flat: np.ndarray, masks: np.ndarray, h: int, w: int, embed, batch_size: int) -> np.ndarray:
    """Embedding distance between the two group means for each row of ``masks``
    (boolean [R, N], True = group A)."""
    na = masks[0].sum()
    nb = masks.shape[1] - na
    dists = np.empty(len(masks), dtype=np.float64)
    for s in range(0, len(masks), batch_size):
        m = masks[s:s + batch_size].astype(flat.dtype)
        mean_a = (m @ flat) / na
        mean_b = ((1 - m) @ flat) / nb
        both = np.concatenate([mean_a, mean_b]).reshape(-1, h, w).astype(np.float32)
        emb = np.asarray(embed(both), dtype=np.float64).reshape(len(both), -1)
        ea, eb = emb[: len(m)], emb[len(m):]
        dists[s:s + len(m)] = np.linalg.norm(ea - eb, axis=1)
    return dists


def permutation_test(
    maps_a,
    maps_b,
    embed: Callable[[np.ndarray], np.ndarray],
    n_perm: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
) -> PermutationResult:
    """Do two groups of saliency maps differ?  (The face study's test.)

    statistic = ``||embed(mean(maps_a)) - embed(mean(maps_b))||``; the null distribution
    comes from ``n_perm`` random reassignments of the pooled maps to groups of the original
    sizes; ``p = (1 + #{null >= statistic}) / (1 + n_perm)`` (never 0).  ``embed`` maps
    ``[M, H, W]`` float32 to ``[M, D]``; it is called on ``2 * batch_size`` means at a time.
    """
    # float32 keeps many full-resolution maps in memory; group means need no more precision
    a = np.asarray(maps_a, dtype=np.float32)
    b = np.asarray(maps_b, dtype=np.float32)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise AttributionError(f"maps must be [N, H, W] with equal H, W (got {a.shape} and {b.shape})")
    if len(a) == 0 or len(b) == 0:
        raise AttributionError("each group needs at least one map")
    if n_perm < 1:
        raise AttributionError(f"n_perm must be positive, got {n_perm}")
    h, w = a.shape[1:]
    flat = np.concatenate([a, b]).reshape(len(a) + len(b), -1)
    n = len(flat)
    observed = np.zeros((1, n), dtype=bool)
    observed[0, : len(a)] = True
    rng = np.random.default_rng(seed)
    perms = np.zeros((n_perm, n), dtype=bool)
    for i in range(n_perm):
        perms[i, rng.permutation(n)[: len(a)]] = True
    stat = float(_group_distance(flat, observed, h, w, embed, batch_size)[0])
    null = _group_distance(flat, perms, h, w, embed, batch_size)
    # tolerance: the identity permutation must count as ">= stat" despite float noise
    hits = int(np.sum(null >= stat - 1e-6 * max(1.0, abs(stat))))
    return PermutationResult(stat, (1 + hits) / (1 + n_perm))


def permutation_test_matrix(
    groups: Mapping[str, np.ndarray],
    embed: Callable[[np.ndarray], np.ndarray],
    n_perm: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pairwise :func:`permutation_test` over named groups.

    Returns ``(names, p_matrix, stat_matrix)``, both symmetric.  The diagonal is p = 1 and
    statistic = 0 (a group against itself, documented rather than NaN so the heat map has
    no holes).  The pairs of the upper triangle, in row-major order, use seeds ``seed``,
    ``seed + 1``, ... so the matrix is reproducible.
    """
    from tqdm.auto import tqdm

    names = [str(k) for k in groups]
    k = len(names)
    if k < 2:
        raise AttributionError("permutation_test_matrix needs at least two groups")
    p = np.ones((k, k), dtype=np.float64)
    st = np.zeros((k, k), dtype=np.float64)
    values = list(groups.values())
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    for idx, (i, j) in enumerate(tqdm(pairs, desc="permutation tests", disable=not progress, leave=False)):
        r = permutation_test(values[i], values[j], embed, n_perm=n_perm, seed=seed + idx, batch_size=batch_size)
        p[i, j] = p[j, i] = r.p_value
        st[i, j] = st[j, i] = r.statistic
    return names, p, st


def write_permutation_outputs(out_dir: str | Path, names: Sequence[str], p, stat, prefix: str = "",
                              title: str | None = None) -> dict[str, Path]:
    """Write ``permutation_tests.csv`` (one row per pair), ``permutation_p.csv`` (the p
    matrix) and ``permutation_p.png`` (annotated heat map of p), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(p, dtype=np.float64)
    stat = np.asarray(stat, dtype=np.float64)
    k = len(names)
    if p.shape != (k, k) or stat.shape != (k, k):
        raise AttributionError(f"p and stat must be {k} x {k} matrices (got {p.shape} and {stat.shape})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"pairs": out / f"{prefix}permutation_tests.csv", "matrix": out / f"{prefix}permutation_p.csv",
             "png": out / f"{prefix}permutation_p.png"}

    def csv_text(rows):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue()

    pair_rows = [["group_a", "group_b", "statistic", "p_value"]]
    pair_rows += [[names[i], names[j], f"{stat[i, j]:.6g}", f"{p[i, j]:.6g}"] for i in range(k) for j in range(i + 1, k)]
    atomic_write_text(paths["pairs"], csv_text(pair_rows))
    atomic_write_text(paths["matrix"], csv_text([[""] + list(names)] + [[names[i]] + [f"{v:.6g}" for v in p[i]] for i in range(k)]))

    side = max(3.5, 0.8 * k + 2.0)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    try:
        im = ax.imshow(p, cmap="viridis_r", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{p[i, j]:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if p[i, j] < 0.5 else "white")  # viridis_r: small p is light
        ax.set_xticks(range(k), labels=list(names), rotation=45, ha="right")
        ax.set_yticks(range(k), labels=list(names))
        ax.set_title(title or "Permutation test p-values")
        fig.colorbar(im, ax=ax, label="p-value")
        fig.tight_layout()
        atomic_save(paths["png"], lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------
# embedders
# --------------------------------------------------------------------------------------
def random_projection_embedder(shape: tuple[int, int], dim: int = 64, seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A fixed Gaussian random projection of flattened maps (cheap, deterministic; for
    tests and quick looks).  Distances are approximately preserved (Johnson-Lindenstrauss)."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((shape[0] * shape[1], dim)) / np.sqrt(dim)

    def embed(maps: np.ndarray) -> np.ndarray:
        m = np.asarray(maps, dtype=np.float64)
        if m.shape[1:] != tuple(shape):
            raise AttributionError(f"embedder built for {shape} maps, got {m.shape[1:]}")
        return m.reshape(len(m), -1) @ proj

    return embed


def _load_state_dict(path: Path) -> dict:
    from synth.utils.weights import WeightsFileError, read_state_dict

    try:
        return read_state_dict(path)
    except WeightsFileError as e:
        raise AttributionError(f"backbone {e}") from None


def backbone_embedder(
    model_name: str = "efficientnet_b4",
    pretrained: bool | str | Path = False,
    size: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    seed: int = 0,
) -> Callable[[np.ndarray], np.ndarray]:
    """Frozen timm backbone as a map embedder: ``[M, H, W]`` -> pooled features ``[M, D]``.

    Maps are treated as intensities in [0, 1], replicated to 3 channels, resized to
    ``size`` (default: the model's default input size) and normalised with the model's
    mean/std.  ``pretrained`` is ``False`` or a path to local weights (``.safetensors`` or a
    tensor-only ``.pt``/``.pth`` state dict; the classifier head is ignored).  Nothing is
    downloaded: with ``pretrained=False`` the backbone keeps its seeded random
    initialisation, which is still a fixed nonlinear feature map, so tests stay valid, but
    the study's test used ImageNet weights.
    """
    import timm

    if pretrained is True:
        raise AttributionError("--pretrained: give a path to local backbone weights (nothing is downloaded)")
    sd = _load_state_dict(Path(pretrained)) if pretrained else None  # fail on a bad file before building
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
        except Exception as e:
            raise AttributionError(f"unknown timm model {model_name!r} ({type(e).__name__})") from None
    if sd is not None:
        own = model.state_dict()
        sd = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in sd]
        # a handful of missing buffers is fine, missing most weights means the wrong file
        if len(missing) > 0.1 * len(own):
            raise AttributionError(
                f"{pretrained}: weights do not fit {model_name} ({len(missing)} of {len(own)} tensors missing)")
        model.load_state_dict(sd, strict=False)
    model.eval().requires_grad_(False).to(device)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1).to(device)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1).to(device)
    if size is None:
        size = int(cfg.get("input_size", (3, 224, 224))[-1])

    @torch.no_grad()
    def embed(maps: np.ndarray) -> np.ndarray:
        m = torch.as_tensor(np.asarray(maps, dtype=np.float32), device=device)
        if m.ndim != 3:
            raise AttributionError(f"embedder expects [M, H, W] maps, got shape {tuple(m.shape)}")
        feats = []
        for s in range(0, len(m), batch_size):
            x = m[s:s + batch_size, None].expand(-1, 3, -1, -1)
            if x.shape[-2:] != (size, size):
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            feats.append(model((x - mean) / std).float().cpu())
        return torch.cat(feats).numpy()

    return embed
