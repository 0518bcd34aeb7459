"""GAN training engine: losses, the training loop, safe checkpoints, presets and ADA.

Heavy modules are imported lazily so ``import synth.training`` stays cheap.
"""
from __future__ import annotations

import importlib

__all__ = [
    "TrainingOptions",
    "Trainer",
    "TrainingError",
    "TrainingDiverged",
    "save_checkpoint",
    "load_checkpoint",
    "load_generator",
    "CheckpointError",
    "resolve_preset",
]

_WHERE = {
    "TrainingOptions": "training_loop",
    "Trainer": "training_loop",
    "TrainingError": "training_loop",
    "TrainingDiverged": "training_loop",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_generator": "checkpoint",
    "CheckpointError": "checkpoint",
    "resolve_preset": "presets",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"synth.training.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'synth.training' has no attribute {name!r}")
