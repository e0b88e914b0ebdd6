"""The segmentation task: a U-Net learns planted shapes-with-masks, acc_camvid and mIoU ignore void,
the per-epoch overlay grid and class confusion, and `fastlight predict` writing colour masks."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from fastlight.data.segmentation import SegmentationData
from fastlight.data.vision import IMAGENET_MEAN, IMAGENET_STD
from fastlight.tasks.segmentation import SegmentationTask

TINY = "model._target_=tests.tasks.test_superres.tiny_unet"
FAST = ("task=segmentation", TINY, "logger=csv", "callbacks.progress_bar.refresh_rate=0",
        "trainer.num_sanity_val_steps=0", "task.stages=null", "torch_threads=1")
CODES = ["Sky", "Road", "Car", "Void"]

pytestmark = pytest.mark.usefixtures("one_thread")


def camvid_like(root, n=10, void_block=True):
    """images/ + labels/{stem}_P.png: 8-px blocks whose red channel is 40 + 60 * class; one block void."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = rng.integers(0, 3, (3, 4)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        img = np.stack([cls * 60 + 40, np.full_like(cls, 100), np.full_like(cls, 50)], -1).astype(np.uint8)
        mask = cls.copy()
        if void_block:
            mask[:8, :8] = 3  # void, whatever the picture shows there
            img[:8, :8, 0] = 40  # the picture says class 0 there; a perfect model must not be punished
        Image.fromarray(img).save(root / "images" / f"f{i:02d}.png")
        Image.fromarray(mask, mode="L").save(root / "labels" / f"f{i:02d}_P.png")
    (root / "codes.txt").write_text("\n".join(CODES) + "\n")
    (root / "valid.txt").write_text("f01.png\nf05.png\nf07.png\n")
    return root


class RedOracle(nn.Module):
    """Reads the class off the red channel: right everywhere except in the void block."""

    def __init__(self, n_out=4):
        super().__init__()
        self.n_out = n_out
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        red = (x[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255
        cls = ((red - 40) / 60).round().long().clamp(0, self.n_out - 1)
        return nn.functional.one_hot(cls, self.n_out).permute(0, 3, 1, 2).float() * 10 * self.scale

    def layer_groups(self):
        return [self]


def test_acc_camvid_and_miou_ignore_the_void_class(tmp_path):
    dm = SegmentationData(path=str(camvid_like(tmp_path / "cv")), size=(24, 32), num_workers=0, max_rotate=0)
    task = SegmentationTask(RedOracle(), {"name": "adamw", "lr": 1e-3, "wd": 0.0}, {"name": "constant"})
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu",
                        default_root_dir=tmp_path)
    (m,) = trainer.validate(task, datamodule=dm, verbose=False)
    assert m["val/acc_camvid"] == pytest.approx(1.0) and m["val/miou"] == pytest.approx(1.0)
    assert m["val/loss"] > 0.1  # the loss does count the void block (the lesson's plain cross-entropy)
    confusion = pd.read_csv(tmp_path / "confusion.csv")
    assert list(confusion["actual"]) == CODES and confusion["Void"].sum() == 0  # void pixels left out
    values = confusion[CODES].to_numpy()
    assert values.sum() == 3 * (24 * 32 - 64) and (values == np.diag(np.diag(values))).all()


def test_unet_learns_planted_shapes_to_a_high_mean_iou(train_run):
    _, run_dir = train_run(*FAST, "data=synthetic", "optim.lr=1e-2", "trainer.max_epochs=6", "data.n_train=192",
                           "data.n_valid=48")
    m = json.loads((run_dir / "summary.json").read_text())["metrics"]
    assert m["val/miou"] > 0.8 and m["val/acc_camvid"] > 0.93, m  # chance: 5 classes, mostly background


def test_end_to_end_grids_confusion_and_predict_writes_colour_masks(train_run, tmp_path):
    root = camvid_like(tmp_path / "cv", n=12)
    _, run_dir = train_run(*FAST, "data=folder", f"data.path={root}", "data.valid=valid.txt", "data.size=[24,32]",
                           "data.batch_size=4", "trainer.max_epochs=2", "data.num_workers=0")
    assert sorted(p.name for p in (run_dir / "grids").glob("*.png")) == ["epoch_000.png", "epoch_001.png"]
    assert Image.open(run_dir / "grids" / "epoch_001.png").size == (3 * 34 + 2, 3 * 26 + 2)  # 3 valid images
    assert list(pd.read_csv(run_dir / "confusion.csv")["actual"]) == CODES
    from fastlight.cli import main

    photos = tmp_path / "new"
    photos.mkdir()
    Image.open(root / "images" / "f00.png").resize((45, 37)).save(photos / "a.png")
    out = tmp_path / "masks"
    assert main(["predict", str(run_dir), str(photos), "--out", str(out), "--ckpt", "last"]) == 0
    mask = Image.open(out / "a_mask.png")
    assert mask.mode == "P" and mask.size == (45, 37) and np.asarray(mask).max() < len(CODES)
    assert (out / "codes.txt").read_text().split() == CODES


def test_a_data_mistake_stops_the_run_with_one_line_and_exit_code_2(train_run, tmp_path, capsys):
    root = camvid_like(tmp_path / "cv")
    (root / "codes.txt").unlink()
    with pytest.raises(SystemExit) as e:
        train_run(*FAST, "data=folder", f"data.path={root}", "data.num_workers=0")
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "codes.txt is missing" in err[0]
