"""Memorisation check: the nearest real training image of every generated image.

A generated image much closer to a training image than training images are to each other is a
candidate copy.  Distances are Euclidean, in the feature space of the KID/FID extractor and in
pixel space at low resolution (RMS over [0, 1] pixel values, so the number does not depend on
the resolution).  The real-to-real reference is each real image's nearest *other* real image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = ["nearest_neighbours", "real_nn_distances", "memorisation_report", "side_by_side_png"]


def _cdist_min(a: np.ndarray, b: np.ndarray, exclude_diagonal: bool = False, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    ta = torch.as_tensor(np.asarray(a, dtype=np.float64))
    tb = torch.as_tensor(np.asarray(b, dtype=np.float64))
    dist = np.empty(len(ta))
    idx = np.empty(len(ta), dtype=np.int64)
    for s in range(0, len(ta), chunk):
        d = torch.cdist(ta[s : s + chunk], tb)  # fast matrix-product form, fine for ranking
        if exclude_diagonal:
            r = torch.arange(d.shape[0])
            d[r, r + s] = float("inf")
        i = d.argmin(1)
        # ...but it loses precision for near-identical rows: recompute the winners exactly so an
        # exact copy reads 0
        exact = (ta[s : s + chunk] - tb[i]).norm(dim=1)
        dist[s : s + chunk] = exact.numpy()
        idx[s : s + chunk] = i.numpy()
    return dist, idx


def nearest_neighbours(gen: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (distance [N], index into real [N]) of each generated row's nearest real row."""
    if len(real) == 0:
        return np.full(len(gen), np.inf), np.full(len(gen), -1)
    return _cdist_min(gen, real)


def real_nn_distances(real: np.ndarray) -> np.ndarray:
    """Each real row's distance to its nearest other real row (needs >= 2 rows)."""
    if len(real) < 2:
        return np.zeros(0)
    return _cdist_min(real, real, exclude_diagonal=True)[0]


def _summary(gen_d: np.ndarray, ref: np.ndarray) -> dict:
    out = {"generated_nn_min": float(gen_d.min()), "generated_nn_median": float(np.median(gen_d)),
           "generated_nn_mean": float(gen_d.mean())}
    if len(ref):
        p5 = float(np.percentile(ref, 5))
        out.update({
            "real_nn_min": float(ref.min()), "real_nn_p5": p5, "real_nn_median": float(np.median(ref)),
            # share of generated images closer to a training image than 95% of real images are to theirs
            "fraction_below_real_p5": float(np.mean(gen_d < p5)),
            "median_ratio": float(np.median(gen_d) / max(float(np.median(ref)), 1e-12)),
            # percentile of each generated NN distance within the real-to-real distribution
            "mean_percentile_in_real": float(np.mean([(ref < x).mean() * 100 for x in gen_d])),
        })
    return out


def memorisation_report(
    gen_feats: np.ndarray, real_feats: np.ndarray, gen_pix: np.ndarray, real_pix: np.ndarray,
    gen_names: Sequence[str], real_names: Sequence[str], top: int = 8,
) -> dict:
    """Feature and pixel nearest neighbours, their summaries and the ``top`` closest pairs."""
    fd, fi = nearest_neighbours(gen_feats, real_feats)
    pd, pi = nearest_neighbours(gen_pix, real_pix)
    pd = pd / np.sqrt(gen_pix.shape[1])  # RMS pixel distance
    ref_f = real_nn_distances(real_feats)
    ref_p = real_nn_distances(real_pix) / np.sqrt(real_pix.shape[1])
    order = np.argsort(fd, kind="stable")[:top]
    pairs = [{"generated": gen_names[g], "real": real_names[int(fi[g])], "feature_distance": float(fd[g]),
              "pixel_nn": real_names[int(pi[g])], "pixel_distance": float(pd[g]), "generated_index": int(g),
              "real_index": int(fi[g])} for g in order]
    porder = np.argsort(pd, kind="stable")[:top]
    ppairs = [{"generated": gen_names[g], "real": real_names[int(pi[g])], "pixel_distance": float(pd[g]),
               "generated_index": int(g), "real_index": int(pi[g])} for g in porder]
    return {"n_generated": int(len(gen_feats)), "n_real": int(len(real_feats)),
            "feature": _summary(fd, ref_f), "pixel": _summary(pd, ref_p),
            "closest_pairs": pairs, "closest_pixel_pairs": ppairs,
            "nn_feature_distance": [float(x) for x in fd], "nn_pixel_distance": [float(x) for x in pd]}


def side_by_side_png(gen_images: Sequence[np.ndarray], real_images: Sequence[np.ndarray], captions: Sequence[str],
                     path: str | Path, size: int = 128) -> None:
    """Rows of (generated | nearest real) with a caption, saved atomically."""
    from synth.synthesis.render import save_png

    cap_h = 14
    rows = max(1, len(gen_images))
    sheet = Image.new("RGB", (2 * size + 3 * 4 + 240, rows * (size + 4) + 4 + cap_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 1), "generated | nearest real", fill="black")
    for r, (g, real, cap) in enumerate(zip(gen_images, real_images, captions)):
        y = cap_h + 4 + r * (size + 4)
        for c, im in enumerate((g, real)):
            pil = Image.fromarray(np.asarray(im, dtype=np.uint8)).convert("RGB").resize((size, size), Image.NEAREST)
            sheet.paste(pil, (4 + c * (size + 4), y))
        draw.multiline_text((2 * size + 12, y + 2), cap, fill="black")
    save_png(sheet, path)
