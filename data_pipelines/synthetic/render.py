"""Scenes to pixels: textured backgrounds, anti-aliased shapes, sensor noise, JPEG.

Every random choice comes from the caller's generator, so a (seed, set, index) triple always
gives the same image. Shapes are drawn at 3x and box-reduced: cheap, clean anti-aliasing.

The 3 x 3 grid of a scene lies in the image's central square, so the centre crop of the usual
eval transform (and a training crop of 90% of the area or more) never cuts a shape a caption
states; the margins of a landscape or portrait image are background.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from .scenes import Scene

SUPERSAMPLE = 3
COLOUR_RGB = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "yellow": (240, 200, 20),
    "orange": (250, 130, 15),
    "purple": (130, 60, 170),
    "brown": (120, 75, 35),
    "black": (25, 25, 25),
}
BACKGROUND_RGB = {
    "light_grey": (222, 222, 222),
    "cream": (244, 236, 212),
    "pale_blue": (212, 228, 245),
    "pale_green": (218, 240, 218),
    "pale_pink": (245, 220, 228),
}
SCENE_LONG_SIDE = 384  # the long side of ``Scene.width`` / ``height``; ``render_scene`` may rescale
# Radius as a fraction of the image's short side; large is ~1.7x small. Shapes fill a few percent
# of the image, so a small model's patches see their colour over the textured background.
RADIUS = {"small": 0.06, "large": 0.1}
# Extent of each grid row / column in unit coordinates; neighbours overlap only at the centre.
SPAN = {
    "left": (0.04, 0.46),
    "top": (0.04, 0.46),
    "centre": (0.27, 0.73),
    "right": (0.54, 0.96),
    "bottom": (0.54, 0.96),
}


def render_scene(scene: Scene, rng: np.random.Generator, long_side: int = SCENE_LONG_SIDE) -> Image.Image:
    """The scene's pixels, ``long_side`` pixels on the long side (the scene's aspect ratio kept)."""
    scale = long_side / max(scene.width, scene.height)
    width, height = round(scene.width * scale), round(scene.height * scale)
    image = Image.fromarray(_background(width, height, scene.background, scene.texture, scale, rng))
    image = image.resize((width * SUPERSAMPLE, height * SUPERSAMPLE), Image.NEAREST)
    draw = ImageDraw.Draw(image)
    side = min(width, height) * SUPERSAMPLE
    left, top = (width * SUPERSAMPLE - side) / 2, (height * SUPERSAMPLE - side) / 2
    for group, (row, col) in zip(scene.groups, scene.cells()):
        x0, x1 = (left + v * side for v in SPAN[col])
        y0, y1 = (top + v * side for v in SPAN[row])
        for cx, cy, cell in _slots(group.count, x0, y0, x1, y1, rng):
            radius = min(RADIUS[group.size] * side * rng.uniform(0.92, 1.08), cell / 2 * 0.92)
            slack = cell / 2 - radius
            cx, cy = cx + rng.uniform(-0.6, 0.6) * slack, cy + rng.uniform(-0.6, 0.6) * slack
            fill = _jitter(COLOUR_RGB[group.colour], rng, 14)
            outline = tuple(int(c * 0.6) for c in fill)
            _draw_shape(draw, group.shape, cx, cy, radius, fill, outline, rng)
    image = image.reduce(SUPERSAMPLE)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * rng.uniform(1.5, 5.0)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _background(width: int, height: int, colour: str, texture: str, scale: float, rng: np.random.Generator):
    """``[height, width, 3]`` uint8; ``scale`` shrinks stripes with the image (they are sized for 384 px)."""
    base = np.array(_jitter(BACKGROUND_RGB[colour], rng, 8), dtype=np.float32)
    ys, xs = np.ogrid[0:height, 0:width]
    shade = np.zeros((height, width), np.float32)
    if texture == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        shade = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6) * rng.uniform(20, 40) - 15
    elif texture == "stripes":
        period, amplitude = rng.uniform(10, 24) * scale, rng.uniform(5, 10)
        shade = amplitude * np.sin(2 * math.pi * (xs + ys * rng.choice([-1, 1])) / period)
    elif texture == "speckles":
        spots = rng.random((height, width)) < 0.006
        shade = -rng.uniform(15, 35) * (spots | np.roll(spots, 1, axis=0) | np.roll(spots, 1, axis=1))
    pixels = base + shade[..., None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _slots(count: int, x0: float, y0: float, x1: float, y1: float, rng: np.random.Generator):
    """Cell centres and cell size for ``count`` objects in a region: 1, 2 side by side, or 3 of a 2x2."""
    wide = (x1 - x0) >= (y1 - y0)
    cols, rows = {1: (1, 1), 2: (2, 1) if wide else (1, 2), 3: (2, 2)}[count]
    cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
    cells = [(x0 + (i + 0.5) * cw, y0 + (j + 0.5) * ch) for j in range(rows) for i in range(cols)]
    if count == 3:
        del cells[rng.integers(4)]
    return [(x, y, min(cw, ch)) for x, y in cells]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill, outline, rng) -> None:
    width = max(1, round(r * 0.08))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
        return
    tilt = math.radians(rng.uniform(-12, 12))
    if shape == "square":
        points = _polygon(4, r, math.pi / 4 + tilt)
    elif shape == "triangle":
        points = _polygon(3, r * 1.1, -math.pi / 2 + tilt)
    elif shape == "hexagon":
        points = _polygon(6, r, tilt)
    elif shape == "star":
        outer, inner = (
            _polygon(5, r * 1.1, -math.pi / 2 + tilt),
            _polygon(5, r * 0.48, -math.pi / 2 + math.pi / 5 + tilt),
        )
        points = [p for pair in zip(outer, inner) for p in pair]
    else:  # diamond: a tall rhombus, so it never reads as a tilted square
        points = [(0, -r), (0.62 * r, 0), (0, r), (-0.62 * r, 0)]
        c, s = math.cos(tilt / 2), math.sin(tilt / 2)
        points = [(x * c - y * s, x * s + y * c) for x, y in points]
    draw.polygon([(cx + x, cy + y) for x, y in points], fill=fill, outline=outline, width=width)


def _polygon(sides: int, radius: float, start: float) -> list[tuple[float, float]]:
    return [
        (radius * math.cos(start + 2 * math.pi * i / sides), radius * math.sin(start + 2 * math.pi * i / sides))
        for i in range(sides)
    ]


def _jitter(rgb, rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
