"""The registered small CNN: a timm-compatible model that learns from scratch on a CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize("name, width", [("small_cnn", 32), ("small_cnn_s", 16)])
def test_registered_in_timm_and_built_by_create_model(name, width):
    import timm

    from classifiers.models import check_model_name, create_model

    assert check_model_name(name) == name and timm.is_model(name)
    m = create_model(name, num_classes=5, drop_rate=0.3)
    assert m.num_features == 8 * width and m.drop_rate == 0.3
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    # the timm interface the rest of the toolkit relies on
    assert m.get_classifier().out_features == 5
    assert m.forward_head(m.forward_features(torch.randn(1, 3, 48, 48)), pre_logits=True).shape == (1, 8 * width)
    m.reset_classifier(2)
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    assert timm.create_model(name, num_classes=0)(torch.randn(1, 3, 32, 32)).shape == (1, 8 * width)


def test_grayscale_input_and_normalisation():
    from classifiers.models import create_model, model_normalisation

    m = create_model("small_cnn_s", num_classes=3, in_chans=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    norm = model_normalisation(create_model("small_cnn_s", num_classes=3))
    assert norm.mean == (0.5, 0.5, 0.5) and norm.std == (0.5, 0.5, 0.5)


def test_no_published_weights_is_a_one_line_error_and_local_weights_load(tmp_path):
    from safetensors.torch import save_file

    from classifiers.models import ModelError, create_model

    with pytest.raises(ModelError, match="no local weights for small_cnn"):
        create_model("small_cnn", num_classes=3, pretrained=True)
    src = create_model("small_cnn_s", num_classes=7)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    m = create_model("small_cnn_s", num_classes=3, pretrained=tmp_path / "w.safetensors")
    assert torch.equal(m.features[0].weight, src.features[0].weight)  # backbone copied
    assert m.get_classifier().out_features == 3  # head of another class count left fresh
    with pytest.raises(ModelError, match="do not fit"):
        create_model("small_cnn", num_classes=3, pretrained=tmp_path / "w.safetensors")  # width 16 into 32


def test_learns_a_shape_task_from_scratch_through_the_trainer():
    """Bright square top-left vs bottom-right, with random colours: a spatial task that a
    colour histogram cannot solve.  Three epochs must take the model well above chance."""
    from classifiers.data import LabelledImages, Target
    from classifiers.train import TrainConfig, train_classifier

    rng = np.random.default_rng(0)
    n = 96
    y = np.arange(n) % 2
    x = rng.uniform(0.0, 0.4, size=(n, 3, 32, 32)).astype(np.float32)
    for i in range(n):
        r0 = 4 if y[i] == 0 else 18
        x[i, :, r0:r0 + 10, r0:r0 + 10] += rng.uniform(0.5, 0.6, size=(3, 1, 1)).astype(np.float32)
    images = torch.from_numpy((x.clip(0, 1) * 255).round().astype(np.uint8))
    targets = np.eye(2, dtype=np.float32)[y]
    weights = np.ones(n, dtype=np.float32)
    target = Target(factors=("side",), class_names=("top_left", "bottom_right"))
    train = LabelledImages(images[:64], targets[:64], weights[:64])
    val = LabelledImages(images[64:], targets[64:], weights[64:])
    cfg = TrainConfig(model="small_cnn_s", size=32, epochs=3, batch=16, lr=3e-3, aug="none", progress=False,
                      device="cpu", warmup=0.0)
    res = train_classifier(train, val, target, cfg)
    acc = float((res.val_probs.argmax(1) == y[64:]).mean())
    assert acc >= 0.9, acc
