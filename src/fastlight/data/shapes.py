"""Synthetic shapes: the vision task's twin with planted structure, for all three problem types.

Each image is a plain background with coloured shapes drawn on it (PIL), held in memory:
  single_label  one shape; the class is its kind (circle, square, triangle, cross)
  multi_label   one to three shapes of different kinds; the tags are the kinds present
  regression    one shape; the target is its centre (x, y), a point scaled to [-1, 1]
A model that learns the data reaches near-perfect scores; chance is 25% for the kinds.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

from fastlight.data.vision import ImageData

KINDS = ("circle", "square", "triangle", "cross")


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, color) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif kind == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=color)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r * 0.8), (cx + r, cy + r * 0.8)], fill=color)
    else:  # cross: a plus sign
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=color)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=color)


def shapes_image(rng: random.Random, px: int, kinds: list[str]) -> tuple[Image.Image, list[tuple[float, float]]]:
    """An image with one shape per entry of `kinds`, in distinct quadrants when there are several.

    Shapes keep a margin from the border, so augmentation's crops and rotations leave them whole.
    """
    bg = tuple(rng.randint(0, 90) for _ in range(3))
    img = Image.new("RGB", (px, px), bg)
    draw = ImageDraw.Draw(img)
    centres = []
    margin = 0.1 * px
    quadrants = rng.sample(range(4), len(kinds))
    for kind, q in zip(kinds, quadrants):
        if len(kinds) == 1:  # anywhere, any size that fits
            r = rng.uniform(0.15, 0.3) * px
            cx, cy = (rng.uniform(margin + r, px - margin - r) for _ in range(2))
        else:
            r = rng.uniform(0.13, 0.18) * px
            half = px / 2 - margin
            cx = margin + (q % 2) * half + rng.uniform(r, half - r)
            cy = margin + (q // 2) * half + rng.uniform(r, half - r)
        color = tuple(rng.randint(150, 255) for _ in range(3))
        draw_shape(draw, kind, cx, cy, r, color)
        centres.append((cx, cy))
    return img, centres


class ShapesData(ImageData):
    """`n_train` + `n_valid` drawn images of `image_px` pixels, seeded by `seed`."""

    def __init__(self, n_train: int = 800, n_valid: int = 200, image_px: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.n_train, self.n_valid, self.image_px = n_train, n_valid, image_px
        self.points = self.problem == "regression"

    def item(self, rng: random.Random):
        if self.problem == "multi_label":
            kinds = rng.sample(KINDS, rng.randint(1, 3))
            img, _ = shapes_image(rng, self.image_px, kinds)
            return img, sorted(KINDS.index(k) for k in kinds)
        kind = rng.choice(KINDS)
        img, centres = shapes_image(rng, self.image_px, [kind])
        return (img, list(centres[0])) if self.problem == "regression" else (img, KINDS.index(kind))

    def load_items(self):
        rng = random.Random(self.seed)
        items = [self.item(rng) for _ in range(self.n_train + self.n_valid)]
        classes = ["x", "y"] if self.problem == "regression" else list(KINDS)
        return items[: self.n_train], items[self.n_train :], None, classes
