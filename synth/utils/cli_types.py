"""Click parameter types shared by every command, so bad values fail at parse time with one
line naming the option, before anything is loaded or written."""
from __future__ import annotations

import re

import click

__all__ = ["Device", "DEVICE", "DEVICE_OR_AUTO", "SEED"]

# Seeds feed numpy's SeedSequence, which refuses negative values deep inside a run.
SEED = click.IntRange(min=0)


class Device(click.ParamType):
    """``cpu``, ``cuda`` or ``cuda:N`` (and ``auto`` where allowed), checked against this machine."""

    name = "device"

    def __init__(self, allow_auto: bool = False):
        self.allow_auto = allow_auto

    def convert(self, value, param, ctx):
        v = str(value).strip().lower()
        if self.allow_auto and v == "auto":
            return v
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            self.fail(f"{value!r}: choose cpu, cuda or cuda:N{' (or auto)' if self.allow_auto else ''}", param, ctx)
        if v.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                self.fail(f"{value}: CUDA is not available on this machine (use cpu)", param, ctx)
            index = int(v.split(":")[1]) if ":" in v else 0
            if index >= torch.cuda.device_count():
                self.fail(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)", param, ctx)
        return v


DEVICE = Device()
DEVICE_OR_AUTO = Device(allow_auto=True)
