"""The condition space: what every label in the toolkit means.

A condition space is an ordered list of *factors* (``disease``, ``age``, ``stage`` ...),
each with ordered *levels* and an embedding width.  Label vectors are the concatenation
of one block per factor; a hard label is one-hot inside each block (multi-hot overall),
a soft label is a convex mix inside each block.  A level may be *tied*: its embedding is
the mean of other levels' embeddings, so the network never learns it separately (the NF1
study tied ``intermediate`` to the mean of ``early`` and ``late``).

The space is saved inside every checkpoint and manifest; tools read label meaning from
it, never from file names or alphabetical order.
"""
from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from synth.errors import UserError

__all__ = [
    "ConditionError",
    "Factor",
    "ConditionSpace",
    "KNOWN_LEVELS",
    "DEFAULT_EMBED_TOTAL",
    "parse_tie",
    "parse_cond_assignments",
]

DEFAULT_EMBED_TOTAL = 512
SOFT_TOLERANCE = 1e-4

# Level orders the toolkit knows without a schema file.  Order matters: it is the order of
# grids, morphs and ordinal metrics.
KNOWN_LEVELS: dict[str, tuple[str, ...]] = {
    "age": ("infant", "child", "adolescent", "young_adult", "older_adult"),
    "stage": ("early", "intermediate", "late"),
    "disease": ("syndrome_a", "syndrome_b", "other_condition", "unaffected"),
}
KNOWN_ORDINAL = {"age", "stage", "severity", "grade"}
KNOWN_CONTROL_LEVELS = ("unaffected", "control", "healthy", "normal")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class ConditionError(UserError):
    """A label, vector or schema that does not fit the condition space (one-line message)."""


@dataclass(frozen=True)
class Factor:
    """One labelled factor with ordered levels.

    ``ties`` maps a tied level to the levels whose mean embedding it uses.
    ``embed_auto`` says nobody chose ``embed_dim``: a training run then sizes the embedding
    from its latent width (:meth:`ConditionSpace.resolve_embedding`), so the label does not
    drown z in the mapping network's input.
    ``control`` names the level that means "not affected" (used to tell affected from
    unaffected images); ``ordinal`` says the level order is a progression (age, stage).
    """

    name: str
    levels: tuple[str, ...]
    embed_dim: int = 256
    ties: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    control: str | None = None
    ordinal: bool = False
    embed_auto: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        object.__setattr__(self, "ties", {k: tuple(v) for k, v in dict(self.ties).items()})
        if not _NAME_RE.match(self.name):
            raise ConditionError(f"factor name {self.name!r} must be letters, digits, '_', '.', '-'")
        if len(self.levels) < 1:
            raise ConditionError(f"factor {self.name!r} has no levels")
        dup = sorted({lv for lv in self.levels if self.levels.count(lv) > 1})
        if dup:
            raise ConditionError(f"factor {self.name!r} repeats level(s) {', '.join(dup)}")
        for lv in self.levels:
            if not _NAME_RE.match(lv):
                raise ConditionError(f"factor {self.name!r}: level name {lv!r} has invalid characters")
        if self.embed_dim < 1:
            raise ConditionError(f"factor {self.name!r}: embed_dim must be positive, got {self.embed_dim}")
        for tied, sources in self.ties.items():
            if tied not in self.levels:
                raise ConditionError(f"factor {self.name!r}: tied level {tied!r} is not a level")
            if not sources:
                raise ConditionError(f"factor {self.name!r}: tied level {tied!r} has no source levels")
            for s in sources:
                if s not in self.levels:
                    raise ConditionError(f"factor {self.name!r}: tie source {s!r} is not a level")
                if s in self.ties:
                    raise ConditionError(f"factor {self.name!r}: tie source {s!r} is itself tied")
                if s == tied:
                    raise ConditionError(f"factor {self.name!r}: level {tied!r} cannot be tied to itself")
        if self.control is not None and self.control not in self.levels:
            raise ConditionError(f"factor {self.name!r}: control level {self.control!r} is not a level")

    @property
    def size(self) -> int:
        return len(self.levels)

    def index(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError:
            raise ConditionError(
                f"unknown level {level!r} for factor {self.name!r} (levels: {', '.join(self.levels)})"
            ) from None

    def tie_matrix(self) -> np.ndarray:
        """[L, L] matrix T with effective_embedding = one_hot @ T @ table.

        Untied rows are the identity; a tied level's row averages its sources, so its
        embedding is by construction the mean of theirs.
        """
        t = np.eye(self.size, dtype=np.float32)
        for tied, sources in self.ties.items():
            i = self.index(tied)
            t[i] = 0.0
            for s in sources:
                t[i, self.index(s)] += 1.0 / len(sources)
        return t

    def to_dict(self) -> dict:
        d: dict = {"name": self.name, "levels": list(self.levels)}
        if not self.embed_auto:
            d["embed_dim"] = self.embed_dim
        if self.ties:
            d["ties"] = {k: list(v) for k, v in self.ties.items()}
        if self.control is not None:
            d["control"] = self.control
        if self.ordinal:
            d["ordinal"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "Factor":
        if not isinstance(d, Mapping) or "name" not in d or "levels" not in d:
            raise ConditionError("each factor needs 'name' and 'levels'")
        levels = d["levels"]
        if isinstance(levels, str) or not isinstance(levels, Sequence):
            raise ConditionError(f"factor {d['name']!r}: 'levels' must be a list")
        return cls(
            name=str(d["name"]),
            levels=tuple(str(x) for x in levels),
            embed_dim=int(d.get("embed_dim", 256)),
            embed_auto="embed_dim" not in d,
            ties={str(k): tuple(str(s) for s in v) for k, v in (d.get("ties") or {}).items()},
            control=d.get("control"),
            ordinal=bool(d.get("ordinal", False)),
        )


def split_embed_total(n: int, total: int = DEFAULT_EMBED_TOTAL) -> list[int]:
    """Split ``total`` embedding width evenly over n factors (remainder to the first ones)."""
    base, rem = divmod(total, n)
    return [base + (1 if i < rem else 0) for i in range(n)]


class ConditionSpace:
    """Ordered factors and the conversions between level names and label vectors."""

    def __init__(self, factors: Sequence[Factor]):
        factors = tuple(factors)
        if not factors:
            raise ConditionError("a condition space needs at least one factor")
        names = [f.name for f in factors]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConditionError(f"factor(s) named twice: {', '.join(dup)}")
        self.factors = factors
        self._by_name = {f.name: f for f in factors}
        self._offsets = list(itertools.accumulate([0] + [f.size for f in factors]))

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_levels(
        cls,
        levels: Mapping[str, Sequence[str]] | Sequence[tuple[str, Sequence[str]]],
        embed_dims: Sequence[int] | None = None,
        embed_total: int | None = None,
        ties: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
        controls: Mapping[str, str] | None = None,
        ordinal: Iterable[str] | None = None,
    ) -> "ConditionSpace":
        items = list(levels.items()) if isinstance(levels, Mapping) else list(levels)
        auto = embed_dims is None and embed_total is None  # nobody chose: a training run sizes it
        dims = list(embed_dims) if embed_dims is not None else split_embed_total(len(items), embed_total or DEFAULT_EMBED_TOTAL)
        if len(dims) != len(items):
            raise ConditionError(f"{len(dims)} embedding widths given for {len(items)} factors")
        ties = ties or {}
        controls = dict(controls or {})
        ordinal_set = set(ordinal) if ordinal is not None else KNOWN_ORDINAL
        factors = []
        for (name, lvls), dim in zip(items, dims):
            control = controls.get(name)
            if control is None and name not in controls:
                control = next((c for c in KNOWN_CONTROL_LEVELS if c in lvls), None) if name == "disease" else None
            factors.append(
                Factor(name, tuple(lvls), int(dim), ties.get(name, {}), control, name in ordinal_set, auto)
            )
        return cls(factors)

    @classmethod
    def default(cls, factor_names: Sequence[str], **kw) -> "ConditionSpace":
        """A space built from the known level orders (``disease``, ``age``, ``stage``)."""
        missing = [n for n in factor_names if n not in KNOWN_LEVELS]
        if missing:
            raise ConditionError(
                f"no known levels for factor(s) {', '.join(missing)}; give a conditions.yaml schema"
            )
        return cls.from_levels([(n, KNOWN_LEVELS[n]) for n in factor_names], **kw)

    def with_ties(self, ties: Mapping[str, Mapping[str, Sequence[str]]]) -> "ConditionSpace":
        """A copy with extra tied levels, e.g. ``{"stage": {"intermediate": ["early", "late"]}}``."""
        unknown = [n for n in ties if n not in self._by_name]
        if unknown:
            raise ConditionError(f"tie names unknown factor(s) {', '.join(unknown)}")
        new = []
        for f in self.factors:
            merged = dict(f.ties)
            merged.update({k: tuple(v) for k, v in ties.get(f.name, {}).items()})
            new.append(replace(f, ties=merged))
        return ConditionSpace(new)

    def with_embed_dims(self, dims: Sequence[int]) -> "ConditionSpace":
        """A copy with these (chosen, no longer automatic) embedding widths, one per factor."""
        dims = [int(d) for d in dims]
        if len(dims) != len(self.factors):
            raise ConditionError(f"{len(dims)} embedding widths given for {len(self.factors)} factors ({', '.join(self.names)})")
        return ConditionSpace([replace(f, embed_dim=d, embed_auto=False) for f, d in zip(self.factors, dims)])

    def frozen(self) -> "ConditionSpace":
        """This space with its current widths marked as chosen (what networks and checkpoints keep)."""
        return self.with_embed_dims(self.embed_dims) if any(f.embed_auto for f in self.factors) else self

    def resolve_embedding(self, w_dim: int) -> "ConditionSpace":
        """Fix the widths nobody chose: ``w_dim`` split evenly over the factors.

        The label embedding and z are concatenated at the mapping network's input. Sized to
        w_dim in all, the label is half of that input, as in the reference conditional
        StyleGAN2-ADA; a 512-wide embedding beside a 128-wide z let the label decide 80% of
        the input and every cell rendered one face. Factors whose width was chosen (in
        conditions.yaml or a checkpoint) keep it.
        """
        if not any(f.embed_auto for f in self.factors):
            return self
        split = split_embed_total(len(self.factors), int(w_dim))
        return self.with_embed_dims([s if f.embed_auto else f.embed_dim for f, s in zip(self.factors, split)])

    def subset(self, names: Sequence[str]) -> "ConditionSpace":
        """The space restricted to the named factors, in the order given."""
        return ConditionSpace([self.factor(n) for n in names])

    # ---- basic properties ------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.factors)

    @property
    def c_dim(self) -> int:
        return self._offsets[-1]

    @property
    def embed_dims(self) -> tuple[int, ...]:
        return tuple(f.embed_dim for f in self.factors)

    @property
    def embed_total(self) -> int:
        return sum(self.embed_dims)

    def factor(self, name: str) -> Factor:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConditionError(
                f"unknown factor {name!r} (factors: {', '.join(self.names)})"
            ) from None

    def block(self, name: str) -> slice:
        i = self.names.index(self.factor(name).name)
        return slice(self._offsets[i], self._offsets[i + 1])

    def blocks(self) -> list[tuple[Factor, slice]]:
        return [(f, slice(self._offsets[i], self._offsets[i + 1])) for i, f in enumerate(self.factors)]

    def cells(self, names: Sequence[str] | None = None) -> list[tuple[str, ...]]:
        """Every combination of levels of the named factors (default all), in level order."""
        names = list(names) if names is not None else list(self.names)
        return list(itertools.product(*[self.factor(n).levels for n in names]))

    def tie_matrix(self) -> np.ndarray:
        """Block-diagonal [c_dim, c_dim] tie matrix (identity where nothing is tied)."""
        t = np.zeros((self.c_dim, self.c_dim), dtype=np.float32)
        for f, sl in self.blocks():
            t[sl, sl] = f.tie_matrix()
        return t

    # ---- names <-> vectors -------------------------------------------------------------
    def check_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        missing = [n for n in self.names if n not in labels]
        if missing:
            raise ConditionError(f"label is missing factor(s) {', '.join(missing)}")
        extra = [k for k in labels if k not in self._by_name]
        if extra:
            raise ConditionError(f"label names unknown factor(s) {', '.join(extra)} (factors: {', '.join(self.names)})")
        out = {}
        for f in self.factors:
            f.index(str(labels[f.name]))
            out[f.name] = str(labels[f.name])
        return out

    def encode(self, labels: Mapping[str, str]) -> np.ndarray:
        """Level names -> multi-hot float32 vector of length c_dim."""
        labels = self.check_labels(labels)
        v = np.zeros(self.c_dim, dtype=np.float32)
        for f, sl in self.blocks():
            v[sl.start + f.index(labels[f.name])] = 1.0
        return v

    def encode_soft(self, mixes: Mapping[str, Mapping[str, float] | str]) -> np.ndarray:
        """Per-factor mixes -> soft vector.  A factor may be given as a level name (hard)
        or as ``{level: weight}``; weights must be non-negative and sum to 1 per factor."""
        missing = [n for n in self.names if n not in mixes]
        if missing:
            raise ConditionError(f"soft label is missing factor(s) {', '.join(missing)}")
        extra = [k for k in mixes if k not in self._by_name]
        if extra:
            raise ConditionError(f"soft label names unknown factor(s) {', '.join(extra)}")
        v = np.zeros(self.c_dim, dtype=np.float32)
        for f, sl in self.blocks():
            m = mixes[f.name]
            if isinstance(m, str):
                v[sl.start + f.index(m)] = 1.0
                continue
            for level, w in m.items():
                w = float(w)
                if not np.isfinite(w) or w < 0:
                    raise ConditionError(f"factor {f.name!r}: weight for {level!r} must be >= 0, got {w}")
                v[sl.start + f.index(level)] += w
        self.validate(v, soft=True)
        return v

    def mix(self, a: Mapping[str, str], b: Mapping[str, str], weight_a: float) -> np.ndarray:
        """Convex mix weight_a * encode(a) + (1 - weight_a) * encode(b)."""
        if not 0.0 <= weight_a <= 1.0:
            raise ConditionError(f"mix weight must be in [0, 1], got {weight_a}")
        return (weight_a * self.encode(a) + (1.0 - weight_a) * self.encode(b)).astype(np.float32)

    def validate(self, vec: np.ndarray, soft: bool = True) -> None:
        """Raise ConditionError unless vec is a valid (soft if allowed) label vector."""
        v = np.asarray(vec, dtype=np.float64)
        if v.shape != (self.c_dim,):
            raise ConditionError(f"label vector has shape {tuple(v.shape)}, expected ({self.c_dim},)")
        if not np.all(np.isfinite(v)):
            raise ConditionError("label vector has non-finite entries")
        for f, sl in self.blocks():
            blk = v[sl]
            if np.any(blk < -SOFT_TOLERANCE):
                raise ConditionError(f"factor {f.name!r}: negative label weight")
            if abs(blk.sum() - 1.0) > SOFT_TOLERANCE:
                raise ConditionError(f"factor {f.name!r}: label weights sum to {blk.sum():.4g}, expected 1")
            if not soft and not np.all((np.abs(blk) < SOFT_TOLERANCE) | (np.abs(blk - 1) < SOFT_TOLERANCE)):
                raise ConditionError(f"factor {f.name!r}: expected a one-hot block, got a soft mix")

    def decode(self, vec: np.ndarray) -> dict[str, str]:
        """Vector -> level names (the arg-max level of each factor block)."""
        v = np.asarray(vec)
        if v.shape != (self.c_dim,):
            raise ConditionError(f"label vector has shape {tuple(v.shape)}, expected ({self.c_dim},)")
        return {f.name: f.levels[int(np.argmax(v[sl]))] for f, sl in self.blocks()}

    def decode_soft(self, vec: np.ndarray) -> dict[str, dict[str, float]]:
        """Vector -> per-factor ``{level: weight}`` for the non-zero weights."""
        self.validate(vec, soft=True)
        v = np.asarray(vec, dtype=np.float64)
        return {
            f.name: {lv: float(v[sl][i]) for i, lv in enumerate(f.levels) if v[sl][i] > SOFT_TOLERANCE}
            for f, sl in self.blocks()
        }

    def is_hard(self, vec: np.ndarray) -> bool:
        try:
            self.validate(vec, soft=False)
            return True
        except ConditionError:
            return False

    def soft_columns(self) -> list[str]:
        """Column names ``p_<factor>=<level>`` used for soft labels in CSV files."""
        return [f"p_{f.name}={lv}" for f in self.factors for lv in f.levels]

    def describe(self, vec: np.ndarray) -> str:
        """Short human label, e.g. ``syndrome_a / child`` or ``0.55 syndrome_a + 0.45 syndrome_b / child``."""
        parts = []
        for name, mix in self.decode_soft(vec).items():
            if len(mix) == 1:
                parts.append(next(iter(mix)))
            else:
                parts.append(" + ".join(f"{w:.2f} {lv}" for lv, w in sorted(mix.items(), key=lambda kv: -kv[1])))
        return " / ".join(parts)

    # ---- affected / control ----------------------------------------------------------
    def control_of(self) -> tuple[str, str] | None:
        """(factor, level) meaning "unaffected", if the space has one."""
        for f in self.factors:
            if f.control is not None:
                return f.name, f.control
        return None

    def is_affected(self, labels: Mapping[str, str]) -> bool:
        ctl = self.control_of()
        return ctl is None or labels.get(ctl[0]) != ctl[1]

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": "condition-space/1", "factors": [f.to_dict() for f in self.factors]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ConditionSpace":
        if not isinstance(d, Mapping) or "factors" not in d:
            raise ConditionError("condition space needs a 'factors' list")
        factors = d["factors"]
        if not isinstance(factors, Sequence) or isinstance(factors, str):
            raise ConditionError("'factors' must be a list")
        return cls([Factor.from_dict(f) for f in factors])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_json(cls, s: str) -> "ConditionSpace":
        try:
            return cls.from_dict(json.loads(s))
        except json.JSONDecodeError as e:
            raise ConditionError(f"condition space is not valid JSON: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON, atomically."""
        from synth.utils.io import atomic_write_text

        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        else:
            text = json.dumps(self.to_dict(), indent=2)
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "ConditionSpace":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ConditionError(f"{path}: cannot read condition schema ({e.strerror})") from None
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
            return cls.from_dict(data)
        except ConditionError as e:
            raise ConditionError(f"{path}: {e}") from None
        except Exception as e:  # yaml/json syntax errors
            raise ConditionError(f"{path}: not a valid condition schema ({type(e).__name__}: {e})".splitlines()[0]) from None

    def __eq__(self, other: object) -> bool:
        # widths count, not whether someone chose them
        return isinstance(other, ConditionSpace) and self.frozen().to_dict() == other.frozen().to_dict()

    def __hash__(self) -> int:
        return hash(self.frozen().to_json())

    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}[{'/'.join(f.levels)}]x{f.embed_dim}" for f in self.factors)
        return f"ConditionSpace({inner})"


def parse_tie(spec: str) -> dict[str, dict[str, list[str]]]:
    """Parse ``stage:intermediate=early+late`` into ``{"stage": {"intermediate": ["early", "late"]}}``."""
    m = re.fullmatch(r"\s*([^:=+\s]+)\s*:\s*([^:=+\s]+)\s*=\s*([^:=\s]+(?:\s*\+\s*[^:=+\s]+)*)\s*", spec)
    if not m:
        raise ConditionError(f"--tie {spec!r}: expected FACTOR:LEVEL=SOURCE+SOURCE, e.g. stage:intermediate=early+late")
    sources = [s.strip() for s in m.group(3).split("+")]
    return {m.group(1): {m.group(2): sources}}


def parse_cond_assignments(spec: str) -> dict[str, str]:
    """Parse ``disease=syndrome_a,age=child`` into a dict."""
    out: dict[str, str] = {}
    for part in [p for p in spec.split(",") if p.strip()]:
        if "=" not in part:
            raise ConditionError(f"condition {part!r}: expected FACTOR=LEVEL")
        k, v = (s.strip() for s in part.split("=", 1))
        if k in out:
            raise ConditionError(f"condition names factor {k!r} twice")
        out[k] = v
    if not out:
        raise ConditionError("empty condition: expected FACTOR=LEVEL[,FACTOR=LEVEL]")
    return out
