import csv

import numpy as np
import pytest
import torch
from torch import nn

from classifiers.attribution import (
    AttributionError,
    composite_grid_png,
    composite_maps,
    integrated_gradients,
    occlusion_saliency,
    save_overlays,
)
from classifiers.permutation import (
    backbone_embedder,
    permutation_test,
    permutation_test_matrix,
    random_projection_embedder,
    write_permutation_outputs,
)

torch.set_num_threads(1)
PNG = b"\x89PNG\r\n\x1a\n"


class QuadrantModel(nn.Module):
    """Two-class model whose class-1 logit only sees the top-left quadrant."""

    def __init__(self, scale: float = 4.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        h, w = x.shape[-2:]
        s = x[:, :, : h // 2, : w // 2].mean(dim=(1, 2, 3)) * self.scale
        return torch.stack([torch.zeros_like(s), s], dim=1)


class LinearModel(nn.Module):
    def __init__(self, c=3, h=8, w=8, k=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(k, c * h * w, generator=g))
        self.bias = nn.Parameter(torch.randn(k, generator=g))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def test_occlusion_only_relevant_quadrant():
    images = torch.ones(2, 3, 16, 16)
    images[1] *= 0.5
    # windows tile the image exactly (4 x 4, stride 4): nothing outside the quadrant moves
    maps = occlusion_saliency(QuadrantModel(), images, [1, 1], window=4, stride=4)
    assert maps.shape == (2, 16, 16)
    quad = np.zeros((16, 16), dtype=bool)
    quad[:8, :8] = True
    assert np.all(maps[:, quad] > 0)
    assert np.allclose(maps[:, ~quad], 0)
    # overlapping windows (stride 2) bleed a little over the border, nearly all mass inside
    maps = occlusion_saliency(QuadrantModel(), images, [1, 1], window=4, stride=2, batch_size=7)
    inside = maps[:, quad].sum(axis=1) / maps.reshape(2, -1).sum(axis=1)
    assert np.all(inside > 0.85)
    assert np.allclose(maps[:, 11:, :], 0) and np.allclose(maps[:, :, 11:], 0)
    # targeting class 0 flips the sign: occluding evidence for class 1 helps class 0
    neg = occlusion_saliency(QuadrantModel(), images, [0, 0], window=4, stride=4)
    assert np.all(neg[:, quad] < 0)


def test_occlusion_matches_captum_and_averages_ensemble():
    from captum.attr import Occlusion

    torch.manual_seed(0)
    images = torch.randn(2, 3, 16, 16)
    m1, m2 = LinearModel(h=16, w=16, seed=1), LinearModel(h=16, w=16, seed=2)
    ours = occlusion_saliency([m1], images, [0, 1], window=4, stride=2)
    ref = Occlusion(lambda x: torch.softmax(m1(x), dim=1)).attribute(
        images, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=0.0, target=torch.tensor([0, 1]))
    assert np.allclose(ours, ref[:, 0].detach().numpy(), atol=1e-5)
    both = occlusion_saliency([m1, m2], images, [0, 1], window=4, stride=2)
    second = occlusion_saliency([m2], images, [0, 1], window=4, stride=2)
    assert np.allclose(both, (ours + second) / 2, atol=1e-6)
    # a window not dividing the image still covers every pixel (edge window added)
    odd = occlusion_saliency([m1], images, [0, 1], window=5, stride=5)
    assert np.all(odd[:, -1, :] != 0)


def test_occlusion_bad_input():
    with pytest.raises(AttributionError, match="targets"):
        occlusion_saliency(QuadrantModel(), torch.ones(2, 3, 8, 8), [1])
    with pytest.raises(AttributionError, match=r"\[N, C, H, W\]"):
        occlusion_saliency(QuadrantModel(), torch.ones(3, 8, 8), [1])


def test_integrated_gradients_linear_completeness():
    torch.manual_seed(0)
    model = LinearModel()
    x = torch.randn(3, 3, 8, 8)
    targets = torch.tensor([0, 1, 1])
    # for a linear model IG with a zero baseline is exactly input * weight of the target
    attr = integrated_gradients([model], x, targets, steps=8, reduce="none")
    w = model.weight.detach()[targets].reshape(3, 3, 8, 8)
    assert np.allclose(attr, (x * w).numpy(), atol=1e-5)
    signed = integrated_gradients(model, x, targets, steps=8, reduce="sum")
    out = model(x).detach()[torch.arange(3), targets] - model(torch.zeros_like(x)).detach()[torch.arange(3), targets]
    assert np.allclose(signed.reshape(3, -1).sum(1), out.numpy(), atol=1e-4)
    default = integrated_gradients(model, x, targets, steps=8)
    assert default.shape == (3, 8, 8)
    assert np.allclose(default, (x * w).abs().sum(1).numpy(), atol=1e-5)
    # ensemble = mean of the members
    m2 = LinearModel(seed=5)
    ens = integrated_gradients([model, m2], x, targets, steps=8, reduce="none")
    w2 = m2.weight.detach()[targets].reshape(3, 3, 8, 8)
    assert np.allclose(ens, (x * (w + w2) / 2).numpy(), atol=1e-5)


def _blob_maps(n, center, rng, size=16, noise=0.3):
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / 8.0)
    return blob[None] + noise * rng.standard_normal((n, size, size))


def test_permutation_test_separates_groups():
    rng = np.random.default_rng(0)
    embed = random_projection_embedder((16, 16), dim=32, seed=0)
    a = _blob_maps(12, (4, 4), rng)
    b = _blob_maps(10, (11, 11), rng)
    stat, p = permutation_test(a, b, embed, n_perm=199, seed=0)
    assert stat > 0
    assert p == pytest.approx(1 / 200)  # smallest possible p: no shuffle comes close
    # same distribution -> p roughly uniform: over five draws the median is far from small
    p_same = [permutation_test(_blob_maps(12, (4, 4), rng), _blob_maps(10, (4, 4), rng), embed,
                               n_perm=99, seed=s).p_value for s in range(5)]
    assert np.median(p_same) > 0.2
    c = _blob_maps(12, (4, 4), rng)
    # deterministic by seed
    assert permutation_test(a, c, embed, n_perm=50, seed=3) == permutation_test(a, c, embed, n_perm=50, seed=3)
    # the statistic is the embedding distance of the group means
    direct = np.linalg.norm(embed(a.mean(0, keepdims=True)) - embed(b.mean(0, keepdims=True)))
    assert stat == pytest.approx(direct)


def test_permutation_matrix_and_outputs(tmp_path):
    rng = np.random.default_rng(1)
    embed = random_projection_embedder((16, 16), dim=16, seed=1)
    groups = {"infant": _blob_maps(8, (3, 3), rng), "child": _blob_maps(8, (12, 12), rng),
              "adult": _blob_maps(8, (3, 3), rng)}
    names, p, st = permutation_test_matrix(groups, embed, n_perm=99, seed=0)
    assert names == ["infant", "child", "adult"]
    assert np.allclose(p, p.T) and np.allclose(st, st.T)
    assert np.all(np.diag(p) == 1) and np.all(np.diag(st) == 0)
    assert p[0, 1] == pytest.approx(0.01) and p[1, 2] == pytest.approx(0.01)
    assert p[0, 2] > 0.05
    paths = write_permutation_outputs(tmp_path / "perm", names, p, st)
    rows = list(csv.DictReader(paths["pairs"].read_text().splitlines()))
    assert [(r["group_a"], r["group_b"]) for r in rows] == [("infant", "child"), ("infant", "adult"), ("child", "adult")]
    assert float(rows[0]["p_value"]) == pytest.approx(0.01)
    matrix = list(csv.reader(paths["matrix"].read_text().splitlines()))
    assert matrix[0] == ["", "infant", "child", "adult"] and len(matrix) == 4
    assert paths["png"].read_bytes()[:8] == PNG
    with pytest.raises(AttributionError):
        permutation_test_matrix({"one": groups["infant"]}, embed)


def test_backbone_embedder_tiny_timm(tmp_path):
    embed = backbone_embedder("test_resnet", pretrained=False, size=32)
    maps = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    e1 = embed(maps)
    assert e1.ndim == 2 and e1.shape[0] == 3 and e1.shape[1] > 1
    # frozen, seeded: a second embedder gives identical features
    assert np.allclose(backbone_embedder("test_resnet", size=32)(maps), e1, atol=1e-6)
    assert not np.allclose(e1[0], e1[1])
    # local weights round trip (tensor-only file), wrong file rejected
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_resnet", num_classes=0)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = backbone_embedder("test_resnet", pretrained=tmp_path / "w.safetensors", size=32)(maps)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(torch.as_tensor(maps)[:, None].expand(-1, 3, -1, -1), size=(32, 32),
                                            mode="bilinear", align_corners=False)
        cfg = src.pretrained_cfg
        mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        ref = src.eval()((x - mean) / std).numpy()
    assert np.allclose(loaded, ref, atol=1e-5)
    save_file({"x": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(AttributionError, match="do not fit"):
        backbone_embedder("test_resnet", pretrained=tmp_path / "bad.safetensors")
    with pytest.raises(AttributionError, match="not found"):
        backbone_embedder("test_resnet", pretrained=tmp_path / "missing.pt")
    with pytest.raises(AttributionError, match="nothing is downloaded"):
        backbone_embedder("test_resnet", pretrained=True)


def test_overlays_and_composites(tmp_path):
    from PIL import Image

    imgs = torch.rand(3, 3, 16, 16) * 2 - 1
    maps = np.zeros((3, 8, 8), dtype=np.float32)
    maps[:, :4, :4] = 1.0  # half-resolution maps are resized to the image
    paths = save_overlays(tmp_path / "ov", imgs, maps, ["a/b", "c", "d"])
    assert [p.name for p in paths] == ["a_b.png", "c.png", "d.png"]
    arr = np.asarray(Image.open(paths[0]))
    assert arr.shape == (16, 16, 3)
    # hot corner is tinted by the colormap's top colour, the cold corner by its bottom one
    assert not np.array_equal(arr[1, 1], arr[14, 14])
    uint8 = np.full((1, 16, 16, 3), 128, dtype=np.uint8)
    save_overlays(tmp_path / "ov", uint8, np.zeros((1, 16, 16)), ["grey"], cmap="inferno")
    with pytest.raises(AttributionError):
        save_overlays(tmp_path / "ov", uint8, np.zeros((2, 16, 16)), ["x"])

    m = np.stack([np.full((4, 4), v, dtype=np.float32) for v in (1, 3, 10, 20, 30)])
    comp = composite_maps(m, ["old", "young", "old", "young", "mid"], order=["young", "mid", "old", "none"],
                          png_path=tmp_path / "comp.png")
    assert list(comp) == ["young", "mid", "old"]
    assert np.allclose(comp["young"], 11.5) and np.allclose(comp["old"], 5.5) and np.allclose(comp["mid"], 30)
    assert (tmp_path / "comp.png").read_bytes()[:8] == PNG
    composite_grid_png(tmp_path / "grid.png", {("a", "x"): m[0], ("b", "y"): m[1]}, title="t", shared_scale=False)
    assert (tmp_path / "grid.png").exists()
