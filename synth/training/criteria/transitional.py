"""Transitional conditioning (Shahbazi et al., ICLR 2022, "Collapse by conditioning").

Conditional GANs trained on little data collapse: every label gets the same few images.  The
remedy is to start unconditionally, so G first learns the image distribution as a whole, and to
bring the label in gradually: a weight ``t`` rises linearly from 0 at ``start_kimg`` to 1 at
``end_kimg``.  G scales its label embedding by ``t`` (``MappingNetwork.cond_t``); D has an
unconditional logit beside its projection logit, and every logistic term becomes
``softplus(s * uncond) + t * softplus(s * cond)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ramp_weight", "transitional_logistic"]


def ramp_weight(kimg: float, start_kimg: float, end_kimg: float) -> float:
    """The label weight t at ``kimg``: 0 before start, 1 after end, linear in between."""
    if end_kimg <= start_kimg:
        raise ValueError(f"transitional ramp needs start < end, got {start_kimg} and {end_kimg}")
    return float(min(max((kimg - start_kimg) / (end_kimg - start_kimg), 0.0), 1.0))


def transitional_logistic(uncond: torch.Tensor, cond: torch.Tensor, t: float, sign: float) -> torch.Tensor:
    """``softplus(sign * uncond) + t * softplus(sign * cond)`` per sample.

    sign -1 is the "this is real" term (G's loss, D on reals), +1 the "this is fake" term.
    """
    return F.softplus(sign * uncond.float()) + t * F.softplus(sign * cond.float())
