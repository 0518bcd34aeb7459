"""Built-in synthetic phenotype atlas: labelled images with known ground truth.

``faces``: stylised frontal faces, factors disease x age, subtle age-dependent cues.
``skin``: skin patches of a three-stage NF1-like progression, factor stage.
Used for demos, tests and calibration whenever no real data is given.
"""
from .faces import AGE_BRACKETS, age_bracket
from .render import ATLAS_VERSION, KINDS, AtlasError, atlas_cache_dir, atlas_space, ensure_atlas, render_atlas

__all__ = [
    "AGE_BRACKETS",
    "ATLAS_VERSION",
    "KINDS",
    "AtlasError",
    "age_bracket",
    "atlas_cache_dir",
    "atlas_space",
    "ensure_atlas",
    "render_atlas",
]
