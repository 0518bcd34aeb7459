"""Per-tick training statistics: running means, the ``stats.jsonl`` log and memory figures."""
from __future__ import annotations

import json
import math
import resource
import sys
from collections import defaultdict
from pathlib import Path
from typing import Mapping

import torch

from synth.utils.io import atomic_write_text

__all__ = ["Collector", "append_jsonl", "truncate_jsonl", "peak_memory_mb"]


class Collector:
    """Running sums of scalar statistics; values stay on the device until a tick ends, so
    recording them costs no host-device synchronisation per step."""

    def __init__(self) -> None:
        self._sum: dict[str, torch.Tensor | float] = defaultdict(float)
        self._num: dict[str, int] = defaultdict(int)

    def add(self, name: str, value: torch.Tensor | float) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().float()
            n = value.numel()
            value = value.sum()
        else:
            n = 1
        self._sum[name] = self._sum[name] + value
        self._num[name] += n

    def means(self) -> dict[str, float]:
        return {k: float(self._sum[k]) / max(self._num[k], 1) for k in sorted(self._sum)}

    def reset(self) -> None:
        self._sum.clear()
        self._num.clear()


def _clean(v):
    # JSON has no NaN/Inf; write null so the log stays parseable by every reader.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def append_jsonl(path: str | Path, record: Mapping) -> None:
    """Append one line and flush it: a killed run keeps every finished tick."""
    line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()


def truncate_jsonl(path: str | Path, max_nimg: int) -> None:
    """Drop lines logged after ``max_nimg`` images (ticks past the snapshot a run resumes from)."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if int(rec.get("nimg", 0)) <= max_nimg:
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))


def peak_memory_mb(device: torch.device | str) -> float:
    """Peak CUDA allocation on GPU, else the process's peak resident set size."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
