"""Using a projected identity: moving it to other labels (:func:`identity_ws`), rendering it in
place of a seed (:class:`IdentityRenderer`, for ``synth morph --w`` and ``synth generate --w``),
planning the products it can make (:func:`plan_identity`) and naming its output folder
(:func:`safe_name`)."""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import torch

from synth.conditions import ConditionSpace
from synth.synthesis.errors import SynthesisError
from synth.synthesis.labels import Item, _block_mix, progression_weights
from synth.synthesis.projection.optimise import _first, projected_noise
from synth.synthesis.projection.saved import ProjectedW

__all__ = ["identity_ws", "IdentityRenderer", "plan_identity", "plan_identities", "safe_name"]


@torch.no_grad()
def identity_ws(renderer, ident: ProjectedW, labels: np.ndarray) -> torch.Tensor:
    """[N, num_ws, w_dim]: the projected identity moved to each label vector c'.

    With an anchor z (written by ``synth project``): ``w + mapping(z, c') - mapping(z, c)``;
    without one (e.g. an NVlabs projected_w.npz): ``w + mean_w(c') - mean_w(c)`` (per-label means
    of the renderer).  Then truncation toward mean_w(c') with the renderer's psi.  At c' = c and
    psi = 1 this is exactly the projected w."""
    labels = np.asarray(labels, np.float32).reshape(-1, ident.label.size)
    dev = renderer.device
    w = torch.as_tensor(ident.w, device=dev)
    if ident.z is not None:
        G = renderer.G
        z = torch.as_tensor(ident.z, device=dev)[None]
        src = _first(G.mapping(z, torch.as_tensor(ident.label, device=dev)[None]))[0]
    else:
        src = renderer.mean_w(ident.label)
    out = []
    for lab in labels:
        if ident.z is not None:
            moved = w + (_first(G.mapping(z, torch.as_tensor(lab, device=dev)[None]))[0] - src)
        else:
            moved = w + (renderer.mean_w(lab) - src)
        if renderer.psi != 1.0:
            dst = renderer.mean_w(lab)
            moved = dst + renderer.psi * (moved - dst)
        out.append(moved)
    return torch.stack(out) if out else w[None][:0]


class IdentityRenderer:
    """A :class:`~synth.synthesis.engine.Renderer` whose "seeds" are indices into projected
    identities: ``images([k, ...], labels)`` renders identity k at each label (its w moved by
    :func:`identity_ws`, its optimised noise buffers in place), so morphs, viewers and generated
    products take projected faces with no change to their code."""

    def __init__(self, base, identities: Sequence[ProjectedW]):
        if not identities:
            raise SynthesisError("--w: no projected identity given")
        self.base = base
        self.identities = list(identities)

    def __getattr__(self, name: str):  # psi, noise_mode, batch, G, device, num_ws, mean_w, ...
        return getattr(self.base, name)

    def _ident(self, k) -> ProjectedW:
        try:
            return self.identities[int(k)]
        except (IndexError, TypeError, ValueError):
            raise SynthesisError(f"projected identity {k!r} out of range (0..{len(self.identities) - 1})") from None

    @torch.no_grad()
    def ws(self, seeds: Sequence[int], labels: np.ndarray) -> torch.Tensor:
        labels = np.asarray(labels, np.float32).reshape(len(seeds), -1)
        return torch.cat([identity_ws(self.base, self._ident(k), lab[None]) for k, lab in zip(seeds, labels)])

    def images(self, seeds: Sequence[int], labels: np.ndarray, noise_seed: int | None = 0) -> np.ndarray:
        """uint8 [N, H, W, 3], rendered per identity (each with its own noise buffers)."""
        labels = np.asarray(labels, np.float32).reshape(len(seeds), -1)
        out: list[np.ndarray | None] = [None] * len(seeds)
        for k in dict.fromkeys(int(s) for s in seeds):
            idx = [i for i, s in enumerate(seeds) if int(s) == k]
            ident = self._ident(k)
            ws = identity_ws(self.base, ident, labels[idx])
            with projected_noise(self.base.G, ident.noise):
                imgs = self.base.synthesize(ws, noise_seed=int(noise_seed or 0))
            for i, im in zip(idx, imgs):
                out[i] = im
        return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def plan_identities(space: ConditionSpace, ptype: str, identities: Sequence[ProjectedW], roles, **kw):
    """:func:`plan_identity` for each identity; item ``seed`` = its index (for
    :class:`IdentityRenderer`), ``group`` (the dataset subject) and file tag ``w<index>``."""
    items = []
    for k, ident in enumerate(identities):
        for it in plan_identity(space, ptype, ident.levels, roles, **kw):
            it.seed, it.group, it.extra = k, f"w{k}", {**it.extra, "id": f"w{k}"}
            items.append(it)
    return items


def plan_identity(space: ConditionSpace, ptype: str, levels: Mapping[str, str], roles, *, steps: int = 5,
                  age_from: str | None = None, age_to: str | None = None, mixes: Sequence[float] = (0.55,),
                  exclude: Mapping[str, set] | None = None):
    """Render plan (:class:`~synth.synthesis.labels.Item` list) of one projected identity:

    * ``age_related``: the identity at every level of the age factor (its other levels kept);
    * ``age_progression``: from ``age_from`` (default: its own level) to ``age_to`` (default: the
      last level, or the first when it is already the last) in ``steps`` steps;
    * ``blended``: its disease mixed with every other disease level, per ``mixes`` weight.
    Other types make a fresh identity per image, so they do not take ``--w``."""
    exclude = {k: set(v) for k, v in (exclude or {}).items()}
    base = space.encode(levels)
    group = "projected"
    items = []
    if ptype in ("age_related", "age_progression"):
        if roles.age is None:
            raise SynthesisError(f"--type {ptype}: the model has no ordinal factor to vary (use --factor)")
        f = space.factor(roles.age)
        if ptype == "age_related":
            for lv in f.levels:
                if lv in exclude.get(f.name, set()):
                    continue
                items.append(Item(ptype, space.encode({**levels, f.name: lv}), None, group))
            if not items:
                raise SynthesisError("--exclude-level: every level is excluded; nothing to generate")
            return items
        a0 = age_from or levels[f.name]
        a1 = age_to or (f.levels[-1] if a0 != f.levels[-1] else f.levels[0])
        for opt, lv in (("--from", a0), ("--to", a1)):
            if lv not in f.levels:
                raise SynthesisError(f"{opt} {lv!r}: not a level of {f.name!r} (levels: {', '.join(f.levels)})")
        if a0 == a1:
            raise SynthesisError(f"--from and --to are both {a0!r}; nothing to progress")
        start = space.encode({**levels, f.name: a0})
        for k, wgt in enumerate(progression_weights(steps)):
            lab = _block_mix(space, start, f.name, a0, a1, wgt)
            items.append(Item(ptype, lab, None, group, mix=round(wgt, 6), mix_factor=f.name, mix_from=a0, mix_to=a1, step=k))
        return items
    if ptype == "blended":
        factor = roles.disease if roles.disease is not None else space.names[0]
        f = space.factor(factor)
        d1 = levels[factor]
        partners = [lv for lv in f.levels if lv != d1 and lv not in exclude.get(factor, set())]
        if not partners:
            raise SynthesisError(f"--type blended: no other level of {factor!r} to blend with")
        for c in mixes:
            if not 0.0 <= float(c) <= 1.0:
                raise SynthesisError(f"--mix {c}: must be between 0 and 1")
            for d2 in partners:
                lab = _block_mix(space, base, factor, d1, d2, float(c))
                items.append(Item(ptype, lab, None, group, mix=float(c), mix_factor=factor, mix_from=d1, mix_to=d2))
        return items
    raise SynthesisError(f"--type {ptype} --w: {ptype} makes a fresh identity per image; with --w use "
                         "age_related, age_progression or blended")


def safe_name(name: str) -> str:
    """A folder name for an image's outputs."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return s or "image"
