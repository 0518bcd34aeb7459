"""Adaptive discriminator augmentation (ADA): a differentiable image augmentation pipeline.

The discriminator sees every image (real and generated) through :class:`AugmentPipe`.  Each
augmentation is applied to a sample with probability ``p * multiplier``; ``p`` is a buffer
that :class:`AdaptiveP` tunes from the sign of the discriminator's output on real images, so
that D never becomes confident enough to overfit a small training set.

Design choices (kept close to the StyleGAN2-ADA paper, written independently):

* **Geometric ops** (x-flip, 90-degree rotations, integer translation, isotropic scale,
  pre-rotation, anisotropic scale, post-rotation, fractional translation) are composed into one
  3x3 matrix per sample and applied with a *single* ``grid_sample`` call.  The reference
  implementation upsamples 2x with a wavelet filter, samples bilinearly and downsamples again.
  We instead sample once at the output resolution with bicubic interpolation and reflection
  padding: it is differentiable (including the double backward R1 needs), needs no custom
  ops, and -- because cubic convolution is interpolating -- a sample whose transform lands on
  whole pixels (identity, flips, 90-degree turns, integer shifts) is copied *exactly*, so
  images that draw no augmentation are untouched (the non-leaking argument relies on that).
  The price is mild aliasing when a sample is shrunk; the scale distribution stays near 1
  (lognormal with std 0.2*ln2), so we accept it.  ``grid_sample``'s reflection padding mirrors
  about the image edge (the border pixel repeats once), where the reference mirrors about the
  border pixel; the padded content differs by that one-pixel offset only.
* **Colour ops** (brightness, contrast, luma flip, hue rotation, saturation) are composed into
  one 4x4 affine colour matrix per sample and applied with one batched matmul.  Images are
  assumed to be in [-1, 1] with a mean near 0, as the generator produces them.
* **Image-space filtering** boosts or cuts four octave bands.  We filter in the Fourier domain of
  a mirror-extended image (no wrap-around seams) with a smooth radial partition of unity over
  the bands, instead of the reference's separable wavelet filter bank; the per-band gain
  distribution (lognormal, power-normalised with expected band powers 10:1:1:1) follows the
  paper.
* Every random draw uses ``torch`` random functions on the images' device (optionally with a
  ``torch.Generator``) and is made whether or not the op ends up selected, so the same seed gives
  the same augmentation regardless of ``p``'s value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
from torch import Tensor

from synth.errors import UserError
from synth.training.grid_sample_gradfix import grid_sample

# The tables are torch-free so the command line can build its option choices from them.
from synth.training.augment_specs import (
    BLIT_OPS, COLOR_OPS, CUTOUT_OPS, FILTER_OPS, GEOM_OPS, KINDS, NOISE_OPS, OPS, SPECS,
)

__all__ = [
    "AugmentError",
    "AugmentStrengths",
    "AugmentPipe",
    "AdaptiveP",
    "OPS",
    "SPECS",
    "KINDS",
    "pipe_from_spec",
    "for_kind",
]


class AugmentError(UserError):
    """A bad augmentation setting or input (one-line message naming the option)."""


# Expected share of image power per filter band (low to high); used to keep the overall
# power unchanged when one band is boosted (value from the paper).
_BAND_POWER = (10.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0)


@dataclass(frozen=True)
class AugmentStrengths:
    """Magnitudes of the individual augmentations (paper defaults)."""

    xint_max: float = 0.125  # integer translation: up to this fraction of the image size
    scale_std: float = 0.2  # isotropic scale: log2-normal std
    rotate_max: float = 1.0  # rotation: uniform in [-pi, pi] * rotate_max
    aniso_std: float = 0.2  # anisotropic scale: log2-normal std
    xfrac_std: float = 0.125  # fractional translation: normal std as a fraction of the size
    brightness_std: float = 0.2  # additive brightness: normal std
    contrast_std: float = 0.5  # contrast: log2-normal std
    hue_max: float = 1.0  # hue rotation: uniform in [-pi, pi] * hue_max
    saturation_std: float = 1.0  # saturation: log2-normal std
    imgfilter_std: float = 1.0  # band gain: log2-normal std
    imgfilter_bands: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)  # per-band probability multipliers, low to high
    noise_std: float = 0.1  # additive RGB noise: std of |N(0,1)| * noise_std
    cutout_size: float = 0.5  # cutout square side as a fraction of the image size

    def __post_init__(self) -> None:
        bands = self.imgfilter_bands
        if isinstance(bands, (str, bytes)) or not hasattr(bands, "__len__") or len(bands) != len(_BAND_POWER):
            raise AugmentError(f"augmentation strength imgfilter_bands={bands!r} must list {len(_BAND_POWER)} numbers")
        object.__setattr__(self, "imgfilter_bands", tuple(bands))
        for f in fields(self):
            values = getattr(self, f.name)
            for value in values if isinstance(values, tuple) else (values,):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise AugmentError(f"augmentation strength {f.name}={values!r} must be finite number(s) >= 0")
            object.__setattr__(self, f.name, tuple(map(float, values)) if isinstance(values, tuple) else float(values))


# ---------------------------------------------------------------------------------------------
# Batched matrix builders.  Each returns [N, k, k] float tensors; arguments are [N] tensors.


def _matrix(rows: list[list[Tensor | float]], ref: Tensor) -> Tensor:
    """Stack a k x k table of per-sample scalars (tensors or floats) into [N, k, k]."""
    n = ref.shape[0]
    cols = [
        torch.as_tensor(v, dtype=torch.float32, device=ref.device).expand(n) if not isinstance(v, Tensor) else v
        for row in rows
        for v in row
    ]
    k = len(rows)
    return torch.stack(cols, dim=1).reshape(n, k, k)


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def _rotate2d_cs(c: Tensor, s: Tensor) -> Tensor:
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], c)


def _translate3d(tx: Tensor, ty: Tensor, tz: Tensor) -> Tensor:
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], tx)


def _scale3d(sx: Tensor, sy: Tensor, sz: Tensor) -> Tensor:
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], sx)


def _rotate3d(axis: Tensor, theta: Tensor) -> Tensor:
    """Rotation by ``theta`` about the unit ``axis`` [3] (Rodrigues), as [N, 4, 4]."""
    x, y, z = (axis[i].expand_as(theta) for i in range(3))
    c, s = torch.cos(theta), torch.sin(theta)
    cc = 1 - c
    return _matrix(
        [
            [x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0],
            [y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0],
            [z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0],
            [0, 0, 0, 1],
        ],
        theta,
    )


# ---------------------------------------------------------------------------------------------


class AugmentPipe(torch.nn.Module):
    """Differentiable ADA augmentation of image batches ``[N, C, H, W]`` (float, range about [-1, 1]).

    Every keyword in :data:`OPS` is a probability multiplier: the op is applied to a sample
    with probability ``p * multiplier`` (0 disables it).  ``p`` is the buffer ``self.p``
    (set it with :meth:`set_p` or let :class:`AdaptiveP` drive it).  Magnitudes come from
    ``strengths``; ``interpolation`` is ``"bicubic"`` (default) or ``"bilinear"``.

    Colour ops need 3 channels; geometric ops, filtering, noise and cutout work for any channel
    count.  Non-float32 inputs are processed in float32 and returned in their own dtype.
    """

    def __init__(
        self,
        *,
        xflip: float = 0.0,
        rotate90: float = 0.0,
        xint: float = 0.0,
        scale: float = 0.0,
        rotate: float = 0.0,
        aniso: float = 0.0,
        xfrac: float = 0.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        lumaflip: float = 0.0,
        hue: float = 0.0,
        saturation: float = 0.0,
        imgfilter: float = 0.0,
        noise: float = 0.0,
        cutout: float = 0.0,
        p: float = 0.0,
        strengths: AugmentStrengths | Mapping[str, float] | None = None,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__()
        mults = dict(
            xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso, xfrac=xfrac,
            brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue, saturation=saturation,
            imgfilter=imgfilter, noise=noise, cutout=cutout,
        )  # fmt: skip
        for name, value in mults.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise AugmentError(f"augmentation multiplier {name}={value!r} must be a finite number >= 0")
        self.mult: dict[str, float] = {k: float(v) for k, v in mults.items()}
        if strengths is None:
            strengths = AugmentStrengths()
        elif not isinstance(strengths, AugmentStrengths):
            unknown = sorted(set(strengths) - {f.name for f in fields(AugmentStrengths)})
            if unknown:
                raise AugmentError(f"unknown augmentation strength(s): {', '.join(unknown)}")
            strengths = AugmentStrengths(**dict(strengths))
        self.strengths: AugmentStrengths = strengths
        if interpolation not in ("bicubic", "bilinear"):
            raise AugmentError(f"interpolation={interpolation!r}: choose 'bicubic' or 'bilinear'")
        self.interpolation = interpolation
        _check_p(p, "p")
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))

    # -- configuration -------------------------------------------------------------------------

    @classmethod
    def from_reference_kwargs(cls, kwargs: Mapping[str, Any], p: float = 0.0) -> "AugmentPipe":
        """Build from the constructor keywords saved with an official StyleGAN2-ADA ``augment_pipe``.

        The reference names its multipliers like ours and its magnitudes like the fields of
        :class:`AugmentStrengths`; anything else is rejected rather than silently dropped.
        """
        strength_names = {f.name for f in fields(AugmentStrengths)}
        unknown = sorted(set(kwargs) - set(OPS) - strength_names)
        if unknown:
            raise AugmentError(f"reference augment pipe: unknown keyword(s) {', '.join(unknown)}")
        mults = {k: float(v) for k, v in kwargs.items() if k in OPS}
        strengths = {k: v for k, v in kwargs.items() if k in strength_names}
        return cls(**mults, p=p, strengths=strengths)

    def config(self) -> dict[str, Any]:
        """Constructor keywords that rebuild this pipe (JSON-friendly; ``p`` lives in the state dict)."""
        return {**self.mult, "strengths": asdict(self.strengths), "interpolation": self.interpolation}

    @property
    def enabled(self) -> tuple[str, ...]:
        """Names of the augmentations with a non-zero multiplier, in application order."""
        return tuple(name for name in OPS if self.mult[name] > 0)

    def set_p(self, value: float) -> None:
        """Set the augmentation probability (a number in [0, 1])."""
        _check_p(value, "p")
        with torch.no_grad():
            self.p.fill_(float(value))

    def extra_repr(self) -> str:
        ops = ", ".join(f"{k}={v:g}" for k, v in self.mult.items() if v > 0) or "no ops"
        return f"{ops}, p={float(self.p):.4f}, interpolation={self.interpolation}"

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise AugmentError(f"AugmentPipe expects images [N, C, H, W], got {shape}")
        # One host read per call; p == 0 (or nothing enabled) must be an exact, free no-op.
        p = float(self.p)
        if p == 0.0 or not self.enabled or images.shape[0] == 0:
            return images
        if not images.is_floating_point():
            raise AugmentError(f"AugmentPipe expects floating-point images, got {images.dtype}")
        n, c, h, w = images.shape
        if c != 3 and any(self.mult[k] > 0 for k in COLOR_OPS):
            raise AugmentError(f"colour augmentations need 3-channel images, got {c} channels")
        orig_dtype = images.dtype
        x = images.float()
        rng = _Rng(n, x.device, generator)

        if any(self.mult[k] > 0 for k in BLIT_OPS + GEOM_OPS):
            x = self._geometric(x, p, rng)
        if any(self.mult[k] > 0 for k in COLOR_OPS):
            x = self._colour(x, p, rng)
        if self.mult["imgfilter"] > 0:
            x = self._imgfilter(x, p, rng)
        if self.mult["noise"] > 0:
            sigma = rng.randn().abs() * self.strengths.noise_std
            sigma = torch.where(rng.chance(p * self.mult["noise"]), sigma, torch.zeros_like(sigma))
            x = x + rng.randn_like(x) * sigma.view(n, 1, 1, 1)
        if self.mult["cutout"] > 0:
            x = x * self._cutout_mask(x, p, rng)
        return x.to(orig_dtype)

    # -- stages ----------------------------------------------------------------------------------

    def _geometric(self, x: Tensor, p: float, rng: "_Rng") -> Tensor:
        """Compose every geometric op into one inverse matrix and resample once."""
        n, _, h, w = x.shape
        m, s = self.mult, self.strengths
        # inv maps output pixel coordinates (origin at the image centre, unit = 1 pixel) to the
        # input coordinates to sample.  Post-multiplying inverse transforms means the first op
        # listed is the first one applied to the image.
        inv = torch.eye(3, device=x.device).expand(n, 3, 3)
        zero, one = rng.zeros(), rng.ones()

        if m["xflip"] > 0:
            flip = torch.floor(rng.rand() * 2)
            flip = torch.where(rng.chance(p * m["xflip"]), flip, zero)
            inv = inv @ _scale2d(1 - 2 * flip, one)
        if m["rotate90"] > 0:
            # Exact cos/sin tables so quarter turns land on whole pixels.
            k = torch.floor(rng.rand() * 4)
            k = torch.where(rng.chance(p * m["rotate90"]), k, zero).long()
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=x.device)[k]
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=x.device)[k]
            inv = inv @ _rotate2d_cs(cos, -sin)
        if m["xint"] > 0:
            t = (rng.rand(2) * 2 - 1) * s.xint_max
            t = torch.where(rng.chance(p * m["xint"]).unsqueeze(1), t, torch.zeros_like(t))
            inv = inv @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        if m["scale"] > 0:
            sc = torch.exp2(rng.randn() * s.scale_std)
            sc = torch.where(rng.chance(p * m["scale"]), sc, one)
            inv = inv @ _scale2d(1 / sc, 1 / sc)
        # Pre- and post-rotation each fire with this probability, so that at least one of them
        # fires with probability p * rotate.
        p_rot = 1 - math.sqrt(max(0.0, 1 - min(1.0, p * m["rotate"])))
        if m["rotate"] > 0:
            theta = (rng.rand() * 2 - 1) * math.pi * s.rotate_max
            theta = torch.where(rng.chance(p_rot), theta, zero)
            inv = inv @ _rotate2d_cs(torch.cos(theta), -torch.sin(theta))
        if m["aniso"] > 0:
            sc = torch.exp2(rng.randn() * s.aniso_std)
            sc = torch.where(rng.chance(p * m["aniso"]), sc, one)
            inv = inv @ _scale2d(1 / sc, sc)
        if m["rotate"] > 0:
            theta = (rng.rand() * 2 - 1) * math.pi * s.rotate_max
            theta = torch.where(rng.chance(p_rot), theta, zero)
            inv = inv @ _rotate2d_cs(torch.cos(theta), -torch.sin(theta))
        if m["xfrac"] > 0:
            t = rng.randn(2) * s.xfrac_std
            t = torch.where(rng.chance(p * m["xfrac"]).unsqueeze(1), t, torch.zeros_like(t))
            inv = inv @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)

        # Output pixel centres, then normalise to grid_sample's [-1, 1] (align_corners=False:
        # -1 and 1 are the outer image edges, so a pixel centre maps to (2i + 1) / W - 1).
        xs = torch.arange(w, device=x.device, dtype=torch.float32) + (0.5 - w / 2)
        ys = torch.arange(h, device=x.device, dtype=torch.float32) + (0.5 - h / 2)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, h * w, 3)
        src = coords @ inv[:, :2, :].transpose(1, 2)  # [N, HW, 2]
        grid = src / torch.tensor([w / 2, h / 2], device=x.device)
        return grid_sample(  # twice differentiable on CUDA too (the R1 penalty needs it)
            x, grid.reshape(n, h, w, 2), mode=self.interpolation, padding_mode="reflection", align_corners=False
        )

    def _colour(self, x: Tensor, p: float, rng: "_Rng") -> Tensor:
        """Compose the colour ops into one 4x4 matrix per sample and apply it with one matmul."""
        n, c, h, w = x.shape
        m, s = self.mult, self.strengths
        mat = torch.eye(4, device=x.device).expand(n, 4, 4)
        zero, one = rng.zeros(), rng.ones()
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=x.device) / math.sqrt(3)  # unit grey axis
        luma_outer = torch.outer(luma, luma)

        if m["brightness"] > 0:
            b = rng.randn() * s.brightness_std
            b = torch.where(rng.chance(p * m["brightness"]), b, zero)
            mat = _translate3d(b, b, b) @ mat
        if m["contrast"] > 0:
            k = torch.exp2(rng.randn() * s.contrast_std)
            k = torch.where(rng.chance(p * m["contrast"]), k, one)
            mat = _scale3d(k, k, k) @ mat
        if m["lumaflip"] > 0:
            # Householder reflection through the grey axis: inverts luminance, keeps chroma.
            i = torch.floor(rng.rand() * 2)
            i = torch.where(rng.chance(p * m["lumaflip"]), i, zero)
            mat = (torch.eye(4, device=x.device) - 2 * luma_outer * i.view(n, 1, 1)) @ mat
        if m["hue"] > 0:
            theta = (rng.rand() * 2 - 1) * math.pi * s.hue_max
            theta = torch.where(rng.chance(p * m["hue"]), theta, zero)
            mat = _rotate3d(luma[:3], theta) @ mat
        if m["saturation"] > 0:
            k = torch.exp2(rng.randn() * s.saturation_std)
            k = torch.where(rng.chance(p * m["saturation"]), k, one)
            mat = (luma_outer + (torch.eye(4, device=x.device) - luma_outer) * k.view(n, 1, 1)) @ mat

        flat = x.reshape(n, c, h * w)
        flat = torch.baddbmm(mat[:, :3, 3:], mat[:, :3, :3], flat)
        return flat.reshape(n, c, h, w)

    def _imgfilter(self, x: Tensor, p: float, rng: "_Rng") -> Tensor:
        """Random per-band gains applied in the Fourier domain of the mirror-extended image."""
        n, c, h, w = x.shape
        power = torch.tensor(_BAND_POWER, device=x.device)
        gains = torch.ones(n, len(_BAND_POWER), device=x.device)
        for band in range(len(_BAND_POWER)):
            g = torch.exp2(rng.randn() * self.strengths.imgfilter_std)
            chance = p * self.mult["imgfilter"] * self.strengths.imgfilter_bands[band]
            g = torch.where(rng.chance(chance), g, rng.ones())
            t = torch.ones_like(gains)
            t[:, band] = g
            # Renormalise so the expected image power is unchanged by this band's gain.
            t = t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()
            gains = gains * t

        # Mirror-extend to 2H x 2W: the extended image is periodic without seams, so the FFT
        # filter behaves like reflect padding rather than wrapping opposite edges together.
        ext = torch.cat([x, x.flip(3)], dim=3)
        ext = torch.cat([ext, ext.flip(2)], dim=2)
        spec = torch.fft.rfft2(ext)
        weights = _band_weights(2 * h, 2 * w, x.device)  # [B, 2H, W+1]
        response = torch.einsum("nb,bhw->nhw", gains, weights)
        out = torch.fft.irfft2(spec * response.unsqueeze(1), s=(2 * h, 2 * w))
        return out[:, :, :h, :w]

    def _cutout_mask(self, x: Tensor, p: float, rng: "_Rng") -> Tensor:
        n, _, h, w = x.shape
        size = torch.full((n,), self.strengths.cutout_size, device=x.device)
        size = torch.where(rng.chance(p * self.mult["cutout"]), size, torch.zeros_like(size))
        centre = rng.rand(2)
        cx = (torch.arange(w, device=x.device) + 0.5) / w
        cy = (torch.arange(h, device=x.device) + 0.5) / h
        out_x = (cx.view(1, 1, w) - centre[:, 0].view(n, 1, 1)).abs() >= size.view(n, 1, 1) / 2
        out_y = (cy.view(1, h, 1) - centre[:, 1].view(n, 1, 1)).abs() >= size.view(n, 1, 1) / 2
        return (out_x | out_y).unsqueeze(1).to(x.dtype)


def _band_weights(h: int, w: int, device: torch.device) -> Tensor:
    """Smooth partition of unity over four octave bands for an rfft2 spectrum of an h x w image.

    Band centres sit at 1/8, 1/4, 1/2 and 1 of the Nyquist frequency (radial); weights are
    linear in log2-frequency between neighbouring centres, the lowest band keeps DC and the
    highest band keeps the corners beyond Nyquist.
    """
    fy = torch.fft.fftfreq(h, device=device).view(h, 1)
    fx = torch.fft.rfftfreq(w, device=device).view(1, w // 2 + 1)
    radius = torch.sqrt(fy.square() + fx.square()) / 0.5  # in units of Nyquist
    pos = torch.log2(radius.clamp(min=1e-6)) + 3  # band index as a continuous value
    pos = pos.clamp(0, len(_BAND_POWER) - 1)
    bands = torch.arange(len(_BAND_POWER), device=device, dtype=torch.float32).view(-1, 1, 1)
    return (1 - (pos.unsqueeze(0) - bands).abs()).clamp(min=0)


class _Rng:
    """Per-sample random draws on one device, optionally from a given generator."""

    def __init__(self, n: int, device: torch.device, generator: torch.Generator | None) -> None:
        self.n, self.device, self.gen = n, device, generator

    def rand(self, *extra: int) -> Tensor:
        return torch.rand((self.n, *extra), device=self.device, generator=self.gen)

    def randn(self, *extra: int) -> Tensor:
        return torch.randn((self.n, *extra), device=self.device, generator=self.gen)

    def randn_like(self, x: Tensor) -> Tensor:
        return torch.randn(x.shape, device=self.device, generator=self.gen, dtype=x.dtype)

    def chance(self, prob: float) -> Tensor:
        """Boolean [N]: True with probability ``prob`` (always drawn, to keep the stream aligned)."""
        return self.rand() < prob

    def zeros(self) -> Tensor:
        return torch.zeros(self.n, device=self.device)

    def ones(self) -> Tensor:
        return torch.ones(self.n, device=self.device)


def _check_p(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= float(value) <= 1.0):
        raise AugmentError(f"{name}={value!r} must be a number in [0, 1]")


# ---------------------------------------------------------------------------------------------


class AdaptiveP(torch.nn.Module):
    """The ADA heuristic that tunes ``pipe.p`` from the discriminator's output on real images.

    Call :meth:`update` once per minibatch with D's logits for the (augmented) real images.
    It accumulates ``sign(D(real))``; every ``interval`` minibatches it computes
    ``r_t = E[sign(D(real))]`` over the window and moves ``p`` by
    ``sign(r_t - target) * images_in_window / (ada_kimg * 1000)`` (so ``p`` can traverse
    0 -> 1 in ``ada_kimg`` thousand images), clamped to [0, 1].  With a fixed batch size the
    step is the paper's ``batch * interval / (ada_kimg * 1000)``.

    All arithmetic stays on the device (no host sync).  The accumulators are buffers and the
    minibatch counter is extra state, so ``state_dict()`` / ``load_state_dict()`` (together
    with the pipe's own state dict, which holds ``p``) resume the heuristic exactly.  The pipe
    is referenced, not registered as a submodule, so ``p`` is saved once, with the pipe.
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, ada_kimg: float = 500.0) -> None:
        super().__init__()
        if not isinstance(pipe, AugmentPipe):
            raise AugmentError(f"AdaptiveP needs an AugmentPipe, got {type(pipe).__name__}")
        if not (isinstance(target, (int, float)) and -1.0 <= target <= 1.0):
            raise AugmentError(f"ada target={target!r} must be in [-1, 1] (it is compared with E[sign(D(real))])")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise AugmentError(f"ada interval={interval!r} must be an integer >= 1")
        if not (isinstance(ada_kimg, (int, float)) and math.isfinite(ada_kimg) and ada_kimg > 0):
            raise AugmentError(f"ada_kimg={ada_kimg!r} must be a positive number")
        object.__setattr__(self, "pipe", pipe)  # plain attribute: not a submodule
        self.target = float(target)
        self.interval = interval
        self.ada_kimg = float(ada_kimg)
        self.batches = 0  # minibatches since the last adjustment (extra state)
        device = pipe.p.device
        self.register_buffer("sign_sum", torch.zeros([], device=device))
        self.register_buffer("sign_count", torch.zeros([], device=device))
        self.register_buffer("images", torch.zeros([], device=device))
        self.register_buffer("last_rt", torch.full([], float("nan"), device=device))

    def get_extra_state(self) -> dict[str, int]:
        return {"batches": int(self.batches)}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or not isinstance(state.get("batches"), int):
            raise AugmentError("ADA state: extra state must be a dict with an integer 'batches'")
        self.batches = state["batches"]

    @torch.no_grad()
    def accumulate(self, d_real: Tensor) -> None:
        """Add ``sign(d_real)`` (any shape) to the current window without ending the minibatch."""
        signs = torch.sign(d_real.detach().float())
        self.sign_sum += signs.sum().to(self.sign_sum.device)
        self.sign_count += signs.numel()

    @torch.no_grad()
    def step(self, batch_size: int) -> bool:
        """End one minibatch of ``batch_size`` real images; adjust ``p`` every ``interval`` calls.

        Returns True when ``p`` was adjusted.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
            raise AugmentError(f"ada step: batch_size={batch_size!r} must be a non-negative integer")
        self.images += batch_size
        self.batches += 1
        if self.batches < self.interval:
            return False
        rt = self.sign_sum / self.sign_count.clamp(min=1)
        adjust = torch.sign(rt - self.target) * self.images / (self.ada_kimg * 1000)
        adjust = torch.where(self.sign_count > 0, adjust, torch.zeros_like(adjust))  # no data: no move
        p = self.pipe.p
        p.copy_((p + adjust.to(p.device)).clamp(0.0, 1.0))
        self.last_rt.copy_(torch.where(self.sign_count > 0, rt, self.last_rt))
        self.sign_sum.zero_()
        self.sign_count.zero_()
        self.images.zero_()
        self.batches = 0
        return True

    def update(self, d_real: Tensor, batch_size: int | None = None) -> bool:
        """:meth:`accumulate` then :meth:`step` (``batch_size`` defaults to ``len(d_real)``)."""
        self.accumulate(d_real)
        return self.step(int(d_real.shape[0]) if batch_size is None else batch_size)

    @property
    def p(self) -> float:
        return float(self.pipe.p)

    def stats(self) -> dict[str, float]:
        """Current ``p`` and the last window's ``r_t`` (NaN before the first adjustment), for logs."""
        return {"ada/p": float(self.pipe.p), "ada/rt": float(self.last_rt)}

    def extra_repr(self) -> str:
        return f"target={self.target}, interval={self.interval}, ada_kimg={self.ada_kimg:g}"


# ---------------------------------------------------------------------------------------------


def pipe_from_spec(spec: str = "bgc", p: float = 0.0, **overrides: Any) -> AugmentPipe:
    """Build a pipe from a preset name in :data:`SPECS` (``"bgc"`` is the paper's default).

    ``overrides`` are :class:`AugmentPipe` keywords (multipliers, ``strengths``,
    ``interpolation``) that replace the preset's values.
    """
    if spec not in SPECS:
        raise AugmentError(f"unknown augmentation spec {spec!r}; choose from {', '.join(SPECS)}")
    return _build({**SPECS[spec], **overrides}, p)


def for_kind(kind: str, spec: str = "bgc", p: float = 0.0, **overrides: Any) -> AugmentPipe:
    """A preset pipe with the augmentations that make no sense for an image kind switched off.

    ``"faces"`` disables x-flip (lateralised signs); ``"skin"`` disables hue rotation and luma
    flip (colour is diagnostic); ``"generic"`` changes nothing.  ``overrides`` win over both.
    """
    if kind not in KINDS:
        raise AugmentError(f"unknown image kind {kind!r}; choose from {', '.join(KINDS)}")
    if spec not in SPECS:
        raise AugmentError(f"unknown augmentation spec {spec!r}; choose from {', '.join(SPECS)}")
    return _build({**SPECS[spec], **KINDS[kind], **overrides}, p)


def _build(kwargs: dict[str, Any], p: float) -> AugmentPipe:
    unknown = sorted(set(kwargs) - set(OPS) - {"strengths", "interpolation"})
    if unknown:
        raise AugmentError(f"unknown augmentation option(s): {', '.join(unknown)}")
    return AugmentPipe(p=p, **kwargs)
