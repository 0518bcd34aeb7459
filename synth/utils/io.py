"""Atomic file writes: a reader never sees half a checkpoint, manifest or CSV.

Also the ``--out`` folder rule every writing command shares (:func:`prepare_out_dir`): a
non-empty folder is refused without ``--force``, and ``--force`` first removes the outputs an
earlier run left there, so no stale result sits beside the new ones.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import os
import secrets
from pathlib import Path
from typing import Callable, Iterable, Iterator

from synth.errors import UserError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_path",
    "atomic_save",
    "create_temp",
    "OutDirError",
    "check_out_dir",
    "remove_outputs",
    "prepare_out_dir",
    "lock_out_dir",
    "undo_out_dirs",
    "out_dirs_mark",
    "keep_out_dirs",
    "LOCK_NAME",
    "literal",
]

# Held by a writing command inside its --out folder while it runs, so that a second command
# writing into the same folder is refused instead of mixing its files with the first's.
LOCK_NAME = ".synth-out.lock"
_held: set[Path] = set()


def create_temp(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty hidden file beside ``path`` (exclusively) and return its name.

    Unlike ``tempfile.mkstemp`` (always 0600) the file gets the umask's default mode
    (0666 & ~umask): it is renamed over ``path`` and keeps that mode, so outputs end up
    readable by whoever could read a plainly written file.
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{path}: no free temporary name beside it")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = create_temp(path)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result over ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


# ----------------------------------------------------------------------------------------
# --out folders


class OutDirError(UserError):
    """An --out folder that cannot be written as asked (one-line message naming it)."""


def check_out_dir(out: str | os.PathLike, force: bool, error: type[Exception] = OutDirError) -> Path:
    """Refuse a non-folder ``out`` or a non-empty one without ``force``; changes nothing.

    Commands call this before any slow work, so a refusal costs nothing and writes nothing.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()) and not force:
        raise error(f"--out {out}: folder is not empty (use --force to replace its earlier results)")
    return out


def remove_outputs(out: str | os.PathLike, patterns: Iterable[str]) -> list[Path]:
    """Delete the files in ``out`` matching ``patterns`` (globs relative to ``out``: a
    command's known outputs), then the sub-folders this left empty; return what was removed.

    Patterns that are absolute or contain ``..`` are ignored, and so is anything that is
    not inside ``out``: only a command's own outputs go, never unrelated files.
    """
    out = Path(out)
    if not out.is_dir():
        return []
    root = out.resolve()
    removed: list[Path] = []
    for pattern in patterns:
        if not pattern or os.path.isabs(pattern) or ".." in Path(pattern).parts:
            continue
        for p in sorted(out.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                continue
            if root not in p.parent.resolve().parents and p.parent.resolve() != root:
                continue
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    for d in sorted({q for p in removed for q in p.parents if q != out and out in q.parents}, key=lambda q: -len(q.parts)):
        with contextlib.suppress(OSError):  # not empty: it holds files that are not ours
            d.rmdir()
    return removed


def prepare_out_dir(
    out: str | os.PathLike,
    force: bool,
    outputs: Iterable[str] = (),
    error: type[Exception] = OutDirError,
) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``force``, which first removes the
    earlier ``outputs`` (see :func:`remove_outputs`) so old and new results never mix."""
    out = check_out_dir(out, force, error)
    existed = out.is_dir()
    out.mkdir(parents=True, exist_ok=True)
    lock_out_dir(out, error)
    if force:
        remove_outputs(out, outputs)
    before = {p for p in out.rglob("*") if p.is_file()} if existed else set()
    _prepared.append((out, not existed, before))
    return out


# --out folders prepared by the running command: (folder, made by it, files there before)
_prepared: list[tuple[Path, bool, set[Path]]] = []


def out_dirs_mark() -> int:
    """Where the running command starts in the list of prepared folders (see :func:`undo_out_dirs`)."""
    return len(_prepared)


def undo_out_dirs(since: int = 0) -> None:
    """After a failed or interrupted command: remove what it wrote into the --out folders it
    prepared after ``since`` (a folder it made goes entirely; elsewhere only files that were not
    there before), so no unlisted images or half a result remain. Outputs that ``--force``
    replaced are not restored."""
    import shutil

    while len(_prepared) > since:
        out, made, before = _prepared.pop()
        if made:
            shutil.rmtree(out, ignore_errors=True)
            continue
        new = [p for p in out.rglob("*") if p.is_file() and p not in before and p.name != LOCK_NAME]
        for p in new:
            with contextlib.suppress(OSError):
                p.unlink()
        for d in sorted({q for p in new for q in p.parents if out in q.parents}, key=lambda q: -len(q.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()


def keep_out_dirs(since: int = 0) -> None:
    """After a command succeeded: what it wrote stays."""
    del _prepared[since:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def lock_out_dir(out: str | os.PathLike, error: type[Exception] = OutDirError) -> Path:
    """Hold ``out/.synth-out.lock`` until this command ends (its click context closes, or the
    process exits). A lock of a live process on this host refuses with one line naming it; a
    lock whose process is gone (killed) is taken over. Re-entrant within one process."""
    import atexit
    import json
    import socket
    import sys
    import time

    out = Path(out)
    path = out / LOCK_NAME
    if path in _held:
        return path
    host = socket.gethostname()
    me = {"pid": os.getpid(), "host": host, "command": " ".join(["synth", *sys.argv[1:3]]), "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
                pid, where = int(holder["pid"]), str(holder.get("host", ""))
            except (OSError, ValueError, KeyError, TypeError):
                holder, pid, where = {}, -1, host  # unreadable: being written right now, or debris
                if time.time() - _mtime(path) < 5:
                    time.sleep(0.2)
                    continue
            if where != host or _alive(pid):
                if where == host and pid == os.getpid():
                    _held.add(path)
                    return path
                raise error(f"--out {out}: in use by another command ({holder.get('command', '?')}, pid {pid} on {where}); "
                            f"wait for it to finish or choose another folder") from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its process is gone: a killed run's lock
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        _held.add(path)
        release = functools.partial(_release, path)
        atexit.register(release)
        try:
            import click

            ctx = click.get_current_context(silent=True)
            if ctx is not None:
                ctx.call_on_close(release)
        except ImportError:
            pass
        return path
    raise error(f"--out {out}: could not take the folder's lock {path}")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _release(path: Path) -> None:
    if path in _held:
        _held.discard(path)
        with contextlib.suppress(OSError):
            path.unlink()


def literal(name: str) -> str:
    """``name`` as a glob pattern that matches only itself (for file lists such as a manifest)."""
    return glob.escape(name)
