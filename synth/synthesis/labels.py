"""What to render for each synthetic image product: (seed, label vector) plans.

Every product of the lifespan study is "a latent z (or two) + a label vector".  Because the
label embedding is linear per factor, a soft label (a convex mix inside one factor block) is
exactly an interpolation of the level embeddings, so age progression and disease blending are
just soft label vectors here.  Planning is pure bookkeeping (no network), which keeps the
count and label rules testable on their own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from synth.conditions import ConditionSpace
from synth.synthesis.counts import Roles
from synth.synthesis.errors import SynthesisError

__all__ = [
    "PRODUCT_TYPES",
    "Item",
    "SeedStream",
    "parse_seeds",
    "parse_layers",
    "default_style_layers",
    "progression_weights",
    "plan_products",
]

PRODUCT_TYPES = ("unrelated", "age_related", "age_progression", "blended", "style_mixed")

Cell = tuple[str, ...]


@dataclass
class Item:
    """One image to render.

    ``seed`` gives z; ``seed2`` (style mixing) gives the z whose fine layers are used.
    ``group`` is shared by every image made from the same z (it becomes the dataset subject, so
    grouped folds keep one identity in one fold).  ``mix`` is the weight of ``mix_from`` in the
    mixed factor block (``mix_factor``); 1 - mix goes to ``mix_to``.
    """

    type: str
    label: np.ndarray
    seed: int
    group: str
    seed2: int | None = None
    mix: float | None = None
    mix_factor: str | None = None
    mix_from: str | None = None
    mix_to: str | None = None
    step: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


class SeedStream:
    """Hands out seeds in order: an explicit list (``--seeds``) or start, start+1, ... (``--seed``)."""

    def __init__(self, seeds: Sequence[int] | None = None, start: int = 0):
        self._list = list(seeds) if seeds is not None else None
        self._next = start
        self._pos = 0

    def __call__(self) -> int:
        if self._list is None:
            s = self._next
            self._next += 1
            return s
        if self._pos >= len(self._list):
            raise SynthesisError(f"--seeds: {len(self._list)} seed(s) given but more are needed; give a longer range")
        s = self._list[self._pos]
        self._pos += 1
        return int(s)

    @property
    def used(self) -> int:
        return self._pos if self._list is not None else self._next


def _parse_int_ranges(spec: str, what: str) -> list[int]:
    out: list[int] = []
    for part in [p.strip() for p in str(spec).split(",") if p.strip()]:
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise SynthesisError(f"{what} {spec!r}: range {part} runs backwards")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise SynthesisError(f"{what} {spec!r}: expected numbers or ranges like 0-99 or 1,5,7") from None
    if not out:
        raise SynthesisError(f"{what} {spec!r}: no numbers given")
    return out


def parse_seeds(spec: str) -> list[int]:
    """``"0-3,10"`` -> [0, 1, 2, 3, 10]."""
    seeds = _parse_int_ranges(spec, "--seeds")
    if any(s < 0 or s >= 2**32 for s in seeds):
        raise SynthesisError(f"--seeds {spec!r}: seeds must be in 0..2^32-1")
    return seeds


def parse_layers(spec: str, num_ws: int) -> list[int]:
    """``"0-6"`` -> [0..6], checked against the generator's number of w layers."""
    layers = sorted(set(_parse_int_ranges(spec, "--styles")))
    bad = [i for i in layers if not 0 <= i < num_ws]
    if bad:
        raise SynthesisError(f"--styles {spec!r}: layer(s) {bad} outside 0..{num_ws - 1} of this generator")
    if len(layers) == num_ws:
        raise SynthesisError(f"--styles {spec!r}: names every layer, so nothing would come from the second image")
    return layers


def default_style_layers(num_ws: int) -> list[int]:
    """Coarse + middle layers: 0-6 of 14 at 256 px, scaled to other resolutions."""
    n = int(round(7 / 14 * num_ws))
    return list(range(max(1, min(n, num_ws - 1))))


def progression_weights(steps: int) -> list[float]:
    """Weight of the start level at each step: 1, .75, .5, .25, 0 for 5 steps."""
    if steps < 2:
        raise SynthesisError(f"--steps {steps}: need at least 2")
    return [1.0 - k / (steps - 1) for k in range(steps)]


def _cell_label(space: ConditionSpace, cell: Cell) -> np.ndarray:
    return space.encode(dict(zip(space.names, cell)))


def _block_mix(space: ConditionSpace, base: np.ndarray, factor: str, a: str, b: str, wa: float) -> np.ndarray:
    """``base`` with the ``factor`` block replaced by wa * e_a + (1 - wa) * e_b."""
    v = base.copy()
    sl = space.block(factor)
    f = space.factor(factor)
    v[sl] = 0.0
    v[sl.start + f.index(a)] += wa
    v[sl.start + f.index(b)] += 1.0 - wa
    return v.astype(np.float32)


def _by_key(cells: Iterable[Cell], idx: int | None) -> dict:
    out: dict = {}
    for c in cells:
        out.setdefault(c[idx] if idx is not None else None, []).append(c)
    return out


def plan_products(
    space: ConditionSpace,
    ptype: str,
    counts: Mapping[Cell, int],
    seeds: SeedStream,
    roles: Roles,
    *,
    steps: int = 5,
    age_from: str | None = None,
    age_to: str | None = None,
    mixes: Sequence[float] = (0.55,),
) -> list[Item]:
    """The render plan of one product type.  ``counts`` maps kept cells (space factor order) to
    image counts; see :mod:`synth.synthesis.counts`.  Each type totals about ``sum(counts)``
    images (per mix value for ``blended``)."""
    if ptype not in PRODUCT_TYPES:
        raise SynthesisError(f"--type {ptype!r}: expected one of {', '.join(PRODUCT_TYPES)} or all")
    names = list(space.names)
    cells = [c for c in counts if counts[c] > 0]
    items: list[Item] = []

    if ptype == "unrelated":
        for cell in cells:
            for _ in range(counts[cell]):
                s = seeds()
                items.append(Item(ptype, _cell_label(space, cell), s, f"s{s}"))
        return items

    if ptype == "style_mixed":
        for cell in cells:
            for _ in range(counts[cell]):
                s, s2 = seeds(), seeds()
                items.append(Item(ptype, _cell_label(space, cell), s, f"s{s}x{s2}", seed2=s2))
        return items

    if ptype in ("age_related", "age_progression"):
        if roles.age is None:
            raise SynthesisError(f"--type {ptype}: the model has no ordinal factor to vary (use --factor)")
        a_idx = names.index(roles.age)
        d_idx = names.index(roles.disease) if roles.disease is not None else None
        age_levels = space.factor(roles.age).levels
        for key, group_cells in _by_key(cells, d_idx).items():
            total = sum(counts[c] for c in group_cells)
            if ptype == "age_related":
                kept_ages = [c[a_idx] for c in group_cells]
                n_id = int(total / len(kept_ages) + 0.5)
                for _ in range(n_id):
                    s = seeds()
                    for c in group_cells:
                        items.append(Item(ptype, _cell_label(space, c), s, f"s{s}"))
                continue
            a0 = age_from or age_levels[0]
            a1 = age_to or age_levels[-1]
            if a0 == a1:
                raise SynthesisError(f"--from and --to are both {a0!r}; nothing to progress")
            space.factor(roles.age).index(a0)
            space.factor(roles.age).index(a1)
            n_id = max(1, int(total / steps + 0.5))
            base_cell = list(group_cells[0])
            base_cell[a_idx] = a0
            base = _cell_label(space, tuple(base_cell))
            for _ in range(n_id):
                s = seeds()
                for k, w in enumerate(progression_weights(steps)):
                    lab = _block_mix(space, base, roles.age, a0, a1, w)
                    items.append(Item(ptype, lab, s, f"s{s}", mix=round(w, 6), mix_factor=roles.age, mix_from=a0, mix_to=a1, step=k))
        return items

    # blended: mix the disease block (or, in a one-factor space, that factor's levels)
    factor = roles.disease if roles.disease is not None else names[0]
    f_idx = names.index(factor)
    kept = list(dict.fromkeys(c[f_idx] for c in cells))
    if len(kept) < 2:
        raise SynthesisError(f"--type blended: needs at least two kept levels of {factor!r}, got {', '.join(kept) or 'none'}")
    for c in mixes:
        if not 0.0 <= float(c) <= 1.0:
            raise SynthesisError(f"--mix {c}: must be between 0 and 1")
    for c in mixes:
        for cell in cells:
            d1 = cell[f_idx]
            partners = [d for d in kept if d != d1]
            base = _cell_label(space, cell)
            # round-robin over partners: every ordered pair appears once counts allow
            for k in range(counts[cell]):
                d2 = partners[k % len(partners)]
                s = seeds()
                lab = _block_mix(space, base, factor, d1, d2, float(c))
                items.append(Item(ptype, lab, s, f"s{s}", mix=float(c), mix_factor=factor, mix_from=d1, mix_to=d2))
    return items
