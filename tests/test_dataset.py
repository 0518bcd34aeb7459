import json
import zipfile

import numpy as np
import pytest
import torch

from synth.conditions import KNOWN_LEVELS, ConditionSpace
from synth.data import (
    BalancedSampler,
    DatasetError,
    TorchImageDataset,
    balanced_weights,
    open_dataset,
    write_labels_csv,
)
from tests.helpers import grid_rows, write_tiny_dataset


def test_read_labels_csv(tiny_dataset):
    ims = open_dataset(tiny_dataset)
    assert len(ims) == 40
    assert ims.space == ConditionSpace.default(["disease", "age"])
    assert ims[0].labels == {"disease": "syndrome_a", "age": "infant"}
    assert ims[0].subject == "s0000" and ims[1].subject == "s0000"
    counts = ims.cell_counts()
    assert len(counts) == 20 and set(counts.values()) == {2}
    assert ims.load_image(3).mode == "RGB"
    m = ims.label_matrix()
    assert m.shape == (40, 9) and np.all(m.sum(1) == 2)


def test_level_order_from_schema_not_alphabet(tmp_path):
    rows = [{"file": f"{i}.png", "stage": s} for i, s in enumerate(["late", "early", "intermediate"])]
    schema = "factors:\n  - {name: stage, levels: [early, intermediate, late], embed_dim: 512}\n"
    ims = open_dataset(write_tiny_dataset(tmp_path / "d", rows, schema=schema))
    assert ims.space.factor("stage").levels == ("early", "intermediate", "late")
    assert ims.label_vector(0).tolist() == [0, 0, 1]
    # Unknown factor without a schema: first appearance, with a warning, never sorted.
    rows = [{"file": f"{i}.png", "colour": c} for i, c in enumerate(["red", "blue", "green", "blue"])]
    with pytest.warns(UserWarning, match="first appearance"):
        ims = open_dataset(write_tiny_dataset(tmp_path / "e", rows), cond=["colour"])
    assert ims.space.factor("colour").levels == ("red", "blue", "green")


def test_soft_label_columns(tmp_path):
    rows = grid_rows(["syndrome_a", "syndrome_b"], ["child"], per_cell=1)
    for r in rows:
        r.update({"p_disease=syndrome_a": "", "p_disease=syndrome_b": ""})
    rows[0].update({"p_disease=syndrome_a": "0.55", "p_disease=syndrome_b": "0.45"})
    ims = open_dataset(write_tiny_dataset(tmp_path / "d", rows))
    v = ims.label_vector(0)
    assert v[0] == pytest.approx(0.55) and v[1] == pytest.approx(0.45) and v[4 + 1] == 1
    assert ims.records[1].soft is None and ims.label_vector(1)[1] == 1
    # A soft row that does not sum to one is an error naming the line.
    rows[0]["p_disease=syndrome_b"] = "0.2"
    write_tiny_dataset(tmp_path / "d2", rows)
    with pytest.raises(DatasetError, match=r"labels.csv: line 2 .*bad soft label"):
        open_dataset(tmp_path / "d2")


def test_write_labels_csv_roundtrip(tiny_dataset, tmp_path):
    ims = open_dataset(tiny_dataset)
    ims.records[0].soft = ims.space.mix({"disease": "syndrome_a", "age": "infant"}, {"disease": "syndrome_b", "age": "infant"}, 0.75)
    write_labels_csv(tiny_dataset / "labels.csv", ims)
    again = open_dataset(tiny_dataset)
    np.testing.assert_allclose(again.label_matrix(), ims.label_matrix(), atol=1e-6)
    assert [r.subject for r in again] == [r.subject for r in ims]


def test_nvlabs_dataset_json(tmp_path):
    rows = [{"file": f"{i}.png", "x": "0"} for i in range(4)]
    root = write_tiny_dataset(tmp_path / "d", rows)
    (root / "labels.csv").unlink()
    (root / "dataset.json").write_text(json.dumps({"labels": [["0.png", 0], ["1.png", 2], ["2.png", 1], ["3.png", 2]]}))
    ims = open_dataset(root)
    assert ims.space.factor("class").levels == ("0", "1", "2")
    assert [r.labels["class"] for r in ims] == ["0", "2", "1", "2"]
    # Vector labels with a schema.
    space = ConditionSpace.default(["disease", "age"])
    space.save(root / "conditions.yaml")
    vec = space.encode({"disease": "syndrome_b", "age": "adolescent"}).tolist()
    (root / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.png", vec] for i in range(4)]}))
    ims = open_dataset(root)
    assert ims[2].labels == {"disease": "syndrome_b", "age": "adolescent"}
    (root / "dataset.json").write_text(json.dumps({"labels": [["0.png", [1, 0]]]}))
    with pytest.raises(DatasetError, match="entry 0 .*shape"):
        open_dataset(root)


def test_zip_dataset(tiny_dataset, tmp_path):
    zpath = tmp_path / "ds.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(tiny_dataset.rglob("*")):
            if p.is_file():
                z.write(p, "ds/" + p.relative_to(tiny_dataset).as_posix())
    ims = open_dataset(zpath)
    direct = open_dataset(tiny_dataset)
    assert len(ims) == len(direct)
    assert np.array_equal(np.asarray(ims.load_image(5)), np.asarray(direct.load_image(5)))
    # DataLoader workers pickle the dataset: zip handles must survive that.
    import pickle

    clone = pickle.loads(pickle.dumps(ims))
    assert clone.load_image(0).size == (16, 16)


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda rows: rows[3].update(age="toddler"), r"line 5 .*unknown level 'toddler' for factor 'age'"),
        (lambda rows: rows.append(dict(rows[0])), r"already listed on line 2"),
    ],
)
def test_bad_labels(tmp_path, mutate, msg):
    rows = grid_rows(["syndrome_a"], KNOWN_LEVELS["age"], per_cell=1)
    root = write_tiny_dataset(tmp_path / "d", rows)
    mutate(rows)
    write_tiny_dataset(root, rows)
    with pytest.raises(DatasetError, match=msg):
        open_dataset(root)


def test_missing_things(tmp_path):
    with pytest.raises(DatasetError, match="dataset not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labels.csv or dataset.json"):
        open_dataset(tmp_path / "empty")
    root = write_tiny_dataset(tmp_path / "d", grid_rows(["syndrome_a"], ["child"], 2))
    (root / "img" / "0001.png").unlink()
    ims = open_dataset(root)
    with pytest.raises(DatasetError, match=r"0001.png: missing image file"):
        ims.load_image(1)
    (root / "labels.csv").write_text("name,disease\nx.png,syndrome_a\n")
    with pytest.raises(DatasetError, match="missing required column 'file'"):
        open_dataset(root)


def test_torch_dataset_range_flip_and_resize(tiny_dataset):
    ims = open_dataset(tiny_dataset)
    ds = TorchImageDataset(ims, resolution=8, xflip=True)
    assert len(ds) == 80
    img, label = ds[0]
    assert img.shape == (3, 8, 8) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    flipped, label2 = ds[40]
    assert torch.equal(flipped, img.flip(-1)) and torch.equal(label, label2)
    raw = TorchImageDataset(ims)
    x, _ = raw[0]
    expect = torch.from_numpy(np.asarray(ims.load_image(0))).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(x, expect)
    with pytest.raises(DatasetError, match="power of two"):
        TorchImageDataset(ims, resolution=12)


def test_balanced_sampler_oversamples_rare_cells(tmp_path):
    rows = grid_rows(["syndrome_a"], ["infant"], 30) + grid_rows(["syndrome_b"], ["infant"], 3)
    for i, r in enumerate(rows):
        r["file"] = f"img/{i:04d}.png"
    ims = open_dataset(write_tiny_dataset(tmp_path / "d", rows, size=4))
    w = balanced_weights(ims)
    assert w.sum() == pytest.approx(1)
    assert w[-1] == pytest.approx(10 * w[0])  # rare cell images weigh 10x
    draws = list(BalancedSampler(ims, num_samples=4000, seed=1))
    frac_b = np.mean([ims[i].labels["disease"] == "syndrome_b" for i in draws])
    assert 0.45 < frac_b < 0.55
    assert draws == list(BalancedSampler(ims, num_samples=4000, seed=1))  # seeded
    assert draws != list(BalancedSampler(ims, num_samples=4000, seed=2))


def test_affected_fraction(tmp_path):
    rows = grid_rows(["syndrome_a", "syndrome_b"], ["child"], 5) + grid_rows(["unaffected"], ["child"], 40)
    for i, r in enumerate(rows):
        r["file"] = f"img/{i:04d}.png"
    ims = open_dataset(write_tiny_dataset(tmp_path / "d", rows, size=4))
    w = balanced_weights(ims, affected_fraction=0.5)
    aff = ims.is_affected()
    assert w[aff].sum() == pytest.approx(0.5) and w[~aff].sum() == pytest.approx(0.5)
    w3 = balanced_weights(ims, affected_fraction=0.75)
    assert w3[aff].sum() == pytest.approx(0.75)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        balanced_weights(ims, affected_fraction=1.5)


def test_join_adds_another_sets_images_under_a_tag(tmp_path):
    from synth.data.dataset import DatasetError, open_dataset
    from tests.helpers import grid_rows, write_tiny_dataset

    a = open_dataset(write_tiny_dataset(tmp_path / "a", grid_rows(["syndrome_a", "unaffected"], ["child"], per_cell=2)))
    b = open_dataset(write_tiny_dataset(tmp_path / "b", grid_rows(["unaffected"], ["child"], per_cell=3), seed=5))
    j = a.join(b, "pool")
    assert len(j) == 7 and [r.file for r in j.records[4:]] == [f"@pool/{r.file}" for r in b.records]
    assert j.read_bytes(5) == b.read_bytes(1) and j.read_bytes(0) == a.read_bytes(0)  # both stores, same names inside
    assert j.records[4].subject == f"@pool/{b.records[0].subject}"  # never one of a's subjects
    assert j.cell_counts()[("unaffected", "child")] == 5 and j.path_of(4).endswith(b.records[0].file)
    c = open_dataset(write_tiny_dataset(tmp_path / "c", grid_rows(["unaffected"], ["child"], per_cell=1)), cond=["disease"])
    with pytest.raises(DatasetError, match="its factors \\(disease\\) differ"):
        a.join(c, "pool")
