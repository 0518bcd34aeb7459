"""Conditional StyleGAN2 generator and discriminator with a factored condition embedding.

Parameter names and shapes follow the official StyleGAN2-ADA checkpoints wherever the
architecture is the same (``mapping.fc{i}``, ``mapping.w_avg``, ``synthesis.b{r}.conv0`` ...,
D ``b{r}.fromrgb/conv0/conv1/skip``, ``b4.conv/fc/out``), so official weights import by name.

The one deliberate difference is the label embedding.  Instead of one linear layer from the
whole label vector, there is one linear layer per factor of the :class:`ConditionSpace`::

    mapping.embed.<factor>.weight   [embed_dim_f, levels_f]   (stored raw, equalized lr, lr_mul 1)
    mapping.embed.<factor>.bias     [embed_dim_f]

Their outputs are concatenated (width ``space.embed_total``) and second-moment normalised as a
whole, then concatenated after the normalised z.  A tied level (e.g. NF1 ``intermediate`` =
mean of ``early`` and ``late``) is handled by multiplying the factor's label block by the
factor's tie matrix before the embedding, so the tied level's embedding is exactly the mean of
its sources' and its own weight column never receives a gradient (it is initialised to 0).
Soft label vectors simply mix the embeddings.  The discriminator's projection mapping uses
the same scheme with its own weights (``D.mapping.embed.<factor>``).

Why one file (about 830 lines): like NVlabs' networks.py, every layer is a few readable
lines, and G and D are read together: D's projection mapping is G's :class:`MappingNetwork`
(with its :class:`FactoredEmbedding`), and both keep the official parameter names the
importer relies on.  What is not architecture lives elsewhere: the low-level ops
(equalized-lr layers, bias_act, FIR filtering, modulated convolution) in :mod:`.layers`,
checkpoint files in :mod:`.checkpoint`, the official-pickle importer in :mod:`.legacy`.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from synth.conditions import ConditionError, ConditionSpace

from .layers import (
    SQRT2,
    Conv2dLayer,
    FullyConnectedLayer,
    bias_act,
    conv2d_resample,
    fir_kernel,
    modulated_conv2d,
    normalize_2nd_moment,
    setup_filter,
    upsample2d,
)

__all__ = [
    "FactoredEmbedding",
    "MappingNetwork",
    "SynthesisLayer",
    "ToRGBLayer",
    "SynthesisBlock",
    "SynthesisNetwork",
    "Generator",
    "DiscriminatorBlock",
    "MinibatchStdLayer",
    "DiscriminatorEpilogue",
    "Discriminator",
    "from_init_kwargs",
]

NOISE_MODES = ("random", "const", "none")


def _as_space(space: ConditionSpace | Mapping | None) -> ConditionSpace | None:
    if space is None:
        return space
    if isinstance(space, ConditionSpace):
        return space.frozen()  # a network's widths are fixed, whatever the schema left open
    if isinstance(space, Mapping):
        return ConditionSpace.from_dict(space)
    raise TypeError(f"space must be a ConditionSpace, its to_dict() or None, got {type(space).__name__}")


def _log2_resolution(img_resolution: int) -> int:
    r = int(img_resolution)
    if r < 4 or r & (r - 1):
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return int(math.log2(r))


def _check_c(c: torch.Tensor | None, c_dim: int, n: int, where: str) -> None:
    if c_dim == 0:
        return
    if c is None:
        raise ValueError(f"{where}: this network is conditional (c_dim={c_dim}) but no label c was given")
    if c.ndim != 2 or c.shape[1] != c_dim or c.shape[0] != n:
        raise ValueError(f"{where}: label c has shape {tuple(c.shape)}, expected ({n}, {c_dim})")


# ----------------------------------------------------------------------------------------
# Mapping


class FactoredEmbedding(nn.Module):
    """One equalized-lr linear embedding per factor; children are named after the factors."""

    def __init__(self, space: ConditionSpace):
        super().__init__()
        self.space = space
        self._blocks: list[tuple[str, slice]] = []
        self._ties: list[torch.Tensor | None] = []
        for f, sl in space.blocks():
            if "." in f.name:
                raise ConditionError(f"factor name {f.name!r} cannot contain '.' (it names a network module)")
            fc = FullyConnectedLayer(f.size, f.embed_dim, lr_multiplier=1.0)
            tie = None
            if f.ties:
                tie = torch.from_numpy(f.tie_matrix())
                with torch.no_grad():
                    for lv in f.ties:  # never used, never learned: keep it visibly empty
                        fc.weight[:, f.index(lv)] = 0.0
            self.add_module(f.name, fc)
            self._blocks.append((f.name, sl))
            # tiny constant matrices; kept out of the state dict because the space defines them
            self._ties.append(tie)

    @property
    def out_features(self) -> int:
        return self.space.embed_total

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        outs = []
        for (name, sl), tie in zip(self._blocks, self._ties):
            block = c[:, sl]
            if tie is not None:
                block = block @ tie.to(device=c.device, dtype=c.dtype)
            outs.append(getattr(self, name)(block))
        return torch.cat(outs, dim=1)

    def level_embeddings(self, factor: str) -> torch.Tensor:
        """Effective (run-time) embedding of every level of ``factor``: [levels, embed_dim]."""
        f = self.space.factor(factor)
        eye = torch.eye(f.size, device=getattr(self, factor).weight.device)
        c = torch.zeros(f.size, self.space.c_dim, device=eye.device)
        c[:, self.space.block(factor)] = eye
        i = [n for n, _ in self._blocks].index(factor)
        lo = sum(self.space.factors[j].embed_dim for j in range(i))
        return self.forward(c)[:, lo : lo + f.embed_dim]


class MappingNetwork(nn.Module):
    """z (+ factored label embedding) -> w, broadcast to ``num_ws`` copies."""

    def __init__(
        self,
        z_dim: int,
        space: ConditionSpace | Mapping | None,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
        layer_features: int | None = None,
        transitional: bool = False,
    ):
        super().__init__()
        self.space = _as_space(space)
        self.z_dim = z_dim
        self.c_dim = self.space.c_dim if self.space is not None else 0
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if z_dim == 0 and self.c_dim == 0:
            raise ValueError("mapping network needs z_dim > 0 or a condition space")
        if self.c_dim > 0:
            self.embed = FactoredEmbedding(self.space)
        embed_features = self.space.embed_total if self.c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            self.add_module(
                f"fc{i}",
                FullyConnectedLayer(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier),
            )
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))
        if transitional and self.c_dim > 0:
            # Transitional conditioning: the label embedding is scaled by this weight, which
            # the training loop ramps from 0 (unconditional) to 1.  A buffer, so snapshots and
            # the EMA generator carry the ramp position.
            self.register_buffer("cond_t", torch.zeros([]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        w_avg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Returns ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

        ``update_emas`` updates the ``w_avg`` buffer (the training loop passes True for G's
        main pass).  Truncation pulls toward ``w_avg`` (an explicit [w_dim] or [N, w_dim]
        tensor, e.g. a per-condition average from :meth:`mean_w`) or the tracked buffer.
        """
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"mapping: z must have shape (N, {self.z_dim}), got {None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            n = z.shape[0] if self.z_dim > 0 else (c.shape[0] if c is not None else 0)
            _check_c(c, self.c_dim, n, "mapping")
            e = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            if hasattr(self, "cond_t"):
                e = e * self.cond_t
            parts.append(e)
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)

        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            avg = w_avg if w_avg is not None else getattr(self, "w_avg", None)
            if avg is None:
                raise ValueError("truncation needs a w_avg (this mapping network does not track one)")
            avg = avg.to(device=x.device, dtype=x.dtype)
            if avg.ndim == 2 and x.ndim == 3:
                avg = avg.unsqueeze(1)
            if self.num_ws is None or truncation_cutoff is None:
                x = avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    @torch.no_grad()
    def mean_w(
        self, c: torch.Tensor | None = None, num_samples: int = 10000, seed: int = 0, batch_size: int = 2000
    ) -> torch.Tensor:
        """Average w [w_dim] over ``num_samples`` z for one label vector c [c_dim].

        Truncating toward this per-condition average keeps the condition's identity, unlike
        the single global ``w_avg`` the reference uses for every class.
        """
        total = torch.zeros([self.w_dim], dtype=torch.float64, device=next(self.parameters()).device)
        for w in self.sample_ws(c, num_samples, seed, batch_size):
            total += w.double().sum(dim=0)
        return (total / num_samples).float()

    @torch.no_grad()
    def sample_ws(self, c: torch.Tensor | None = None, num_samples: int = 10000, seed: int = 0, batch_size: int = 2000):
        """Batches of w [n, w_dim] for ``num_samples`` seeded z at one label vector c (the
        samples :meth:`mean_w` averages; the same seed gives the same z)."""
        dev = next(self.parameters()).device
        gen = torch.Generator().manual_seed(int(seed))
        if self.c_dim > 0:
            if c is None:
                raise ValueError("mean_w: this mapping network is conditional, give a label vector c")
            c = torch.as_tensor(c, dtype=torch.float32, device=dev).reshape(1, -1)
            _check_c(c, self.c_dim, 1, "mean_w")
        done = 0
        while done < num_samples:
            n = min(batch_size, num_samples - done)
            z = torch.randn([n, self.z_dim], generator=gen).to(dev)
            cc = c.expand(n, -1) if c is not None else None
            w = self.forward(z, cc, update_emas=False)
            yield w[:, 0] if w.ndim == 3 else w
            done += n

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# ----------------------------------------------------------------------------------------
# Synthesis


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (+2x upsampling), noise, bias, lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.register_buffer("fir", fir_kernel(out_channels, up * up) if up > 1 else None, persistent=False)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        # inference-only caches of weight-derived tensors, keyed on the weight's version counter
        self._wsq_cache: tuple | None = None
        self._wcl_cache: tuple | None = None

    def _weight_sq(self, scale: float) -> torch.Tensor:
        """(sum_k W^2)^T * scale, [Ci, Co]; cached between calls when no graph is recorded."""
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return w.square().sum(dim=[2, 3]).t() * scale
        key = (w._version, w.data_ptr(), w.device, scale)
        if self._wsq_cache is None or self._wsq_cache[0] != key:
            self._wsq_cache = (key, (w.detach().square().sum(dim=[2, 3]).t() * scale).contiguous())
        return self._wsq_cache[1]

    def _conv_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The conv weight in x's memory format; the converted copy is cached when no graph is recorded."""
        w = self.weight
        if not x.is_contiguous(memory_format=torch.channels_last) or (torch.is_grad_enabled() and w.requires_grad):
            return w
        key = (w._version, w.data_ptr(), w.device)
        if self._wcl_cache is None or self._wcl_cache[0] != key:
            self._wcl_cache = (key, w.detach().contiguous(memory_format=torch.channels_last))
        return self._wcl_cache[1]

    def forward(self, x, w, noise_mode: str = "random", fused_modconv: bool = True, gain: float = 1.0):
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        act_gain = SQRT2 * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if fused_modconv or x.dtype != torch.float32:
            x = modulated_conv2d(
                x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                resample_filter=self.resample_filter, fused=fused_modconv,
            )
            return bias_act(x, self.bias, act="lrelu", gain=act_gain, clamp=clamp, inplace=True)
        # Unfused float32 path with the epilogue folded (g = act gain > 0):
        #   lrelu((conv(x*s)*d + noise + b) * g) = lrelu(addcmul((b + noise)*g, conv(x*s), d*g))
        # and d*g = rsqrt(s^2 @ (sum_k W^2)^T / g^2 + eps / g^2).
        N, Co = x.shape[0], self.out_channels
        x = x * styles.reshape(N, -1, 1, 1)
        x = conv2d_resample(x, self._conv_weight(x), self.resample_filter, up=self.up, padding=self.padding, fir=self.fir)
        inv_g2 = 1.0 / (act_gain * act_gain)
        dg = torch.mm(styles.square(), self._weight_sq(inv_g2)).add_(1e-8 * inv_g2).rsqrt_()
        add = (self.bias * act_gain).reshape(1, Co, 1, 1)
        if noise is not None and noise.ndim == 2:  # const noise [R, R]: fold it into the added term
            R = noise.shape[0]
            if x.is_contiguous(memory_format=torch.channels_last):
                # build it as [1, R, R, Co] and view it as channels_last, so the output keeps x's layout
                add = torch.add((noise * act_gain).reshape(1, R, R, 1), (self.bias * act_gain).reshape(1, 1, 1, Co))
                add = add.permute(0, 3, 1, 2)
            else:
                add = add + (noise * act_gain).reshape(1, 1, R, R)
            noise = None
        x = torch.addcmul(add, x, dg.reshape(N, Co, 1, 1))
        if noise is not None:  # per-sample noise [N, 1, R, R]
            x.add_(noise * act_gain)
        x = torch.nn.functional.leaky_relu(x, 0.2, inplace=True)  # addcmul does not keep its output
        if clamp is not None:
            x = x.clamp(-clamp, clamp)
        return x


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation; styles scaled by 1/sqrt(C_in)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w, fused_modconv: bool = True):
        styles = self.affine(w, gain=self.weight_gain)
        if fused_modconv or x.dtype != torch.float32:
            x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
            return bias_act(x, self.bias, clamp=self.conv_clamp, inplace=True)
        # A 1x1 modulated conv is a batched matmul with per-sample weights [N, Ci, Co]: one
        # baddbmm on a view of x instead of scaling x, convolving and adding the bias.
        N, Ci, H, W = x.shape
        Co = self.weight.shape[0]
        wn = styles.unsqueeze(2) * self.weight[:, :, 0, 0].t().unsqueeze(0)  # [N, Ci, Co]
        if x.is_contiguous(memory_format=torch.channels_last):
            y = torch.baddbmm(self.bias.reshape(1, 1, Co), x.permute(0, 2, 3, 1).reshape(N, H * W, Ci), wn)
            y = y.reshape(N, H, W, Co).permute(0, 3, 1, 2)  # a channels_last [N, Co, H, W] view
        else:
            y = torch.baddbmm(self.bias.reshape(1, Co, 1), wn.transpose(1, 2), x.reshape(N, Ci, H * W))
            y = y.reshape(N, Co, H, W)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | conv0 up) -> conv1 -> torgb."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.is_last = is_last
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        self.register_buffer("fir_img", fir_kernel(img_channels, 4.0), persistent=False)
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x, img, ws, noise_mode="random", fused_modconv=True, force_fp32=False, channels_last=False):
        # fp16 only where it exists in hardware; CPU always runs float32
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and ws.device.type == "cuda") else torch.float32
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = self.const.to(dtype).unsqueeze(0).expand(ws.shape[0], -1, -1, -1).contiguous(memory_format=fmt)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        else:
            x = x.to(dtype)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        if img is not None:
            img = upsample2d(img, self.fir_img)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
        img = y if img is None else img.add_(y) if not torch.is_grad_enabled() else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, R, R] (skip architecture, no output nonlinearity)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        fused_modconv: bool | None = None,
    ):
        super().__init__()
        log2 = _log2_resolution(img_resolution)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.fused_modconv = fused_modconv
        # memory format of activations: None = channels_last on CPU (measured faster with
        # mkldnn convs), contiguous elsewhere; a run-time choice, not part of the config
        self.channels_last: bool | None = None
        self.block_resolutions = [2**i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for r in self.block_resolutions:
            in_ch = channels[r // 2] if r > 4 else 0
            block = SynthesisBlock(
                in_ch, channels[r], w_dim, r, img_channels, is_last=(r == img_resolution),
                use_fp16=(r >= fp16_resolution), conv_clamp=conv_clamp,
            )
            self.num_ws += block.num_conv
            if r == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{r}", block)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | None = None, force_fp32: bool = False):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"synthesis: ws has shape {tuple(ws.shape)}, expected (N, {self.num_ws}, {self.w_dim})")
        if fused_modconv is None:
            fused_modconv = self.fused_modconv
        if fused_modconv is None:
            # grouped conv pays off on GPUs at inference; on CPU (and in training) the shared
            # conv over the whole batch is faster
            fused_modconv = ws.device.type == "cuda" and not torch.is_grad_enabled()
        ws = ws.to(torch.float32)
        channels_last = self.channels_last if self.channels_last is not None else ws.device.type == "cpu"
        x = img = None
        w_idx = 0
        for r in self.block_resolutions:
            block = getattr(self, f"b{r}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, fused_modconv=fused_modconv,
                           force_fp32=force_fp32, channels_last=channels_last)
        return img.contiguous()


# ----------------------------------------------------------------------------------------
# Config helpers


def _plain(obj: Any) -> Any:
    """Deep copy into JSON-friendly types (dicts, lists, numbers, strings)."""
    if isinstance(obj, ConditionSpace):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


def from_init_kwargs(d: Mapping) -> dict:
    """Constructor kwargs from a stored ``init_kwargs``/``config()`` dict (space dict -> ConditionSpace)."""
    if not isinstance(d, Mapping):
        raise ValueError("network config must be a JSON object")
    out = copy.deepcopy(dict(d))
    out.pop("class_name", None)
    if out.get("space") is not None:
        out["space"] = ConditionSpace.from_dict(out["space"])
    return out


class _Configurable:
    init_kwargs: dict

    def config(self) -> dict:
        """JSON-serialisable constructor kwargs (space as ``space.to_dict()``)."""
        return {"class_name": type(self).__name__, **copy.deepcopy(self.init_kwargs)}

    @classmethod
    def from_config(cls, d: Mapping):
        kw = from_init_kwargs(d)
        name = d.get("class_name") if isinstance(d, Mapping) else None
        if name is not None and name != cls.__name__:
            raise ValueError(f"config describes a {name}, not a {cls.__name__}")
        try:
            return cls(**kw)
        except TypeError as e:
            raise ValueError(f"invalid {cls.__name__} config: {e}") from None


# ----------------------------------------------------------------------------------------
# Generator


class Generator(_Configurable, nn.Module):
    """Conditional StyleGAN2 generator: ``G(z, c) -> img`` with c a label vector of ``space``."""

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        space: ConditionSpace | Mapping | None = None,
        img_resolution: int = 256,
        img_channels: int = 3,
        mapping_kwargs: Mapping | None = None,
        synthesis_kwargs: Mapping | None = None,
    ):
        super().__init__()
        space = _as_space(space)
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = _plain(
            dict(
                z_dim=z_dim, w_dim=w_dim, space=space, img_resolution=img_resolution, img_channels=img_channels,
                mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs,
            )
        )
        self.space = space
        self.z_dim = z_dim
        self.c_dim = space.c_dim if space is not None else 0
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, space=space, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "random",
        update_emas: bool = False,
        w_avg: torch.Tensor | None = None,
        fused_modconv: bool | None = None,
    ) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas, w_avg=w_avg)
        return self.synthesis(ws, noise_mode=noise_mode, fused_modconv=fused_modconv)


# ----------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """Resnet D block: [fromrgb at the top] conv0 3x3, conv1 3x3 down, 1x1 skip down, gains sqrt(1/2)."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        use_fp16: bool = False,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.use_fp16 = use_fp16
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img, force_fp32: bool = False):
        dev = (img if img is not None else x).device
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and dev.type == "cuda") else torch.float32
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype))
        else:
            x = x.to(dtype)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Append the std over sample groups as extra feature maps.

    The group is min(group_size, N); when N is not a multiple of it, the largest divisor of N
    below it is used (the reference would fail on such batches).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        G = N if self.group_size is None else min(self.group_size, N)
        while N % G:
            G -= 1
        F_ = self.num_channels
        y = x.reshape(G, -1, F_, C // F_, H, W)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, F_, 1, 1)
        y = y.repeat(G, 1, H, W)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: mbstd, conv, fc, out; projection with cmap when conditional."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int = 4,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, cmap=None, return_features: bool = False):
        x = x.to(torch.float32)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        feat = self.fc(x.flatten(1))
        x = self.out(feat)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return (x, feat) if return_features else x


class Discriminator(_Configurable, nn.Module):
    """Resnet StyleGAN2 discriminator with a projection on the factored label mapping."""

    def __init__(
        self,
        space: ConditionSpace | Mapping | None = None,
        img_resolution: int = 256,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        mapping_kwargs: Mapping | None = None,
        aux_heads: bool | str = False,
        uncond_head: bool = False,
    ):
        super().__init__()
        space = _as_space(space)
        mapping_kwargs = dict(mapping_kwargs or {})
        init = dict(
            space=space, img_resolution=img_resolution, img_channels=img_channels, channel_base=channel_base,
            channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
            mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels, mapping_kwargs=mapping_kwargs,
        )
        # Optional heads are recorded only when on, so configs of plain networks stay as they were.
        if aux_heads:
            init["aux_heads"] = aux_heads
        if uncond_head:
            init["uncond_head"] = True
        self.init_kwargs = _plain(init)
        log2 = _log2_resolution(img_resolution)
        if img_resolution < 8:
            raise ValueError(f"discriminator img_resolution must be >= 8, got {img_resolution}")
        self.space = space
        self.c_dim = space.c_dim if space is not None else 0
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(log2, 2, -1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if self.c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim
        self.channels_last: bool | None = None  # None = channels_last on CPU (see SynthesisNetwork)
        for r in self.block_resolutions:
            in_ch = channels[r] if r < img_resolution else 0
            block = DiscriminatorBlock(
                in_ch, channels[r], channels[r // 2], r, img_channels,
                use_fp16=(r >= fp16_resolution), conv_clamp=conv_clamp,
            )
            setattr(self, f"b{r}", block)
        if self.c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, space=space, w_dim=cmap_dim, num_ws=None, w_avg_beta=None, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(
            channels[4], cmap_dim=cmap_dim, mbstd_group_size=mbstd_group_size,
            mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp,
        )
        if (aux_heads or uncond_head) and self.c_dim == 0:
            raise ValueError("aux_heads and uncond_head need a conditional discriminator (a condition space)")
        # Auxiliary classifier (AC-GAN family): one linear head per factor on the epilogue's
        # features, predicting that factor's level; "adc" doubles the outputs (real and fake
        # version of every level, ADC-GAN).
        if aux_heads not in (False, True, "ac", "adc"):
            raise ValueError(f"aux_heads must be False, True, 'ac' or 'adc', got {aux_heads!r}")
        self.aux_factors: tuple[str, ...] = tuple(f.name for f in space.factors) if aux_heads else ()
        if aux_heads:
            per_level = 2 if aux_heads == "adc" else 1
            self.aux = nn.ModuleDict({f.name: FullyConnectedLayer(channels[4], per_level * f.size) for f in space.factors})
        # Transitional conditioning: an unconditional realness logit beside the projection one.
        if uncond_head:
            self.uncond = FullyConnectedLayer(channels[4], 1)

    def forward(
        self,
        img: torch.Tensor,
        c: torch.Tensor | None,
        update_emas: bool = False,
        force_fp32: bool = False,
        parts: bool = False,
    ):
        """Logits [N, 1]; ``update_emas`` is accepted for interface symmetry with G (no EMAs here).

        With ``parts=True`` a dict instead: ``logits`` (the projection logit), ``uncond`` (the
        unconditional logit or None) and ``aux`` ({factor: level logits [N, levels]} or None).
        """
        if img.ndim != 4 or img.shape[1] != self.img_channels or img.shape[2] != self.img_resolution or img.shape[3] != self.img_resolution:
            raise ValueError(
                f"discriminator: image batch has shape {tuple(img.shape)}, expected "
                f"(N, {self.img_channels}, {self.img_resolution}, {self.img_resolution})"
            )
        _check_c(c, self.c_dim, img.shape[0], "discriminator")
        channels_last = self.channels_last if self.channels_last is not None else img.device.type == "cpu"
        if channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        x = None
        for r in self.block_resolutions:
            x = getattr(self, f"b{r}")(x, img, force_fp32=force_fp32)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        if not parts:
            return self.b4(x, cmap)
        logits, feat = self.b4(x, cmap, return_features=True)
        return {
            "logits": logits,
            "uncond": self.uncond(feat) if hasattr(self, "uncond") else None,
            "aux": {f: self.aux[f](feat) for f in self.aux_factors} if self.aux_factors else None,
        }
