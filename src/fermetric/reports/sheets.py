"""Contact sheets: a PNG grid of face crops with captions (PIL; the one grid of the package).

Retrieval shows a query and its neighbours with this grid, sub-class discovery one row of
exemplars per sub-class. Crops are shown enlarged to ``tile_size`` px (bicubic; shrunk with
Lanczos), in grey as the model saw them; a missing image is a blank tile.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["image_grid"]


def _tile(image, tile_size: int):
    from PIL import Image

    if image is None:
        return Image.new("L", (tile_size, tile_size), 235)
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if picture.mode != "L":  # an RGB crop: shown in grey, as the model saw it
        picture = picture.convert("L")
    scale = tile_size / max(picture.size)
    if scale != 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.LANCZOS)
    canvas = Image.new("L", (tile_size, tile_size), 255)
    canvas.paste(picture, ((tile_size - picture.width) // 2, (tile_size - picture.height) // 2))
    return canvas


def image_grid(
    images, captions, out_png: str | os.PathLike, columns: int = 6, tile_size: int = 112, highlight=()
) -> Path:
    """Write ``images`` (uint8 arrays ``[H, W]`` or ``[H, W, 3]``, or ``None``) row-major in ``columns`` columns,
    each captioned (``captions[i]``, may hold one newline) below it; tiles whose index is in
    ``highlight`` get a blue frame. Returns the PNG's path (its folder is created)."""
    from PIL import Image, ImageDraw, ImageFont

    images, captions = list(images), list(captions)
    if len(captions) != len(images):
        raise ValueError(f"image_grid: {len(images)} images but {len(captions)} captions")
    font_size = max(10, tile_size // 9)
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    pad, caption = 6, 2 * (font_size + 3)
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    sheet = Image.new("RGB", (columns * (tile_size + pad) + pad, rows * (tile_size + caption + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, text) in enumerate(zip(images, captions)):
        x = pad + (i % columns) * (tile_size + pad)
        y = pad + (i // columns) * (tile_size + caption + pad)
        sheet.paste(_tile(image, tile_size).convert("RGB"), (x, y))
        if i in highlight:
            draw.rectangle((x - 2, y - 2, x + tile_size + 1, y + tile_size + 1), outline=(0, 120, 255), width=2)
        if text:
            draw.multiline_text((x, y + tile_size + 2), text, fill="black", font=font, spacing=2)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
