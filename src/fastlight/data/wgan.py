"""Real images for the WGAN (lesson7-wgan): MNIST, any image folder, CIFAR-10, and two synthetic twins.

The GAN only needs real samples: images are resized once to `size` px and held in memory as
uint8 (60,000 MNIST digits at 32 px are 61 MB); batches are sliced from them and scaled to [-1, 1]
on the device (the lesson's normalisation with mean 0.5, std 0.5). The validation set is real
images too: the task scores its samples against them each epoch (see `quality`).

    MnistGan        MNIST's 60,000 training digits; test digits for the quality numbers
    FolderGan       every image under a folder (recursively), centre-cropped squares
    Cifar10Gan      CIFAR-10 through torchvision's download
    SyntheticBlobs  8x8-ish images of one bright square at a random place (pipeline tests)
    Mixture2D       points from a ring of Gaussians (the learning test: are all modes covered?)
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from fastlight.data.core import TensorBatches, data_root
from fastlight.errors import ConfigError, DataError


class GanData(L.LightningDataModule):
    """Train/valid tensors held in memory; `to_model` maps a transferred batch to the model's space."""

    has_test = False  # a GAN has no test metric; the run skips trainer.test
    qualities: tuple[str, ...] = ("none",)  # the quality numbers this data can give (data.quality)

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 500, seed: int = 42, quality: str = "none"):
        super().__init__()
        if quality not in self.qualities:
            raise ConfigError(f"data.quality={quality!r} must be one of: {', '.join(self.qualities)}")
        self.quality_kind = quality
        self.batch_size, self.eval_batch_size, self.seed = int(batch_size), int(eval_batch_size), seed
        self.train = self.valid = None
        self.dims: dict = {}

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None):
        if self.train is None:
            self.train, self.valid = self.load()

    def train_dataloader(self):
        # drop_last: a last batch of 3 images would give the critic a noisy, BN-unfriendly step
        # the trainer gives the epoch (seeded order, so a resumed run sees the same batches) and the DDP rank
        return TensorBatches((self.train,), self.batch_size, shuffle=True, seed=self.seed, drop_last=True,
                             trainer=self.trainer)

    def val_dataloader(self):
        return TensorBatches((self.valid,), self.eval_batch_size)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.to_model(batch[0])

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def quality(self, samples: torch.Tensor) -> dict[str, float]:
        """Quality numbers for generated samples (model space); {} when the data has none."""
        return {}

    def reference_quality(self) -> dict[str, float]:
        """The same numbers for real data: what a perfect generator would score."""
        return {}


class ImageGanData(GanData):
    """Images stored as uint8 (n, c, size, size); the model sees floats in [-1, 1]."""

    def __init__(self, size: int = 32, n_channels: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        self.dims = {"size": self.size, "n_channels": int(n_channels)}  # known before loading: load_run

    def to_model(self, x):
        return x.float().div_(127.5).sub_(1.0)

    def resized(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (n, c, h, w) -> uint8 (n, c, size, size): bilinear with antialiasing, in chunks."""
        if images.shape[-1] == self.size and images.shape[-2] == self.size:
            return images.contiguous()
        out = [
            F.interpolate(images[i : i + 4096].float(), size=(self.size, self.size), mode="bilinear",
                          antialias=True, align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
            for i in range(0, len(images), 4096)
        ]
        return torch.cat(out)


class MnistGan(ImageGanData):
    """MNIST digits; `quality: fid` scores samples with the cached MNIST judge (fid, confident, entropy)."""

    qualities = ("fid", "none")  # fid: scored by the MNIST judge; none: skip it (faster)

    def __init__(self, root: str | None = None, download: bool = True, quality: str = "fid",
                 n_quality: int = 1000, **kwargs):
        super().__init__(n_channels=1, quality=quality, **kwargs)
        from fastlight.data.mnist import MNISTData

        self.source = MNISTData(root=root, download=download)
        self.use_quality, self.n_quality = quality == "fid", int(n_quality)
        self.judge = None

    def prepare_data(self):
        self.source.prepare_data()

    def _read(self, split: str):
        from fastlight.data.mnist import read_idx

        prefix = "train" if split == "train" else "t10k"
        x = torch.from_numpy(read_idx(self.source.folder / f"{prefix}-images-idx3-ubyte.gz").copy())
        y = torch.from_numpy(read_idx(self.source.folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
        return x[:, None], y

    def load(self):
        (x, y), (xt, yt) = self._read("train"), self._read("test")
        self._labelled = (x, y, xt, yt)
        return self.resized(x), self.resized(xt)

    def setup(self, stage: str | None = None):
        super().setup(stage)
        if self.use_quality:
            self._get_judge()  # trained (once, cached) here: validation runs in inference mode

    def _get_judge(self):
        if self.judge is None:
            from fastlight.interpret.gan_quality import MnistJudge, cached_classifier

            x, y, xt, yt = self._labelled
            clf, acc = cached_classifier(x, y, xt, yt)
            g = torch.Generator().manual_seed(self.seed)
            holdout = self.train[torch.randperm(len(self.train), generator=g)[: self.n_quality]]
            self.judge = MnistJudge(clf, acc, self.to_model(self.valid), self.to_model(holdout))
        return self.judge

    def quality(self, samples):
        return self._get_judge().score(samples) if self.use_quality else {}

    def reference_quality(self):
        if not self.use_quality:
            return {}
        judge = self._get_judge()
        return {**judge.reference(), "judge_test_acc": judge.test_acc}


class FolderGan(ImageGanData):
    """Every image under `path`, centre-cropped to a square and resized; `valid_pct` held out."""

    def __init__(self, path: str | None = None, valid_pct: float = 0.05, channels: int = 3, **kwargs):
        super().__init__(n_channels=channels, **kwargs)
        self.path, self.valid_pct, self.channels = path, valid_pct, int(channels)

    def prepare_data(self):
        if not self.path or not Path(self.path).expanduser().is_dir():
            raise DataError(f"data.path={self.path!r} is not a folder of images; give data.path=<folder>")

    def load(self):
        from PIL import Image

        from fastlight.data.images import read_image
        from fastlight.data.vision import image_files

        files = image_files(Path(self.path).expanduser())
        if len(files) < 2:
            raise DataError(f"data.path={self.path} holds {len(files)} images; a GAN needs a folder of many")
        mode = "L" if self.channels == 1 else "RGB"
        images = []
        for f in files:
            im = read_image(f, mode, draft=self.size * 2)
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((self.size, self.size), Image.BICUBIC)
            a = np.asarray(im, dtype=np.uint8)
            images.append(torch.from_numpy(a.reshape(self.size, self.size, -1).copy()).permute(2, 0, 1))
        x = torch.stack(images)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_valid = max(1, int(self.valid_pct * len(x)))
        return x[order[n_valid:]], x[order[:n_valid]]


class Cifar10Gan(ImageGanData):
    """CIFAR-10's 50,000 training images (torchvision's download into <data root>/cifar10)."""

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(n_channels=3, **kwargs)
        self.folder, self.download = data_root(root) / "cifar10", download

    def _dataset(self, train: bool):
        from torchvision.datasets import CIFAR10

        try:
            return CIFAR10(str(self.folder), train=train, download=self.download)
        except Exception as e:  # noqa: BLE001  URLError, RuntimeError("Dataset not found"), checksum errors
            raise DataError(
                f"CIFAR-10 is not in {self.folder} and could not be downloaded ({type(e).__name__}); "
                "put cifar-10-python.tar.gz there or run where the internet is reachable"
            ) from None

    def prepare_data(self):
        self._dataset(True)

    def load(self):
        def images(ds):
            return self.resized(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous())

        return images(self._dataset(True)), images(self._dataset(False))


class SyntheticBlobs(ImageGanData):
    """One-channel images, black with one bright `size/4` square at a random place: a GAN that
    learns makes one square per image; a stand-in for real images in fast tests."""

    def __init__(self, n_train: int = 512, n_valid: int = 128, **kwargs):
        super().__init__(n_channels=1, **kwargs)
        self.n_train, self.n_valid = int(n_train), int(n_valid)

    def load(self):
        g = torch.Generator().manual_seed(self.seed)
        n, s = self.n_train + self.n_valid, self.size
        side = max(2, s // 4)
        x = torch.zeros(n, 1, s, s, dtype=torch.uint8)
        pos = torch.randint(0, s - side + 1, (n, 2), generator=g)
        for i, (r, c) in enumerate(pos.tolist()):
            x[i, 0, r : r + side, c : c + side] = 255
        return x[: self.n_train], x[self.n_train :]


class Mixture2D(GanData):
    """Points from `n_modes` Gaussians (std `std`) evenly spaced on a circle of radius `radius`.

    `quality`: `modes` = planted modes holding at least a quarter of their fair share of samples
    within 3 std (all of them: the generator covers every mode), `in_mode` = share of samples within
    3 std of some mode (sharpness).
    """

    qualities = ("modes", "none")

    def __init__(self, n_modes: int = 8, radius: float = 1.0, std: float = 0.05, n_train: int = 4096,
                 n_valid: int = 1024, quality: str = "modes", **kwargs):
        super().__init__(quality=quality, **kwargs)
        self.n_modes, self.radius, self.std = int(n_modes), float(radius), float(std)
        self.n_train, self.n_valid = int(n_train), int(n_valid)
        self.n_quality = self.n_valid  # as many samples as the real reference has points
        angles = torch.arange(self.n_modes) * (2 * math.pi / self.n_modes)
        self.centers = self.radius * torch.stack([angles.cos(), angles.sin()], 1)
        self.dims = {"n_dim": 2}

    def load(self):
        g = torch.Generator().manual_seed(self.seed)
        n = self.n_train + self.n_valid
        x = self.centers[torch.randint(0, self.n_modes, (n,), generator=g)] + self.std * torch.randn(n, 2, generator=g)
        return x[: self.n_train], x[self.n_train :]

    def quality(self, samples):
        if self.quality_kind == "none":
            return {}
        d = torch.cdist(samples.float().cpu(), self.centers)
        dist, nearest = d.min(1)
        close = dist < 3 * self.std
        counts = torch.bincount(nearest[close], minlength=self.n_modes)
        enough = counts >= 0.25 * len(samples) / self.n_modes
        return {"modes": float(enough.sum()), "in_mode": float(close.float().mean())}

    def reference_quality(self):
        return self.quality(self.valid)
