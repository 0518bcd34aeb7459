"""Teaching sets: a labelled gallery of every condition cell, morph strips, and a scored quiz.

Everything is static files: ``index.html`` (inline CSS, relative image paths) opens from a
USB stick; ``quiz.html`` shows shuffled unlabelled images; ``answer_key.csv`` stays with the
teacher; :func:`score_quiz` grades a respondent's CSV per factor and per cell;
``viewer.html`` (:mod:`synth.synthesis.viewer`, every image embedded) has a slider per morph and,
with a quiz, the quiz images with answers hidden until "Reveal" (a self-check).
"""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from synth.conditions import ConditionSpace
from synth.synthesis.counts import resolve_roles
from synth.synthesis.engine import Renderer
from synth.synthesis.errors import SynthesisError
from synth.synthesis.labels import SeedStream
from synth.synthesis.morph import keyframe_captions, render_morph, resolve_morph
from synth.synthesis.render import labelled_strip, save_png
from synth.synthesis.morph import morph_card
from synth.synthesis.viewer import DEFAULT_FRAMES, frame_times, generator_note, labels_caption, quiz_card, write_viewer
from synth.utils.io import atomic_write_text

__all__ = ["TeachResult", "make_teaching_set", "score_quiz", "read_answer_key", "write_report"]

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px;text-align:center;vertical-align:top}
th{background:#f3f3f3}
img{image-rendering:pixelated;width:96px;height:96px;margin:1px}
.strip img{width:auto;height:auto;max-width:100%}
.quiz figure{display:inline-block;margin:6px;text-align:center}
.quiz img{width:160px;height:160px}
"""


@dataclass
class TeachResult:
    out: Path
    gallery: dict  # cell -> list of relative paths
    morphs: list[str]
    quiz: list[dict]
    viewer: str | None = None  # "viewer.html" when written


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _img(rel: str, alt: str) -> str:
    return f'<img src="{html.escape(rel)}" alt="{html.escape(alt)}">'


def _generator_html(settings: Mapping[str, Any]) -> str:
    """The foot of a page: which generator made its images (path, kimg, SHA-256)."""
    text = generator_note(settings)
    return f'<p class="generator"><small>{html.escape(text)}</small></p>' if text else ""


def _gallery_html(space: ConditionSpace, gallery: dict, morphs: list[tuple[str, str]], row_f: str | None, col_f: str | None) -> str:
    parts = []
    if row_f is not None and col_f is not None:
        ri, ci = space.names.index(row_f), space.names.index(col_f)
        # kept levels only, in level order (never alphabetical)
        rows = [lv for lv in space.factor(row_f).levels if any(c[ri] == lv for c in gallery)]
        cols = [lv for lv in space.factor(col_f).levels if any(c[ci] == lv for c in gallery)]
        t = [f"<table><tr><th>{html.escape(row_f)} \\ {html.escape(col_f)}</th>"]
        t += [f"<th>{html.escape(c)}</th>" for c in cols] + ["</tr>"]
        for r in rows:
            t.append(f"<tr><th>{html.escape(r)}</th>")
            for c in cols:
                cell = tuple({row_f: r, col_f: c}[n] for n in space.names)
                t.append("<td>" + "".join(_img(p, f"{r} / {c}") for p in gallery.get(cell, [])) + "</td>")
            t.append("</tr>")
        t.append("</table>")
        parts.append("".join(t))
    else:
        name = space.names[0]
        kept = [lv for lv in space.factor(name).levels if (lv,) in gallery]
        t = ["<table><tr>"] + [f"<th>{html.escape(lv)}</th>" for lv in kept] + ["</tr><tr>"]
        for lv in kept:
            t.append("<td>" + "".join(_img(p, lv) for p in gallery.get((lv,), [])) + "</td>")
        t.append("</tr></table>")
        parts.append("".join(t))
    if morphs:
        parts.append("<h2>Morphs</h2>")
        for title, rel in morphs:
            parts.append(f'<h3>{html.escape(title)}</h3><div class="strip"><img src="{html.escape(rel)}" alt="{html.escape(title)}"></div>')
    return "\n".join(parts)


def make_teaching_set(
    renderer: Renderer,
    space: ConditionSpace,
    out: str | Path,
    per_cell: int,
    seed: int = 0,
    quiz: bool = False,
    quiz_per_cell: int | None = None,
    age_factor: str | None = "age",
    steps: int = 5,
    exclude: dict | None = None,
    progress: bool = True,
    settings: Mapping[str, Any] | None = None,
    viewer: bool = True,
    viewer_frames: int = DEFAULT_FRAMES,
) -> TeachResult:
    """Gallery (``gallery/``, ``index.html``), morph strips (``morphs/``) and, with ``quiz``,
    ``quiz/NNN.png``, ``quiz.html``, ``answer_key.csv`` and ``answers_template.csv``; with
    ``viewer`` the interactive ``viewer.html`` (a slider over ``viewer_frames`` frames of each morph,
    and the quiz with hidden answers); last ``teach.json``: the options, ``settings`` (e.g. the
    network's path and SHA-256, also shown at the foot of index.html) and the files written."""
    if per_cell < 1:
        raise SynthesisError(f"--per-cell {per_cell}: must be >= 1")
    if viewer:
        frame_times(viewer_frames)  # a bad count stops before anything is written
    nq = quiz_per_cell if quiz_per_cell is not None else per_cell
    if quiz and nq < 1:  # checked before the gallery is written
        raise SynthesisError(f"--quiz-per-cell {nq}: must be >= 1")
    settings = dict(settings or {})
    out = Path(out)
    roles = resolve_roles(space, age_factor)
    exclude = exclude or {}
    names = list(space.names)
    cells = [c for c in space.cells() if not any(c[i] in exclude.get(n, ()) for i, n in enumerate(names))]
    if not cells:
        raise SynthesisError("every cell is excluded; nothing to show")
    seeds = SeedStream(None, seed)
    gallery: dict = {}
    for cell in tqdm(cells, desc="gallery", unit="cell", disable=not progress):
        ss = [seeds() for _ in range(per_cell)]
        imgs = renderer.images(ss, np.stack([space.encode(dict(zip(names, cell)))] * per_cell), noise_seed=ss[0])
        rels = []
        for s, img in zip(ss, imgs):
            rel = f"gallery/{'_'.join(cell)}/s{s}.png"
            save_png(img, out / rel)
            rels.append(rel)
        gallery[cell] = rels

    morphs: list[tuple[str, str]] = []
    cards = []
    if roles.age is not None:
        others = [None] if roles.disease is None else [d for d in space.factor(roles.disease).levels if d not in exclude.get(roles.disease, ())]
        for d in others:
            spec = resolve_morph(space, roles.age, None, None, d)
            s = seeds()
            keys, _ = render_morph(renderer, space, spec, s, steps, 0)
            rel = f"morphs/{d or roles.age}_s{s}.png"
            save_png(labelled_strip(list(keys), keyframe_captions(spec, steps)), out / rel)
            morphs.append((f"{d + ': ' if d else ''}{spec.start} to {spec.end} (seed {s})", rel))
            if viewer:
                cards.append(morph_card(renderer, space, spec, s, viewer_frames, title=f"{d or spec.factor} (seed {s})"))

    row_f, col_f = (roles.disease, roles.age) if roles.disease and roles.age else (None, None)
    link = '<p><a href="viewer.html">Interactive viewer</a> (a slider per morph' + (", and the quiz" if quiz else "") + ")</p>\n" \
        if viewer and (cards or quiz) else ""
    atomic_write_text(out / "index.html", _page("Teaching set", link + _gallery_html(space, gallery, morphs, row_f, col_f)
                                                + "\n" + _generator_html(settings)))

    quiz_rows: list[dict] = []
    if quiz:
        plan = [(cell, seeds()) for cell in cells for _ in range(nq)]
        order = np.random.default_rng(seed).permutation(len(plan))
        width = max(3, len(str(len(plan))))
        quiz_imgs = []
        for num, k in enumerate(tqdm(order, desc="quiz", unit="img", disable=not progress), start=1):
            cell, s = plan[int(k)]
            img = renderer.images([s], space.encode(dict(zip(names, cell)))[None], noise_seed=s)[0]
            rel = f"quiz/{num:0{width}d}.png"
            save_png(img, out / rel)
            if viewer:
                quiz_imgs.append(img)
            quiz_rows.append({"number": num, "file": rel, **dict(zip(names, cell)), "seed": s})
        figs = "".join(f'<figure>{_img(r["file"], "quiz image " + str(r["number"]))}<figcaption>{r["number"]}</figcaption></figure>' for r in quiz_rows)
        levels = "".join(f"<li><b>{html.escape(f.name)}</b>: {html.escape(', '.join(f.levels))}</li>" for f in space.factors)
        body = f"<p>Name the condition of each numbered image. Possible answers:</p><ul>{levels}</ul>" \
               f"<p>Fill in <code>answers_template.csv</code> (one row per number).</p><div class=\"quiz\">{figs}</div>"
        atomic_write_text(out / "quiz.html", _page("Quiz", body))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["number", "file", *names, "seed"])
        for r in quiz_rows:
            w.writerow([r["number"], r["file"], *[r[n] for n in names], r["seed"]])
        atomic_write_text(out / "answer_key.csv", buf.getvalue())
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["number", *names])
        for r in quiz_rows:
            w.writerow([r["number"], *[""] * len(names)])
        atomic_write_text(out / "answers_template.csv", buf.getvalue())
        if viewer:
            n = len(quiz_rows)
            cards.append(quiz_card(quiz_imgs, [labels_caption(r, names) for r in quiz_rows],
                                   [f"image {r['number']} of {n} ({r['file']})" for r in quiz_rows],
                                   subtitle="Possible answers\n" + "\n".join(f"{f.name}: {', '.join(f.levels)}" for f in space.factors)))
    if viewer and cards:
        write_viewer(out / "viewer.html", cards, title="Teaching set: interactive viewer",
                     intro="Morph cards move one identity's label along the slider; the mix of the shown frame is printed under it."
                     + (" The quiz card shows the quiz images in answer-sheet order, each answer hidden until Reveal." if quiz else ""),
                     footer=generator_note(settings))
    space.save(out / "conditions.yaml")
    info = {"per_cell": per_cell, "seed": seed, "quiz": quiz, "quiz_per_cell": nq if quiz else None,
            "age_factor": roles.age, "steps": steps, "exclude": {k: sorted(v) for k, v in exclude.items()},
            "psi": renderer.psi, "noise_mode": renderer.noise_mode, **settings,
            "gallery": {"|".join(c): v for c, v in gallery.items()}, "morphs": [m[1] for m in morphs],
            "quiz_files": [r["file"] for r in quiz_rows],
            "viewer": "viewer.html" if viewer and cards else None,
            "viewer_frames": viewer_frames if viewer and cards else None}
    atomic_write_text(out / "teach.json", json.dumps(info, indent=2, default=str) + "\n")
    return TeachResult(out, gallery, [m[1] for m in morphs], quiz_rows, info["viewer"])


# ----------------------------------------------------------------------------------------
# Scoring


def _read_csv(path: Path, what: str) -> tuple[list[str], list[dict[str, str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SynthesisError(f"{what} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SynthesisError(f"{what} {path}: cannot read ({type(e).__name__})") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    return header, rows


def _number(v: str, where: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise SynthesisError(f"{where}: 'number' must be an integer, got {v!r}") from None


def read_answer_key(path: str | Path) -> tuple[list[str], dict[int, dict[str, str]]]:
    """-> (factor names, {number: {factor: level}})."""
    path = Path(path)
    header, rows = _read_csv(path, "--key")
    if "number" not in header:
        raise SynthesisError(f"--key {path}: missing column 'number'")
    factors = [h for h in header if h not in ("number", "file", "seed")]
    if not factors:
        raise SynthesisError(f"--key {path}: no factor columns")
    key: dict[int, dict[str, str]] = {}
    for line, r in enumerate(rows, start=2):
        n = _number(r["number"], f"--key {path}: line {line}")
        if n in key:
            raise SynthesisError(f"--key {path}: line {line}: number {n} listed twice")
        key[n] = {f: r.get(f, "") for f in factors}
    return factors, key


def score_quiz(answers: str | Path, key: str | Path) -> dict:
    """Accuracy of one respondent: overall (every factor right), per factor and per cell.

    Missing rows or empty answers count as wrong and are listed; level names compare
    case-insensitively with spaces and dashes treated as underscores.
    """
    answers = Path(answers)
    factors, truth = read_answer_key(key)
    header, rows = _read_csv(answers, "ANSWERS")
    if "number" not in header:
        raise SynthesisError(f"ANSWERS {answers}: missing column 'number'")
    missing_cols = [f for f in factors if f not in header]
    if missing_cols:
        raise SynthesisError(f"ANSWERS {answers}: missing column(s) {', '.join(missing_cols)} (expected number,{','.join(factors)})")
    given: dict[int, dict[str, str]] = {}
    for line, r in enumerate(rows, start=2):
        if not r.get("number"):
            continue
        n = _number(r["number"], f"ANSWERS {answers}: line {line}")
        if n not in truth:
            raise SynthesisError(f"ANSWERS {answers}: line {line}: number {n} is not in the answer key")
        if n in given:
            raise SynthesisError(f"ANSWERS {answers}: line {line}: number {n} answered twice")
        given[n] = {f: r.get(f, "") for f in factors}

    def norm(s: str) -> str:
        return s.strip().lower().replace(" ", "_").replace("-", "_")

    per_factor = {f: {"correct": 0, "total": 0} for f in factors}
    per_cell: dict[str, dict[str, int]] = {}
    missing: list[int] = []
    # answers that name no level of the quiz: counted wrong, and reported (a misspelling
    # such as "syndrom_b" must not pass as an honest mistake)
    levels = {f: sorted({t[f] for t in truth.values()}) for f in factors}
    known = {f: {norm(v) for v in levels[f]} for f in factors}
    unknown = [(n, f, a[f]) for n, a in sorted(given.items()) for f in factors if a.get(f) and norm(a[f]) not in known[f]]
    overall = 0
    for n in sorted(truth):
        t = truth[n]
        a = given.get(n, {})
        if not a or any(not a.get(f) for f in factors):
            missing.append(n)
        ok_all = True
        for f in factors:
            ok = bool(a.get(f)) and norm(a[f]) == norm(t[f])
            per_factor[f]["total"] += 1
            per_factor[f]["correct"] += int(ok)
            ok_all &= ok
        cell = "/".join(t[f] for f in factors)
        c = per_cell.setdefault(cell, {"correct": 0, "total": 0})
        c["total"] += 1
        c["correct"] += int(ok_all)
        overall += int(ok_all)
    for d in [*per_factor.values(), *per_cell.values()]:
        d["accuracy"] = d["correct"] / d["total"] if d["total"] else 0.0
    return {
        "items": len(truth),
        "answered": len(truth) - len(missing),
        "missing": missing,
        "unknown": unknown,
        "levels": levels,
        "accuracy": overall / len(truth) if truth else 0.0,
        "correct": overall,
        "per_factor": per_factor,
        "per_cell": per_cell,
    }


def write_report(report: dict, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
