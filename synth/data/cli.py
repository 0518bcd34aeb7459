"""`synth data ...`: dataset checks, face alignment and the built-in synthetic atlas."""
from __future__ import annotations

import sys

import click

from synth.data.check import DEFAULT_TINY, check_dataset, format_cell_table


def split_factors(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter("expected factor names such as disease,age", param_hint="--cond")
    return names


class _CheckFailed(click.ClickException):
    """``synth data check`` exits 2 whenever the dataset fails the check, also when it cannot
    be opened at all (then as one ``Error:`` line)."""

    exit_code = 2


@click.group()
def data() -> None:
    """Prepare datasets: check labels, align faces, render the synthetic atlas."""


@data.command()
@click.argument("directory", type=click.Path(exists=False))
@click.option("--cond", help="Factors to use, in order, e.g. disease,age (default: all in the schema).")
@click.option("--min-count", default=DEFAULT_TINY, show_default=True, help="Cells with fewer images are flagged as tiny.")
@click.option("--quiet", is_flag=True, help="Only print problems.")
def check(directory: str, cond: str | None, min_count: int, quiet: bool) -> None:
    """Validate every image and label of DIRECTORY and print image counts per condition cell.

    DIRECTORY is a folder (or .zip) with labels.csv (columns: file, one per factor, optional
    subject and p_<factor>=<level> soft labels) and optional conditions.yaml, or an NVlabs
    dataset.json.  Exits with status 2 and one line per problem class when anything is wrong:
    unreadable or corrupt images, unknown levels, missing or duplicate files, label paths
    outside the dataset, or no usable image at all.  Non-RGB images are accepted (converted,
    16-bit scaled to 8-bit) with a warning.  In the table, `0!` marks an empty cell and `n*` a
    tiny one.  A dataset that cannot be opened at all (no such folder, no labels.csv or
    dataset.json, an unreadable table) is one `Error:` line, also with status 2.
    """
    report = check_dataset(directory, split_factors(cond), min_count=min_count, progress=not quiet)
    if report.imageset is None:  # nothing could be checked (no such folder, no label table): one line
        raise _CheckFailed(report.problems[0][1].splitlines()[0] if report.problems else f"{directory}: unreadable dataset")
    if report.imageset is not None and len(report.imageset) and not quiet:  # an empty set has no table
        ims = report.imageset
        click.echo(f"{directory}: {len(ims)} usable images; factors: " + ", ".join(
            f"{f.name} ({' < '.join(f.levels) if f.ordinal else ', '.join(f.levels)})" for f in ims.space.factors))
        click.echo(format_cell_table(ims, None, min_count))
        counts = ims.cell_counts()
        empty = [c for c, n in counts.items() if n == 0]
        tiny = [c for c, n in counts.items() if 0 < n < min_count]
        if empty:
            click.echo(f"note: {len(empty)} empty cell(s): " + "; ".join("/".join(c) for c in empty[:6]) + (" ..." if len(empty) > 6 else ""))
        if tiny:
            click.echo(f"note: {len(tiny)} tiny cell(s) (< {min_count}): " + "; ".join("/".join(c) for c in tiny[:6]) + (" ..." if len(tiny) > 6 else ""))
        subjects = len(set(ims.groups().tolist()))
        click.echo(f"subjects: {subjects}" + ("" if any(r.subject for r in ims.records) else " (no subject column: each image is its own group)"))
    for line in report.summary_lines():
        click.echo(line, err=True)
    if not report.ok:
        sys.exit(2)


def _register_subcommands() -> None:
    from synth.data.align import align
    from synth.data.atlas.cli import atlas

    data.add_command(atlas, "atlas")
    data.add_command(align, "align")


_register_subcommands()
