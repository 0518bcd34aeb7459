"""Small builders shared by tests: labelled datasets written on the fly."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_tiny_dataset(
    root: Path,
    rows: list[dict[str, str]],
    size: int = 16,
    seed: int = 0,
    schema: str | None = None,
    mode: str = "RGB",
) -> Path:
    """Write PNGs (random colours that depend on the row) and a labels.csv."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    header: list[str] = []
    for r in rows:
        for k in r:
            if k not in header:
                header.append(k)
    for r in rows:
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if mode != "RGB":
            img = img.convert(mode)
        path = root / r["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    if schema is not None:
        (root / "conditions.yaml").write_text(schema)
    return root


def grid_rows(diseases, ages, per_cell: int, subjects_per_image: int = 1) -> list[dict[str, str]]:
    rows = []
    k = 0
    for d in diseases:
        for a in ages:
            for j in range(per_cell):
                rows.append({"file": f"img/{k:04d}.png", "disease": d, "age": a, "subject": f"s{k // subjects_per_image:04d}"})
                k += 1
    return rows


def assert_close(a, b):
    import torch

    # plain torch.allclose: importing torch.testing costs seconds on a loaded machine
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()


def tiny_generator(space, seed: int = 0):
    """A 16 px random-init conditional generator with non-zero noise strengths, so that the
    noise modes actually differ and "const" noise matters for exactness."""
    import torch

    from synth.networks import Generator

    torch.manual_seed(seed)
    G = Generator(z_dim=16, w_dim=16, space=space, img_resolution=16, mapping_kwargs={"num_layers": 1},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16})
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G.eval()


def save_tiny_generator(path, space, seed: int = 0):
    """An exported-generator checkpoint (``G_ema`` + space) of :func:`tiny_generator`; -> path."""
    from synth.networks.checkpoint import save_checkpoint

    save_checkpoint(path, {"G_ema": tiny_generator(space, seed), "space": space})
    return path


def save_judge(path, factors, class_names, seed=0, model="small_cnn_s", size=16):
    """A random-init classifier checkpoint that ``load_judges`` reads (a real judge, untrained)."""
    import torch

    from classifiers.checkpoint import save_classifier
    from classifiers.models import create_model

    torch.manual_seed(seed)
    net = create_model(model, num_classes=len(class_names))
    meta = {"model": model, "class_names": list(class_names),
            "target": {"factors": list(factors), "class_names": list(class_names)}, "size": size, "in_chans": 3,
            "normalisation": {"mean": [0.5] * 3, "std": [0.5] * 3}}
    return save_classifier(path, net, meta)


def run_synthesis_cli(args):
    """Invoke the synthesis commands (generate, morph, teach, project ...) in-process."""
    import click
    from click.testing import CliRunner

    from synth.synthesis.cli import COMMANDS

    @click.group()
    def main():
        pass

    for c in COMMANDS:
        main.add_command(c)
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
