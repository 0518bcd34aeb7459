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

Mode ``adc`` (ADC-GAN, Hou et al. 2022): each head has a real and a fake output per level (real
level y at 2y, fake at 2y+1).  D learns both, on reals and on G's images; G is trained towards
"real y" and away from "fake y".  A plain AC-GAN's G can satisfy D's classifier with artefacts
that carry no condition; here D's classifier learns to call those fake.
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


def _slots(target: torch.Tensor, which: int) -> torch.Tensor:
    """A [N, K] level distribution placed on the real (0) or fake (1) slots of 2K outputs."""
    out = torch.zeros(target.shape[0], 2 * target.shape[1], device=target.device, dtype=target.dtype)
    out[:, which::2] = target
    return out


class AuxClassifierLoss:
    """Cross-entropy of D's auxiliary heads, summed over factors (mean over labelled rows per factor).

    ``role``: "D_real" (D on real images), "D_fake" (D on G's images; adc only) or "G".
    """

    MODES = ("ac", "adc")

    def __init__(self, space: ConditionSpace, weight: float, mode: str = "ac"):
        if mode not in self.MODES:
            raise ValueError(f"aux mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.space = space
        self.weight = float(weight)
        self.mode = mode

    def __call__(
        self, aux_logits: dict[str, torch.Tensor], c: torch.Tensor, role: str = "D_real"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss per sample [N] already weighted, {factor: accuracy of the level argmax vs target})."""
        targets = factor_targets(self.space, c)
        n = c.shape[0]
        loss = torch.zeros(n, device=c.device)
        acc = {}
        for name, logits in aux_logits.items():
            target, mask = targets[name]
            if self.mode == "ac":
                ce = soft_cross_entropy(logits, target)
                levels = logits
            elif role == "D_real":
                ce = soft_cross_entropy(logits, _slots(target, 0))
            elif role == "D_fake":
                ce = soft_cross_entropy(logits, _slots(target, 1))
            else:  # G: towards "real y", away from "fake y"
                ce = soft_cross_entropy(logits, _slots(target, 0)) - soft_cross_entropy(logits, _slots(target, 1))
            if self.mode == "adc":
                # level accuracy ignoring real/fake: sum the two slots of each level
                levels = logits.float().softmax(dim=1).view(n, -1, 2).sum(dim=2)
            # Mean over the rows that carry this factor's label, expressed per sample so the
            # caller's mean over the batch gives exactly that.
            loss = loss + ce * mask * (n / mask.sum().clamp_min(1))
            with torch.no_grad():
                hit = (levels.argmax(dim=1) == target.argmax(dim=1)).float()
                acc[name] = hit[mask]
        return loss * self.weight, acc
