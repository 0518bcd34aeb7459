"""``synth ablate --status``: what an ablation folder has done, what is claimed and what is left.

Read from the folder alone (plan.json, folds.csv, the result and claim files), so it works
while workers run, from any machine that sees the folder, and loads no data or model.
"""
from __future__ import annotations

import time
from pathlib import Path

from synth.ablation.cache import claim_info, is_stale, read_json
from synth.ablation.plan import AblationError

__all__ = ["ablation_status", "format_status"]


def _claim(lock: Path, stale_after: float) -> dict | None:
    if not lock.exists():
        return None
    info = claim_info(lock) or {}
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return None
    return {"host": info.get("host", "?"), "pid": info.get("pid"), "heartbeat_age_s": round(age, 1),
            "stale": is_stale(lock, stale_after)}


def ablation_status(out: str | Path) -> dict:
    """Fold GANs, synthetic sets and cells of the ablation in ``out``: done, claimed (by whom,
    last heartbeat, whether it looks dead) or left, and the time left at the pace of the cells
    finished so far (all workers together)."""
    from synth.ablation.gan import fold_gan_done
    from synth.ablation.runner import _check_config, cell_path, cell_name, load_plan

    out = Path(out)
    config = load_plan(out)
    arms = _check_config(config)
    folds_csv = out / "folds.csv"
    if not folds_csv.is_file():
        raise AblationError(f"--out {out}: has no folds.csv; no worker has started this ablation")
    import csv

    with open(folds_csv, newline="") as f:
        k = 1 + max(int(r["fold"]) for r in csv.DictReader(f))
    stale_after = config.stale_after
    gans = []
    if config.gan_per_fold:
        for fold in range(k):
            state = "done" if fold_gan_done(out, fold) is not None else "left"
            claim = _claim(out / "gans" / f"fold{fold}.lock", stale_after) if state == "left" else None
            gans.append({"fold": fold, "state": "claimed" if claim else state, "claim": claim})
    synthetic = []
    for fold in range(k):
        for arm in arms:
            if arm.real_only or arm.only:  # a synthetic-only arm reads its source arm's set
                continue
            d = out / "synthetic" / f"fold{fold}" / arm.name
            state = "done" if (d / "labels.csv").is_file() else "left"
            claim = _claim(d.with_name(d.name + ".lock"), stale_after) if state == "left" else None
            synthetic.append({"fold": fold, "arm": arm.name, "state": "claimed" if claim else state, "claim": claim})
    cells, finished = [], []
    for fold in range(k):
        for arm in arms:
            for r in range(config.seeds):
                path = cell_path(out, fold, arm.name, r)
                name = cell_name(fold, arm.name, r, config.seeds)
                if path.is_file():
                    finished.append(path.stat().st_mtime)
                    cells.append({"cell": name, "state": "done", "claim": None})
                    continue
                claim = _claim(path.with_suffix(".lock"), stale_after)
                cells.append({"cell": name, "state": "claimed" if claim else "left", "claim": claim})
    n_done = sum(c["state"] == "done" for c in cells)
    remaining = len(cells) - n_done
    eta = None
    if len(finished) >= 2 and remaining:
        finished.sort()
        per_cell = (finished[-1] - finished[0]) / (len(finished) - 1)
        eta = per_cell * remaining
    return {"out": str(out), "folds": k, "gans": gans, "synthetic": synthetic, "cells": cells,
            "done": n_done, "total": len(cells), "remaining_s": eta,
            "report": (out / "results.json").is_file()}


def _fmt_claim(c: dict) -> str:
    note = ", looks dead: the next worker takes it over" if c["stale"] else ""
    return f"claimed by {c['host']} pid {c['pid']}, heartbeat {c['heartbeat_age_s']:.0f} s ago{note}"


def format_status(st: dict) -> str:
    lines = [f"{st['out']}: {st['done']} of {st['total']} cells done, {st['folds']} folds"
             + ("; report written" if st["report"] else "")]
    if st["gans"]:
        done = sum(g["state"] == "done" for g in st["gans"])
        lines.append(f"fold GANs: {done} of {len(st['gans'])} done")
        lines += [f"  fold {g['fold']}: {_fmt_claim(g['claim'])}" for g in st["gans"] if g["claim"]]
    if st["synthetic"]:
        done = sum(s["state"] == "done" for s in st["synthetic"])
        lines.append(f"synthetic sets: {done} of {len(st['synthetic'])} done")
        lines += [f"  fold {s['fold']} / {s['arm']}: {_fmt_claim(s['claim'])}" for s in st["synthetic"] if s["claim"]]
    claimed = [c for c in st["cells"] if c["state"] == "claimed"]
    left = [c for c in st["cells"] if c["state"] == "left"]
    lines += [f"  {c['cell']}: {_fmt_claim(c['claim'])}" for c in claimed]
    if left:
        shown = ", ".join(c["cell"] for c in left[:6]) + (" ..." if len(left) > 6 else "")
        lines.append(f"left ({len(left)}): {shown}")
    if st["remaining_s"] is not None:
        lines.append(f"about {st['remaining_s'] / 60:.0f} min left at the pace of the finished cells (all workers together)")
    if st["done"] == st["total"] and not st["report"]:
        lines.append(f"every cell is done: synth ablate --report-only --out {st['out']}")
    return "\n".join(lines)
