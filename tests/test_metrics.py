import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from classifiers.metrics import MetricsError, evaluate, summarize_folds
from classifiers.reports import write_report, write_summary
from classifiers.stats import bootstrap_ci, corrected_resampled_ttest, mcnemar, paired_difference

CLASSES = ["A", "B", "C"]
# 3 classes x 3 samples.  Arg-max predictions: [A, A, A, B, B, C, C, A, B]
PROBS = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.6, 0.3, 0.1],
        [0.5, 0.2, 0.3],
        [0.1, 0.7, 0.2],
        [0.2, 0.5, 0.3],
        [0.1, 0.3, 0.6],
        [0.2, 0.1, 0.7],
        [0.4, 0.3, 0.3],
        [0.3, 0.4, 0.3],
    ]
)
TARGETS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
# Confusion (rows true):  A: [3, 0, 0]   B: [0, 2, 1]   C: [1, 1, 1]
# A: TP 3 FN 0 FP 1 TN 5 -> sens 1,   spec 5/6, prec 3/4, F1 6/7
# B: TP 2 FN 1 FP 1 TN 5 -> sens 2/3, spec 5/6, prec 2/3, F1 4/6
# C: TP 1 FN 2 FP 1 TN 5 -> sens 1/3, spec 5/6, prec 1/2, F1 2/5
# AUC A: every positive score (.8 .6 .5) beats every negative (.1 .2 .1 .2 .4 .3) -> 1
# AUC B: positives .7 .5 .3 vs negatives .1 .3 .2 .1 .3 .4: 6 + 6 + (3 + 2 ties/2) = 16/18
# AUC C: positives .7 .3 .3 vs negatives .1 .1 .3 .2 .3 .6: 6 + 4 + 4 = 14/18
EXPECTED = {
    "A": dict(support=3, sensitivity=1.0, specificity=5 / 6, precision=3 / 4, f1=6 / 7, auc=1.0),
    "B": dict(support=3, sensitivity=2 / 3, specificity=5 / 6, precision=2 / 3, f1=4 / 6, auc=16 / 18),
    "C": dict(support=3, sensitivity=1 / 3, specificity=5 / 6, precision=1 / 2, f1=2 / 5, auc=14 / 18),
}


def test_evaluate_hand_computed():
    r = evaluate(PROBS, TARGETS, CLASSES)
    assert r["n"] == 9
    assert r["confusion_matrix"] == [[3, 0, 0], [0, 2, 1], [1, 1, 1]]
    assert r["accuracy"] == pytest.approx(6 / 9)
    assert r["balanced_accuracy"] == pytest.approx((1 + 2 / 3 + 1 / 3) / 3)
    for c, exp in EXPECTED.items():
        for m, v in exp.items():
            assert r["per_class"][c][m] == pytest.approx(v), (c, m)
    assert r["macro_f1"] == pytest.approx((6 / 7 + 4 / 6 + 2 / 5) / 3)
    assert r["macro_auc"] == pytest.approx((1 + 16 / 18 + 14 / 18) / 3)
    assert "mae_grade" not in r
    json.dumps(r)  # serialisable as is


def test_soft_targets_use_argmax():
    soft = np.zeros((9, 3))
    soft[np.arange(9), TARGETS] = 0.75
    soft[np.arange(9), (TARGETS + 1) % 3] = 0.25
    assert evaluate(PROBS, soft, CLASSES)["per_class"] == evaluate(PROBS, TARGETS, CLASSES)["per_class"]


def test_imbalanced_and_undefined_values():
    # 4 x class 0, 1 x class 1, everything predicted 0: accuracy 4/5, balanced (1 + 0) / 2
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    r = evaluate(probs, [0, 0, 0, 0, 1], ["neg", "pos"])
    assert r["accuracy"] == pytest.approx(0.8)
    assert r["balanced_accuracy"] == pytest.approx(0.5)
    pos = r["per_class"]["pos"]
    assert pos["precision"] is None  # never predicted: 0/0
    assert pos["f1"] == 0.0  # 2*0 / (0 + 0 + 1)
    assert pos["auc"] == pytest.approx(1.0)  # .45 beats .1 .2 .3 .4
    assert r["per_class"]["neg"]["specificity"] == 0.0


def test_auc_none_when_class_missing():
    # class C never occurs as a target: its AUC is undefined, sensitivity too
    probs = PROBS[:6]
    r = evaluate(probs, TARGETS[:6], CLASSES)
    assert r["per_class"]["C"]["auc"] is None
    assert r["per_class"]["C"]["sensitivity"] is None
    assert r["per_class"]["C"]["support"] == 0
    # balanced accuracy only over classes that have samples: A 3/3, B 2/3
    assert r["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    # only one class present: every AUC undefined, no crash
    r1 = evaluate(PROBS[:3], TARGETS[:3], CLASSES)
    assert all(r1["per_class"][c]["auc"] is None for c in CLASSES)
    assert r1["macro_auc"] is None


def test_per_cell_table_in_given_order():
    cells = [("a", "child"), ("a", "child"), ("a", "adult"), ("b", "child"), ("b", "child"),
             ("b", "adult"), ("b", "adult"), ("a", "adult"), ("a", "adult")]
    # correct: [T, T, T, T, T, F, T, F, F]
    order = [("a", "child"), ("a", "adult"), ("b", "child"), ("b", "adult"), ("c", "child")]
    r = evaluate(PROBS, TARGETS, CLASSES, cells=cells, cell_names=["disease", "age"], cell_order=order)
    assert r["cell_names"] == ["disease", "age"]
    table = [(tuple(x["cell"]), x["n"], x["correct"], x["accuracy"]) for x in r["per_cell"]]
    assert table == [
        (("a", "child"), 2, 2, 1.0),
        (("a", "adult"), 3, 1, pytest.approx(1 / 3)),
        (("b", "child"), 2, 2, 1.0),
        (("b", "adult"), 2, 1, 0.5),
        (("c", "child"), 0, 0, None),
    ]
    with pytest.raises(MetricsError, match="not in cell_order"):
        evaluate(PROBS, TARGETS, CLASSES, cells=cells, cell_order=order[:2])
    # without an order: sorted keys
    r2 = evaluate(PROBS, TARGETS, CLASSES, cells=[c[0] for c in cells])
    assert [x["cell"] for x in r2["per_cell"]] == [["a"], ["b"]]


def test_ordinal_grade_error():
    # |pred - true| = [0 0 0 0 0 1 0 2 1] -> MAE 4/9, within one grade 8/9
    r = evaluate(PROBS, TARGETS, CLASSES, ordinal=True)
    assert r["mae_grade"] == pytest.approx(4 / 9)
    assert r["within_one_grade"] == pytest.approx(8 / 9)


@pytest.mark.parametrize(
    "probs,targets,names,msg",
    [
        (np.ones((3, 2)), [0, 1, 2], ["x", "y"], "range"),
        (np.ones((3, 3)), [0, 1], ["x", "y", "z"], "length"),
        (np.ones(3), [0, 1, 2], ["x", "y", "z"], r"\[N, K\]"),
        (np.full((3, 3), np.nan), [0, 1, 2], ["x", "y", "z"], "NaN"),
        (np.ones((3, 2)), [0, 1, 1], ["x", "y", "z"], "columns"),
        (np.ones((3, 2)), [0, 1, 1], ["x", "x"], "unique"),
    ],
)
def test_evaluate_bad_input(probs, targets, names, msg):
    with pytest.raises(MetricsError, match=msg):
        evaluate(probs, targets, names)


def test_summarize_folds_mean_sd():
    folds = [
        evaluate(PROBS, TARGETS, CLASSES),                    # accuracy 6/9
        evaluate(PROBS[:6], TARGETS[:6], CLASSES),            # accuracy 5/6
        evaluate(np.eye(3)[TARGETS], TARGETS, CLASSES),       # accuracy 1
    ]
    for f, r in enumerate(folds):
        r["fold"] = f  # bookkeeping, not averaged
    s = summarize_folds(folds)
    assert s["n_folds"] == 3
    assert "fold" not in s["metrics"] and "balanced_accuracy" in s["metrics"]
    accs = np.array([6 / 9, 5 / 6, 1.0])
    # hand: mean 0.8333, deviations -1/6, 0, 1/6 -> var (2/36)/2 = 1/36 -> sd 1/6
    assert s["metrics"]["accuracy"]["mean"] == pytest.approx(accs.mean())
    assert s["metrics"]["accuracy"]["sd"] == pytest.approx(1 / 6)
    assert s["metrics"]["accuracy"]["n"] == 3
    # per class: C's AUC is undefined in fold 2, so it averages folds 1 and 3 only
    auc_c = s["per_class"]["C"]["auc"]
    assert auc_c["n"] == 2
    assert auc_c["mean"] == pytest.approx((14 / 18 + 1.0) / 2)
    assert auc_c["sd"] == pytest.approx(np.std([14 / 18, 1.0], ddof=1))
    assert s["per_class"]["A"]["sensitivity"]["mean"] == pytest.approx(1.0)
    assert s["per_class"]["A"]["sensitivity"]["sd"] == pytest.approx(0.0)
    assert np.array(s["confusion_matrix"]).sum() == 9 + 6 + 9
    single = summarize_folds(folds[:1])
    assert single["metrics"]["accuracy"]["sd"] is None


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=60)
    pred = np.where(rng.random(60) < 0.7, y, (y + 1) % 3)
    ci = bootstrap_ci(y, pred, "accuracy", n_boot=300, seed=3)
    assert ci.estimate == pytest.approx(np.mean(y == pred))
    assert ci.low <= ci.estimate <= ci.high
    assert ci.high - ci.low > 0.05  # 60 samples cannot pin accuracy down to 5 points
    assert bootstrap_ci(y, pred, "accuracy", n_boot=300, seed=3) == ci
    assert bootstrap_ci(y, pred, "accuracy", n_boot=300, seed=4) != ci
    # probabilities give the same answer as their arg-max
    probs = np.eye(3)[pred] * 0.6 + 0.1
    assert bootstrap_ci(y, probs, "balanced_accuracy", n_boot=200, seed=0) == bootstrap_ci(
        y, pred, "balanced_accuracy", n_boot=200, seed=0)


def test_bootstrap_groups_resample_whole_subjects():
    y = np.zeros(10, dtype=int)
    pred = np.zeros(10, dtype=int)
    groups = np.repeat(np.arange(5), 2)  # 5 subjects x 2 images
    sizes = []

    def count(t, p):
        sizes.append(len(t))
        return float(len(t))

    bootstrap_ci(y, pred, count, n_boot=50, seed=0, groups=groups)
    assert all(s % 2 == 0 for s in sizes)
    # with uneven groups the resample size varies
    sizes.clear()
    bootstrap_ci(y, pred, count, n_boot=50, seed=0, groups=[0] * 6 + [1, 2, 3, 4])
    assert len(set(sizes)) > 1


def test_paired_difference_hand_computed():
    a = [0.80, 0.85, 0.90, 0.82, 0.88]
    b = [0.78, 0.80, 0.86, 0.83, 0.84]
    # d = [.02 .05 .04 -.01 .04], mean .028, sum sq dev .00228, var .00057, sd .023875
    # se = sd / sqrt(5) = .010677, t = 2.6224, t(.975, 4) = 2.776445 -> CI .028 +- .029645
    r = paired_difference(a, b)
    assert r.mean == pytest.approx(0.028)
    assert r.sd == pytest.approx(math.sqrt(0.00057))
    assert r.statistic == pytest.approx(0.028 / math.sqrt(0.00057 / 5))
    assert r.ci_low == pytest.approx(0.028 - 2.776445 * math.sqrt(0.00057 / 5), abs=1e-6)
    assert r.ci_high == pytest.approx(0.028 + 2.776445 * math.sqrt(0.00057 / 5), abs=1e-6)
    ref = stats.ttest_rel(a, b)
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.df == 4


def test_corrected_resampled_ttest():
    d = [0.02, 0.05, 0.04, -0.01, 0.04]
    # var * (1/5 + 20/80) = .00057 * .45 = .0002565 -> t = .028 / .016016 = 1.7483
    r = corrected_resampled_ttest(d, n_train=80, n_test=20)
    se = math.sqrt(0.00057 * 0.45)
    assert r.statistic == pytest.approx(0.028 / se)
    assert r.p_value == pytest.approx(2 * stats.t.sf(0.028 / se, 4))
    assert r.ci_high - r.mean == pytest.approx(stats.t.ppf(0.975, 4) * se)
    # the correction widens the interval relative to the plain paired test
    plain = paired_difference(d, np.zeros(5))
    assert r.p_value > plain.p_value
    with pytest.raises(MetricsError):
        corrected_resampled_ttest(d, n_train=0, n_test=20)
    with pytest.raises(MetricsError, match="at least two"):
        corrected_resampled_ttest([0.1], 10, 2)


def _outcomes(both, b, c, neither):
    a = [True] * both + [True] * b + [False] * c + [False] * neither
    bb = [True] * both + [False] * b + [True] * c + [False] * neither
    return np.array(a), np.array(bb)


def test_mcnemar_exact_and_chi2():
    # b = 3, c = 10 (13 discordant < 25 -> exact): p = 2 * (1 + 13 + 78 + 286) / 2^13
    a, b = _outcomes(20, 3, 10, 5)
    r = mcnemar(a, b)
    assert r.exact and (r.b, r.c) == (3, 10)
    assert r.p_value == pytest.approx(2 * 378 / 8192)
    assert r.p_value == pytest.approx(stats.binomtest(3, 13, 0.5).pvalue)
    # b = 10, c = 25 (35 >= 25 -> chi2): (|10 - 25| - 1)^2 / 35 = 5.6
    a, b = _outcomes(40, 10, 25, 3)
    r = mcnemar(a, b)
    assert not r.exact
    assert r.statistic == pytest.approx(5.6)
    assert r.p_value == pytest.approx(stats.chi2.sf(5.6, 1))
    # forcing exact on the same counts
    assert mcnemar(a, b, exact=True).p_value == pytest.approx(stats.binomtest(10, 35, 0.5).pvalue)
    # no discordant pairs
    assert mcnemar([True, False], [True, False]).p_value == 1.0


def test_write_report_files(tmp_path):
    cells = [("a",)] * 5 + [("b",)] * 4
    r = evaluate(PROBS, TARGETS, CLASSES, cells=cells, cell_names=["disease"])
    paths = write_report(tmp_path / "rep", r, CLASSES, prefix="fold0_")
    names = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert names == ["fold0_confusion_matrix.csv", "fold0_confusion_matrix.png", "fold0_metrics.json",
                     "fold0_per_cell.csv", "fold0_per_class.csv"]
    assert json.loads(paths["metrics"].read_text())["accuracy"] == pytest.approx(6 / 9)
    rows = list(csv.reader(paths["confusion_csv"].read_text().splitlines()))
    assert rows[0] == ["true\\predicted", "A", "B", "C"]
    assert rows[3] == ["C", "1", "1", "1"]
    per_class = list(csv.DictReader(paths["per_class"].read_text().splitlines()))
    assert [r_["class"] for r_ in per_class] == CLASSES
    assert float(per_class[2]["precision"]) == pytest.approx(0.5)
    per_cell = list(csv.DictReader(paths["per_cell"].read_text().splitlines()))
    # correct = [T T T T T | F T F F]
    assert per_cell[0] == {"disease": "a", "n": "5", "correct": "5", "accuracy": "1"}
    assert per_cell[1] == {"disease": "b", "n": "4", "correct": "1", "accuracy": "0.25"}
    assert paths["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = summarize_folds([r, r])
    sp = write_summary(tmp_path / "rep", s)
    assert list(csv.DictReader(sp["scalars"].read_text().splitlines()))[0]["metric"] == "n"
    assert sp["confusion_png"].exists()
    with pytest.raises(MetricsError):
        write_report(tmp_path / "bad", r, ["A", "B"])
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
