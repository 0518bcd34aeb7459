"""GAN training engine: losses, the training loop, safe checkpoints, presets and ADA.

Heavy modules are imported lazily so ``import synth.training`` stays cheap.
"""
from __future__ import annotations

from synth.utils.lazy import lazy_exports

_WHERE = {
    "TrainingOptions": "options",
    "Trainer": "training_loop",
    "TrainingError": "options",
    "TrainingDiverged": "options",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_generator": "checkpoint",
    "CheckpointError": "checkpoint",
    "resolve_preset": "presets",
}

__getattr__, __all__ = lazy_exports(__name__, _WHERE)
