"""`synth project`: projecting photos into W / W+, the projected_w.npz it writes, and using a
projection with `synth morph --w` and `synth generate --w`.  Tiny 16 px generators throughout."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from synth.conditions import ConditionSpace
from tests.helpers import tiny_generator, run_synthesis_cli

SPACE = ConditionSpace.default(["disease", "age"], embed_total=32)
LABEL = "disease=syndrome_a,age=child"
FAST = ["--steps", "20", "--mean-w-samples", "200", "--quiet"]


run = run_synthesis_cli


def renderer(G, psi=1.0):
    from synth.synthesis.engine import Renderer

    return Renderer(G, psi=psi, noise_mode="const", mean_w_samples=200, batch=4)


def own_image(G, seed=0, psi=0.7):
    """The tiny generator's own output for LABEL: a target that W can represent exactly."""
    return renderer(G, psi).images([seed], SPACE.encode({"disease": "syndrome_a", "age": "child"})[None])[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from synth.networks import Discriminator
    from synth.networks.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("project")
    G = tiny_generator(SPACE)
    save_checkpoint(d / "g.ckpt", {"G_ema": G, "space": SPACE})
    save_checkpoint(d / "other.ckpt", {"G_ema": tiny_generator(SPACE, 1), "space": SPACE})
    torch.manual_seed(0)
    D = Discriminator(space=SPACE, img_resolution=16, channel_base=128, channel_max=16)
    save_checkpoint(d / "with_d.ckpt", {"G_ema": G, "D": D, "space": SPACE})
    (d / "photos").mkdir()
    Image.fromarray(own_image(G)).save(d / "photos" / "face.png")
    out = d / "proj"
    r = run(["project", d / "photos" / "face.png", "--label", LABEL, "--network", d / "g.ckpt", "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    return {"dir": d, "ckpt": d / "g.ckpt", "other": d / "other.ckpt", "with_d": d / "with_d.ckpt",
            "photo": d / "photos" / "face.png", "proj": out, "npz": out / "face" / "projected_w.npz"}


# ----------------------------------------------------------------------------------------
# the optimisation


def test_projecting_the_generators_own_image_recovers_it():
    from synth.synthesis.project import ProjectConfig, PyramidL2, parse_label, project

    G = tiny_generator(SPACE)
    before = {n: b.clone() for n, b in G.synthesis.named_buffers() if n.endswith("noise_const")}
    target = own_image(G)
    _, c = parse_label(SPACE, LABEL)
    # measured on this generator: 15.2 -> 29.3 dB, distance x 0.065 (W, fixed noise, 150 steps)
    p = project(G, target, c, PyramidL2(), ProjectConfig(steps=150, optimize_noise=False, mean_w_samples=1000), progress=False)
    assert p.initial_psnr < 17 and p.psnr > 26, (p.initial_psnr, p.psnr)
    assert p.distance_value < 0.12 * p.initial_distance
    assert p.w.shape == (G.num_ws, G.w_dim) and np.allclose(p.w, p.w[:1])  # W: one w for every layer
    # W+ with noise optimisation (the defaults otherwise): measured 15.2 -> 20.5 dB, distance x 0.12
    # (this random generator's noise strengths are large, so the regularised noise costs fidelity)
    q = project(G, target, c, PyramidL2(), ProjectConfig(steps=150, w_plus=True, mean_w_samples=1000), progress=False)
    assert q.psnr > 19 and q.distance_value < 0.2 * q.initial_distance, (q.psnr, q.distance_value / q.initial_distance)
    assert not np.allclose(q.w, q.w[:1]) and q.noise
    assert len(q.history) == 150 and q.history[-1]["lr"] < q.history[len(q.history) // 2]["lr"]  # ramped down
    for n, b in G.synthesis.named_buffers():  # the generator's own noise is left as it was
        if n.endswith("noise_const"):
            assert torch.equal(b, before[n])
    assert all(p_.requires_grad and p_.grad is None for p_ in G.parameters())  # flags restored, no stray gradients


def test_same_seed_same_projection_other_seed_differs():
    from synth.synthesis.project import ProjectConfig, PyramidL2, parse_label, project

    G = tiny_generator(SPACE)
    target = own_image(G, seed=3)
    _, c = parse_label(SPACE, LABEL)
    runs = [project(G, target, c, PyramidL2(), ProjectConfig(steps=15, seed=s, mean_w_samples=200), progress=False)
            for s in (4, 4, 5)]
    assert np.array_equal(runs[0].w, runs[1].w) and np.array_equal(runs[0].image, runs[1].image)
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
    assert all(np.array_equal(runs[0].noise[k], runs[1].noise[k]) for k in runs[0].noise)
    assert not np.array_equal(runs[0].w, runs[2].w)


def test_anchor_z_recovers_a_mapped_w_and_w_prior_pulls_toward_the_mean():
    from synth.synthesis.project import ProjectConfig, PyramidL2, anchor_z, label_stats, parse_label, project

    G = tiny_generator(SPACE)
    _, c = parse_label(SPACE, LABEL)
    _, spread = label_stats(G, c, 1000)
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)), torch.as_tensor(c)[None])[0]
    z, d = anchor_z(G, w, c)
    assert z.shape == (G.z_dim,) and d < 0.1 * spread, (d, spread)  # a w the mapping makes is found again
    target = own_image(G, seed=1)
    free, pulled = (project(G, target, c, PyramidL2(), ProjectConfig(steps=40, w_prior=wp, mean_w_samples=500), progress=False)
                    for wp in (0.0, 1.0))
    assert pulled.w_offset_sd < free.w_offset_sd and free.z is not None and np.isfinite(free.z_residual)


# ----------------------------------------------------------------------------------------
# outputs


def test_cli_writes_npz_with_space_hash_and_distance(files):
    from synth.synthesis.network import file_sha256

    folder = files["proj"] / "face"
    with np.load(files["npz"], allow_pickle=False) as z:
        assert ConditionSpace.from_json(str(z["condition_space"])) == SPACE
        assert str(z["network_sha256"]) == file_sha256(files["ckpt"])
        assert str(z["distance"]) == "pyramid-l2" and str(z["w_space"]) == "W"
        assert json.loads(str(z["label_levels"])) == {"disease": "syndrome_a", "age": "child"}
        assert np.array_equal(z["label"], SPACE.encode({"disease": "syndrome_a", "age": "child"}))
        G = tiny_generator(SPACE)
        assert z["w"].shape == (1, G.num_ws, G.w_dim)
        assert np.isfinite(float(z["loss"])) and int(z["steps"]) == 20
        assert any(k.startswith("noise:") for k in z.files)
        assert z["z_anchor"].shape == (G.z_dim,) and np.isfinite(float(z["z_residual"]))
    info = json.loads((files["proj"] / "project.json").read_text())
    assert info["distance"] == "pyramid-l2" and info["network_sha256"] == file_sha256(files["ckpt"])
    assert info["images"][0]["w"] == "face/projected_w.npz"
    assert info["images"][0]["psnr"] > info["images"][0]["initial_psnr"]
    rows = list(csv.DictReader((folder / "loss.csv").open()))
    assert len(rows) == 20 and float(rows[-1]["distance"]) < float(rows[0]["distance"])
    for name in ("compare.png", "loss.png"):
        assert Image.open(folder / name).size[0] > 0
    assert not list(files["proj"].rglob(".*"))  # no temporary files left


def test_cli_w_plus_folder_input_and_force(files, tmp_path):
    out = tmp_path / "wp"
    r = run(["project", files["photo"].parent, "--label", LABEL, "--network", files["ckpt"], "--out", out, "--w-plus", *FAST])
    assert r.exit_code == 0, r.output
    with np.load(out / "face" / "projected_w.npz", allow_pickle=False) as z:
        assert str(z["w_space"]) == "W+" and not np.allclose(z["w"][0], z["w"][0, :1])
    r = run(["project", files["photo"], "--label", LABEL, "--network", files["ckpt"], "--out", out, *FAST])
    assert r.exit_code != 0 and "--force" in r.output
    r = run(["project", files["photo"], "--label", LABEL, "--network", files["ckpt"], "--out", out, "--force", *FAST])
    assert r.exit_code == 0, r.output


def test_discriminator_features_join_the_fallback_distance(files, tmp_path):
    out = tmp_path / "d"
    r = run(["project", files["photo"], "--label", LABEL, "--network", files["with_d"], "--out", out, "--distance",
             "pyramid", "--d-features", *FAST])
    assert r.exit_code == 0, r.output
    with np.load(out / "face" / "projected_w.npz", allow_pickle=False) as z:
        assert str(z["distance"]) == "pyramid-l2+d-features"


def _fake_alexnet_file(path):
    """A torchvision-style alexnet checkpoint (random, features only: small), so the LPIPS
    path is exercised without downloading anything."""
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    sd = {f"features.{k.split('.', 1)[1]}": v for k, v in m.net.state_dict().items()}
    torch.save(sd, path)
    return path


def test_lpips_only_from_local_weights(files, tmp_path, monkeypatch):
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.project import LPIPS_BACKBONES, make_distance

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache
    assert make_distance("auto").name == "pyramid-l2"
    with pytest.raises(SynthesisError, match="backbone weights not found"):
        make_distance("lpips")
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    _fake_alexnet_file(hub / LPIPS_BACKBONES["alex"])
    d = make_distance("auto")  # no vgg file, so alex from the hub cache
    assert d.name == "lpips-alex"
    x = torch.zeros(1, 3, 16, 16)
    assert float(d(x, x)) == pytest.approx(0.0, abs=1e-6) and float(d(x, x + 0.5)) > 0
    out = tmp_path / "lp"
    r = run(["project", files["photo"], "--label", LABEL, "--network", files["ckpt"], "--out", out,
             "--lpips-net", "alex", "--lpips-weights", hub / LPIPS_BACKBONES["alex"], "--steps", "3",
             "--mean-w-samples", "100", "--quiet"])
    assert r.exit_code == 0, r.output
    with np.load(out / "face" / "projected_w.npz", allow_pickle=False) as z:
        assert str(z["distance"]) == "lpips-alex"


# ----------------------------------------------------------------------------------------
# using a projection


def test_morph_and_generate_with_w_start_from_the_projection(files, tmp_path):
    from synth.synthesis.morph import MorphSpec, render_morph
    from synth.synthesis.project import IdentityRenderer, load_projected_w, render_w

    G = tiny_generator(SPACE)
    ident = load_projected_w(files["npz"], G=G, space=SPACE)
    ref = render_w(G, ident.w, ident.noise)
    spec = MorphSpec("age", "child", "older_adult", {"disease": "syndrome_a"})
    keys, anim = render_morph(IdentityRenderer(renderer(G), [ident]), SPACE, spec, 0, steps=3, frames=4)
    assert np.array_equal(keys[0], ref) and np.array_equal(anim[0], ref)
    assert not np.array_equal(keys[-1], ref)

    out = tmp_path / "m"
    r = run(["morph", "--w", files["npz"], "--network", files["ckpt"], "--out", out, "--steps", "3", "--frames", "4",
             "--quiet", "--mean-w-samples", "200"])
    assert r.exit_code == 0, r.output
    info = json.loads((out / "morph.json").read_text())
    assert (info["from"], info["fixed"], info["psi"]) == ("child", {"disease": "syndrome_a"}, 1.0)
    assert info["seeds"][0]["name"] == "face" and info["seeds"][0]["w"] == str(files["npz"])
    assert (out / "morph_face.png").exists() and (out / "morph_face.gif").exists()

    out = tmp_path / "g"
    r = run(["generate", "--type", "age_related", "--w", files["npz"], "--network", files["ckpt"], "--out", out,
             "--quiet", "--mean-w-samples", "200"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert [row["age"] for row in rows] == list(SPACE.factor("age").levels)
    assert {row["disease"] for row in rows} == {"syndrome_a"} and {row["subject"] for row in rows} == {"w0"}
    child = next(row for row in rows if row["age"] == "child")
    assert np.array_equal(np.asarray(Image.open(out / child["file"]).convert("RGB")), ref)
    assert json.loads((out / "generation.json").read_text())["identities"][0]["w"] == str(files["npz"])

    # without an anchor z the face moves by mean-w offsets; the first frame is still the projection
    out_nz = tmp_path / "nz"
    r = run(["project", files["photo"], "--label", LABEL, "--network", files["ckpt"], "--out", out_nz, "--no-z-anchor", *FAST])
    assert r.exit_code == 0, r.output
    plain = load_projected_w(out_nz / "face" / "projected_w.npz", G=G, space=SPACE)
    assert plain.z is None and plain.transfer == "mean-w offset" and ident.transfer == "z-anchored"
    keys, _ = render_morph(IdentityRenderer(renderer(G), [plain]), SPACE, spec, 0, steps=3)
    assert np.array_equal(keys[0], render_w(G, plain.w, plain.noise)) and not np.array_equal(keys[-1], keys[0])

    out = tmp_path / "p"
    r = run(["generate", "--type", "age_progression", "--w", files["npz"], "--network", files["ckpt"], "--out", out,
             "--steps", "3", "--quiet", "--mean-w-samples", "200"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert len(rows) == 3 and rows[0]["age"] == "child"
    assert np.array_equal(np.asarray(Image.open(out / rows[0]["file"]).convert("RGB")), ref)


# ----------------------------------------------------------------------------------------
# bad input: one line, non-zero exit, nothing written


def _bad_inputs(files, tmp):
    """name -> (argv, text the error line must contain)."""
    tmp.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20)).save(tmp / "big.png")
    Image.new("RGB", (16, 12)).save(tmp / "wide.png")
    (tmp / "empty").mkdir(exist_ok=True)
    (tmp / "text.png").write_text("not an image")
    (tmp / "corrupt.npz").write_bytes(b"PK\x03\x04 this is no zip")
    np.savez(tmp / "pickled.npz", w=np.array([{"a": 1}], dtype=object), label=np.zeros(9),
             condition_space=np.array("x"), network_sha256=np.array("y"))
    np.savez(tmp / "no_w.npz", label=np.zeros(9))
    P = ["project", files["photo"], "--network", files["ckpt"], *FAST]
    return {
        "wrong size": (["project", tmp / "big.png", "--label", LABEL, "--network", files["ckpt"]], "synth data align"),
        "not square": (["project", tmp / "wide.png", "--label", LABEL, "--network", files["ckpt"]], "not square"),
        "unreadable image": (["project", tmp / "text.png", "--label", LABEL, "--network", files["ckpt"]], "not a readable image"),
        "empty folder": (["project", tmp / "empty", "--label", LABEL, "--network", files["ckpt"]], "no images"),
        "no images": (["project", "--label", LABEL, "--network", files["ckpt"]], "no IMAGES given"),
        "malformed label": ([*P, "--label", "syndrome_a"], "expected FACTOR=LEVEL"),
        "negative w prior": ([*P, "--label", LABEL, "--w-prior", "-1"], "--w-prior"),
        "unknown level": ([*P, "--label", "disease=flu,age=child"],
                          "'flu' is not a level of factor 'disease' known to the network (levels: syndrome_a, syndrome_b"),
        "unknown factor": ([*P, "--label", "disease=syndrome_a,age=child,height=tall"], "no factor 'height'"),
        "missing factor": ([*P, "--label", "disease=syndrome_a"], "no level for factor 'age' (levels: infant, child"),
        "lpips weights missing": ([*P, "--label", LABEL, "--lpips-weights", tmp / "nope.pth"], "--lpips-weights"),
        "no discriminator": ([*P, "--label", LABEL, "--d-features"], "no discriminator"),
        "other network": (["morph", "--w", files["npz"], "--network", files["other"]], "projected with another network"),
        "corrupt npz": (["generate", "--type", "age_related", "--w", tmp / "corrupt.npz", "--network", files["ckpt"]],
                        "not a readable projected_w.npz"),
        "pickled npz": (["morph", "--w", tmp / "pickled.npz", "--network", files["ckpt"]], "not a readable projected_w.npz"),
        "npz without w": (["morph", "--w", tmp / "no_w.npz", "--network", files["ckpt"]], "no 'w' entry"),
        "missing npz": (["morph", "--w", tmp / "none.npz", "--network", files["ckpt"]], "file not found"),
        "type without identity": (["generate", "--type", "unrelated", "--w", files["npz"], "--network", files["ckpt"]],
                                  "with --w use age_related"),
        "seeds with w": (["morph", "--w", files["npz"], "--seeds", "0-3", "--network", files["ckpt"]],
                         "--seeds: with --w the projected faces are the identities"),
    }


BAD = ["wrong size", "not square", "unreadable image", "empty folder", "no images", "malformed label", "negative w prior",
       "unknown level", "unknown factor",
       "missing factor", "lpips weights missing", "no discriminator", "other network", "corrupt npz", "pickled npz",
       "npz without w", "missing npz", "type without identity", "seeds with w"]


# the command line itself is wrong (exit 2); the rest name files or levels that do not fit (exit 1)
USAGE = {"no images", "malformed label", "negative w prior", "type without identity", "seeds with w"}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(case, files, tmp_path):
    args, needle = _bad_inputs(files, tmp_path / "in")[case]
    out = tmp_path / "out"
    r = run([*args, "--out", out])
    assert r.exit_code == (2 if case in USAGE else 1), r.output  # the exit-status rule of docs/cli.md
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ") and sum(ln.startswith("Error") for ln in lines) == 1, r.output
    assert needle in lines[-1], r.output
    assert not out.exists()


def test_existing_out_is_not_overwritten(files, tmp_path):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = run(["project", files["photo"], "--label", LABEL, "--network", files["ckpt"], "--out", out, *FAST])
    assert r.exit_code == 1 and "not empty" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_sixteen_bit_target_keeps_its_values(tmp_path):
    """One image reader for every command: a 16-bit greyscale photo is scaled, not clipped white."""
    from PIL import Image

    from synth.data.dataset import decode_image
    from synth.synthesis.project import load_target

    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    path = tmp_path / "scan16.png"
    Image.fromarray(ramp).save(path)  # uint16 -> mode I;16
    assert Image.open(path).mode.startswith("I;16")
    target = load_target(path, 16)
    assert target.shape == (16, 16, 3) and target.min() == 0 and target.max() == 255
    assert 100 < target.mean() < 155  # a ramp, not a white square
    assert np.array_equal(target, np.asarray(decode_image(path.read_bytes(), str(path))))
