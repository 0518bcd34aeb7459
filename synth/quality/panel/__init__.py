"""Judge panel: score conditional generators with judges that never helped choose them.

A snapshot chosen with some judge classifiers and then scored by the same judges flatters
itself (the bundled face generator read 72.8% disease on its selection judges and about 30%
on an independent one).  The panel is trained on atlas subjects that neither trained nor
chose the generator, and reports numbers that a lucky snapshot cannot inflate:

1. Two atlases of *other* subjects than the training atlas (training atlases use seed 0):
   ``--atlas-seeds 11,12`` = the judges' training set and a second real set, kind taken
   from the checkpoint's condition space (faces: disease x age, skin: stage).  Rendered once
   and cached under ``--cache``.
2. The panel: per factor, every architecture of ``--archs`` x every seed of ``--judge-seeds``
   (default small_cnn and small_cnn_s x seeds 0, 1, random init, 32 px), trained with the
   project's classifier trainer; plus attribute judges (faces: skin tone in four fixed bins,
   hair colour, hair style; skin: skin tone bins, freckle bins) of the first architecture.
   Trained judges are cached (keyed by every setting that changes them).
3. Per checkpoint: ``--per-cell`` images per cell with fixed seeds at ``--truncation`` psi,
   and: label fidelity of every judge, generated against the second real set (ratio);
   precision / recall / density / coverage in the penultimate features of the panel's first
   judge, with real-vs-real coverage as the reference; within-cell pixel diversity relative to
   real images of the cell; judged-attribute entropy ratio and total variation per cell; and
   morph monotonicity: ``--identities`` faces drawn at every level of the ordinal factor (the
   ``age_related`` product), judged by the first judge of that factor, Spearman rho per face.
4. ``OUT/panel.json`` (every number, the panel and its real accuracies, checkpoint paths and
   SHA-256) and ``OUT/panel.md`` (one table, one row per checkpoint), written atomically.

Modules, in the order a run uses them:

* :mod:`.settings`: :class:`PanelConfig`, the judges' recipes and the judged attributes;
* :mod:`.judges`: the two atlases and the panel's judges, trained once and cached;
* :mod:`.scoring`: one checkpoint's images, scored by the panel;
* :mod:`.report`: :func:`run_panel` (all of the above) and panel.json / panel.md.

The command line is ``tools/eval_generator.py``; see docs/metrics.md, "Judge panel
(tools/eval_generator.py)".  Names are imported lazily, like :mod:`synth.quality`'s.
"""
from __future__ import annotations

from synth.utils.lazy import lazy_exports

_EXPORTS = {
    "PanelConfig": "settings",
    "PanelError": "settings",
    "attributes_of": "settings",
    "Panel": "judges",
    "PanelJudge": "judges",
    "build_panel": "judges",
    "evaluate_checkpoint": "scoring",
    "open_checkpoint": "scoring",
    "real_reference": "scoring",
    "render_markdown": "report",
    "run_panel": "report",
    "write_outputs": "report",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
