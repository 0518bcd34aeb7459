"""Building blocks of StyleGAN2: equalized-lr layers, modulated convolution, FIR resampling.

Numeric conventions follow the published StyleGAN2-ADA checkpoints so that official weights
load unchanged: weights are stored N(0, 1) / lr_multiplier and scaled at run time, biases are
scaled by lr_multiplier, modulated weights carry no equalized-lr gain (demodulation removes it).

Everything here is plain PyTorch.  The resampling filter is the normalised outer product of
[1, 3, 3, 1]; because it is symmetric we never flip it.  FIR filtering is a single depthwise
``conv2d`` (one kernel shared by all channels, no Python loops over channels), which measured
faster on CPU than two separable 1-D passes or shifted-slice sums.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SQRT2",
    "setup_filter",
    "fir_kernel",
    "normalize_2nd_moment",
    "bias_act",
    "filter2d",
    "upsample2d",
    "downsample2d",
    "conv2d_resample",
    "modulated_conv2d",
    "demodulation_coefficients",
    "FullyConnectedLayer",
    "Conv2dLayer",
]

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """2-D FIR filter: outer product of ``taps`` normalised to unit sum."""
    # built on the CPU even under a default-device context (e.g. meta): it is a constant
    f = torch.as_tensor(taps, dtype=torch.float32, device="cpu")
    f = torch.outer(f, f)
    return f / f.sum()


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    act: str = "linear",
    gain: float | None = None,
    clamp: float | None = None,
    inplace: bool = False,
    x_scale: float = 1.0,
) -> torch.Tensor:
    """Add a per-channel bias (channel dim 1), apply ``act``, scale by ``gain``, clamp.

    ``x_scale`` multiplies x before the bias (a conv's equalized-lr gain can be applied here,
    on the output, instead of making a scaled copy of the weight).

    ``act`` is ``linear`` or ``lrelu`` (slope 0.2); the default gain is sqrt(2) for lrelu and 1
    for linear, as in the reference.  Because gain > 0, lrelu(x + b) * g == lrelu(x*g + b*g),
    so the gain is applied first and the activation last.  ``inplace=True`` reuses ``x``'s
    memory; pass it only for a fresh intermediate whose producer does not keep it for backward
    (conv, matmul, mul, add outputs).
    """
    if gain is None:
        gain = SQRT2 if act == "lrelu" else 1.0
    if act not in ("linear", "lrelu"):
        raise ValueError(f"unknown activation {act!r} (expected 'linear' or 'lrelu')")
    fresh = inplace  # may we overwrite x?
    if gain * x_scale != 1:
        x = x.mul_(gain * x_scale) if fresh else x * (gain * x_scale)
        fresh = True
    if b is not None:
        bias = (b.to(x.dtype) * gain).reshape([1, -1] + [1] * (x.ndim - 2))
        x = x.add_(bias) if fresh else x + bias
        fresh = True
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=fresh)
        fresh = True
    if clamp is not None and clamp >= 0:
        # the lrelu output may be saved for backward: clamp out of place when a graph is kept
        x = x.clamp_(-clamp, clamp) if (fresh and not torch.is_grad_enabled()) else x.clamp(-clamp, clamp)
    return x


def _depthwise(f: torch.Tensor, channels: int, dtype: torch.dtype, gain: float = 1.0) -> torch.Tensor:
    if f.ndim == 4:  # already a [C, 1, fh, fw] kernel (gain included), see fir_kernel()
        return f.to(dtype)
    k = f.to(dtype) * gain if gain != 1 else f.to(dtype)
    return k[None, None].expand(channels, 1, *f.shape)


def fir_kernel(channels: int, gain: float = 1.0, f: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise conv kernel [C, 1, 4, 4] for the FIR filter x gain.

    Layers precompute it once (as a non-persistent buffer) so a forward pass does no filter
    set-up work; pass it wherever a filter ``f`` is accepted (the gain is then already in it).
    """
    f = setup_filter() if f is None else f
    return (f * gain)[None, None].repeat(channels, 1, 1, 1).contiguous()


def filter2d(
    x: torch.Tensor, f: torch.Tensor, padding=(0, 0, 0, 0), gain: float = 1.0, down: int = 1
) -> torch.Tensor:
    """Pad (x0, x1, y0, y1), convolve every channel with ``f`` (x ``gain``), keep every ``down``-th pixel.

    ``f`` is the 2-D filter or a precomputed :func:`fir_kernel` (then ``gain`` is ignored).

    Equivalent to the reference ``upfirdn2d(x, f, up=1, down, padding, gain)`` for a symmetric
    filter: the stride-``down`` depthwise conv computes only the pixels that are kept.
    """
    C = x.shape[1]
    x0, x1, y0, y1 = padding
    if x0 == x1 == y0 == y1:  # let the conv pad: no extra copy, keeps channels_last
        return F.conv2d(x, _depthwise(f, C, x.dtype, gain), stride=down, padding=x0, groups=C)
    return F.conv2d(F.pad(x, [x0, x1, y0, y1]), _depthwise(f, C, x.dtype, gain), stride=down, groups=C)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling with gain 4 (reference ``upsample2d``).

    Zero-insertion followed by the 4x4 filter is exactly a stride-2 transposed depthwise
    convolution; padding=1 crops it to the reference's [2, 1] padding (output 2H x 2W).
    """
    C = x.shape[1]
    return F.conv_transpose2d(x, _depthwise(f, C, x.dtype, 4.0), stride=2, padding=1, groups=C)  # f may be fir_kernel(C, 4)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling (reference ``downsample2d`` with padding 1 per side)."""
    return filter2d(x, f, (1, 1, 1, 1), down=2)


def conv2d_resample(
    x: torch.Tensor,
    w: torch.Tensor,
    f: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    groups: int = 1,
    fir: torch.Tensor | None = None,
) -> torch.Tensor:
    """Convolution with optional 2x FIR up/down sampling, matching the reference exactly.

    ``fir`` optionally gives the precomputed depthwise kernel for the FIR step
    (:func:`fir_kernel` with C_out channels and gain 4 for up, C_in channels and gain 1 for down).

    * up=2: stride-2 transposed conv, then the FIR filter with gain 4 on the larger map (the
      cheap order: the filter runs on C_out channels once, not folded into every weight).
    * down=2, 3x3: FIR with padding 2, then a stride-2 conv.  1x1: FIR+decimate, then the conv.
    """
    Co, Ci_g, kh, kw = w.shape
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    if f is None:
        raise ValueError("resampling needs a FIR filter")
    fh, fw = f.shape
    if up == 2 and down == 1:
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            wt = w.reshape(groups, Co // groups, Ci_g, kh, kw).transpose(1, 2).reshape(groups * Ci_g, Co // groups, kh, kw)
        # reference padding bookkeeping for (fw=4, up=2): the transposed conv needs no padding
        p0 = padding + (fw + up - 1) // 2 - (kw - 1)
        p1 = padding + (fw - up) // 2 - (kw - up)
        if p0 < 0 or p1 < 0:
            raise ValueError("unsupported padding for upsampling conv")
        x = F.conv_transpose2d(x, wt, stride=2, groups=groups)
        return filter2d(x, f if fir is None else fir, (p0, p1, p0, p1), gain=up * up)
    if down == 2 and up == 1:
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        k = f if fir is None else fir
        if kh == 1 and kw == 1:
            x = filter2d(x, k, (p0, p1, p0, p1), down=2)
            return F.conv2d(x, w, groups=groups)
        x = filter2d(x, k, (p0, p1, p0, p1))
        return F.conv2d(x, w, stride=2, groups=groups)
    raise ValueError(f"unsupported resampling up={up} down={down}")


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """d[n, o] = rsqrt(sum_{i,k} (W_oik s_ni)^2 + 1e-8), as (s^2) @ (sum_k W^2)^T.

    This never materialises the [N, Co, Ci, k, k] modulated weights.
    """
    w2 = weight.to(styles.dtype).square().sum(dim=[2, 3])  # [Co, Ci]
    return (styles.square() @ w2.t() + 1e-8).rsqrt()


def modulated_conv2d(
    x: torch.Tensor,  # [N, Ci, H, W]
    weight: torch.Tensor,  # [Co, Ci, kh, kw]
    styles: torch.Tensor,  # [N, Ci]
    noise: torch.Tensor | None = None,  # broadcastable to [N, Co, H', W']
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused: bool = True,
) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    ``fused=True``: per-sample modulated (and demodulated) weights run as ONE grouped
    convolution with the batch folded into the groups.  ``fused=False``: scale the input by
    the styles, run one shared convolution over the batch, scale the output by the
    demodulation coefficients.  Both compute the same function; the shared convolution is the
    faster of the two on CPU because it lets the conv kernel use the whole batch.
    """
    N, Ci = x.shape[:2]
    Co, _, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if demodulate and x.dtype == torch.float16:
        # Pre-normalise to keep fp16 in range; demodulation makes the result scale-invariant.
        weight = weight * (1 / math.sqrt(Ci * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    if not fused:
        x = x * styles.reshape(N, Ci, 1, 1)
        x = conv2d_resample(x, weight, resample_filter, up=up, padding=padding)
        if demodulate:
            x = x * demodulation_coefficients(weight, styles).reshape(N, Co, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    w = weight.unsqueeze(0) * styles.reshape(N, 1, Ci, 1, 1)  # [N, Co, Ci, kh, kw]
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(N, Co, 1, 1, 1)
    x = x.reshape(1, N * Ci, *x.shape[2:])
    x = conv2d_resample(x, w.reshape(N * Co, Ci, kh, kw), resample_filter, up=up, padding=padding, groups=N)
    x = x.reshape(N, Co, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class FullyConnectedLayer(nn.Module):
    """Equalized-lr linear layer (weight [out, in] stored raw, scaled by lr_mul/sqrt(in))."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """y = act(x @ (W * weight_gain)^T + b * bias_gain) * gain, as ONE GEMM plus the activation.

        The equalized-lr and output gains go into addmm's alpha/beta (lrelu(z)*g == lrelu(z*g)
        for g > 0), so no scaled copy of the weight is made.
        """
        w = self.weight.to(x.dtype)
        g = gain * (SQRT2 if self.activation == "lrelu" else 1.0)
        if self.bias is not None:
            y = torch.addmm(self.bias.to(x.dtype), x, w.t(), beta=self.bias_gain * g, alpha=self.weight_gain * g)
        else:
            y = torch.mm(x, w.t()).mul_(self.weight_gain * g)
        if self.activation == "lrelu":
            y = F.leaky_relu(y, LRELU_SLOPE, inplace=True)  # addmm does not keep its output
        elif self.activation != "linear":
            raise ValueError(f"unknown activation {self.activation!r}")
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Equalized-lr conv (gain 1/sqrt(in*k^2)) with optional 2x FIR down/up sampling, bias, act."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = SQRT2 if activation == "lrelu" else 1.0
        # derived from the architecture, so not saved in checkpoints
        self.register_buffer("resample_filter", setup_filter(), persistent=False)
        if up > 1 or down > 1:
            fir_channels, fir_gain = (out_channels, up * up) if up > 1 else (in_channels, 1.0)
            self.register_buffer("fir", fir_kernel(fir_channels, fir_gain), persistent=False)
        else:
            self.fir = None
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        # conv(x, W * wg) == conv(x, W) * wg: scale the output inside bias_act, no weight copy
        x = conv2d_resample(x, self.weight.to(x.dtype), self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, fir=self.fir)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp,
                        inplace=True, x_scale=self.weight_gain)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
            f"up={self.up}, down={self.down}"
        )
