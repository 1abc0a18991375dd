"""Labelled side-by-side images for the demo and ``compare`` (presentation only)."""
from __future__ import annotations

import numpy as np



def contact_sheet(images, labels, columns: int | None = None, pad: int = 6, label_h: int = 30):
    """One RGB PIL image: ``images`` ([1,3,H,W] in [0,1], same size) in a grid, each captioned."""
    from PIL import Image, ImageDraw, ImageFont

    tiles = [(t.detach().float().cpu()[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
             for t in images]
    h, w = tiles[0].shape[:2]
    cols = columns or len(tiles)
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + label_h + pad)
        sheet.paste(Image.fromarray(tile), (x, y + label_h))
        for j, line in enumerate(str(label).split("\n")[:2]):
            draw.text((x + 2, y + 1 + 14 * j), line, fill="black", font=font)
    return sheet


def same_size(images):
    """Crop a list of [1,3,H,W] tensors to their common size (outputs can differ by padding)."""
    h = min(t.shape[-2] for t in images)
    w = min(t.shape[-1] for t in images)
    return [t[..., :h, :w] for t in images]


__all__ = ["contact_sheet", "same_size"]
