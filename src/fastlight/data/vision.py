"""Images for the vision task: an ImageFolder layout, Oxford-IIIT Pets, a multi-label CSV (the planet
lesson), a points CSV (regression), and synthetic shapes, the twin with planted structure.

Every source gives (image, target) items; this module turns them into loaders the same way:
training images get augmentation in the spirit of fastai's `aug_transforms` (random resized crop,
flip, small rotation, lighting), validation images a resize and centre crop, all at `size` px.
Workers hand over uint8 tensors; `on_after_batch_transfer` turns them into ImageNet-normalised
floats on the device (fastai's `IntToFloatTensor` + `Normalize` batch transforms). `set_size`
changes the size between epochs, which is how a stage does progressive resizing (64 px, then 128).

The three problem types (`problem`) and their targets:
  single_label  a class index              (ImageFolder, Pets, shapes)
  multi_label   a multi-hot float vector   (CSV of space-separated tags, shapes)
  regression    floats; points are (x, y) pairs moved with the image and scaled to [-1, 1]
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from fastlight.data.core import data_root, epoch_loader, seeded
from fastlight.data.images import read_image
from fastlight.data.split import random_split_indices
from fastlight.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0-255) images -> ImageNet-normalised floats, on the batch's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


def imagenet_denormalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised -> [0, 1], clamped."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() * std + mean).clamp(0, 1)
PROBLEMS = ("single_label", "multi_label", "regression")
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def train_transform(size, min_scale=0.75, max_rotate=10.0, max_lighting=0.2, do_flip=True, crop=True) -> v2.Compose:
    """fastai-style augmentation; `crop=False` squishes instead (points must stay in the picture)."""
    ts = [v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True) if crop else v2.Resize((size, size))]
    if do_flip:
        ts.append(v2.RandomHorizontalFlip())
    if max_rotate:
        ts.append(v2.RandomApply([v2.RandomRotation(max_rotate)], p=0.75))
    if max_lighting:
        ts.append(v2.RandomApply([v2.ColorJitter(brightness=max_lighting, contrast=max_lighting)], p=0.75))
    return v2.Compose([*ts, v2.ToImage()])


def valid_transform(size, crop=True) -> v2.Compose:
    resize = [v2.Resize(size), v2.CenterCrop(size)] if crop else [v2.Resize((size, size))]
    return v2.Compose([*resize, v2.ToImage()])


class ImageItems(Dataset):
    """(image or path, target) items -> (uint8 CHW tensor, target tensor)."""

    def __init__(self, items: list, problem: str, n_out: int, transform, draft: int | None = None, points=False):
        self.items, self.problem, self.n_out = items, problem, n_out
        self.transform, self.draft, self.points = transform, draft, points

    def __len__(self):
        return len(self.items)

    def load(self, i: int) -> Image.Image:
        src = self.items[i][0]
        if isinstance(src, Image.Image):
            return src
        return read_image(src, draft=self.draft)

    def __getitem__(self, key):
        # key: an index, or (index, item seed) from a training EpochSampler: seeded crops and flips
        i = key[0] if isinstance(key, tuple) else key
        img, y = self.load(i), self.items[i][1]
        if self.points:  # (x, y) pixel pairs move with the image, then scale to [-1, 1]
            w, h = img.size
            kp = tv_tensors.KeyPoints(torch.tensor(y, dtype=torch.float32).view(-1, 2), canvas_size=(h, w))
            img, kp = seeded(self.transform, key, img, kp)
            side = torch.tensor(kp.canvas_size[::-1], dtype=torch.float32)  # (w, h)
            return img.as_subclass(torch.Tensor), (kp.as_subclass(torch.Tensor) / side * 2 - 1).flatten()
        img = seeded(self.transform, key, img).as_subclass(torch.Tensor)
        if self.problem == "single_label":
            return img, torch.tensor(y, dtype=torch.long)
        if self.problem == "multi_label":
            target = torch.zeros(self.n_out)
            target[list(y)] = 1.0
            return img, target
        return img, torch.tensor(y, dtype=torch.float32)


def split_items(items: list, valid_pct: float, seed: int) -> tuple[list, list]:
    """A seeded random split, as fastai's RandomSplitter(valid_pct, seed)."""
    train, valid = random_split_indices(len(items), valid_pct, seed)
    return [items[i] for i in train], [items[i] for i in valid]


class ImageData(L.LightningDataModule):
    """What every image source shares. A subclass implements `load_items`."""

    problems = PROBLEMS  # the problem types a source can give
    points = False

    def __init__(self, problem: str = "single_label", size: int = 224, batch_size: int = 64, num_workers: int = 2,
                 min_scale: float = 0.75, max_rotate: float = 10.0, max_lighting: float = 0.2, do_flip: bool = True,
                 seed: int = 42):
        super().__init__()
        self.problem, self.size, self.batch_size, self.num_workers = problem, int(size), batch_size, num_workers
        self.aug = {"min_scale": min_scale, "max_rotate": max_rotate, "max_lighting": max_lighting, "do_flip": do_flip}
        self.seed = seed
        self.classes: list[str] = []
        self.train_ds = self.valid_ds = self.test_ds = None
        self.dims: dict = {}

    def load_items(self) -> tuple[list, list, list | None, list[str]]:
        """(train, valid, test or None, classes); items are (image or path, target)."""
        raise NotImplementedError

    def n_out(self, train: list) -> int:
        return len(self.classes) if self.problem != "regression" else len(train[0][1])

    def setup(self, stage: str | None = None):
        if self.train_ds is not None:
            return
        if self.problem not in self.problems:  # checked here, not in __init__: Hydra would wrap the error
            raise ConfigError(f"data.problem={self.problem!r}: this data gives {' or '.join(self.problems)} targets")
        train, valid, test, self.classes = self.load_items()
        if not train or not valid:
            raise DataError(f"{type(self).__name__}: found {len(train)} training and {len(valid)} validation images")
        n_out = self.n_out(train)
        self.train_ds, self.valid_ds = ImageItems(train, self.problem, n_out, None, points=self.points), \
            ImageItems(valid, self.problem, n_out, None, points=self.points)
        self.test_ds = ImageItems(test, self.problem, n_out, None, points=self.points) if test else None
        self.set_size(self.size)
        self.dims = {"n_out": n_out}

    def set_size(self, size: int) -> None:
        """Image size from the next loader on; workers are not persistent, so each epoch sees it."""
        self.size = int(size)
        if self.train_ds is None:
            return
        crop = not self.points
        self.train_ds.transform = train_transform(self.size, crop=crop, **self.aug)
        self.train_ds.draft = math.ceil(self.size / math.sqrt(self.aug["min_scale"]))
        for ds in (self.valid_ds, self.test_ds):
            if ds is not None:
                ds.transform, ds.draft = valid_transform(self.size, crop=crop), self.size

    def _loader(self, ds, train: bool) -> DataLoader:
        # Training order and crops drawn from (seed, epoch), so a resumed run, mid-epoch included,
        # sees the batches an unbroken one would; fastai drops the last partial batch too.
        return epoch_loader(ds, self.batch_size, train, self.seed, self.num_workers, self.trainer)

    def train_dataloader(self):
        return self._loader(self.train_ds, train=True)

    def val_dataloader(self):
        return self._loader(self.valid_ds, train=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return imagenet_normalize(x)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        return self.normalize(x), y


# --- sources ---------------------------------------------------------------------------------------
class ImageFolderData(ImageData):
    """`train/<class>/*`, `valid/<class>/*` (or `val/`), optional `test/` as in torchvision's ImageFolder."""

    problems = ("single_label",)

    def __init__(self, path: str, train: str = "train", valid: str | None = None, test: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.path = path
        self.train_dir, self.valid_dir, self.test_dir = train, valid, test
        self.unlabelled_test: list[Path] = []

    def prepare_data(self):
        self._folders()

    def _folders(self) -> tuple[Path, Path, Path | None]:
        root = resolve_path(self.path)
        if not root.is_dir():
            raise DataError(f"data.path={root} is not a folder; give an ImageFolder layout "
                            "(train/<class>/..., valid/<class>/... or val/<class>/...)")
        train = root / self.train_dir
        names = [self.valid_dir] if self.valid_dir else ["valid", "val"]
        valid = next((root / n for n in names if (root / n).is_dir()), None)
        if not train.is_dir() or valid is None:
            found = ", ".join(sorted(p.name for p in root.iterdir() if p.is_dir())) or "no folders"
            raise DataError(f"{root} needs {self.train_dir}/ and {' or '.join(n + '/' for n in names)} with "
                            f"one folder per class (found: {found}); set data.train / data.valid to their names")
        test = root / (self.test_dir or "test")
        return train, valid, test if test.is_dir() else None

    def load_items(self):
        train_dir, valid_dir, test_dir = self._folders()
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        index = {c: i for i, c in enumerate(classes)}

        def labelled(folder: Path) -> list:
            return [(f, index[f.parent.name]) for c in classes if (folder / c).is_dir() for f in image_files(folder / c)]

        test = labelled(test_dir) if test_dir and has_class_folders(test_dir, classes) else None
        self.unlabelled_test = image_files(test_dir) if test_dir and test is None else []
        return labelled(train_dir), labelled(valid_dir), test, classes


class LabelledTestFolderData(ImageFolderData):
    """An ImageFolder layout whose `test/` has class folders too: the run also reports test metrics."""

    def test_dataloader(self):
        return self._loader(self.test_ds, train=False)


def has_class_folders(folder: Path, classes: list[str]) -> bool:
    return any((folder / c).is_dir() for c in classes)


def resolve_path(path: str | None) -> Path:
    """`path` as given, or inside the data root ($FASTLIGHT_DATA) when it is relative and not here."""
    if not path:
        raise ConfigError("data.path is not set; give the folder of your images, e.g. data.path=/data/my_images")
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() or not (data_root() / p).exists() else data_root() / p


def image_folder(path: str, train: str = "train", test: str | None = None, **kwargs) -> ImageFolderData:
    """The data module for an ImageFolder layout; with a labelled `test/`, one that also tests.

    (Two classes because Lightning and the run decide whether to test from the class's methods.)
    """
    if not path:
        return ImageFolderData(path=path, train=train, test=test, **kwargs)  # prepare_data says what is missing
    root = resolve_path(path)
    classes = [p.name for p in (root / train).iterdir() if p.is_dir()] if (root / train).is_dir() else []
    labelled = has_class_folders(root / (test or "test"), classes)
    return (LabelledTestFolderData if labelled else ImageFolderData)(path=path, train=train, test=test, **kwargs)


class PetsData(ImageData):
    """Oxford-IIIT Pets (37 breeds, 7,390 photos) via torchvision's download; labels from file names.

    As in fastai's lesson: every `images/*.jpg`, labelled by the name before the last `_<n>.jpg`,
    a seeded random 20% held out for validation (RandomSplitter(valid_pct=0.2, seed=42)).
    """

    problems = ("single_label",)

    def __init__(self, root: str | None = None, valid_pct: float = 0.2, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root = data_root(root).absolute()
        self.folder = self.root / "oxford-iiit-pet" / "images"  # where torchvision puts them
        self.valid_pct, self.download = valid_pct, download

    def prepare_data(self):
        if any(self.folder.glob("*.jpg")):
            return
        how = (f"put the extracted images/ folder of the Oxford-IIIT Pet dataset in {self.folder.parent}, "
               "or train on your own images with data=folder data.path=<dir>")
        if not self.download:
            raise DataError(f"Oxford-IIIT Pets: no images in {self.folder} and downloading is off; {how}.")
        import socket

        from torchvision.datasets import OxfordIIITPet

        old = socket.getdefaulttimeout()
        new_folders = [d for d in (self.folder.parent, self.root) if not d.exists()]
        socket.setdefaulttimeout(30)  # torchvision's download has no timeout of its own
        try:
            OxfordIIITPet(str(self.root), download=True)
        except (OSError, RuntimeError) as e:  # no network, HTTP error, checksum mismatch
            for d in new_folders:  # leave no empty folders behind
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
            why = str(getattr(e, "reason", None) or e).splitlines()[0]
            raise DataError(f"Oxford-IIIT Pets: no images in {self.folder} and the download failed ({why}); "
                            f"connect to the internet and run again, or {how}.") from None
        finally:
            socket.setdefaulttimeout(old)

    def load_items(self):
        pattern = re.compile(r"^(.+)_\d+\.jpg$")
        files = [(f, m.group(1)) for f in sorted(self.folder.glob("*.jpg")) if (m := pattern.match(f.name))]
        classes = sorted({label for _, label in files})
        index = {c: i for i, c in enumerate(classes)}
        train, valid = split_items([(f, index[label]) for f, label in files], self.valid_pct, self.seed)
        return train, valid, None, classes
