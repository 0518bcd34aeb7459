"""Every image mode Pillow opens loads with its real values as 8-bit RGB, or is refused by name."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from synth.data.dataset import DatasetError, open_dataset, to_rgb
from tests.helpers import write_tiny_dataset

S = 16
# Greys 36..194, as in the 16-bit scan that used to load as pure white.
GREYS = np.linspace(36, 194, S * S).round().astype(np.uint8).reshape(S, S)
RNG = np.random.default_rng(0)
COLOURS = RNG.integers(0, 256, size=(S, S, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, size=(S, S), dtype=np.uint8)
PALETTE = RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)
INDEX = RNG.integers(0, 256, size=(S, S), dtype=np.uint8)


def grey_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def _palette_image() -> Image.Image:
    im = Image.fromarray(INDEX, mode="P")
    im.putpalette(PALETTE.flatten().tolist())
    return im


def _cmyk() -> Image.Image:
    zero = Image.fromarray(np.zeros((S, S), np.uint8))
    return Image.merge("CMYK", [zero, zero, zero, Image.fromarray(255 - GREYS)])  # K only: grey = 255 - K


def _ycbcr() -> Image.Image:
    mid = Image.fromarray(np.full((S, S), 128, np.uint8))
    return Image.merge("YCbCr", [Image.fromarray(GREYS), mid, mid])  # no chroma: grey = Y


def _int32(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.int32), mode="I")


def _float(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.float32), mode="F")


BITS = (GREYS > 100)
# mode -> (image as stored, file suffix, expected RGB after loading)
CASES = {
    "1": (lambda: Image.fromarray(BITS), ".png", grey_rgb(BITS.astype(np.uint8) * 255)),
    "L": (lambda: Image.fromarray(GREYS), ".png", grey_rgb(GREYS)),
    "LA": (lambda: Image.merge("LA", [Image.fromarray(GREYS), Image.fromarray(ALPHA)]), ".png", grey_rgb(GREYS)),
    "P": (_palette_image, ".png", PALETTE[INDEX]),
    "PA": (lambda: _palette_image().convert("PA"), ".tif", PALETTE[INDEX]),
    "RGBA": (lambda: Image.fromarray(np.dstack([COLOURS, ALPHA]), mode="RGBA"), ".png", COLOURS),
    "I;16": (lambda: Image.fromarray(GREYS.astype(np.uint16) * 257), ".png", grey_rgb(GREYS)),
    "I;16 tiff": (lambda: Image.fromarray(GREYS.astype(np.uint16) * 257), ".tif", grey_rgb(GREYS)),
    "I 8-bit values": (lambda: _int32(GREYS), ".tif", grey_rgb(GREYS)),
    "I 16-bit values": (lambda: _int32(GREYS.astype(np.int64) * 257), ".tif", grey_rgb(GREYS)),
    "F 8-bit values": (lambda: _float(GREYS + 0.3), ".tif", grey_rgb(GREYS)),
    "F 16-bit values": (lambda: _float(GREYS.astype(np.float64) * 257), ".tif", grey_rgb(GREYS)),
    "CMYK": (_cmyk, ".tif", grey_rgb(GREYS)),
    "YCbCr": (_ycbcr, ".tif", grey_rgb(GREYS)),
}


def one_image_dataset(tmp_path, img: Image.Image, suffix: str):
    rel = f"img/scan{suffix}"
    root = write_tiny_dataset(tmp_path / "d", [{"file": rel, "disease": "syndrome_a", "age": "child"}], size=S)
    img.save(root / rel)
    return root, rel


@pytest.mark.parametrize("case", list(CASES))
def test_every_mode_loads_with_its_real_values(tmp_path, case):
    make, suffix, expected = CASES[case]
    root, rel = one_image_dataset(tmp_path, make(), suffix)
    stored = Image.open(root / rel)
    assert stored.mode == case.split()[0]  # the file really holds that mode
    loaded = open_dataset(root).load_image(0)
    assert loaded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(loaded), expected)


def test_16_bit_scales_by_the_full_range():
    img = Image.fromarray(np.array([[0, 1000, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(img, "x.png"))[0, :, 0].tolist() == [0, 4, 128, 255]  # round(v / 257)


@pytest.mark.parametrize("make, what", [
    (lambda: _int32(np.full((S, S), 70000)), "fit neither 0..255 nor 0..65535"),
    (lambda: _int32(np.full((S, S), -5)), "fit neither 0..255 nor 0..65535"),
    (lambda: _float(np.full((S, S), np.nan)), "NaN"),
])
def test_out_of_range_wide_images_are_refused_by_name(tmp_path, make, what):
    from synth.cli import main

    root, rel = one_image_dataset(tmp_path, make(), ".tif")
    with pytest.raises(DatasetError) as e:
        open_dataset(root).load_image(0)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(root / rel)) and what in msg
    r = CliRunner().invoke(main, ["data", "check", str(root), "--quiet"])
    assert r.exit_code == 2 and what in r.output and str(root / rel) in r.output


def test_unconvertible_mode_is_refused_by_name():
    with pytest.raises(DatasetError, match=r"^scan.png: image mode La is not supported"):
        to_rgb(Image.new("La", (2, 2)), "scan.png")


def test_align_reads_16_bit_inputs_with_their_greys(tmp_path):
    from synth.data.align import _read_image

    path = tmp_path / "scan.png"
    CASES["I;16"][0]().save(path)
    np.testing.assert_array_equal(np.asarray(_read_image(path)), grey_rgb(GREYS))
