"""The twice-differentiable grid_sample (used on CUDA, where PyTorch has no double backward)
must give the native CPU values, gradients and R1-style second derivatives."""
import pytest
import torch
import torch.nn.functional as F

from synth.training.grid_sample_gradfix import grid_sample


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    theta = torch.tensor([[[0.9, 0.2, 0.1], [-0.15, 1.1, -0.05]], [[1.0, -0.3, 0.0], [0.3, 0.8, 0.2]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [2, 3, 8, 8], align_corners=False)
    return x, grid


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_values_and_second_derivative_match_native(mode):
    x, grid = _inputs()
    w = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for force in (False, True):
        xx = x.clone().requires_grad_(True)
        scale = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)  # stands in for D's weights
        y = grid_sample(xx * scale, grid, mode=mode, padding_mode="reflection", force=force)
        (g1,) = torch.autograd.grad((y * w).square().sum(), xx, create_graph=True)  # R1-style gradient
        (g2,) = torch.autograd.grad(g1.square().sum(), scale)  # ... differentiated again
        results.append((y.detach(), g1.detach(), g2.detach()))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_gradgradcheck_wrt_input():
    x, grid = _inputs(2)
    x.requires_grad_(True)
    fn = lambda t: grid_sample(t, grid, mode="bilinear", padding_mode="reflection", force=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
