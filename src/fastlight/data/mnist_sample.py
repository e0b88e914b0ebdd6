"""The 3s and 7s of fastbook chapter 4 as flat 784-float vectors in [0, 1], held in memory.

Three real sources give the same tensors, and a synthetic twin stands in for them in tests:
  DigitFolders   fastai's png layout `train/3`, `train/7`, `valid/3`, `valid/7` (MNIST_SAMPLE, the
                 chapter's data, or MNIST_TINY), downloaded with fastai's checksum if absent
  MnistDigits    the original MNIST idx files filtered to any set of digits: the training files'
                 images for training, the test files' for validation. With digits [3, 7] this is
                 exactly MNIST_SAMPLE's content (6,131 + 6,265 training, 1,010 + 1,028 validation)
  SyntheticMeans planted structure: each digit is a fixed random mean image plus noise

Labels are positions in `digits`: with digits [3, 7] a 3 is 0 and a 7 is 1. There is no test set
(MNIST_SAMPLE has none). The chapter's DataLoader does not shuffle, so its batches are 3s, then 7s;
`shuffle: false` reproduces that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from fastlight.data.core import TensorBatches, data_root
from fastlight.data.download import Remote, fetch
from fastlight.data.images import read_image
from fastlight.data.mnist import FILES, MIRRORS, read_idx
from fastlight.errors import ConfigError, DataError

# fastai's archives and its own check of them: (size in bytes, md5 of the first MiB), as
# fastai.data.download_checks lists them. fastai publishes no md5 of the whole file.
MIRRORS_FASTAI = ("https://s3.amazonaws.com/fast-ai-sample/", "https://files.fast.ai/data/examples/")
ARCHIVES = {
    "mnist_sample": (3214948, "2dbc7ec6f9259b583af0072c55816a88"),
    "mnist_tiny": (342207, "56143e8f24db90d925d82a5a74141875"),
}


def check_digits(digits: Sequence[int]) -> list[int]:
    try:
        out = [int(d) for d in digits]
    except (TypeError, ValueError):
        out = None
    if out is None or any(not 0 <= d <= 9 for d in out) or len(set(out)) != len(out) or len(out) < 2:
        raise ConfigError(f"data.digits={list(digits) if out else digits} must be two or more different digits 0-9")
    return out


def fastai_check(path: Path) -> tuple[int, str]:
    """fastai's fingerprint of an archive: its size and the md5 of its first MiB."""
    with open(path, "rb") as f:
        return os.path.getsize(path), hashlib.md5(f.read(1 << 20)).hexdigest()


class DigitsData(L.LightningDataModule):
    """Train/valid tensors of flat images in memory, batched by `TensorBatches`. A subclass implements `load`."""

    def __init__(self, digits: Sequence[int] = (3, 7), batch_size: int = 256, eval_batch_size: int = 1024,
                 shuffle: bool = True, seed: int = 42):
        super().__init__()
        self.digits = check_digits(digits)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.seed = shuffle, seed
        self.train = self.valid = None
        self.dims = {"n_in": 784, "digits": list(self.digits)}

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_train, y_train, x_valid, y_valid): x float32 (n, 784) in [0, 1], y int64 positions in `digits`."""
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if self.train is None:
            x, y, xv, yv = self.load()
            self.train, self.valid = (x, y), (xv, yv)

    def train_dataloader(self):
        return TensorBatches(self.train, self.batch_size, shuffle=self.shuffle, seed=self.seed, trainer=self.trainer)

    def val_dataloader(self):
        return TensorBatches(self.valid, self.eval_batch_size, trainer=self.trainer)


class DigitFolders(DigitsData):
    """fastai's MNIST_SAMPLE / MNIST_TINY layout: `<split>/<digit>/*.png`, 28x28 greyscale.

    `path` null: `<data root>/<name>`, downloaded from fastai's bucket when absent. A given `path`
    is used as it is and never downloaded into.
    """

    def __init__(self, name: str = "mnist_sample", path: str | None = None, root: str | None = None,
                 download: bool = True, train: str = "train", valid: str = "valid", **kwargs):
        super().__init__(**kwargs)
        if path is None and name not in ARCHIVES:
            raise ConfigError(
                f"data.name={name!r} has no download; choose one of {', '.join(ARCHIVES)} or give data.path")
        self.name, self.explicit = name, path is not None
        self.folder = Path(path).expanduser() if path is not None else data_root(root) / name
        self.download, self.splits = download, (train, valid)

    def prepare_data(self):
        if (self.folder / self.splits[0]).is_dir() or self.explicit:
            return  # a given path is checked, folder by folder, when it is read
        size, md5 = ARCHIVES[self.name]
        archive = f"{self.name}.tgz"
        remote = Remote(archive, tuple(m + archive for m in MIRRORS_FASTAI), None)  # checked below, fastai's way
        paths = fetch(self.folder, [remote], dataset=self.name.upper(),
                      how_to=f"put fastai's {archive} (or its extracted train/ and valid/ folders) there",
                      download=self.download)
        got = fastai_check(paths[archive])
        if got != (size, md5):
            raise DataError(f"{paths[archive]} is not fastai's {archive} (size {got[0]}, first-MiB md5 {got[1]}; "
                            f"expected {size}, {md5}); delete it to download it again")
        extract_tgz(paths[archive], self.folder, f"{self.name}/")

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for label, digit in enumerate(self.digits):
            folder = self.folder / split / str(digit)
            files = sorted(folder.glob("*.png")) if folder.is_dir() else []
            if not files:
                raise DataError(f"{folder} has no png images: data.path must hold {split}/<digit>/*.png for every "
                                f"digit in data.digits={self.digits} (fastai's MNIST_SAMPLE layout)")
            for f in files:
                a = np.asarray(read_image(f, "L"), dtype=np.uint8)
                if a.shape != (28, 28):
                    raise DataError(f"{f} is {a.shape[1]}x{a.shape[0]} pixels; the chapter's models take 28x28 digits")
                images.append(a)
            labels += [label] * len(files)
        x = torch.from_numpy(np.stack(images).reshape(-1, 784).astype(np.float32) / 255.0)
        return x, torch.tensor(labels, dtype=torch.int64)

    def load(self):
        if not self.folder.is_dir():
            raise DataError(f"data.path={self.folder} is not a folder; give one with train/3, train/7, valid/3, valid/7")
        return (*self._read(self.splits[0]), *self._read(self.splits[1]))


def extract_tgz(archive: Path, dest: Path, prefix: str) -> None:
    """Extract the members of `archive` under `prefix` into `dest`, via a temp folder so a failure
    leaves no half tree behind."""
    tmp = Path(tempfile.mkdtemp(dir=dest, prefix=".extract.", suffix=".part"))
    try:
        with tarfile.open(archive, "r:gz") as tf:
            tf.extractall(tmp, filter="data")  # "data": no absolute paths, links or devices
        src = tmp / prefix.strip("/")
        if not src.is_dir():
            raise DataError(f"{archive} has no {prefix} folder; delete it to download it again")
        for item in src.iterdir():
            target = dest / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{archive} cannot be extracted ({e}); delete it to download it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class MnistDigits(DigitsData):
    """The original MNIST idx files under `<data root>/mnist`, keeping only `digits`."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.folder = data_root(root) / "mnist"
        self.download = download

    def prepare_data(self):
        fetch(self.folder, [Remote(name, tuple(m + name for m in MIRRORS), md5) for name, md5 in FILES.items()],
              dataset="MNIST", how_to="put the four original idx .gz files there, or set FASTLIGHT_DATA to a folder "
              "that has mnist/", download=self.download)

    def _read(self, images: str, labels: str) -> tuple[torch.Tensor, torch.Tensor]:
        x = read_idx(self.folder / images).reshape(-1, 784)
        digit = torch.from_numpy(read_idx(self.folder / labels).astype(np.int64))
        keep = torch.isin(digit, torch.tensor(self.digits))
        position = torch.full((10,), -1, dtype=torch.int64)
        position[torch.tensor(self.digits)] = torch.arange(len(self.digits))
        x = torch.from_numpy(x[keep.numpy()].astype(np.float32) / 255.0)
        return x, position[digit[keep]]

    def load(self):
        return (*self._read("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                *self._read("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


class SyntheticMeans(DigitsData):
    """Planted structure: digit k is `means[k] + noise`, clipped to [0, 1]; `means` are random
    sparse "strokes", so the mean images and the nearest-mean rule are known in advance."""

    def __init__(self, n_train: int = 1000, n_valid: int = 400, noise: float = 0.3, ink: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.n_train, self.n_valid, self.noise, self.ink = n_train, n_valid, noise, ink
        g = torch.Generator().manual_seed(self.seed)
        self.means = (torch.rand(len(self.digits), 784, generator=g) < ink).float()
        self._g = g

    def _draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, len(self.digits), (n,), generator=self._g)
        x = (self.means[y] + self.noise * torch.randn(n, 784, generator=self._g)).clamp(0, 1)
        return x, y

    def load(self):
        return (*self._draw(self.n_train), *self._draw(self.n_valid))
