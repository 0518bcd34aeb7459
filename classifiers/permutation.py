"""The permutation test that compares groups of saliency maps, and the embedders it uses.

Group differences (e.g. two age groups of one disease) are tested by the Euclidean distance
between backbone embeddings of the two group-mean maps against a null made by shuffling group
membership (the face study's test).  Maps come from :mod:`classifiers.attribution`.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from classifiers.attribution import AttributionError
from synth.utils.io import atomic_save, atomic_write_text
from synth.utils.weights import WeightsFileError, read_state_dict

__all__ = [
    "PermutationResult",
    "permutation_test",
    "permutation_test_matrix",
    "write_permutation_outputs",
    "backbone_embedder",
    "random_projection_embedder",
]


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
