"""Augmentation-gain ablation: does each synthetic image type help the classifier?

``run_ablation(AblationConfig(...), out_dir)`` trains one classifier per (fold, arm) - real
images only, or real plus one synthetic product type - and compares every arm with real-only
using paired statistics (:func:`ablation_statistics`).  ``synth ablate`` is the CLI.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "AblationConfig": "plan",
    "AblationError": "plan",
    "Arm": "plan",
    "build_arms": "plan",
    "AblationResult": "runner",
    "run_ablation": "runner",
    "ablation_statistics": "stats",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # lazy, so that `synth --help` does not import torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"synth.ablation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'synth.ablation' has no attribute {name!r}")
