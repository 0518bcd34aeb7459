import pytest
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
    assert r.output.strip().splitlines() == [f"Error: {tmp_path / 'nowhere'}: dataset not found"]


# ---- unusable datasets and file names ------------------------------------------------------


def test_check_header_only_labels_is_an_error(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "labels.csv").write_text("file,disease,age\n")
    r = CliRunner().invoke(main, ["data", "check", str(root)])
    assert r.exit_code == 2, r.output
    assert f"{root / 'labels.csv'}: lists no images" in r.output
    assert "usable images" not in r.output and "no subject column" not in r.output


def test_check_dataset_whose_images_are_all_broken_is_an_error(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", grid_rows(["syndrome_a"], ["child"], 2))
    for p in (root / "img").iterdir():
        p.write_bytes(b"broken")
    r = CliRunner().invoke(main, ["data", "check", str(root)])
    assert r.exit_code == 2 and "none of the 2 listed images is usable" in r.output
    assert "usable images;" not in r.output


def test_check_names_the_corrupt_file(tmp_path):
    root = write_tiny_dataset(tmp_path / "d", grid_rows(["syndrome_a"], ["child"], 3))
    (root / "img" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    r = run(root)
    assert r.exit_code == 2
    line = next(l for l in r.output.splitlines() if "unreadable or corrupt image" in l)
    assert str(root / "img" / "0001.png") in line and "BytesIO" not in r.output


# ---- label paths must stay inside the dataset ----------------------------------------------


@pytest.mark.parametrize("bad", ["../outside.png", "img/../../outside.png", "{abs}"])
def test_label_paths_outside_the_dataset_are_refused(tmp_path, bad):
    from synth.data.dataset import DatasetError, open_dataset

    outside = tmp_path / "outside.png"
    rows = grid_rows(["syndrome_a", "unaffected"], ["child"], 2)
    root = write_tiny_dataset(tmp_path / "d", rows)
    outside.write_bytes((root / rows[0]["file"]).read_bytes())  # a real, readable image
    bad = bad.format(abs=outside)
    rows[2]["file"] = bad  # line 4 of labels.csv (line 1 is the header)
    write_tiny_dataset(root, rows)
    with pytest.raises(DatasetError) as e:
        open_dataset(root)
    msg = str(e.value)
    assert msg.startswith(f"{root / 'labels.csv'}: line 4: {bad}") and "\n" not in msg
    r = run(root)
    assert r.exit_code == 2 and "line 4" in r.output and "outside the dataset" in r.output

    from classifiers.cli import classify

    out = tmp_path / "cv"
    r = CliRunner().invoke(classify, ["cv", "--data", str(root), "--model", "small_cnn", "--size", "16", "--epochs", "1",
                                      "--folds", "2", "--device", "cpu", "--no-progress", "--out", str(out)])
    assert r.exit_code == 1 and "line 4" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_nvlabs_entries_outside_the_dataset_are_refused(tmp_path):
    import json

    from synth.data.dataset import DatasetError, open_dataset

    root = tmp_path / "nv"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": [["a.png", 0], ["/etc/passwd.png", 1]]}))
    with pytest.raises(DatasetError, match=r"dataset.json: entry 1: /etc/passwd.png is an absolute path"):
        open_dataset(root)


def test_check_warns_on_mixed_sizes_and_non_square_images(tmp_path):
    from PIL import Image

    rows = grid_rows(["syndrome_a", "unaffected"], ["infant", "child"], per_cell=2)
    ds = write_tiny_dataset(tmp_path / "ds", rows, size=16)
    Image.new("RGB", (24, 16)).save(ds / rows[0]["file"])
    Image.new("RGB", (32, 32)).save(ds / rows[1]["file"])
    r = run(ds)
    assert r.exit_code == 0, r.output
    assert "warning: 1 non-square image(s) centre-cropped to a square for training" in r.output and "24x16" in r.output
    assert "warning: 2 image(s) not of the common size 16x16" in r.output
