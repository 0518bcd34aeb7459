"""How many synthetic images each condition cell gets.

The lifespan study generated fake images only for affected labels and used one rule for every
image type: the count for (disease d, age a) is the *average* count over the age groups of d
in the training partition, rounded.  Rare age groups therefore get more images than they had
real ones, common groups fewer, and each image type in total roughly equals the number of
affected training images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from synth.conditions import ConditionError, ConditionSpace

__all__ = ["Roles", "resolve_roles", "study_counts", "uniform_counts", "affected_cells", "counts_from_meta", "parse_exclusions"]

Cell = tuple[str, ...]


@dataclass(frozen=True)
class Roles:
    """Which factor plays "age" (ordinal, progressed/morphed) and which plays "disease"."""

    age: str | None
    disease: str | None


def resolve_roles(space: ConditionSpace, age_factor: str | None = "age") -> Roles:
    """Assign the age/disease roles.  The age role is optional (a disease-only space has none);
    spaces with more than two factors are not supported because the count rule averages over
    exactly one factor."""
    if len(space.names) > 2:
        raise ConditionError(f"synthesis supports one or two factors, the space has {len(space.names)}: {', '.join(space.names)}")
    age = age_factor if age_factor in space.names else None
    if age_factor is not None and age is None and len(space.names) == 2:
        raise ConditionError(f"--factor {age_factor}: not a factor of the model (factors: {', '.join(space.names)})")
    others = [n for n in space.names if n != age]
    return Roles(age=age, disease=others[0] if others else None)


def parse_exclusions(specs: Sequence[str] | None, space: ConditionSpace) -> dict[str, set[str]]:
    """``["disease=unaffected"]`` -> {"disease": {"unaffected"}}; None -> the space's control level;
    ``["none"]`` -> nothing excluded."""
    out: dict[str, set[str]] = {}
    if specs is None:
        ctl = space.control_of()
        if ctl is not None:
            out[ctl[0]] = {ctl[1]}
        return out
    for spec in specs:
        if spec.strip().lower() == "none":
            continue
        if "=" not in spec:
            raise ConditionError(f"--exclude-level {spec!r}: expected FACTOR=LEVEL (or 'none')")
        fac, lvl = (s.strip() for s in spec.split("=", 1))
        space.factor(fac).index(lvl)  # validates both names
        out.setdefault(fac, set()).add(lvl)
    return out


def affected_cells(space: ConditionSpace, exclude: Mapping[str, set[str]]) -> list[Cell]:
    """Cells (in space factor order, level order) with no excluded level."""
    names = list(space.names)
    return [c for c in space.cells() if not any(c[i] in exclude.get(n, ()) for i, n in enumerate(names))]


def study_counts(
    space: ConditionSpace,
    cell_counts: Mapping[Cell, int],
    roles: Roles,
    exclude: Mapping[str, set[str]],
) -> dict[Cell, int]:
    """The study's rule: per (d, a) = round(mean over the age levels of d's training counts).

    ``cell_counts`` is keyed by cells in space factor order (``ImageSet.cell_counts()``).
    Without an age role every cell keeps its own count; a one-factor space whose only factor
    plays age (NF1 stages) averages over all its levels.
    """
    names = list(space.names)
    cells = affected_cells(space, exclude)
    if not cells:
        raise ConditionError("every cell is excluded; nothing to generate (check --exclude-level)")
    d_idx = names.index(roles.disease) if roles.disease is not None else None
    out: dict[Cell, int] = {}
    for cell in cells:
        key = cell[d_idx] if d_idx is not None else None
        peers = [c for c in cells if (c[d_idx] if d_idx is not None else None) == key]
        if roles.age is None:
            # no age role: the cell itself is the only "age group"
            peers = [cell]
        total = sum(int(cell_counts.get(c, 0)) for c in peers)
        # round half up (Python's round() is banker's rounding, surprising for counts)
        out[cell] = int(total / len(peers) + 0.5)
    if sum(out.values()) == 0:
        raise ConditionError("the training data has no images in the kept cells; nothing to generate")
    return out


def uniform_counts(space: ConditionSpace, per_cell: int, exclude: Mapping[str, set[str]]) -> dict[Cell, int]:
    if per_cell < 1:
        raise ConditionError(f"--per-cell {per_cell}: must be >= 1")
    cells = affected_cells(space, exclude)
    if not cells:
        raise ConditionError("every cell is excluded; nothing to generate (check --exclude-level)")
    return {c: int(per_cell) for c in cells}


def counts_from_meta(meta: Mapping, space: ConditionSpace) -> dict[Cell, int] | None:
    """Training cell counts stored in checkpoint metadata, if any.

    Accepted forms: ``{"cell_counts": [{"labels": {...}, "count": n}, ...]}`` or
    ``{"cell_counts": {"disease=a,age=b": n}}``.
    """
    raw = meta.get("cell_counts") if isinstance(meta, Mapping) else None
    if raw is None:
        return None
    out: dict[Cell, int] = {c: 0 for c in space.cells()}
    items: list[tuple[Mapping, int]] = []
    if isinstance(raw, Mapping):
        from synth.conditions import parse_cond_assignments

        items = [(parse_cond_assignments(k), int(v)) for k, v in raw.items()]
    elif isinstance(raw, Sequence):
        items = [(r["labels"], int(r["count"])) for r in raw]
    else:
        raise ConditionError("checkpoint metadata 'cell_counts' has an unknown form")
    for labels, n in items:
        labels = space.check_labels(labels)
        out[tuple(labels[f] for f in space.names)] = n
    return out
