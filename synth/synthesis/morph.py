"""Morphs: one identity (fixed z) while one factor's label moves from level A to level B.

The label vector is interpolated linearly inside the factor's block (the NF1 and lifespan
studies' morphing), so the end frames are exactly the pure-condition images.  Keyframes go
into a labelled strip; the animation uses ease in/out so it dwells on the real conditions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from synth.conditions import ConditionError, ConditionSpace
from synth.synthesis.engine import Renderer
from synth.synthesis.errors import SynthesisError
from synth.synthesis.render import contact_sheet, ease_in_out, labelled_strip, save_png, write_gif, write_mp4
from synth.synthesis.viewer import DEFAULT_FRAMES, ViewerCard, frame_times, mix_caption
from synth.utils.io import atomic_write_text

__all__ = ["MorphSpec", "resolve_morph", "morph_label", "render_morph", "keyframe_captions", "write_morphs", "morph_card"]


@dataclass(frozen=True)
class MorphSpec:
    """What moves (``factor`` from ``start`` to ``end``) and what stays (``fixed`` levels)."""

    factor: str
    start: str
    end: str
    fixed: dict

    def label(self, space: ConditionSpace, t: float) -> np.ndarray:
        return morph_label(space, self, t)


def resolve_morph(space: ConditionSpace, factor: str, start: str | None, end: str | None, fixed_level: str | None = None) -> MorphSpec:
    """Check names and fill defaults: first/last level; the other factor at ``fixed_level`` or
    its first non-control level."""
    try:
        f = space.factor(factor)
    except ConditionError as e:
        raise SynthesisError(f"--factor: {e}") from None
    start = start if start is not None else f.levels[0]
    end = end if end is not None else f.levels[-1]
    for opt, lv in (("--from", start), ("--to", end)):
        if lv not in f.levels:
            raise SynthesisError(f"{opt} {lv!r}: not a level of {factor!r} (levels: {', '.join(f.levels)})")
    if start == end:
        raise SynthesisError(f"--from and --to are both {start!r}; a morph needs two different levels")
    fixed: dict[str, str] = {}
    others = [g for g in space.factors if g.name != factor]
    if fixed_level is not None and not others:
        raise SynthesisError(f"--disease {fixed_level!r}: the model has no factor besides {factor!r}")
    for g in others:
        if fixed_level is not None and g is others[0]:
            if fixed_level not in g.levels:
                raise SynthesisError(f"--disease {fixed_level!r}: not a level of {g.name!r} (levels: {', '.join(g.levels)})")
            fixed[g.name] = fixed_level
        else:
            fixed[g.name] = next((lv for lv in g.levels if lv != g.control), g.levels[0])
    return MorphSpec(factor, start, end, fixed)


def morph_label(space: ConditionSpace, spec: MorphSpec, t: float) -> np.ndarray:
    """Label at position t in [0, 1]: weight 1 - t on ``start``, t on ``end``."""
    a = space.encode({**spec.fixed, spec.factor: spec.start})
    if t == 0.0:
        return a
    b = space.encode({**spec.fixed, spec.factor: spec.end})
    if t == 1.0:
        return b
    return ((1.0 - t) * a + t * b).astype(np.float32)


def keyframe_captions(spec: MorphSpec, steps: int) -> list[str]:
    caps = []
    for k in range(steps):
        t = k / (steps - 1)
        if k == 0:
            caps.append(spec.start)
        elif k == steps - 1:
            caps.append(spec.end)
        else:
            caps.append(f"{spec.start} {1 - t:.2f}\n{spec.end} {t:.2f}")
    return caps


def render_morph(renderer: Renderer, space: ConditionSpace, spec: MorphSpec, seed: int, steps: int, frames: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> (keyframes uint8 [steps, H, W, 3], animation frames uint8 [frames, H, W, 3])."""
    if steps < 2:
        raise SynthesisError(f"--steps {steps}: need at least 2")
    if frames < 0 or frames == 1:
        raise SynthesisError(f"--frames {frames}: need 0 (no animation) or at least 2")
    ts = [k / (steps - 1) for k in range(steps)]
    key_labels = np.stack([morph_label(space, spec, t) for t in ts])
    keys = renderer.images([seed] * steps, key_labels, noise_seed=seed)
    if frames == 0:
        return keys, keys[:0]
    ft = [float(x) for x in ease_in_out(np.linspace(0.0, 1.0, frames))]
    ft[0], ft[-1] = 0.0, 1.0
    anim = renderer.images([seed] * frames, np.stack([morph_label(space, spec, t) for t in ft]), noise_seed=seed)
    return keys, anim


def write_morphs(
    renderer: Renderer,
    space: ConditionSpace,
    spec: MorphSpec,
    seeds: Sequence[int],
    out: str | Path,
    steps: int = 5,
    frames: int = 60,
    fps: float = 20.0,
    video: bool = True,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    viewer: bool = False,
    viewer_frames: int = 21,
    identities: Sequence[Mapping[str, Any]] | None = None,
) -> dict:
    """Per seed: ``morph_s<seed>.png`` strip (+ ``.gif``/``.mp4``); ``contact_sheet.png``; ``morph.json``.

    ``settings`` (e.g. :func:`~synth.synthesis.network.network_record`: the network's path
    and SHA-256) are recorded in ``morph.json`` too.  ``viewer``: also ``viewer.html``, the
    interactive viewer (:mod:`synth.synthesis.viewer`), a slider over ``viewer_frames`` evenly
    spaced frames per seed.  ``identities``: the renderer is a
    :class:`~synth.synthesis.project.IdentityRenderer` and seed k is projected identity k; each
    mapping (``name``, ``w``, ...) names its files ``morph_<name>.*`` and is recorded instead of a seed."""
    from synth.synthesis.viewer import generator_note, write_viewer

    out = Path(out)
    if viewer:
        frame_times(viewer_frames)  # a bad count stops before anything is rendered
    strips, titles, files, cards = [], [], [], []
    caps = keyframe_captions(spec, steps)
    fixed = ", ".join(f"{k}={v}" for k, v in spec.fixed.items())
    for seed in tqdm(list(seeds), desc="morph", unit="seed", disable=not progress):
        keys, anim = render_morph(renderer, space, spec, int(seed), steps, frames if video else 0)
        strip = labelled_strip(list(keys), caps)
        ident = dict(identities[int(seed)]) if identities is not None else None
        stem = f"morph_{ident['name']}" if ident else f"morph_s{seed}"
        save_png(strip, out / f"{stem}.png")
        entry = {**ident, "strip": f"{stem}.png"} if ident else {"seed": int(seed), "strip": f"{stem}.png"}
        if video and len(anim):
            write_gif(list(anim), out / f"{stem}.gif", fps=fps)
            write_mp4(list(anim), out / f"{stem}.mp4", fps=fps)
            entry.update(gif=f"{stem}.gif", mp4=f"{stem}.mp4", frames=len(anim))
        strips.append(strip)
        who = f"projected {ident['name']}" if ident else f"seed {seed}"
        titles.append(who + (f"  ({fixed})" if fixed else ""))
        files.append(entry)
        if viewer:
            cards.append(morph_card(renderer, space, spec, int(seed), viewer_frames, title=who))
    save_png(contact_sheet(strips, titles), out / "contact_sheet.png")
    info = {"factor": spec.factor, "from": spec.start, "to": spec.end, "fixed": spec.fixed, "steps": steps,
            "frames": frames if video else 0, "fps": fps, "psi": renderer.psi, "noise_mode": renderer.noise_mode, **dict(settings or {}), "seeds": files}
    if viewer:
        write_viewer(out / "viewer.html", cards, title=f"Morph: {spec.factor} {spec.start} to {spec.end}" + (f" ({fixed})" if fixed else ""),
                     intro=f"Each card is one identity (seed); its slider moves the {spec.factor} label from {spec.start} to {spec.end} "
                           f"in {viewer_frames} evenly spaced frames, the other factors fixed.",
                     footer=generator_note(settings or {}))
        info.update({"viewer": "viewer.html", "viewer_frames": viewer_frames})
    atomic_write_text(out / "morph.json", json.dumps(info, indent=2) + "\n")
    return info


def morph_card(renderer, space: ConditionSpace, spec, seed: int, frames: int = DEFAULT_FRAMES,
               title: str | None = None, subtitle: str | None = None) -> ViewerCard:
    """Render ``frames`` evenly spaced morph frames of one identity (the same z and noise as
    :func:`~synth.synthesis.morph.render_morph`, so the ends are the pure-condition images)
    with the mix of ``spec.factor`` as caption."""
    ts = frame_times(frames)
    labels = np.stack([morph_label(space, spec, t) for t in ts])
    imgs = renderer.images([int(seed)] * len(ts), labels, noise_seed=int(seed))
    order = {spec.factor: [spec.start, spec.end]}
    caps = [mix_caption(space, v, [spec.factor], order) for v in labels]
    fixed = ", ".join(f"{k} = {v}" for k, v in spec.fixed.items())
    return ViewerCard(
        title=title or f"seed {seed}",
        subtitle=subtitle if subtitle is not None else fixed,
        frames=list(imgs), captions=caps, slider_label=f"{spec.factor} ({spec.start} to {spec.end})",
    )
