"""Ablation report files from a results dict: report.md, results.json, per_arm.csv,
per_cell.csv and gain.png (every file written atomically)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from classifiers.metrics import csv_text
from synth.utils.io import atomic_save, atomic_write_text

__all__ = ["write_report", "render_markdown", "plot_gain", "gains_over_matched"]

METRICS = ("accuracy", "balanced_accuracy")


def _pct(v, signed: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def _p(v) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if v >= 0.001 else "<0.001")


def _comparisons(results: dict):
    """(scope, metric, statistics) of every comparison: against real, then against each matched control."""
    scopes = [("cv", results["cv"])] + ([("test", results["test"])] if results.get("test") else [])
    for scope, part in scopes:
        for metric in METRICS:
            yield scope, metric, part["statistics"][metric]
        for m in (part.get("matched") or {}).values():
            for metric in METRICS:
                st = m[metric]
                # the control's own row is already in the comparison with real
                yield scope, metric, {**st, "arms": {a: e for a, e in st["arms"].items() if a != st["reference"]}}


def gains_over_matched(part: dict, metric: str = "accuracy") -> dict:
    """``{arm: difference}`` of every synthetic arm over the matched control of its ratio, from
    ``results["cv"]`` or ``results["test"]`` (empty without controls)."""
    return {a: e["difference"] for m in (part.get("matched") or {}).values()
            for a, e in m[metric]["arms"].items() if "difference" in e}


def _arm_rows(results: dict) -> list[list]:
    rows = []
    types = {a["name"]: a for a in results["arms"]}
    for scope, metric, st in _comparisons(results):
        for arm, e in st["arms"].items():
            d, c, m = e.get("difference", {}), e.get("corrected", {}), e.get("mcnemar", {})
            rows.append([
                scope, metric, arm, types[arm]["type"] or "", types[arm]["ratio"], e["mean"], e["sd"], e.get("pooled"),
                d.get("mean"), d.get("ci_low"), d.get("ci_high"), d.get("p_value"), c.get("ci_low"), c.get("ci_high"),
                c.get("p_value"), m.get("reference_only"), m.get("arm_only"), m.get("p_value"), st["k"],
                st["reference"],
            ])
    return rows


ARM_HEADER = ["scope", "metric", "arm", "type", "ratio", "mean", "sd", "pooled", "diff_mean", "diff_ci_low",
              "diff_ci_high", "p_paired_t", "corrected_ci_low", "corrected_ci_high", "p_corrected", "mcnemar_reference_only",
              "mcnemar_arm_only", "p_mcnemar", "k", "reference"]


def _cell_rows(results: dict) -> list[list]:
    rows = []
    sources = [("cv", results["cv"]["oof"])]
    if results.get("test"):
        sources.append(("test", results["test"]["ensemble"]))
    for scope, by_arm in sources:
        for arm, m in by_arm.items():
            for c in m.get("per_cell", []):
                rows.append([scope, arm, *c["cell"], c["n"], c["correct"], c["accuracy"], c.get("ci_low"), c.get("ci_high")])
    return rows


def _stat_table(st: dict, with_corrected: bool, pooled: str = "Pooled %") -> list[str]:
    head = f"| Arm | Mean % (SD) | {pooled} | Diff vs {st['reference']}, pts [95% t CI] | p (paired t) |"
    sep = "|---|---|---|---|---|"
    if with_corrected:
        head += " Corrected CI | p (corrected) |"
        sep += "---|---|"
    head += f" McNemar ({st['reference']} only / arm only, p) |"
    sep += "---|"
    lines = [head, sep]
    for arm, e in st["arms"].items():
        sd = "" if e["sd"] is None else f" ({_pct(e['sd'])})"
        d = e.get("difference")
        diff = "reference" if arm == st["reference"] else (
            f"{_pct(d['mean'], True)} [{_pct(d['ci_low'], True)}, {_pct(d['ci_high'], True)}]" if d else "n/a")
        row = f"| {arm} | {_pct(e['mean'])}{sd} | {_pct(e.get('pooled'))} | {diff} | {_p(d['p_value']) if d else ''} |"
        if with_corrected:
            c = e.get("corrected")
            row += (f" [{_pct(c['ci_low'], True)}, {_pct(c['ci_high'], True)}] | {_p(c['p_value'])} |" if c else " | |")
        m = e.get("mcnemar")
        row += f" {m['reference_only']} / {m['arm_only']}, p={_p(m['p_value'])} |" if m else " |"
        lines.append(row)
    return lines


def _cell_table(by_arm: dict, cell_names: list[str]) -> list[str]:
    arms = list(by_arm)
    first = by_arm[arms[0]].get("per_cell", [])
    lines = ["| " + " | ".join(cell_names) + " | n | " + " | ".join(arms) + " |",
             "|" + "---|" * (len(cell_names) + 1 + len(arms))]
    for i, c in enumerate(first):
        if c["n"] == 0:
            continue
        lines.append("| " + " | ".join(c["cell"]) + f" | {c['n']} | "
                     + " | ".join(_with_ci(by_arm[a]["per_cell"][i]) for a in arms) + " |")
    return lines


def _with_ci(e: dict) -> str:
    """``75.0 [50.1, 90.3]``: an accuracy with its interval, when it has one."""
    if e.get("ci_low") is None:
        return _pct(e.get("accuracy"))
    return f"{_pct(e.get('accuracy'))} [{_pct(e['ci_low'])}, {_pct(e['ci_high'])}]"


def _rare_section(rare: dict | None) -> list[str]:
    """Accuracy and gains in the rare cells, where the study claims its gain."""
    if not rare:
        return []
    out = ["", "### Rare cells", ""]
    if not rare["cells"]:
        return out + [f"No rare cells ({rare['rule']})."]
    out.append(f"Rare: {rare['rule']}: {', '.join('/'.join(c) for c in rare['cells'])} ({rare['n']} held-out images, "
               "pooled out-of-fold). Accuracy with its Wilson 95% interval; gains in points with a paired bootstrap "
               "95% interval over subjects and McNemar's p.")
    out += ["", "| arm | accuracy % | gain over real | p | gain over matched control | p |", "|---|---|---|---|---|---|"]

    def g(d: dict | None) -> tuple[str, str]:
        if not d:
            return "", ""
        return (f"{_pct(d['difference'], True)} [{_pct(d['ci_low'], True)}, {_pct(d['ci_high'], True)}]",
                f"{d['mcnemar_p']:.3f}")

    for arm, e in rare["arms"].items():
        vr, pr = g(e.get("vs_real"))
        vm, pm = g(e.get("vs_matched"))
        out.append(f"| {arm} | {_with_ci(e)} | {vr} | {pr} | {vm} | {pm} |")
    return out


def _class_table(by_arm: dict, class_names: list[str]) -> list[str]:
    """Accuracy per true class and their average (the layout of the study's Table 2)."""
    arms = list(by_arm)
    lines = ["| Class | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for cname in class_names:
        vals = [by_arm[a]["per_class"][cname]["sensitivity"] for a in arms]
        if by_arm[arms[0]]["per_class"][cname]["support"] == 0:
            continue
        lines.append(f"| {cname} | " + " | ".join(_pct(v) for v in vals) + " |")
    lines.append("| Average (balanced accuracy) | " + " | ".join(_pct(by_arm[a]["balanced_accuracy"]) for a in arms) + " |")
    lines.append("| Accuracy | " + " | ".join(_pct(by_arm[a]["accuracy"]) for a in arms) + " |")
    return lines


def _matched_section(matched: dict, results: dict, with_corrected: bool, pooled: str = "Pooled %") -> list[str]:
    """Every synthetic arm against the matched control of its ratio."""
    out: list[str] = []
    for ctrl, m in matched.items():
        n_rep = [row.get("n_repeated") for row in results["cv"]["folds"].get(ctrl, [])]
        n_txt = "" if not n_rep or None in n_rep else (
            f" ({n_rep[0]} per fold)" if len(set(n_rep)) == 1 else f" ({', '.join(map(str, n_rep))} per fold)")
        out += ["", f"### Gain over the matched control `{ctrl}` (ratio {m['ratio']:g})", "",
                f"`{ctrl}` trains on the real training images plus as many real training images again as the "
                f"count rule gives the synthetic arms{n_txt}, drawn cell by cell with the same counts: as many "
                "optimisation steps on the same label mix, without synthetic images. Over `real`, a synthetic arm's gain includes the effect "
                "of training longer; over this control, only what its images add."]
        for metric in METRICS:
            out += ["", f"{metric.replace('_', ' ').capitalize()}:", ""]
            out += _stat_table(m[metric], with_corrected=with_corrected, pooled=pooled if metric == "accuracy" else "Pooled %")
    return out


def render_markdown(results: dict) -> str:
    cfg = results["config"]
    k = results["k"]
    gen = results["generator"]
    out = ["# Augmentation-gain ablation", ""]
    out.append(f"Data: `{cfg['data']}` ({results['n_images']} images), target `{cfg['target']}` "
               f"({', '.join(results['class_names'])}), {k}-fold grouped stratified cross-validation "
               f"(fold sizes {', '.join(map(str, results['fold_sizes']))}), classifier `{cfg['train']['model']}` at "
               f"{cfg['train']['size']} px, {cfg['train']['epochs']} epoch(s).")
    if gen["mode"] == "per_fold":
        start = f" from `{gen['gan_base']}`" if gen.get("gan_base") else ""
        pool = f" plus the images of other subjects in `{gen['gan_pool']}`" if gen.get("gan_pool") else ""
        out.append(f"Generator: one GAN per fold trained{start} on that fold's training images{pool} only "
                   f"({gen['gan_kimg']} kimg).")
    else:
        out.append(f"Generator: one shared network `{gen['network']}` for all folds. **If it was trained on all images, "
                   "every held-out image leaked into the generator and the gains below are optimistic**; use "
                   "`--gan-per-fold` for an unbiased estimate.")
    out.append("Synthetic images join only the training folds of their fold; counts follow the study rule "
               "(per disease x age cell, the mean count over that disease's age groups in the training folds) times the ratio.")
    if cfg.get("replace"):
        out.append("Replace mode: every arm keeps the real set's epoch length (an epoch of a synthetic arm draws as many "
                   "images as the real training set has, from the real and synthetic images together), so every arm "
                   "takes the same steps as `real` and its gain over `real` is what the synthetic images add.")
    only = [a["name"] for a in results["arms"] if a.get("only")]
    if only:
        out.append(f"Synthetic-only arms ({', '.join(f'`{n}`' for n in only)}) train on the synthetic images alone and "
                   "are scored on the real held-out fold: their accuracy is the generator's classification accuracy "
                   "score, and their 'gain' over `real` how far it falls short of the real images.")
    out.append("")
    if k < 5:
        out.append(f"**Caution: only {k} folds.** The t interval uses {k - 1} degree(s) of freedom, so confidence intervals "
                   "are very wide and the tests have little power; treat differences as descriptive.")
        out.append("")
    out.append("## Cross-validation (held-out folds)")
    out.append("")
    out.append("Mean and SD over folds; *pooled* = accuracy of all out-of-fold predictions together. Differences are "
               "arm minus real-only per fold, in percentage points. The corrected test (Nadeau & Bengio) widens the "
               "interval for the overlap of training sets between folds "
               f"(n_train = {results['cv']['statistics']['accuracy']['n_train']:.0f}, "
               f"n_test = {results['cv']['statistics']['accuracy']['n_test']:.0f}); McNemar uses the pooled out-of-fold "
               "predictions of the same images.")
    seeds = results.get("seeds", 1)
    if seeds > 1:
        # Seed noise is what several classifier seeds average away; show its size so a reader can
        # compare it with the gains.
        sds = results["cv"]["statistics"]["accuracy"]["arms"]
        spread = ", ".join(f"{arm} {_pct(e.get('seed_sd'))}" for arm, e in sds.items())
        out += ["", f"Each fold and arm was trained with {seeds} classifier seeds; a fold's score is their mean and the "
                "out-of-fold predictions average their probabilities. SD of accuracy between seeds within a fold "
                f"(points, mean over folds): {spread}."]
    out += _fold_gan_section(gen)
    out += _epoch_section(results.get("epoch_selection"))
    for metric in METRICS:
        out += ["", f"### {metric.replace('_', ' ').capitalize()}", ""]
        out += _stat_table(results["cv"]["statistics"][metric], with_corrected=True)
    out += _matched_section(results["cv"].get("matched") or {}, results, with_corrected=True)
    out += _power_section(results)
    out += ["", "### Accuracy per class (pooled out-of-fold)", ""]
    out += _class_table(results["cv"]["oof"], results["class_names"])
    out += _rare_section(results["cv"].get("rare_cells"))
    out += ["", "### Accuracy per condition cell (pooled out-of-fold, %, Wilson 95% interval)", ""]
    out += _cell_table(results["cv"]["oof"], results["cell_names"])
    if results.get("test"):
        t = results["test"]
        out += ["", f"## Fixed test set ({t['n_images']} images)", "",
                "Ensemble of the fold models (probabilities averaged over models with max probability >= 0.5, all "
                "models when none passes), as in the study's Table 2. Per-fold rows: each fold model alone; "
                "McNemar on the ensemble predictions.", ""]
        out += _class_table(t["ensemble"], results["class_names"])
        for metric in METRICS:
            out += ["", f"### {metric.replace('_', ' ').capitalize()} of the fold models on the test set", ""]
            out += _stat_table(t["statistics"][metric], with_corrected=False, pooled="Ensemble %")
        out += _matched_section(t.get("matched") or {}, results, with_corrected=False, pooled="Ensemble %")
        out += ["", "### Test accuracy per condition cell (ensemble, %)", ""]
        out += _cell_table(t["ensemble"], results["cell_names"])
    out += ["", "Files: `results.json` (everything), `per_arm.csv`, `per_cell.csv`, `gain.png`, `cells/` (per fold and arm).", ""]
    return "\n".join(out)


def plot_gain(path: Path, results: dict) -> None:
    """Gain of each arm over real-only (percentage points) with 95% t intervals, and over the
    matched control of its ratio where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("cv", m, results["cv"]) for m in METRICS]
    if results.get("test"):
        panels.append(("test", "accuracy", results["test"]))
    arms = [a for a in results["cv"]["statistics"]["accuracy"]["arms"] if a != results["reference"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 0.45 * len(arms) + 2.2), squeeze=False)
    try:
        for ax, (scope, metric, part) in zip(axes[0], panels):
            st = part["statistics"][metric]
            ys = list(range(len(arms)))
            over_ctrl = gains_over_matched(part, metric)
            for y, arm in zip(ys, arms):
                dm = over_ctrl.get(arm)
                if dm is not None:
                    ax.errorbar([100 * dm["mean"]], [y - 0.22], fmt="s", color="tab:green", capsize=3, ms=4,
                                xerr=[[100 * (dm["mean"] - dm["ci_low"])], [100 * (dm["ci_high"] - dm["mean"])]])
                d = st["arms"][arm].get("difference")
                if d is None:
                    continue
                ax.errorbar([100 * d["mean"]], [y], xerr=[[100 * (d["mean"] - d["ci_low"])], [100 * (d["ci_high"] - d["mean"])]],
                            fmt="o", color="tab:blue", capsize=3)
                c = st["arms"][arm].get("corrected")
                if c is not None:
                    ax.plot([100 * c["ci_low"], 100 * c["ci_high"]], [y + 0.2, y + 0.2], color="tab:orange", lw=1)
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_yticks(ys, labels=arms)
            ax.set_ylim(len(arms) - 0.5, -0.5)  # first arm on top, same layout in every panel
            ax.set_xlabel("gain (points)")
            ax.set_title(f"{scope}: {metric.replace('_', ' ')} (k={st['k']})", fontsize=9)
        axes[0][0].text(0.0, -0.28, "dot: mean gain over real, bar: 95% t CI; orange: corrected (Nadeau-Bengio) CI;"
                        + ("\ngreen square: gain over the matched control (real_matched)" if results["cv"].get("matched") else ""),
                        transform=axes[0][0].transAxes, fontsize=7, va="top")
        fig.tight_layout()
        atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def _power_section(results: dict) -> list[str]:
    """The perfect-generator control: the ceiling of the experiment and whether it can see a gain."""
    arms = results["cv"]["statistics"]["accuracy"]["arms"]
    names = [a["name"] for a in results["arms"] if a.get("type") == "perfect"]
    out: list[str] = []
    for name in names:
        c = arms.get(name, {}).get("corrected") or arms.get(name, {}).get("difference")
        if not c:
            continue
        matched = next((m["accuracy"]["arms"].get(name) for m in (results["cv"].get("matched") or {}).values()
                        if name in m["accuracy"]["arms"]), None)
        mc = (matched or {}).get("corrected") or (matched or {}).get("difference")
        out += ["", f"### Power check: the perfect generator `{name}`", "",
                f"`{name}` adds freshly rendered atlas faces of new subjects, in the synthetic arms' cells and counts: "
                f"what an ideal generator would add. Over `real` it gains {_pct(c['mean'], True)} points "
                f"(CI [{_pct(c['ci_low'], True)}, {_pct(c['ci_high'], True)}])"
                + (f"; over the matched control {_pct(mc['mean'], True)} (CI [{_pct(mc['ci_low'], True)}, "
                   f"{_pct(mc['ci_high'], True)}])" if mc else "") + "."]
        if c["ci_low"] <= 0 or (mc and mc["ci_low"] <= 0):
            out.append("**Even these images show no significant gain: this design cannot detect a gain of that size "
                       "(more folds, seeds or data would be needed), so no synthetic arm's result here can show one.**")
        else:
            out.append("That is the ceiling of this experiment: a synthetic arm near it renders what the data lacks.")
    return out


def _fold_gan_section(gen: dict) -> list[str]:
    """Each fold GAN: what it trained on, which snapshot was used and its judges' figures."""
    folds = gen.get("folds") or []
    if not any(folds):
        return []
    judged = bool(gen.get("gan_judges"))
    factors = sorted({k.split("/")[1] for f in folds if f and f.get("selection") for k in f["selection"]
                      if k.startswith("judge/") and k.count("/") == 1 and k != "judge/mean"})
    out = ["", "### Fold GANs", ""]
    if judged:
        out.append("Each fold GAN was scored while it trained by the judges below (trained on other subjects); the "
                   "snapshot with the best selection score (judge accuracy scaled down when the cells vary less than "
                   "the real ones) generated the fold's images. Judges that chose a snapshot flatter it: read their "
                   "figures as an upper bound, and judge the generators with a panel that took no part "
                   "(`tools/eval_generator.py`). Judges: " + ", ".join(f"`{j}`" for j in gen["gan_judges"]) + ".")
        out.append("")
    head = ["fold", "images (pool)", "kimg", "snapshot"] + ([f"judge {f}" for f in factors] + ["diversity", "select"]
                                                            if judged else [])
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, f in enumerate(folds):
        if not f:
            out.append(f"| {i} | not trained |" + " |" * (len(head) - 2))
            continue
        row = [str(i), f"{f.get('n_images')} ({f.get('n_pool', 0)})", f"{f.get('kimg', 0):.1f}",
               f"{f.get('snapshot')} ({f.get('selected', 'last')})"]
        if judged:
            sel = f.get("selection") or {}
            row += [_pct(sel.get(f"judge/{fac}")) for fac in factors]
            row += [f"{sel['diversity/mean']:.2f}" if sel.get("diversity/mean") is not None else "-",
                    f"{sel['select']:.3f}" if sel.get("select") is not None else "-"]
        out.append("| " + " | ".join(row) + " |")
    return out


def _epoch_section(sel: dict | None) -> list[str]:
    """Which epoch was scored, and where the best epochs fell (convergence at a glance)."""
    if not sel:
        return []
    share = f"{sel['inner_val']:.0%} of " if sel.get("inner_val") is not None else ""
    how = {"inner": f"the best epoch on an inner validation split ({share}the training folds, "
                    f"subjects kept whole; never the held-out fold)",
           "last": "the last epoch", "held_out": "the best epoch on the held-out fold itself (optimistic: the "
                                                 "scoring images chose the model; a folder from before the inner split)"}
    lines = ["", f"Each classifier is scored at {how.get(sel['mode'], sel['mode'])}."]
    if sel["mode"] != "last" and sel.get("best_epochs"):
        n = sel["epochs"]
        parts = [f"{arm} {np.mean(e) + 1:.1f}" + (f" ({sum(x == n - 1 for x in e)}/{len(e)} at the last)" if e else "")
                 for arm, e in sel["best_epochs"].items() if e]
        lines.append(f"Mean best epoch of {n} per arm (in brackets: classifiers whose best was the last epoch, "
                     f"still improving): {', '.join(parts)}.")
    return lines


def write_report(out_dir: str | Path, results: dict) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {n: out / n for n in ("results.json", "per_arm.csv", "per_cell.csv", "report.md", "gain.png")}
    atomic_write_text(paths["results.json"], json.dumps(results, indent=1) + "\n")
    atomic_write_text(paths["per_arm.csv"], csv_text(ARM_HEADER, _arm_rows(results)))
    atomic_write_text(paths["per_cell.csv"], csv_text(["scope", "arm", *results["cell_names"], "n", "correct", "accuracy", "ci_low", "ci_high"],
                                                  _cell_rows(results)))
    plot_gain(paths["gain.png"], results)
    atomic_write_text(paths["report.md"], render_markdown(results))
    return paths
