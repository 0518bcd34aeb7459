"""``synth augment-preview``: look at what the discriminator will see before spending GPU hours.

torch is imported only when the command runs, so ``synth --help`` stays quick.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from synth.training.augment_specs import KINDS, SPECS
from synth.utils.cli_types import SEED

if TYPE_CHECKING:
    import torch

__all__ = ["augment_preview"]

def _preview_sources(data: str, count: int) -> list[Any]:
    """The first ``count`` images of a dataset (labels.csv / dataset.json / zip) or image folder."""
    from pathlib import Path

    from PIL import Image

    from synth.data.dataset import IMAGE_EXTENSIONS, DatasetError, open_dataset

    try:
        imageset = open_dataset(data)
        return [imageset.load_image(i) for i in range(min(count, len(imageset)))]
    except DatasetError as err:
        folder = Path(data)
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS) if folder.is_dir() else []
        if not files:
            raise click.UsageError(f"DATA {data}: {err} (and no image files in it)") from None
        images = []
        for f in files[:count]:
            try:
                with Image.open(f) as img:
                    images.append(img.convert("RGB"))
            except OSError as exc:
                raise click.UsageError(f"DATA {f}: cannot read image ({exc})") from None
        return images


def _to_tensor(img: Any, resolution: int) -> "torch.Tensor":
    """PIL image -> float32 [3, R, R] in [-1, 1] (centre-cropped square, Lanczos resize)."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = img.size
    side = min(w, h)
    img = img.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    img = img.resize((resolution, resolution), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1
    return torch.from_numpy(np.ascontiguousarray(arr))


def _save_grid(path: str, rows: "torch.Tensor") -> None:
    """Write [rows, cols, 3, R, R] images in [-1, 1] as one PNG, atomically."""
    import numpy as np
    import torch
    from PIL import Image

    from synth.utils.io import atomic_save

    r, c, _, h, w = rows.shape
    grid = rows.permute(0, 3, 1, 4, 2).reshape(r * h, c * w, 3)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    atomic_save(path, lambda tmp: Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG"))


@click.command("augment-preview", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG grid to write.")
@click.option("--spec", type=click.Choice(list(SPECS)), default="bgc", show_default=True,
              help="Augmentation preset: b=blit, g=geometric, c=colour, f=filter, n=noise, c=cutout.")
@click.option("--kind", type=click.Choice(list(KINDS)), default="generic", show_default=True,
              help="Image kind: 'faces' disables x-flip, 'skin' disables hue rotation and luma flip.")
@click.option("--p", "p", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Augmentation probability (the value ADA would have reached).")
@click.option("--images", "-n", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Number of source images (one row each).")
@click.option("--copies", "-k", type=click.IntRange(1, 32), default=7, show_default=True,
              help="Augmented copies per image (columns after the original).")
@click.option("--resolution", "-r", type=click.IntRange(16, 1024), default=128, show_default=True,
              help="Preview size in pixels.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed (same seed, same grid).")
def augment_preview(data: str, out: str, spec: str, kind: str, p: float, images: int, copies: int,
                    resolution: int, seed: int) -> None:  # fmt: skip
    """Render what the discriminator sees: each row is one image of DATA followed by augmented copies.

    DATA is a dataset (folder or zip with labels.csv or dataset.json) or a plain folder of images.

    \b
    Example:
      synth augment-preview data/faces --kind faces --p 0.6 -o aug.png
    """
    import torch

    from synth.training.augment import for_kind

    pipe = for_kind(kind, spec=spec, p=p)
    batch = torch.stack([_to_tensor(img, resolution) for img in _preview_sources(data, images)])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        views = [pipe(batch, generator=gen) for _ in range(copies)]
    _save_grid(out, torch.stack([batch, *views], dim=1))
    click.echo(f"wrote {out}: {len(batch)} image(s) x {copies} copies, spec={spec}, kind={kind}, p={p:g}")
