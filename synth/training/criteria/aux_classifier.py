"""Auxiliary classifier on the discriminator's features (the AC-GAN family).

D learns to tell each factor's level on *real* images (cross-entropy on the real labels); G is
trained so that D's classifier recognises the labels it was asked to render.  Unlike the
projection term, this pushes G towards the features that separate the levels, which is what a
judge trained on real images looks for.

Labels may be soft (blended images, tied levels): each factor's target is its block of the
label vector mapped through the factor's tie matrix (a tied level becomes the mean of its
sources) and normalised to sum 1; the loss is the soft-target cross-entropy, which equals the
ordinary cross-entropy on one-hot targets.  Rows whose block is all zero carry no label for that
factor and are left out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from synth.conditions import ConditionSpace

__all__ = ["soft_cross_entropy", "factor_targets", "AuxClassifierLoss"]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ``-sum(target * log_softmax(logits))``: [N]."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)


def factor_targets(space: ConditionSpace, c: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per factor: (target distribution [N, levels], mask [N] of rows that carry a label)."""
    out = {}
    for f, sl in space.blocks():
        block = c[:, sl].float()
        if f.ties:
            block = block @ torch.from_numpy(f.tie_matrix()).to(device=c.device, dtype=block.dtype)
        mass = block.sum(dim=1)
        mask = mass > 1e-6
        out[f.name] = (block / mass.clamp_min(1e-6)[:, None], mask)
    return out


class AuxClassifierLoss:
    """Cross-entropy of D's auxiliary heads, summed over factors (mean over labelled rows per factor)."""

    def __init__(self, space: ConditionSpace, weight: float):
        self.space = space
        self.weight = float(weight)

    def __call__(self, aux_logits: dict[str, torch.Tensor], c: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss per sample [N] already weighted, {factor: accuracy of argmax vs target}) ."""
        targets = factor_targets(self.space, c)
        n = c.shape[0]
        loss = torch.zeros(n, device=c.device)
        acc = {}
        for name, logits in aux_logits.items():
            target, mask = targets[name]
            ce = soft_cross_entropy(logits, target) * mask
            # Mean over the rows that carry this factor's label, expressed per sample so the
            # caller's mean over the batch gives exactly that.
            loss = loss + ce * (n / mask.sum().clamp_min(1))
            with torch.no_grad():
                hit = (logits.argmax(dim=1) == target.argmax(dim=1)).float()
                acc[name] = hit[mask]
        return loss * self.weight, acc
