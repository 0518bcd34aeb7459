"""Shared fixtures: tiny labelled datasets written on the fly."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Two xdist workers on two cores: one thread each keeps them from fighting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("SYNTH_CACHE", str(Path(__file__).resolve().parent.parent / ".cache" / "test-cache"))


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


from tests.helpers import grid_rows, write_tiny_dataset  # noqa: E402


@pytest.fixture
def tiny_dataset(tmp_path):
    """4 diseases x 5 ages x 2 images, 16 px, one subject per image pair."""
    from synth.conditions import KNOWN_LEVELS

    rows = grid_rows(KNOWN_LEVELS["disease"], KNOWN_LEVELS["age"], per_cell=2, subjects_per_image=2)
    return write_tiny_dataset(tmp_path / "ds", rows)
