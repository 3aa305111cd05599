"""Changes another hospital, machine or export could make to a film, applied to the decoded
pixels before the shared preprocessing (exactly where such a change happens in real life).

Two uses: random combinations train the intended-use gate on BOTH children's and adults'
films, so that the gate cannot tell the two apart by exposure, sharpness, compression, borders,
burned-in text, side markers, rulers or proportions; and `STRESSES`, fixed severe versions of
each change, re-score validation children's films (`python -m training.gate_check`).

Every function takes and returns an (H, W) float32 image in [0, 1], bright = dense.
"""

from __future__ import annotations

import io
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


def _to_pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8))


def _from_pil(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.float32) / 255.0


def exposure(pixels, factor: float):
    """Over- (factor > 1) or under-exposure, saturating at the ends of the range."""
    return np.clip(pixels * factor, 0.0, 1.0)


def gamma(pixels, value: float):
    return np.power(np.clip(pixels, 1e-4, 1.0), value).astype(np.float32)


def contrast(pixels, factor: float):
    mean = float(pixels.mean())
    return np.clip((pixels - mean) * factor + mean, 0.0, 1.0)


def blur(pixels, sigma: float):
    """Gaussian blur, sigma in pixels of a 224 px film (scaled to the film's size)."""
    radius = sigma * max(pixels.shape) / 224
    return _from_pil(_to_pil(pixels).filter(ImageFilter.GaussianBlur(radius)))


def resolution(pixels, scale: float):
    """Down to `scale` of the size and back: a coarser detector or a small export."""
    image = _to_pil(pixels)
    w, h = image.size
    small = image.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BILINEAR)
    return _from_pil(small.resize((w, h), Image.Resampling.BILINEAR))


def noise(pixels, sd: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return np.clip(pixels + rng.normal(0.0, sd, pixels.shape), 0.0, 1.0).astype(np.float32)


def jpeg(pixels, quality: int):
    buffer = io.BytesIO()
    _to_pil(pixels).save(buffer, "JPEG", quality=int(quality))
    return _from_pil(Image.open(io.BytesIO(buffer.getvalue())))


def border(pixels, fraction: float, value: float, sides: str = "tblr"):
    """A frame around the film (collimator edges, a scanned film on a light box, a PACS
    export on a black canvas), keeping the image size: the film shrinks inside it."""
    h, w = pixels.shape
    pad = [round(fraction * (h if s in "tb" else w)) if s in sides else 0 for s in "tblr"]
    canvas = np.full((h + pad[0] + pad[1], w + pad[2] + pad[3]), value, np.float32)
    canvas[pad[0] : pad[0] + h, pad[2] : pad[2] + w] = pixels
    return _from_pil(_to_pil(canvas).resize((w, h), Image.Resampling.BILINEAR))


def _font(size: int):
    return ImageFont.load_default(size=max(6, size))


def text_and_markers(pixels, seed: int = 0, ink: float | None = None):
    """Burned-in text lines (name/date/institution style), a side marker ("L" or "R" in a
    box) and a word like PORTABLE or SUPINE: what a hospital prints onto its films."""
    rng = np.random.default_rng(seed)
    image = _to_pil(pixels)
    w, h = image.size
    draw = ImageDraw.Draw(image)
    fill = int(255 * (ink if ink is not None else (1.0 if rng.random() < 0.8 else 0.0)))
    for _ in range(int(rng.integers(1, 4))):
        chars = string.ascii_uppercase + string.digits + " :/-."
        line = "".join(rng.choice(list(chars), int(rng.integers(6, 18))))
        x = int(rng.integers(0, max(1, w // 2)))
        y = int(rng.choice([rng.integers(0, max(1, h // 8)), rng.integers(h - h // 6, h - 8)]))
        draw.text((x, y), line, fill=fill, font=_font(int(h * rng.uniform(0.03, 0.06))))
    letter = "L" if rng.random() < 0.5 else "R"
    size = int(h * rng.uniform(0.05, 0.1))
    x, y = int(rng.integers(2, w - 2 * size)), int(rng.integers(2, h // 3))
    draw.text((x, y), letter, fill=fill, font=_font(size))
    if rng.random() < 0.6:
        draw.rectangle([x - 2, y - 2, x + size, y + int(size * 1.2)], outline=fill, width=max(1, size // 10))
    if rng.random() < 0.5:
        word = str(rng.choice(["PORTABLE", "SUPINE", "AP", "PA", "ERECT", "SITTING"]))
        draw.text(
            (int(rng.integers(0, w // 2)), int(rng.integers(h // 2, h - 12))),
            word,
            fill=fill,
            font=_font(int(h * 0.05)),
        )
    return _from_pil(image)


def ruler(pixels, seed: int = 0):
    """A radiopaque ruler or scale with tick marks along one edge."""
    rng = np.random.default_rng(seed)
    image = _to_pil(pixels)
    w, h = image.size
    draw = ImageDraw.Draw(image)
    fill = int(255 * rng.uniform(0.85, 1.0))
    vertical = rng.random() < 0.5
    length = (h if vertical else w) * rng.uniform(0.4, 0.9)
    start = rng.uniform(0, (h if vertical else w) - length)
    offset = rng.uniform(0.02, 0.12) * (w if vertical else h)
    if rng.random() < 0.5:
        offset = (w if vertical else h) - offset
    step = max(3.0, length / rng.integers(10, 30))
    pos = start
    while pos <= start + length:
        tick = 6 if int((pos - start) / step) % 5 == 0 else 3
        if vertical:
            draw.line([(offset, pos), (offset + tick, pos)], fill=fill, width=1)
        else:
            draw.line([(pos, offset), (pos, offset + tick)], fill=fill, width=1)
        pos += step
    if vertical:
        draw.line([(offset, start), (offset, start + length)], fill=fill, width=2)
    else:
        draw.line([(start, offset), (start + length, offset)], fill=fill, width=2)
    return _from_pil(image)


def stretch(pixels, factor_x: float, factor_y: float):
    """Another original aspect ratio: scale one axis, then cut back to the original frame."""
    image = _to_pil(pixels)
    w, h = image.size
    nw, nh = max(w, round(w * factor_x)), max(h, round(h * factor_y))
    image = image.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return _from_pil(image.crop((left, top, left + w, top + h)))


def crop(pixels, keep_x: float, keep_y: float, at_x: float = 0.5, at_y: float = 0.5):
    """A tighter or shifted field of view: keep a window of the film (the preprocessing then
    squashes it to a square, as it does any upload)."""
    h, w = pixels.shape
    cw, ch = max(8, round(w * keep_x)), max(8, round(h * keep_y))
    left, top = round((w - cw) * at_x), round((h - ch) * at_y)
    return np.ascontiguousarray(pixels[top : top + ch, left : left + cw])


def rotate(pixels, degrees: float):
    image = _to_pil(pixels)
    fill = int(np.median(np.r_[pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]) * 255)
    return _from_pil(image.rotate(degrees, Image.Resampling.BILINEAR, fillcolor=fill))


def random_distortion(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random combination of the changes above, each applied with some probability and a
    random severity reaching a little beyond the fixed stress settings."""
    x = pixels.astype(np.float32)
    seed = int(rng.integers(0, 2**31))
    if rng.random() < 0.5:
        x = crop(x, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0), rng.random(), rng.random())
    if rng.random() < 0.5:
        f = float(np.exp(rng.uniform(-0.3, 0.3)))
        x = stretch(x, f, 1.0) if f >= 1 else stretch(x, 1.0, 1.0 / f)
    if rng.random() < 0.3:
        x = rotate(x, rng.uniform(-10, 10))
    if rng.random() < 0.3:
        x = border(
            x,
            rng.uniform(0.02, 0.15),
            float(rng.choice([0.0, 1.0, rng.random()])),
            "".join(s for s in "tblr" if rng.random() < 0.6) or "tb",
        )
    if rng.random() < 0.4:
        x = text_and_markers(x, seed)
    if rng.random() < 0.25:
        x = ruler(x, seed + 1)
    if rng.random() < 0.4:
        x = exposure(x, float(np.exp(rng.uniform(-0.6, 0.5))))
    if rng.random() < 0.4:
        x = gamma(x, float(np.exp(rng.uniform(-0.8, 0.8))))
    if rng.random() < 0.4:
        x = contrast(x, float(np.exp(rng.uniform(-0.8, 0.5))))
    if rng.random() < 0.3:
        x = resolution(x, rng.uniform(0.2, 0.8))
    if rng.random() < 0.3:
        x = blur(x, rng.uniform(0.5, 2.5))
    if rng.random() < 0.3:
        x = noise(x, rng.uniform(0.005, 0.07), seed + 2)
    if rng.random() < 0.5:
        x = jpeg(x, int(rng.integers(8, 96)))
    return x.astype(np.float32)


# Fixed settings for the stress test, each at or beyond the edge of the training range where
# a real film could plausibly sit. Keyed by a readable name; `seed` varies text per film.
STRESSES = {
    "none": lambda x, seed: x,
    "under-exposed x0.6": lambda x, seed: exposure(x, 0.6),
    "over-exposed x1.5": lambda x, seed: exposure(x, 1.5),
    "gamma 0.5": lambda x, seed: gamma(x, 0.5),
    "gamma 2.0": lambda x, seed: gamma(x, 2.0),
    "contrast x0.5": lambda x, seed: contrast(x, 0.5),
    "contrast x1.5": lambda x, seed: contrast(x, 1.5),
    "gaussian blur 2 px": lambda x, seed: blur(x, 2.0),
    "resolution x0.25": lambda x, seed: resolution(x, 0.25),
    "noise sd 0.05": lambda x, seed: noise(x, 0.05, seed),
    "JPEG quality 10": lambda x, seed: jpeg(x, 10),
    "black border 10%": lambda x, seed: border(x, 0.10, 0.0),
    "white border 10%": lambda x, seed: border(x, 0.10, 1.0),
    "text and side markers": lambda x, seed: text_and_markers(x, seed),
    "ruler": lambda x, seed: ruler(x, seed),
    "wider by 25%": lambda x, seed: stretch(x, 1.25, 1.0),
    "taller by 25%": lambda x, seed: stretch(x, 1.0, 1.25),
    "centre crop 80%": lambda x, seed: crop(x, 0.8, 0.8),
    "crop to upper 80%": lambda x, seed: crop(x, 1.0, 0.8, 0.5, 0.0),
    "rotated 8 degrees": lambda x, seed: rotate(x, 8.0),
    "all of: text, ruler, border, JPEG 30, blur 1": lambda x, seed: jpeg(
        blur(border(ruler(text_and_markers(x, seed), seed + 1), 0.06, 0.0), 1.0), 30
    ),
}
