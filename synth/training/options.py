"""Every setting of a training run: :class:`TrainingOptions`, its validation and the errors a run raises.

Saved as ``options.json`` in the run folder and inside each snapshot, so a resumed run and every
tool that reads a snapshot know exactly how it was trained.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from synth.errors import UserError

__all__ = ["TrainingOptions", "TrainingError", "TrainingDiverged"]


class TrainingError(UserError, RuntimeError):
    """A run that cannot start or continue (one-line message)."""


class TrainingDiverged(TrainingError):
    """A loss became NaN/Inf; training stopped and no snapshot with bad weights was written."""


@dataclass
class TrainingOptions:
    """Every setting of a run (saved as ``options.json`` and inside each snapshot)."""

    # data
    data: str | None = None  # dataset folder/zip; None = the built-in face atlas
    cond: list[str] = field(default_factory=lambda: ["disease", "age"])
    unconditional: bool = False  # --cond none: no labels at all (a base model for conditional fine-tuning)
    ties: list[str] = field(default_factory=list)  # e.g. "stage:intermediate=early+late"
    resolution: int = 32
    mirror: bool = False  # x-flip real images at random (doubles the data)
    balance: bool = True  # sample real images so every condition cell has equal mass
    affected_fraction: float | None = None  # with balance: share of affected images per batch (study 1: 0.5)
    fake_labels: str = "data"  # "data": labels drawn like the reals; "cells": uniform over all cells
    # architecture
    preset: str = "cpu"
    z_dim: int = 512
    w_dim: int = 512
    map_layers: int = 2
    channel_base: int = 4096
    channel_max: int = 128
    mbstd_group: int = 4
    cmap_dim: int | None = None
    # label embedding width per factor; None: what conditions.yaml says, else w_dim split over the factors
    embed_dim: list[int] | None = None
    conv_clamp: float | None = None
    num_fp16_res: int = 0
    # optimisation
    batch: int = 16
    lr: float = 0.0025
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8
    gamma: float = 0.5
    ema_kimg: float = 1.0
    ema_rampup: float | None = 0.05
    g_reg_interval: int | None = 4
    d_reg_interval: int | None = 16
    pl_weight: float = 2.0
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing: float = 0.9
    reuse_fakes: bool = False  # D's fake pass reuses the G pass's images (one G forward fewer)
    # augmentation
    aug: str = "ada"  # ada | fixed | none
    aug_kind: str = "faces"
    aug_spec: str = "bgc"
    p: float = 0.0  # initial (ada) or constant (fixed) augment probability
    target: float = 0.6
    ada_interval: int = 4
    ada_kimg: float = 500.0
    # conditioning with little data (each off by default; see synth/training/criteria/)
    aux_weight: float = 0.0  # auxiliary classifier on D's features, one head per factor (AC-GAN)
    aux_mode: str = "ac"  # "ac": levels only; "adc": a real and a fake output per level (ADC-GAN)
    cond_start_kimg: float | None = None  # transitional conditioning: unconditional until here ...
    cond_end_kimg: float | None = None  # ... then the label's weight ramps linearly to 1 by here
    lecam_weight: float = 0.0  # LeCam regulariser on D's outputs
    lecam_decay: float = 0.99  # decay of its EMAs of the mean D outputs
    # speed
    compile: bool = False  # torch.compile the main G and D passes (inductor; CPU and CUDA)
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    time_limit: float | None = None  # minutes of training in one process; then snapshot and stop
    # fidelity while training (needs judges; otherwise nothing is scored)
    judge: list[str] = field(default_factory=list)  # classifier checkpoints or CV folders
    metrics_every: float | None = None  # score G_ema every this many kimg
    judge_per_cell: int = 10  # generated images per condition cell for each score
    # schedule and output
    kimg: float = 200.0
    tick_kimg: float = 1.0
    snap: int = 10  # snapshot every N ticks (and at the end)
    grid_every: int = 1  # image grid every N ticks
    grid_per: str = "row"  # fixed z per grid "row" or per "cell"
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast, CUDA only)
    progress: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = [float(b) for b in self.betas]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainingError(f"unknown training option(s) {', '.join(unknown)}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        return cls(**d)

    def validate(self) -> None:
        # fields whose command-line option has another name
        cli = {"tick_kimg": "tick", "lecam_weight": "lecam"}

        def bad(opt: str, msg: str):
            raise TrainingError(f"--{cli.get(opt, opt).replace('_', '-')}: {msg}")

        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            bad("resolution", f"{self.resolution} must be a power of two >= 4")
        if self.batch < 1:
            bad("batch", f"{self.batch} must be >= 1")
        if self.aug not in ("ada", "fixed", "none"):
            bad("aug", f"{self.aug!r}: choose ada, fixed or none")
        if not 0.0 <= self.p <= 1.0:
            bad("p", f"{self.p} must be in [0, 1]")
        if self.precision not in ("fp32", "bf16", "fp16"):
            bad("precision", f"{self.precision!r}: choose fp32, bf16 or fp16")
        if self.precision != "fp32" and not str(self.device).startswith("cuda"):
            bad("precision", f"{self.precision} autocast needs --device cuda")
        if self.fake_labels not in ("data", "cells"):
            bad("fake_labels", f"{self.fake_labels!r}: choose data or cells")
        if self.grid_per not in ("row", "cell"):
            bad("grid_per", f"{self.grid_per!r}: choose row or cell")
        for name in ("kimg", "tick_kimg"):
            if not getattr(self, name) > 0:
                bad(name, f"{getattr(self, name)} must be > 0")
        if self.snap < 1 or self.grid_every < 1:
            bad("snap", "snapshot and grid intervals must be >= 1 tick")
        if self.affected_fraction is not None and not 0.0 < self.affected_fraction < 1.0:
            bad("affected_fraction", f"{self.affected_fraction} must be between 0 and 1")
        if self.gamma < 0:
            bad("gamma", f"{self.gamma} must be >= 0")
        if self.aux_weight < 0:
            bad("aux_weight", f"{self.aux_weight} must be >= 0")
        if self.aux_mode not in ("ac", "adc"):
            bad("aux_mode", f"{self.aux_mode!r}: choose ac or adc")
        if self.lecam_weight < 0:
            bad("lecam_weight", f"{self.lecam_weight} must be >= 0")
        if not 0.0 <= self.lecam_decay < 1.0:
            bad("lecam_decay", f"{self.lecam_decay} must be in [0, 1)")
        if (self.cond_start_kimg is None) != (self.cond_end_kimg is None):
            bad("cond_ramp", "transitional conditioning needs both a start and an end kimg")
        if self.cond_end_kimg is not None:
            if self.cond_start_kimg < 0 or self.cond_end_kimg <= self.cond_start_kimg:
                bad("cond_ramp", f"{self.cond_start_kimg},{self.cond_end_kimg}: need 0 <= start < end (kimg)")
        if self.metrics_every is not None and not self.metrics_every > 0:
            bad("metrics_every", f"{self.metrics_every} must be > 0 kimg")
        if self.metrics_every is not None and not self.judge:
            bad("metrics_every", "needs at least one --judge classifier")
        if self.judge_per_cell < 1:
            bad("judge_per_cell", f"{self.judge_per_cell} must be >= 1")
        if self.time_limit is not None and not self.time_limit > 0:
            bad("time_limit", f"{self.time_limit} must be > 0 minutes")
        if self.embed_dim is not None and (not self.embed_dim or any(int(d) < 1 for d in self.embed_dim)):
            bad("embed_dim", f"{','.join(str(d) for d in self.embed_dim) or 'empty'}: give one positive width, or one per factor")
        if self.unconditional:
            used = [name for name, on in (("aux_weight", self.aux_weight > 0), ("cond_ramp", self.transitional),
                                          ("judge", bool(self.judge)), ("affected_fraction", self.affected_fraction is not None),
                                          ("tie", bool(self.ties)), ("embed_dim", self.embed_dim is not None)) if on]
            if used:
                bad(used[0], "needs labels; it cannot be used with --cond none (unconditional training)")
        if self.threads is not None and self.threads < 1:
            bad("threads", f"{self.threads} must be >= 1")

    @property
    def transitional(self) -> bool:
        return self.cond_end_kimg is not None

    # Options a resumed run may change; anything else must match the snapshot.
    RESUME_MUTABLE = (
        "kimg", "tick_kimg", "snap", "grid_every", "device", "precision", "progress", "data",
        "compile", "threads", "time_limit", "judge", "metrics_every", "judge_per_cell",
    )
