"""Conditioning criteria for little data: auxiliary classifier, transitional conditioning, LeCam."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from synth.conditions import ConditionSpace, parse_tie
from synth.networks import Discriminator, Generator
from synth.training.criteria import AuxClassifierLoss, LeCam, factor_targets, ramp_weight, soft_cross_entropy
from synth.training.training_loop import Trainer, TrainingError, TrainingOptions
from tests.test_training import small_dataset, small_space_opts  # noqa: F401  (fixture)

ALL = dict(aux_weight=1.0, lecam_weight=0.3, lecam_decay=0.9, cond_start_kimg=0.004, cond_end_kimg=0.020)


def _space():
    return ConditionSpace.default(["disease", "age"])


def test_soft_cross_entropy_equals_cross_entropy_on_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y, reduction="none"))
    # a 50/50 blend is the mean of the two hard losses
    mix = 0.5 * F.one_hot(torch.tensor([0] * 6), 4).float() + 0.5 * F.one_hot(torch.tensor([1] * 6), 4).float()
    hard = 0.5 * (F.cross_entropy(logits, torch.zeros(6, dtype=torch.long), reduction="none")
                  + F.cross_entropy(logits, torch.ones(6, dtype=torch.long), reduction="none"))
    assert torch.allclose(soft_cross_entropy(logits, mix), hard)


def test_aux_loss_on_one_hot_labels_is_the_sum_of_per_factor_cross_entropies():
    space = _space()
    torch.manual_seed(1)
    labels = [{"disease": d, "age": a} for d, a in zip(space.factor("disease").levels, space.factor("age").levels)]
    c = torch.from_numpy(__import__("numpy").stack([space.encode(x) for x in labels])).float()
    logits = {f.name: torch.randn(len(labels), f.size) for f in space.factors}
    loss, acc = AuxClassifierLoss(space, weight=0.5)(logits, c)
    expect = sum(F.cross_entropy(logits[f.name], c[:, sl].argmax(1), reduction="none") for f, sl in space.blocks())
    assert torch.allclose(loss, 0.5 * expect)
    assert set(acc) == {"disease", "age"} and all(a.shape == (len(labels),) for a in acc.values())


def test_tied_level_targets_its_sources_and_unlabelled_rows_are_masked():
    space = ConditionSpace.default(["stage"]).with_ties(parse_tie("stage:intermediate=early+late"))
    c = torch.from_numpy(__import__("numpy").stack([space.encode({"stage": s}) for s in ("early", "intermediate")])).float()
    c = torch.cat([c, torch.zeros(1, space.c_dim)])
    target, mask = factor_targets(space, c)["stage"]
    f = space.factor("stage")
    assert target[1, f.index("early")] == pytest.approx(0.5) and target[1, f.index("late")] == pytest.approx(0.5)
    assert target[1, f.index("intermediate")] == 0
    assert mask.tolist() == [True, True, False]


def test_discriminator_heads_have_the_right_shapes_and_plain_config_is_unchanged():
    space = _space()
    kw = dict(space=space, img_resolution=16, channel_base=128, channel_max=16)
    plain = Discriminator(**kw)
    assert "aux_heads" not in plain.config() and "uncond_head" not in plain.config()
    D = Discriminator(**kw, aux_heads=True, uncond_head=True)
    x = torch.randn(4, 3, 16, 16)
    c = torch.zeros(4, space.c_dim)
    c[:, 0] = 1
    c[:, 4] = 1
    out = D(x, c, parts=True)
    assert out["logits"].shape == (4, 1) and out["uncond"].shape == (4, 1)
    assert {k: v.shape for k, v in out["aux"].items()} == {"disease": (4, 4), "age": (4, 5)}
    assert torch.equal(D(x, c), out["logits"])
    assert Discriminator.from_config(json.loads(json.dumps(D.config()))).aux_factors == ("disease", "age")
    with pytest.raises(ValueError, match="conditional"):
        Discriminator(img_resolution=16, channel_base=128, channel_max=16, aux_heads=True)


def test_generator_aux_loss_reaches_the_label_embeddings(small_dataset):
    t = Trainer(small_space_opts(small_dataset, aux_weight=1.0, style_mixing=0.0), None)
    z = torch.randn(4, t.opts.z_dim)
    c = t.cell_labels[:4]
    t.G.requires_grad_(True)
    img = t.G(z, c)
    out = t.D(img, c, parts=True)
    loss, _ = t.loss.aux(out["aux"], c)
    loss.mean().backward()
    for name in ("disease", "age"):
        g = getattr(t.G.mapping.embed, name).weight.grad
        assert g is not None and float(g.abs().sum()) > 0, name


def test_ramp_weight_values():
    assert ramp_weight(0.0, 2.0, 6.0) == 0.0
    assert ramp_weight(2.0, 2.0, 6.0) == 0.0
    assert ramp_weight(3.0, 2.0, 6.0) == pytest.approx(0.25)
    assert ramp_weight(5.0, 2.0, 6.0) == pytest.approx(0.75)
    assert ramp_weight(9.0, 2.0, 6.0) == 1.0
    with pytest.raises(ValueError):
        ramp_weight(1.0, 3.0, 3.0)


def test_transitional_generator_ignores_labels_before_the_ramp(small_dataset):
    t = Trainer(small_space_opts(small_dataset, cond_start_kimg=0.004, cond_end_kimg=0.012), None)
    assert t.G.mapping.cond_t.item() == 0.0 and t.loss.cond_t == 0.0
    z = torch.randn(2, t.opts.z_dim).repeat(2, 1)
    c = torch.cat([t.cell_labels[:1].repeat(2, 1), t.cell_labels[-1:].repeat(2, 1)])
    with torch.no_grad():
        w = t.G.mapping(z, c)
    assert torch.allclose(w[:2], w[2:])  # t = 0: unconditional
    t.cur_nimg = 8  # kimg 0.008 = half-way
    t._set_cond_weight()
    assert t.G.mapping.cond_t.item() == pytest.approx(0.5) and t.loss.cond_t == pytest.approx(0.5)
    with torch.no_grad():
        w = t.G.mapping(z, c)
    assert not torch.allclose(w[:2], w[2:])


def test_lecam_terms_follow_the_formula():
    lc = LeCam(weight=2.0, decay=0.5)
    real = torch.tensor([[1.0], [3.0]])
    fake = torch.tensor([[-1.0], [0.5]])
    # the loss's order within a D step: fakes first, then reals
    lc.fake_term(fake)  # first value initialises ema_fake = -0.25
    r = lc.real_term(real)  # ema_real = 2
    lc.step()
    assert lc.ema_real.item() == pytest.approx(2.0) and lc.ema_fake.item() == pytest.approx(-0.25)
    assert torch.allclose(r, 2.0 * torch.relu(real.flatten() - (-0.25)).square())
    f = lc.fake_term(fake)  # ema_fake = 0.5 * -0.25 + 0.5 * -0.25
    assert torch.allclose(f, 2.0 * torch.relu(2.0 - fake.flatten()).square())
    lc.real_term(torch.tensor([[0.0]]))  # later values are averaged with the decay
    assert lc.ema_real.item() == pytest.approx(1.0)


def test_all_criteria_train_log_and_resume_exactly(small_dataset, tmp_path):
    straight = Trainer(small_space_opts(small_dataset, kimg=0.016, **ALL), tmp_path / "a")
    last = straight.train()
    assert {"loss/aux_D", "loss/aux_G", "loss/lecam", "aux_acc/real_disease", "cond_t"} <= set(last)
    first = Trainer(small_space_opts(small_dataset, kimg=0.008, **ALL), tmp_path / "b")
    first.train()
    resumed = Trainer(small_space_opts(small_dataset, kimg=0.016, **ALL), tmp_path / "b")
    resumed.resume(tmp_path / "b")
    assert torch.equal(resumed.loss.lecam.state, first.loss.lecam.state) and first.loss.lecam.state[2] > 0
    assert resumed.loss.cond_t == pytest.approx(first.loss.cond_t) and 0 < resumed.loss.cond_t < 1
    assert resumed.G_ema.mapping.cond_t.item() == pytest.approx(first.G_ema.mapping.cond_t.item())
    resumed.train()
    assert torch.allclose(resumed.loss.lecam.state, straight.loss.lecam.state)
    assert resumed.loss.cond_t == straight.loss.cond_t == pytest.approx(0.75)
    for m in ("G", "D", "G_ema"):
        for (n, a), (_, b) in zip(getattr(straight, m).state_dict().items(), getattr(resumed, m).state_dict().items()):
            assert torch.allclose(a, b, atol=1e-5), f"{m}.{n}"
    meta = json.loads((tmp_path / "b" / "options.json").read_text()) if (tmp_path / "b" / "options.json").exists() else None
    assert meta is None or meta["aux_weight"] == 1.0


@pytest.mark.parametrize("kw, msg", [
    (dict(aux_weight=-1), "--aux-weight"),
    (dict(lecam_weight=-0.1), "--lecam:"),
    (dict(cond_start_kimg=1.0), "--cond-ramp"),
    (dict(cond_start_kimg=5.0, cond_end_kimg=2.0), "--cond-ramp"),
    (dict(metrics_every=2.0), "--metrics-every"),
])
def test_bad_criteria_options_are_one_line_errors(kw, msg):
    with pytest.raises(TrainingError, match=msg):
        TrainingOptions(**kw).validate()


def test_options_round_trip_with_new_fields():
    o = TrainingOptions(**ALL, judge=["j"], metrics_every=2.0)
    assert TrainingOptions.from_dict(json.loads(json.dumps(o.to_dict()))) == o
    # snapshots written before these options existed still load (defaults fill them in)
    old = {k: v for k, v in TrainingOptions().to_dict().items() if k not in ALL and k not in ("judge", "metrics_every")}
    assert TrainingOptions.from_dict(old).aux_weight == 0.0


def test_judge_scores_g_ema_into_stats_and_keeps_best(small_dataset, tmp_path):
    from tests.test_monitor import save_judge

    space = Trainer(small_space_opts(small_dataset), None).space
    judge = save_judge(tmp_path / "judge", ["disease"], space.factor("disease").levels)
    opts = small_space_opts(small_dataset, kimg=0.024, judge=[str(judge)], metrics_every=0.016, judge_per_cell=2)
    t = Trainer(opts, tmp_path / "run")
    t.train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    scored = [r["kimg"] for r in rows if "metric/judge/disease" in r]
    assert scored == [0.016, 0.024]  # every 0.016 kimg and at the end
    assert all(0 <= r["metric/judge/disease"] <= 1 and "metric/kid" in r for r in rows if "metric/judge/disease" in r)
    assert (tmp_path / "run" / "best.ckpt").is_file() and t.best_judge is not None
    from synth.networks.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "best.ckpt")["progress"]["best_judge"] == t.best_judge
    # without a judge nothing is scored and no best.ckpt is written
    plain = Trainer(small_space_opts(small_dataset, kimg=0.016), tmp_path / "plain")
    plain.train()
    assert not (tmp_path / "plain" / "best.ckpt").exists()
    assert not any("metric/" in k for x in (tmp_path / "plain" / "stats.jsonl").read_text().splitlines() for k in json.loads(x))


def test_judge_that_does_not_fit_the_space_fails_at_start(small_dataset, tmp_path):
    from tests.test_monitor import save_judge

    judge = save_judge(tmp_path / "judge", ["stage"], ["early", "intermediate", "late"])
    with pytest.raises(TrainingError, match="judge"):
        Trainer(small_space_opts(small_dataset, judge=[str(judge)], metrics_every=1.0), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_new_options_reach_options_json(small_dataset, tmp_path):
    from click.testing import CliRunner

    from synth.training.cli import train
    from tests.test_training import TINY_CLI

    args = ["--data", str(small_dataset), "--out", str(tmp_path / "runs"), *TINY_CLI, "--kimg", "0.008",
            "--aux-weight", "0.5", "--cond-ramp", "0,0.004", "--lecam", "0.1", "--pl-weight", "0", "--ada-kimg", "10"]
    r = CliRunner().invoke(train, args + ["--dry-run"])
    assert r.exit_code == 0, r.output
    o = json.loads(r.output)["options"]
    assert (o["aux_weight"], o["cond_start_kimg"], o["cond_end_kimg"], o["lecam_weight"], o["pl_weight"], o["ada_kimg"]) == \
        (0.5, 0.0, 0.004, 0.1, 0.0, 10.0)
    r = CliRunner().invoke(train, args)
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs").iterdir())
    assert json.loads((run / "options.json").read_text())["aux_weight"] == 0.5
    r = CliRunner().invoke(train, ["--resume", str(run), "--kimg", "0.016", "--aux-weight", "2", "--no-progress"])
    assert r.exit_code != 0 and "--aux-weight" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(train, args + ["--cond-ramp", "5"])
    assert r.exit_code != 0 and "START,END" in r.output


def test_adc_mode_uses_real_and_fake_slots_per_level():
    import numpy as np

    space = _space()
    torch.manual_seed(2)
    labels = [{"disease": d, "age": a} for d, a in zip(space.factor("disease").levels, space.factor("age").levels)]
    c = torch.from_numpy(np.stack([space.encode(x) for x in labels])).float()
    logits = {f.name: torch.randn(len(labels), 2 * f.size) for f in space.factors}
    crit = AuxClassifierLoss(space, weight=1.0, mode="adc")
    y = {f.name: c[:, sl].argmax(1) for f, sl in space.blocks()}
    ce = lambda f, k: F.cross_entropy(logits[f], k, reduction="none")  # noqa: E731
    real, _ = crit(logits, c, role="D_real")
    fake, _ = crit(logits, c, role="D_fake")
    gen, acc = crit(logits, c, role="G")
    assert torch.allclose(real, sum(ce(f, 2 * y[f]) for f in y))
    assert torch.allclose(fake, sum(ce(f, 2 * y[f] + 1) for f in y))
    assert torch.allclose(gen, sum(ce(f, 2 * y[f]) - ce(f, 2 * y[f] + 1) for f in y))
    assert all(a.shape == (len(labels),) for a in acc.values())
    D = Discriminator(space=space, img_resolution=16, channel_base=128, channel_max=16, aux_heads="adc")
    out = D(torch.randn(2, 3, 16, 16), c[:2], parts=True)
    assert {k: v.shape[1] for k, v in out["aux"].items()} == {"disease": 8, "age": 10}
    with pytest.raises(ValueError):
        AuxClassifierLoss(space, 1.0, mode="bogus")


def test_adc_training_logs_the_fake_term(small_dataset):
    t = Trainer(small_space_opts(small_dataset, kimg=0.008, aux_weight=1.0, aux_mode="adc"), None)
    last = t.train()
    assert {"loss/aux_D_fake", "loss/aux_G", "aux_acc/real_age"} <= set(last)
    assert t.D.config()["aux_heads"] == "adc"


def test_compile_routes_main_passes_through_compiled_modules_and_keeps_regularisers_eager(small_dataset, monkeypatch):
    calls = []
    real_compile = torch.compile

    def aot_eager(module, **kw):
        calls.append(type(module).__name__)
        # aot_eager uses AOT autograd like inductor (so a regulariser's double backward through
        # a compiled graph would fail here too) without inductor's slow code generation.
        return real_compile(module, **{**kw, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", aot_eager)
    t = Trainer(small_space_opts(small_dataset, kimg=0.008, compile=True, g_reg_interval=2, d_reg_interval=2), None)
    assert sorted(calls) == ["Discriminator", "SynthesisNetwork"]
    assert t.loss._D_main is not t.D and t.loss._synthesis_main is not t.G.synthesis
    last = t.train()  # two minibatches: main passes compiled, R1 and path length eager
    assert "loss/r1_penalty" in last and "loss/pl_penalty" in last


def test_resume_keeps_the_judges_unless_given_again(small_dataset, tmp_path):
    from click.testing import CliRunner

    from synth.training.cli import train
    from tests.test_monitor import save_judge
    from tests.test_training import TINY_CLI

    space = Trainer(small_space_opts(small_dataset), None).space
    judge = save_judge(tmp_path / "judge", ["disease"], space.factor("disease").levels)
    r = CliRunner().invoke(train, ["--data", str(small_dataset), "--out", str(tmp_path / "runs"), *TINY_CLI, "--kimg", "0.008",
                                   "--judge", str(judge), "--metrics-every", "0.008", "--judge-per-cell", "1"])
    assert r.exit_code == 0, r.output
    run = next((tmp_path / "runs").iterdir())
    r = CliRunner().invoke(train, ["--resume", str(run), "--kimg", "0.016", "--time-limit", "5", "--threads", "1", "--no-progress"])
    assert r.exit_code == 0, r.output
    o = json.loads((run / "options.json").read_text())
    assert o["judge"] == [str(judge.resolve())] and o["metrics_every"] == 0.008 and o["time_limit"] == 5
    rows = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert [("metric/judge/disease" in x) for x in rows] == [True, True]
