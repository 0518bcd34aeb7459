"""Synthetic image products from a conditional generator.

Study 1 training products (``generate``), morphs, style-mixing grids and teaching sets.  Every
product is "a latent z (or two) + a label vector"; the pieces are pure functions usable from
Python::

    from synth.synthesis import generate_products, study_counts, resolve_roles

Names are imported lazily so that ``synth --help`` does not pay for importing torch.
"""
from __future__ import annotations

from synth.utils.lazy import lazy_exports

_EXPORTS = {
    "Roles": "counts",
    "parse_exclusions": "counts",
    "resolve_roles": "counts",
    "study_counts": "counts",
    "uniform_counts": "counts",
    "Renderer": "engine",
    "SynthesisError": "errors",
    "generate_products": "generate",
    "PRODUCT_TYPES": "labels",
    "Item": "labels",
    "SeedStream": "labels",
    "plan_products": "labels",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
