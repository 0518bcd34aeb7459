"""The code of ``synth project``, under its usual import path: every public name of
:mod:`synth.synthesis.projection` (the package explains the projector), re-exported here so that
``from synth.synthesis.project import project, load_projected_w, ...`` keeps working."""
from __future__ import annotations

from synth.synthesis.projection.distances import (
    LPIPS_BACKBONES,
    DFeatures,
    LPIPSDistance,
    PyramidL2,
    find_lpips_backbone,
    make_distance,
    open_discriminator,
)
from synth.synthesis.projection.identity import IdentityRenderer, identity_ws, plan_identities, plan_identity, safe_name
from synth.synthesis.projection.inputs import collect_images, load_target, parse_label
from synth.synthesis.projection.optimise import (
    ProjectConfig,
    Projection,
    anchor_z,
    label_stats,
    project,
    projected_noise,
    psnr,
    render_w,
)
from synth.synthesis.projection.saved import PROJECT_OUTPUTS, ProjectedW, load_projected_w, save_projection

__all__ = [
    "ProjectConfig",
    "Projection",
    "ProjectedW",
    "PROJECT_OUTPUTS",
    "LPIPS_BACKBONES",
    "collect_images",
    "load_target",
    "parse_label",
    "label_stats",
    "find_lpips_backbone",
    "make_distance",
    "PyramidL2",
    "LPIPSDistance",
    "DFeatures",
    "open_discriminator",
    "project",
    "psnr",
    "render_w",
    "save_projection",
    "load_projected_w",
    "identity_ws",
    "anchor_z",
    "IdentityRenderer",
    "projected_noise",
    "plan_identity",
    "plan_identities",
    "safe_name",
]
