"""Atomic writes give files the umask's default mode (0666 & ~umask), not mkstemp's 0600."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_helpers_follow_the_umask(tmp_path, umask):
    from synth.utils.io import atomic_save, atomic_write_bytes, atomic_write_text

    atomic_write_text(tmp_path / "report.md", "# r\n")
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_save(tmp_path / "b.txt", lambda tmp: tmp.write_text("y"))
    atomic_write_text(tmp_path / "report.md", "# again\n")  # replacing keeps the default mode too
    for name in ("report.md", "a.bin", "b.txt"):
        assert mode_of(tmp_path / name) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt", "report.md"]  # no temp files left


def test_outputs_are_0644_under_umask_022(tmp_path):
    from synth.conditions import ConditionSpace
    from synth.data.dataset import Record, write_labels_csv
    from synth.synthesis.render import save_png, write_gif, write_mp4
    from synth.networks.checkpoint import save_checkpoint
    from tests.helpers import tiny_generator

    space = ConditionSpace.default(["disease", "age"], embed_total=32)
    old = os.umask(0o022)
    try:
        frames = [np.zeros((16, 16, 3), np.uint8)] * 3
        save_png(frames[0], tmp_path / "img" / "a.png")
        write_gif(frames, tmp_path / "morph.gif", fps=5, min_size=16)
        write_mp4(frames, tmp_path / "morph.mp4", fps=5, min_size=16)
        write_labels_csv(tmp_path / "labels.csv", [Record("img/a.png", {"disease": "syndrome_a", "age": "child"})], space)
        save_checkpoint(tmp_path / "network-snapshot.ckpt", {"G_ema": tiny_generator(space), "space": space})
    finally:
        os.umask(old)
    for rel in ("img/a.png", "morph.gif", "morph.mp4", "labels.csv", "network-snapshot.ckpt"):
        assert mode_of(tmp_path / rel) == 0o644, rel
