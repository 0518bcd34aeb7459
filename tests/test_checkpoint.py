"""Snapshot format: safe round trip, atomic writes, one-line errors for bad files."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from synth.conditions import ConditionSpace
from synth.networks.checkpoint import (
    CheckpointError,
    ModuleEntry,
    load_checkpoint,
    load_generator,
    read_metadata,
    save_checkpoint,
)

SPACE = ConditionSpace.from_levels({"disease": ["syndrome_a", "unaffected"], "age": ["infant", "child", "adolescent"]}, embed_total=16)


def tiny_G(space=SPACE, channel_max=16):
    from synth.networks import Generator

    torch.manual_seed(0)
    return Generator(z_dim=8, w_dim=8, space=space, img_resolution=8, img_channels=3,
                     mapping_kwargs={"num_layers": 1}, synthesis_kwargs={"channel_base": 64, "channel_max": channel_max})


def adam_state(module):
    opt = torch.optim.Adam(module.parameters(), lr=0.01, betas=(0.0, 0.99))
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


def full_state():
    G = tiny_G()
    opt = adam_state(G)
    return G, opt, {
        "G": G,
        "G_opt": opt.state_dict(),
        "pl_mean": torch.tensor(0.25),
        "keys": np.arange(5, dtype=np.uint32),
        "progress": {"cur_nimg": 64, "cur_tick": 2},
        "space": SPACE,
    }


def test_round_trip_restores_modules_optimiser_and_values(tmp_path):
    G, opt, state = full_state()
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, state)
    ck = load_checkpoint(path)
    assert isinstance(ck["G"], ModuleEntry) and ck["G"].cls == "Generator"
    G2 = ck["G"].build()
    for (n, a), (_, b) in zip(G.state_dict().items(), G2.state_dict().items()):
        assert torch.equal(a, b), n
    opt2 = torch.optim.Adam(G2.parameters(), lr=0.5)
    opt2.load_state_dict(ck["G_opt"])  # a real optimiser accepts the restored state
    for pid, st in opt.state_dict()["state"].items():
        st2 = opt2.state_dict()["state"][pid]
        assert torch.equal(st["exp_avg_sq"], st2["exp_avg_sq"]) and float(st["step"]) == float(st2["step"])
    assert opt2.param_groups[0]["lr"] == 0.01 and tuple(opt2.param_groups[0]["betas"]) == (0.0, 0.99)
    assert float(ck["pl_mean"]) == 0.25
    assert ck["keys"].dtype == np.uint32 and ck["keys"].tolist() == [0, 1, 2, 3, 4]
    assert ck["progress"] == {"cur_nimg": 64, "cur_tick": 2}
    assert ck["space"] == SPACE
    assert read_metadata(path)["format"] == "synth-checkpoint"


def test_load_generator_gives_eval_ema_generator(tmp_path):
    G, _, state = full_state()
    state["G_ema"] = tiny_G()
    with torch.no_grad():
        for p in state["G_ema"].parameters():
            p.add_(0.5)  # distinguishable from G
    save_checkpoint(tmp_path / "g.ckpt", state)
    G2, space, meta = load_generator(tmp_path / "g.ckpt")
    assert space == SPACE and not G2.training
    z = torch.randn(2, 8)
    c = torch.from_numpy(np.stack([SPACE.encode({"disease": "unaffected", "age": "child"})] * 2))
    with torch.no_grad():
        ref = state["G_ema"].eval()(z, c, noise_mode="const")
        out = G2(z, c, noise_mode="const")
    assert torch.allclose(ref, out)
    assert meta["progress"]["cur_nimg"] == 64
    G3, _, _ = load_generator(tmp_path / "g.ckpt", ema=False)
    assert not torch.equal(next(G3.parameters()), next(G2.parameters()))


def test_crash_mid_write_keeps_old_snapshot(tmp_path, monkeypatch):
    _, _, state = full_state()
    path = tmp_path / "snap.ckpt"
    save_checkpoint(path, state)
    before = path.read_bytes()

    def crash(self, data):  # half the bytes reach disk, then the process "dies"
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", crash)
    state["pl_mean"] = torch.tensor(9.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, state)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert float(load_checkpoint(path)["pl_mean"]) == 0.25
    assert [p.name for p in tmp_path.iterdir()] == ["snap.ckpt"]  # no temp file left behind


def _one_line_error(path, match):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and match in msg, msg


def test_bad_files_give_one_line_errors(tmp_path):
    _, _, state = full_state()
    good = tmp_path / "good.ckpt"
    save_checkpoint(good, state)
    data = good.read_bytes()

    trunc = tmp_path / "trunc.ckpt"
    trunc.write_bytes(data[: len(data) - 100])
    _one_line_error(trunc, "truncated")

    short = tmp_path / "short.ckpt"
    short.write_bytes(data[:4])
    _one_line_error(short, "truncated")

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    _one_line_error(garbage, "corrupt")

    _one_line_error(tmp_path / "missing.ckpt", "not found")
    _one_line_error(tmp_path, "folder")

    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    _one_line_error(foreign, "not a synth checkpoint")

    # A newer format version than this code knows.
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["synth"])
    meta["version"] = 99
    header["__metadata__"]["synth"] = json.dumps(meta)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    newer = tmp_path / "newer.ckpt"
    newer.write_bytes(struct.pack("<Q", len(hb)) + hb + data[8 + n :])
    _one_line_error(newer, "newer")


def test_mismatched_weights_named_in_error(tmp_path):
    _, _, state = full_state()
    path = tmp_path / "g.ckpt"
    save_checkpoint(path, state)
    ck = load_checkpoint(path)
    from synth.networks.checkpoint import load_state_strict

    other = tiny_G(channel_max=8)
    with pytest.raises(CheckpointError) as e:
        load_state_strict(other, ck["G"].state_dict, str(path), "G")
    assert "shape mismatch" in str(e.value) and "\n" not in str(e.value)


def test_unserialisable_value_is_rejected_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path / "x.ckpt", {"bad": object()})
    assert not (tmp_path / "x.ckpt").exists()
