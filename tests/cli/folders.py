"""A small ImageFolder with planted structure for the commands on vision runs, and a run trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

TINY = "model._target_=tests.tasks.test_vision.tiny_vision_model"
PLANTED = 3  # squares filed under train/circle: wrong labels the ranking must surface
N_TRAIN, N_VALID = 32, 8  # per class
COLOURS = {"circle": (220, 40, 40), "square": (40, 40, 220)}  # each class has its colour: easy to learn


def drawn(rng: np.random.Generator, kind: str, px: int = 32) -> Image.Image:
    """A noisy image of the class's colour with its shape in grey on it."""
    pixels = np.clip(np.array(COLOURS[kind]) + rng.normal(0, 25, (px, px, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    r, (cx, cy) = rng.uniform(5, 9), rng.uniform(10, px - 10, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    draw = ImageDraw.Draw(img)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=(128, 128, 128))
    return img


def image_folder(root: Path, n_train: int = N_TRAIN, n_valid: int = N_VALID, seed: int = 0) -> Path:
    """train/ and valid/ with circle/ and square/ folders, and PLANTED squares filed under train/circle."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for kind in ("circle", "square"):
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                drawn(rng, kind).save(root / split / kind / f"{kind}_{i}.png")
    for i in range(PLANTED):
        drawn(rng, "square").save(root / "train" / "circle" / f"mislabelled_{i}.png")
    return root


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*.png")}
