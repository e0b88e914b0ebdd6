"""Image pairs for restoration (lesson 7, "decrappification"): a degraded input, the original target.

`crappify` is the lesson's: the shorter side shrunk to 96 px (bilinear), a random JPEG quality in
10-70 and that number written on the picture at a random spot of its top-left quarter. The other
degradations are the lesson's other restoration problems and the super-resolution papers' protocol:
  crappify   JPEG artefacts + text + 96 px           (input: the crappy image upsampled)
  bicubic    shrunk by `scale` (2 or 4), bicubic     (input: upsampled back, bicubic; Set5/Set14 protocol)
  grayscale  black and white -> colour
  cutout     random rectangles blanked -> filled in
The degraded copies are made once, in parallel with a progress bar, and cached under
`cache_root("superres", <key>)`; the key hashes the source files (names, sizes, times) and the
settings, so a change of either builds a new cache. Randomness is drawn per file from
(seed, file name): the same seed gives the same JPEG qualities and text spots, in any order.

Items hand over uint8 tensors of the same size; `on_after_batch_transfer` normalises inputs AND
targets with ImageNet statistics (fastai's `normalize(do_y=True)`), so a model and the feature
loss see ImageNet-normalised images. The baseline metrics compare the input itself to the target.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastlight.data.core import cache_root, epoch_loader, seeded
from fastlight.data.images import read_image
from fastlight.data.split import random_split_indices
from fastlight.data.vision import imagenet_denormalize, imagenet_normalize, resolve_path
from fastlight.errors import ConfigError, DataError

DEGRADES = ("crappify", "bicubic", "grayscale", "cutout")
EXTS = {".jpg", ".jpeg", ".png"}
CACHE_VERSION = 1  # bump when a degradation's output changes


def crappify(img: Image.Image, rng: random.Random, lr_size: int = 96, quality=(10, 70)):
    """The lesson's crappify: (JPEG bytes, quality, (x, y) of the text)."""
    img = img.convert("RGB")
    w, h = img.size
    ratio = lr_size / min(w, h)
    img = img.resize((max(1, round(w * ratio)), max(1, round(h * ratio))), Image.BILINEAR)
    q = rng.randint(*quality)
    w, h = img.size
    pos = (rng.randint(0, w // 2), rng.randint(0, h // 2))
    ImageDraw.Draw(img).text(pos, str(q), fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return buf.getvalue(), q, pos


def modcrop(img: Image.Image, scale: int) -> Image.Image:
    """Crop to a multiple of `scale` (the super-resolution papers' HR images)."""
    w, h = img.size
    return img if w % scale == 0 and h % scale == 0 else img.crop((0, 0, w - w % scale, h - h % scale))


def degrade(img: Image.Image, kind: str, rng: random.Random, scale: int = 2, lr_size: int = 96,
            quality=(10, 70), max_holes: int = 4) -> tuple[bytes, str, dict]:
    """One degraded copy: (file bytes, extension, what was drawn)."""
    img = img.convert("RGB")
    if kind == "crappify":
        data, q, pos = crappify(img, rng, lr_size, quality)
        return data, ".jpg", {"quality": q, "pos": list(pos)}
    if kind == "bicubic":
        hr = modcrop(img, scale)
        out = hr.resize((hr.width // scale, hr.height // scale), Image.BICUBIC)
    elif kind == "grayscale":
        out = img.convert("L")
    elif kind == "cutout":
        out = img.copy()
        draw = ImageDraw.Draw(out)
        for _ in range(rng.randint(1, max_holes)):
            hw, hh = (max(1, int(rng.uniform(0.1, 0.3) * s)) for s in img.size)
            x, y = rng.randint(0, img.width - hw), rng.randint(0, img.height - hh)
            draw.rectangle([x, y, x + hw - 1, y + hh - 1], fill=(0, 0, 0))
    else:
        raise ConfigError(f"data.degrade={kind!r} must be one of: {', '.join(DEGRADES)}")
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return buf.getvalue(), ".png", {}


def _degrade_file(job) -> tuple[str, str, dict]:
    """Worker: degrade one source file into the cache (top-level, so processes can run it)."""
    src, rel, dest_dir, settings, seed = job
    data, ext, info = degrade(read_image(src), settings["degrade"], random.Random(f"{seed}:{rel}"),
                              settings["scale"], settings["lr_size"], tuple(settings["quality"]), settings["max_holes"])
    out = Path(dest_dir) / (rel + ext)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return rel, rel + ext, info


def build_pairs(root: Path, files: list[Path], settings: dict, seed: int, workers: int | None = None):
    """(cache folder, manifest) of degraded copies of `files`, built now unless already cached."""
    stats = [(f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    key_src = json.dumps({"source": str(root.resolve()), "files": stats, "settings": settings, "seed": seed,
                          "version": CACHE_VERSION}, sort_keys=True)
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    folder = cache_root("superres", key)
    manifest_file = folder / "manifest.json"
    if manifest_file.is_file():  # written last: its presence means a complete build
        return folder, json.loads(manifest_file.read_text())
    from tqdm import tqdm

    jobs = [(str(f), rel, str(folder / "lr"), settings, seed) for f, (rel, _, _) in zip(files, stats)]
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    desc = f"{settings['degrade']} {len(jobs)} images -> {folder}"
    if workers <= 1:
        done = [_degrade_file(j) for j in tqdm(jobs, desc=desc)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            done = list(tqdm(pool.map(_degrade_file, jobs, chunksize=8), total=len(jobs), desc=desc))
    manifest = {"source": str(root.resolve()), "settings": settings, "seed": seed,
                "items": [{"hr": rel, "lr": lr, **info} for rel, lr, info in done]}
    tmp = manifest_file.with_suffix(".part")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_file)
    return folder, manifest


class PairItems(Dataset):
    """(degraded, target) items -> two uint8 CHW tensors of the target's size, transformed alike.

    An item's sides are paths or PIL images. The input is resized to the target's size (bicubic),
    so a model maps an image to an image of the same size and the input itself is the baseline.
    """

    def __init__(self, items: list, transform=None, scale: int | None = None):
        self.items, self.transform, self.scale = items, transform, scale

    def __len__(self):
        return len(self.items)

    def pair(self, i: int) -> tuple[Image.Image, Image.Image]:
        lr, hr = (s.convert("RGB") if isinstance(s, Image.Image) else read_image(s) for s in self.items[i])
        if self.scale:
            hr = modcrop(hr, self.scale)
        if lr.size != hr.size:
            lr = lr.resize(hr.size, Image.BICUBIC)
        return lr, hr

    def __getitem__(self, key):
        lr, hr = self.pair(key[0] if isinstance(key, tuple) else key)
        x, y = tv_tensors.Image(v2.functional.pil_to_tensor(lr)), tv_tensors.Image(v2.functional.pil_to_tensor(hr))
        if self.transform is not None:
            x, y = seeded(self.transform, key, x, y)  # one draw of the random parameters for both
        return x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)


def pair_transforms(size: int, train: bool, min_scale: float, do_flip: bool):
    if not train:
        return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])
    ts = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True)]  # fastai's max_zoom
    return v2.Compose(ts + ([v2.RandomHorizontalFlip()] if do_flip else []))


class RestorationBase(L.LightningDataModule):
    """What the real and synthetic sources share: loaders, sizes, normalisation."""

    def __init__(self, size: int = 128, batch_size: int = 8, num_workers: int = 2, min_scale: float = 0.25,
                 do_flip: bool = True, seed: int = 42, degrade: str = "crappify", scale: int = 2):
        super().__init__()
        self.size, self.batch_size, self.num_workers = int(size), batch_size, num_workers
        self.min_scale, self.do_flip, self.seed = min_scale, do_flip, seed
        self.degrade, self.scale = degrade, int(scale)
        self.train_ds = self.valid_ds = self.test_ds = None
        self.dims: dict = {"n_out": 3}  # RGB out, whatever the degradation (grey in, colour out)
        self.has_test = False

    def set_size(self, size: int) -> None:
        """Crop size from the next loader on (progressive resizing: 128 px, then 256)."""
        self.size = int(size)
        if self.train_ds is not None:
            self.train_ds.transform = pair_transforms(self.size, True, self.min_scale, self.do_flip)
            self.valid_ds.transform = pair_transforms(self.size, False, self.min_scale, self.do_flip)

    def _loader(self, ds, train: bool, batch_size=None) -> DataLoader:
        return epoch_loader(ds, batch_size or self.batch_size, train, self.seed, self.num_workers)

    def train_dataloader(self):
        return self._loader(self.train_ds, True)

    def val_dataloader(self):
        return self._loader(self.valid_ds, False)

    def test_dataloader(self):
        return self._loader(self.test_ds, False, batch_size=1)  # full images of different sizes

    normalize = staticmethod(imagenet_normalize)
    denormalize = staticmethod(imagenet_denormalize)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.normalize(x), self.normalize(y)


class RestorationData(RestorationBase):
    """Pairs from any folder of images (recursive jpg/png); the default is Oxford-IIIT Pets' images.

    `test_path`: a folder of full-size images (e.g. sr/CSet14) degraded the same way, tested at
    full size (batch size 1). `limit`: use only the first `limit` images (benchmarks).
    """

    def __init__(self, path: str | None = None, root: str | None = None, download: bool = True,
                 valid_pct: float = 0.1, test_path: str | None = None, lr_size: int = 96,
                 quality: tuple[int, int] | list[int] = (10, 70), max_holes: int = 4, workers: int | None = None,
                 limit: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.path, self.root, self.download = path, root, download
        self.valid_pct, self.test_path, self.limit, self.workers = valid_pct, test_path, limit, workers
        self.settings = {"degrade": self.degrade, "scale": self.scale, "lr_size": int(lr_size),
                         "quality": [int(q) for q in quality], "max_holes": int(max_holes)}
        self.has_test = test_path is not None
        self.cache_dir: Path | None = None

    def _check(self) -> None:
        if self.degrade not in DEGRADES:
            raise ConfigError(f"data.degrade={self.degrade!r} must be one of: {', '.join(DEGRADES)}")
        if self.degrade == "bicubic" and self.scale not in (2, 3, 4):
            raise ConfigError(f"data.scale={self.scale} must be 2, 3 or 4 for data.degrade=bicubic")

    def source(self) -> Path:
        if self.path is None:  # the lesson's Pets, through the vision task's download
            from fastlight.data.vision import PetsData

            pets = PetsData(root=self.root, download=self.download)
            pets.prepare_data()
            return pets.folder
        folder = resolve_path(self.path)
        if not folder.is_dir():
            raise DataError(f"data.path={folder} is not a folder; give a folder of jpg/png images")
        return folder

    def files(self, folder: Path) -> list[Path]:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS and p.is_file())
        if not files:
            raise DataError(f"data.path={folder} holds no jpg or png images (searched its subfolders too)")
        return files[: self.limit] if self.limit else files

    def prepare_data(self):
        self._check()
        folder = self.source()
        self.cache_dir, _ = build_pairs(folder, self.files(folder), self.settings, self.seed, self.workers)

    def setup(self, stage: str | None = None):
        if self.train_ds is not None:
            return
        self._check()
        folder = self.source()
        self.cache_dir, manifest = build_pairs(folder, self.files(folder), self.settings, self.seed, self.workers)
        items = [(self.cache_dir / "lr" / it["lr"], folder / it["hr"]) for it in manifest["items"]]
        train_idx, valid_idx = random_split_indices(len(items), self.valid_pct, self.seed)
        train, valid = [items[i] for i in train_idx], [items[i] for i in valid_idx]
        if not train or not valid:
            raise DataError(f"data.path={folder}: {len(items)} images give {len(train)} training and "
                            f"{len(valid)} validation pairs; add images or change data.valid_pct")
        scale = self.scale if self.degrade == "bicubic" else None
        self.train_ds, self.valid_ds = PairItems(train, scale=scale), PairItems(valid, scale=scale)
        if self.test_path is not None:
            self.test_ds = PairItems(self.test_items(resolve_path(self.test_path)), v2.Identity(), scale)
        self.set_size(self.size)

    def test_items(self, folder: Path) -> list:
        """Full-size test images degraded in memory (a handful: Set5, Set14), seeded by name."""
        if not folder.is_dir():
            raise DataError(f"data.test_path={folder} is not a folder of images")
        items = []
        for f in sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTS and p.is_file()):
            hr = read_image(f)
            data, _, _ = degrade(hr, self.degrade, random.Random(f"{self.seed}:{f.name}"), self.scale,
                                 self.settings["lr_size"], tuple(self.settings["quality"]), self.settings["max_holes"])
            items.append((Image.open(io.BytesIO(data)).convert("RGB"), hr))
        return items


class SyntheticRestorationData(RestorationBase):
    """The twin with planted structure: drawn shapes, degraded by a Gaussian blur and noise.

    A model that learns to deblur and denoise beats the input's PSNR; one that learns nothing
    stays at or below it.
    """

    def __init__(self, n_train: int = 256, n_valid: int = 64, image_px: int = 48, blur: float = 1.0,
                 noise: float = 0.08, size: int = 32, batch_size: int = 16, num_workers: int = 0, **kwargs):
        super().__init__(size=size, batch_size=batch_size, num_workers=num_workers, degrade="blur_noise", **kwargs)
        self.n_train, self.n_valid, self.image_px, self.blur, self.noise = n_train, n_valid, image_px, blur, noise

    def make(self, rng: random.Random, nrng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
        from fastlight.data.shapes import KINDS, shapes_image

        hr, _ = shapes_image(rng, self.image_px, rng.sample(KINDS, rng.randint(1, 3)))
        lr = np.asarray(hr.filter(ImageFilter.GaussianBlur(self.blur)), dtype=np.float32)
        lr = lr + nrng.normal(0, 255 * self.noise, lr.shape)
        return Image.fromarray(lr.clip(0, 255).astype(np.uint8)), hr

    def setup(self, stage: str | None = None):
        if self.train_ds is not None:
            return
        rng, nrng = random.Random(self.seed), np.random.default_rng(self.seed)
        items = [self.make(rng, nrng) for _ in range(self.n_train + self.n_valid)]
        self.train_ds, self.valid_ds = PairItems(items[: self.n_train]), PairItems(items[self.n_train:])
        self.set_size(self.size)

