"""MNIST as flat 784-float vectors in [0, 1], as lesson 5 uses it, held in memory.

Read from the original idx `.gz` files (60,000 train + 10,000 test); the validation set is a
seeded random `valid_size` rows of the training files, the test set is the official one.
`SyntheticDigits` is the twin for tests: each class is a fixed random pixel pattern plus noise.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import lightning as L
import numpy as np
import torch

from fastlight.data.core import TensorBatches, data_root
from fastlight.data.download import Remote, fetch
from fastlight.data.split import random_split_indices
from fastlight.errors import DataError

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (images: magic 2051, labels: 2049) as a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            magic, n = struct.unpack(">II", f.read(8))
            if magic == 2051:
                rows, cols = struct.unpack(">II", f.read(8))
                shape = (n, rows, cols)
            elif magic == 2049:
                shape = (n,)
            else:
                raise ValueError(f"bad magic number {magic}")
            data = np.frombuffer(f.read(), dtype=np.uint8)
        return data.reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise DataError(f"{path} is not a valid MNIST idx.gz file ({e}); delete it to download it again") from None


class FlatImageData(L.LightningDataModule):
    """Train/valid/test tensors of flat images in memory, batched by `TensorBatches`."""

    def __init__(
        self, valid_size: int, batch_size: int = 64, steps_per_call: int = 16, eval_batch_size: int = 1024, seed: int = 42
    ):
        super().__init__()
        self.valid_size = valid_size
        self.batch_size, self.steps_per_call = batch_size, steps_per_call
        self.eval_batch_size, self.seed = eval_batch_size, seed
        self.train = self.valid = self.test = None
        self.dims = {"n_in": 784, "n_out": 10}

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_train, y_train, x_test, y_test): x float in [0, 1] of shape (n, 784), y int64."""
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if self.train is not None:
            return
        x, y, x_test, y_test = self.load()
        self.train, self.valid = self.split(x, y, self.valid_size)
        self.test = (x_test, y_test)

    def split(self, x: torch.Tensor, y: torch.Tensor, n_valid: int):
        t, v = (torch.from_numpy(i) for i in random_split_indices(len(x), seed=self.seed, n_valid=n_valid))
        return (x[t], y[t]), (x[v], y[v])

    def train_dataloader(self):
        return TensorBatches(
            self.train, self.batch_size, shuffle=True, seed=self.seed,
            steps_per_call=self.steps_per_call, trainer=self.trainer,
        )

    def val_dataloader(self):
        return TensorBatches(self.valid, self.eval_batch_size, trainer=self.trainer)

    def test_dataloader(self):
        return TensorBatches(self.test, self.eval_batch_size, trainer=self.trainer)


class MNISTData(FlatImageData):
    def __init__(self, root: str | None = None, valid_size: int = 10_000, download: bool = True, **kwargs):
        super().__init__(valid_size=valid_size, **kwargs)
        self.folder = data_root(root) / "mnist"
        self.download = download

    def prepare_data(self):
        fetch(
            self.folder,
            [Remote(name, tuple(m + name for m in MIRRORS), md5) for name, md5 in FILES.items()],
            dataset="MNIST",
            how_to="put the four original idx .gz files there, or set FASTLIGHT_DATA to a folder that has mnist/",
            download=self.download,
        )

    def load(self):
        def images(name):
            return torch.from_numpy(read_idx(self.folder / name).reshape(-1, 784).astype(np.float32) / 255.0)

        def labels(name):
            return torch.from_numpy(read_idx(self.folder / name).astype(np.int64))

        return (
            images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"),
        )


class SyntheticDigits(FlatImageData):
    """Planted structure: class c is pattern_c + noise, so a linear model can reach ~100%."""

    def __init__(self, n_train: int = 3000, n_test: int = 1000, valid_size: int = 1000, noise: float = 0.3, **kwargs):
        super().__init__(valid_size=valid_size, **kwargs)
        self.n_train, self.n_test, self.noise = n_train, n_test, noise

    def load(self):
        g = torch.Generator().manual_seed(self.seed)
        patterns = (torch.rand(10, 784, generator=g) > 0.8).float()

        def draw(n):
            y = torch.randint(0, 10, (n,), generator=g)
            x = (patterns[y] + self.noise * torch.randn(n, 784, generator=g)).clamp(0, 1)
            return x, y

        return (*draw(self.n_train), *draw(self.n_test))
