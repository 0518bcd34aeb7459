"""Finding and loading the generator a synthesis command works with."""
from __future__ import annotations

import re
from pathlib import Path

from synth.synthesis.errors import SynthesisError

__all__ = ["find_default_network", "newest_snapshot", "open_generator"]

DEMO_CHECKPOINT = Path("checkpoints") / "demo-faces.ckpt"
SKIN_CHECKPOINT = Path("checkpoints") / "demo-skin.ckpt"
# The source tree's own checkpoints/ folder, so the bundled generators are found from any
# working directory after an editable install.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_RUN_RE = re.compile(r"^(\d+)")
_SNAP_RE = re.compile(r"^network-snapshot-(\d+(?:\.\d+)?)\.ckpt$")


def _factor_names(path: Path) -> set[str]:
    """Factor names of a checkpoint's condition space (empty when it has none or is unreadable)."""
    from synth.training.checkpoint import CheckpointError, read_space

    try:
        space = read_space(path)
    except CheckpointError:
        return set()
    return set(space.names) if space is not None else set()


def newest_snapshot(runs: Path) -> Path | None:
    """Newest ``runs/NNNNN-*/network-snapshot-*.ckpt``: highest run number, then highest kimg."""
    best: tuple[int, float, Path] | None = None
    if runs.is_dir():
        for run in runs.iterdir():
            m = _RUN_RE.match(run.name)
            if not (run.is_dir() and m):
                continue
            for snap in run.glob("network-snapshot-*.ckpt"):
                sm = _SNAP_RE.match(snap.name)
                if sm:
                    key = (int(m.group(1)), float(sm.group(1)), snap)
                    if best is None or key[:2] > best[:2]:
                        best = key
    return None if best is None else best[2]


def find_default_network(root: str | Path = ".", factor: str | None = None) -> Path:
    """The generator a command uses when ``--network`` is not given.

    The newest ``runs/*/network-snapshot-*.ckpt`` (by run number, then kimg); else a bundled
    checkpoint (``checkpoints/demo-faces.ckpt``, ``checkpoints/demo-skin.ckpt``, looked up
    in ``root`` and then in the source tree).  With ``factor`` (e.g. ``stage``), only
    generators conditioned on that factor qualify, so ``synth morph --factor stage`` finds
    the skin model.  Otherwise a one-line error.
    """
    root = Path(root)
    runs = root / "runs"
    snap = newest_snapshot(runs)
    if snap is not None and (factor is None or factor in _factor_names(snap)):
        return snap
    bundled = [base / rel for base in dict.fromkeys([root, _SOURCE_ROOT]) for rel in (DEMO_CHECKPOINT, SKIN_CHECKPOINT)]
    for path in bundled:
        if path.is_file() and (factor is None or factor in _factor_names(path)):
            return path
    what = "no snapshot" if factor is None else f"no generator with a {factor!r} factor"
    raise SynthesisError(f"--network: not given and {what} found under {runs}/ or {root / 'checkpoints'}/")


def open_generator(path: str | Path | None, device: str = "cpu", factor: str | None = None):
    """-> (G, space, meta, path).  Checkpoint problems become one-line SynthesisErrors.

    Without ``path``, :func:`find_default_network` picks one (``factor`` narrows the choice)."""
    from synth.training.checkpoint import CheckpointError, load_generator

    p = Path(path) if path is not None else find_default_network(factor=factor)
    if not p.exists():
        raise SynthesisError(f"--network {p}: checkpoint not found")
    try:
        G, space, meta = load_generator(p, device=device)
    except CheckpointError as e:
        raise SynthesisError(f"--network: {e}") from None
    if space is None:
        raise SynthesisError(f"--network {p}: checkpoint has no condition space (an unconditional generator?)")
    return G, space, meta, p
