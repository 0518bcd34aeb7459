"""`synth data check`: validate every file and label of a dataset before training on it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from synth.data.dataset import (
    LABELS_CSV,
    NVLABS_JSON,
    DatasetError,
    ImageSet,
    _read_labels_csv,
    _Storage,
    open_dataset,
    open_image,
    to_rgb,
)

__all__ = ["CheckReport", "check_dataset", "format_cell_table"]

DEFAULT_TINY = 5


@dataclass
class CheckReport:
    imageset: ImageSet | None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) -> exit 2
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (kind, message) -> printed only
    factors: list[str] = field(default_factory=list)
    min_count: int = DEFAULT_TINY

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self, items: list[tuple[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for kind, msg in items:
            out.setdefault(kind, []).append(msg)
        return out

    def summary_lines(self) -> list[str]:
        """One line per problem class (count and first example), then warnings."""
        lines = []
        for kind, msgs in self.by_kind(self.problems).items():
            more = f" (and {len(msgs) - 1} more)" if len(msgs) > 1 else ""
            lines.append(f"error: {len(msgs)} {kind}: {msgs[0]}{more}")
        for kind, msgs in self.by_kind(self.warnings).items():
            more = f" (and {len(msgs) - 1} more)" if len(msgs) > 1 else ""
            lines.append(f"warning: {len(msgs)} {kind}: {msgs[0]}{more}")
        return lines


def check_dataset(
    path: str | Path,
    cond: Sequence[str] | None = None,
    min_count: int = DEFAULT_TINY,
    progress: bool = False,
) -> CheckReport:
    """Read every label and decode every image; collect problems instead of stopping at the first."""
    path = Path(path)
    report = CheckReport(None, min_count=min_count)
    try:
        storage = _Storage(path)
        if storage.exists(LABELS_CSV):
            imageset = _read_labels_csv(storage, cond, None, problems=report.problems)
        else:
            imageset = open_dataset(path, cond)
    except DatasetError as e:
        report.problems.append(("unreadable dataset", str(e)))
        return report
    report.imageset = imageset
    report.factors = list(imageset.space.names)

    indices = range(len(imageset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="checking images", unit="img", leave=False)
    missing, bad = set(), set()
    sizes: dict[tuple[int, int], list[int]] = {}
    for i in indices:
        rec = imageset.records[i]
        try:
            data = imageset.read_bytes(i)
        except (FileNotFoundError, KeyError, IsADirectoryError):
            report.problems.append(("missing file", f"{imageset.path_of(i)}: listed but not found"))
            missing.add(i)
            continue
        try:
            img = open_image(data, imageset.path_of(i))
            mode = img.mode
            to_rgb(img, imageset.path_of(i))
        except DatasetError as e:  # names the file (PIL's own message names a BytesIO object)
            report.problems.append(("unreadable or corrupt image", str(e).split("\n")[0]))
            bad.add(i)
            continue
        if mode != "RGB":
            report.warnings.append(("non-RGB image(s) converted to RGB", f"{imageset.path_of(i)} is {mode}"))
        sizes.setdefault(img.size, []).append(i)
        if img.size[0] != img.size[1]:
            report.warnings.append(("non-square image(s) centre-cropped to a square for training",
                                    f"{imageset.path_of(i)} is {img.size[0]}x{img.size[1]}"))
    if len(sizes) > 1:
        common = max(sizes, key=lambda k: len(sizes[k]))
        for size, idx in sizes.items():
            if size != common:
                for i in idx:
                    report.warnings.append((f"image(s) not of the common size {common[0]}x{common[1]} (all are resized to the "
                                            f"training resolution)", f"{imageset.path_of(i)} is {size[0]}x{size[1]}"))
    listed = {r.file for r in imageset.records}
    unlabelled = [f for f in storage.list_images() if f not in listed]
    for f in unlabelled:
        report.warnings.append(("unlabelled image(s) ignored", storage.display(f)))
    # Count only images that can be used.
    keep = [i for i in range(len(imageset)) if i not in missing and i not in bad]
    report.imageset = imageset.subset(keep)
    if not imageset.records:
        report.problems.append(("empty dataset", f"{_label_file(storage)}: lists no images"))
    elif not keep:
        report.problems.append(("empty dataset", f"{path}: none of the {len(imageset)} listed images is usable"))
    return report


def _label_file(storage: _Storage) -> str:
    """The table that lists the images (labels.csv or dataset.json), as shown to the user."""
    return storage.display(LABELS_CSV if storage.exists(LABELS_CSV) else NVLABS_JSON)


def format_cell_table(imageset: ImageSet, factors: Sequence[str] | None = None, min_count: int = DEFAULT_TINY) -> str:
    """Counts per condition cell: rows = levels of the first factor, columns = levels of the second.

    Empty cells are shown as ``0!`` and tiny cells (< min_count) as ``n*``.
    """
    space = imageset.space
    names = list(factors) if factors else list(space.names)
    counts = imageset.cell_counts(names)

    def fmt(n: int) -> str:
        return f"{n}!" if n == 0 else (f"{n}*" if n < min_count else str(n))

    if len(names) == 1:
        f = space.factor(names[0])
        width = max(len(f.name), *(len(lv) for lv in f.levels)) + 2
        lines = [f"{f.name:<{width}}count", "-" * (width + 6)]
        lines += [f"{lv:<{width}}{fmt(counts[(lv,)])}" for lv in f.levels]
        lines.append(f"{'total':<{width}}{sum(counts.values())}")
        return "\n".join(lines)
    rows_f, cols_f, rest = space.factor(names[0]), space.factor(names[1]), names[2:]
    # Extra factors are summed over so the table stays two-dimensional.
    grid = {(r, c): 0 for r in rows_f.levels for c in cols_f.levels}
    for cell, n in counts.items():
        grid[(cell[0], cell[1])] += n
    w0 = max(len(rows_f.name), *(len(lv) for lv in rows_f.levels), 5) + 2
    colw = [max(len(c), 5) + 2 for c in cols_f.levels]
    header = f"{rows_f.name + ' / ' + cols_f.name:<{w0}}" if len(rows_f.name) + len(cols_f.name) + 3 < w0 else f"{rows_f.name:<{w0}}"
    lines = [header + "".join(f"{c:>{w}}" for c, w in zip(cols_f.levels, colw)) + f"{'total':>8}"]
    lines.append("-" * len(lines[0]))
    for r in rows_f.levels:
        vals = [grid[(r, c)] for c in cols_f.levels]
        lines.append(f"{r:<{w0}}" + "".join(f"{fmt(v):>{w}}" for v, w in zip(vals, colw)) + f"{sum(vals):>8}")
    totals = [sum(grid[(r, c)] for r in rows_f.levels) for c in cols_f.levels]
    lines.append(f"{'total':<{w0}}" + "".join(f"{t:>{w}}" for t, w in zip(totals, colw)) + f"{sum(totals):>8}")
    if rest:
        lines.append(f"(summed over {', '.join(rest)})")
    return "\n".join(lines)
