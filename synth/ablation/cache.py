"""Finished-cell cache and claim files, so ablations resume and can run side by side.

A cell's result is one JSON file written atomically (temporary file + rename), so it either
exists complete or not at all; its presence means "done".  Work on a cell (or on one fold's
GAN or synthetic set) is claimed by creating ``<name>.lock`` with ``O_CREAT | O_EXCL``, which
succeeds for exactly one process even when several share the folder (also over NFS v3+).

A claim holds its owner (host, pid, a random token) and a heartbeat: while the work runs, a
background thread touches the file every :data:`HEARTBEAT_SECONDS`.  A claim is *stale*, and
is taken over, when its process is gone (same host, dead pid: at once) or when its heartbeat
is older than ``stale_after`` seconds (any host: a crashed node, a killed SLURM job).  A
take-over goes through a second exclusive file (``<name>.lock.takeover``), so of several
workers that find the same stale claim only one replaces it.  ``stale_after`` must exceed
the heartbeat interval plus the clock skew between hosts; the default is ten minutes.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from synth.utils.io import atomic_write_text

__all__ = ["Claim", "try_claim", "claim_info", "is_stale", "read_json", "write_json", "HEARTBEAT_SECONDS",
           "STALE_AFTER_SECONDS"]

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def claim_info(path: str | Path) -> dict | None:
    """The owner record of a claim file (None if missing or not yet written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def is_stale(path: str | Path, stale_after: float = STALE_AFTER_SECONDS) -> bool:
    """Whether the claim ``path`` belongs to a dead worker (see the module doc)."""
    path = Path(path)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False  # gone: nothing to take over
    info = claim_info(path)
    if info is not None and info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1))):
        return True
    # Unreadable files are either being written right now or debris: only old ones count.
    return age > stale_after


class Claim:
    """An exclusive claim on a piece of work; release it with :meth:`release` (or ``with``).

    Its heartbeat thread touches the file until release, so other workers can tell a
    long-running claim from a dead one."""

    def __init__(self, path: Path, token: str, heartbeat: float = HEARTBEAT_SECONDS):
        self.path, self.token = path, token
        self.lost = False  # set when another worker took the claim over (we were presumed dead)
        self._stop = threading.Event()
        self._thread = None
        if heartbeat and heartbeat > 0:
            self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True, name=f"claim {path.name}")
            self._thread.start()

    def _owned(self) -> bool:
        info = claim_info(self.path)
        return info is not None and info.get("token") == self.token

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            if not self._owned():
                self.lost = True
                warnings.warn(f"{self.path}: claim was taken over by another worker; this result may be computed twice",
                              RuntimeWarning, stacklevel=1)
                return
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._owned():  # never delete a claim another worker took over
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _create(path: Path) -> str | None:
    """Create the claim file exclusively; its token, or None if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    token = uuid.uuid4().hex
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "token": token, "time": time.time()}, f)
    return token


def _take_over(path: Path, stale_after: float) -> str | None:
    """Replace the stale claim ``path`` by ours; None if another worker got there first."""
    guard = path.with_name(path.name + ".takeover")
    if guard.exists() and is_stale(guard, stale_after):  # a taker that died between the two steps
        try:
            guard.unlink()
        except FileNotFoundError:
            pass
    if _create(guard) is None:
        return None
    try:
        if path.exists() and not is_stale(path, stale_after):  # replaced or refreshed meanwhile
            return None
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return _create(path)
    finally:
        guard.unlink()


def try_claim(path: str | Path, stale_after: float = STALE_AFTER_SECONDS,
              heartbeat: float = HEARTBEAT_SECONDS) -> Claim | None:
    """Claim ``path``; None if another live worker holds it.  A stale claim is taken over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = _create(path)
    if token is None and is_stale(path, stale_after):
        token = _take_over(path, stale_after)
    return None if token is None else Claim(path, token, heartbeat)


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
