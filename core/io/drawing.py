"""Presentation only: labelled contact sheets (the demo, ``compare``) and quality-map heatmaps."""
from __future__ import annotations

import numpy as np
import torch


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




def turbo(x: np.ndarray) -> np.ndarray:
    """Google's Turbo colormap (polynomial approximation by its author, A. Mikhailov), x in [0,1] -> RGB."""
    x = np.clip(x, 0, 1)[..., None]
    r = (0.13572138 + x * (4.61539260 + x * (-42.66032258 + x * (132.13108234 + x * (-152.94239396 + x * 59.28637943)))))
    g = (0.09140261 + x * (2.19418839 + x * (4.84296658 + x * (-14.18503333 + x * (4.27729857 + x * 2.82956604)))))
    b = (0.10667330 + x * (12.64194608 + x * (-60.58204836 + x * (110.36276771 + x * (-89.90310912 + x * 27.34824973)))))
    return np.clip(np.concatenate([r, g, b], axis=-1), 0, 1)


def heatmap(qmap, image: torch.Tensor | None = None, alpha: float = 0.6, label: str = "") -> torch.Tensor:
    """Colour heatmap of the badness (Turbo: blue = best, red = worst), optionally over the photo,
    with a legend strip below. Returns ``[B,3,H+legend,W]`` in [0, 1]."""
    from PIL import Image, ImageDraw
    bad = qmap.badness[:, 0].cpu().numpy()
    out = []
    for k in range(bad.shape[0]):
        col = turbo(bad[k])
        if image is not None:
            photo = image[k].detach().float().permute(1, 2, 0).cpu().numpy()
            col = alpha * col + (1 - alpha) * photo
        h, w = col.shape[:2]
        bar_h = max(28, h // 10)
        legend = np.ones((bar_h, w, 3)) * 0.12
        ramp = turbo(np.linspace(0, 1, max(w - 20, 2)))
        legend[4:bar_h // 2 + 2, 10:10 + ramp.shape[0]] = ramp[None]
        pil = Image.fromarray((np.concatenate([col, legend]) * 255).round().astype(np.uint8))
        d = ImageDraw.Draw(pil)
        s = qmap.scores[k, 0]
        d.text((10, h + bar_h // 2 + 2), f"best {float(s.max()):.1f}", fill=(255, 255, 255))
        right = f"worst {float(s.min()):.1f}"
        d.text((max(w - 10 - 7 * len(right), w // 2), h + bar_h // 2 + 2), right, fill=(255, 255, 255))
        if label:
            d.text((w // 2 - 3 * len(label), h + bar_h // 2 + 2), label[:max(1, w // 14)], fill=(200, 200, 200))
        out.append(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out)


__all__ = ["contact_sheet", "heatmap", "same_size", "turbo"]
