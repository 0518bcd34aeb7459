"""A small CNN registered in timm's model registry, for training from scratch on a CPU.

Without pretrained weights, timm's ImageNet architectures learn little from a few hundred
images (EfficientNet-B0 stays at chance on the 400-image face atlas, see BENCHMARKS.md).
This network -- a strided stem, three conv stages with max pooling, global average
pooling and one linear head -- reaches the atlas's calibrated accuracy in minutes on two
cores.  It is an honest baseline for ablations on a CPU, not a replacement for a
pretrained EfficientNet on real photographs.

Registered names (use them anywhere a timm name is accepted, e.g. ``--model small_cnn``):

================  ======  ===========
name              width   parameters
================  ======  ===========
``small_cnn``     32      ~0.4 M
``small_cnn_s``   16      ~0.1 M
================  ======  ===========
"""
from __future__ import annotations

import torch
from timm.models import register_model
from torch import nn

__all__ = ["SmallCNN", "small_cnn", "small_cnn_s"]


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Stem (5x5, stride 2) + 3 stages (3x3 conv, BN, ReLU, 2x2 max pool) + GAP + linear.

    The timm model interface is kept (``num_features``, ``forward_features``,
    ``forward_head``, ``get_classifier``, ``reset_classifier``, ``pretrained_cfg``) so that
    the trainer, saliency and embedding code treat it like any timm backbone.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width: int = 32, drop_rate: float = 0.2):
        super().__init__()
        chans = [width, width * 2, width * 4, width * 8]
        layers = _conv_bn_relu(in_chans, chans[0], 5, stride=2)
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [*_conv_bn_relu(cin, cout, 3), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.num_features = chans[-1]
        self.drop_rate = drop_rate
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.num_classes = num_classes
        # Inputs in [0, 1] are mapped to [-1, 1]; there are no ImageNet statistics to match.
        self.pretrained_cfg = {
            "architecture": f"small_cnn_w{width}", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
            "input_size": (in_chans, 64, 64), "num_classes": num_classes,
            "first_conv": "features.0", "classifier": "head",
        }
        self.default_cfg = self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()


def _create(width: int, pretrained: bool = False, **kwargs) -> SmallCNN:
    if pretrained:
        raise ValueError("small_cnn has no published weights; pass a local weights file instead")
    # timm's factory also passes its weight-loading plumbing (pretrained_cfg, cache_dir,
    # ...); this model has no published weights, so only the architecture options count.
    arch = {k: kwargs[k] for k in ("num_classes", "in_chans", "drop_rate") if k in kwargs}
    return SmallCNN(width=width, **arch)


@register_model
def small_cnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """Width 32 (channels 32-64-128-256), about 0.4 M parameters."""
    return _create(32, pretrained, **kwargs)


@register_model
def small_cnn_s(pretrained: bool = False, **kwargs) -> SmallCNN:
    """Width 16 (channels 16-32-64-128), about 0.1 M parameters."""
    return _create(16, pretrained, **kwargs)
