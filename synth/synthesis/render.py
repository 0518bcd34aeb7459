"""Pictures for people: labelled strips, grids, contact sheets, GIF and MP4.

Everything takes uint8 RGB arrays [H, W, 3] and returns PIL images; writers are atomic so an
interrupted run never leaves a truncated GIF or MP4 behind.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from synth.utils.io import atomic_save, create_temp

__all__ = [
    "upscale",
    "labelled_strip",
    "labelled_grid",
    "contact_sheet",
    "save_png",
    "write_gif",
    "write_mp4",
    "ease_in_out",
]

BG = (255, 255, 255)
FG = (20, 20, 20)
PAD = 4


def _font(size: int = 12):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    if not text:
        return 0, 0
    box = draw.multiline_textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def upscale(img: np.ndarray | Image.Image, min_size: int = 128) -> Image.Image:
    """Nearest-neighbour upscale by an integer factor so tiny images stay readable."""
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    k = max(1, -(-min_size // max(im.size)))
    return im.resize((im.width * k, im.height * k), Image.NEAREST) if k > 1 else im


def labelled_grid(
    images: Sequence[Sequence[np.ndarray | Image.Image | None]],
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_labels: Sequence[Sequence[str]] | None = None,
    min_size: int = 128,
    font_size: int = 12,
) -> Image.Image:
    """Rows x columns of images with optional labels above columns, left of rows and above cells.
    ``None`` leaves a cell blank."""
    rows = [[upscale(im, min_size) if im is not None else None for im in row] for row in images]
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        raise ValueError("labelled_grid needs at least one image")
    tile_w = max(im.width for r in rows for im in r if im is not None)
    tile_h = max(im.height for r in rows for im in r if im is not None)
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    col_h = max((_text_size(probe, t, font)[1] for t in col_labels or []), default=0)
    row_w = max((_text_size(probe, t, font)[0] for t in row_labels or []), default=0)
    cell_h = max((_text_size(probe, t, font)[1] for r in cell_labels or [] for t in r), default=0)
    label_w = max([_text_size(probe, t, font)[0] for t in col_labels or []] + [_text_size(probe, t, font)[0] for r in cell_labels or [] for t in r] + [0])
    tile_w = max(tile_w, label_w)
    top = col_h + 2 * PAD if col_h else PAD
    left = row_w + 2 * PAD if row_w else PAD
    cell_extra = cell_h + PAD if cell_h else 0
    W = left + n_cols * (tile_w + PAD)
    H = top + n_rows * (tile_h + cell_extra + PAD)
    canvas = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(col_labels or []):
        tw, _ = _text_size(draw, t, font)
        draw.multiline_text((left + c * (tile_w + PAD) + (tile_w - tw) // 2, PAD), t, fill=FG, font=font, align="center")
    for r, row in enumerate(rows):
        y = top + r * (tile_h + cell_extra + PAD)
        if row_labels and r < len(row_labels):
            _, th = _text_size(draw, row_labels[r], font)
            draw.multiline_text((PAD, y + cell_extra + (tile_h - th) // 2), row_labels[r], fill=FG, font=font)
        for c, im in enumerate(row):
            x = left + c * (tile_w + PAD)
            if cell_labels and r < len(cell_labels) and c < len(cell_labels[r]):
                tw, _ = _text_size(draw, cell_labels[r][c], font)
                draw.multiline_text((x + (tile_w - tw) // 2, y), cell_labels[r][c], fill=FG, font=font, align="center")
            if im is not None:
                canvas.paste(im, (x + (tile_w - im.width) // 2, y + cell_extra))
    return canvas


def labelled_strip(images: Sequence[np.ndarray | Image.Image], labels: Sequence[str], min_size: int = 128, title: str | None = None) -> Image.Image:
    """One row of frames with a label above each (a morph strip)."""
    return labelled_grid([list(images)], cell_labels=[list(labels)], row_labels=[title] if title else None, min_size=min_size)


def contact_sheet(strips: Sequence[Image.Image], titles: Sequence[str] | None = None, font_size: int = 12) -> Image.Image:
    """Stack strips vertically, each with an optional title line."""
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    th = [(_text_size(probe, t, font)[1] + PAD if t else 0) for t in (titles or [""] * len(strips))]
    W = max(s.width for s in strips) + 2 * PAD
    H = sum(s.height + h + PAD for s, h in zip(strips, th)) + PAD
    canvas = Image.new("RGB", (W, H), BG)
    draw = ImageDraw.Draw(canvas)
    y = PAD
    for s, t, h in zip(strips, titles or [""] * len(strips), th):
        if t:
            draw.text((PAD, y), t, fill=FG, font=font)
        canvas.paste(s, (PAD, y + h))
        y += s.height + h + PAD
    return canvas


def save_png(img: Image.Image | np.ndarray, path: str | Path) -> None:
    """Write a PNG under a temporary name, then rename: readers never see half an image.

    No fsync per image (it dominated generation time); the manifest, written last with
    fsync, is what marks a folder as complete.
    """
    im = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(path)  # not mkstemp: its 0600 would stick to the image
    try:
        im.save(tmp, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def ease_in_out(t: np.ndarray | float) -> np.ndarray:
    """Smoothstep 3t^2 - 2t^3: starts and ends slowly, exact at 0 and 1."""
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _video_frames(frames: Sequence[np.ndarray | Image.Image], min_size: int, multiple: int = 1) -> list[np.ndarray]:
    out = []
    for f in frames:
        im = upscale(f, min_size)
        if multiple > 1 and (im.width % multiple or im.height % multiple):
            # H.264 in yuv420p wants sizes divisible by the macroblock; pad instead of resampling.
            W = -(-im.width // multiple) * multiple
            H = -(-im.height // multiple) * multiple
            canvas = Image.new("RGB", (W, H), (0, 0, 0))
            canvas.paste(im, ((W - im.width) // 2, (H - im.height) // 2))
            im = canvas
        out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return out


def write_gif(frames: Sequence[np.ndarray | Image.Image], path: str | Path, fps: float = 20.0, min_size: int = 128) -> None:
    """Looping animated GIF, one GIF frame per input frame."""
    arrs = _video_frames(frames, min_size)
    ims = [Image.fromarray(a) for a in arrs]
    duration = int(round(1000.0 / fps))

    def _write(tmp: Path) -> None:
        # disposal=1 + no optimisation keeps identical consecutive frames as separate frames
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:], duration=duration, loop=0, optimize=False, disposal=1)

    atomic_save(path, _write)


def write_mp4(frames: Sequence[np.ndarray | Image.Image], path: str | Path, fps: float = 20.0, min_size: int = 128, quality: int = 8) -> None:
    """H.264 MP4 through the ffmpeg binary shipped with imageio-ffmpeg."""
    import imageio_ffmpeg

    arrs = _video_frames(frames, min_size, multiple=16)
    h, w = arrs[0].shape[:2]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(path, suffix=".mp4")  # ffmpeg picks the container from the suffix
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=quality,
            macro_block_size=16, ffmpeg_log_level="error",
        )
        writer.send(None)
        for a in arrs:
            writer.send(np.ascontiguousarray(a))
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
