"""Finding and loading the generator a synthesis command works with."""
from __future__ import annotations

import hashlib
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from synth.synthesis.errors import SynthesisError

__all__ = ["find_default_network", "newest_snapshot", "open_generator", "file_sha256", "network_record",
           "check_truncation"]

DEMO_CHECKPOINT = Path("checkpoints") / "demo-faces.ckpt"
SKIN_CHECKPOINT = Path("checkpoints") / "demo-skin.ckpt"
# The source tree's own checkpoints/ folder, so the bundled generators are found from any
# working directory after an editable install.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
_RUN_RE = re.compile(r"^(\d+)")
_SNAP_RE = re.compile(r"^network-snapshot-(\d+(?:\.\d+)?)\.ckpt$")


def _factor_names(path: Path) -> set[str]:
    """Factor names of a checkpoint's condition space (empty when it has none or is unreadable)."""
    from synth.networks.checkpoint import CheckpointError, read_space

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


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes: which exact network made an output.

    Cached per (absolute path, size, mtime), so a command that records the same checkpoint
    in several outputs reads it only once."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _kimg(meta: Mapping[str, Any] | None) -> float | None:
    """Training length of a snapshot in kimg (None for checkpoints that do not record it)."""
    if not meta:
        return None
    k = meta.get("kimg")
    if k is None and isinstance(meta.get("progress"), Mapping) and "cur_nimg" in meta["progress"]:
        k = meta["progress"]["cur_nimg"] / 1000
    try:
        return float(k) if k is not None and math.isfinite(float(k)) else None
    except (TypeError, ValueError):
        return None


def network_record(path: str | Path, meta: Mapping[str, Any] | None = None, default: bool | None = None) -> dict[str, Any]:
    """What every output records about its generator: ``network`` (path), ``network_sha256``,
    ``network_kimg`` and, when known, ``network_default`` (picked because --network was not given)."""
    rec: dict[str, Any] = {"network": str(path), "network_sha256": file_sha256(path), "network_kimg": _kimg(meta)}
    if default is not None:
        rec["network_default"] = bool(default)
    return rec


def describe_pick(path: str | Path, meta: Mapping[str, Any] | None) -> str:
    """The stderr line naming the generator picked when --network was not given."""
    k = _kimg(meta)
    return f"--network not given: using {path} ({f'{k:g} kimg' if k is not None else 'kimg not recorded'})"


def check_truncation(psi: float, option: str = "--truncation") -> float:
    """psi must be a finite number >= 0 (0 = the average face; 1 = no truncation)."""
    try:
        value = float(psi)
    except (TypeError, ValueError):
        raise SynthesisError(f"{option} {psi!r}: not a number") from None
    if not math.isfinite(value) or value < 0:
        raise SynthesisError(f"{option} {psi}: must be a finite number >= 0 (1 = no truncation)")
    return value


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def open_generator(path: str | Path | None, device: str = "cpu", factor: str | None = None,
                   log: Callable[[str], None] | None = _stderr):
    """-> (G, space, meta, path).  Checkpoint problems become one-line SynthesisErrors.

    Without ``path``, :func:`find_default_network` picks one (``factor`` narrows the choice)
    and ``log`` (default: stderr) is told which one, with its kimg, so a half-trained
    ``runs/`` snapshot never gets used silently.  ``meta["network_default"]`` says whether
    the network was picked this way."""
    from synth.networks.checkpoint import CheckpointError, load_generator

    picked = path is None
    p = Path(path) if path is not None else find_default_network(factor=factor)
    if not p.exists():
        raise SynthesisError(f"--network {p}: checkpoint not found")
    try:
        G, space, meta = load_generator(p, device=device)
    except CheckpointError as e:
        raise SynthesisError(f"--network: {e}") from None
    if space is None:
        raise SynthesisError(f"--network {p}: checkpoint has no condition space (an unconditional generator?)")
    meta = {**meta, "network_default": picked}
    if picked and log is not None:
        log(describe_pick(p, meta))
    return G, space, meta, p
