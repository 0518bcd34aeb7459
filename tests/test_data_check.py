from click.testing import CliRunner

from synth.cli import main
from synth.conditions import KNOWN_LEVELS
from tests.helpers import grid_rows, write_tiny_dataset


def run(*args):
    return CliRunner().invoke(main, ["data", "check", *map(str, args), "--quiet"])


def test_check_clean_dataset_prints_table(tiny_dataset):
    r = CliRunner().invoke(main, ["data", "check", str(tiny_dataset), "--min-count", "3"])
    assert r.exit_code == 0, r.output
    assert "40 usable images" in r.output
    lines = r.output.splitlines()
    header = next(l for l in lines if "infant" in l)
    assert header.index("infant") < header.index("older_adult")  # level order, not alphabetical
    row = next(l for l in lines if l.startswith("syndrome_b"))
    assert row.split()[1:] == ["2*", "2*", "2*", "2*", "2*", "10"]  # tiny cells flagged


def test_check_reports_each_problem_class(tmp_path):
    rows = grid_rows(["syndrome_a", "unaffected"], KNOWN_LEVELS["age"], per_cell=2)
    root = write_tiny_dataset(tmp_path / "d", rows)
    (root / "img" / "0000.png").write_bytes(b"not a png at all")  # corrupt
    data = (root / "img" / "0001.png").read_bytes()
    (root / "img" / "0001.png").write_bytes(data[: len(data) // 2])  # truncated
    (root / "img" / "0002.png").unlink()  # missing
    rows[3]["age"] = "toddler"  # unknown level
    rows.append(dict(rows[5]))  # duplicate
    write_tiny_dataset(root, [r for r in rows], size=16)
    (root / "img" / "0000.png").write_bytes(b"not a png at all")
    (root / "img" / "0001.png").write_bytes(data[: len(data) // 2])
    (root / "img" / "0002.png").unlink()
    r = run(root)
    assert r.exit_code == 2
    err = r.output
    for kind in ("unreadable or corrupt image", "missing file", "unknown level", "duplicate file"):
        assert sum(1 for l in err.splitlines() if l.startswith("error:") and kind in l) == 1, err
    assert "2 unreadable or corrupt image" in err and "toddler" in err


def test_check_warns_on_non_rgb(tmp_path):
    root = write_tiny_dataset(tmp_path / "g", grid_rows(["syndrome_a"], ["child"], 2), mode="L")
    r = run(root)
    assert r.exit_code == 0
    assert "non-RGB image(s) converted" in r.output


def test_check_missing_dataset(tmp_path):
    r = run(tmp_path / "nowhere")
    assert r.exit_code == 2 and "dataset not found" in r.output
