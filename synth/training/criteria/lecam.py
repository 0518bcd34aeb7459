"""The LeCam regulariser for GANs trained on limited data (Tseng et al., CVPR 2021).

D's outputs on reals are pulled towards a running mean of its outputs on fakes and vice versa::

    R = mean(relu(D(x_real) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2)

which bounds how far D can separate the few real images it has seen from the fakes (the
overfitting that makes a small-data D useless to G).  Added to D's loss only.  The two EMAs are
state: they are saved in every snapshot and restored on resume.
"""
from __future__ import annotations

import torch

__all__ = ["LeCam"]


class LeCam:
    def __init__(self, weight: float, decay: float = 0.99, device: torch.device | str = "cpu"):
        self.weight = float(weight)
        self.decay = float(decay)
        # [ema_real, ema_fake, updates]: one tensor, so the snapshot stores one entry.
        self.state = torch.zeros(3, device=device)

    @property
    def ema_real(self) -> torch.Tensor:
        return self.state[0]

    @property
    def ema_fake(self) -> torch.Tensor:
        return self.state[1]

    @torch.no_grad()
    def _update(self, i: int, value: torch.Tensor) -> None:
        # The first value initialises the EMA (no bias towards 0 at the start of training).
        v = value.detach().float().mean()
        self.state[i] = torch.where(self.state[2] == 0, v, self.state[i] * self.decay + v * (1 - self.decay))

    def real_term(self, real_logits: torch.Tensor) -> torch.Tensor:
        """Penalty on D's real outputs above the fake EMA, per sample (weighted); updates ema_real."""
        self._update(0, real_logits)
        return self.weight * torch.relu(real_logits.float() - self.ema_fake).square().flatten()

    def fake_term(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Penalty on D's fake outputs below the real EMA, per sample (weighted); updates ema_fake."""
        self._update(1, fake_logits)
        return self.weight * torch.relu(self.ema_real - fake_logits.float()).square().flatten()

    @torch.no_grad()
    def step(self) -> None:
        """One D update done (both EMAs have their first value once this is > 0)."""
        self.state[2] += 1
