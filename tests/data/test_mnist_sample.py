"""The chapter-4 digit sources: MNIST filtered to digits, fastai's png folders, their download, their errors."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastlight.data.mnist_sample import DigitFolders, MnistDigits, SyntheticMeans, extract_tgz
from fastlight.errors import ConfigError, DataError


def write_idx(folder: Path, prefix: str, labels: list[int]) -> None:
    """Tiny idx.gz files whose image i is filled with the value 10 * labels[i] + (i % 10)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.full((28, 28), 10 * d + i % 10, dtype=np.uint8) for i, d in enumerate(labels)])
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(labels), 28, 28) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + bytes(labels))


def write_pngs(root: Path, split: str, digit: int, n: int, value: int) -> None:
    folder = root / split / str(digit)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((28, 28), value, dtype=np.uint8), mode="L").save(folder / f"{i}.png")


def one_sentence(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.count(". ") == 0, msg
    return msg


def test_digits_keeps_exactly_those_digits_labelled_by_position(tmp_path):
    train = [0, 3, 7, 1, 3, 9, 7, 7, 3, 5]
    test = [7, 2, 3, 3, 8]
    write_idx(tmp_path / "mnist", "train", train)
    write_idx(tmp_path / "mnist", "t10k", test)
    dm = MnistDigits(root=str(tmp_path), digits=[7, 3], download=False)
    dm.prepare_data()
    dm.setup()
    x, y = dm.train
    assert x.shape == (6, 784) and x.dtype == torch.float32
    kept = [i for i, d in enumerate(train) if d in (3, 7)]
    # every kept image is the one written for its index, and its label is the digit's position in [7, 3]
    assert torch.allclose(x[:, 0] * 255, torch.tensor([10.0 * train[i] + i % 10 for i in kept]))
    assert y.tolist() == [1 if train[i] == 3 else 0 for i in kept]
    xv, yv = dm.valid
    assert yv.tolist() == [0, 1, 1] and torch.allclose(xv[:, 0] * 255, torch.tensor([70.0, 32, 33]))
    assert dm.dims == {"n_in": 784, "digits": [7, 3]}


@pytest.mark.parametrize("digits", [[3, 12], [3, 3], [3], ["x", 7]])
def test_an_unknown_digit_is_one_sentence(digits):
    with pytest.raises(ConfigError) as e:
        MnistDigits(digits=digits)
    assert "data.digits" in one_sentence(e)


def test_folders_read_as_flat_floats_in_unit_range(tmp_path):
    write_pngs(tmp_path, "train", 3, 4, 255)
    write_pngs(tmp_path, "train", 7, 2, 51)
    write_pngs(tmp_path, "valid", 3, 1, 0)
    write_pngs(tmp_path, "valid", 7, 3, 102)
    dm = DigitFolders(path=str(tmp_path))
    dm.prepare_data()
    dm.setup()
    x, y = dm.train
    assert x.shape == (6, 784) and y.tolist() == [0, 0, 0, 0, 1, 1]
    assert x.min() >= 0 and x.max() <= 1
    assert torch.allclose(x[:, 0], torch.tensor([1.0, 1, 1, 1, 0.2, 0.2]))
    assert dm.valid[1].tolist() == [0, 1, 1, 1]


def test_a_folder_without_a_3_is_one_sentence(tmp_path):
    write_pngs(tmp_path, "train", 7, 2, 10)
    write_pngs(tmp_path, "valid", 3, 1, 10)
    write_pngs(tmp_path, "valid", 7, 1, 10)
    with pytest.raises(DataError) as e:
        DigitFolders(path=str(tmp_path)).setup()
    msg = one_sentence(e)
    assert str(tmp_path / "train" / "3") in msg and "MNIST_SAMPLE" in msg


def test_a_missing_archive_without_download_says_what_is_missing(tmp_path):
    with pytest.raises(DataError) as e:
        DigitFolders(name="mnist_tiny", root=str(tmp_path), download=False).prepare_data()
    assert "mnist_tiny.tgz" in one_sentence(e)


def test_an_archive_that_fails_fastais_check_is_refused(tmp_path):
    (tmp_path / "mnist_tiny").mkdir()
    (tmp_path / "mnist_tiny" / "mnist_tiny.tgz").write_bytes(b"not fastai's archive")
    with pytest.raises(DataError) as e:
        DigitFolders(name="mnist_tiny", root=str(tmp_path), download=False).prepare_data()
    assert "delete it" in one_sentence(e)


def test_extract_tgz_puts_the_archive_folder_contents_in_place(tmp_path):
    archive = tmp_path / "mnist_tiny.tgz"
    png = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8), mode="L").save(png, format="png")
    with tarfile.open(archive, "w:gz") as tf:
        for name in ("mnist_tiny/train/3/a.png", "mnist_tiny/valid/7/b.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png.getvalue())
            tf.addfile(info, io.BytesIO(png.getvalue()))
    dest = tmp_path / "out"
    dest.mkdir()
    extract_tgz(archive, dest, "mnist_tiny/")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.png")) == ["train/3/a.png", "valid/7/b.png"]
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_synthetic_twin_plants_one_mean_image_per_digit():
    dm = SyntheticMeans(digits=[3, 7, 1], n_train=3000, noise=0.1, seed=0)
    dm.setup()
    x, y = dm.train
    for k in range(3):
        # noise 0.1 around 0 or 1, clipped: the class mean is within ~0.05 of the planted image
        assert (x[y == k].mean(0) - dm.means[k]).abs().max() < 0.06


def test_real_mnist_threes_and_sevens_are_mnist_samples_counts(real_data):
    dm = MnistDigits(root=str(real_data), digits=[3, 7], download=False)
    dm.setup()
    assert torch.bincount(dm.train[1]).tolist() == [6131, 6265]
    assert torch.bincount(dm.valid[1]).tolist() == [1010, 1028]


def test_real_mnist_tiny_folders(real_data):
    dm = DigitFolders(name="mnist_tiny", root=str(real_data), download=False)
    dm.prepare_data()
    dm.setup()
    assert torch.bincount(dm.train[1]).tolist() == [346, 363]
    assert torch.bincount(dm.valid[1]).tolist() == [346, 353]
