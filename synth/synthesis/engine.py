"""Turning (seed, label) pairs into images with a conditional generator.

z comes from ``np.random.RandomState(seed).randn(z_dim)`` (the convention of the reference
scripts, so seeds mean the same image across tools).  Truncation pulls w toward the
*per-condition* average w (``G.mapping.mean_w`` of that exact label vector, cached per label):
the reference's single global average drags every class toward the majority class.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from synth.synthesis.errors import SynthesisError

__all__ = ["Renderer", "NOISE_MODES", "to_uint8"]

NOISE_MODES = ("const", "random", "none")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in about [-1, 1] -> uint8 [N, H, W, 3] (NVlabs rounding)."""
    x = (img.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    x = x.permute(0, 2, 3, 1).cpu().numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x


class Renderer:
    """Batched, cached image rendering for one generator."""

    def __init__(
        self,
        G: torch.nn.Module,
        psi: float = 1.0,
        noise_mode: str = "const",
        batch: int = 16,
        device: str | torch.device = "cpu",
        mean_w_samples: int = 2000,
        mean_w_seed: int = 0,
    ):
        if noise_mode not in NOISE_MODES:
            raise SynthesisError(f"--noise-mode {noise_mode!r}: expected one of {', '.join(NOISE_MODES)}")
        if batch < 1:
            raise SynthesisError(f"--batch {batch}: must be >= 1")
        if not np.isfinite(psi) or psi < 0:
            raise SynthesisError(f"--truncation {psi}: must be a finite number >= 0 (1 = no truncation)")
        self.G = G.eval()
        self.device = torch.device(device)
        self.psi = float(psi)
        self.noise_mode = noise_mode
        self.batch = int(batch)
        self.mean_w_samples = int(mean_w_samples)
        self.mean_w_seed = int(mean_w_seed)
        self._mean_w: dict[bytes, torch.Tensor] = {}

    @property
    def num_ws(self) -> int:
        return int(self.G.num_ws)

    def z(self, seeds: Sequence[int]) -> torch.Tensor:
        zs = np.stack([np.random.RandomState(int(s)).randn(self.G.z_dim) for s in seeds])
        return torch.from_numpy(zs).float().to(self.device)

    def _label_key(self, c: np.ndarray) -> bytes:
        return np.round(np.asarray(c, dtype=np.float64), 6).tobytes()

    @torch.no_grad()
    def mean_w(self, c: np.ndarray) -> torch.Tensor:
        """[w_dim] average w of one label vector (cached)."""
        key = self._label_key(c)
        if key not in self._mean_w:
            ct = torch.as_tensor(np.asarray(c, dtype=np.float32)[None], device=self.device)
            w = self.G.mapping.mean_w(ct, num_samples=self.mean_w_samples, seed=self.mean_w_seed)
            self._mean_w[key] = w.reshape(-1, w.shape[-1])[0].detach()
        return self._mean_w[key]

    @torch.no_grad()
    def ws(self, seeds: Sequence[int], labels: np.ndarray) -> torch.Tensor:
        """[N, num_ws, w_dim] for seeds and label vectors, truncated toward each label's mean w."""
        labels = np.asarray(labels, dtype=np.float32).reshape(len(seeds), -1)
        c = torch.from_numpy(labels).to(self.device)
        ws = self.G.mapping(self.z(seeds), c, truncation_psi=1)
        if self.psi != 1.0:
            avg = torch.stack([self.mean_w(lab) for lab in labels])[:, None, :]
            ws = avg + self.psi * (ws - avg)
        return ws

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor, noise_seed: int = 0) -> np.ndarray:
        """uint8 [N, H, W, 3] from ws, in batches."""
        out = []
        for i in range(0, ws.shape[0], self.batch):
            if self.noise_mode == "random":
                torch.manual_seed(noise_seed + i)  # random noise, yet the same run gives the same images
            out.append(to_uint8(self.G.synthesis(ws[i : i + self.batch], noise_mode=self.noise_mode)))
        return np.concatenate(out) if out else np.zeros((0, 1, 1, 3), np.uint8)

    def images(self, seeds: Sequence[int], labels: np.ndarray, noise_seed: int = 0) -> np.ndarray:
        return self.synthesize(self.ws(seeds, labels), noise_seed=noise_seed)

    @torch.no_grad()
    def style_mix(self, ws_a: torch.Tensor, ws_b: torch.Tensor, layers: Sequence[int]) -> torch.Tensor:
        """ws_b with the named layers taken from ws_a (a: structure, b: the rest)."""
        mixed = ws_b.clone()
        idx = torch.as_tensor(list(layers), dtype=torch.long, device=mixed.device)
        mixed[:, idx] = ws_a[:, idx]
        return mixed
