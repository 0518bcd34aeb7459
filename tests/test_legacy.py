"""Safe importer for official StyleGAN2-ADA snapshot pickles, with conditional surgery."""
from __future__ import annotations

import collections
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from synth.conditions import ConditionSpace, Factor
from synth.networks import Discriminator, Generator
from synth.networks.legacy import (
    LegacyImportError,
    generator_kwargs_from_official,
    import_official,
    load_official_pickle,
)

torch.set_num_threads(1)

SYN = dict(channel_base=256, channel_max=32)


@pytest.fixture
def fake_official(monkeypatch):
    """Install throw-away ``torch_utils.persistence`` / ``dnnlib.util`` modules for *writing* pickles."""
    tu, tp = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    dn, du = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # what official loading would call: runs module_src
        exec(meta["module_src"], {})  # noqa: S102 - only reachable if an importer misbehaves

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    tp._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu.persistence = tp

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    du.EasyDict = EasyDict
    dn.util = du
    for name, mod in (("torch_utils", tu), ("torch_utils.persistence", tp), ("dnnlib", dn), ("dnnlib.util", du)):
        monkeypatch.setitem(sys.modules, name, mod)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict)


class _Persisted:
    """Pickles exactly like an official persistent network object."""

    def __init__(self, fns, meta):
        self.fns, self.meta = fns, meta

    def __reduce__(self):
        return (self.fns.reconstruct, (self.meta,))


def _persist(fns, module: torch.nn.Module, src: str, init_kwargs=None, add_filter=False) -> _Persisted:
    buffers = collections.OrderedDict((k, v) for k, v in module._buffers.items() if k not in module._non_persistent_buffers_set)
    if add_filter or "resample_filter" in module._buffers:  # official checkpoints store these
        buffers["resample_filter"] = torch.ones(4, 4) / 16
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(module._parameters),
        "_buffers": buffers,
        "_modules": collections.OrderedDict((k, _persist(fns, m, src)) for k, m in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": fns.EasyDict(init_kwargs or {}),
        "_forward_hooks": collections.OrderedDict(),
    }
    meta = dict(type="class", version=6, module_src=src, class_name=f"training.networks.{type(module).__name__}", state=state)
    return _Persisted(fns, meta)


def _official_g_kwargs(fns):
    return fns.EasyDict(
        z_dim=32, c_dim=0, w_dim=32, img_resolution=16, img_channels=3,
        mapping_kwargs=fns.EasyDict(num_layers=2),
        synthesis_kwargs=fns.EasyDict(channel_base=256, channel_max=32, num_fp16_res=0, conv_clamp=None),
    )


def _write_snapshot(tmp_path, fns):
    marker = tmp_path / "EXECUTED"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src ran')\n"
    torch.manual_seed(100)
    G = Generator(32, 32, None, 16, 3, dict(num_layers=2), SYN)
    torch.manual_seed(101)
    G_ema = Generator(32, 32, None, 16, 3, dict(num_layers=2), SYN)
    torch.manual_seed(102)
    D = Discriminator(None, 16, 3, **SYN)
    aug = torch.nn.Module()
    aug.register_buffer("p", torch.tensor(0.25))
    snap = {
        "G": _persist(fns, G, src, _official_g_kwargs(fns)),
        "D": _persist(fns, D, src, fns.EasyDict(c_dim=0, img_resolution=16, img_channels=3, architecture="resnet", **SYN)),
        "G_ema": _persist(fns, G_ema, src, _official_g_kwargs(fns)),
        "augment_pipe": _persist(fns, aug, src, fns.EasyDict(xflip=np.float32(1.0))),
        "training_set_kwargs": fns.EasyDict(path="/data/ffhq.zip", resolution=np.int64(16)),
    }
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(snap, protocol=4))
    return path, marker, G, G_ema, D


def face_space():
    return ConditionSpace(
        [
            Factor("disease", ("syndrome_a", "syndrome_b", "unaffected"), embed_dim=16, control="unaffected"),
            Factor("age", ("child", "adult"), embed_dim=16),
        ]
    )


def test_load_official_pickle_never_executes_module_src(tmp_path, fake_official):
    path, marker, G, G_ema, D = _write_snapshot(tmp_path, fake_official)
    nets = load_official_pickle(path)
    assert not marker.exists()
    assert set(nets) == {"G", "D", "G_ema"}
    assert nets["G"]["class_name"] == "training.networks.Generator"
    kw = nets["G"]["init_kwargs"]
    assert kw["synthesis_kwargs"]["channel_base"] == 256 and type(kw) is dict
    sd = nets["G_ema"]["state_dict"]
    assert torch.equal(sd["synthesis.b16.conv0.weight"], G_ema.synthesis.b16.conv0.weight)
    assert torch.equal(sd["mapping.w_avg"], G_ema.mapping.w_avg)
    assert "synthesis.b16.conv0.resample_filter" in sd
    assert torch.equal(nets["D"]["state_dict"]["b4.out.weight"], D.b4.out.weight)
    rebuilt = Generator(**generator_kwargs_from_official(kw))
    assert set(rebuilt.state_dict()) <= set(sd)
    # the fixture is a real hazard: the ordinary unpickler (our own file here) runs module_src
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_import_unconditional_into_conditional_with_surgery(tmp_path, fake_official, capsys):
    path, marker, G_src, G_ema_src, D_src = _write_snapshot(tmp_path, fake_official)
    space = face_space()
    torch.manual_seed(0)
    G = Generator(32, 32, space, 16, 3, dict(num_layers=2), SYN)
    G_ema = Generator(32, 32, space, 16, 3, dict(num_layers=2), SYN)
    D = Discriminator(space, 16, 3, **SYN)
    embed_before = G.mapping.embed.disease.weight.detach().clone()
    rep = import_official(path, G, D=D, G_ema=G_ema, report=True, strict=True)
    assert not marker.exists()

    # everything with matching name and shape is copied, from the right source network
    assert torch.equal(G.synthesis.b8.conv1.weight, G_src.synthesis.b8.conv1.weight)
    assert torch.equal(G_ema.synthesis.b8.conv1.weight, G_ema_src.synthesis.b8.conv1.weight)
    assert torch.equal(G.mapping.fc1.weight, G_src.mapping.fc1.weight)
    assert torch.equal(D.b16.skip.weight, D_src.b16.skip.weight)
    assert torch.equal(D.b4.fc.weight, D_src.b4.fc.weight)

    # fc0: z columns kept with their effective (equalized-lr) value, label columns new
    w_new, w_old = G.mapping.fc0.weight.detach(), G_src.mapping.fc0.weight.detach()
    assert w_new.shape == (32, 64) and w_old.shape == (32, 32)
    eff_new = w_new[:, :32] * G.mapping.fc0.weight_gain
    eff_old = w_old * G_src.mapping.fc0.weight_gain
    assert torch.allclose(eff_new, eff_old, atol=1e-6)
    assert 0 < w_new[:, 32:].std() < 0.5 * w_old.std()
    assert torch.equal(G.mapping.embed.disease.weight, embed_before)  # fresh = kept its init

    g, d = rep["G"], rep["D"]
    assert [n for n, _ in g.reshaped] == ["mapping.fc0.weight"]
    assert {n for n, _ in g.fresh} == {f"mapping.embed.{f}.{p}" for f in ("disease", "age") for p in ("weight", "bias")}
    assert "synthesis.b8.conv0.weight" in g.loaded and not g.skipped
    assert "synthesis.b8.resample_filter" in g.ignored
    d_fresh = {n for n, _ in d.fresh}
    assert {"b4.out.weight", "b4.out.bias", "mapping.embed.age.weight", "mapping.fc7.weight"} <= d_fresh
    assert all(n.startswith(("mapping.", "b4.out.")) for n in d_fresh)
    assert "b4.conv.weight" in d.loaded
    text = capsys.readouterr().out
    assert "reshaped  mapping.fc0.weight" in text and "fresh     b4.out.weight" in text
    assert rep.unexpected == []

    # the imported conditional G runs and responds to the label
    c1 = torch.from_numpy(space.encode({"disease": "syndrome_a", "age": "child"})).reshape(1, -1)
    c2 = torch.from_numpy(space.encode({"disease": "unaffected", "age": "child"})).reshape(1, -1)
    z = torch.randn(1, 32)
    with torch.no_grad():
        assert (G(z, c1, noise_mode="const") - G(z, c2, noise_mode="const")).abs().max() > 0


def test_strict_import_fails_without_changing_the_model(tmp_path, fake_official):
    path, *_ = _write_snapshot(tmp_path, fake_official)
    torch.manual_seed(0)
    G = Generator(32, 32, None, 16, 3, dict(num_layers=2), dict(channel_base=512, channel_max=64))  # wider
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with pytest.raises(LegacyImportError, match="strict import failed") as e:
        import_official(path, G, report=False, strict=True)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    rep = import_official(path, G, report=False, strict=False)
    assert "G.synthesis.b4.const" in rep.unexpected
    assert any(n == "synthesis.b4.const" for n, _ in rep["G"].fresh)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_forbidden_global_is_rejected(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G": _Evil(marker)}))
    with pytest.raises(LegacyImportError) as e:
        load_official_pickle(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "system" in msg and "forbidden" in msg
    assert not marker.exists()


def test_unreadable_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(LegacyImportError, match="cannot read"):
        load_official_pickle(tmp_path / "missing.pkl")
    bad = tmp_path / "trunc.pkl"
    bad.write_bytes(pickle.dumps({"G": 1})[:-3])
    with pytest.raises(LegacyImportError, match="not a readable") as e:
        load_official_pickle(bad)
    assert "\n" not in str(e.value)
    notnet = tmp_path / "notnet.pkl"
    notnet.write_bytes(pickle.dumps({"G": 3}))
    with pytest.raises(LegacyImportError, match="not a persisted network"):
        load_official_pickle(notnet)


def test_cli_takes_the_architecture_from_the_pickle_and_refuses_a_partial_transfer(tmp_path, fake_official):
    """A transfer that would leave synthesis weights random is not fine-tuning: the architecture
    comes from the pickle unless overridden, and an override that breaks the load is refused."""
    import json

    from click.testing import CliRunner

    from synth.training.cli import train
    from tests.helpers import grid_rows, write_tiny_dataset

    path, *_ = _write_snapshot(tmp_path, fake_official)
    data = write_tiny_dataset(tmp_path / "ds", grid_rows(["syndrome_a", "unaffected"], ["child", "adolescent"], per_cell=2))
    base = ["--data", str(data), "--resume", str(path), "--batch", "4", "--kimg", "0.008", "--tick", "0.008", "--no-progress"]
    r = CliRunner().invoke(train, [*base, "--out", str(tmp_path / "dry"), "--dry-run"])
    assert r.exit_code == 0, r.output
    o = json.loads(r.output)["options"]
    assert (o["resolution"], o["z_dim"], o["w_dim"], o["map_layers"], o["channel_base"], o["channel_max"]) == (16, 32, 32, 2, 256, 32)
    # the preset's network would differ from the pickle's; taken from the pickle, every synthesis tensor loads
    r = CliRunner().invoke(train, [*base, "--out", str(tmp_path / "ok")])
    assert r.exit_code == 0, r.output
    log = next((tmp_path / "ok").iterdir()).joinpath("log.txt").read_text()
    assert "fresh     synthesis." not in log and "loaded    synthesis.b16.conv1.weight" in log
    # an override that breaks the load: refused in one line, nothing left behind
    r = CliRunner().invoke(train, [*base, "--channel-max", "16", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 1 and "synthesis tensors do not fit" in r.output and "--partial-transfer" in r.output, r.output
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    r = CliRunner().invoke(train, [*base, "--channel-max", "16", "--partial-transfer", "--out", str(tmp_path / "partial")])
    assert r.exit_code == 0, r.output
