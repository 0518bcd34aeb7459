"""Finding and loading the generator a synthesis command works with."""
from __future__ import annotations

import re
from pathlib import Path

from synth.synthesis.errors import SynthesisError

__all__ = ["find_default_network", "open_generator"]

DEMO_CHECKPOINT = Path("checkpoints") / "demo-faces.ckpt"
_RUN_RE = re.compile(r"^(\d+)")
_SNAP_RE = re.compile(r"^network-snapshot-(\d+(?:\.\d+)?)\.ckpt$")


def find_default_network(root: str | Path = ".") -> Path:
    """Newest ``runs/*/network-snapshot-*.ckpt`` (by run number, then kimg), else the demo
    checkpoint, else a one-line error."""
    root = Path(root)
    best: tuple[int, float, Path] | None = None
    runs = root / "runs"
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
    if best is not None:
        return best[2]
    if (root / DEMO_CHECKPOINT).is_file():
        return root / DEMO_CHECKPOINT
    raise SynthesisError(f"--network: not given and no snapshot found under {runs}/ or {root / DEMO_CHECKPOINT}")


def open_generator(path: str | Path | None, device: str = "cpu"):
    """-> (G, space, meta, path).  Checkpoint problems become one-line SynthesisErrors."""
    from synth.training.checkpoint import CheckpointError, load_generator

    p = Path(path) if path is not None else find_default_network()
    if not p.exists():
        raise SynthesisError(f"--network {p}: checkpoint not found")
    try:
        G, space, meta = load_generator(p, device=device)
    except CheckpointError as e:
        raise SynthesisError(f"--network: {e}") from None
    if space is None:
        raise SynthesisError(f"--network {p}: checkpoint has no condition space (an unconditional generator?)")
    return G, space, meta, p
