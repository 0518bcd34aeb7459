"""Every `synth` command, given one clearly bad input: a non-zero exit, no traceback, and one
`Error:` line (the last line of the output) that names the option or file.

The command list comes from the click group itself, so a new command without a case here
fails :func:`test_every_command_has_a_bad_input_case`.  Exit statuses follow the rule in the
header of docs/cli.md: 2 when the command line itself is wrong, 1 when a file or folder it
names is missing or does not fit (``synth data check`` and, for now, ``synth train`` and
``synth augment-preview`` exit 2 for their inputs too).
"""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from tests.helpers import grid_rows, tiny_generator, write_tiny_dataset

MISSING = "{tmp}/missing"

# command path -> (arguments, expected exit status, text the error line must contain)
CASES: dict[str, tuple[list[str], int, str]] = {
    "data atlas": (["{tmp}/atlas", "--resolution", "20"], 2, "--resolution"),
    "data check": ([MISSING], 2, "missing: dataset not found"),
    "data align": ([MISSING, "{tmp}/aligned"], 1, "missing is not a folder"),
    "train": (["--data", MISSING, "--kimg", "0.01"], 2, "--data"),
    "classify train": (["--data", MISSING, "--out", "{tmp}/o"], 1, "--data {tmp}/missing: not found"),
    "classify cv": (["--data", MISSING, "--out", "{tmp}/o"], 1, "--data {tmp}/missing: not found"),
    "classify patches": (["--data", MISSING, "--out", "{tmp}/o"], 1, "--data {tmp}/missing: not found"),
    "classify evaluate": (["--models", MISSING, "--data", "{ds}", "--out", "{tmp}/o"], 1, "missing"),
    "classify saliency": (["--models", MISSING, "--data", "{ds}", "--out", "{tmp}/o"], 1, "missing"),
    "classify permutation-test": (["--saliency", MISSING, "--out", "{tmp}/o"], 1, "--saliency {tmp}/missing: not found"),
    "generate": (["--type", "unrelated", "--per-cell", "1", "--network", MISSING, "--out", "{tmp}/o"], 1,
                 "--network {tmp}/missing: checkpoint not found"),
    "morph": (["--network", MISSING, "--out", "{tmp}/o"], 1, "--network {tmp}/missing: checkpoint not found"),
    "mix": (["--network", MISSING, "--out", "{tmp}/o"], 1, "--network {tmp}/missing: checkpoint not found"),
    "project": (["{ds}", "--label", "disease=syndrome_a,age=infant", "--network", MISSING, "--out", "{tmp}/o"], 1,
                "--network {tmp}/missing: checkpoint not found"),
    "teach make": (["--per-cell", "1", "--network", MISSING, "--out", "{tmp}/o"], 1,
                   "--network {tmp}/missing: checkpoint not found"),
    "teach score": (["{ds}/labels.csv", "--key", MISSING], 1, "--key {tmp}/missing: file not found"),
    "metrics": (["--network", MISSING, "--out", "{tmp}/o"], 1, "--network {tmp}/missing: checkpoint not found"),
    "ablate": (["--data", MISSING, "--network", "{ckpt}", "--out", "{tmp}/o"], 1, "--data {tmp}/missing: not found"),
    "augment-preview": ([MISSING, "--out", "{tmp}/aug.png"], 2, "missing"),
}

# Bad option values: a usage error (exit 2) before any file is opened.
RENDERING = ["generate", "morph", "mix", "teach make", "metrics"]
BASE_ARGS = {"generate": ["--type", "unrelated", "--per-cell", "1"], "teach make": ["--per-cell", "1"]}
VALUE_CASES = [
    *[(cmd, [*BASE_ARGS.get(cmd, []), "--network", "{ckpt}", "--out", "{tmp}/o", "--truncation", psi], "--truncation")
      for cmd in RENDERING for psi in ("-3", "nan", "inf")],
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--psi", "-1"], "--psi"),
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--types", "sideways"], "unknown type"),
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--folds", "1"], "--folds"),
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--model", "no_such_net"], "unknown model"),
    ("classify cv", ["--data", "{ds}", "--out", "{tmp}/o", "--model", "no_such_net"], "unknown model"),
    ("morph", ["--network", "{ckpt}", "--out", "{tmp}/o", "--seeds", "1-x"], "--seeds"),
    ("metrics", ["--network", "{ckpt}", "--out", "{tmp}/o", "--seeds", "9-1"], "--seeds"),
    ("data align", ["{ds}", "{ds}"], "OUT_DIR must differ from IN_DIR"),
    # a device this machine lacks or a misspelt one, and negative seeds: refused while parsing
    *[(cmd, [*BASE_ARGS.get(cmd, []), "--network", "{ckpt}", "--out", "{tmp}/o", "--device", "gpu"], "--device")
      for cmd in (*RENDERING, "project")],
    ("train", ["--device", "gpu", "--dry-run"], "'gpu': choose cpu, cuda or cuda:N"),
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--device", "cuda:x"], "--device"),
    ("classify train", ["--data", "{ds}", "--out", "{tmp}/o", "--device", "tpu"], "(or auto)"),
    *[(cmd, [*BASE_ARGS.get(cmd, []), "--network", "{ckpt}", "--out", "{tmp}/o", "--seed", "-1"], "--seed")
      for cmd in ("generate", "teach make", "mix")],
    ("train", ["--seed", "-3", "--dry-run"], "--seed"),
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--seed", "-1"], "--seed"),
    ("train", ["--out", "{ds}/labels.csv", "--dry-run"], "is a file"),
    ("ablate", ["--data", "{ds}", "--network", "{ckpt}", "--out", "{tmp}/o", "--executor", "local", "--emit-commands",
                "{tmp}/cmds.txt"], "--emit-commands and --executor exclude each other"),
    ("train", ["--resume", "{ckpt}", "--dry-run"], "an exported generator has no discriminator"),
]


def leaf_commands(cmd: click.Command, path: tuple[str, ...] = ()) -> list[str]:
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        return [p for name in cmd.list_commands(ctx) for p in leaf_commands(cmd.get_command(ctx, name), (*path, name))]
    return [" ".join(path)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from synth.conditions import ConditionSpace
    from synth.networks.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("inputs")
    ds = write_tiny_dataset(root / "ds", grid_rows(["syndrome_a", "unaffected"], ["infant", "child"], per_cell=2))
    space = ConditionSpace.default(["disease", "age"], embed_total=32)
    save_checkpoint(root / "g.ckpt", {"G_ema": tiny_generator(space), "space": space})
    return {"ds": str(ds), "ckpt": str(root / "g.ckpt")}


def invoke(args: list[str], tmp_path, inputs):
    from synth.cli import main

    argv = [a.format(tmp=tmp_path, **inputs) for a in args]
    return CliRunner().invoke(main, argv, catch_exceptions=False), argv


def assert_one_line_error(r, status: int, needle: str) -> None:
    assert r.exit_code == status, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines, "no error message at all"
    assert lines[-1].startswith("Error: "), r.output  # the message is the last line: no continuation lines
    assert sum(ln.startswith("Error") for ln in lines) == 1, r.output
    assert needle in lines[-1], r.output
    assert lines[-1] in r.stderr  # errors go to stderr


def test_every_command_has_a_bad_input_case():
    from synth.cli import main

    assert sorted(leaf_commands(main)) == sorted(CASES)


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_input_fails_in_one_line(command, tmp_path, inputs):
    args, status, needle = CASES[command]
    r, argv = invoke([*command.split(), *args], tmp_path, inputs)
    assert_one_line_error(r, status, needle.format(tmp=tmp_path, **inputs))
    assert not (tmp_path / "o").exists()  # nothing written for a refused command


@pytest.mark.parametrize("command, args, needle", VALUE_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_bad_option_values_are_usage_errors(command, args, needle, tmp_path, inputs):
    r, _ = invoke([*command.split(), *args], tmp_path, inputs)
    assert_one_line_error(r, 2, needle)
    assert not (tmp_path / "o").exists()


def test_renderer_refuses_negative_and_non_finite_truncation():
    from synth.conditions import ConditionSpace
    from synth.synthesis.engine import Renderer
    from synth.synthesis.errors import SynthesisError

    G = tiny_generator(ConditionSpace.default(["disease", "age"], embed_total=32))
    for psi in (-0.5, float("nan"), float("inf")):
        with pytest.raises(SynthesisError, match="--truncation"):
            Renderer(G, psi=psi)
    assert Renderer(G, psi=0.0).psi == 0.0 and Renderer(G, psi=1.5).psi == 1.5  # 0 and extrapolation stay allowed


def test_cuda_on_a_machine_without_it_is_a_usage_error(tmp_path, inputs):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for cmd in ("generate", "morph", "metrics"):
        r, _ = invoke([*cmd.split(), *BASE_ARGS.get(cmd, []), "--network", "{ckpt}", "--out", "{tmp}/o", "--device", "cuda"],
                      tmp_path, inputs)
        assert_one_line_error(r, 2, "CUDA is not available on this machine")
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["train", "--kimg", "0.01", "--out", "{tmp}/o"],
                                     ["classify", "train", "--target", "disease", "--out", "{tmp}/o"]])
def test_a_labels_csv_with_a_header_only_is_one_line(command, tmp_path, inputs):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.csv").write_text("file,disease,age\n")
    r, _ = invoke([*command, "--data", str(empty)], tmp_path, inputs)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1] == f"Error: {empty / 'labels.csv'}: lists no images"
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_an_unwritable_out_is_one_line(tmp_path, inputs, monkeypatch):
    """A read-only --out (simulated: the tests may run as root, who can write anywhere)."""
    import os
    from pathlib import Path

    real_mkdir = Path.mkdir

    def refuse(self, *a, **k):
        if "locked" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", refuse)
    for cmd in (["generate", "--type", "unrelated", "--per-cell", "1", "--network", "{ckpt}", "--out", "{tmp}/locked/g"],
                ["morph", "--network", "{ckpt}", "--out", "{tmp}/locked/m"],
                ["train", "--data", "{ds}", "--out", "{tmp}/locked/runs", "--kimg", "0.004", "--resolution", "16", "--batch", "4"]):
        r, _ = invoke(cmd, tmp_path, inputs)
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output and r.output.strip().splitlines()[-1].endswith("permission denied (not writable?)")
    assert not os.path.exists(tmp_path / "locked")


def test_every_input_error_is_a_user_error():
    """One base class: commands catch UserError alone, so a new layer's error cannot slip
    through as a traceback."""
    import importlib

    from synth.errors import UserError

    errors = {"synth.conditions": "ConditionError", "synth.data.dataset": "DatasetError", "synth.data.align": "AlignError",
              "synth.data.atlas.render": "AtlasError", "synth.networks.checkpoint": "CheckpointError",
              "synth.networks.legacy": "LegacyImportError", "synth.training.options": "TrainingError",
              "synth.training.augment": "AugmentError", "synth.synthesis.errors": "SynthesisError",
              "synth.quality.errors": "QualityError", "synth.ablation.plan": "AblationError", "synth.utils.io": "OutDirError",
              "synth.utils.weights": "WeightsFileError", "classifiers.checkpoint": "ClassifierCheckpointError",
              "classifiers.data": "ClassifierDataError", "classifiers.cv": "CVError", "classifiers.models": "ModelError",
              "classifiers.metrics": "MetricsError", "classifiers.attribution": "AttributionError",
              "classifiers.patches": "PatchError"}
    for module, name in errors.items():
        assert issubclass(getattr(importlib.import_module(module), name), UserError), f"{module}.{name}"
