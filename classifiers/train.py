"""Training one classifier: soft-label weighted CE, warm-up + cosine, early stopping.

The best epoch is chosen by balanced accuracy on the validation images (ties broken by
lower validation loss), as in the published protocol.  On CPU, a fixed seed gives the
same weights, logs and predictions run after run (DataLoader workers default to 0, the
shuffle has its own seeded generator, augmentation draws from the seeded torch RNG).
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from classifiers.checkpoint import save_classifier
from classifiers.data import (
    AugConfig,
    AugmentedDataset,
    ClassifierDataError,
    LabelledImages,
    Target,
    build_augment,
    parse_class_weight,
)
from classifiers.ensemble import normalise, predict_probs
from classifiers.losses import soft_cross_entropy
from classifiers.models import create_model, model_normalisation, resolve_pretrained
from synth.utils.io import atomic_write_text

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train_classifier", "seed_everything", "resolve_device", "basic_scores"]


@dataclass
class TrainConfig:
    """Everything that decides how one classifier is trained (stored in its checkpoint).

    Defaults follow the published face study (EfficientNet-B4, Adam with warm-up and
    cosine, 30 epochs, batch 64, best checkpoint by validation balanced accuracy); a much
    smaller ``size`` and a higher ``lr`` suit random initialisation on CPU.
    """

    model: str = "efficientnet_b4"
    size: int = 448
    pretrained: bool | str = False
    epochs: int = 30
    batch: int = 64
    lr: float = 3e-5
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw
    warmup: float = 1.0  # epochs of linear warm-up before the cosine decay
    min_lr_ratio: float = 0.0
    patience: int = 0  # epochs without improvement before stopping; 0 = never stop early
    class_weight: str | dict | None = None  # "auto", "name=w,...", a dict, or None
    aug: AugConfig = field(default_factory=AugConfig)
    drop_rate: float = 0.0
    in_chans: int = 3
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA only
    channels_last: bool = True
    num_workers: int = 0
    eval_batch: int = 128
    grad_clip: float | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.aug, str):
            self.aug = AugConfig(kind=self.aug)
        elif isinstance(self.aug, dict):
            self.aug = AugConfig(**self.aug)
        checks = [
            (self.size >= 8, f"--size {self.size}: must be >= 8"),
            (self.epochs >= 1, f"--epochs {self.epochs}: must be >= 1"),
            (self.batch >= 1, f"--batch {self.batch}: must be >= 1"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr {self.lr}: must be positive"),
            (self.weight_decay >= 0, f"--weight-decay {self.weight_decay}: must be >= 0"),
            (self.warmup >= 0, f"--warmup {self.warmup}: must be >= 0"),
            (self.patience >= 0, f"--patience {self.patience}: must be >= 0"),
            (self.optimizer in ("adam", "adamw"), f"--optimizer {self.optimizer!r}: choose adam or adamw"),
            (0 <= self.drop_rate < 1, f"--drop-rate {self.drop_rate}: must be in [0, 1)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ClassifierDataError(msg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["aug"] = dataclasses.asdict(self.aug)
        return d


@dataclass
class TrainResult:
    model: torch.nn.Module
    meta: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int
    val_probs: np.ndarray | None  # [N_val, K] of the best model
    checkpoint: Path | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ClassifierDataError(f"--device {device}: CUDA is not available here")
    return dev


def basic_scores(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean recall over classes present in the targets)."""
    y = targets.argmax(1) if targets.ndim == 2 else targets
    pred = probs.argmax(1)
    if len(y) == 0:
        return {"acc": float("nan"), "bal_acc": float("nan")}
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return {"acc": float((pred == y).mean()), "bal_acc": float(np.mean(recalls))}


def lr_factor(step: int, total: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine down to ``min_ratio`` at ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """Model, optimiser, schedule and one training step (used by :func:`train_classifier`
    and by the benchmark, so both measure the same code)."""

    def __init__(self, config: TrainConfig, num_classes: int, class_weight: np.ndarray | None, total_steps: int, warmup_steps: int):
        self.cfg = config
        self.device = resolve_device(config.device)
        self.model = create_model(
            config.model, num_classes, pretrained=config.pretrained, in_chans=config.in_chans, drop_rate=config.drop_rate
        ).to(self.device)
        self.norm = model_normalisation(self.model, config.in_chans)
        self.channels_last = config.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.opt = opt_cls(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(s, total_steps, warmup_steps, config.min_lr_ratio)
        )
        self.class_weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32, device=self.device)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)

    def step(self, x: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> float:
        """One optimisation step on a uint8 batch; returns the loss."""
        self.model.train()
        x = normalise(x.to(self.device, non_blocking=True), self.norm.mean, self.norm.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = targets.to(self.device)
        w = None if weights is None else weights.to(self.device)
        with torch.autocast(self.device.type, enabled=self.use_amp, dtype=self.amp_dtype):
            logits = self.model(x)
        loss = soft_cross_entropy(logits.float(), t, self.class_weight, w)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return float(loss.detach())

    def predict(self, images: torch.Tensor, tta: str = "none") -> np.ndarray:
        return predict_probs(
            self.model, images, self.norm.mean, self.norm.std, self.cfg.eval_batch, self.device, tta, self.channels_last
        )

    def val_loss(self, probs: np.ndarray, data: LabelledImages) -> float:
        logp = torch.from_numpy(np.log(np.clip(probs, 1e-12, 1.0)))
        # log-probs are valid logits for the same softmax, so the training loss applies as is
        cw = None if self.class_weight is None else self.class_weight.cpu()
        return float(soft_cross_entropy(logp, torch.from_numpy(data.targets), cw, torch.from_numpy(data.weights)))


def _write_log(path: Path, history: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(h) + "\n" for h in history))


def train_classifier(
    train: LabelledImages,
    val: LabelledImages | None,
    target: Target,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    class_weight: np.ndarray | None = None,
    meta_extra: dict[str, Any] | None = None,
    desc: str = "train",
    on_epoch: Callable[[dict], None] | None = None,
    epoch_size: int | None = None,
) -> TrainResult:
    """Train one model on ``train``; choose the best epoch on ``val`` (last epoch without it).

    ``epoch_size``: images per epoch, drawn afresh each epoch without replacement (all of
    ``train`` when None), so runs on sets of different sizes can take the same steps.

    ``class_weight`` overrides ``config.class_weight`` (already resolved to [K]).  With
    ``out_dir``, writes ``model.safetensors`` (+ ``.json``) at each new best and
    ``log.jsonl`` after every epoch.
    """
    from tqdm.auto import tqdm

    if len(train) == 0:
        raise ClassifierDataError("no training images")
    k = target.num_classes
    if train.targets.shape[1] != k:
        raise ClassifierDataError(f"training targets have {train.targets.shape[1]} classes, target has {k}")
    # Checked before any work so a missing weights file fails in one line up front.
    resolve_pretrained(config.model, config.pretrained)
    if class_weight is None:
        class_weight = parse_class_weight(config.class_weight, target.class_names, train.targets)

    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    ds = AugmentedDataset(train, build_augment(config.aug, config.size))
    if epoch_size is not None and not 1 <= epoch_size <= len(train):
        raise ClassifierDataError(f"epoch size {epoch_size}: must be between 1 and the {len(train)} training images")
    n_epoch = len(train) if epoch_size is None else int(epoch_size)
    # BatchNorm cannot train on a batch of one: drop the ragged tail when there is one.
    drop_last = n_epoch > config.batch and n_epoch % config.batch == 1
    sampler = None if epoch_size is None else torch.utils.data.RandomSampler(ds, num_samples=n_epoch, generator=gen)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=config.batch, shuffle=sampler is None, sampler=sampler, generator=gen,
        num_workers=config.num_workers, drop_last=drop_last,
    )
    steps_per_epoch = len(loader)
    trainer = Trainer(config, k, class_weight, config.epochs * steps_per_epoch, int(round(config.warmup * steps_per_epoch)))
    out = Path(out_dir) if out_dir is not None else None

    meta: dict[str, Any] = {
        "model": config.model,
        "class_names": list(target.class_names),
        "target": target.to_dict(),
        "size": config.size,
        "in_chans": config.in_chans,
        "normalisation": {"mean": list(trainer.norm.mean), "std": list(trainer.norm.std)},
        "aug": config.aug.kind,
        "config": config.to_dict(),
        "class_weight": None if class_weight is None else [float(x) for x in class_weight],
        "n_train": len(train),
        "epoch_size": n_epoch,
        "n_val": 0 if val is None else len(val),
    }
    meta.update(meta_extra or {})

    history: list[dict] = []
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = -1
    best_probs: np.ndarray | None = None
    stale = 0
    ckpt: Path | None = None
    bar = tqdm(range(config.epochs), desc=desc, unit="ep", disable=not config.progress, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        total, count = 0.0, 0
        for x, t, w in loader:
            total += trainer.step(x, t, w) * x.shape[0]
            count += x.shape[0]
        rec: dict[str, Any] = {
            "epoch": epoch,
            "loss": total / max(count, 1),
            "lr": trainer.opt.param_groups[0]["lr"],
        }
        improved = val is None
        if val is not None and len(val):
            probs = trainer.predict(val.images)
            scores = basic_scores(probs, val.targets)
            rec.update(val_loss=trainer.val_loss(probs, val), val_acc=scores["acc"], val_bal_acc=scores["bal_acc"])
            key = (scores["bal_acc"], -rec["val_loss"])
            improved = best_key is None or key > best_key
            if improved:
                best_key, best_probs = key, probs
        rec["time"] = time.perf_counter() - t0
        history.append(rec)
        if improved:
            best_epoch = epoch
            stale = 0
            meta["best_epoch"] = epoch
            meta["best"] = {k_: v for k_, v in rec.items() if k_.startswith("val_")}
            if out is not None:
                ckpt = save_classifier(out / "model.safetensors", trainer.model, meta)
            best_state = {n: p.detach().clone() for n, p in trainer.model.state_dict().items()}
        else:
            stale += 1
        if out is not None:
            _write_log(out / "log.jsonl", history)
        bar.set_postfix({k_: f"{v:.3f}" for k_, v in rec.items() if k_ in ("loss", "val_bal_acc")})
        if on_epoch is not None:
            on_epoch(rec)
        if config.patience and stale >= config.patience:
            break
    model = trainer.model
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, meta, history, best_epoch, best_probs, ckpt)
