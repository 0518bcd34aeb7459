"""Augmentation-gain ablation: does each synthetic image type help the classifier?

``run_ablation(AblationConfig(...), out_dir)`` trains one classifier per (fold, arm) - real
images only, or real plus one synthetic product type - and compares every arm with real-only
using paired statistics (:func:`ablation_statistics`).  ``synth ablate`` is the CLI.
"""
from __future__ import annotations

from synth.utils.lazy import lazy_exports

_EXPORTS = {
    "AblationConfig": "plan",
    "AblationError": "plan",
    "Arm": "plan",
    "build_arms": "plan",
    "AblationResult": "runner",
    "run_ablation": "runner",
    "report_only": "runner",
    "load_plan": "runner",
    "ablation_statistics": "stats",
    "write_report": "report",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
