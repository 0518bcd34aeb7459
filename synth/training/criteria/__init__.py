"""Pluggable training criteria beside the StyleGAN2 loss, one small module each.

``loss.StyleGAN2Loss`` composes them; each is off unless its weight or schedule is set:

- :mod:`aux_classifier`: an auxiliary classifier on D's features, one head per factor (AC-GAN).
- :mod:`transitional`: unconditional training first, then the label ramped in (Shahbazi et al. 2022).
- :mod:`lecam`: the LeCam regulariser on D's outputs for limited data (Tseng et al. 2021).
"""
from .aux_classifier import AuxClassifierLoss, factor_targets, soft_cross_entropy
from .lecam import LeCam
from .transitional import ramp_weight, transitional_logistic

__all__ = [
    "AuxClassifierLoss",
    "factor_targets",
    "soft_cross_entropy",
    "LeCam",
    "ramp_weight",
    "transitional_logistic",
]
