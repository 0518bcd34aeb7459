"""The output folder of an ablation: its layout, plan.json, and where each cell's result goes.

Layout::

    plan.json                 the configuration (a folder is only reused for the same plan)
    folds.csv                 the grouped, stratified partition every arm shares
    gans/fold{f}/             per-fold GAN run (with --gan-per-fold)
    synthetic/fold{f}/{arm}/  that fold's synthetic training images (a dataset folder)
    cells/fold{f}/{arm}.json  finished cell: held-out (and test) predictions and metrics
                              (classifier seed r > 0: {arm}.seed{r}.json)
    report.md, results.json, per_arm.csv, per_cell.csv, gain.png

results.json is described in :mod:`synth.ablation.results`; the report files in
:mod:`synth.ablation.report`.  Claim files (``*.lock``) next to a GAN, synthetic set or cell
mark the worker that is making it (:mod:`synth.ablation.cache`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from synth.ablation.cache import read_json, write_json
from synth.ablation.plan import AblationConfig, AblationError

__all__ = ["cell_path", "cell_name", "check_out_dir", "prepare_out_dir", "load_plan"]

_OUTPUTS = ("plan.json", "folds.csv", "gans", "synthetic", "cells", "report.md", "results.json", "per_arm.csv",
            "per_cell.csv", "gain.png")


def cell_path(out: Path, fold: int, arm: str, seed: int = 0) -> Path:
    """Result file of cell (fold, arm) with classifier seed index ``seed``."""
    return out / "cells" / f"fold{fold}" / (f"{arm}.json" if seed == 0 else f"{arm}.seed{seed}.json")


def cell_name(fold: int, arm: str, seed: int = 0, seeds: int = 1) -> str:
    """How logs and errors name a cell: 'fold 2 / unrelated', plus ' / seed 1' when several seeds run."""
    return f"fold {fold} / {arm}" + (f" / seed {seed}" if seeds > 1 or seed else "")


def _is_temp(p: Path) -> bool:
    """A half-written file of :func:`synth.utils.io.create_temp` (``.NAME.HEX.tmp``)."""
    return p.name.startswith(".") and p.name.endswith(".tmp")


def check_out_dir(out: Path, config: AblationConfig, force: bool) -> bool:
    """Refuse an ``out`` this ablation cannot use; change nothing.  True when ``out`` holds
    this plan already (a resume)."""
    if out.exists() and not out.is_dir():
        raise AblationError(f"--out {out}: exists and is not a folder")
    # Another worker starting at the same moment may have created ``out`` and be writing plan.json:
    # its temporary file alone does not make the folder foreign.
    # Job logs of --executor (jobs/) are written before the first worker starts.
    if force or not (out.is_dir() and any(not _is_temp(p) and p.name != "jobs" for p in out.iterdir())):
        return False
    old = read_json(out / "plan.json")
    if old is None:
        raise AblationError(f"--out {out}: folder is not empty and holds no ablation (plan.json); use another folder or --force")
    if old.get("fingerprint") != config.fingerprint():
        diff = sorted(k for k in set(old.get("fingerprint", {})) | set(config.fingerprint())
                      if old.get("fingerprint", {}).get(k) != config.fingerprint().get(k))
        raise AblationError(
            f"--out {out}: holds an ablation with different settings ({', '.join(diff)}); use another folder or --force"
        )
    return True


def prepare_out_dir(out: Path, config: AblationConfig, force: bool) -> None:
    """Create ``out``; reuse it only for the same plan; ``force`` wipes earlier results.

    The first write of a run: :func:`~synth.ablation.runner.run_ablation` calls it only once
    everything else (data, network, folds, targets) has been checked, so a failed run leaves no
    plan.json."""
    check_out_dir(out, config, force)
    if force and out.is_dir():
        for name in _OUTPUTS:
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "plan.json", {"format": "synth-ablation/1", "fingerprint": config.fingerprint(), "config": config.to_dict()})


def load_plan(out_dir: str | Path) -> AblationConfig:
    """The configuration an ablation folder was made with (its ``plan.json``)."""
    out = Path(out_dir)
    plan = read_json(out / "plan.json") if out.is_dir() else None
    if plan is None or "config" not in plan:
        raise AblationError(f"--out {out}: holds no ablation (plan.json missing)")
    try:
        return AblationConfig.from_dict(plan["config"])
    except (TypeError, ValueError) as e:
        raise AblationError(f"{out / 'plan.json'}: not a valid ablation plan ({str(e).splitlines()[0]})") from None
