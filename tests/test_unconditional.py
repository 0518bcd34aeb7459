"""Label embedding width, unconditional training (--cond none) and transfer of an
unconditional base into a conditional run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from synth.conditions import ConditionSpace
from synth.networks.networks import Generator
from synth.networks.checkpoint import load_checkpoint, load_generator
from synth.training.cli import train
from synth.training.training_loop import Trainer, TrainingOptions
from tests.test_training import TINY, TINY_CLI

SCHEMA_AUTO = ("factors:\n- {name: disease, levels: [syndrome_a, unaffected], control: unaffected}\n"
               "- {name: age, levels: [infant, child, adolescent]}\n")


@pytest.fixture
def auto_dataset(tmp_path):
    from tests.helpers import grid_rows, write_tiny_dataset

    rows = grid_rows(["syndrome_a", "unaffected"], ["infant", "child", "adolescent"], per_cell=2)
    return write_tiny_dataset(tmp_path / "ds", rows, schema=SCHEMA_AUTO)


def _opts(data, **kw):
    return TrainingOptions(data=str(data), cond=["disease", "age"], **{**TINY, **kw})


def test_embedding_width_follows_w_dim_unless_chosen(auto_dataset, tmp_path):
    t = Trainer(_opts(auto_dataset), None)
    assert t.space.embed_dims == (8, 8) and t.opts.embed_dim == [8, 8]  # w_dim 16 split over two factors
    assert t.G.mapping.embed.out_features == 16
    t = Trainer(_opts(auto_dataset, embed_dim=[4]), None)
    assert t.space.embed_dims == (4, 4)
    t = Trainer(_opts(auto_dataset, embed_dim=[12, 4]), None)
    assert t.space.embed_dims == (12, 4)
    # a width chosen in conditions.yaml is kept, with a warning when it drowns z
    (auto_dataset / "conditions.yaml").write_text(SCHEMA_AUTO.replace("control: unaffected}", "control: unaffected, embed_dim: 64}")
                                                  .replace("adolescent]}", "adolescent], embed_dim: 64}"))
    lines = []
    t = Trainer(_opts(auto_dataset), None, log=lines.append)
    assert t.space.embed_dims == (64, 64)
    assert any("much wider than z (16)" in m and "89%" in m for m in lines), lines


def test_bad_embed_dim_is_one_line_error(auto_dataset, tmp_path):
    r = CliRunner().invoke(train, ["--data", str(auto_dataset), "--embed-dim", "8,x", "--out", str(tmp_path / "r"), "--dry-run"])
    assert r.exit_code != 0 and "--embed-dim" in r.output
    r = CliRunner().invoke(train, ["--data", str(auto_dataset), "--embed-dim", "8,8,8", "--kimg", "0.008", *TINY_CLI,
                                   "--out", str(tmp_path / "r")])
    assert r.exit_code == 1 and "3 embedding widths given for 2 factors" in r.output
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def _z_share(space: ConditionSpace, z_dim=32, n_z=64) -> float:
    """Share of w's variance over (z, cell) that is due to z: within-cell over total."""
    torch.manual_seed(0)
    G = Generator(z_dim=z_dim, w_dim=z_dim, space=space, img_resolution=8, img_channels=3,
                  mapping_kwargs={"num_layers": 2}, synthesis_kwargs={"channel_base": 64, "channel_max": 8})
    cells = torch.from_numpy(np.stack([space.encode(dict(zip(space.names, c))) for c in space.cells()]))
    z = torch.randn(n_z, z_dim)
    with torch.no_grad():
        w = torch.stack([G.mapping(z, c.expand(n_z, -1))[:, 0] for c in cells])  # [cells, n_z, w_dim]
    within = w.var(dim=1).mean()
    between = w.mean(dim=1).var(dim=0).mean()
    return float(within / (within + between))


def test_balanced_embedding_lets_z_vary_a_cell():
    """The images of one cell must vary with z: with the embedding as wide as w (split over
    the factors), z decides most of w's variance; a 512-wide embedding beside a 32-wide z
    leaves z much less (the one-face-per-cell collapse)."""
    base = ConditionSpace.default(["disease", "age"])
    balanced = base.resolve_embedding(32)
    assert balanced.embed_dims == (16, 16)
    wide = base.with_embed_dims([256, 256])
    share_balanced, share_wide = _z_share(balanced), _z_share(wide)
    assert share_balanced > 0.5, share_balanced
    assert share_wide < 0.6 * share_balanced, (share_wide, share_balanced)


def test_old_checkpoints_and_spaces_keep_their_widths(tmp_path):
    from synth.networks.checkpoint import save_checkpoint

    space = ConditionSpace.default(["disease", "age"])  # nobody chose: 256 + 256 until a run resolves it
    assert space.embed_dims == (256, 256) and all(f.embed_auto for f in space.factors)
    assert "embed_dim" not in json.dumps(space.to_dict())
    save_checkpoint(tmp_path / "s.ckpt", {"space": space})
    stored = load_checkpoint(tmp_path / "s.ckpt")["space"]
    assert stored.embed_dims == (256, 256) and not any(f.embed_auto for f in stored.factors)
    assert stored == space  # widths compare, not who chose them
    assert ConditionSpace.default(["stage"], embed_total=32).embed_dims == (32,)
    assert not ConditionSpace.default(["stage"], embed_total=32).factors[0].embed_auto


def _image_folder(root: Path, n=8, size=16) -> Path:
    from PIL import Image

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"sub{i % 2}_{i}.png")
    return root


def _train(args, tmp_path):
    r = CliRunner().invoke(train, [*args, "--kimg", "0.008", *TINY_CLI])
    assert r.exit_code == 0, r.output
    return r


def test_unconditional_training_on_an_image_folder(tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    _train(["--data", str(folder), "--cond", "none", "--out", str(tmp_path / "u")], tmp_path)
    run = next((tmp_path / "u").iterdir())
    assert run.name.endswith("imgs-uncond-cpu-16")
    ck = load_checkpoint(sorted(run.glob("network-snapshot-*.ckpt"))[-1])
    assert ck["options"]["unconditional"] is True and ck["space"] is None
    G, space, _ = load_generator(sorted(run.glob("network-snapshot-*.ckpt"))[-1])
    assert space is None and G.c_dim == 0
    assert G(torch.randn(2, 16), None).shape == (2, 3, 16, 16)
    assert (run / "fakes-init.png").exists() and (run / "reals.png").exists()


def test_unconditional_dataset_json_with_null_labels(tmp_path):
    folder = _image_folder(tmp_path / "nv")
    (folder / "dataset.json").write_text(json.dumps({"labels": None}))
    _train(["--data", str(folder), "--cond", "none", "--out", str(tmp_path / "u")], tmp_path)
    r = CliRunner().invoke(train, ["--data", str(folder), "--out", str(tmp_path / "v"), "--dry-run"])
    assert r.exit_code != 0 and "--cond none" in r.output


@pytest.mark.parametrize("args, message", [
    (["--cond", ""], "--cond"),
    (["--cond", "none,age"], "none cannot be combined"),
    (["--cond", "none", "--aux-weight", "1"], "--aux-weight: needs labels"),
    (["--cond", "none", "--embed-dim", "8"], "--embed-dim: needs labels"),
])
def test_unconditional_bad_options(tmp_path, args, message):
    folder = _image_folder(tmp_path / "imgs")
    r = CliRunner().invoke(train, ["--data", str(folder), *args, "--out", str(tmp_path / "o"), "--dry-run"])
    assert r.exit_code != 0 and message in r.output, r.output


def test_transfer_from_an_unconditional_base(auto_dataset, tmp_path):
    folder = _image_folder(tmp_path / "imgs")
    _train(["--data", str(folder), "--cond", "none", "--out", str(tmp_path / "u"), "--seed", "3"], tmp_path)
    base_run = next((tmp_path / "u").iterdir())
    base_ck = load_checkpoint(sorted(base_run.glob("network-snapshot-*.ckpt"))[-1])
    base_G = base_ck["G_ema"].state_dict

    # the surgery, checked tensor by tensor
    t = Trainer(_opts(auto_dataset), None)
    report = t.import_snapshot(base_run, base_ck)
    assert "reshaped  mapping.fc0.weight" in report and "fresh     mapping.embed.disease.weight" in report
    sd = t.G_ema.state_dict()
    synth_names = [k for k in base_G if k.startswith("synthesis.") and not k.endswith("resample_filter")]
    assert synth_names and all(torch.equal(sd[k], base_G[k]) for k in synth_names)
    z = 16
    fc0 = sd["mapping.fc0.weight"]
    assert fc0.shape[1] == z + 16  # z plus the 8 + 8 label embedding
    torch.testing.assert_close(fc0[:, :z], base_G["mapping.fc0.weight"][:, :z] * (fc0.shape[1] / z) ** 0.5)
    assert torch.equal(t.D.state_dict()["b4.conv.weight"], base_ck["D"].state_dict["b4.conv.weight"])

    # the CLI: --resume base --cond ... starts a new conditional run from it, and the new weights train
    r = _train(["--data", str(auto_dataset), "--cond", "disease,age", "--resume", str(base_run), "--out", str(tmp_path / "c")], tmp_path)
    assert "G <- G:" in r.output and "reshaped" in r.output
    run = next((tmp_path / "c").iterdir())
    assert run.name.endswith("-from-uncond")
    ck = load_checkpoint(sorted(run.glob("network-snapshot-*.ckpt"))[-1])
    assert ck["space"].embed_dims == (8, 8) and ck["options"]["unconditional"] is False
    fresh = Trainer(_opts(auto_dataset), None)
    fresh.import_snapshot(base_run, base_ck)
    before = fresh.G.state_dict()["mapping.embed.disease.weight"]
    after = ck["G"].state_dict["mapping.embed.disease.weight"]
    assert not torch.equal(before, after)  # the label embedding learns
    # continuing the base itself (no --cond) is a true resume, still unconditional
    r = CliRunner().invoke(train, ["--resume", str(base_run), "--kimg", "0.016", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(sorted(base_run.glob("network-snapshot-*.ckpt"))[-1])["space"] is None
