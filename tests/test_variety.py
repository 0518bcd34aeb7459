"""Variety metrics: PRDC, within-cell diversity, attribute entropy (synth.quality.variety)."""
from __future__ import annotations

import numpy as np
import pytest

from synth.quality.errors import QualityError
from synth.quality.variety import (SKIN_TONE_EDGES, attribute_variety, bin_continuous, entropy, mean_pairwise_distance,
                                   prdc, total_variation, within_cell_diversity)


def _draws(n=400, d=16, seed=0):
    """Two independent draws from one distribution, and a collapsed set: one real vector, tiny noise."""
    rng = np.random.default_rng(seed)
    real, real2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    collapsed = real[0] + rng.normal(scale=1e-3, size=(n, d))
    return real, real2, collapsed


# ---- PRDC ------------------------------------------------------------------------------------


def test_prdc_hand_made_1d_outliers_inflate_recall_not_coverage():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1: every real ball has radius 1
    fake = np.array([[0.4], [10.0], [20.0]])  # generated balls: 9.6, 9.6, 10
    r = prdc(real, fake, k=1)
    assert r["precision"] == pytest.approx(1 / 3)  # only 0.4 lies in a real ball
    assert r["recall"] == 1.0  # the outliers' huge balls swallow every real sample...
    assert r["coverage"] == pytest.approx(0.5)  # ...but only reals 0 and 1 have a generated sample in their ball
    assert r["density"] == pytest.approx(2 / 3)  # 0.4 sits in two real balls, the outliers in none


def test_prdc_hand_made_1d_collapse_closed_balls():
    real = np.arange(8.0)[:, None]  # k=2 radii: 2 at the ends, 1 inside
    fake = np.array([[3.0], [3.1], [3.2]])  # generated radii 0.2, 0.1, 0.2
    r = prdc(real, fake, k=2)
    assert r["precision"] == 1.0  # every generated sample is realistic...
    assert r["recall"] == pytest.approx(1 / 8)  # ...but only real 3 lies in the generated manifold
    assert r["coverage"] == pytest.approx(3 / 8)  # balls of reals 2, 3, 4 (2 at distance exactly 1: closed ball)
    assert r["density"] == pytest.approx((3 + 2 + 2) / 3 / 2)


def test_prdc_matches_brute_force_definition():
    rng = np.random.default_rng(3)
    real, fake, k = rng.normal(size=(30, 3)), rng.normal(loc=0.4, size=(23, 3)), 3

    def radius(x, i):
        return sorted(np.linalg.norm(x - x[i], axis=1))[k]  # index 0 is the point itself

    rr = [radius(real, i) for i in range(len(real))]
    rf = [radius(fake, j) for j in range(len(fake))]
    d = lambda a, b: float(np.linalg.norm(a - b))  # noqa: E731
    prec = np.mean([any(d(f, r) <= rr[i] for i, r in enumerate(real)) for f in fake])
    rec = np.mean([any(d(r, f) <= rf[j] for j, f in enumerate(fake)) for r in real])
    dens = np.mean([sum(d(f, r) <= rr[i] for i, r in enumerate(real)) for f in fake]) / k
    cov = np.mean([min(d(r, f) for f in fake) <= rr[i] for i, r in enumerate(real)])
    got = prdc(real, fake, k=k)
    assert got == pytest.approx({"precision": prec, "recall": rec, "density": dens, "coverage": cov})


def test_prdc_collapsed_low_independent_draw_high():
    real, real2, collapsed = _draws()
    good, bad = prdc(real, real2, k=5), prdc(real, collapsed, k=5)
    assert set(good) == {"precision", "recall", "density", "coverage"}
    assert good["recall"] > 0.8 and good["coverage"] > 0.8 and good["precision"] > 0.8
    assert 0.7 < good["density"] < 1.3
    assert bad["recall"] < 0.2 and bad["coverage"] < 0.2
    assert bad["precision"] > 0.5  # the one collapsed face is realistic: precision alone never shows collapse


@pytest.mark.parametrize("real, fake, k, message", [
    (np.zeros((5, 2)), np.zeros((10, 2)), 5, "5 real samples, need more than k=5"),
    (np.zeros((10, 2)), np.zeros((3, 2)), 5, "3 generated samples"),
    (np.zeros((10, 2)), np.zeros((10, 3)), 2, "width"),
    (np.zeros(10), np.zeros((10, 2)), 2, "2-D"),
    (np.full((10, 2), np.nan), np.zeros((10, 2)), 2, "NaN"),
    (np.zeros((10, 2)), np.zeros((10, 2)), 0, "k must be"),
])
def test_prdc_bad_input(real, fake, k, message):
    with pytest.raises(QualityError, match=message):
        prdc(real, fake, k=k)


# ---- diversity -------------------------------------------------------------------------------


def test_mean_pairwise_distance_known_value_and_errors():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 8.0]])  # pair distances 5, 8, 5
    assert mean_pairwise_distance(x) == pytest.approx(6.0)
    assert mean_pairwise_distance(np.ones((4, 3))) == 0.0
    with pytest.raises(QualityError, match="at least 2 rows"):
        mean_pairwise_distance(np.zeros((1, 3)))


def test_within_cell_diversity_collapse_and_independent_draw():
    real, real2, collapsed = _draws(n=300)
    cells = [("a", "x"), ("a", "y"), ("b", "x")]
    real_by = {c: real[i * 100 : (i + 1) * 100] for i, c in enumerate(cells)}
    good = within_cell_diversity(real_by, {c: real2[i * 100 : (i + 1) * 100] for i, c in enumerate(cells)})
    assert set(good["per_cell"]) == set(cells)
    assert good["mean"] == pytest.approx(1.0, abs=0.1) and good["min"] > 0.85
    bad_fake = {c: real2[i * 100 : (i + 1) * 100] for i, c in enumerate(cells)}
    bad_fake[("b", "x")] = collapsed[:100]  # one cell collapsed: the min catches it, the mean only dips
    bad = within_cell_diversity(real_by, bad_fake)
    assert bad["per_cell"][("b", "x")] < 0.2 and bad["min"] < 0.2 and bad["mean"] > 0.6
    all_bad = within_cell_diversity(real_by, {c: collapsed[i * 100 : (i + 1) * 100] for i, c in enumerate(cells)})
    assert all_bad["mean"] < 0.2


def test_within_cell_diversity_skips_small_and_missing_cells():
    rng = np.random.default_rng(1)
    real_by = {("a",): rng.normal(size=(5, 4)), ("b",): rng.normal(size=(1, 4)), ("c",): np.ones((3, 4))}
    fake_by = {("a",): rng.normal(size=(4, 4)), ("b",): rng.normal(size=(4, 4)), ("c",): rng.normal(size=(3, 4)),
               ("d",): rng.normal(size=(4, 4))}
    res = within_cell_diversity(real_by, fake_by)
    assert set(res["per_cell"]) == {("a",), ("c",)}  # b: 1 real row; d: no real rows
    assert res["per_cell"][("c",)] is None  # identical real rows: no defined ratio
    assert res["mean"] == res["min"] == res["per_cell"][("a",)]
    empty = within_cell_diversity({("a",): np.zeros((1, 2))}, {("a",): np.zeros((5, 2))})
    assert empty == {"per_cell": {}, "mean": None, "min": None}
    with pytest.raises(QualityError, match="width"):
        within_cell_diversity({("a",): np.zeros((3, 2))}, {("a",): np.zeros((3, 5))})


# ---- attributes ------------------------------------------------------------------------------


def test_entropy_and_total_variation_known_values():
    assert entropy(np.array([0, 1, 2, 3] * 5), 4) == pytest.approx(np.log(4))
    assert entropy(np.array([2, 2, 2]), 4) == 0.0
    assert entropy(np.array([0, 0, 1, 1]), 5) == pytest.approx(np.log(2))  # empty classes add nothing
    assert total_variation(np.array([0, 1]), np.array([0, 0]), 2) == pytest.approx(0.5)
    assert total_variation(np.array([0, 0]), np.array([1, 1]), 3) == pytest.approx(1.0)
    assert total_variation(np.array([0, 1, 2]), np.array([2, 1, 0]), 3) == 0.0


@pytest.mark.parametrize("labels, n, message", [
    (np.array([0, 4]), 4, r"\[0, 3\]"),
    (np.array([-1, 0]), 4, r"\[0, 3\]"),
    (np.array([], dtype=int), 4, "non-empty"),
    (np.array([0.5, 1.0]), 4, "integers"),
    (np.array([0, 1]), 0, "n_classes"),
])
def test_entropy_bad_input(labels, n, message):
    with pytest.raises(QualityError, match=message):
        entropy(labels, n)


def test_attribute_variety_collapse_and_independent_draw():
    rng = np.random.default_rng(0)
    cells = [("a",), ("b",), ("c",)]
    real = {c: rng.integers(0, 4, size=200) for c in cells}
    real2 = {c: rng.integers(0, 4, size=200) for c in cells}
    collapsed = {c: np.full(200, 1) for c in cells}
    good, bad = attribute_variety(real, real2, 4), attribute_variety(real, collapsed, 4)
    assert good["entropy_ratio"] == pytest.approx(1.0, abs=0.05) and good["tv"] < 0.15
    assert bad["entropy_ratio"] < 0.05 and bad["tv"] > 0.6
    e = bad["per_cell"][("a",)]
    assert set(e) == {"entropy_real", "entropy_fake", "ratio", "tv"} and e["entropy_fake"] == 0.0


def test_attribute_variety_skips_single_class_real_cells_in_ratio():
    real = {("a",): np.array([0, 1]), ("b",): np.array([2, 2]), ("c",): np.array([0])}
    fake = {("a",): np.array([0, 0]), ("b",): np.array([2, 3]), ("z",): np.array([1])}
    res = attribute_variety(real, fake, 4)
    assert set(res["per_cell"]) == {("a",), ("b",)}
    assert res["per_cell"][("b",)]["ratio"] is None  # real entropy 0: no ratio
    assert res["entropy_ratio"] == 0.0  # only cell a counts: its fake entropy is 0
    assert res["tv"] == pytest.approx((0.5 + 0.5) / 2)


def test_bin_continuous_skin_tone_edges():
    assert SKIN_TONE_EDGES == (0.25, 0.5, 0.75)
    got = bin_continuous([0.0, 0.24, 0.25, 0.5, 0.74, 0.99, 1.0], SKIN_TONE_EDGES)
    assert got.tolist() == [0, 0, 1, 2, 2, 3, 3] and got.dtype.kind == "i"
    assert entropy(got, len(SKIN_TONE_EDGES) + 1) > 0
    with pytest.raises(QualityError, match="strictly increasing"):
        bin_continuous([0.1], [0.5, 0.25])
    with pytest.raises(QualityError, match="NaN"):
        bin_continuous([np.nan], SKIN_TONE_EDGES)
