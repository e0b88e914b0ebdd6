"""Restoration pairs: the lesson's crappify, the other degradations, the cache, the data module, bad input."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fastlight.data import restoration
from fastlight.data.core import EpochSampler
from fastlight.data.restoration import (
    RestorationData,
    SyntheticRestorationData,
    build_pairs,
    crappify,
    degrade,
)
from fastlight.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = {"degrade": "crappify", "scale": 2, "lr_size": 96, "quality": [10, 70], "max_holes": 4}


def photo(w=200, h=150, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return Image.fromarray((0.7 * base + 0.3 * rng.uniform(0, 255, (h, w, 3))).astype(np.uint8))


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLIGHT_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    for i in range(10):
        photo(160 + 8 * i, 120, seed=i).save(src / ("sub" if i % 2 else "") / f"p{i}.{'png' if i % 3 else 'jpg'}")
    return src


def test_crappify_is_seeded_shrinks_the_shorter_side_to_96_and_draws_the_quality():
    img = photo(200, 150)
    data, _, (x, y) = crappify(img, random.Random(1))
    assert crappify(img, random.Random(1))[0] == data  # same seed, same bytes
    out = Image.open(io.BytesIO(data))
    assert out.format == "JPEG" and out.size == (128, 96)
    assert Image.open(io.BytesIO(crappify(photo(150, 300), random.Random(1))[0])).size == (96, 192)
    draws = [crappify(img, random.Random(s)) for s in range(40)]
    qualities = {d[1] for d in draws}
    assert min(qualities) >= 10 and max(qualities) <= 70 and len(qualities) > 15
    assert all(0 <= px <= 64 and 0 <= py <= 48 for _, _, (px, py) in draws)  # the top-left quarter
    # the drawn quality is the file's: a lower quality has coarser quantisation tables
    by_q = sorted(draws, key=lambda d: d[1])
    coarse = sum(Image.open(io.BytesIO(by_q[0][0])).quantization[0])
    fine = sum(Image.open(io.BytesIO(by_q[-1][0])).quantization[0])
    assert by_q[0][1] < by_q[-1][1] and coarse > 2 * fine
    # the number is written on the picture: white pixels near the text's spot
    plain = np.asarray(img.resize((128, 96), Image.BILINEAR), dtype=float)
    arr = np.asarray(out, dtype=float)
    patch = (slice(y, y + 10), slice(x, x + 12))
    assert (arr[patch].mean(-1) > 230).sum() > (plain[patch].mean(-1) > 230).sum() + 5


def test_the_other_degradations_shrink_grey_or_blank_the_image():
    img = photo(201, 151)
    rng = random.Random(0)
    small = Image.open(io.BytesIO(degrade(img, "bicubic", rng, scale=4)[0]))
    assert small.size == (50, 37)  # the papers' modcrop to a multiple of the scale, then / scale
    grey = np.asarray(Image.open(io.BytesIO(degrade(img, "grayscale", rng)[0])).convert("RGB"))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    holes = np.asarray(Image.open(io.BytesIO(degrade(img, "cutout", rng, max_holes=3)[0])))
    blank = (holes == 0).all(-1)
    assert 0.005 < blank.mean() < 0.5
    assert (holes[~blank] == np.asarray(img)[~blank]).all()  # the rest is untouched


def test_cache_is_reused_and_rebuilt_when_the_settings_or_the_source_change(folder, monkeypatch):
    calls = []
    real = restoration._degrade_file
    monkeypatch.setattr(restoration, "_degrade_file", lambda job: calls.append(job[1]) or real(job))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    first, manifest = build_pairs(folder, files, SETTINGS, seed=0, workers=1)
    assert len(calls) == 10 and len(manifest["items"]) == 10
    assert str(first).startswith(str(folder.parent / "cache" / "superres"))
    again, manifest2 = build_pairs(folder, files, SETTINGS, seed=0, workers=1)
    assert again == first and manifest2 == manifest and len(calls) == 10  # reused: nothing degraded again
    other, _ = build_pairs(folder, files, {**SETTINGS, "quality": [30, 40]}, seed=0, workers=1)
    assert other != first and len(calls) == 20
    photo(300, 200, seed=99).save(files[0])  # a source image changes
    changed, _ = build_pairs(folder, files, SETTINGS, seed=0, workers=1)
    assert changed not in (first, other) and len(calls) == 30
    reseeded, _ = build_pairs(folder, files, SETTINGS, seed=0, workers=1)
    assert reseeded == changed and len(calls) == 30


def test_cache_built_in_parallel_equals_the_serial_one(folder, tmp_path):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    serial, m1 = build_pairs(folder, files, SETTINGS, seed=3, workers=1)
    (serial / "manifest.json").unlink()  # force a rebuild into the same folder
    _, m2 = build_pairs(folder, files, SETTINGS, seed=3, workers=2)
    assert m1 == m2  # the same qualities and text spots, whatever the order the workers ran in


def test_data_module_pairs_splits_resizes_and_tests_at_full_size(folder, tmp_path):
    test_dir = tmp_path / "set"
    test_dir.mkdir()
    photo(90, 70).save(test_dir / "a.png")
    dm = RestorationData(path=str(folder), degrade="bicubic", scale=2, size=32, batch_size=4, num_workers=0,
                         valid_pct=0.2, test_path=str(test_dir), workers=1)
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.train_ds), len(dm.valid_ds), len(dm.test_ds)) == (8, 2, 1)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 3, 32, 32) and x.dtype == torch.uint8
    # the input is the bicubic-shrunk target upsampled again: close to it, but not equal
    diff = (x.float() - y.float()).abs().mean()
    assert 0.5 < diff < 40
    dm.set_size(48)
    assert next(iter(dm.val_dataloader()))[0].shape[-2:] == (48, 48)
    tx, ty = dm.test_ds[0]
    assert tx.shape == ty.shape == (3, 70, 90)  # full size (already a multiple of the scale)
    nx, ny = dm.on_after_batch_transfer((x, y), 0)
    assert nx.dtype == torch.float32 and torch.allclose(dm.denormalize(ny), y.float() / 255, atol=1e-5)


def test_epoch_sampler_draws_the_same_order_and_crops_for_an_epoch_every_time():
    s = EpochSampler(20, seed=5)
    s.set_epoch(3)
    a = list(s)
    s.set_epoch(4)
    b = list(s)
    s.set_epoch(3)
    assert list(s) == a and a != b and sorted(i for i, _ in a) == list(range(20))
    dm = SyntheticRestorationData(n_train=8, n_valid=4, seed=1)
    dm.setup()
    assert torch.equal(dm.train_ds[a[0]][0], dm.train_ds[a[0]][0])  # same item seed, same crop


def test_synthetic_twin_plants_a_blur_and_noise_to_remove():
    dm = SyntheticRestorationData(n_train=16, n_valid=8, blur=1.0, noise=0.08, seed=0)
    dm.setup()
    x, y = (t.float() / 255 for t in next(iter(dm.val_dataloader())))
    psnr = -10 * torch.log10(((x - y) ** 2).mean())
    assert 15 < psnr < 30  # degraded, but the same picture
    from PIL import ImageFilter

    lr, hr = (np.asarray(im, dtype=float) for im in dm.valid_ds.items[0])
    blurred = np.asarray(dm.valid_ds.items[0][1].filter(ImageFilter.GaussianBlur(1.0)), dtype=float)
    assert ((blurred - lr) ** 2).mean() < ((hr - lr) ** 2).mean()  # the planted blur is there to undo


def test_bad_folders_give_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLIGHT_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no jpg or png images"):
        RestorationData(path=str(empty)).prepare_data()
    bad = tmp_path / "bad"
    bad.mkdir()
    photo().save(bad / "ok.png")
    (bad / "broken.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg cannot be read as an image") as e:
        RestorationData(path=str(bad), workers=1).prepare_data()
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="is not a folder"):
        RestorationData(path=str(tmp_path / "nowhere")).prepare_data()


def test_pets_offline_says_what_is_missing_in_one_sentence(tmp_path):
    with pytest.raises(DataError, match="Oxford-IIIT Pets: no images") as e:
        RestorationData(path=None, root=str(tmp_path), download=False).prepare_data()
    assert "\n" not in str(e.value)


def test_real_crappified_hymenoptera_pairs(real_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTLIGHT_CACHE", str(tmp_path / "cache"))
    dm = RestorationData(path=str(real_data / "hymenoptera" / "val" / "ants"), size=64, batch_size=4, num_workers=0,
                         limit=12, workers=2)
    dm.prepare_data()
    dm.setup("fit")
    lr = Image.open(dm.train_ds.items[0][0])
    assert lr.format == "JPEG" and min(lr.size) == 96
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 3, 64, 64)
