"""Ablation cells shared by several workers: claims with heartbeats, take-over of a dead
worker's claim, and a two-worker run that does every cell once and reports as a serial run."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_ablation import data, network  # noqa: F401 - module fixtures

ROOT = Path(__file__).resolve().parents[1]


def _ablate_cmd(data, network, out, *extra):
    return [sys.executable, "-m", "synth", "ablate", "--data", str(data), "--network", str(network), "--folds", "2",
            "--types", "unrelated", "--model", "test_efficientnet", "--epochs", "1", "--batch", "8", "--aug", "none",
            "--psi", "1.0", "--seeds", "2", "--threads", "1", "--no-progress", "--out", str(out), *extra]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _cells(out: Path) -> list[Path]:
    return sorted(p for p in (out / "cells").rglob("*.json"))


# ---- claims -------------------------------------------------------------------------------


def test_heartbeat_keeps_a_claim_fresh_and_silence_makes_it_stale(tmp_path):
    from synth.ablation.cache import is_stale, try_claim

    lock = tmp_path / "cell.lock"
    claim = try_claim(lock, stale_after=0.5, heartbeat=0.05)
    assert claim is not None
    old = lock.stat().st_mtime
    os.utime(lock, (old - 10, old - 10))  # as if the last beat was 10 s ago...
    time.sleep(0.3)
    assert lock.stat().st_mtime > old - 1  # ...the heartbeat has touched it since
    assert not is_stale(lock, stale_after=0.5) and try_claim(lock, stale_after=0.5) is None
    claim.release()
    assert not lock.exists()

    # A claim of another host whose heartbeat stopped is taken over after the timeout only.
    lock.write_text(json.dumps({"host": "node-that-crashed", "pid": 1, "token": "x", "time": 0}))
    assert try_claim(lock, stale_after=60) is None  # fresh: trusted
    os.utime(lock, (time.time() - 120, time.time() - 120))
    taken = try_claim(lock, stale_after=60, heartbeat=0)
    assert taken is not None and json.loads(lock.read_text())["host"] == socket.gethostname()
    taken.release()


def test_a_claim_taken_over_is_not_deleted_by_its_old_owner(tmp_path):
    from synth.ablation.cache import try_claim

    lock = tmp_path / "cell.lock"
    old = try_claim(lock, heartbeat=0.05)
    # another worker decided we were dead and replaced the claim
    lock.write_text(json.dumps({"host": "other", "pid": 7, "token": "theirs", "time": time.time()}))
    with pytest.warns(RuntimeWarning, match="taken over"):
        time.sleep(0.3)
        old.release()
    assert old.lost and json.loads(lock.read_text())["token"] == "theirs"


def test_only_one_of_many_takers_replaces_a_stale_claim(tmp_path):
    from synth.ablation.cache import try_claim

    lock = tmp_path / "cell.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 2**22 + 4321, "token": "dead", "time": 0}))
    claims = [try_claim(lock, heartbeat=0) for _ in range(5)]
    assert sum(c is not None for c in claims) == 1
    assert not lock.with_name("cell.lock.takeover").exists()


# ---- workers ------------------------------------------------------------------------------


def _stats(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    return {arm: e["scores"] for arm, e in r["cv"]["statistics"]["accuracy"]["arms"].items()}


def test_two_workers_share_the_cells_and_report_as_a_serial_run(tmp_path, data, network):  # noqa: F811
    shared, serial = tmp_path / "shared", tmp_path / "serial"
    procs = [subprocess.Popen(_ablate_cmd(data, network, shared), env=_env(), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:  # a timed-out test must not leave its workers running
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    trained = [int(o.split(" cell(s) trained")[0].split()[-1]) for o, _ in outs]
    cells = _cells(shared)
    assert len(cells) == 2 * 3 * 2  # folds x arms (real, real_matched, unrelated) x seeds
    assert sum(trained) == len(cells)  # every cell trained exactly once, by one worker
    workers = {json.loads(c.read_text())["worker"]["pid"] for c in cells}
    assert workers <= {p.pid for p in procs}
    assert not list(shared.rglob("*.lock"))  # every claim released

    r = subprocess.run(_ablate_cmd(data, network, serial), env=_env(), cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _stats(shared) == _stats(serial)

    # --report-only needs nothing but the folder, and writes the same figures again
    (shared / "results.json").unlink()
    r = subprocess.run([sys.executable, "-m", "synth", "ablate", "--report-only", "--out", str(shared)], env=_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "0 cell(s) trained" in r.stdout and _stats(shared) == _stats(serial)
    assert "trained with 2 classifier seeds" in (shared / "report.md").read_text()


def test_a_killed_workers_claim_is_taken_over(tmp_path, data, network):  # noqa: F811
    out = tmp_path / "out"
    left: list[Path] = []
    for _attempt in range(5):
        # A tiny cell takes well under a second, so the kill may land between two cells; then the
        # (resumable) worker is started again until it dies holding a claim.
        victim = subprocess.Popen(_ablate_cmd(data, network, out), env=_env(), cwd=tmp_path,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        held: list[Path] = []
        while not held and time.time() < deadline and victim.poll() is None:  # wait until it is inside a cell
            held = list(out.glob("cells/*/*.lock"))
            time.sleep(0.02)
        if victim.poll() is None:
            os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        assert held, "the worker never claimed a cell"
        left = [p for p in held if p.exists()]
        if left:
            break
    assert left, "the worker never died inside a cell"  # a dead worker leaves its claim behind

    # report-only refuses while cells are missing
    r = subprocess.run([sys.executable, "-m", "synth", "ablate", "--report-only", "--out", str(out)], env=_env(),
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "are not finished" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    r = subprocess.run(_ablate_cmd(data, network, out), env=_env(), cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(_cells(out)) == 12 and (out / "report.md").is_file()
    assert not list(out.rglob("*.lock"))


def test_a_folder_another_worker_is_creating_is_not_foreign(tmp_path):
    # Two workers start at once: the first has made --out and is writing plan.json (a hidden
    # temporary file) when the second looks at it.
    from synth.ablation.plan import AblationConfig, AblationError
    from synth.ablation.runner import check_out_dir

    out = tmp_path / "out"
    out.mkdir()
    (out / ".plan.json.1a2b3c4d.tmp").write_text("{")
    cfg = AblationConfig(data=str(tmp_path / "ds"))
    assert check_out_dir(out, cfg, force=False) is False
    (out / "notes.txt").write_text("mine")
    with pytest.raises(AblationError, match="holds no ablation"):
        check_out_dir(out, cfg, force=False)
