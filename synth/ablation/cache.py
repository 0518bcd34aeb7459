"""Finished-cell cache and claim files, so ablations resume and can run side by side.

A cell's result is one JSON file written atomically (temporary file + rename), so it either
exists complete or not at all; its presence means "done".  Work on a cell (or on one fold's
GAN) is claimed by creating ``<name>.lock`` with ``O_CREAT | O_EXCL``, which succeeds for
exactly one process even when several share the folder.  A claim whose process is gone (same
host, dead pid) is stale and is taken over; claims from other hosts are trusted.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from synth.utils.io import atomic_write_text

__all__ = ["Claim", "try_claim", "read_json", "write_json"]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(path: Path) -> bool:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        # Unreadable: either being written right now or garbage; only old files count as stale.
        try:
            return time.time() - path.stat().st_mtime > 60
        except OSError:
            return False
    return info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1)))


class Claim:
    """An exclusive claim on a piece of work; release it with :meth:`release` (or ``with``)."""

    def __init__(self, path: Path):
        self.path = path

    def release(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_claim(path: str | Path) -> Claim | None:
    """Create the claim file ``path``; None if another live process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _is_stale(path):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                continue
            return None
        with os.fdopen(fd, "w") as f:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
        return Claim(path)
    return None


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None when it does not exist (files are written atomically,
    so an existing one is complete)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None


def write_json(path: str | Path, obj: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=1, default=_default) + "\n")


def _default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
