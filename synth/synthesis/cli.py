"""Command line: ``synth generate``, ``synth morph``, ``synth mix``, ``synth teach`` and ``synth project``."""
from __future__ import annotations

import functools
from pathlib import Path

import click

from synth.cli_errors import one_line_errors
from synth.utils.cli_types import DEVICE, SEED

__all__ = ["generate", "morph", "mix", "teach", "project", "COMMANDS"]

_TYPES = ["unrelated", "age_related", "age_progression", "blended", "style_mixed", "all"]


def _truncation(ctx, param, value):
    """--truncation: a finite psi >= 0 (a usage error otherwise, before anything is loaded)."""
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.network import check_truncation

    try:
        return check_truncation(value)
    except SynthesisError as e:
        raise click.UsageError(str(e), ctx) from None


def _seed_list(spec: str) -> list[int]:
    """A malformed seed list is a usage error (exit 2), like any other bad option value."""
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.labels import parse_seeds

    try:
        return parse_seeds(spec)
    except SynthesisError as e:
        raise click.UsageError(str(e)) from None


def truncation_option(default: float, help: str):  # noqa: A002 - click's name
    return click.option("--truncation", "psi", type=float, default=default, show_default=True, callback=_truncation,
                        help=help)


_NETWORK_HELP = ("Generator checkpoint (.ckpt). Default: newest runs/*/ snapshot, else the bundled "
                 "checkpoints/demo-faces.ckpt")


def _common(fn=None, *, factor: bool = True):
    """Options every rendering command shares (``factor``: the command has --factor, so the
    default network may be the skin model)."""
    if fn is None:
        return functools.partial(_common, factor=factor)
    net_help = _NETWORK_HELP + (" (demo-skin.ckpt for --factor stage)." if factor else ".") + \
        " The one picked is printed on stderr; every output records its path and SHA-256."
    for deco in reversed([
        click.option("--network", "network", type=click.Path(path_type=Path), default=None, help=net_help),
        click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True,
                     help="Per-pixel noise inputs: fixed buffers, fresh (seeded) noise, or off."),
        click.option("--batch", type=click.IntRange(min=1), default=16, show_default=True, help="Images per forward pass."),
        click.option("--device", type=DEVICE, default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda."),
        click.option("--mean-w-samples", type=click.IntRange(min=1), default=2000, show_default=True,
                     help="z samples per label for the per-condition average w used by truncation."),
        click.option("--force", is_flag=True, help="Write into a non-empty --out folder (files are overwritten)."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]):
        fn = deco(fn)
    return fn


def _renderer(network, device, psi, noise_mode, batch, mean_w_samples, factor=None):
    """-> (renderer, space, meta, record): ``record`` names the network and its SHA-256 for
    the outputs (:func:`synth.synthesis.network.network_record`)."""
    from synth.synthesis.engine import Renderer
    from synth.synthesis.network import network_record, open_generator

    G, space, meta, path = open_generator(network, device=device, factor=factor)
    rend = Renderer(G, psi=psi, noise_mode=noise_mode, batch=batch, device=device, mean_w_samples=mean_w_samples)
    return rend, space, meta, network_record(path, meta, meta.get("network_default"))


def _default_factor(space, factor: str | None) -> str:
    if factor is not None:
        return factor
    if "age" in space.names:
        return "age"
    ordinal = [f.name for f in space.factors if f.ordinal]
    if ordinal:
        return ordinal[0]
    if len(space.names) == 1:
        return space.names[0]
    raise click.ClickException(f"--factor: the model has no ordinal factor; name one of {', '.join(space.names)}")


def _optional_age_factor(space, factor: str | None) -> str | None:
    """--factor, else age, else the first ordinal factor, else None (no age role)."""
    if factor is not None or "age" in space.names:
        return factor or "age"
    return next((f.name for f in space.factors if f.ordinal), None)


def _w_option(what: str):
    return click.option("--w", "w_files", type=click.Path(path_type=Path), multiple=True,
                        help=f"projected_w.npz from `synth project` (repeatable): projected {what}.")


def _w_psi(psi: float) -> float:
    """With --w, psi applies to the projected offset from the label's mean w; it is 1 (the
    projection as it is) unless --truncation is given."""
    ctx = click.get_current_context()
    return 1.0 if ctx.get_parameter_source("psi") == click.core.ParameterSource.DEFAULT else psi


def _identities(w_files, rend, space, net):
    """Load and check every --w against the network (hash, condition space, shapes)."""
    from synth.synthesis.project import load_projected_w

    return [load_projected_w(p, G=rend.G, space=space, network_sha256=net["network_sha256"], network=net["network"])
            for p in w_files]


def _identity_names(w_files) -> list[str]:
    """File names for projected faces: the folder of a projected_w.npz (synth project's layout), else its stem."""
    from synth.synthesis.project import safe_name

    names: list[str] = []
    for p in w_files:
        p = Path(p)
        base = safe_name(p.parent.name if p.stem == "projected_w" and p.parent.name else p.stem)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _identity_morph(space, factor, start, end, disease, idents):
    """The morph of projected faces: --from and the fixed levels default to their label."""
    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.morph import MorphSpec, resolve_morph

    levels = idents[0].levels
    if any(i.levels != levels for i in idents[1:]) and (start is None or (disease is None and len(space.names) > 1)):
        raise SynthesisError("--w: the projections have different labels; give --from and --disease")
    f = space.factor(factor) if factor in space.names else None
    if f is not None:
        start = start if start is not None else levels.get(factor)
        end = end if end is not None else (f.levels[-1] if start != f.levels[-1] else f.levels[0])
    others = [n for n in space.names if n != factor]
    spec = resolve_morph(space, factor, start, end, disease if disease is not None else (levels.get(others[0]) if others else None))
    fixed = {n: spec.fixed[n] if (n == others[0] or n not in levels) else levels[n] for n in others}
    return MorphSpec(spec.factor, spec.start, spec.end, fixed)


# ----------------------------------------------------------------------------------------


def _counts(space, roles, exclude, per_cell, data, meta):
    from synth.data.dataset import open_dataset
    from synth.synthesis.counts import counts_from_meta, study_counts, uniform_counts

    if per_cell is not None:
        return uniform_counts(space, per_cell, exclude), f"--per-cell {per_cell}"
    if data is not None:
        ims = open_dataset(data, cond=list(space.names), space=space)
        return study_counts(space, ims.cell_counts(), roles, exclude), f"study rule on {data}"
    stored = counts_from_meta(meta, space)
    if stored is not None:
        return study_counts(space, stored, roles, exclude), "study rule on counts stored in the checkpoint"
    opt_data = (meta.get("options") or {}).get("data") if isinstance(meta.get("options"), dict) else None
    if opt_data and Path(opt_data).exists():
        ims = open_dataset(opt_data, cond=list(space.names), space=space)
        return study_counts(space, ims.cell_counts(), roles, exclude), f"study rule on {opt_data} (training data of the checkpoint)"
    raise click.UsageError("give --data DIR (training data for the count rule) or --per-cell N: the checkpoint does not record its training counts")


@click.command("generate")
@click.option("--type", "ptype", type=click.Choice(_TYPES), required=True, help="Image product (Study 1 types), or all.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (becomes a dataset: labels.csv).")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="Training dataset whose cell counts drive the count rule.")
@click.option("--per-cell", type=int, default=None, help="Fixed count per kept cell instead of the study's count rule.")
@click.option("--factor", default=None, help="The ordinal 'age' factor (default age; the skin model uses stage).")
@click.option("--steps", type=int, default=5, show_default=True, help="age_progression: images per identity (1, .75, ..., 0 mixes).")
@click.option("--from", "age_from", default=None, help="age_progression start level (default: first level).")
@click.option("--to", "age_to", default=None, help="age_progression end level (default: last level).")
@click.option("--mix", "mixes", type=float, multiple=True, help="blended: weight of the first disease (repeatable) [default: 0.55].")
@click.option("--styles", default=None, help="style_mixed: layers from the first image, e.g. 0-6 (default: first half of the w layers).")
@truncation_option(0.6, "psi toward the per-condition average w (a finite number >= 0; 1 = none).")
@click.option("--seeds", default=None, help="Seeds to draw z from, e.g. 0-999 or 1,5,9 (default: consecutive from --seed).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="First seed when --seeds is not given.")
@click.option("--exclude-level", "exclude", multiple=True, help="FACTOR=LEVEL to skip (repeatable; 'none' keeps all) [default: the control level].")
@_w_option("identities: one image per level of age_related, age_progression (from its own level) or blended")
@_common
@one_line_errors
def generate(ptype, out, data, per_cell, factor, steps, age_from, age_to, mixes, styles, psi, seeds, seed, exclude, w_files,
             network, noise_mode, batch, device, mean_w_samples, force, quiet):
    """Generate synthetic training images (Study 1 products) as a dataset folder.

    \b
    Types:
      unrelated        fresh z per image for every kept (disease, age) cell
      age_related      one z per identity rendered at every age level
      age_progression  one z, age label moved from --from to --to in --steps steps
      blended          one z, disease label c*d1 + (1-c)*d2 for ordered pairs (--mix c)
      style_mixed      coarse/middle layers from one z, fine layers from another
    Counts follow the study: per (d, a) the mean count over d's age groups in --data
    (rare ages get more); each type totals about the affected training images.
    Output: PNGs, labels.csv (= manifest.csv), conditions.yaml, generation.json.
    With --force, the images an earlier generation in --out listed are removed first.
    --w projected_w.npz (from synth project) renders that face instead of seeds (--truncation
    defaults to 1 then; counts and the default exclusion are not used).
    """
    from synth.synthesis.counts import parse_exclusions, resolve_roles
    from synth.synthesis.generate import generate_products
    from synth.synthesis.labels import SeedStream, parse_layers
    from synth.synthesis.manifest import earlier_generation, prepare_out_dir

    if steps < 2:
        raise click.UsageError(f"--steps {steps}: need at least 2")
    seed_list = _seed_list(seeds) if seeds is not None else None
    if w_files:
        if ptype not in ("age_related", "age_progression", "blended"):
            raise click.UsageError(f"--type {ptype} --w: {ptype} makes a fresh identity per image; with --w use "
                                   "age_related, age_progression or blended")
        if data is not None or per_cell is not None:
            raise click.UsageError("--data/--per-cell set counts of fresh identities; with --w each projected face "
                                   "is rendered once per level")
        psi = _w_psi(psi)
    rend, space, meta, net = _renderer(network, device, psi, noise_mode, batch, mean_w_samples, factor)
    fac = _optional_age_factor(space, factor)
    roles = resolve_roles(space, fac)
    if w_files:
        idents = _identities(w_files, rend, space, net)
        excl = parse_exclusions(list(exclude), space) if exclude else {}
        out = prepare_out_dir(out, force, earlier_generation(out))
        rows = generate_products(
            rend.G, space, ptype, {}, 0, rend.psi, out, age_factor=fac, exclude=excl, steps=steps, age_from=age_from,
            age_to=age_to, mixes=tuple(mixes) or (0.55,), progress=not quiet, renderer=rend, identities=idents,
            settings={**net, "counts_from": "--w", "identities": [i.record() for i in idents]},
        )
        click.echo(f"wrote {len(rows)} images ({ptype}) of {len(idents)} projected face(s) to {out}")
        return

    excl = parse_exclusions(list(exclude) if exclude else None, space)
    counts, how = _counts(space, roles, excl, per_cell, data, meta)
    layers = parse_layers(styles, rend.num_ws) if styles is not None else None
    out = prepare_out_dir(out, force, earlier_generation(out))  # --force: no stale images of a bigger run
    rows = generate_products(
        rend.G, space, ptype, counts, SeedStream(seed_list, seed), psi, out, age_factor=fac, steps=steps,
        age_from=age_from, age_to=age_to, mixes=tuple(mixes) or (0.55,), style_layers=layers, progress=not quiet,
        renderer=rend, settings={**net, "counts_from": how, "exclude": {k: sorted(v) for k, v in excl.items()}},
    )
    made = sorted({r.values["type"] for r in rows}, key=_TYPES.index)
    click.echo(f"wrote {len(rows)} images ({', '.join(made)}) to {out} ({how}); inspect with: synth data check {out}")


# ----------------------------------------------------------------------------------------


@click.command("morph")
@click.option("--from", "start", default=None, help="Start level (default: first level of --factor).")
@click.option("--to", "end", default=None, help="End level (default: last level).")
@click.option("--factor", default=None, help="Factor to morph (default: age, else the first ordinal factor).")
@click.option("--disease", default=None, help="Level of the other factor, held fixed (default: its first non-control level).")
@click.option("--steps", type=int, default=5, show_default=True, help="Labelled keyframes in the strip (>= 2).")
@click.option("--seeds", default=None, help="Identities, e.g. 0-7 or 1,5,9 (not with --w).  [default: 0-3]")
@click.option("--frames", type=int, default=60, show_default=True, help="Frames of the GIF/MP4 animation (eased in/out).")
@click.option("--fps", type=float, default=20.0, show_default=True, help="Animation frame rate.")
@click.option("--no-video", is_flag=True, help="Strips and contact sheet only.")
@click.option("--html", is_flag=True, help="Also write viewer.html: one self-contained page, a slider per seed (frames embedded).")
@click.option("--html-frames", type=click.IntRange(min=2), default=21, show_default=True,
              help="Evenly spaced frames per seed in viewer.html.")
@truncation_option(0.7, "psi toward the per-condition average w (a finite number >= 0; 1 = none).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder.")
@_w_option("identities instead of --seeds (--from/--disease default to its label)")
@_common
@one_line_errors
def morph(start, end, factor, disease, steps, seeds, frames, fps, no_video, html, html_frames, psi, out, w_files,
          network, noise_mode, batch, device, mean_w_samples, force, quiet):
    """Morph one identity from one level to another (e.g. infant to older adult).

    Per seed: a labelled keyframe strip (morph_sSEED.png), an animated GIF and MP4; plus
    contact_sheet.png of all seeds.  End frames are exactly the pure-condition images.
    --html adds viewer.html (slider, condition mix, keys; opens from disk).
    morph.json records the settings, the network and its SHA-256.
    --w projected_w.npz (from synth project) morphs that face (morph_NAME.*; first frame = its
    projection; --truncation defaults to 1 then).
    """
    from synth.synthesis.manifest import prepare_out_dir
    from synth.synthesis.morph import resolve_morph, write_morphs

    if steps < 2:
        raise click.UsageError(f"--steps {steps}: need at least 2")
    if not no_video and frames < 2:
        raise click.UsageError(f"--frames {frames}: need at least 2 (or --no-video)")
    if fps <= 0:
        raise click.UsageError(f"--fps {fps}: must be positive")
    if w_files and seeds is not None:
        raise click.UsageError("--seeds: with --w the projected faces are the identities; give one or the other")
    seed_list = _seed_list(seeds if seeds is not None else "0-3")
    if w_files:
        psi = _w_psi(psi)
    rend, space, _, net = _renderer(network, device, psi, noise_mode, batch, mean_w_samples, factor)
    idents = None
    if w_files:
        from synth.synthesis.project import IdentityRenderer

        idents = _identities(w_files, rend, space, net)
        spec = _identity_morph(space, _default_factor(space, factor), start, end, disease, idents)
        rend, seed_list = IdentityRenderer(rend, idents), list(range(len(idents)))
        idents = [{"name": n, **i.record()} for n, i in zip(_identity_names(w_files), idents)]
    else:
        spec = resolve_morph(space, _default_factor(space, factor), start, end, disease)
    out = prepare_out_dir(out, force)
    write_morphs(rend, space, spec, seed_list, out, steps=steps, frames=frames, fps=fps, video=not no_video, progress=not quiet,
                 settings=net, viewer=html, viewer_frames=html_frames, identities=idents)
    click.echo(f"wrote {len(seed_list)} morph(s) {spec.start} -> {spec.end} to {out}" + (f" (viewer: {out / 'viewer.html'})" if html else ""))


# ----------------------------------------------------------------------------------------


@click.command("mix")
@click.option("--rows", default="0-3", show_default=True, help="Row source seeds (give the --styles layers).")
@click.option("--cols", default="10-13", show_default=True, help="Column source seeds (give every other layer).")
@click.option("--styles", default=None, help="Layers taken from the row source, e.g. 0-6 (default: coarse+middle half).")
@click.option("--cond", default=None, help="Condition of every image, e.g. disease=syndrome_a,age=child (factors left out: first affected cell).")
@truncation_option(0.7, "psi toward the per-condition average w (a finite number >= 0; 1 = none).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (mix.png).")
@click.option("--save-individual", is_flag=True, help="Also save every source and cell as its own PNG.")
@_common(factor=False)
@one_line_errors
def mix(rows, cols, styles, cond, psi, out, save_individual, network, noise_mode, batch, device, mean_w_samples, force, quiet):
    """Style-mixing grid: first row = column sources, first column = row sources; each cell
    takes the --styles layers (coarse/middle: shape) from its row and the fine (colour) layers
    from its column."""
    from synth.conditions import parse_cond_assignments
    from synth.synthesis.labels import default_style_layers, parse_layers
    from synth.synthesis.manifest import prepare_out_dir
    from synth.synthesis.mix import style_mix_grid, write_mix_grid

    row_seeds, col_seeds = _seed_list(rows), _seed_list(cols)
    rend, space, _, net = _renderer(network, device, psi, noise_mode, batch, mean_w_samples)
    layers = parse_layers(styles, rend.num_ws) if styles is not None else default_style_layers(rend.num_ws)
    cell = next((c for c in space.cells() if space.is_affected(dict(zip(space.names, c)))), space.cells()[0])
    labels = dict(zip(space.names, cell))
    if cond is not None:
        # factors left out of --cond keep the default cell's level
        labels = space.check_labels({**labels, **parse_cond_assignments(cond)})
    out = prepare_out_dir(out, force)
    grid = style_mix_grid(rend, space.encode(labels), row_seeds, col_seeds, layers)
    path = write_mix_grid(grid, out, " / ".join(labels[n] for n in space.names), save_individual,
                          settings={**net, "cond": labels, "psi": rend.psi, "noise_mode": rend.noise_mode})
    click.echo(f"wrote {path}")


# ----------------------------------------------------------------------------------------


class _DefaultMakeGroup(click.Group):
    """``synth teach --per-cell 2 ...`` means ``synth teach make --per-cell 2 ...``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["make", *args]
        return super().parse_args(ctx, args)


@click.group("teach", cls=_DefaultMakeGroup)
def teach():
    """Teaching sets for clinicians: labelled gallery + morph strips, and a scored quiz.

    \b
      synth teach make --per-cell 4 --out teach/ --quiz
      synth teach score answers.csv --key teach/answer_key.csv --out report.json
    """


@teach.command("make")
@click.option("--per-cell", type=click.IntRange(min=1), required=True, help="Gallery images per condition cell.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (index.html).")
@click.option("--quiz", is_flag=True, help="Also write shuffled unlabelled quiz images, quiz.html and answer_key.csv.")
@click.option("--quiz-per-cell", type=click.IntRange(min=1), default=None, help="Quiz images per cell (default: --per-cell).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="First seed; also shuffles the quiz.")
@click.option("--factor", default=None, help="Ordinal factor of the morph strips (default: age, else the first ordinal factor).")
@click.option("--steps", type=int, default=5, show_default=True, help="Keyframes per morph strip.")
@click.option("--exclude-level", "exclude", multiple=True, help="FACTOR=LEVEL to leave out (repeatable).")
@click.option("--no-html", is_flag=True, help="Skip viewer.html (the interactive morph viewer and self-check quiz).")
@click.option("--html-frames", type=click.IntRange(min=2), default=21, show_default=True,
              help="Evenly spaced frames per morph in viewer.html.")
@truncation_option(0.7, "psi toward the per-condition average w (a finite number >= 0; 1 = none).")
@_common
@one_line_errors
def teach_make(per_cell, out, quiz, quiz_per_cell, seed, factor, steps, exclude, no_html, html_frames, psi,
               network, noise_mode, batch, device, mean_w_samples, force, quiet):
    """Write a teaching gallery (index.html), morph strips and optionally a quiz.

    viewer.html (unless --no-html) has a slider per morph and, with --quiz, the quiz images
    with answers hidden until Reveal (a self-check: the answers are inside the page).
    teach.json (and the foot of index.html) names the generator and its SHA-256."""
    from synth.synthesis.counts import parse_exclusions
    from synth.synthesis.manifest import prepare_out_dir
    from synth.synthesis.teach import make_teaching_set

    if steps < 2:
        raise click.UsageError(f"--steps {steps}: need at least 2")
    rend, space, _, net = _renderer(network, device, psi, noise_mode, batch, mean_w_samples, factor)
    fac = _optional_age_factor(space, factor)
    excl = parse_exclusions(list(exclude), space) if exclude else {}
    out = prepare_out_dir(out, force)
    res = make_teaching_set(rend, space, out, per_cell, seed=seed, quiz=quiz, quiz_per_cell=quiz_per_cell,
                            age_factor=fac, steps=steps, exclude=excl, progress=not quiet, settings=net,
                            viewer=not no_html, viewer_frames=html_frames)
    click.echo(f"wrote {out / 'index.html'}" + (f" and a {len(res.quiz)}-image quiz ({out / 'quiz.html'})" if quiz else "")
               + (f"; viewer: {out / res.viewer}" if res.viewer else ""))


@teach.command("score")
@click.argument("answers", type=click.Path(path_type=Path))
@click.option("--key", type=click.Path(path_type=Path), required=True, help="answer_key.csv written by `teach make --quiz`.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the full report as JSON.")
@one_line_errors
def teach_score(answers, key, out):
    """Score a filled-in answer sheet (CSV: number + one column per factor)."""
    from synth.synthesis.teach import score_quiz, write_report

    rep = score_quiz(answers, key)
    click.echo(f"overall {rep['correct']}/{rep['items']} = {rep['accuracy']:.1%} (answered {rep['answered']})")
    for n, f, value in rep["unknown"]:
        click.echo(f"warning: answer {n}: {f} {value!r} is not a level of the quiz "
                   f"({', '.join(rep['levels'][f])}); counted wrong (a misspelling?)", err=True)
    for f, d in rep["per_factor"].items():
        click.echo(f"  {f}: {d['correct']}/{d['total']} = {d['accuracy']:.1%}")
    for c, d in rep["per_cell"].items():
        click.echo(f"  {c}: {d['correct']}/{d['total']} = {d['accuracy']:.1%}")
    if rep["missing"]:
        shown = ", ".join(map(str, rep["missing"][:20])) + (" ..." if len(rep["missing"]) > 20 else "")
        click.echo(f"  missing answers (counted wrong): {shown}")
    if out is not None:
        write_report(rep, out)
        click.echo(f"wrote {out}")


# ----------------------------------------------------------------------------------------


@click.command("project")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--label", required=True, help="Condition of the photos, every factor, e.g. disease=syndrome_a,age=infant.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder (one sub-folder per image).")
@click.option("--network", type=click.Path(path_type=Path), default=None, help=_NETWORK_HELP + ".")
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True, help="Optimisation steps per image.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the w noise (same seed, same result).")
@click.option("--w-plus", is_flag=True, help="Optimise one w per layer (W+) instead of a single w.")
@click.option("--distance", type=click.Choice(["auto", "lpips", "pyramid"]), default="auto", show_default=True,
              help="auto: LPIPS when its backbone weights are on disk, else pyramid (pixel L2 over an image pyramid).")
@click.option("--lpips-net", type=click.Choice(["vgg", "alex"]), default="vgg", show_default=True, help="LPIPS backbone.")
@click.option("--lpips-weights", type=click.Path(path_type=Path), default=None,
              help="torchvision checkpoint of the LPIPS backbone (default: the torch hub cache's; never downloaded).")
@click.option("--d-features", is_flag=True, help="Add the discriminator's features to the pyramid distance (a snapshot with D).")
@click.option("--d-weight", type=float, default=1.0, show_default=True, help="Weight of --d-features.")
@click.option("--no-noise-opt", is_flag=True, help="Keep the generator's noise buffers instead of optimising them.")
@click.option("--w-prior", type=float, default=0.0, show_default=True,
              help="Weight pulling w toward the label's mean w (spread units): less exact, easier to edit; 0 = StyleGAN2.")
@click.option("--no-z-anchor", is_flag=True, help="Fit no anchor z: --w then moves the face by mean-w offsets.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="Peak learning rate (ramped up, then down).")
@click.option("--mean-w-samples", type=click.IntRange(min=2), default=10000, show_default=True,
              help="z samples for the label's mean w (the start) and spread.")
@click.option("--resize", is_flag=True, help="Resize square images of another size to the generator's (Lanczos).")
@click.option("--device", type=DEVICE, default="cpu", show_default=True, help="Torch device, e.g. cpu or cuda.")
@click.option("--force", is_flag=True, help="Write into a non-empty --out folder (earlier projections are replaced).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@one_line_errors
def project(images, label, out, network, steps, seed, w_plus, distance, lpips_net, lpips_weights, d_features, d_weight,
            no_noise_opt, w_prior, no_z_anchor, lr, mean_w_samples, resize, device, force, quiet):
    """Project aligned photos into the generator's W (or W+) space for a condition label.

    IMAGES: image files or folders (searched recursively).  Per image, OUT/NAME/ gets
    projected_w.npz (w, label, condition space, network SHA-256, distance name, final loss),
    compare.png (target beside the projection), loss.csv and loss.png; OUT/project.json sums
    up.  Use a projection with: synth morph --w OUT/NAME/projected_w.npz, synth generate --w ...
    """
    import json
    from dataclasses import asdict

    from synth.synthesis.errors import SynthesisError
    from synth.synthesis.network import network_record, open_generator
    from synth.synthesis.project import (PROJECT_OUTPUTS, ProjectConfig, collect_images, load_target, make_distance,
                                         open_discriminator, parse_label, project as run_projection, safe_name,
                                         save_projection)
    from synth.utils.io import atomic_write_text, check_out_dir, prepare_out_dir

    from synth.conditions import ConditionError, parse_cond_assignments

    try:  # a malformed command line is a usage error (exit 2), before anything is opened
        cfg = ProjectConfig(steps=steps, seed=seed, w_plus=w_plus, initial_lr=lr, optimize_noise=not no_noise_opt,
                            w_prior=w_prior, anchor_z=not no_z_anchor, mean_w_samples=mean_w_samples).check()
        parse_cond_assignments(label)
    except SynthesisError as e:
        raise click.UsageError(str(e)) from None
    except ConditionError as e:
        raise click.UsageError(f"--label {label!r}: {e}") from None
    if not images:
        raise click.UsageError("no IMAGES given: name aligned photos or a folder of them")
    check_out_dir(out, force, error=SynthesisError)  # refuse before any slow work
    files = collect_images(images)
    G, space, meta, path = open_generator(network, device=device)
    levels, vec = parse_label(space, label)
    targets = [load_target(f, int(G.img_resolution), resize=resize) for f in files]  # every image checked first
    D = open_discriminator(path, device) if d_features else None
    dist = make_distance(distance, lpips_net, lpips_weights, D=D, label=vec, d_weight=d_weight, device=device)
    if distance == "auto" and dist.name.startswith("pyramid"):
        click.echo("--distance auto: LPIPS backbone weights not found on disk; using the pyramid L2 fallback", err=True)
    net = network_record(path, meta, meta.get("network_default"))
    out = prepare_out_dir(out, force, PROJECT_OUTPUTS, error=SynthesisError)
    names: list[str] = []
    results = []
    for f, tgt in zip(files, targets):
        base = safe_name(f.stem)
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
        proj = run_projection(G, tgt, vec, dist, cfg, progress=not quiet, desc=f"project {name}")
        save_projection(out / name, proj, tgt, space, levels, vec, net, source=str(f))
        results.append({"image": str(f), "folder": name, "w": f"{name}/projected_w.npz", "loss": proj.loss,
                        "distance_value": proj.distance_value, "initial_distance": proj.initial_distance,
                        "psnr": proj.psnr, "initial_psnr": proj.initial_psnr, "w_offset_sd": proj.w_offset_sd,
                        "z_residual": proj.z_residual})
        if not quiet:
            click.echo(f"{f}: {proj.distance} {proj.initial_distance:.4g} -> {proj.distance_value:.4g}, "
                       f"PSNR {proj.initial_psnr:.1f} -> {proj.psnr:.1f} dB", err=True)
    info = {"label": levels, "distance": dist.name, "w_space": "W+" if w_plus else "W", "config": asdict(cfg),
            **net, "images": results}
    atomic_write_text(out / "project.json", json.dumps(info, indent=2, default=str) + "\n")
    click.echo(f"projected {len(results)} image(s) into {out} ({dist.name}); morph one with: "
               f"synth morph --w {out / names[0] / 'projected_w.npz'} --out morphs/")


COMMANDS = (generate, morph, mix, teach, project)
