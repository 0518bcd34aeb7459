"""An ablation handed to a scheduler: worker command lines (--emit-commands) run by two shells
at once, submitit's local executor (--executor local), and --status on a half-finished folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_ablation import data, network  # noqa: F401 - module fixtures
from tests.test_ablation_workers import ROOT, _ablate_cmd, _env, _stats

ARGS = ["--folds", "2", "--types", "unrelated", "--model", "test_efficientnet", "--epochs", "1", "--batch", "8",
        "--aug", "none", "--psi", "1.0", "--seeds", "2", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def serial(tmp_path_factory, data, network):  # noqa: F811
    """The figures of the same ablation run by one process, for comparison."""
    out = tmp_path_factory.mktemp("serial") / "out"
    r = subprocess.run(_ablate_cmd(data, network, out), env=_env(), cwd=out.parent, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return _stats(out)


def _cli(args, cwd=None):
    from synth.ablation.cli import ablate

    return CliRunner().invoke(ablate, args, catch_exceptions=False)


def test_emitted_commands_run_by_two_shells_finish_the_ablation(tmp_path, data, network, serial):  # noqa: F811
    out, cmds = tmp_path / "out", tmp_path / "swarm.txt"
    r = _cli(["--data", str(data), "--network", str(network), *ARGS, "--out", str(out), "--workers", "2",
              "--emit-commands", str(cmds)])
    assert r.exit_code == 0, r.output
    lines = cmds.read_text().splitlines()
    workers = [ln for ln in lines if not ln.startswith("#")]
    assert len(workers) == 2 and all(w.startswith("synth ablate ") and "--no-wait" in w for w in workers)
    assert str(out.resolve()) in workers[0] and str(Path(data).resolve()) in workers[0]
    assert "--emit-commands" not in workers[0] and "--workers" not in workers[0]
    assert lines[-1] == f"# synth ablate --report-only --out {out.resolve()}"
    assert not out.exists()  # emitting writes nothing else
    # two shells at once, each running one line (`synth` as the module: the same program)
    shell = [w.replace("synth ablate", f"{sys.executable} -m synth ablate", 1) for w in workers]
    procs = [subprocess.Popen(["bash", "-c", w], env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in shell]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    r = subprocess.run(["bash", "-c", lines[-1][2:].replace("synth ablate", f"{sys.executable} -m synth ablate", 1)],
                       env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _stats(out) == serial


def test_submitit_local_executor_runs_the_workers_and_reports(tmp_path, data, network, serial, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    r = _cli(["--data", str(data), "--network", str(network), *ARGS, "--out", str(out), "--workers", "2",
              "--executor", "local"])
    assert r.exit_code == 0, r.output
    assert r.output.count("job ") >= 2 and "real_matched" in r.output  # job ids and logs, then the summary
    cells = sorted((out / "cells").rglob("*.json"))
    assert len(cells) == 2 * 3 * 2 and not list(out.rglob("*.lock"))
    pids = {json.loads(c.read_text())["worker"]["pid"] for c in cells}
    assert os.getpid() not in pids  # trained by the submitted processes, not by this one
    assert (out / "results.json").is_file() and (out / "jobs").is_dir()
    assert _stats(out) == serial  # the report of a serial run


def test_status_of_a_half_finished_folder(tmp_path, data, network):  # noqa: F811
    import socket

    out = tmp_path / "out"
    r = subprocess.run(_ablate_cmd(data, network, out, "--no-wait"), env=_env(), cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    cells = sorted((out / "cells").rglob("*.json"))
    cells[0].unlink()  # not done
    cells[1].with_suffix(".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": "t"}))
    cells[1].unlink()  # claimed by a live worker (this process)
    (out / "results.json").unlink(missing_ok=True)
    r = _cli(["--status", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"{len(cells) - 2} of {len(cells)} cells done" in r.output
    assert f"claimed by {socket.gethostname()} pid {os.getpid()}" in r.output and "looks dead" not in r.output
    assert "left (1):" in r.output and "min left at the pace of the finished cells" in r.output
    r = _cli(["--status", "--out", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "nothing" in r.output
