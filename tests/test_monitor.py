"""Fidelity while training: judge accuracy (and KID) of the EMA generator at a tick."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.conditions import ConditionSpace
from synth.quality.errors import QualityError
from synth.quality.fidelity import Judge
from synth.training.monitor import FidelityMonitor
from tests.helpers import save_judge, tiny_generator  # noqa: F401  (save_judge: used by other tests too)

SPACE = ConditionSpace.default(["disease", "age"], embed_total=32)  # 4 x 5 = 20 cells
JOINT = tuple("|".join(c) for c in SPACE.cells())




@pytest.fixture(scope="module")
def judges(tmp_path_factory):
    d = tmp_path_factory.mktemp("judges")
    save_judge(d / "joint", ["disease", "age"], JOINT)
    save_judge(d / "disease", ["disease"], SPACE.factor("disease").levels, seed=1)
    save_judge(d / "stage", ["stage"], ["early", "intermediate", "late"])
    return d


class CellPainter(torch.nn.Module):
    """A stand-in generator whose image shows the asked cell: red = 12 * cell index + 6 (20 cells fit in uint8).

    w is the label vector itself, so the colour is a pure function of the label; it also
    records whether it was in eval mode while drawing."""

    def __init__(self, space):
        super().__init__()
        self.space, self.z_dim, self.num_ws = space, 4, 1
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.mapping = lambda z, c, truncation_psi=1: c[:, None, :]
        self.modes = []

    def synthesis(self, ws, noise_mode="const"):
        self.modes.append(self.training)
        c = ws[:, 0].numpy()
        idx = [JOINT.index("|".join(self.space.decode(v).values())) for v in c]
        img = torch.full((len(c), 3, 8, 8), -1.0)
        img[:, 0] = ((12.0 * torch.tensor(idx, dtype=torch.float32) + 6 - 128) / 127.5)[:, None, None]
        return img * self.scale


def reading_judge(wrong_age_when_unaffected=False):
    """A joint disease,age judge that decodes the red channel; optionally wrong (next age) on one disease."""

    def predict(images):
        p = np.zeros((len(images), len(JOINT)))
        for i, im in enumerate(images):
            k = int(im[0, 0, 0]) // 12
            if wrong_age_when_unaffected and JOINT[k].startswith("unaffected|"):
                d, a = JOINT[k].split("|")
                levels = SPACE.factor("age").levels
                k = JOINT.index(f"{d}|{levels[(levels.index(a) + 1) % len(levels)]}")
            p[i, k] = 1.0
        return p

    return Judge("reader", ("disease", "age"), JOINT, predict)


def test_reading_judge_gives_exact_accuracies_and_mode_is_restored():
    G = CellPainter(SPACE).train()
    mon = FidelityMonitor([reading_judge()], SPACE, per_cell=2)
    assert mon.score(G) == {"judge/disease": 1.0, "judge/age": 1.0, "judge/mean": 1.0, "select": 1.0}
    assert G.training and mon.judges[0].source == "reader"
    assert G.modes and not any(G.modes)  # drew in eval mode, handed back in train mode
    # wrong age on 1 of 4 diseases: disease still right, age right on 3/4 of the images
    res = FidelityMonitor([reading_judge(True)], SPACE, per_cell=3).score(G.eval())
    assert res == {"judge/disease": 1.0, "judge/age": pytest.approx(0.75), "judge/mean": pytest.approx(0.875),
                   "select": pytest.approx(0.875)}  # no real images: no diversity figure, select = accuracy
    assert not G.training


def test_real_judges_keys_range_and_determinism(judges):
    G = tiny_generator(SPACE).train()
    mon = FidelityMonitor([judges / "joint", str(judges / "disease")], SPACE, per_cell=2)
    rng_before = torch.get_rng_state()
    a = mon.score(G)
    assert torch.equal(rng_before, torch.get_rng_state())  # scoring leaves training's random stream alone
    assert set(a) == {"judge/disease", "judge/age", "judge/mean", "select"}
    assert all(0.0 <= v <= 1.0 for v in a.values())
    assert a["judge/mean"] == pytest.approx((a["judge/disease"] + a["judge/age"]) / 2)
    assert G.training
    torch.manual_seed(123)  # the global RNG does not choose z
    assert mon.score(G) == a
    mon2 = FidelityMonitor([judges / "joint", judges / "disease"], SPACE, per_cell=2)
    imgs = mon.generate(G)
    assert np.array_equal(mon2.generate(G), imgs) and not np.array_equal(imgs[0], imgs[1])  # one z per image
    # the pictures of `synth metrics --seed 0 --per-cell 2` (its seed layout, const noise); it maps z one
    # cell at a time, so float round-off in the mapping may move a rare pixel by one uint8 step
    from synth.quality.report import MetricsConfig, _per_cell_images
    from synth.synthesis.engine import Renderer

    ref, ref_cells, _, _ = _per_cell_images(Renderer(G), SPACE, MetricsConfig(per_cell=2, seed=0, progress=False))
    assert np.abs(ref.astype(int) - imgs).max() <= 1 and (ref != imgs).mean() < 1e-3 and ref_cells == mon.cells
    G.train()
    # truncation toward each condition's mean w changes the images, deterministically
    trunc = FidelityMonitor([judges / "joint"], SPACE, per_cell=2, truncation=0.5, mean_w_samples=50)
    t1 = trunc.generate(G)
    assert np.array_equal(t1, trunc.generate(G)) and not np.array_equal(t1, mon.generate(G))


def test_judge_outside_space_is_a_one_line_error_naming_the_path(judges):
    with pytest.raises(QualityError, match=r"--judge .*stage.*judges factor 'stage'") as e:
        FidelityMonitor([judges / "joint", judges / "stage"], SPACE)
    assert str(judges / "stage") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(QualityError, match="--judge") as e:
        FidelityMonitor([judges / "missing"], SPACE)
    assert "\n" not in str(e.value)
    with pytest.raises(QualityError, match="nothing to score"):
        FidelityMonitor([], SPACE)


def test_kid_with_real_images():
    G = tiny_generator(SPACE)
    real = np.random.default_rng(0).integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
    kw = dict(per_cell=1, real_images=real, feature_model="test_resnet", feature_size=32, kid_subsets=3)
    mon = FidelityMonitor([reading_judge()], SPACE, **kw)
    res = mon.score(G)
    assert set(res) == {"judge/disease", "judge/age", "judge/mean", "select", "kid", "variety/precision", "variety/recall",
                        "variety/density", "variety/coverage"}
    assert np.isfinite(res["kid"]) and mon.score(G)["kid"] == res["kid"]
    assert "kid" not in FidelityMonitor([reading_judge()], SPACE, **{**kw, "kid": False}).score(G)
    only_kid = FidelityMonitor([], SPACE, **kw).score(G)  # KID alone needs no judge
    assert "kid" in only_kid and "select" not in only_kid and only_kid["kid"] == res["kid"]


def test_selection_rule_cannot_pick_a_collapsed_generator():
    """A generator that paints every image of a cell alike scores full judge accuracy but a
    low diversity ratio, and its selection score falls below a varied generator's."""
    from synth.training.monitor import DIVERSITY_FLOOR, selection_score

    rng = np.random.default_rng(0)
    cells = [tuple(c) for c in SPACE.cells()]
    real = rng.integers(0, 256, size=(len(cells) * 3, 8, 8, 3), dtype=np.uint8)  # CellPainter draws 8 px
    real_cells = [c for c in cells for _ in range(3)]
    kw = dict(per_cell=3, real_images=real, real_cells=real_cells, kid=False)
    collapsed = FidelityMonitor([reading_judge()], SPACE, **kw).score(CellPainter(SPACE))  # one picture per cell
    assert collapsed["judge/mean"] == 1.0 and collapsed["diversity/mean"] < 0.05
    assert collapsed["select"] == pytest.approx(collapsed["diversity/mean"] / DIVERSITY_FLOOR)
    assert selection_score(0.6, 0.9) == pytest.approx(0.6) and 0.6 > collapsed["select"]  # varied, less accurate: preferred
    assert selection_score(0.6, None) == 0.6 and selection_score(None, 0.5) is None
