"""A judge panel run end to end (:func:`run_panel`) and its outputs, panel.json and panel.md."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from synth.quality.panel.judges import build_panel
from synth.quality.panel.scoring import evaluate_checkpoint, open_checkpoint, real_reference
from synth.quality.panel.settings import FORMAT, JUDGE_SIZE, PANEL_VERSION, PanelConfig, PanelError

__all__ = ["header_sentence", "render_markdown", "write_outputs", "run_panel"]


# ----------------------------------------------------------------------------------------
# Output


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def header_sentence(result: dict) -> str:
    a = result["atlases"]
    return (f"The panel judges were trained on atlas subjects (seed {a['judge_training']['seed']}) that were not used to "
            f"train or choose the generator (training atlases use seed 0); \"real\" numbers come from a second set of new "
            f"subjects (seed {a['second_real']['seed']}).")


def render_markdown(result: dict) -> str:
    s = result["settings"]
    factors = result["panel"]["factors"]
    attrs = [a["target"] for a in result["panel"]["attribute_judges"]]
    ordinal = next((c["morphs"]["factor"] for c in result["checkpoints"] if c.get("morphs")), None)
    rr = result["real_vs_real"]
    lines = [f"# Judge panel ({result['kind']})", "", header_sentence(result), "",
             f"Panel: {len(result['panel']['factor_judges'])} factor judges ({', '.join(s['archs'])} x seeds "
             f"{', '.join(str(x) for x in s['judge_seeds'])} per factor, {JUDGE_SIZE} px, {s['epochs']} epochs, "
             f"{s['judge_per_cell']} training images per cell) and {len(attrs)} attribute judges. "
             f"Generated: {s['per_cell']} images per cell at truncation psi {s['truncation']:g}, seeds from {s['seed']}.",
             ""]
    head = ["checkpoint", "kimg"]
    head += [f"{f} gen/real (worst judge)" for f in factors]
    head += ["precision", "recall", "coverage (real-vs-real)", "within-cell diversity (min)"]
    head += [f"{a.replace('_', ' ')} entropy ratio" for a in attrs]
    if ordinal:
        head += [f"monotone {ordinal} morphs", "mean rho"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in result["checkpoints"]:
        row = [f"`{c['name']}`", "-" if c["kimg"] is None else f"{c['kimg']:g}"]
        for f in factors:
            w = c["fidelity"][f]["worst"]
            row.append(f"{_num(w['ratio'])} ({_pct(w['accuracy_generated'])} / {_pct(w['accuracy_real'])})")
        p = c["variety"]["prdc"]
        row += [_num(p.get("precision")), _num(p.get("recall")),
                f"{_num(p.get('coverage'))} ({_num(rr.get('coverage'))})"]
        d = c["variety"]["within_cell_diversity"]
        row.append(f"{_num(d['mean'])} ({_num(d['min'])})")
        row += [_num(c["attributes"][a]["entropy_ratio"]) if c["attributes"][a]["judge_informative"] else "n/a"
                for a in attrs]
        if ordinal:
            m = c.get("morphs") or {}
            row += [_pct(m.get("monotone_fraction")), _num(m.get("mean_rho"))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "gen/real: the judge's accuracy on generated images over its accuracy on the second real set; the "
              "worst judge is the one with the lowest accuracy on generated images. Coverage in brackets: the second "
              "real set against the same reference. Diversity: mean pairwise pixel distance within a cell, generated "
              "over real (worst cell in brackets). Entropy ratio: judged attribute classes within a cell, generated "
              "over real, mean over cells."
              + (f" Monotone morphs: share of identities whose judged {ordinal} rises with Spearman rho >= 0.9."
                 if ordinal else ""), ""]
    weak = [a for a in result["panel"]["attribute_judges"] if not a["real"]["informative"]]
    for a in weak:
        lines += [f"n/a: the {a['target'].replace('_', ' ')} judge reads {_pct(a['real']['balanced_accuracy'])} balanced "
                  f"accuracy on the second real set (chance {_pct(a['real']['chance'])}), too close to chance to judge "
                  f"that attribute's variety.", ""]
    return "\n".join(lines)


def write_outputs(result: dict, out: Path) -> tuple[Path, Path]:
    from synth.utils.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    jp, mp = out / "panel.json", out / "panel.md"
    atomic_write_text(jp, json.dumps(result, indent=2, allow_nan=False) + "\n")
    atomic_write_text(mp, render_markdown(result))
    return jp, mp


def run_panel(checkpoints: Sequence[Path], out: Path, cfg: PanelConfig, log=print) -> dict:
    """Check every input, build (or reuse) the panel, score each checkpoint, write panel.json/.md."""
    from classifiers.train import resolve_device

    cfg.check()
    device = resolve_device(cfg.device)
    if out.exists() and not out.is_dir():
        raise PanelError(f"--out {out}: exists and is not a folder")
    if not checkpoints:
        raise PanelError("name at least one checkpoint (CKPT)")
    # every checkpoint is opened (and its kind found) before any slow work
    kinds = {}
    for p in checkpoints:
        _, _, _, kinds[p] = open_checkpoint(p, "cpu")
    if len(set(kinds.values())) > 1:
        raise PanelError("checkpoints of different kinds (" + ", ".join(f"{p.name}: {k}" for p, k in kinds.items())
                         + "); evaluate faces and skin generators in separate runs")
    kind = next(iter(kinds.values()))
    cfg = cfg.for_kind(kind)
    log(f"{len(checkpoints)} checkpoint(s), kind {kind}; cache {cfg.cache_root()}; device {device}")
    t0 = time.perf_counter()
    panel = build_panel(cfg, kind, log)
    for f, js in panel.judges.items():
        log(f"panel {f}: real accuracy " + ", ".join(f"{j.name} {100 * j.real['accuracy']:.1f}%" for j in js))
    reference = real_reference(panel, cfg)
    rows = [evaluate_checkpoint(p, panel, cfg, reference, log) for p in checkpoints]
    settings = {
        "per_cell": cfg.per_cell, "truncation": cfg.truncation, "judge_per_cell": cfg.judge_per_cell,
        "epochs": cfg.epochs, "seed": cfg.seed, "judge_seeds": list(cfg.judge_seeds), "archs": list(cfg.archs),
        "atlas_seeds": list(cfg.atlas_seeds), "atlas_resolution": cfg.atlas_resolution, "identities": cfg.identities,
        "prdc_k": cfg.prdc_k, "judge_size": JUDGE_SIZE, "device": str(device), "cache": str(cfg.cache_root()),
        "noise_mode": "const", "panel_version": PANEL_VERSION,
        "seed_rule": "cell i, image j uses z seed SEED + i * PER_CELL + j; morph identities follow",
    }
    result = {
        "format": FORMAT,
        "kind": kind,
        "statement": "",
        "settings": settings,
        "atlases": {"judge_training": panel.train_set.info, "second_real": panel.real_set.info},
        "panel": {
            "factors": list(panel.factors),
            "factor_judges": [j.describe() for js in panel.judges.values() for j in js],
            "attribute_judges": [j.describe() for j in panel.attributes.values()],
            "feature_judge": panel.feature_judge.name,
            "morph_judge": {f: js[0].name for f, js in panel.judges.items()},
            "all_cached": all(j.cached for js in panel.judges.values() for j in js)
                          and all(j.cached for j in panel.attributes.values()),
        },
        "real_vs_real": {**reference["prdc"], "k": cfg.prdc_k, "per_cell": reference["per_cell"],
                         "n": reference["n"], "n_reference": reference["n_reference"]},
        "checkpoints": rows,
        "seconds": time.perf_counter() - t0,
    }
    result["statement"] = header_sentence(result)
    from synth.quality.report import json_safe

    result = json_safe(result)
    jp, mp = write_outputs(result, out)
    log(f"wrote {jp} and {mp} ({result['seconds']:.0f} s)")
    return result
