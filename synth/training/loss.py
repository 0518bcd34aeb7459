"""StyleGAN2 losses: non-saturating logistic, lazy R1, path-length and style mixing.

Every discriminator input (reals and fakes) goes through the augment pipe, which is
differentiable, so generator gradients and the R1 penalty flow through the augmentations.
Regularisers run "lazily" every N minibatches with their loss multiplied by N (``gain``),
which keeps their average strength and saves most of their cost.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from synth.training.criteria import AuxClassifierLoss, LeCam, transitional_logistic

__all__ = ["LossOptions", "StyleGAN2Loss", "lazy_correction", "PHASES"]

PHASES = ("Gmain", "Greg", "Gboth", "Dmain", "Dreg", "Dboth")


def lazy_correction(lr: float, betas: tuple[float, float], interval: int | None) -> tuple[float, tuple[float, float]]:
    """Adam hyper-parameters for an optimiser that steps on main + regulariser minibatches.

    With a regulariser every I minibatches the optimiser takes I+1 steps per I images'
    worth of main steps; scaling lr by r = I/(I+1) and the betas to beta**r keeps the
    effective step size and moment half-lives of plain training.
    """
    if not interval or interval <= 1:
        return float(lr), (float(betas[0]), float(betas[1]))
    r = interval / (interval + 1)
    return float(lr * r), (float(betas[0] ** r), float(betas[1] ** r))


@dataclass
class LossOptions:
    r1_gamma: float = 10.0
    style_mixing_prob: float = 0.9
    pl_weight: float = 2.0
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    # D's fake pass reuses the images of the G pass just before it (detached) instead of
    # generating new ones: one G forward fewer per minibatch.  The fakes are one G step old.
    reuse_fakes: bool = False


class StyleGAN2Loss:
    """Accumulates gradients for one phase at a time (the loop owns zero_grad/step)."""

    def __init__(
        self,
        G: torch.nn.Module,
        D: torch.nn.Module,
        augment_pipe: torch.nn.Module | None = None,
        opts: LossOptions | None = None,
        ada=None,
        autocast=None,
        scaler=None,
        aux: AuxClassifierLoss | None = None,
        lecam: LeCam | None = None,
        transitional: bool = False,
    ):
        self.G = G
        self.D = D
        # Optional criteria (synth/training/criteria): each None/False = the plain StyleGAN2 loss.
        self.aux = aux
        self.lecam = lecam
        self.transitional = transitional
        self.cond_t = 1.0  # the transitional label weight; the loop sets it every minibatch
        # torch.compile'd forwards for the main phases (see compile_main); the regularisers
        # differentiate gradients, which compiled graphs cannot, so they keep the eager modules.
        self._synthesis_main = G.synthesis
        self._D_main = D
        self.augment_pipe = augment_pipe
        self.opts = opts or LossOptions()
        self.ada = ada  # AdaController collecting sign(D(real)) or None
        # ``autocast()`` returns the mixed-precision context for main phases; regularisers
        # differentiate gradients and stay in fp32 for stability.
        self.autocast = autocast or contextlib.nullcontext
        self.scaler = scaler
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)
        self._fakes: tuple[torch.Tensor, torch.Tensor] | None = None  # reuse_fakes: the last G pass

    def compile_main(self) -> None:
        """Use torch.compile (inductor) for the G synthesis and D passes of the main phases."""
        self._synthesis_main = torch.compile(self.G.synthesis, dynamic=False)
        self._D_main = torch.compile(self.D, dynamic=False)

    # ---- forward helpers -----------------------------------------------------------------
    def run_G(self, z: torch.Tensor, c: torch.Tensor, update_emas: bool = False, main: bool = True):
        ws = self.G.mapping(z, c, update_emas=update_emas)
        p = self.opts.style_mixing_prob
        if p > 0 and ws.shape[1] > 1:
            # Tensor-valued cutoff (no host sync): layers >= cutoff take w from a fresh z with
            # the SAME label, so mixing never crosses conditions.
            num_ws = ws.shape[1]
            cutoff = torch.randint(1, num_ws, [], device=ws.device)
            cutoff = torch.where(torch.rand([], device=ws.device) < p, cutoff, torch.full_like(cutoff, num_ws))
            ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
            mix = (torch.arange(num_ws, device=ws.device) >= cutoff)[None, :, None]
            ws = torch.where(mix, ws2, ws)
        img = (self._synthesis_main if main else self.G.synthesis)(ws, noise_mode="random")
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor, update_emas: bool = False, main: bool = True) -> dict:
        """D's outputs as a dict: ``logits`` (projection), ``uncond`` and ``aux`` (None when off)."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        D = self._D_main if main else self.D
        if self.aux is None and not self.transitional:
            return {"logits": D(img, c, update_emas=update_emas), "uncond": None, "aux": None}
        return D(img, c, update_emas=update_emas, parts=True)

    def _realness(self, out: dict) -> torch.Tensor:
        # The logit that says "real": the unconditional one under transitional conditioning
        # (R1, ADA and LeCam act on it, as in the published method), else the projection logit.
        return (out["uncond"] if self.transitional else out["logits"]).float()

    def _logistic(self, out: dict, sign: float) -> torch.Tensor:
        """softplus(sign * logit) per sample, or its transitional two-head form."""
        if self.transitional:
            return transitional_logistic(out["uncond"], out["logits"], self.cond_t, sign).flatten()
        return F.softplus(sign * out["logits"].float()).flatten()

    def _backward(self, loss: torch.Tensor, gain: float) -> None:
        # With fp16 every phase is scaled alike so the optimiser step can unscale once.
        loss = loss.mean() * gain
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        loss.backward()

    # ---- phases -------------------------------------------------------------------------
    def accumulate_gradients(
        self,
        phase: str,
        real_img: torch.Tensor,
        real_c: torch.Tensor,
        gen_z: torch.Tensor,
        gen_c: torch.Tensor,
        gain: float,
    ) -> dict[str, torch.Tensor]:
        """Backward the losses of ``phase``; returns detached per-sample statistics.

        The returned ``total`` is the scalar that must be finite (the loop stops on NaN/Inf).
        """
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        o = self.opts
        do_Gmain = phase in ("Gmain", "Gboth")
        do_Dmain = phase in ("Dmain", "Dboth")
        do_Gpl = phase in ("Greg", "Gboth") and o.pl_weight != 0
        do_Dr1 = phase in ("Dreg", "Dboth") and o.r1_gamma != 0
        stats: dict[str, torch.Tensor] = {}
        total = torch.zeros([], device=real_img.device)

        if do_Gmain:
            with self.autocast():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=o.reuse_fakes)
                out = self.run_D(gen_img, gen_c)
            if o.reuse_fakes:
                self._fakes = (gen_img.detach(), gen_c)
            loss_G = self._logistic(out, -1.0)  # -log(sigmoid(D(G(z))))
            stats["loss/G"] = loss_G.detach()
            stats["scores/fake"] = out["logits"].detach().float()
            if self.aux is not None:
                # G is rewarded when D's classifier recognises the labels it was asked for.
                aux_G, acc = self.aux(out["aux"], gen_c, role="G")
                loss_G = loss_G + aux_G
                stats["loss/aux_G"] = aux_G.detach()
                stats.update({f"aux_acc/fake_{f}": a for f, a in acc.items()})
            self._backward(loss_G, gain)
            total = total + loss_G.detach().mean()

        if do_Gpl:
            bs = max(gen_z.shape[0] // o.pl_batch_shrink, 1)
            gen_img, ws = self.run_G(gen_z[:bs], gen_c[:bs], main=False)
            # Random image-space direction, scaled so the expected length does not depend on resolution.
            pl_noise = torch.randn_like(gen_img) / np.sqrt(gen_img.shape[2] * gen_img.shape[3])
            (pl_grads,) = torch.autograd.grad((gen_img * pl_noise).sum(), ws, create_graph=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean().detach(), o.pl_decay)
            self.pl_mean.copy_(pl_mean)
            pl_penalty = (pl_lengths - pl_mean).square()
            self._backward(pl_penalty * o.pl_weight, gain)
            stats["loss/pl_penalty"] = pl_penalty.detach()
            stats["loss/pl_mean"] = pl_mean.detach()
            total = total + pl_penalty.detach().mean()

        if do_Dmain:
            # G is frozen in D phases: no graph through it is needed.
            if o.reuse_fakes and self._fakes is not None:
                (gen_img, gen_c), self._fakes = self._fakes, None
            else:
                with torch.no_grad(), self.autocast():
                    gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            with self.autocast():
                out = self.run_D(gen_img, gen_c, update_emas=True)
            loss_Dgen = self._logistic(out, 1.0)  # -log(1 - sigmoid(D(G(z))))
            stats["loss/D_fake"] = loss_Dgen.detach()
            if self.aux is not None and self.aux.mode == "adc":
                aux_Df, _ = self.aux(out["aux"], gen_c, role="D_fake")  # D learns G's images as "fake y"
                loss_Dgen = loss_Dgen + aux_Df
                stats["loss/aux_D_fake"] = aux_Df.detach()
            if self.lecam is not None:
                lc = self.lecam.fake_term(self._realness(out))
                loss_Dgen = loss_Dgen + lc
                stats["loss/lecam"] = lc.detach()
            self._backward(loss_Dgen, gain)
            total = total + loss_Dgen.detach().mean()

        if do_Dmain or do_Dr1:
            real = real_img.detach().requires_grad_(do_Dr1)
            ctx = self.autocast() if not do_Dr1 else contextlib.nullcontext()
            with ctx:
                out = self.run_D(real, real_c, main=not do_Dr1)
            real_logits = self._realness(out)
            loss = torch.zeros(real_logits.shape[0], device=real_logits.device)
            if do_Dmain:
                loss_Dreal = self._logistic(out, -1.0)
                loss = loss + loss_Dreal
                stats["loss/D_real"] = loss_Dreal.detach()
                stats["scores/real"] = out["logits"].detach().float()
                if self.ada is not None:
                    self.ada.accumulate(real_logits)
                if self.aux is not None:
                    # D's classifier learns the levels from real images only, so it cannot
                    # learn to recognise G's artefacts instead of the condition.
                    aux_D, acc = self.aux(out["aux"], real_c, role="D_real")
                    loss = loss + aux_D
                    stats["loss/aux_D"] = aux_D.detach()
                    stats.update({f"aux_acc/real_{f}": a for f, a in acc.items()})
                if self.lecam is not None:
                    lc = self.lecam.real_term(real_logits)
                    loss = loss + lc
                    stats["loss/lecam"] = torch.cat([stats["loss/lecam"], lc.detach()]) if "loss/lecam" in stats else lc.detach()
                    self.lecam.step()
            if do_Dr1:
                (r1_grads,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss = loss + r1_penalty * (o.r1_gamma / 2)
                stats["loss/r1_penalty"] = r1_penalty.detach()
            self._backward(loss, gain)
            total = total + loss.detach().mean()

        stats["total"] = total
        return stats
