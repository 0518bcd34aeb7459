"""Where a dataset's files live: a folder or a zip archive (:class:`_Storage`), or several
datasets joined into one (:class:`_JoinedStorage`, made by :meth:`synth.data.dataset.ImageSet.join`),
all addressed by POSIX relative paths; and the error every dataset reader raises."""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from synth.errors import UserError

__all__ = ["DatasetError", "IMAGE_EXTENSIONS", "LABELS_CSV", "NVLABS_JSON"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
LABELS_CSV = "labels.csv"
NVLABS_JSON = "dataset.json"


class DatasetError(UserError):
    """A dataset that cannot be read as given (one-line message naming the file)."""


class _Storage:
    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise DatasetError(f"{path}: not a folder or a zip archive")
            self._zip = zipfile.ZipFile(path)
            names = [n for n in self._zip.namelist() if not n.endswith("/")]
            # A zip of a folder holds "folder/labels.csv": read relative to that folder.
            for marker in (LABELS_CSV, NVLABS_JSON):
                hits = sorted((n for n in names if PurePosixPath(n).name == marker), key=len)
                if hits:
                    parent = str(PurePosixPath(hits[0]).parent)
                    self._prefix = "" if parent == "." else parent + "/"
                    break
            self._names = {n[len(self._prefix):] for n in names if n.startswith(self._prefix)}
        elif not path.is_dir():
            raise DatasetError(f"{path}: dataset not found")

    def __getstate__(self):  # zip handles do not cross process boundaries (DataLoader workers)
        state = dict(self.__dict__)
        state["_zip"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.path.is_file():
            self._zip = zipfile.ZipFile(self.path)

    def exists(self, rel: str) -> bool:
        if self._zip is not None:
            return rel in self._names
        return (self.path / rel).is_file()

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            if rel not in self._names:
                raise FileNotFoundError(rel)
            return self._zip.read(self._prefix + rel)
        return (self.path / rel).read_bytes()

    def list_images(self) -> list[str]:
        if self._zip is not None:
            names = self._names
        else:
            names = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}
        return sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and not PurePosixPath(n).name.startswith("."))

    def display(self, rel: str) -> str:
        return f"{self.path}:{rel}" if self._zip is not None else str(self.path / rel)


class _JoinedStorage:
    """Several datasets' storages behind one set of names (:meth:`ImageSet.join`): the first
    keeps its names, the others' names get a ``@tag/`` prefix."""

    def __init__(self, parts: dict[str, tuple[Any, str]], path: Path):
        self.parts = parts  # joined name -> (storage, name inside it)
        self.path = path

    def exists(self, rel: str) -> bool:
        return rel in self.parts

    def read(self, rel: str) -> bytes:
        if rel not in self.parts:
            raise FileNotFoundError(rel)
        storage, inner = self.parts[rel]
        return storage.read(inner)

    def list_images(self) -> list[str]:
        return sorted(self.parts)

    def display(self, rel: str) -> str:
        storage, inner = self.parts[rel]
        return storage.display(inner)
