import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from classifiers.patches import (
    BAND_LABELS,
    PatchDataset,
    PatchError,
    apply_dihedral,
    assemble_patches,
    dihedral_variants,
    majority_vote,
    probability_bands,
    probability_map_png,
    split_patches,
)
from synth.conditions import ConditionSpace

PNG = b"\x89PNG\r\n\x1a\n"


def test_split_counts_order_and_reassembly():
    x = torch.arange(3 * 40 * 70, dtype=torch.float32).reshape(3, 40, 70)
    p, grid = split_patches(x, size=16)
    # 40 // 16 = 2 rows, 70 // 16 = 4 cols; the 8 px / 6 px remainder is dropped
    assert grid == (2, 4) and p.shape == (8, 3, 16, 16)
    assert torch.equal(p[0], x[:, :16, :16])
    assert torch.equal(p[5], x[:, 16:32, 16:32])  # row 1, col 1 (row-major)
    assert torch.equal(assemble_patches(p, grid), x[:, :32, :64])
    # numpy H x W x C input gives channel-first numpy patches with the same content
    hwc = x.numpy().transpose(1, 2, 0)
    pn, gn = split_patches(hwc, size=16)
    assert isinstance(pn, np.ndarray) and gn == grid and np.array_equal(pn, p.numpy())
    assert np.array_equal(assemble_patches(pn, gn), x.numpy()[:, :32, :64])
    grey, g2 = split_patches(np.zeros((64, 64), dtype=np.uint8), size=32)
    assert grey.shape == (4, 1, 32, 32) and g2 == (2, 2)
    with pytest.raises(PatchError, match="smaller than one"):
        split_patches(torch.zeros(3, 10, 10), size=16)


def test_dihedral_variants_distinct_and_a_group():
    rng = np.random.default_rng(0)
    x = rng.random((2, 5, 5))  # generic patch: no symmetry of its own
    v = dihedral_variants(x)
    assert v.shape == (8, 2, 5, 5)
    flat = {a.tobytes() for a in v}
    assert len(flat) == 8
    # closed under composition: any variant of a variant is again one of the 8
    index = {a.tobytes(): k for k, a in enumerate(v)}
    table = np.zeros((8, 8), dtype=int)
    for i, j in itertools.product(range(8), range(8)):
        comp = np.ascontiguousarray(apply_dihedral(apply_dihedral(x, i), j))
        assert comp.tobytes() in index
        table[i, j] = index[comp.tobytes()]
    # a group: identity is variant 0, every element has an inverse, each row is a permutation
    assert np.array_equal(table[0], np.arange(8))
    assert all(sorted(row) == list(range(8)) for row in table)
    assert all(0 in row for row in table)
    # not commutative (D4 is not abelian): rot90 then flip != flip then rot90
    assert table[1, 4] != table[4, 1]
    # torch path agrees with numpy
    vt = dihedral_variants(torch.from_numpy(x))
    assert np.allclose(vt.numpy(), v)
    with pytest.raises(PatchError, match="square"):
        dihedral_variants(np.zeros((4, 5)))


def test_majority_vote():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]])
    cls, frac, mean = majority_vote(probs)
    assert cls == 0 and frac == pytest.approx(0.75)
    assert np.allclose(mean, [0.6, 0.4])
    # 2 - 2 tie: broken by the higher mean probability (class 1: mean .55 vs .45)
    tie = np.array([[0.6, 0.4], [0.55, 0.45], [0.1, 0.9], [0.45, 0.55]])
    cls, frac, _ = majority_vote(tie)
    assert cls == 1 and frac == pytest.approx(0.5)
    with pytest.raises(PatchError):
        majority_vote(np.zeros((0, 2)))


def _make_dataset(tmp_path):
    space = ConditionSpace.from_levels({"diagnosis": ["control", "patient"]}, ordinal=[])
    root = tmp_path / "ds"
    root.mkdir()
    space.save(root / "conditions.yaml")
    rng = np.random.default_rng(0)
    rows = ["file,diagnosis"]
    sizes = [(32, 32), (48, 32), (32, 40)]  # (width, height): 4, 6 and 4 patches of 16
    for k, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"im{k}.png")
        rows.append(f"im{k}.png,{'patient' if k == 1 else 'control'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    from synth.data.dataset import open_dataset

    return open_dataset(root)


def test_patch_dataset(tmp_path):
    imageset = _make_dataset(tmp_path)
    ds = PatchDataset(imageset, size=16)
    assert ds.grids == [(2, 2), (2, 3), (2, 2)]
    assert len(ds) == (4 + 6 + 4) * 8
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(y, torch.tensor([1.0, 0.0]))
    # item 32 = image 1, patch 0, variant 0; its label is "patient"
    assert ds.locate(32) == (1, 0, 0)
    assert torch.equal(ds[32][1], torch.tensor([0.0, 1.0]))
    # the 8 items of one patch are its dihedral variants
    base = ds.locate(8 * 3)
    assert base == (0, 3, 0)
    items = torch.stack([ds[8 * 3 + v][0] for v in range(8)])
    assert torch.allclose(items, dihedral_variants(items[0]))
    # patches come from the image: reassemble image 1
    img = np.asarray(imageset.load_image(1))
    patches = ds.patches_of(1)
    assert np.array_equal(assemble_patches(patches, ds.grids[1]).transpose(1, 2, 0), img[:32, :48])
    # class-index labels with a factor, no variants, no cache
    ds2 = PatchDataset(imageset, size=16, dihedral=False, factor="diagnosis", cache=False)
    assert len(ds2) == 14
    assert [int(ds2[j][1]) for j in range(len(ds2))] == [0] * 4 + [1] * 6 + [0] * 4
    assert torch.equal(ds2[5][0], ds[(4 + 1) * 8][0])
    assert ds.image_patches(1, dihedral=True).shape == (6, 8, 3, 16, 16)
    with pytest.raises(PatchError, match="factor"):
        PatchDataset(imageset, size=16, factor="age")
    with pytest.raises(PatchError, match="im0.png"):
        PatchDataset(imageset, size=64)


def test_probability_bands_and_png(tmp_path):
    p = np.array([[0.95, 0.9, 0.8], [0.6, 0.4, 0.1]])
    assert probability_bands(p).tolist() == [[4, 3, 3], [2, 1, 0]]
    assert BAND_LABELS[4] == ">90%" and BAND_LABELS[0] == "<30%"
    out = probability_map_png(tmp_path / "map.png", p, class_name="control")
    assert out.read_bytes()[:8] == PNG
    img = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out2 = probability_map_png(tmp_path / "over.png", p, image=img, class_name="patient")
    assert np.asarray(Image.open(out2)).shape[2] in (3, 4)
    probability_map_png(tmp_path / "t.png", p, image=torch.zeros(3, 40, 60))
    with pytest.raises(PatchError, match="0, 1"):
        probability_map_png(tmp_path / "bad.png", p * 2)
    assert not (tmp_path / "bad.png").exists()
