"""Images and their masks for segmentation (lesson 3, CamVid), with a synthetic twin.

A mask is found from its image by a pattern, as fastai's `get_y_fn`:
  `labels/{stem}_P.png`   CamVid as fastai ships it (the default)
  `{split}annot/{name}`   SegNet-style parallel folders: train/ + trainannot/, val/ + valannot/
fields: {stem} (name without suffix), {name}, {suffix}, {split} (the image's folder with `valid=folders`).
Class names come from `codes.txt` (one per line) or a list; the void class, ignored by the
metrics, by name (`Void`) or index. The validation set comes from a list of image names
(`valid.txt`), from `train`/`val` folders (`valid=folders`) or from a seeded random split.
Augmentation moves the mask with the image (nearest-neighbour for the mask): fastai's recipe
(flip; rotation, zoom and warp through one reflection-padded sampling grid, `fastlight.data.augment`) or
torchvision's crops and rotations; masks are checked once in `setup` (size, values) so a bad one is one
sentence.

`batch_size=auto` picks the batch size from memory, as the lesson picks `bs` from free GPU memory,
through Lightning's `BatchSizeFinder` (see `batch_size_callbacks`).
"""

from __future__ import annotations

import hashlib
import random
import tarfile
from pathlib import Path

import lightning as L
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastlight.data.augment import seg_transforms
from fastlight.data.core import data_root, epoch_loader, seeded
from fastlight.data.split import random_split_indices
from fastlight.data.vision import (
    image_files,
    imagenet_denormalize,
    imagenet_normalize,
    resolve_path,
)
from fastlight.errors import ConfigError, DataError

CAMVID_URL = "https://s3.amazonaws.com/fast-ai-imagelocal/camvid.tgz"
CAMVID_CHECK = (598913237, "648371e4f3a833682afb39b08a3ce2aa")  # fastai's check: size, md5 of the first MiB


def void_index(void, codes: list[str]) -> int | None:
    if void is None or isinstance(void, int):
        if isinstance(void, int) and not 0 <= void < len(codes):
            raise ConfigError(f"data.void={void} is not a class index (0..{len(codes) - 1})")
        return void
    if void not in codes:
        raise ConfigError(f"data.void={void!r} is not one of the class names ({', '.join(codes[:8])}, ...)")
    return codes.index(void)


class SegItems(Dataset):
    """(image, mask) items (paths or PIL images) -> (uint8 CHW image, int64 HW mask)."""

    def __init__(self, items: list, transform=None):
        self.items, self.transform = items, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        img, mask = self.items[i]
        try:
            img = img if isinstance(img, Image.Image) else Image.open(img)
            mask = mask if isinstance(mask, Image.Image) else Image.open(mask)
            x, y = tv_tensors.Image(v2.functional.pil_to_tensor(img.convert("RGB"))), np_mask(mask)
        except OSError as e:
            raise DataError(f"{self.items[i][0]} or its mask cannot be read ({e})") from None
        if self.transform is not None:
            x, y = seeded(self.transform, key, x, y)
        return x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor).long()


def np_mask(mask: Image.Image) -> tv_tensors.Mask:
    """Class indices of a single-channel mask (mode L or P: the palette index is the class)."""
    if mask.mode not in ("L", "P", "I", "I;16"):
        mask = mask.convert("L")
    return tv_tensors.Mask(v2.functional.pil_to_tensor(mask)[0].long())


class SegmentationBase(L.LightningDataModule):
    """Loaders, sizes, normalisation and the automatic batch size, for every source."""

    def __init__(self, size=(96, 128), batch_size: int | str = 8, batch_size_fallback: int = 8,
                 batch_size_finder: dict | None = None, num_workers: int = 2, min_scale: float = 0.75,
                 max_rotate: float = 10.0, max_lighting: float = 0.2, do_flip: bool = True, max_zoom: float = 1.0,
                 max_warp: float = 0.0, pad_mode: str = "zeros", seed: int = 42):
        super().__init__()
        self.size = size if isinstance(size, int) else tuple(size)
        if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"data.batch_size={batch_size!r} must be a positive integer or auto")
        self.batch_size, self.batch_size_fallback = batch_size, int(batch_size_fallback)
        self.finder = dict(batch_size_finder or {})
        self.num_workers, self.seed = num_workers, seed
        self.aug = {"min_scale": min_scale, "max_rotate": max_rotate, "max_lighting": max_lighting, "do_flip": do_flip,
                    "max_zoom": max_zoom, "max_warp": max_warp, "pad_mode": pad_mode}
        self.codes: list[str] = []
        self.void: int | None = None
        self.train_ds = self.valid_ds = None
        self.dims: dict = {}

    def set_size(self, size) -> None:
        """Image size from the next loader on (progressive resizing: half size, then full)."""
        self.size = size if isinstance(size, int) else tuple(size)
        if self.train_ds is not None:
            fill = self.void if self.void is not None else 0
            self.train_ds.transform = seg_transforms(self.size, True, fill, **self.aug)
            self.valid_ds.transform = seg_transforms(self.size, False, fill, **self.aug)

    def finish_setup(self, train: list, valid: list) -> None:
        if not train or not valid:
            raise DataError(f"{type(self).__name__}: found {len(train)} training and {len(valid)} validation "
                            "images with masks")
        self.train_ds, self.valid_ds = SegItems(train), SegItems(valid)
        self.dims = {"n_out": len(self.codes)}
        self.set_size(self.size)

    def _loader(self, ds, train: bool) -> DataLoader:
        bs = self.batch_size if isinstance(self.batch_size, int) else self.batch_size_fallback
        return epoch_loader(ds, bs, train, self.seed, self.num_workers)  # resumable: drawn from (seed, epoch)

    def train_dataloader(self):
        return self._loader(self.train_ds, True)

    def val_dataloader(self):
        return self._loader(self.valid_ds, False)

    normalize = staticmethod(imagenet_normalize)
    denormalize = staticmethod(imagenet_denormalize)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.normalize(x), y


def batch_size_callbacks(datamodule, trainer) -> list:
    """`data.batch_size=auto`: Lightning's BatchSizeFinder on a GPU (or with `batch_size_finder.on_cpu`).

    On a CPU, memory rarely runs out before the machine swaps, so the finder would only find
    its maximum: the run keeps `batch_size_fallback` and says so.
    """
    if getattr(datamodule, "batch_size", None) != "auto":
        return []
    opts = dict(getattr(datamodule, "finder", {}))
    on_cpu = opts.pop("on_cpu", False)
    if trainer.accelerator.__class__.__name__ != "CUDAAccelerator" and not on_cpu:
        datamodule.batch_size = datamodule.batch_size_fallback
        print(f"data.batch_size=auto: no GPU to size the batch for; keeping batch size {datamodule.batch_size}")
        return []
    from lightning.pytorch.callbacks import BatchSizeFinder

    class MarkedBatchSizeFinder(BatchSizeFinder):
        """Lets the task know its trials are running (`pl_module.finding_batch_size`)."""

        def scale_batch_size(self, trainer, pl_module) -> None:
            pl_module.finding_batch_size = True
            try:
                super().scale_batch_size(trainer, pl_module)
            finally:
                pl_module.finding_batch_size = False

    opts = {"mode": "binsearch", "init_val": 2, "steps_per_trial": 1, "max_trials": 25, **opts}
    datamodule.batch_size = int(opts["init_val"])  # the finder reads a number before its first trial
    return [MarkedBatchSizeFinder(batch_arg_name="batch_size", **opts)]


class SegmentationData(SegmentationBase):
    """Images + masks in a folder: `images/` + a mask pattern, or train/ + val/ folders."""

    def __init__(self, path: str | None = None, images: str = "images", masks: str = "labels/{stem}_P.png",
                 codes: str | list[str] = "codes.txt", void: str | int | None = "Void", valid: str = "valid.txt",
                 valid_pct: float = 0.2, splits: tuple[str, str] | list[str] = ("train", "val"), **kwargs):
        super().__init__(**kwargs)
        self.path, self.images, self.masks, self.codes_spec, self.void_spec = path, images, masks, codes, void
        self.valid, self.valid_pct, self.splits = valid, valid_pct, list(splits)

    def root(self) -> Path:
        root = resolve_path(self.path)
        if not root.is_dir():
            raise DataError(f"data.path={root} is not a folder of images and masks")
        return root

    def load_codes(self, root: Path) -> list[str]:
        if not isinstance(self.codes_spec, str):
            return [str(c) for c in self.codes_spec]
        f = root / self.codes_spec
        if not f.is_file():
            raise DataError(f"{f} is missing: add it (one class name per line) or give data.codes=[name, ...]")
        return [line.strip() for line in f.read_text().splitlines() if line.strip()]

    def mask_for(self, root: Path, img: Path, split: str = "") -> Path:
        return root / self.masks.format(stem=img.stem, name=img.name, suffix=img.suffix, split=split)

    def pairs(self, root: Path) -> tuple[list, list]:
        """(train, valid) lists of (image, mask) paths."""
        if self.valid == "folders":
            split_dirs = [root / s for s in self.splits]
            missing = [d.name for d in split_dirs if not d.is_dir()]
            if missing:
                raise DataError(f"{root} has no {', '.join(missing)} folder for data.valid=folders "
                                f"(data.splits={self.splits})")
            train, valid = ([(f, self.mask_for(root, f, d.name)) for f in image_files(d)] for d in split_dirs)
            return train, valid
        folder = root / self.images
        files = image_files(folder) if folder.is_dir() else []
        if not files:
            raise DataError(f"{folder} holds no images; set data.images to the folder of images under {root}")
        items = [(f, self.mask_for(root, f)) for f in files]
        if self.valid == "random":
            train_idx, valid_idx = random_split_indices(len(items), self.valid_pct, self.seed)
            return [items[i] for i in train_idx], [items[i] for i in valid_idx]
        names_file = root / self.valid
        if not names_file.is_file():
            raise DataError(f"{names_file} is missing; give data.valid=random or folders, or a list of validation images")
        names = {Path(line.strip()).name for line in names_file.read_text().splitlines() if line.strip()}
        return [it for it in items if it[0].name not in names], [it for it in items if it[0].name in names]

    def check(self, items: list) -> None:
        """Every image opens, every mask exists, has the image's size and only known classes."""
        n = len(self.codes)
        for img, mask in items:
            if not mask.is_file():
                raise DataError(f"no mask for {img}: expected {mask} (data.masks={self.masks!r})")
            try:
                with Image.open(img) as im, Image.open(mask) as m:
                    im_size, m_size = im.size, m.size
                    lo, hi = np_mask(m).aminmax()
            except OSError as e:
                raise DataError(f"{img} or {mask} cannot be read as an image ({e}); remove or replace it") from None
            if im_size != m_size:
                raise DataError(f"{mask} is {m_size[0]}x{m_size[1]} but its image {img.name} is "
                                f"{im_size[0]}x{im_size[1]}; masks must match their images")
            if int(lo) < 0 or int(hi) >= n:
                raise DataError(f"{mask} has class value {int(hi)} but there are only {n} classes "
                                f"(0..{n - 1} from data.codes)")

    def setup(self, stage: str | None = None):
        if self.train_ds is not None:
            return
        root = self.root()
        self.codes = self.load_codes(root)
        self.void = void_index(self.void_spec, self.codes)
        train, valid = self.pairs(root)
        self.check(train + valid)
        self.finish_setup(train, valid)


class CamVidData(SegmentationData):
    """The lesson's full CamVid (701 images, 32 classes), downloaded into <data root>/camvid."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        self.home = data_root(root).absolute() / "camvid"
        super().__init__(path=str(self.home), **kwargs)
        self.download = download

    def prepare_data(self):
        if (self.home / "images").is_dir() and (self.home / "codes.txt").is_file():
            return
        from fastlight.data.download import Remote, fetch

        how = f"download {CAMVID_URL} and extract it into {self.home.parent}"
        paths = fetch(self.home.parent, [Remote("camvid.tgz", (CAMVID_URL,))], "CamVid", how, self.download)
        archive = paths["camvid.tgz"]
        with open(archive, "rb") as f:
            head = hashlib.md5(f.read(1 << 20)).hexdigest()
        if (archive.stat().st_size, head) != CAMVID_CHECK:
            archive.unlink()
            raise DataError(f"CamVid: the download {archive} failed its checksum and was deleted; run again, or {how}")
        with tarfile.open(archive) as tar:
            tar.extractall(self.home.parent, filter="data")


class SyntheticSegmentationData(SegmentationBase):
    """The twin with planted structure: shapes on a dark background, each pixel labelled by its shape
    (each kind drawn in its own hue, jittered), and a 2-pixel void frame that the metrics must ignore."""

    CODES = ("background", "circle", "square", "triangle", "cross", "Void")
    COLOURS = ((230, 80, 80), (80, 220, 80), (90, 110, 240), (230, 220, 90))  # a hue per kind, jittered

    def __init__(self, n_train: int = 256, n_valid: int = 64, image_px: int = 32, size=32, batch_size=16,
                 num_workers: int = 0, **kwargs):
        super().__init__(size=size, batch_size=batch_size, num_workers=num_workers, **kwargs)
        self.n_train, self.n_valid, self.image_px = n_train, n_valid, image_px

    def item(self, rng: random.Random) -> tuple[Image.Image, Image.Image]:
        from fastlight.data.shapes import KINDS, draw_shape

        px = self.image_px
        img = Image.new("RGB", (px, px), tuple(rng.randint(0, 90) for _ in range(3)))
        mask = Image.new("L", (px, px), 0)
        for kind in rng.sample(KINDS, rng.randint(1, 2)):
            r = rng.uniform(0.15, 0.28) * px
            cx, cy = (rng.uniform(r, px - r) for _ in range(2))
            base = self.COLOURS[KINDS.index(kind)]
            draw_shape(ImageDraw.Draw(img), kind, cx, cy, r, tuple(min(255, c + rng.randint(-40, 40)) for c in base))
            draw_shape(ImageDraw.Draw(mask), kind, cx, cy, r, KINDS.index(kind) + 1)
        ImageDraw.Draw(mask).rectangle([0, 0, px - 1, px - 1], outline=len(self.CODES) - 1, width=2)
        return img, mask

    def setup(self, stage: str | None = None):
        if self.train_ds is not None:
            return
        self.codes, self.void = list(self.CODES), len(self.CODES) - 1
        rng = random.Random(self.seed)
        items = [self.item(rng) for _ in range(self.n_train + self.n_valid)]
        self.finish_setup(items[: self.n_train], items[self.n_train:])
