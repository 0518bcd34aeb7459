"""Augmentation names, presets and image kinds: plain tables, importable without torch
(the command line builds its option choices from them)."""
from __future__ import annotations

__all__ = ["BLIT_OPS", "GEOM_OPS", "COLOR_OPS", "FILTER_OPS", "NOISE_OPS", "CUTOUT_OPS", "OPS", "SPECS", "KINDS"]

# Augmentation names, grouped the way the presets combine them.
BLIT_OPS = ("xflip", "rotate90", "xint")
GEOM_OPS = ("scale", "rotate", "aniso", "xfrac")
COLOR_OPS = ("brightness", "contrast", "lumaflip", "hue", "saturation")
FILTER_OPS = ("imgfilter",)
NOISE_OPS = ("noise",)
CUTOUT_OPS = ("cutout",)
OPS: tuple[str, ...] = BLIT_OPS + GEOM_OPS + COLOR_OPS + FILTER_OPS + NOISE_OPS + CUTOUT_OPS


def _on(*groups: tuple[str, ...]) -> dict[str, float]:
    return {name: 1.0 for group in groups for name in group}


# Presets named after the paper's pipelines: b=blit, g=geometric, c=colour, f=filter,
# n=noise, c=cutout (the second "c").
SPECS: dict[str, dict[str, float]] = {
    "none": {},
    "b": _on(BLIT_OPS),
    "bg": _on(BLIT_OPS, GEOM_OPS),
    "bgc": _on(BLIT_OPS, GEOM_OPS, COLOR_OPS),
    "bgcf": _on(BLIT_OPS, GEOM_OPS, COLOR_OPS, FILTER_OPS),
    "bgcfn": _on(BLIT_OPS, GEOM_OPS, COLOR_OPS, FILTER_OPS, NOISE_OPS),
    "bgcfnc": _on(BLIT_OPS, GEOM_OPS, COLOR_OPS, FILTER_OPS, NOISE_OPS, CUTOUT_OPS),
    "blit": _on(BLIT_OPS),
    "geom": _on(GEOM_OPS),
    "color": _on(COLOR_OPS),
    "filter": _on(FILTER_OPS),
    "noise": _on(NOISE_OPS),
    "cutout": _on(CUTOUT_OPS),
}

# Image kinds whose semantics forbid some augmentations.  Faces: disease signs can be
# lateralised, so a mirrored face is a different (and possibly wrong) example.  Skin: colour
# is diagnostic (cafe-au-lait macules, erythema), so hue rotations and luma flips would leak
# impossible skin colours into the generator.
KINDS: dict[str, dict[str, float]] = {
    "generic": {},
    "faces": {"xflip": 0.0},
    "skin": {"hue": 0.0, "lumaflip": 0.0},
}
