"""``grid_sample`` with a second derivative on every device.

The R1 penalty differentiates D's output with respect to the real images *through* the
augmentation pipe, and then differentiates that gradient again to update D. On CUDA, PyTorch
has no derivative for ``grid_sampler_2d_backward``, so the geometric augmentations stop an R1
step with "derivative for aten::grid_sampler_2d_backward is not implemented" (the CPU kernel
takes another path and does not need this).

grid_sample is linear in its input: y = A x for a sampling matrix A fixed by the grid. Its
backward is gx = A^T gy, which is again linear in gy, with derivative A: the gradient of gx
with respect to gy, applied to ggx, is grid_sample(ggx). The grid (the augmentation
parameters) never needs a gradient here. This is the same fix as the reference
implementation's; it is used on CUDA only, so CPU runs are bit-for-bit what they were.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["grid_sample"]

_MODES = {"bilinear": 0, "nearest": 1, "bicubic": 2}
_PADDING = {"zeros": 0, "border": 1, "reflection": 2}


def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros",
                align_corners: bool = False, force: bool = False) -> torch.Tensor:
    """``F.grid_sample`` that supports double backward (w.r.t. the input) on CUDA.

    ``force`` uses the twice-differentiable path on any device (tests compare it with the
    native CPU one)."""
    if not (x.is_cuda or force):
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return _GridSample.apply(x, grid.detach(), mode, padding_mode, align_corners)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, grid, mode, padding_mode, align_corners):
        ctx.save_for_backward(x, grid)
        ctx.args = (mode, padding_mode, align_corners)
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    @staticmethod
    def backward(ctx, gy):
        x, grid = ctx.saved_tensors
        gx = _GridSampleBackward.apply(gy, x, grid, *ctx.args) if ctx.needs_input_grad[0] else None
        return gx, None, None, None, None


class _GridSampleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gy, x, grid, mode, padding_mode, align_corners):
        ctx.save_for_backward(grid)
        ctx.args = (mode, padding_mode, align_corners)
        gx, _ = torch.ops.aten.grid_sampler_2d_backward(
            gy, x, grid, _MODES[mode], _PADDING[padding_mode], align_corners, [True, False]
        )
        return gx

    @staticmethod
    def backward(ctx, ggx):
        (grid,) = ctx.saved_tensors
        # d(A^T gy)/d(gy) applied to ggx is A ggx: sample ggx again with the same grid.
        ggy = _GridSample.apply(ggx, grid, *ctx.args) if ctx.needs_input_grad[0] else None
        return ggy, None, None, None, None, None
