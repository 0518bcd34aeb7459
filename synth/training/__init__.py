"""GAN training engine: losses, the training loop, presets and ADA (snapshots are written with
:mod:`synth.networks.checkpoint`, the format every tool reads).

Heavy modules are imported lazily so ``import synth.training`` stays cheap.
"""
from __future__ import annotations

from synth.utils.lazy import lazy_exports

_WHERE = {
    "TrainingOptions": "options",
    "Trainer": "training_loop",
    "TrainingError": "options",
    "TrainingDiverged": "options",
    "resolve_preset": "presets",
}

__getattr__, __all__ = lazy_exports(__name__, _WHERE)
