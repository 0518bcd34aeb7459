"""Quality metrics for a conditional generator (``synth metrics``).

* condition fidelity: do judge classifiers trained on real data recognise the asked-for condition?
* progression consistency: along an age/stage morph, does the judged grade move monotonically,
  and does the identity stay (dlib face descriptors or a frozen backbone)?
* KID/FID per condition cell and overall (Inception from a local file, else a seeded random backbone);
* memorisation: nearest real training image of every generated one.

Names are imported lazily so that ``synth --help`` does not pay for importing torch.
"""
from __future__ import annotations

from synth.utils.lazy import lazy_exports

_EXPORTS = {
    "QualityError": "errors",
    "FeatureExtractor": "features",
    "random_backbone_extractor": "features",
    "inception_extractor": "features",
    "pixel_features": "features",
    "frechet_distance": "fid",
    "kernel_distance": "fid",
    "distribution_metrics": "fid",
    "Judge": "fidelity",
    "load_judges": "fidelity",
    "condition_fidelity": "fidelity",
    "expected_grade": "progression",
    "monotone_fraction": "progression",
    "spearman_summary": "progression",
    "progression_consistency": "progression",
    "DlibDescriptor": "identity",
    "BackboneDescriptor": "identity",
    "identity_similarity": "identity",
    "nearest_neighbours": "memorisation",
    "real_nn_distances": "memorisation",
    "memorisation_report": "memorisation",
    "MetricsConfig": "report",
    "run_metrics": "report",
    "render_markdown": "report",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
