"""StyleGAN2 networks: official naming/shapes, factored embedding, resampling, parity counts."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from synth.conditions import ConditionSpace, Factor
from synth.networks import Discriminator, Generator
from synth.networks.layers import conv2d_resample, downsample2d, filter2d, modulated_conv2d, setup_filter, upsample2d

torch.set_num_threads(1)

SMALL_SYN = dict(channel_base=256, channel_max=32)  # 32 ch at 4/8 px, 16 ch at 16 px


def face_space() -> ConditionSpace:
    return ConditionSpace(
        [
            Factor("disease", ("syndrome_a", "syndrome_b", "other_condition", "unaffected"), embed_dim=24, control="unaffected"),
            Factor("age", ("infant", "child", "adolescent", "young_adult", "older_adult"), embed_dim=8, ordinal=True),
        ]
    )


def stage_space() -> ConditionSpace:
    return ConditionSpace([Factor("stage", ("early", "intermediate", "late"), embed_dim=16, ties={"intermediate": ("early", "late")})])


def small_G(space=None, seed=0, res=16) -> Generator:
    torch.manual_seed(seed)
    return Generator(32, 32, space, res, 3, mapping_kwargs=dict(num_layers=2), synthesis_kwargs=SMALL_SYN).eval()


def small_D(space=None, seed=0, res=16) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(space, res, 3, **SMALL_SYN).eval()


def cvec(space: ConditionSpace, n: int = 1, **labels) -> torch.Tensor:
    return torch.from_numpy(space.encode(labels)).unsqueeze(0).repeat(n, 1)


# ---- reference operations written out naively --------------------------------------------


def upfirdn2d_ref(x, f, up=1, down=1, pad=(0, 0, 0, 0), gain=1.0):
    """Zero-insert, pad (x0, x1, y0, y1; negative crops), true 2-D convolution, decimate."""
    N, C, H, W = x.shape
    if up > 1:
        z = torch.zeros(N, C, H * up, W * up, dtype=x.dtype)
        z[:, :, ::up, ::up] = x
        x = z
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    fh, fw = f.shape
    g = (f * gain).flip([0, 1])
    Ho, Wo = x.shape[2] - fh + 1, x.shape[3] - fw + 1
    out = torch.zeros(N, C, Ho, Wo, dtype=x.dtype)
    for i in range(fh):
        for j in range(fw):
            out += g[i, j] * x[:, :, i : i + Ho, j : j + Wo]
    return out[:, :, ::down, ::down]


def modconv_loop(x, weight, styles, up=1, demodulate=True):
    """Per-sample modulated conv, one sample at a time."""
    outs = []
    f = setup_filter()
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        outs.append(conv2d_resample(x[n : n + 1], w, f, up=up, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


# ---- parity and naming ---------------------------------------------------------------------


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_parity_with_official_configs():
    paper = dict(channel_base=16384, channel_max=512)
    with torch.device("meta"):
        G = Generator(512, 512, None, 256, 3, dict(num_layers=8), paper)
        D = Discriminator(None, 256, 3, **paper)
        G_auto = Generator(512, 512, None, 256, 3, dict(num_layers=2), paper)
        space10 = ConditionSpace([Factor("label", tuple(f"l{i}" for i in range(10)), embed_dim=512)])
        Gc = Generator(512, 512, space10, 256, 3, dict(num_layers=8), paper)
        Dc = Discriminator(space10, 256, 3, **paper)
    assert n_params(G) == 24_767_458
    assert n_params(D) == 24_001_089
    assert n_params(G_auto) == 23_191_522
    # a single-factor space is the reference's plain embedding
    assert n_params(Gc) == 25_035_234
    assert n_params(Dc) == 26_370_112
    assert G.num_ws == 14


def test_official_names_and_shapes_small_config():
    G, D = small_G(), small_D()
    g = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert G.num_ws == 6
    assert g["mapping.fc0.weight"] == (32, 32) and g["mapping.fc1.bias"] == (32,)
    assert g["mapping.w_avg"] == (32,)
    assert g["synthesis.b4.const"] == (32, 4, 4)
    assert g["synthesis.b4.conv1.weight"] == (32, 32, 3, 3)
    assert g["synthesis.b16.conv0.weight"] == (16, 32, 3, 3)
    assert g["synthesis.b16.conv0.affine.weight"] == (32, 32)
    assert g["synthesis.b16.conv1.noise_const"] == (16, 16)
    assert g["synthesis.b16.conv1.noise_strength"] == ()
    assert g["synthesis.b16.torgb.weight"] == (3, 16, 1, 1)
    assert "synthesis.b4.conv0.weight" not in g
    assert not any("resample_filter" in k for k in g)
    assert torch.all(G.synthesis.b8.conv0.affine.bias == 1)  # affine bias starts at 1
    d = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    assert d["b16.fromrgb.weight"] == (16, 3, 1, 1)
    assert "b8.fromrgb.weight" not in d
    assert d["b16.conv0.weight"] == (16, 16, 3, 3) and d["b16.conv1.weight"] == (32, 16, 3, 3)
    assert d["b16.skip.weight"] == (32, 16, 1, 1) and "b16.skip.bias" not in d
    assert d["b4.conv.weight"] == (32, 33, 3, 3)
    assert d["b4.fc.weight"] == (32, 32 * 16)
    assert d["b4.out.weight"] == (1, 32)
    assert not any(k.startswith("mapping.") for k in d)


def test_factored_embedding_widths_and_names():
    space = face_space()
    G, D = small_G(space), small_D(space)
    sd = G.state_dict()
    assert sd["mapping.embed.disease.weight"].shape == (24, 4)
    assert sd["mapping.embed.age.weight"].shape == (8, 5)
    assert sd["mapping.embed.age.bias"].shape == (8,)
    assert sd["mapping.fc0.weight"].shape == (32, 32 + 24 + 8)
    dsd = D.state_dict()
    assert dsd["mapping.embed.disease.weight"].shape == (24, 4)
    assert dsd["mapping.fc0.weight"].shape == (32, 32)  # z_dim 0: embed_total inputs
    assert dsd["mapping.fc7.weight"].shape == (32, 32)  # 8 layers, cmap_dim = channels at 4x4
    assert dsd["b4.out.weight"].shape == (32, 32)
    assert G.c_dim == D.c_dim == 9


def test_tied_level_is_exactly_the_mean_and_never_learned():
    space = stage_space()
    G = small_G(space)
    emb = G.mapping.embed
    rows = emb.level_embeddings("stage")
    assert torch.allclose(rows[1], (rows[0] + rows[2]) / 2, atol=1e-6)
    # the tied level's own weight column is unused: editing it changes nothing ...
    z = torch.randn(2, 32)
    c = cvec(space, 2, stage="intermediate")
    w_before = G.mapping(z, c)
    with torch.no_grad():
        emb.stage.weight[:, 1] += 5.0
    assert torch.equal(G.mapping(z, c), w_before)
    # ... and it never receives a gradient
    emb.stage.weight.grad = None
    G.mapping(z, c).square().sum().backward()
    assert emb.stage.weight.grad is not None
    assert torch.count_nonzero(emb.stage.weight.grad[:, 1]) == 0
    assert torch.count_nonzero(emb.stage.weight.grad[:, 0]) > 0


def test_label_changes_output_and_const_noise_is_repeatable():
    space = face_space()
    G = small_G(space)
    z = torch.randn(2, 32)
    a = cvec(space, 2, disease="syndrome_a", age="child")
    b = cvec(space, 2, disease="syndrome_a", age="older_adult")  # only the age block differs
    with torch.no_grad():
        ia = G(z, a, noise_mode="const")
        ia2 = G(z, a.clone(), noise_mode="const")
        ib = G(z, b, noise_mode="const")
    assert ia.shape == (2, 3, 16, 16)
    assert torch.equal(ia, ia2)
    assert (ia - ib).abs().max() > 1e-4


def test_soft_labels_mix_the_embeddings():
    space = face_space()
    G = small_G(space)
    a = space.encode({"disease": "syndrome_a", "age": "child"})
    b = space.encode({"disease": "syndrome_b", "age": "child"})
    soft = torch.from_numpy(space.mix({"disease": "syndrome_a", "age": "child"}, {"disease": "syndrome_b", "age": "child"}, 0.3))
    ea, eb, es = (G.mapping.embed(torch.as_tensor(v).reshape(1, -1)) for v in (a, b, soft))
    assert torch.allclose(es, 0.3 * ea + 0.7 * eb, atol=1e-5)
    z = torch.randn(1, 32)
    with torch.no_grad():
        imgs = [G(z, torch.as_tensor(v).reshape(1, -1), noise_mode="const") for v in (a, b, soft)]
    assert torch.isfinite(imgs[2]).all()
    assert (imgs[2] - imgs[0]).abs().max() > 1e-5 and (imgs[2] - imgs[1]).abs().max() > 1e-5


def test_discriminator_shape_and_label_dependence():
    space = face_space()
    D = small_D(space)
    img = torch.randn(4, 3, 16, 16)
    a = cvec(space, 4, disease="syndrome_a", age="child")
    b = cvec(space, 4, disease="unaffected", age="child")
    with torch.no_grad():
        sa, sb = D(img, a), D(img, b)
    assert sa.shape == (4, 1)
    assert (sa - sb).abs().max() > 1e-6
    with pytest.raises(ValueError, match="label c has shape"):
        D(img, a[:, :5])
    # odd batch sizes still work (mbstd group falls back to a divisor)
    assert D(img[:3], a[:3]).shape == (3, 1)


def test_unconditional_networks_run():
    G, D = small_G(), small_D()
    with torch.no_grad():
        img = G(torch.randn(2, 32), None)
        assert D(img, None).shape == (2, 1)


# ---- numerics of the fast paths --------------------------------------------------------------


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_unfused_modconv_match_reference(up, demodulate):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, 8, 8, generator=g)
    w = torch.randn(6, 8, 3, 3, generator=g)
    s = torch.randn(3, 8, generator=g) + 1
    f = setup_filter()
    ref = modconv_loop(x, w, s, up=up, demodulate=demodulate)
    fused = modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, demodulate=demodulate, fused=True)
    unfused = modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, demodulate=demodulate, fused=False)
    assert fused.shape == ref.shape == (3, 6, 8 * up, 8 * up)
    assert torch.allclose(fused, ref, atol=1e-4)
    assert torch.allclose(unfused, ref, atol=1e-4)


def test_generator_fused_equals_unfused():
    space = face_space()
    G = small_G(space)
    z = torch.randn(2, 32)
    c = cvec(space, 2, disease="syndrome_b", age="infant")
    with torch.no_grad():
        a = G(z, c, noise_mode="const", fused_modconv=True)
        b = G(z, c, noise_mode="const", fused_modconv=False)
    assert torch.allclose(a, b, atol=1e-4)


def test_fir_resampling_matches_reference_upfirdn():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 8, generator=g)
    f = setup_filter()
    assert torch.allclose(upsample2d(x, f), upfirdn2d_ref(x, f, up=2, pad=(2, 1, 2, 1), gain=4), atol=1e-5)
    assert torch.allclose(downsample2d(x, f), upfirdn2d_ref(x, f, down=2, pad=(1, 1, 1, 1)), atol=1e-5)
    assert torch.allclose(filter2d(x, f, (1, 2, 1, 2), gain=3), upfirdn2d_ref(x, f, pad=(1, 2, 1, 2), gain=3), atol=1e-5)
    # upsampling conv == FIR upsampling followed by a plain (true) convolution
    w = torch.randn(5, 3, 3, 3, generator=g)
    up_ref = F.conv2d(upfirdn2d_ref(x, f, up=2, pad=(3, 2, 3, 2), gain=4), w.flip([2, 3]))
    assert torch.allclose(conv2d_resample(x, w, f, up=2, padding=1), up_ref, atol=1e-4)
    # downsampling convs: FIR then strided conv (3x3), FIR+decimate then conv (1x1)
    down_ref = F.conv2d(upfirdn2d_ref(x, f, pad=(2, 2, 2, 2)), w, stride=2)
    assert torch.allclose(conv2d_resample(x, w, f, down=2, padding=1), down_ref, atol=1e-4)
    w1 = torch.randn(5, 3, 1, 1, generator=g)
    assert torch.allclose(conv2d_resample(x, w1, f, down=2), F.conv2d(upfirdn2d_ref(x, f, down=2, pad=(1, 1, 1, 1)), w1), atol=1e-4)


# ---- mapping features, config, determinism -------------------------------------------------


def test_mean_w_and_truncation_override():
    space = face_space()
    G = small_G(space)
    ca = torch.from_numpy(space.encode({"disease": "syndrome_a", "age": "child"}))
    cb = torch.from_numpy(space.encode({"disease": "unaffected", "age": "child"}))
    ma = G.mapping.mean_w(ca, num_samples=300, seed=3)
    assert ma.shape == (32,)
    assert torch.equal(ma, G.mapping.mean_w(ca, num_samples=300, seed=3))
    assert (ma - G.mapping.mean_w(cb, num_samples=300, seed=3)).abs().max() > 1e-4
    z = torch.randn(3, 32)
    ws = G.mapping(z, ca.expand(3, -1), truncation_psi=0.0, w_avg=ma)
    assert torch.allclose(ws, ma.expand(3, G.num_ws, -1))
    ws_cut = G.mapping(z, ca.expand(3, -1), truncation_psi=0.0, truncation_cutoff=2, w_avg=ma)
    assert torch.allclose(ws_cut[:, :2], ma.expand(3, 2, -1))
    assert torch.allclose(ws_cut[:, 2:], G.mapping(z, ca.expand(3, -1))[:, 2:])


def test_update_emas_tracks_w_avg():
    G = small_G(face_space()).train()
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    c = cvec(G.space, 4, disease="syndrome_a", age="child")
    G.mapping(torch.randn(4, 32), c)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    G.mapping(torch.randn(4, 32), c, update_emas=True)
    assert torch.count_nonzero(G.mapping.w_avg) > 0


def test_config_round_trip_through_json():
    space = stage_space()
    G, D = small_G(space), small_D(space)
    G2 = Generator.from_config(json.loads(json.dumps(G.config())))
    D2 = Discriminator.from_config(json.loads(json.dumps(D.config())))
    assert G2.space == space and G2.num_ws == G.num_ws
    G2.load_state_dict(G.state_dict())
    D2.load_state_dict(D.state_dict())
    z = torch.randn(2, 32)
    c = cvec(space, 2, stage="late")
    with torch.no_grad():
        assert torch.equal(G(z, c, noise_mode="const"), G2.eval()(z, c, noise_mode="const"))
        img = torch.randn(2, 3, 16, 16)
        assert torch.equal(D(img, c), D2.eval()(img, c))
    with pytest.raises(ValueError, match="not a Generator"):
        Generator.from_config(D.config())


def test_same_seed_same_results():
    space = face_space()
    outs = []
    for _ in range(2):
        G = small_G(space, seed=7)
        torch.manual_seed(11)
        z = torch.randn(2, 32)
        with torch.no_grad():
            outs.append(G(z, cvec(space, 2, disease="syndrome_a", age="infant"), noise_mode="random"))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(small_G(space, seed=8).synthesis.b4.const, small_G(space, seed=7).synthesis.b4.const)


def test_bad_inputs_give_clear_errors():
    space = face_space()
    G = small_G(space)
    with pytest.raises(ValueError, match="no label c"):
        G(torch.randn(1, 32), None)
    with pytest.raises(ValueError, match="noise_mode"):
        G(torch.randn(1, 32), cvec(space, 1, disease="syndrome_a", age="child"), noise_mode="loud")
    with pytest.raises(ValueError, match="power of two"):
        Generator(32, 32, None, 24)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_paths_match_fused_in_forward_and_backward(channels_last):
    """The unfused CPU path (folded epilogue, bmm ToRGB, memory formats) == the plain fused path."""
    space = face_space()
    G, D = small_G(space).train(), small_D(space).train()
    z = torch.randn(4, 32)
    c = cvec(space, 4, disease="other_condition", age="adolescent")
    with torch.no_grad():
        for p in G.parameters():  # non-zero noise strengths so the noise path matters
            if p.ndim == 0:
                p.fill_(0.3)
    grads, outs = [], []
    for fused, cl in ((True, False), (False, channels_last)):
        G.synthesis.channels_last = D.channels_last = cl
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        torch.manual_seed(5)  # same random noise in both runs
        img = G(z, c, noise_mode="random", fused_modconv=fused)
        loss = F.softplus(-D(img, c)).mean()
        loss.backward()
        outs.append(img.detach())
        grads.append({n: p.grad.clone() for n, p in list(G.named_parameters()) + list(D.named_parameters()) if p.grad is not None})
    assert torch.allclose(outs[0], outs[1], atol=1e-4)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 20
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-3, atol=1e-5), n


def test_inference_weight_cache_follows_weight_updates():
    space = face_space()
    G = small_G(space)
    z = torch.randn(2, 32)
    c = cvec(space, 2, disease="syndrome_a", age="child")
    with torch.no_grad():
        G(z, c, noise_mode="const", fused_modconv=False)  # fills the cache
        G.synthesis.b8.conv1.weight.add_(torch.randn_like(G.synthesis.b8.conv1.weight))  # e.g. an optimizer/EMA step
        after = G(z, c, noise_mode="const", fused_modconv=False)
        ref = G(z, c, noise_mode="const", fused_modconv=True)
    assert torch.allclose(after, ref, atol=1e-4)


@pytest.mark.parametrize("kernel,down,bias", [(3, 1, True), (3, 2, True), (1, 2, False), (1, 1, True)])
def test_conv2d_layer_matches_explicit_formula(kernel, down, bias):
    from synth.networks.layers import Conv2dLayer

    torch.manual_seed(3)
    layer = Conv2dLayer(4, 6, kernel, bias=bias, activation="lrelu" if bias else "linear", down=down)
    if bias:
        with torch.no_grad():
            layer.bias.normal_()
    x = torch.randn(2, 4, 8, 8)
    w = layer.weight / math.sqrt(4 * kernel * kernel)
    f = setup_filter()
    if down == 1:
        y = F.conv2d(x, w, padding=kernel // 2)
    elif kernel == 3:
        y = F.conv2d(upfirdn2d_ref(x, f, pad=(2, 2, 2, 2)), w, stride=2)
    else:
        y = F.conv2d(upfirdn2d_ref(x, f, down=2, pad=(1, 1, 1, 1)), w)
    if bias:
        y = F.leaky_relu(y + layer.bias.reshape(1, -1, 1, 1), 0.2) * math.sqrt(2)
    y = y * 0.5
    assert torch.allclose(layer(x, gain=0.5), y, atol=1e-5)
