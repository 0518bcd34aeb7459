"""tools/variety_grid.py: one row per cell, real images first, seeds after; one-line errors."""
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from synth.conditions import ConditionSpace
from tests.helpers import grid_rows, tiny_generator, write_tiny_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import variety_grid  # noqa: E402

SPACE = ConditionSpace.default(["disease", "age"], embed_total=16)


def test_grid_layout_and_errors(tmp_path):
    from synth.networks.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "g.ckpt", {"G_ema": tiny_generator(SPACE), "space": SPACE})
    data = write_tiny_dataset(tmp_path / "d", grid_rows(["syndrome_a", "unaffected"], ["infant", "child"], per_cell=2))
    r = CliRunner().invoke(variety_grid.main, [str(tmp_path / "g.ckpt"), str(tmp_path / "g.png"), "--seeds", "3",
                                               "--factors", "disease", "--real", str(data), "--real-per-cell", "2"])
    assert r.exit_code == 0, r.output
    img = Image.open(tmp_path / "g.png")
    G = tiny_generator(SPACE)
    by_disease = variety_grid.variety_grid(G, SPACE, 3, 1.0, factors=["disease"], min_size=16)
    by_cell = variety_grid.variety_grid(G, SPACE, 3, 1.0, min_size=16)
    with_real = variety_grid.variety_grid(G, SPACE, 3, 1.0, real=__import__("synth.data.dataset", fromlist=["x"]).open_dataset(data),
                                          real_per_cell=2, factors=["disease"], min_size=16)
    # rows: 4 diseases against 20 disease x age cells; columns: 2 real + 3 seeds against 3 seeds
    assert by_cell.height > 4 * by_disease.height and with_real.width > by_disease.width * 1.3
    assert img.width > with_real.width  # the file is drawn with 64 px tiles
    a = np.asarray(variety_grid.variety_grid(G, SPACE, 2, 1.0, factors=["disease"], min_size=16))
    assert np.array_equal(a, np.asarray(variety_grid.variety_grid(G, SPACE, 2, 1.0, factors=["disease"], min_size=16)))
    r = CliRunner().invoke(variety_grid.main, [str(tmp_path / "g.ckpt"), str(tmp_path / "h.png"), "--factors", "stage"])
    assert r.exit_code != 0 and "--factors" in r.output and not (tmp_path / "h.png").exists()
    r = CliRunner().invoke(variety_grid.main, [str(tmp_path / "g.ckpt"), str(tmp_path / "h.png"), "--seeds", "0"])
    assert r.exit_code != 0 and "--seeds" in r.output
