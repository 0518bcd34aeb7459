"""Soft-label cross-entropy with class and per-sample weights.

For a sample i with target distribution t_i (one-hot or soft), class weights c and a
sample weight s_i:

    loss_i = -sum_k c_k t_ik log p_ik
    loss   = sum_i s_i loss_i / sum_i s_i (sum_k c_k t_ik)

For one-hot targets and unit sample weights this is exactly
``F.cross_entropy(logits, y, weight=c)`` (PyTorch's weighted mean), so class weights mean
the same thing as in the usual hard-label setting; soft targets spread the class weight
over their mix, and sample weights (e.g. own images x5 against an auxiliary set) scale a
sample's share of the batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["soft_cross_entropy", "to_soft_targets"]


def to_soft_targets(targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices [N] -> one-hot float [N, K]; float [N, K] targets pass through."""
    if targets.dim() == 1:
        return F.one_hot(targets.long(), num_classes).float()
    if targets.shape[-1] != num_classes:
        raise ValueError(f"targets have {targets.shape[-1]} classes, logits {num_classes}")
    return targets.float()


def soft_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_weight: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Weighted cross-entropy against soft (or index) targets; see the module doc."""
    k = logits.shape[-1]
    t = to_soft_targets(targets, k).to(logits.device)
    logp = F.log_softmax(logits.float(), dim=-1)
    ct = t if class_weight is None else t * class_weight.to(logits.device, torch.float32)
    per_sample = -(ct * logp).sum(-1)
    eff = ct.sum(-1)  # effective class weight of each sample (1 without class weights)
    if sample_weight is not None:
        s = sample_weight.to(logits.device, torch.float32)
        per_sample = per_sample * s
        eff = eff * s
    if reduction == "none":
        return per_sample
    if reduction == "sum":
        return per_sample.sum()
    if reduction != "mean":
        raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")
    # Guard an all-zero-weight batch (e.g. only zero-weight classes) instead of dividing by 0.
    return per_sample.sum() / eff.sum().clamp_min(1e-12)
