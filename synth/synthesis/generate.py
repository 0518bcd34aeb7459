"""Synthetic image products of the lifespan study, written as a ready-to-train dataset folder.

``generate_products`` is the Python entry point (used by ``synth generate`` and by ablation
tools): it plans every image (:mod:`synth.synthesis.labels`), renders in batches, writes PNGs
and finally the manifest (:mod:`synth.synthesis.manifest`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from synth.conditions import ConditionSpace
from synth.synthesis.counts import Roles, resolve_roles
from synth.synthesis.engine import Renderer
from synth.synthesis.errors import SynthesisError
from synth.synthesis.labels import PRODUCT_TYPES, Item, SeedStream, default_style_layers, plan_products
from synth.synthesis.manifest import ManifestRow, write_manifest
from synth.synthesis.render import save_png

__all__ = ["generate_products", "plan_all", "applicable", "item_filename"]

Cell = tuple[str, ...]


def _types(ptype: str | Sequence[str]) -> list[str]:
    if isinstance(ptype, str):
        return list(PRODUCT_TYPES) if ptype == "all" else [ptype]
    return list(ptype)


def plan_all(
    space: ConditionSpace,
    ptype: str | Sequence[str],
    counts: Mapping[Cell, int],
    seeds: SeedStream,
    roles: Roles,
    **kw: Any,
) -> list[Item]:
    """Plans of several types drawing from one seed stream, so no two types share a z.

    With ``"all"``, types the space cannot make are skipped (age types without an ordinal
    factor, blending with fewer than two kept levels); named types fail loudly instead.
    """
    items: list[Item] = []
    for t in _types(ptype):
        if ptype == "all" and not applicable(space, t, counts, roles):
            continue
        items.extend(plan_products(space, t, counts, seeds, roles, **kw))
    return items


def applicable(space: ConditionSpace, ptype: str, counts: Mapping[Cell, int], roles: Roles) -> bool:
    if ptype in ("age_related", "age_progression"):
        return roles.age is not None
    if ptype == "blended":
        factor = roles.disease if roles.disease is not None else space.names[0]
        i = list(space.names).index(factor)
        return len({c[i] for c, n in counts.items() if n > 0}) >= 2
    return True


def item_filename(space: ConditionSpace, item: Item, index: int) -> str:
    levels = space.decode(item.label)
    desc = "_".join(levels[n] for n in space.names)
    if item.type == "blended":
        desc = f"{item.mix_from}{int(round(item.mix * 100)):02d}-{item.mix_to}_" + "_".join(
            levels[n] for n in space.names if n != item.mix_factor
        )
    elif item.type == "age_progression":
        desc = "_".join(levels[n] for n in space.names if n != item.mix_factor) + f"_step{item.step}"
    tag = item.extra.get("id", f"s{item.seed}")  # projected identities (--w) are tagged w<k>
    return f"{item.type}/{index:05d}_{tag}_{desc.strip('_')}.png"


def generate_products(
    G: torch.nn.Module,
    space: ConditionSpace,
    type: str | Sequence[str],  # noqa: A002  (the product type, as on the command line)
    counts: Mapping[Cell, int],
    seeds: SeedStream | Sequence[int] | int = 0,
    psi: float = 1.0,
    out_dir: str | Path | None = None,
    *,
    age_factor: str | None = "age",
    exclude: Mapping[str, Any] | None = None,
    steps: int = 5,
    age_from: str | None = None,
    age_to: str | None = None,
    mixes: Sequence[float] = (0.55,),
    style_layers: Sequence[int] | None = None,
    noise_mode: str = "const",
    batch: int = 16,
    device: str | torch.device = "cpu",
    progress: bool = True,
    write: bool = True,
    settings: Mapping[str, Any] | None = None,
    renderer: Renderer | None = None,
    identities: Sequence[Any] | None = None,
) -> list[ManifestRow]:
    """Render the product(s) into ``out_dir`` and return the manifest rows.

    ``type`` is one of :data:`PRODUCT_TYPES`, ``"all"`` or a list; ``counts`` maps kept cells
    (space factor order) to image counts (:func:`~synth.synthesis.counts.study_counts`).
    ``seeds``: a start seed, an explicit list, or a :class:`SeedStream`.  With ``write`` the
    folder gets ``labels.csv``/``manifest.csv``/``conditions.yaml`` and opens with
    ``open_dataset(out_dir)``.  ``out_dir=None`` renders nothing and returns the planned rows
    with empty file names (a dry run).  ``identities`` (projected faces,
    :class:`~synth.synthesis.project.ProjectedW`) replace the seeds: one image per level of each
    (:func:`~synth.synthesis.project.plan_identity`; ``counts`` are not used, ``exclude``
    {factor: levels} leaves levels out).
    """
    if getattr(G, "c_dim", space.c_dim) != space.c_dim:
        raise SynthesisError(f"generator has c_dim {G.c_dim} but the condition space has {space.c_dim}")
    roles = resolve_roles(space, age_factor)
    stream = seeds if isinstance(seeds, SeedStream) else SeedStream(None, int(seeds)) if isinstance(seeds, (int, np.integer)) else SeedStream(list(seeds))
    rend = renderer or Renderer(G, psi=psi, noise_mode=noise_mode, batch=batch, device=device)
    if identities is not None:
        from synth.synthesis.project import IdentityRenderer, plan_identities

        if not isinstance(type, str) or type == "all":
            raise SynthesisError("--type all --w: name one of age_related, age_progression or blended")
        items = plan_identities(space, type, identities, roles, steps=steps, age_from=age_from, age_to=age_to,
                                mixes=mixes, exclude=exclude)
        rend = IdentityRenderer(rend, identities)
    else:
        items = plan_all(space, type, counts, stream, roles, steps=steps, age_from=age_from, age_to=age_to, mixes=mixes)
    if not items:
        raise SynthesisError("nothing to generate: every count is zero")
    layers = list(style_layers) if style_layers is not None else default_style_layers(rend.num_ws)
    rows: list[ManifestRow] = []
    for i, it in enumerate(items):
        vals = {
            "type": it.type, "seed": it.seed if identities is None else None, "seed2": it.seed2, "psi": rend.psi, "mix": it.mix,
            "mix_factor": it.mix_factor, "mix_from": it.mix_from, "mix_to": it.mix_to, "step": it.step,
            "styles": f"{layers[0]}-{layers[-1]}" if it.type == "style_mixed" else None,
        }
        rows.append(ManifestRow(item_filename(space, it, i) if out_dir is not None else "", it.label, it.group, vals))
    if out_dir is None:
        return rows
    out = Path(out_dir)
    bar = tqdm(total=len(items), desc="generate", unit="img", disable=not progress)
    for start in range(0, len(items), rend.batch):
        chunk = items[start : start + rend.batch]
        labels = np.stack([it.label for it in chunk])
        if identities is not None:  # each projected identity brings its own noise buffers
            for k, img in enumerate(rend.images([it.seed for it in chunk], labels)):
                save_png(img, out / rows[start + k].file)
            bar.update(len(chunk))
            continue
        ws = rend.ws([it.seed for it in chunk], labels)
        mixed = [k for k, it in enumerate(chunk) if it.type == "style_mixed"]
        if mixed:
            # coarse/middle layers from `seed`, everything else (fine, colour) from `seed2`
            ws_fine = rend.ws([chunk[k].seed2 for k in mixed], labels[mixed])
            ws[mixed] = rend.style_mix(ws[mixed], ws_fine, layers)
        imgs = rend.synthesize(ws, noise_seed=chunk[0].seed)
        for k, img in enumerate(imgs):
            save_png(img, out / rows[start + k].file)
        bar.update(len(chunk))
    bar.close()
    if write:
        info = {"types": sorted({it.type for it in items}, key=PRODUCT_TYPES.index), "psi": rend.psi, "noise_mode": rend.noise_mode, "images": len(rows),
                "counts": {"|".join(c): int(n) for c, n in counts.items()}, "style_layers": layers}
        info.update(dict(settings or {}))
        write_manifest(out, rows, space, info)
    return rows
