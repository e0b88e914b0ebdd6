"""The super-resolution task: a U-Net learns to undo a planted degradation, the metrics against the input,
the per-epoch grid, the Set5/Set14 Y-channel protocol, tiled restoration, `fastlight restore`, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fastlight.models.unet import DynamicUnet
from fastlight.tasks.superres import tiled, y_channel

TINY = "model._target_=tests.tasks.test_superres.tiny_unet"
FAST = ("task=superres", "data=synthetic", TINY, "logger=csv", "callbacks.progress_bar.refresh_rate=0",
        "trainer.num_sanity_val_steps=0", "task.stages=null", "loss.name=mse", "torch_threads=1")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_unet(n_out: int = 3, arch=None, pretrained=False, weights_path=None, **kwargs) -> DynamicUnet:
    """fastlight's DynamicUnet on a three-block encoder (/2, /4, /8): the real decoder, CPU-test sized."""

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, 2, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    encoder = nn.Sequential(block(3, 16), block(16, 32), block(32, 48))
    return DynamicUnet(n_out=n_out, encoder=encoder, img_size=32, **kwargs)


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def last_epoch(run_dir: Path) -> dict:
    import pandas as pd

    df = pd.read_csv(run_dir / "metrics.csv")
    return df.dropna(subset=["val/psnr"]).iloc[-1].to_dict()


def test_unet_removes_a_planted_blur_and_noise_and_beats_its_input(train_run):
    _, run_dir = train_run(*FAST, "optim.lr=3e-2", "trainer.max_epochs=6", "data.n_train=192", "data.n_valid=48",
                           "data.noise=0.15")
    m = last_epoch(run_dir)
    assert 18 < m["val/psnr_input"] < 28  # what doing nothing scores
    assert m["val/psnr"] > m["val/psnr_input"] + 2.0, m  # the model removes the blur and the noise
    assert m["val/ssim"] > m["val/ssim_input"]
    assert summary(run_dir)["restoration"]["val_psnr_gain_db"] == pytest.approx(
        m["val/psnr"] - m["val/psnr_input"], abs=1e-3)


def test_end_to_end_with_the_feature_loss_grids_and_restore(train_run, tmp_path):
    _, run_dir = train_run(*FAST, "loss.name=feature", "loss.pretrained=false", "trainer.max_epochs=2",
                           "data.n_train=32", "data.n_valid=16", "data.batch_size=8")
    s = summary(run_dir)
    assert s["status"] == "completed"
    grids = sorted((run_dir / "grids").glob("*.png"))
    assert [g.name for g in grids] == ["epoch_000.png", "epoch_001.png"]
    grid = Image.open(grids[-1])
    assert grid.size == (3 * 34 + 2, 4 * 34 + 2)  # before / after / target, 4 examples of 32 px
    # `fastlight restore` from the run folder alone, at 2x with --scale, tiled
    from fastlight.cli import main

    photo = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).uniform(0, 255, (70, 90, 3))).astype(np.uint8)).save(photo)
    out = tmp_path / "restored"
    assert main(["restore", str(run_dir), str(photo), "--out", str(out), "--ckpt", "last", "--scale", "2",
                 "--tile", "64"]) == 0
    assert Image.open(out / "photo.png").size == (180, 140)
    assert main(["restore", str(run_dir), str(tmp_path / "missing.jpg"), "--out", str(out)]) == 2


def test_y_channel_is_bt601_luma():
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert torch.allclose(y_channel(white), torch.full((1, 1, 2, 2), 235 / 255), atol=1e-4)
    assert torch.allclose(y_channel(black), torch.full((1, 1, 2, 2), 16 / 255))
    green = torch.zeros(1, 3, 1, 1)
    green[:, 1] = 1
    assert y_channel(green).item() == pytest.approx((16 + 128.553) / 255, abs=1e-5)


def test_tiled_restoration_equals_the_whole_image_for_a_local_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    x = torch.randn(1, 3, 150, 230)
    with torch.no_grad():
        assert torch.allclose(tiled(model, x, tile=64, overlap=4), model(x), atol=1e-5)
        assert not torch.allclose(tiled(model, x, tile=64, overlap=0), model(x), atol=1e-5)  # seams without overlap


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_to_the_same_result(train_run, tmp_path):
    args = (*FAST, "trainer.max_epochs=3", "data.n_train=48", "data.n_valid=16", "data.batch_size=8", "seed=4")
    train_run(*args, run_dir=tmp_path / "full")
    with pytest.raises(SystemExit):  # Ctrl-C in the middle of the second epoch
        train_run(*args, "+callbacks.ctrl_c._target_=tests.helpers.InterruptAt", "+callbacks.ctrl_c.step=9",
                  run_dir=tmp_path / "cut")
    cut = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(cut, weights_only=False)["epoch"] == 0
    train_run(*args, f"ckpt_path={cut}", run_dir=tmp_path / "resumed")
    full, resumed = summary(tmp_path / "full")["metrics"], summary(tmp_path / "resumed")["metrics"]
    assert resumed["val/psnr"] == pytest.approx(full["val/psnr"], rel=1e-5)
    assert resumed["val/loss"] == pytest.approx(full["val/loss"], rel=1e-5)


@pytest.mark.slow
def test_debug_run_with_the_real_resnet18_unet_and_feature_loss(train_run):
    _, run_dir = train_run("task=superres", "data=synthetic", "debug=fast", "logger=csv", "model.arch=resnet18",
                           "model.pretrained=false", "loss.pretrained=false", "task.stages=null", "torch_threads=1")
    s = summary(run_dir)
    assert s["status"] == "completed" and {"val/psnr", "val/psnr_input", "val/ssim"} <= set(s["metrics"])
    assert (run_dir / "grids" / "epoch_000.png").is_file()
