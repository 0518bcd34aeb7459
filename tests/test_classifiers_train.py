"""Classifier core: loss, targets, ensemble gate, training, checkpoints and cross-validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import grid_rows, write_tiny_dataset

TINY = "test_efficientnet"  # ~100k parameters: a real timm EfficientNet, fast at 32 px


def tiny_config(**kw):
    from classifiers.train import TrainConfig

    base = dict(model=TINY, size=32, epochs=2, batch=8, lr=1e-3, aug="faces", progress=False, device="cpu", warmup=0.5)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def small_ds(tmp_path):
    """3 diseases x 2 ages x 4 images, two images per subject, 32 px."""
    rows = grid_rows(["syndrome_a", "syndrome_b", "unaffected"], ["infant", "child"], per_cell=4, subjects_per_image=2)
    return write_tiny_dataset(tmp_path / "ds", rows, size=32)


# ---------------------------------------------------------------------------------------- loss


def test_soft_ce_equals_ce_for_one_hot_and_class_weights():
    from classifiers.losses import soft_cross_entropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 1, 0])
    onehot = F.one_hot(y, 4).float()
    assert torch.allclose(soft_cross_entropy(logits, onehot), F.cross_entropy(logits, y), atol=1e-6)
    cw = torch.tensor([10.0, 1.0, 2.0, 0.5])
    assert torch.allclose(soft_cross_entropy(logits, onehot, cw), F.cross_entropy(logits, y, weight=cw), atol=1e-6)
    # index targets are accepted too
    assert torch.allclose(soft_cross_entropy(logits, y, cw), F.cross_entropy(logits, y, weight=cw), atol=1e-6)


def test_soft_ce_for_soft_targets_matches_hand_value_and_differs_from_hard():
    from classifiers.losses import soft_cross_entropy

    logits = torch.tensor([[2.0, 0.0, -1.0]])
    t = torch.tensor([[0.55, 0.45, 0.0]])
    logp = [2.0 - math.log(math.exp(2) + 1 + math.exp(-1)), 0.0 - math.log(math.exp(2) + 1 + math.exp(-1))]
    expected = -(0.55 * logp[0] + 0.45 * logp[1])
    assert soft_cross_entropy(logits, t).item() == pytest.approx(expected, rel=1e-6)
    hard = F.cross_entropy(logits, torch.tensor([0])).item()
    assert expected > hard + 0.5  # the 45 % mass on a low-logit class costs extra


def test_class_and_sample_weights_hand_computed():
    from classifiers.losses import soft_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    cw = torch.tensor([10.0, 1.0])
    sw = torch.tensor([5.0, 1.0])  # own image x5 against an auxiliary one

    def nll(row, k):
        return -(row[k] - math.log(sum(math.exp(v) for v in row)))

    l0 = 10.0 * nll([2.0, 0.0], 0)
    l1 = 0.25 * 10.0 * nll([0.0, 1.0], 0) + 0.75 * 1.0 * nll([0.0, 1.0], 1)
    eff0, eff1 = 10.0, 0.25 * 10.0 + 0.75 * 1.0
    expected = (5.0 * l0 + 1.0 * l1) / (5.0 * eff0 + 1.0 * eff1)
    got = soft_cross_entropy(logits, targets, cw, sw).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # weights really change the value (not silently ignored)
    assert abs(got - soft_cross_entropy(logits, targets).item()) > 1e-3
    assert abs(got - soft_cross_entropy(logits, targets, cw).item()) > 1e-3
    # zero weights everywhere: defined (0), no division by zero
    assert soft_cross_entropy(logits, targets, sample_weight=torch.zeros(2)).item() == 0.0


# ---------------------------------------------------------------------------------------- targets


def test_joined_target_is_outer_product_of_soft_mixes(tmp_path):
    from classifiers.data import parse_target, target_matrix
    from synth.data.dataset import open_dataset

    rows = [
        {"file": "a.png", "disease": "syndrome_a", "age": "child"},
        {"file": "b.png", "disease": "syndrome_a", "age": "infant",
         "p_disease=syndrome_a": "0.75", "p_disease=syndrome_b": "0.25", "p_disease=other_condition": "0",
         "p_disease=unaffected": "0"},
    ]
    ds = open_dataset(write_tiny_dataset(tmp_path / "soft", rows, size=16))
    t = parse_target("disease,age", ds.space)
    assert t.class_names[0] == "syndrome_a|infant" and t.num_classes == 20
    m = target_matrix(ds, t.factors)
    assert m.shape == (2, 20)
    assert m[0, t.index("syndrome_a|child")] == 1.0 and m[0].sum() == pytest.approx(1.0)
    assert m[1, t.index("syndrome_a|infant")] == pytest.approx(0.75)
    assert m[1, t.index("syndrome_b|infant")] == pytest.approx(0.25)
    single = target_matrix(ds, ("disease",))
    np.testing.assert_allclose(single[1], [0.75, 0.25, 0.0, 0.0])


def test_class_weight_parsing():
    from classifiers.data import ClassifierDataError, parse_class_weight

    names = ["a", "b", "c"]
    np.testing.assert_allclose(parse_class_weight("a=10,c=0.5", names), [10, 1, 0.5])
    t = np.array([[1, 0, 0]] * 6 + [[0, 1, 0]] * 2 + [[0, 0, 1]] * 1, dtype=np.float32)
    auto = parse_class_weight("auto", names, t)
    np.testing.assert_allclose(auto * np.array([6, 2, 1]), [3, 3, 3])  # inverse frequency
    with pytest.raises(ClassifierDataError, match="unknown class 'zz'"):
        parse_class_weight("zz=2", names)


def test_aux_set_classes_appended_and_weighted(small_ds, tmp_path):
    from classifiers.cv import prepare_target
    from classifiers.data import encode_images, parse_aux
    from synth.data.dataset import open_dataset

    aux_dir = write_tiny_dataset(
        tmp_path / "aux", [{"file": f"{i}.png", "lesion": lv} for i, lv in enumerate(["nevus", "melanoma", "nevus"])],
        size=32, schema="factors:\n- name: lesion\n  levels: [nevus, melanoma]\n",
    )
    own = open_dataset(small_ds)
    target, aux_sets = prepare_target(own, "disease", [parse_aux(f"{aux_dir}:0.2")])
    assert target.class_names[-2:] == ("nevus", "melanoma")
    ds, spec, factors = aux_sets[0]
    enc = encode_images(ds, target, 32, spec.weight, factors)
    assert enc.targets.shape == (3, 6) and enc.targets[1, target.index("melanoma")] == 1.0
    np.testing.assert_allclose(enc.weights, 0.2)


# ---------------------------------------------------------------------------------------- ensemble


def test_gate_averages_confident_models_and_falls_back():
    from classifiers.ensemble import gated_average

    p = np.array([
        [[0.9, 0.1], [0.45, 0.55], [0.40, 0.60]],
        [[0.6, 0.4], [0.30, 0.70], [0.55, 0.45]],
        [[0.2, 0.8], [0.60, 0.40], [0.52, 0.48]],
    ])
    r = gated_average(p, gate=0.65)
    # image 0: models 0 and 2 pass; image 1: only model 1; image 2: nobody -> all three
    np.testing.assert_allclose(r.probs[0], [(0.9 + 0.2) / 2, (0.1 + 0.8) / 2], rtol=1e-6)
    np.testing.assert_allclose(r.probs[1], [0.30, 0.70], rtol=1e-6)
    np.testing.assert_allclose(r.probs[2], p[:, 2].mean(0), rtol=1e-6)
    assert r.fallback.tolist() == [False, False, True] and r.n_fallback == 1
    assert r.n_models_used.tolist() == [2, 1, 3]
    assert np.isfinite(r.probs).all()
    assert gated_average(p, gate=1.0).fallback.all()  # impossible gate: always the full average


# ---------------------------------------------------------------------------------------- training


def _encode(ds_dir):
    from classifiers.data import encode_images, parse_target
    from synth.data.dataset import open_dataset

    ims = open_dataset(ds_dir)
    target = parse_target("disease", ims.space)
    data = encode_images(ims, target, 32)
    from classifiers.data import drop_empty_classes

    target, (data,) = drop_empty_classes(target, [data])
    return ims, target, data


def test_train_checkpoint_reloads_and_predicts_identically(small_ds, tmp_path):
    from classifiers.checkpoint import load_classifier
    from classifiers.ensemble import predict_probs
    from classifiers.train import train_classifier

    _, target, data = _encode(small_ds)
    train, val = data.take(range(0, 24, 2)), data.take(range(1, 24, 2))
    res = train_classifier(train, val, target, tiny_config(), out_dir=tmp_path / "run")
    assert res.checkpoint is not None and res.checkpoint.is_file()
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {"loss", "val_acc", "val_bal_acc", "lr", "time"} <= set(__import__("json").loads(lines[0]))
    model, meta = load_classifier(tmp_path / "run")
    assert meta["class_names"] == ["syndrome_a", "syndrome_b", "unaffected"] and meta["size"] == 32
    a = predict_probs(model, val.images, meta["normalisation"]["mean"], meta["normalisation"]["std"])
    np.testing.assert_allclose(a, res.val_probs, atol=1e-6)  # the reloaded best model = the one validated


def test_training_is_deterministic_with_a_seed(small_ds):
    from classifiers.train import train_classifier

    _, target, data = _encode(small_ds)
    runs = [train_classifier(data, None, target, tiny_config(seed=s)) for s in (3, 3, 4)]
    sd = [r.model.state_dict() for r in runs]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    assert any(not torch.equal(sd[0][k], sd[2][k]) for k in sd[0] if sd[0][k].is_floating_point())


def test_missing_pretrained_weights_fail_before_training(small_ds, tmp_path):
    from classifiers.models import ModelError
    from classifiers.train import train_classifier

    _, target, data = _encode(small_ds)
    with pytest.raises(ModelError, match="does not exist"):
        train_classifier(data, None, target, tiny_config(pretrained=str(tmp_path / "nope.safetensors")))


def test_pretrained_from_local_file_loads_backbone(tmp_path):
    from safetensors.torch import save_file

    from classifiers.models import create_model

    src = create_model(TINY, num_classes=1000)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = create_model(TINY, num_classes=3, pretrained=tmp_path / "w.safetensors")
    assert torch.equal(m.conv_stem.weight, src.conv_stem.weight)
    assert m.get_classifier().out_features == 3


# ---------------------------------------------------------------------------------------- cross-validation


def test_cv_respects_groups_and_keeps_extra_images_out_of_validation(small_ds, tmp_path):
    import json

    from classifiers.cv import CVConfig, run_cv
    from synth.data.dataset import open_dataset

    ims = open_dataset(small_ds)
    extra_rows = [{"file": f"x{i}.png", "disease": d, "age": "child", "fold": str(i % 3)}
                  for i, d in enumerate(["syndrome_a", "syndrome_b", "unaffected"] * 2)]
    extra = open_dataset(write_tiny_dataset(tmp_path / "extra", extra_rows, size=32, seed=5))
    cfg = CVConfig(train=tiny_config(epochs=1), target="disease", k=3)
    res = run_cv(ims, cfg, out_dir=tmp_path / "cv", extra_train=extra)
    groups = ims.groups()
    for g in set(groups):
        assert len(set(res.folds[groups == g].tolist())) == 1  # a subject never spans folds
    assert sorted(set(res.folds.tolist())) == [0, 1, 2]
    np.testing.assert_allclose(res.oof_probs.sum(1), 1.0, atol=1e-5)
    for f in range(3):
        meta = json.loads((tmp_path / "cv" / f"fold{f}" / "model.json").read_text())
        n_held = int((res.folds == f).sum())
        # training = other folds + the extra images not tagged with this fold; validation = own held-out only
        assert meta["n_val"] == n_held
        assert meta["n_train"] == len(ims) - n_held + 4
    assert res.summary["metrics"]["accuracy"]["n"] == 3
    for name in ("folds.csv", "oof_predictions.csv", "summary.json", "per_cell_summary.csv", "cv_result.json"):
        assert (tmp_path / "cv" / name).is_file()


def test_cv_rejects_class_missing_from_a_training_fold(tmp_path):
    from classifiers.cv import CVConfig, CVError, run_cv
    from synth.data.dataset import open_dataset

    rows = grid_rows(["syndrome_a", "unaffected"], ["child"], per_cell=6)
    rows.append({"file": "img/lonely.png", "disease": "syndrome_b", "age": "child", "subject": "only"})
    ims = open_dataset(write_tiny_dataset(tmp_path / "ds", rows, size=32))
    folds = np.array([i % 3 for i in range(len(rows))])
    with pytest.raises(CVError, match="'syndrome_b' has no images in the training folds of fold"):
        run_cv(ims, CVConfig(train=tiny_config(epochs=1), k=3), folds=folds)
