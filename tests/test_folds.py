import numpy as np
import pytest

from synth.conditions import KNOWN_LEVELS
from synth.data import DatasetError, make_folds, open_dataset, read_folds, write_folds
from tests.helpers import grid_rows, write_tiny_dataset


@pytest.fixture
def grouped(tmp_path):
    rows = grid_rows(KNOWN_LEVELS["disease"], KNOWN_LEVELS["age"][:3], per_cell=10, subjects_per_image=3)
    return open_dataset(write_tiny_dataset(tmp_path / "d", rows, size=4))


def test_folds_grouped_stratified_deterministic(grouped):
    folds = make_folds(grouped, k=5, seed=3)
    assert set(folds.tolist()) == set(range(5))
    # No subject in two folds.
    by_subject = {}
    for g, f in zip(grouped.groups(), folds):
        assert by_subject.setdefault(g, f) == f
    # Stratified: every disease appears in every fold, in similar amounts.
    for d in KNOWN_LEVELS["disease"]:
        per_fold = [sum(1 for i in np.where(folds == k)[0] if grouped[i].labels["disease"] == d) for k in range(5)]
        assert min(per_fold) >= 1 and max(per_fold) - min(per_fold) <= 6
    assert np.array_equal(folds, make_folds(grouped, k=5, seed=3))
    assert not np.array_equal(folds, make_folds(grouped, k=5, seed=4))


def test_folds_csv_roundtrip_and_errors(grouped, tmp_path):
    folds = make_folds(grouped, k=4, seed=0)
    write_folds(tmp_path / "folds.csv", grouped, folds)
    assert np.array_equal(read_folds(tmp_path / "folds.csv", grouped), folds)
    bad = folds.copy()
    bad[0] = (bad[1] + 1) % 4  # record 0 and 1 share a subject
    with pytest.raises(DatasetError, match="appears in folds"):
        write_folds(tmp_path / "bad.csv", grouped, bad)
    (tmp_path / "short.csv").write_text("file,fold\nimg/0000.png,0\n")
    with pytest.raises(DatasetError, match="have no fold"):
        read_folds(tmp_path / "short.csv", grouped)
    with pytest.raises(DatasetError, match="at least 2"):
        make_folds(grouped, k=1)
