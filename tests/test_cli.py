"""The top-level `synth` command group."""
from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner


def test_help_lists_every_stage_and_loads_no_torch():
    # torch costs seconds to import; `synth --help` and option errors must not pay for it.
    code = ("import sys; from click.testing import CliRunner; from synth.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.exit_code); print(r.output); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "0"
    for cmd in ("data", "train", "classify", "generate", "morph", "mix", "teach", "metrics", "ablate", "augment-preview"):
        assert f"  {cmd} " in out, cmd
    assert out.strip().endswith("NO-TORCH")


def test_unknown_command_is_a_usage_error():
    from synth.cli import main

    r = CliRunner().invoke(main, ["trian"])
    assert r.exit_code == 2 and "No such command 'trian'" in r.output
