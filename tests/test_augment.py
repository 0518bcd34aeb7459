"""Behaviour of the ADA augmentation pipeline and the adaptive-p heuristic (tiny CPU images)."""
from __future__ import annotations

import io
import math

import pytest
import torch

from synth.training.augment import (
    OPS,
    SPECS,
    AdaptiveP,
    AugmentError,
    AugmentPipe,
    for_kind,
    pipe_from_spec,
)

torch.set_num_threads(1)


def _images(n: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g) * 2 - 1


def _dihedral(img: torch.Tensor) -> list[tuple[bool, int, torch.Tensor]]:
    """All 8 flips/quarter turns of one [C, H, W] image as (mirrored, turns, image)."""
    out = []
    for mirrored in (False, True):
        base = img.flip(2) if mirrored else img
        for k in range(4):
            out.append((mirrored, k, torch.rot90(base, k, (1, 2))))
    return out


def _match_dihedral(out: torch.Tensor, img: torch.Tensor) -> tuple[bool, int] | None:
    for mirrored, k, cand in _dihedral(img):
        if torch.allclose(out, cand, atol=1e-5):
            return mirrored, k
    return None


# --- identity and basic behaviour ------------------------------------------------------------


def test_p_zero_returns_input_object_unchanged():
    x = _images()
    pipe = pipe_from_spec("bgcfnc", p=0.0)
    assert pipe(x) is x


def test_p_one_changes_every_image_with_full_pipeline():
    torch.manual_seed(1)
    x = _images()
    y = pipe_from_spec("bgc", p=1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    per_sample = (y - x).abs().flatten(1).amax(1)
    assert (per_sample > 1e-3).all()


@pytest.mark.parametrize("op", OPS)
def test_each_op_alone_changes_images_and_zero_multiplier_disables_it(op):
    torch.manual_seed(2)
    x = _images(n=16)
    on = AugmentPipe(**{op: 1.0}, p=1.0)
    assert on.enabled == (op,)
    assert not torch.allclose(on(x), x, atol=1e-4)
    off = AugmentPipe(**{op: 0.0}, p=1.0)
    assert off.enabled == ()
    assert torch.equal(off(x), x)


def test_xflip_only_gives_input_or_exact_mirror_and_both_occur():
    torch.manual_seed(3)
    x = _images(n=32)
    y = AugmentPipe(xflip=1.0, p=1.0)(x)
    kinds = set()
    for i in range(len(x)):
        if torch.equal(y[i], x[i]):
            kinds.add("same")
        else:
            assert torch.allclose(y[i], x[i].flip(2), atol=1e-6)
            kinds.add("mirror")
    assert kinds == {"same", "mirror"}


def test_rotate90_is_exact_and_xflip_switch_controls_mirroring():
    torch.manual_seed(4)
    x = _images(n=48)
    no_flip = for_kind("faces", spec="b", xint=0.0, p=1.0)
    seen = set()
    for i, out in enumerate(no_flip(x)):
        match = _match_dihedral(out, x[i])
        assert match is not None and match[0] is False  # faces: rotations only, never mirrored
        seen.add(match[1])
    assert seen == {0, 1, 2, 3}
    with_flip = pipe_from_spec("b", xint=0.0, p=1.0)
    matches = [_match_dihedral(out, x[i]) for i, out in enumerate(with_flip(x))]
    assert all(m is not None for m in matches)
    assert {m[0] for m in matches} == {False, True}


def test_integer_translation_is_a_whole_pixel_shift_within_an_eighth():
    import numpy as np

    torch.manual_seed(5)
    size = 32
    limit = size // 8
    x = _images(n=8, size=size)
    y = AugmentPipe(xint=1.0, p=1.0)(x).numpy()
    # Reflection padding mirrors about the image edge: numpy's "symmetric" mode.
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (limit, limit), (limit, limit)), mode="symmetric")
    shifts = set()
    for i in range(len(x)):
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                window = padded[i, :, limit - dy : limit - dy + size, limit - dx : limit - dx + size]
                if np.allclose(y[i], window, atol=1e-5):
                    shifts.add((dy, dx))
                    break
            else:
                continue
            break
        else:
            raise AssertionError(f"sample {i} is not a whole-pixel shift of at most {limit} px")
    assert len(shifts) > 1


def _blob_moments(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance of a bright blob along x and y, per sample ([N, C, H, W] in [-1, 1])."""
    w = ((img.mean(1) + 1) / 2).clamp(min=0)  # [N, H, W]
    n, h, wd = w.shape
    ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(wd, dtype=torch.float32).view(1, 1, wd)
    mass = w.sum(dim=(1, 2))
    mx, my = (w * xs).sum(dim=(1, 2)) / mass, (w * ys).sum(dim=(1, 2)) / mass
    vx = (w * (xs - mx.view(n, 1, 1)) ** 2).sum(dim=(1, 2)) / mass
    vy = (w * (ys - my.view(n, 1, 1)) ** 2).sum(dim=(1, 2)) / mass
    return vx, vy


def test_isotropic_scale_keeps_shape_and_anisotropic_scale_keeps_area():
    size, sigma = 32, 3.0
    r2 = (torch.arange(size) + 0.5 - size / 2).square()
    blob = torch.exp(-(r2.view(-1, 1) + r2.view(1, -1)) / (2 * sigma**2)) * 2 - 1
    x = blob.expand(16, 3, size, size).contiguous()
    v0x, v0y = _blob_moments(x)
    torch.manual_seed(20)
    sx, sy = _blob_moments(AugmentPipe(scale=1.0, p=1.0)(x))
    assert torch.allclose(sx, sy, rtol=0.03)  # still round
    assert ((sx / v0x - 1).abs() > 0.1).any()  # but resized
    torch.manual_seed(21)
    ax, ay = _blob_moments(AugmentPipe(aniso=1.0, p=1.0)(x))
    assert torch.allclose(ax * ay, v0x * v0y, rtol=0.08)  # x stretched by s, y by 1/s
    assert ((ax / ay - 1).abs() > 0.2).any()


def test_unselected_samples_are_untouched_by_geometric_resampling():
    # With a small p most samples draw no geometric op; they must come back bit-exact
    # (no blur from the resampler), otherwise the augmentation would leak into G.
    torch.manual_seed(6)
    x = _images(n=64)
    y = pipe_from_spec("bg", p=0.05)(x)
    exact = [torch.equal(y[i], x[i]) for i in range(len(x))]
    assert sum(exact) >= 32
    assert not all(exact)


# --- colour ------------------------------------------------------------------------------------


def test_brightness_only_shifts_each_sample_by_a_constant():
    torch.manual_seed(7)
    x = _images()
    y = AugmentPipe(brightness=1.0, p=1.0)(x)
    diff = (y - x).flatten(1)
    shift = diff[:, :1]
    assert torch.allclose(diff, shift.expand_as(diff), atol=1e-5)
    assert shift.abs().max() > 1e-3
    assert torch.allclose(y.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)), shift.squeeze(1), atol=1e-5)


def test_contrast_only_scales_each_sample():
    torch.manual_seed(8)
    x = _images()
    y = AugmentPipe(contrast=1.0, p=1.0)(x)
    ratio = (y.flatten(1) / x.flatten(1))
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert (ratio[:, 0] > 0).all() and not torch.allclose(ratio[:, 0], torch.ones(len(x)))


@pytest.mark.parametrize("op", ["hue", "saturation"])
def test_hue_and_saturation_keep_luma(op):
    # Both act orthogonally to the grey axis, so the per-pixel channel mean is preserved.
    torch.manual_seed(9)
    x = _images()
    y = AugmentPipe(**{op: 1.0}, p=1.0)(x)
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)


def test_lumaflip_negates_luma_or_leaves_image():
    torch.manual_seed(10)
    x = _images(n=16)
    y = AugmentPipe(lumaflip=1.0, p=1.0)(x)
    flipped = 0
    for i in range(len(x)):
        if not torch.allclose(y[i], x[i], atol=1e-5):
            flipped += 1
            assert torch.allclose(y[i].mean(0), -x[i].mean(0), atol=1e-5)
            # Chroma (deviation from the grey level) is unchanged.
            assert torch.allclose(y[i] - y[i].mean(0), x[i] - x[i].mean(0), atol=1e-5)
    assert 0 < flipped < len(x)


def test_colour_ops_need_three_channels():
    pipe = AugmentPipe(hue=1.0, p=1.0)
    with pytest.raises(AugmentError, match="3-channel"):
        pipe(torch.zeros(2, 1, 16, 16))
    # Geometric ops work on any channel count.
    assert AugmentPipe(rotate=1.0, p=1.0)(torch.zeros(2, 1, 16, 16)).shape == (2, 1, 16, 16)


# --- filter, noise, cutout ---------------------------------------------------------------------


def test_imgfilter_keeps_a_flat_image_flat():
    # Mirror extension: no seams from wrap-around, so a constant image only has its DC gain changed.
    torch.manual_seed(11)
    x = torch.full((4, 3, 16, 16), 0.5)
    y = AugmentPipe(imgfilter=1.0, p=1.0)(x)
    flat = y.flatten(2)
    assert torch.allclose(flat, flat[:, :, :1].expand_as(flat), atol=1e-5)
    # A left-to-right ramp keeps its extremes at the edges; a filter that wrapped the right
    # edge around to the left would pull the two edges towards each other.
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(16, 3, 16, 16).contiguous()
    cols = AugmentPipe(imgfilter=1.0, p=1.0)(ramp).mean(dim=(1, 2))
    assert (cols.argmin(1) == 0).all() and (cols.argmax(1) == 15).all()
    assert not torch.allclose(cols, ramp.mean(dim=(1, 2)), atol=1e-3)


def test_cutout_zeroes_one_square_region():
    torch.manual_seed(12)
    size = 32
    x = _images(n=8, size=size) + 3.0  # strictly positive so zeros come only from cutout
    y = AugmentPipe(cutout=1.0, p=1.0)(x)
    for i in range(len(x)):
        zero = (y[i] == 0).all(0)
        kept = ~zero
        assert torch.equal(y[i][:, kept], x[i][:, kept])
        rows, cols = zero.any(1).nonzero(), zero.any(0).nonzero()
        assert 0 < len(rows) <= size // 2 and 0 < len(cols) <= size // 2
        # The zeroed region is a full rectangle (the square clipped at the border).
        assert int(zero.sum()) == len(rows) * len(cols)


def test_noise_is_zero_mean_and_image_independent():
    torch.manual_seed(13)
    x = _images(n=16, size=32)
    y = AugmentPipe(noise=1.0, p=1.0)(x)
    d = y - x
    assert d.abs().max() > 0
    assert abs(float(d.mean())) < 0.01
    assert float(d.std()) < 0.5


# --- numerical properties ------------------------------------------------------------------------


def test_gradients_flow_and_are_finite_including_double_backward():
    torch.manual_seed(14)
    x = _images(n=4).requires_grad_(True)
    pipe = pipe_from_spec("bgcfnc", p=0.8)
    w = torch.randn(4, 3, 16, 16, requires_grad=True)  # stands in for D's weights
    score = (pipe(x) * w).sum()
    (grad_x,) = torch.autograd.grad(score, x, create_graph=True)
    assert torch.isfinite(grad_x).all() and grad_x.abs().sum() > 0
    grad_x.square().sum().backward()  # the R1 penalty needs the double backward
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_output_finite_and_roughly_in_range():
    torch.manual_seed(15)
    x = _images(n=32, size=32)
    y = pipe_from_spec("bgcfnc", p=0.6)(x)
    assert torch.isfinite(y).all()
    assert float(y.abs().mean()) < 2.0
    assert float(y.abs().max()) < 20.0


def test_same_seed_same_result_and_generator_argument():
    x = _images()
    pipe = pipe_from_spec("bgcfnc", p=0.7)
    torch.manual_seed(16)
    a = pipe(x)
    torch.manual_seed(16)
    b = pipe(x)
    torch.manual_seed(17)
    c = pipe(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(pipe(x, generator=g1), pipe(x, generator=g2))


def test_odd_batch_sizes_and_half_precision_input():
    pipe = pipe_from_spec("bgc", p=0.5)
    for n in (0, 1, 3):
        assert pipe(_images(n=n)).shape == (n, 3, 16, 16)
    y = pipe(_images(n=2).half())
    assert y.dtype == torch.float16 and torch.isfinite(y).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_shapes_and_is_finite():
    pipe = pipe_from_spec("bgcfnc", p=0.5).cuda()
    x = _images(n=4).cuda().requires_grad_(True)
    y = pipe(x)
    y.sum().backward()
    assert y.device.type == "cuda" and torch.isfinite(x.grad).all()


# --- configuration and presets --------------------------------------------------------------------


def test_presets_enable_the_expected_groups():
    assert pipe_from_spec("b").enabled == ("xflip", "rotate90", "xint")
    assert len(pipe_from_spec("bg").enabled) == 7
    assert len(pipe_from_spec("bgc").enabled) == 12
    assert pipe_from_spec("bgcfnc").enabled == OPS
    assert pipe_from_spec("none").enabled == ()
    assert set(SPECS) >= {"b", "bg", "bgc", "bgcfnc"}


def test_for_kind_presets():
    faces = for_kind("faces")
    assert faces.mult["xflip"] == 0.0 and faces.mult["rotate90"] == 1.0 and faces.mult["hue"] == 1.0
    skin = for_kind("skin")
    assert skin.mult["hue"] == 0.0 and skin.mult["lumaflip"] == 0.0
    assert skin.mult["xflip"] == 1.0 and skin.mult["saturation"] == 1.0
    assert for_kind("generic").enabled == pipe_from_spec("bgc").enabled
    assert for_kind("skin", hue=0.5).mult["hue"] == 0.5  # explicit overrides win


def test_skin_kind_never_rotates_hue_or_flips_luma():
    torch.manual_seed(18)
    x = _images()
    # Leave only the colour ops the skin preset disables: nothing must happen.
    skin = for_kind("skin", spec="color", brightness=0.0, contrast=0.0, saturation=0.0, p=1.0)
    assert torch.equal(skin(x), x)
    generic = for_kind("generic", spec="color", brightness=0.0, contrast=0.0, saturation=0.0, p=1.0)
    assert not torch.allclose(generic(x), x, atol=1e-3)


def test_config_rebuilds_an_equivalent_pipe():
    pipe = for_kind("skin", spec="bgcfnc", p=0.3, strengths={"noise_std": 0.05})
    clone = AugmentPipe(**pipe.config())
    clone.load_state_dict(pipe.state_dict())
    x = _images()
    torch.manual_seed(19)
    a = pipe(x)
    torch.manual_seed(19)
    assert torch.equal(a, clone(x))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: AugmentPipe(xflip=-1.0), "xflip"),
        (lambda: AugmentPipe(p=1.5), "p=1.5"),
        (lambda: AugmentPipe(interpolation="nearest"), "interpolation"),
        (lambda: AugmentPipe(strengths={"bogus": 1.0}), "bogus"),
        (lambda: pipe_from_spec("bgx"), "bgx"),
        (lambda: pipe_from_spec("bgc", wobble=1.0), "wobble"),
        (lambda: for_kind("xray"), "xray"),
        (lambda: AugmentPipe(xflip=1.0, p=1.0)(torch.zeros(3, 16, 16)), r"\[N, C, H, W\]"),
    ],
)
def test_bad_settings_give_one_line_errors(make, match):
    with pytest.raises(AugmentError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


# --- adaptive p ------------------------------------------------------------------------------------


def test_adaptive_p_increases_when_d_is_confident_on_reals():
    pipe = pipe_from_spec("bgc")
    ada = AdaptiveP(pipe, target=0.6, interval=4, ada_kimg=500)
    logits = torch.tensor([1.0, 2.0, 0.5, -1.0, 3.0, 1.0, 2.0, 1.0])  # E[sign] = 0.75 > 0.6
    adjusted = [ada.update(logits) for _ in range(8)]
    assert adjusted == [False, False, False, True] * 2
    step = 8 * 4 / (500 * 1000)
    assert math.isclose(ada.p, 2 * step, rel_tol=1e-5)
    assert math.isclose(ada.stats()["ada/rt"], 0.75, rel_tol=1e-6)


def test_adaptive_p_decreases_below_target_and_stays_clamped():
    pipe = pipe_from_spec("bgc", p=0.001)
    ada = AdaptiveP(pipe, target=0.6, interval=2, ada_kimg=0.001)  # step = 8 * 2 / 1 > 1
    low = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0])  # E[sign] = 0.25
    for _ in range(6):
        ada.update(low)
        assert 0.0 <= ada.p <= 1.0
    assert ada.p == 0.0
    high = torch.ones(8)
    for _ in range(6):
        ada.update(high)
        assert 0.0 <= ada.p <= 1.0
    assert ada.p == 1.0


def test_adaptive_p_window_averages_over_interval_and_holds_at_target():
    pipe = pipe_from_spec("bgc", p=0.5)
    ada = AdaptiveP(pipe, target=0.5, interval=2, ada_kimg=1)
    ada.update(torch.ones(4))  # window mean = (4 - 0) / 8 with the next batch
    ada.update(torch.zeros(4))  # sign(0) = 0 -> r_t = 0.5 == target: no move
    assert ada.p == 0.5 and ada.stats()["ada/rt"] == 0.5


def test_adaptive_p_state_round_trip_resumes_exactly():
    pipe = pipe_from_spec("bgc", p=0.2)
    ada = AdaptiveP(pipe, interval=4, ada_kimg=0.05)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(8, generator=gen) + 0.4 for _ in range(11)]
    for d in batches[:6]:  # stop mid-window
        ada.update(d)
    buf = io.BytesIO()
    torch.save({"pipe": pipe.state_dict(), "ada": ada.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    pipe2 = pipe_from_spec("bgc")
    ada2 = AdaptiveP(pipe2, interval=4, ada_kimg=0.05)
    pipe2.load_state_dict(state["pipe"])
    ada2.load_state_dict(state["ada"])
    assert ada2.p == ada.p and ada2.batches == ada.batches == 2
    for d in batches[6:]:
        assert ada.update(d) == ada2.update(d)
        assert ada.p == ada2.p
    assert ada.p != 0.2


def test_adaptive_p_rejects_bad_settings():
    pipe = pipe_from_spec("bgc")
    with pytest.raises(AugmentError, match="interval"):
        AdaptiveP(pipe, interval=0)
    with pytest.raises(AugmentError, match="ada_kimg"):
        AdaptiveP(pipe, ada_kimg=0)
    with pytest.raises(AugmentError, match="AugmentPipe"):
        AdaptiveP(torch.nn.Identity())


# --- preview command ----------------------------------------------------------------------------


def _write_images(folder, n: int = 2, size: int = 20) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


@pytest.mark.parametrize("with_labels", [False, True])
def test_preview_writes_a_deterministic_grid(tmp_path, with_labels):
    from click.testing import CliRunner
    from PIL import Image

    from synth.training.augment_preview import augment_preview

    data = tmp_path / "data"
    _write_images(data, n=2)
    if with_labels:
        (data / "labels.csv").write_text("file,disease\nimg0.png,unaffected\nimg1.png,syndrome_a\n")
    args = [str(data), "-n", "2", "-k", "3", "-r", "16", "--p", "1", "--kind", "faces", "--seed", "3"]
    runner = CliRunner()
    first = runner.invoke(augment_preview, [*args, "-o", str(tmp_path / "a.png")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(augment_preview, [*args, "-o", str(tmp_path / "b.png")])
    assert second.exit_code == 0, second.output
    assert Image.open(tmp_path / "a.png").size == (4 * 16, 2 * 16)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_preview_bad_data_is_a_one_line_error_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from synth.training.augment_preview import augment_preview

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(augment_preview, [str(empty), "-o", str(out)])
    assert result.exit_code != 0
    assert "DATA" in result.output and str(empty) in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [empty]


def test_from_reference_kwargs_and_band_multipliers():
    ref = {"xflip": 1, "rotate90": 1, "xint": 1, "scale": 1, "rotate": 1, "aniso": 1, "xfrac": 1,
           "brightness": 1, "contrast": 1, "lumaflip": 1, "hue": 1, "saturation": 1,
           "imgfilter": 1, "imgfilter_bands": [1, 1, 1, 1], "xint_max": 0.25, "noise_std": 0.05}  # fmt: skip
    pipe = AugmentPipe.from_reference_kwargs(ref, p=0.4)
    assert pipe.enabled == pipe_from_spec("bgcf").enabled
    assert pipe.strengths.xint_max == 0.25 and pipe.strengths.imgfilter_bands == (1.0, 1.0, 1.0, 1.0)
    assert math.isclose(float(pipe.p), 0.4, rel_tol=1e-6)
    with pytest.raises(AugmentError, match="warp"):
        AugmentPipe.from_reference_kwargs({**ref, "warp": 1})
    # Band multipliers of zero switch the filter off entirely.
    x = _images()
    silent = AugmentPipe(imgfilter=1.0, p=1.0, strengths={"imgfilter_bands": [0, 0, 0, 0]})
    assert torch.allclose(silent(x), x, atol=1e-5)
    with pytest.raises(AugmentError, match="imgfilter_bands"):
        AugmentPipe(strengths={"imgfilter_bands": [1, 1]})
