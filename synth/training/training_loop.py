"""The GAN training loop: G, D, G_ema, lazy regularisation, ADA, ticks, grids, snapshots
and a true resume.

Everything a run needs is in :class:`TrainingOptions`; :class:`Trainer` owns the live state.
A snapshot holds the complete state (networks, both optimisers, augment p and its
accumulators, pl_mean, image/tick/minibatch counters and all RNG states), so a resumed run
continues exactly where the snapshot was taken: same kimg count, same p, same optimiser
moments.  Snapshots and the ``latest.json`` pointer are written atomically; a non-finite loss
stops training before anything bad is written.

Why one file (about 800 lines): :class:`Trainer` is one object whose methods all read and
write the same live state (networks, optimisers, augment pipe, image/tick counters, RNG
streams).  :meth:`Trainer.state_dict` and :meth:`Trainer.load_state` must name exactly the
fields that the ``_setup_*`` methods create and :meth:`Trainer.step` and :meth:`Trainer.train`
advance; having them side by side is how a forgotten field (and a resume that is not
exact) gets noticed.  Like NVlabs' training_loop.py, the loop stays in one place; the parts
that stand alone live next to it: options (:mod:`.options`), losses (:mod:`.loss`,
:mod:`.criteria`), augmentation (:mod:`.augment`), grids (:mod:`.grids`), statistics
(:mod:`.stats`) and the judges that score G_ema (:mod:`.monitor`).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synth.conditions import ConditionError, ConditionSpace, parse_tie
from synth.networks.checkpoint import CheckpointError, ModuleEntry, load_checkpoint, load_state_strict, save_checkpoint
from synth.training.criteria import AuxClassifierLoss, LeCam, ramp_weight
from synth.training.grids import grid_latents, grid_layout, render_fakes, render_reals
from synth.training.loss import LossOptions, StyleGAN2Loss, lazy_correction
from synth.training.options import TrainingDiverged, TrainingError, TrainingOptions
from synth.training.stats import Collector, append_jsonl, peak_memory_mb, truncate_jsonl
from synth.utils.io import atomic_save, atomic_write_text

__all__ = [
    "TrainingOptions",
    "Trainer",
    "TrainingError",
    "TrainingDiverged",
    "LATEST",
    "find_snapshot",
    "snapshot_name",
]

LATEST = "latest.json"


def snapshot_name(nimg: int) -> str:
    return f"network-snapshot-{nimg / 1000:09.3f}.ckpt"


def find_snapshot(path: str | Path) -> Path:
    """A snapshot file, or the latest snapshot of a run folder (via ``latest.json``)."""
    path = Path(path)
    if path.is_dir():
        ptr = path / LATEST
        if ptr.is_file():
            try:
                name = json.loads(ptr.read_text())["snapshot"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise CheckpointError(f"{ptr}: corrupt latest-snapshot pointer") from None
            snap = path / name
            if not snap.is_file():
                raise CheckpointError(f"{ptr}: points to missing snapshot {name}")
            return snap
        snaps = sorted(path.glob("network-snapshot-*.ckpt"))
        if not snaps:
            raise CheckpointError(f"{path}: run folder has no snapshot to resume from")
        return snaps[-1]
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


# ------------------------------------------------------------------------------------------


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _selection_rule() -> str:
    from synth.training.monitor import SELECTION_RULE

    return SELECTION_RULE


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class _Phase:
    name: str
    module: torch.nn.Module
    opt: torch.optim.Optimizer
    interval: int


class Trainer:
    """Live training state.  ``Trainer(opts, run_dir).train()`` runs to ``opts.kimg``."""

    def __init__(
        self,
        opts: TrainingOptions,
        run_dir: str | Path | None,
        imageset=None,
        log: Callable[[str], None] | None = None,
    ):
        opts.validate()
        self.opts = opts
        self.rank, self.world = _rank_world()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._log_fn = log
        self.device = torch.device(opts.device)
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.cur_nimg = 0
        self.cur_tick = 0
        self.batch_idx = 0
        self.tick_start_nimg = 0
        _seed_all(opts.seed * self.world + self.rank)
        self.np_rng = np.random.default_rng([opts.seed, self.rank])
        self._setup_ddp()
        self._setup_data(imageset)
        self._setup_networks()
        self._setup_training()
        self.elapsed = 0.0  # training seconds before this process (for the log)
        self.best_judge: float | None = None  # best judge/mean so far (best.ckpt holds that state)
        self._setup_monitor()
        self.collector = Collector()
        self.last_snapshot: Path | None = None

    # ---- setup ----------------------------------------------------------------------------
    def _setup_ddp(self) -> None:
        if self.world <= 1:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
            torch.cuda.set_device(self.device)
        if self.opts.batch % self.world:
            raise TrainingError(f"--batch {self.opts.batch} must be divisible by the {self.world} processes")

    def _setup_data(self, imageset) -> None:
        from synth.data.dataset import ImageSet, Record, open_dataset
        from synth.data.torch_dataset import TorchImageDataset, balanced_weights

        o = self.opts
        if imageset is None:
            if o.data is None:
                from synth.data.atlas import ensure_atlas

                path = ensure_atlas(kind="faces", per_cell=20, resolution=max(64, o.resolution), seed=0)
            else:
                path = o.data
            imageset = open_dataset(path, cond=o.cond or None, unlabelled=o.unconditional)
        elif o.unconditional and imageset.space is not None:
            imageset = ImageSet(imageset._storage, None, [Record(r.file, {}) for r in imageset.records])
        space = imageset.space
        for spec in o.ties:
            space = space.with_ties(parse_tie(spec))
        self.space: ConditionSpace | None = self._embedding(space) if space is not None else None
        if len(imageset) == 0:
            raise TrainingError(f"{o.data or 'atlas'}: dataset has no images")
        self.imageset = imageset
        self.dataset = TorchImageDataset(imageset, resolution=o.resolution, xflip=False, cache=True)
        n = len(imageset)
        # Sampling weights: balanced over condition cells or uniform over images.
        if o.balance:
            try:
                self.sample_p = balanced_weights(imageset, affected_fraction=o.affected_fraction)
            except ValueError as e:
                raise TrainingError(str(e).splitlines()[0]) from None
        elif o.affected_fraction is not None:
            raise TrainingError("--affected-fraction needs --balance")
        else:
            self.sample_p = np.full(n, 1.0 / n)
        self.label_matrix = torch.from_numpy(imageset.label_matrix())
        if space is None:
            self.cell_labels = torch.zeros(1, 0)
        else:
            self.cell_labels = torch.from_numpy(np.stack([space.encode(dict(zip(space.names, c))) for c in space.cells()]))

    def _embedding(self, space: ConditionSpace) -> ConditionSpace:
        """The label embedding widths of this run, recorded in ``opts.embed_dim`` for resumes."""
        o = self.opts
        if o.embed_dim is not None:
            dims = list(o.embed_dim)
            if len(dims) == 1 and len(space.factors) > 1:
                dims = dims * len(space.factors)
            try:
                space = space.with_embed_dims(dims)
            except ConditionError as e:
                raise TrainingError(f"--embed-dim: {e}") from None
        else:
            space = space.resolve_embedding(o.w_dim)
        o.embed_dim = list(space.embed_dims)
        if space.embed_total > 2 * o.z_dim:
            share = space.embed_total / (space.embed_total + o.z_dim)
            self.log(f"warning: the label embedding ({'+'.join(map(str, space.embed_dims))} = {space.embed_total}) is much wider "
                     f"than z ({o.z_dim}): {share:.0%} of the mapping input is the label, which tends to render one face "
                     f"per condition cell; set --embed-dim or embed_dim in conditions.yaml near {o.w_dim // len(space.factors)}")
        return space

    def _network_kwargs(self) -> tuple[dict, dict]:
        o = self.opts
        g = dict(
            z_dim=o.z_dim,
            w_dim=o.w_dim,
            space=self.space,
            img_resolution=o.resolution,
            img_channels=3,
            mapping_kwargs={"num_layers": o.map_layers, **({"transitional": True} if o.transitional else {})},
            synthesis_kwargs={
                "channel_base": o.channel_base,
                "channel_max": o.channel_max,
                "num_fp16_res": o.num_fp16_res,
                "conv_clamp": o.conv_clamp,
            },
        )
        d = dict(
            space=self.space,
            img_resolution=o.resolution,
            img_channels=3,
            channel_base=o.channel_base,
            channel_max=o.channel_max,
            mbstd_group_size=o.mbstd_group,
            num_fp16_res=o.num_fp16_res,
            conv_clamp=o.conv_clamp,
        )
        if o.cmap_dim is not None:
            d["cmap_dim"] = o.cmap_dim
        if o.aux_weight > 0:
            d["aux_heads"] = True if o.aux_mode == "ac" else o.aux_mode
        if o.transitional:
            d["uncond_head"] = True
        return g, d

    def _setup_networks(self) -> None:
        from synth.networks import Discriminator, Generator

        gk, dk = self._network_kwargs()
        try:
            self.G = Generator(**gk).train().requires_grad_(False).to(self.device)
            self.D = Discriminator(**dk).train().requires_grad_(False).to(self.device)
        except (ValueError, TypeError) as e:
            raise TrainingError(f"cannot build networks: {e}".splitlines()[0]) from None
        self.G_ema = copy.deepcopy(self.G).eval()
        if self.world > 1:  # identical start on every rank
            import torch.distributed as dist

            for m in (self.G, self.D, self.G_ema):
                for t in list(m.parameters()) + list(m.buffers()):
                    dist.broadcast(t.data, src=0)

    def _setup_training(self) -> None:
        o = self.opts
        from synth.training.augment import AdaptiveP, for_kind

        self.augment_pipe = None
        self.ada = None
        if o.aug != "none":
            self.augment_pipe = for_kind(o.aug_kind, spec=o.aug_spec, p=o.p).train().requires_grad_(False).to(self.device)
            if o.aug == "ada":
                self.ada = AdaptiveP(self.augment_pipe, target=o.target, interval=o.ada_interval, ada_kimg=o.ada_kimg)
        self.phases: list[_Phase] = []
        for name, module, interval in (("G", self.G, o.g_reg_interval), ("D", self.D, o.d_reg_interval)):
            lr, betas = lazy_correction(o.lr, o.betas, interval)
            opt = torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=o.eps)
            if interval and interval > 1:
                self.phases += [_Phase(name + "main", module, opt, 1), _Phase(name + "reg", module, opt, interval)]
            else:
                self.phases += [_Phase(name + "both", module, opt, 1)]
        self.G_opt = self.phases[0].opt
        self.D_opt = self.phases[-1].opt
        self.scaler = None
        autocast: Callable[[], Any] = contextlib.nullcontext
        if o.precision != "fp32":
            dtype = torch.bfloat16 if o.precision == "bf16" else torch.float16
            autocast = lambda: torch.autocast("cuda", dtype=dtype)  # noqa: E731
            if o.precision == "fp16":
                self.scaler = torch.amp.GradScaler("cuda")
        loss_opts = LossOptions(
            r1_gamma=o.gamma,
            style_mixing_prob=o.style_mixing,
            pl_weight=o.pl_weight,
            pl_batch_shrink=o.pl_batch_shrink,
            pl_decay=o.pl_decay,
            reuse_fakes=o.reuse_fakes,
        )
        self.loss = StyleGAN2Loss(
            self.G, self.D, self.augment_pipe, loss_opts, ada=self.ada, autocast=autocast, scaler=self.scaler,
            aux=AuxClassifierLoss(self.space, o.aux_weight, o.aux_mode) if o.aux_weight > 0 else None,
            lecam=LeCam(o.lecam_weight, o.lecam_decay, device=self.device) if o.lecam_weight > 0 else None,
            transitional=o.transitional,
        )
        if o.compile:
            self.loss.compile_main()
        self._set_cond_weight()

    def cond_weight(self) -> float:
        """The transitional label weight t at the current image count (1 without the ramp)."""
        o = self.opts
        if not o.transitional:
            return 1.0
        return ramp_weight(self.cur_nimg / 1000, o.cond_start_kimg, o.cond_end_kimg)

    def _set_cond_weight(self) -> None:
        t = self.cond_weight()
        self.loss.cond_t = t
        if self.opts.transitional:
            # G_ema too: a snapshot's EMA generator renders with the weight at its image count.
            self.G.mapping.cond_t.fill_(t)
            self.G_ema.mapping.cond_t.fill_(t)

    def _setup_monitor(self) -> None:
        """Judges that score G_ema every ``metrics_every`` kimg (rank 0 only; None without --judge)."""
        o = self.opts
        self.monitor = None
        if self.rank != 0 or not o.judge or not o.metrics_every:
            return
        from synth.quality.errors import QualityError
        from synth.training.monitor import FidelityMonitor

        n = min(len(self.dataset), 500)
        idx = np.random.default_rng(o.seed).choice(len(self.dataset), size=n, replace=False)
        reals = np.stack([self.dataset.raw_image(int(i)).transpose(1, 2, 0) for i in idx])
        cells = [self.imageset.cell_of(int(i)) for i in idx]
        try:
            # 64 px random-backbone features: KID comparable between ticks of this run, cheap on a CPU.
            self.monitor = FidelityMonitor(o.judge, self.space, per_cell=o.judge_per_cell, seed=o.seed,
                                           device=self.device, real_images=reals, real_cells=cells, feature_size=64)
        except QualityError as e:
            raise TrainingError(str(e).splitlines()[0]) from None

    def _score(self) -> dict[str, float]:
        """Judge accuracies, variety and KID of G_ema, as ``metric/...`` stats; keeps best.ckpt by
        the selection score (:data:`synth.training.monitor.SELECTION_RULE`: fidelity and variety)."""
        scores = {f"metric/{k}": round(float(v), 6) for k, v in self.monitor.score(self.G_ema).items()}
        mean = scores.get("metric/select")
        if mean is not None and (self.best_judge is None or mean > self.best_judge):
            self.best_judge = mean
            if self.run_dir is not None:
                # The full training state, so `synth train --resume best.ckpt` can go on from it.
                save_checkpoint(self.run_dir / "best.ckpt", self.state_dict())
            scores["metric/best"] = 1
        return scores

    # ---- logging ----------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if self.rank != 0:
            return
        if getattr(self, "_bar", None) is not None:
            self._bar.write(msg)
        elif self._log_fn is not None:
            self._log_fn(msg)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "log.txt", "a", encoding="utf-8") as f:
                f.write(msg + "\n")

    # ---- sampling ---------------------------------------------------------------------------
    @property
    def batch_gpu(self) -> int:
        return self.opts.batch // self.world

    def _next_reals(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.batch_gpu
        idx = self.np_rng.choice(len(self.imageset), size=n, p=self.sample_p)
        flips = self.np_rng.integers(0, 2, size=n) if self.opts.mirror else np.zeros(n, dtype=np.int64)
        imgs = []
        for i, f in zip(idx, flips):
            arr = self.dataset.raw_image(int(i))
            imgs.append(arr[:, :, ::-1] if f else arr)
        img = torch.from_numpy(np.ascontiguousarray(np.stack(imgs))).to(self.device).float().div_(127.5).sub_(1.0)
        return img, self.label_matrix[idx].to(self.device)

    def _fake_labels(self, n: int) -> torch.Tensor:
        if self.opts.fake_labels == "cells":
            idx = self.np_rng.integers(0, len(self.cell_labels), size=n)
            return self.cell_labels[idx].to(self.device)
        # Same distribution as the real batches: the projection D compares like with like.
        idx = self.np_rng.choice(len(self.imageset), size=n, p=self.sample_p)
        return self.label_matrix[idx].to(self.device)

    # ---- one minibatch --------------------------------------------------------------------------
    def step(self) -> None:
        o = self.opts
        real_img, real_c = self._next_reals()
        for ph in self.phases:
            if self.batch_idx % ph.interval != 0:
                continue
            gen_z = torch.randn([self.batch_gpu, o.z_dim], device=self.device)
            gen_c = self._fake_labels(self.batch_gpu)
            ph.opt.zero_grad(set_to_none=True)
            ph.module.requires_grad_(True)
            try:
                stats = self.loss.accumulate_gradients(ph.name, real_img, real_c, gen_z, gen_c, gain=ph.interval)
            finally:
                ph.module.requires_grad_(False)
            total = stats.pop("total")
            if not bool(torch.isfinite(total)):
                raise TrainingDiverged(
                    f"non-finite {ph.name} loss ({float(total)}) at kimg {self.cur_nimg / 1000:.3f} (tick {self.cur_tick}); "
                    f"training stopped, last good snapshot: {self.last_snapshot or 'none'}"
                )
            for k, v in stats.items():
                self.collector.add(k, v)
            params = [p for p in ph.module.parameters() if p.grad is not None]
            if self.world > 1:
                self._allreduce_grads(params)
            if self.scaler is not None:
                self.scaler.step(ph.opt)
                self.scaler.update()
            else:
                ph.opt.step()
        self._update_ema()
        self.cur_nimg += o.batch
        self.batch_idx += 1
        self._set_cond_weight()
        if self.ada is not None:
            if self.world > 1 and self.ada.batches + 1 >= self.ada.interval:
                import torch.distributed as dist

                for b in (self.ada.sign_sum, self.ada.sign_count):
                    dist.all_reduce(b)
            self.ada.step(o.batch)  # global batch: the sign sums above are global too

    def _allreduce_grads(self, params: list[torch.Tensor]) -> None:
        import torch.distributed as dist

        if not params:
            return
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))

    @torch.no_grad()
    def _update_ema(self) -> None:
        o = self.opts
        ema_nimg = o.ema_kimg * 1000
        if o.ema_rampup:
            ema_nimg = min(ema_nimg, self.cur_nimg * o.ema_rampup)
        beta = 0.5 ** (o.batch / max(ema_nimg, 1e-8))
        ema_p = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema_p, list(self.G.parameters()), 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)  # buffers (w_avg, noise) are copied, not averaged

    # ---- state ----------------------------------------------------------------------------------
    def augment_p(self) -> float:
        return float(self.augment_pipe.p) if self.augment_pipe is not None else 0.0

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state` needs to continue bit-for-bit on the same device."""
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "G": self.G,
            "D": self.D,
            "G_ema": self.G_ema,
            "G_opt": self.G_opt.state_dict(),
            "D_opt": self.D_opt.state_dict(),
            "pl_mean": self.loss.pl_mean,
            "rng_torch": torch.get_rng_state(),
            "rng_numpy_keys": np_state[1],
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "rng_python": _py_rng_to_json(random.getstate()),
            "rng_loop": self.np_rng.bit_generator.state,
            "space": self.space,
            "options": self.opts.to_dict(),
            "progress": {
                "cur_nimg": self.cur_nimg,
                "cur_tick": self.cur_tick,
                "batch_idx": self.batch_idx,
                "tick_start_nimg": self.tick_start_nimg,
                "elapsed": self.elapsed + (time.time() - self._t_start if hasattr(self, "_t_start") else 0.0),
                "best_judge": self.best_judge,
            },
            "kimg": self.cur_nimg / 1000,
            "augment_p": self.augment_p(),
            "selection_rule": _selection_rule() if self.monitor is not None else None,
            # Training images per condition cell: `synth generate` applies the study's count
            # rule from these when the training data is not at hand.
            "cell_counts": [
                {"labels": dict(zip(self.space.names if self.space is not None else (), cell)), "count": int(n)}
                for cell, n in self.imageset.cell_counts().items()
            ],
        }
        if self.loss.lecam is not None:
            state["lecam_state"] = self.loss.lecam.state.clone()
        if self.opts.transitional:
            state["cond_t"] = self.cond_weight()
        if self.augment_pipe is not None:
            state["augment_pipe"] = {"config": self.augment_pipe.config()}
        if self.ada is not None:
            state["ada_buffers"] = torch.stack([self.ada.sign_sum, self.ada.sign_count, self.ada.images, self.ada.last_rt])
            state["ada_batches"] = int(self.ada.batches)
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if self.scaler is not None:
            state["scaler"] = {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in self.scaler.state_dict().items()}
        return state

    def load_state(self, ck: dict[str, Any], where: str) -> None:
        """Restore a snapshot written by :meth:`state_dict` (configs must match this run)."""
        space = ck.get("space")
        if space is not None and space != self.space:
            raise CheckpointError(f"{where}: condition space {space!r} does not match this run's {self.space!r}")
        for name, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            entry = ck.get(name)
            if not isinstance(entry, ModuleEntry):
                raise CheckpointError(f"{where}: no {name} network in snapshot")
            own = module.config() if hasattr(module, "config") else {}
            if own and entry.config != _jsonable(own):
                diff = sorted(k for k in set(own) | set(entry.config) if _jsonable(own.get(k)) != entry.config.get(k))
                raise CheckpointError(f"{where}: {name} config differs from this run ({', '.join(diff)})")
            load_state_strict(module, {k: v.to(self.device) for k, v in entry.state_dict.items()}, where, name)
        for name, opt in (("G_opt", self.G_opt), ("D_opt", self.D_opt)):
            if name not in ck:
                raise CheckpointError(f"{where}: no {name} optimiser state (not a training snapshot?)")
            try:
                opt.load_state_dict(ck[name])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{where}: {name} state does not fit ({e})".splitlines()[0]) from None
        self.loss.pl_mean.copy_(ck["pl_mean"].to(self.device))
        if self.loss.lecam is not None:
            if "lecam_state" not in ck:
                raise CheckpointError(f"{where}: no LeCam state in snapshot (was it trained with --lecam?)")
            self.loss.lecam.state.copy_(ck["lecam_state"].to(self.device))
        if self.augment_pipe is not None:
            self.augment_pipe.set_p(float(ck.get("augment_p", self.opts.p)))
        if self.ada is not None and "ada_buffers" in ck:
            b = ck["ada_buffers"].to(self.device)
            for t, v in zip((self.ada.sign_sum, self.ada.sign_count, self.ada.images, self.ada.last_rt), b):
                t.copy_(v)
            self.ada.batches = int(ck["ada_batches"])
        prog = ck["progress"]
        self.cur_nimg = int(prog["cur_nimg"])
        self.cur_tick = int(prog["cur_tick"])
        self.batch_idx = int(prog["batch_idx"])
        self.tick_start_nimg = int(prog["tick_start_nimg"])
        self.elapsed = float(prog.get("elapsed", 0.0))
        self.best_judge = prog.get("best_judge")
        self._set_cond_weight()
        if self.scaler is not None and isinstance(ck.get("scaler"), dict):
            self.scaler.load_state_dict(ck["scaler"])
        # RNG streams: exact continuation on the same device.  Other ranks of a multi-process
        # run get fresh streams derived from the image count (their states are not stored).
        if self.rank == 0:
            torch.set_rng_state(ck["rng_torch"].cpu())
            if self.device.type == "cuda" and "rng_cuda" in ck:
                torch.cuda.set_rng_state(ck["rng_cuda"].cpu(), self.device)
            name, pos, has_gauss, cached = ck["rng_numpy"]
            np.random.set_state((name, ck["rng_numpy_keys"].astype(np.uint32), pos, has_gauss, cached))
            random.setstate(_py_rng_from_json(ck["rng_python"]))
            self.np_rng.bit_generator.state = ck["rng_loop"]
        else:
            _seed_all(hash((self.opts.seed, self.rank, self.cur_nimg)) % 2**31)
            self.np_rng = np.random.default_rng([self.opts.seed, self.rank, self.cur_nimg])

    def resume(self, path: str | Path, ck: dict[str, Any] | None = None) -> Path:
        """Continue from a snapshot or run folder; ``ck`` skips re-reading an already loaded one."""
        snap = find_snapshot(path)
        if ck is None:
            ck = load_checkpoint(snap, map_location="cpu")
        self.load_state(ck, str(snap))
        self.last_snapshot = snap
        return snap

    def import_official(self, path: str | Path, partial: bool = False) -> str:
        """Initialise G, D and G_ema from an official pickle (safe importer, reports surgery).

        Refuses (TrainingError) when synthesis weights of the pickle do not fit this run's G and
        would keep their random init, unless ``partial``: training on would not be fine-tuning."""
        from synth.networks.legacy import import_official

        try:
            report = import_official(path, self.G, self.D, G_ema=self.G_ema, report=False)
        except ValueError as e:  # LegacyImportError: unreadable or unsafe pickle, wrong networks
            raise TrainingError(str(e).splitlines()[0]) from None
        g = report["G"]
        lost = [name for name, _ in g.fresh if name.startswith("synthesis.")]
        if lost and not partial:
            raise TrainingError(f"--resume {path}: {len(lost)} of {len(lost) + sum(n.startswith('synthesis.') for n in g.loaded)} "
                                f"synthesis tensors do not fit this run's generator (e.g. {lost[0]}) and would stay random; "
                                f"drop the architecture options that differ from the pickle, or pass --partial-transfer")
        return report.summary()

    def import_snapshot(self, path: str | Path, ck: dict[str, Any]) -> str:
        """Initialise G, D and G_ema from another run's snapshot (e.g. an unconditional base):
        every tensor whose name and shape match is copied, the label embedding and fc0's new
        label columns start fresh (fc0's z columns kept), D's projection head starts fresh;
        returns the surgery report."""
        from synth.networks.legacy import transfer_weights

        nets = {}
        for name in ("G", "D", "G_ema"):
            entry = ck.get(name)
            if isinstance(entry, ModuleEntry):
                nets[name] = {"state_dict": entry.state_dict}
        if "G" not in nets and "G_ema" not in nets:
            raise TrainingError(f"--resume {path}: no generator in the snapshot")
        try:
            report = transfer_weights(nets, str(path), self.G, self.D if "D" in nets else None, G_ema=self.G_ema,
                                      report=False, seed=self.opts.seed)
        except ValueError as e:
            raise TrainingError(str(e).splitlines()[0]) from None
        return report.summary()

    # ---- snapshots & grids ------------------------------------------------------------------------
    def _params_finite(self) -> bool:
        for m in (self.G, self.D, self.G_ema):
            for p in m.parameters():
                if not bool(torch.isfinite(p).all()):
                    return False
        return True

    def save_snapshot(self) -> Path | None:
        if self.rank != 0 or self.run_dir is None:
            return None
        if not self._params_finite():
            raise TrainingDiverged(
                f"non-finite weights at kimg {self.cur_nimg / 1000:.3f}; snapshot not written, "
                f"last good snapshot: {self.last_snapshot or 'none'}"
            )
        path = self.run_dir / snapshot_name(self.cur_nimg)
        save_checkpoint(path, self.state_dict())
        pointer = {"snapshot": path.name, "kimg": self.cur_nimg / 1000, "tick": self.cur_tick}
        atomic_write_text(self.run_dir / LATEST, json.dumps(pointer, indent=2))
        self.last_snapshot = path
        return path

    def _grid_setup(self) -> None:
        self.layout = grid_layout(self.space)
        self.grid_z = grid_latents(self.layout, self.opts.z_dim, seed=self.opts.seed, per=self.opts.grid_per)

    def save_grid(self, name: str) -> Path | None:
        if self.rank != 0 or self.run_dir is None:
            return None
        img = render_fakes(self.G_ema, self.layout, self.grid_z, self.device)
        path = self.run_dir / name
        atomic_save(path, lambda tmp: img.save(tmp, format="PNG"))
        return path

    def _tensorboard(self):
        """A SummaryWriter when TensorBoard is installed (optional dependency), else None."""
        if self.rank != 0 or self.run_dir is None:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir))

    # ---- the loop ----------------------------------------------------------------------------------
    def train(self, max_ticks: int | None = None) -> dict[str, Any]:
        """Train until ``opts.kimg`` (or ``max_ticks`` more ticks); returns the last tick's stats."""
        o = self.opts
        total_nimg = int(round(o.kimg * 1000))
        tick_nimg = max(int(round(o.tick_kimg * 1000)), 1)
        self._grid_setup()
        if self.rank == 0 and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            truncate_jsonl(self.run_dir / "stats.jsonl", self.cur_nimg)
            if self.cur_nimg == 0:
                reals = render_reals(self.dataset, self.layout, seed=o.seed)
                atomic_save(self.run_dir / "reals.png", lambda tmp: reals.save(tmp, format="PNG"))
                self.save_grid("fakes-init.png")
        bar = None
        if self.rank == 0 and o.progress:
            from tqdm.auto import tqdm

            # Counts images; unit_scale shows them as kimg.
            bar = tqdm(total=total_nimg, initial=self.cur_nimg, unit="kimg", unit_scale=0.001, dynamic_ncols=True, desc="train")
        self._bar = bar
        tb = self._tensorboard()
        self._t_start = time.time()
        tick_t0 = time.time()
        ticks_done = 0
        last: dict[str, Any] = {}
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            while self.cur_nimg < total_nimg:
                self.step()
                if bar is not None:
                    bar.update(o.batch)
                done = self.cur_nimg >= total_nimg
                if not done and self.cur_nimg < self.tick_start_nimg + tick_nimg:
                    continue
                # ---- end of tick ----
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                tick_time = time.time() - tick_t0
                self.cur_tick += 1
                maint_t0 = time.time()
                tick_imgs = self.cur_nimg - self.tick_start_nimg
                means = self.collector.means()
                self.collector.reset()
                last = {
                    "tick": self.cur_tick,
                    "kimg": round(self.cur_nimg / 1000, 3),
                    "nimg": self.cur_nimg,
                    "sec_per_tick": round(tick_time, 3),
                    "sec_per_kimg": round(tick_time / max(tick_imgs / 1000, 1e-9), 3),
                    "augment_p": round(self.augment_p(), 6),
                    **({"cond_t": round(self.cond_weight(), 6)} if o.transitional else {}),
                    "ada_rt": float(self.ada.last_rt) if self.ada is not None else None,
                    **{k: round(v, 6) for k, v in means.items()},
                    "peak_mem_mb": round(peak_memory_mb(self.device), 1),
                }
                if self.monitor is not None:
                    every = max(int(round(o.metrics_every * 1000)), 1)
                    if done or self.cur_nimg // every > (self.cur_nimg - tick_imgs) // every:
                        last.update(self._score())
                self.tick_start_nimg = self.cur_nimg
                out_of_time = o.time_limit is not None and time.time() - self._t_start >= o.time_limit * 60
                if self.rank == 0:
                    if self.run_dir is not None and (self.cur_tick % o.grid_every == 0 or done):
                        self.save_grid(f"fakes-{self.cur_nimg / 1000:09.3f}.png")
                    stopping = (max_ticks is not None and ticks_done + 1 >= max_ticks) or out_of_time
                    if self.run_dir is not None and (self.cur_tick % o.snap == 0 or done or stopping):
                        self.save_snapshot()
                    last["maintenance_sec"] = round(time.time() - maint_t0, 3)
                    if self.run_dir is not None:
                        append_jsonl(self.run_dir / "stats.jsonl", last)
                    if tb is not None:
                        for k, v in last.items():
                            if isinstance(v, (int, float)) and k not in ("tick", "nimg", "kimg"):
                                tb.add_scalar(k, v, global_step=self.cur_nimg // 1000)
                        tb.flush()
                    d_loss = means.get("loss/D_real", float("nan")) + means.get("loss/D_fake", float("nan"))
                    g_loss = means.get("loss/G", float("nan"))
                    extra = "".join(
                        f" {k.split('/')[-1] if k.startswith('metric/judge') else k.split('/', 1)[-1]} {v:.3g}"
                        for k, v in last.items() if k.startswith("metric/") and k != "metric/best"
                    )
                    aux = "".join(f" {k[8:]} {v:.2f}" for k, v in last.items() if k.startswith("aux_acc/"))
                    regs = "".join(f" {n} {means[k]:.4f}" for n, k in (("r1", "loss/r1_penalty"), ("pl_mean", "loss/pl_mean"))
                                   if k in means)  # a tick without a regulariser step shows none
                    self.log(
                        f"tick {self.cur_tick:<4d} kimg {last['kimg']:<9.3f} sec/kimg {last['sec_per_kimg']:<8.2f} "
                        f"p {last['augment_p']:.3f} G {g_loss:.3f} D {d_loss:.3f}{regs}{aux}{extra}"
                        + (f" t {last['cond_t']:.2f}" if "cond_t" in last else "")
                        + (" (best)" if last.get("metric/best") else "")
                    )
                    if bar is not None:
                        bar.set_postfix_str(f"s/kimg={last['sec_per_kimg']:.1f} p={last['augment_p']:.3f} G={g_loss:.2f} D={d_loss:.2f}")
                ticks_done += 1
                tick_t0 = time.time()
                if max_ticks is not None and ticks_done >= max_ticks:
                    break
                if out_of_time and not done:
                    self.log(f"time limit of {o.time_limit:g} min reached at kimg {self.cur_nimg / 1000:.3f}; "
                             f"continue with --resume {self.run_dir}")
                    break
        finally:
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()
            self._bar = None
        return last


# ------------------------------------------------------------------------------------------


def _jsonable(v):
    return json.loads(json.dumps(v, default=_json_default))


def _json_default(v):
    if isinstance(v, ConditionSpace):
        return v.to_dict()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def _py_rng_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_rng_from_json(d) -> tuple:
    version, internal, gauss = d
    return (int(version), tuple(int(x) for x in internal), gauss)
