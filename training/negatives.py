"""Synthetic "not a frontal chest radiograph" examples for the chest_xray head.

Only two non-chest radiograph kinds exist in the data, so the head would otherwise learn
"knee or not". These variants teach it what a frontal chest film is instead: crops, turns and
inversions of the non-chest images, chest films turned on their side, upside down, inverted or
cropped to a patch, and renders of documents, gradients, shapes and noise. All come from a
seeded generator, so the set is reproducible.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from webapp.inference.preprocess import preprocess


def _crop(rng: np.random.Generator, pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    h, w = pixels.shape
    ch = max(8, int(h * rng.uniform(low, high)))
    cw = max(8, int(w * rng.uniform(low, high)))
    top = rng.integers(0, h - ch + 1)
    left = rng.integers(0, w - cw + 1)
    return pixels[top : top + ch, left : left + cw]


def variants_of_other_images(rng: np.random.Generator, images: list[np.ndarray], per_image: int) -> list[np.ndarray]:
    out = []
    for pixels in images:
        for _ in range(per_image):
            x = _crop(rng, pixels, 0.45, 1.0)
            x = np.rot90(x, int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                x = x[:, ::-1]
            if rng.random() < 0.3:
                x = 1.0 - x
            out.append(np.ascontiguousarray(x))
    return out


def variants_of_chest_films(rng: np.random.Generator, films: list[np.ndarray], count: int) -> list[np.ndarray]:
    out = []
    picks = rng.choice(len(films), size=min(count, len(films)), replace=False)
    for i, index in enumerate(picks):
        pixels = films[index]
        kind = i % 4
        if kind == 0:  # photographic negative of a chest film
            x = 1.0 - pixels
        elif kind == 1:  # on its side
            x = np.rot90(pixels, 1 if rng.random() < 0.5 else 3)
        elif kind == 2:  # upside down
            x = pixels[::-1]
        else:  # a small patch: texture, not a chest film
            x = _crop(rng, pixels, 0.2, 0.4)
        out.append(np.ascontiguousarray(x))
    return out


def _document(rng: np.random.Generator, size: int) -> np.ndarray:
    scale = 3  # draw large, then shrink, so text strokes look like a scanned page
    canvas = Image.new("L", (size * scale, size * scale), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=int(rng.integers(10, 28)))
    y = int(rng.integers(5, 40))
    ink = int(rng.integers(0, 90))
    while y < size * scale - 20:
        if rng.random() < 0.15:
            draw.rectangle([10, y, size * scale - 10, y + int(rng.integers(20, 80))], outline=ink, width=2)
        words = " ".join("".join(chr(rng.integers(97, 123)) for _ in range(rng.integers(2, 9))) for _ in range(12))
        draw.text((int(rng.integers(5, 30)), y), words, fill=ink, font=font)
        y += int(rng.integers(18, 45))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0


def _pattern(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(0, 4)
    if kind == 0:
        x = rng.uniform(-1, 1) * xx + rng.uniform(-1, 1) * yy
    elif kind == 1:
        x = rng.random((size, size))
    elif kind == 2:
        x = np.full((size, size), rng.uniform(0, 1)) + rng.normal(0, 0.02, (size, size))
    else:
        canvas = Image.new("L", (size, size), int(rng.integers(0, 256)))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(2, 12))):
            box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
            shape = [box[0][0], box[1][0], box[0][1], box[1][1]]
            fill = int(rng.integers(0, 256))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(shape, fill=fill)
        x = np.asarray(canvas, np.float32) / 255.0
    x = x - x.min()
    return (x / max(float(x.max()), 1e-6)).astype(np.float32)


def renders(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    return [_document(rng, size) if i % 2 == 0 else _pattern(rng, size) for i in range(count)]


def build_negatives(
    other_images: list[np.ndarray],
    chest_films: list[np.ndarray],
    size: int,
    seed: int,
    per_image: int = 3,
    chest_variants: int = 600,
    render_count: int = 300,
) -> np.ndarray:
    """Preprocessed (N, size, size, 1) negatives: the other images, their variants and renders."""
    rng = np.random.default_rng(seed)
    pixels = list(other_images)
    pixels += variants_of_other_images(rng, other_images, per_image)
    pixels += variants_of_chest_films(rng, chest_films, chest_variants)
    pixels += renders(rng, render_count, 2 * size)
    return np.stack([preprocess(np.clip(p, 0.0, 1.0).astype(np.float32), size) for p in pixels])
