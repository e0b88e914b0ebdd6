"""Segmentation data: masks found by pattern, codes and void, the three validation splits, augmentation
that moves the mask with the image, bad input in one sentence, and the automatic batch size."""

from __future__ import annotations

import socket

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastlight.data.augment import seg_transforms
from fastlight.data.segmentation import (
    CamVidData,
    SegmentationData,
    SyntheticSegmentationData,
)
from fastlight.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")

CODES = ["Sky", "Road", "Car", "Void"]


def blocks(seed: int, h=24, w=32) -> tuple[Image.Image, Image.Image]:
    """An image of 8-pixel blocks whose red channel says the class (40 + 60 * class), and its mask."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 3, (h // 8, w // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    img = np.stack([mask * 60 + 40, np.full_like(mask, 100), np.full_like(mask, 50)], -1).astype(np.uint8)
    return Image.fromarray(img), Image.fromarray(mask, mode="L")


@pytest.fixture
def camvid_like(tmp_path):
    root = tmp_path / "cv"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(10):
        img, mask = blocks(i)
        img.save(root / "images" / f"f{i:02d}.png")
        mask.save(root / "labels" / f"f{i:02d}_P.png")
    (root / "codes.txt").write_text("\n".join(CODES) + "\n")
    (root / "valid.txt").write_text("f01.png\nf05.png\nf07.png\n")
    return root


def test_masks_by_pattern_codes_void_and_valid_list(camvid_like):
    dm = SegmentationData(path=str(camvid_like), size=(24, 32), num_workers=0)
    dm.setup()
    assert dm.codes == CODES and dm.void == 3 and dm.dims == {"n_out": 4}
    assert sorted(p.name for p, _ in dm.valid_ds.items) == ["f01.png", "f05.png", "f07.png"]
    assert all(m.name == f"{p.stem}_P.png" for p, m in dm.train_ds.items) and len(dm.train_ds) == 7
    x, y = dm.valid_ds[0]
    assert x.shape == (3, 24, 32) and y.shape == (24, 32) and y.dtype == torch.long
    by_index = SegmentationData(path=str(camvid_like), codes=["a", "b", "c", "d", "e"], void=0, valid="random",
                                valid_pct=0.3, seed=1, num_workers=0)
    by_index.setup()
    assert by_index.void == 0 and by_index.dims == {"n_out": 5} and len(by_index.valid_ds) == 3
    again = SegmentationData(path=str(camvid_like), valid="random", valid_pct=0.3, seed=1, num_workers=0)
    again.setup()
    assert [p for p, _ in again.valid_ds.items] == [p for p, _ in by_index.valid_ds.items]  # seeded
    with pytest.raises(ConfigError, match="data.void='Nothing'"):
        SegmentationData(path=str(camvid_like), void="Nothing", num_workers=0).setup()


def test_split_folders_with_an_annot_pattern(tmp_path):
    for split, n in (("train", 4), ("val", 2)):
        (tmp_path / split).mkdir()
        (tmp_path / f"{split}annot").mkdir()
        for i in range(n):
            img, mask = blocks(i)
            img.save(tmp_path / split / f"{i}.png")
            mask.save(tmp_path / f"{split}annot" / f"{i}.png")
    dm = SegmentationData(path=str(tmp_path), masks="{split}annot/{name}", codes=["a", "b", "c"], void=None,
                          valid="folders", num_workers=0)
    dm.setup()
    assert (len(dm.train_ds), len(dm.valid_ds)) == (4, 2)
    assert all(m.parent.name == "valannot" for _, m in dm.valid_ds.items)


def test_augmentation_moves_the_mask_with_the_image_nearest_neighbour():
    img, mask = blocks(3, 48, 64)
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    tf = seg_transforms((48, 64), True, fill=3, min_scale=0.5, max_rotate=30, max_lighting=0.0, do_flip=True)
    torch.manual_seed(0)
    for _ in range(5):
        x, y = tf(tv_tensors.Image(TF.pil_to_tensor(img)), tv_tensors.Mask(TF.pil_to_tensor(mask)[0].long()))
        assert set(y.unique().tolist()) <= {0, 1, 2, 3}  # no interpolated class values
        keep = y != 3  # rotated-in corners are void
        red_class = ((x[0].float() - 40) / 60).round().long()
        agree = (red_class[keep] == y[keep]).float().mean()
        assert agree > 0.9  # the image's blocks and the mask's blocks still coincide



def test_fastai_affine_reflects_instead_of_voiding_and_keeps_the_mask_aligned():
    """fastai's recipe (pad_mode=reflection): rotation + zoom + warp through one sampling grid; the
    planted blocks of image and mask still coincide, no void appears, and the pictures do change."""
    img, mask = blocks(4, 48, 64)
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as TF

    tf = seg_transforms((48, 64), True, fill=3, min_scale=1.0, max_rotate=20, max_lighting=0.0, do_flip=True,
                        max_zoom=1.2, max_warp=0.2, pad_mode="reflection")
    x0, y0 = tv_tensors.Image(TF.pil_to_tensor(img)), tv_tensors.Mask(TF.pil_to_tensor(mask)[0].long())
    torch.manual_seed(0)
    changed = 0
    for _ in range(8):
        x, y = tf(x0, y0)
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and y.shape == (48, 64)
        assert set(y.unique().tolist()) <= {0, 1, 2}  # nearest, and reflection brings in no void
        red_class = ((x[0].float() - 40) / 60).round().long()
        assert (red_class == y).float().mean() > 0.93  # only pixels on block edges may disagree
        changed += not torch.equal(y, y0) and not torch.equal(y, y0.flip(-1))
    assert changed >= 6  # the affine part runs with p 0.75 for each of its three parts
    with pytest.raises(ConfigError, match="pad_mode"):
        seg_transforms((48, 64), True, 3, 1.0, 10, 0.0, True, pad_mode="border")

def test_lighting_is_fastais_brightness_and_contrast_in_logit_space():
    """fastai's Brightness and Contrast with the same draws give the same picture (to uint8 rounding);
    each part runs with p 0.75 on its own (both off: 1/16 of the images), within fastai's ranges."""
    augment = pytest.importorskip("fastai.vision.augment")
    from fastai.torch_core import TensorImage
    from torchvision import tv_tensors

    from fastlight.data.augment import Lighting, lighting

    img = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for b, c in ((0.42, 1.0), (0.5, 1.25), (0.58, 0.8), (0.45, 1.1)):
        x = TensorImage(img[None].float() / 255)
        x = augment.Brightness(p=1.0, draw=b)(x, split_idx=0)
        theirs = (augment.Contrast(p=1.0, draw=c)(x, split_idx=0)[0] * 255).round()
        ours = lighting(img, b, c)
        assert (ours.float() - theirs).abs().max() <= 1 and not torch.equal(ours, img)
    grey, mask = tv_tensors.Image(torch.full((3, 4, 4), 200, dtype=torch.uint8)), tv_tensors.Mask(torch.zeros(4, 4))
    torch.manual_seed(0)
    outs = [Lighting(0.2)(grey, mask) for _ in range(800)]
    assert all(m is mask for _, m in outs)
    values = torch.tensor([int(x[0, 0, 0]) for x, _ in outs])
    assert 0.04 < (values == 200).float().mean() < 0.12  # both off: (1 - 0.75) ** 2, plus tiny draws
    # b in 0.4..0.6 and c in 0.8..1.25: sigmoid((logit(200 / 255) -+ 0.405) * (0.8 | 1.25)) * 255 = 171 | 228
    assert 171 <= int(values.min()) < 180 and 220 < int(values.max()) <= 228


def test_warp_draws_its_x_and_y_magnitudes_each_with_p_as_fastai():
    from fastlight.data.augment import AffineWarp

    warp = AffineWarp(max_rotate=0.0, max_zoom=1.0, max_warp=0.2, p=0.75)
    torch.manual_seed(0)
    identity = sum(warp.matrix() is None for _ in range(2000)) / 2000
    assert 0.045 < identity < 0.08  # both axes off: (1 - 0.75) ** 2, not the 1/4 of one draw for both


BAD_CASES = {
    "empty": ("holds no images", lambda r: [p.unlink() for p in (r / "images").iterdir()]),
    "size": ("masks must match their images", lambda r: Image.new("L", (10, 10)).save(r / "labels" / "f03_P.png")),
    "values": ("class value 9 but there are only 4 classes",
               lambda r: Image.fromarray(np.full((24, 32), 9, np.uint8), mode="L").save(r / "labels" / "f04_P.png")),
    "codes": ("codes.txt is missing", lambda r: (r / "codes.txt").unlink()),
    "corrupt": ("cannot be read as an image", lambda r: (r / "images" / "f02.png").write_bytes(b"\x89PNG garbage")),
    "no_mask": ("no mask for", lambda r: (r / "labels" / "f06_P.png").unlink()),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_sentence(camvid_like, case):
    expected, spoil = BAD_CASES[case]
    spoil(camvid_like)
    with pytest.raises(DataError, match=expected) as e:
        SegmentationData(path=str(camvid_like), num_workers=0).setup()
    assert "\n" not in str(e.value)


def test_camvid_offline_says_how_to_get_it(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    monkeypatch.setenv("FASTLIGHT_DOWNLOAD_TIMEOUT", "2")
    with pytest.raises(DataError, match="CamVid: missing camvid.tgz") as e:
        CamVidData(root=str(tmp_path)).prepare_data()
    assert "camvid.tgz" in str(e.value) and "\n" not in str(e.value)


def test_synthetic_twin_labels_each_shape_and_a_void_frame():
    dm = SyntheticSegmentationData(n_train=8, n_valid=4, seed=0)
    dm.setup()
    img, mask = (np.asarray(a) for a in dm.valid_ds.items[0])
    assert (mask[:2] == 5).all() and (mask[:, -2:] == 5).all()
    inside = mask[2:-2, 2:-2]
    shape = inside > 0
    assert 0.05 < shape.mean() < 0.8
    bright = np.asarray(img)[2:-2, 2:-2].max(-1) >= 180
    assert (bright == shape).mean() > 0.97  # the mask is where the shapes are drawn


class OOMAbove(nn.Module):
    """A model that runs out of memory above a planted batch size, as a GPU would."""

    def __init__(self, limit: int, n_out: int):
        super().__init__()
        self.limit = limit
        self.conv = nn.Conv2d(3, n_out, 3, padding=1)

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (planted)")
        return self.conv(x)

    def layer_groups(self):
        return [self]


def test_batch_size_auto_finds_the_planted_limit_and_keeps_the_fallback_on_cpu(tmp_path, capsys):
    from fastlight.tasks.segmentation import SegmentationTask

    optim = {"name": "adamw", "lr": 1e-3, "wd": 0.0}
    schedule = {"name": "constant"}

    def fit(dm):
        task = SegmentationTask(OOMAbove(6, 6), optim, schedule, stages=None)
        trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                            default_root_dir=tmp_path, accelerator="cpu")
        trainer.fit(task, datamodule=dm)
        return dm.batch_size

    finder = {"mode": "binsearch", "init_val": 2, "steps_per_trial": 1, "max_trials": 10, "on_cpu": True}
    found = fit(SyntheticSegmentationData(n_train=48, n_valid=8, batch_size="auto", batch_size_finder=finder))
    assert 3 < found <= 6  # the largest size that fits, to within Lightning's binary search (it stops at 5 or 6)
    finder["mode"] = "power"
    assert fit(SyntheticSegmentationData(n_train=48, n_valid=8, batch_size="auto", batch_size_finder=finder)) == 4
    kept = fit(SyntheticSegmentationData(n_train=48, n_valid=8, batch_size="auto", batch_size_fallback=4))
    assert kept == 4 and "keeping batch size 4" in capsys.readouterr().out


def test_real_camvid_tiny(real_data):
    dm = SegmentationData(path=str(real_data / "camvid_tiny"), valid="random", num_workers=0)
    dm.setup()
    assert len(dm.codes) == 32 and dm.codes[dm.void] == "Void"
    assert (len(dm.train_ds), len(dm.valid_ds)) == (80, 20)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 96, 128) and y.shape == (8, 96, 128) and int(y.max()) < 32
