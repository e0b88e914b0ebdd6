"""fastbook chapter 4: the pixel-similarity baseline, mnist_loss, SGD by hand, and the two trained models."""

from __future__ import annotations

import copy
import csv
import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from fastlight.data.mnist_sample import SyntheticMeans
from fastlight.errors import ConfigError
from fastlight.models.mnist_basics import Linear1, PixelSimilarity, SimpleNet, mnist_loss
from fastlight.tasks.mnist_basics import MnistBasicsTask, is_first

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ("task=mnist_basics", "data=synthetic", "logger=csv", "callbacks.progress_bar.refresh_rate=0")


def summary(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def val_curve(run_dir, name: str) -> list[float]:
    with open(run_dir / "metrics.csv") as f:
        return [float(r[name]) for r in csv.DictReader(f) if r.get(name)]


# --- the loss and the models ------------------------------------------------------------------------
def test_mnist_loss_is_the_chapters_formula():
    # The chapter's own example: targets 1, 0, 1 and predictions (after the sigmoid) 0.9, 0.4, 0.2
    # give where(t == 1, 1 - p, p) = 0.1, 0.4, 0.8.
    targets, probs = torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.4, 0.2])
    assert mnist_loss(torch.logit(probs), targets).item() == pytest.approx((0.1 + 0.4 + 0.8) / 3, abs=1e-6)
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-3.0]])  # (n, 1), as the models give them
    t = torch.tensor([1.0, 0.0, 0.0, 1.0])
    s = torch.sigmoid(logits.reshape(-1))
    expected = ((1 - s[0]) + s[1] + s[2] + (1 - s[3])) / 4
    assert mnist_loss(logits, t).item() == pytest.approx(expected.item(), abs=1e-6)  # no (n, n) broadcast


def test_models_are_the_chapters():
    torch.manual_seed(0)
    lin = Linear1(784, [3, 7])
    assert lin.weights.shape == (784, 1) and lin.bias.shape == (1,)
    assert abs(lin.weights.std().item() - 1) < 0.1  # init_params: N(0, 1)
    x = torch.rand(5, 784)
    assert torch.allclose(lin(x), x @ lin.weights + lin.bias)
    net = SimpleNet(784, [3, 7])
    assert [type(m) for m in net] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert (net[0].in_features, net[0].out_features, net[2].out_features) == (784, 30, 1)


def test_trained_models_need_exactly_two_digits():
    for model in (Linear1, SimpleNet):
        with pytest.raises(ConfigError, match=r"data\.digits=\[1, 2, 3\]"):
            model(784, [1, 2, 3])
    with pytest.raises(ConfigError, match="model.distance"):
        PixelSimilarity(784, [3, 7], distance="cosine")


def test_pixel_distances_are_l1_and_rmse_to_each_mean():
    model = PixelSimilarity(4, [3, 7], distance="l1")
    model.accumulate(torch.tensor([[0.0, 0, 1, 1], [0.0, 0, 1, 0], [1.0, 1, 0, 0]]), torch.tensor([0, 0, 1]))
    assert torch.allclose(model.means, torch.tensor([[0.0, 0, 1, 0.5], [1.0, 1, 0, 0]]))
    x = torch.tensor([[0.0, 0, 0, 0]])
    assert torch.allclose(model(x), torch.tensor([[1.5 / 4, 2 / 4]]))
    model.distance = "rmse"
    assert torch.allclose(model(x), torch.tensor([[(1.25 / 4) ** 0.5, (2 / 4) ** 0.5]]))


# --- the pixel baseline ---------------------------------------------------------------------------
@pytest.mark.parametrize("distance", ["l1", "rmse"])
def test_pixel_baseline_finds_the_planted_means_and_classifies_by_them(train_run, distance):
    value, run_dir = train_run(*QUIET, "model=pixel_similarity", f"model.distance={distance}", "data.noise=0.8",
                               "data.digits=[3,7,1]")
    s = summary(run_dir)
    assert s["status"] == "completed" and value == s["metrics"]["val/acc"]
    dm = SyntheticMeans(digits=[3, 7, 1], n_train=1000, n_valid=400, noise=0.8, ink=0.2, seed=42)
    dm.setup()
    x, y = dm.train
    # the means it kept are the training images' per-digit means, saved as the chapter's "ideal" digits
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    means = state["model.sums"] / state["model.counts"][:, None]
    for k, digit in enumerate([3, 7, 1]):
        assert torch.allclose(means[k].float(), x[y == k].mean(0), atol=1e-5)
        png = np.asarray(Image.open(run_dir / "mean_images" / f"mean_{digit}.png"), dtype=np.float32)
        assert np.abs(png.reshape(-1) / 255 - x[y == k].mean(0).numpy()).max() <= 0.5 / 255 + 1e-6
    # noise 0.8 swamps single pixels, yet the nearest planted mean is still the right one
    xv, yv = dm.valid
    nearest = (xv[:, None] - dm.means[None]).abs().mean(-1).argmin(1)
    assert (nearest == yv).float().mean() == 1.0
    assert s["metrics"]["val/acc"] == 1.0
    assert [s["metrics"][f"val/acc_{d}"] for d in (3, 7, 1)] == [1.0, 1.0, 1.0]
    assert "val/loss" not in s["metrics"]  # nothing was minimised


# --- SGD by hand --------------------------------------------------------------------------------------
def test_hand_written_sgd_steps_equal_torchs_sgd_for_the_linear_model():
    torch.manual_seed(0)
    dm = SyntheticMeans(n_train=600, n_valid=10, batch_size=256, shuffle=False, seed=1)
    dm.setup()
    model = Linear1(784, [3, 7])
    reference = copy.deepcopy(model)
    task = MnistBasicsTask(model, optim={"name": "scratch_sgd", "lr": 0.5, "wd": 0.0}, schedule={"name": "constant"})
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 3

    opt = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0)
    x, y = dm.train
    for i in range(3):
        opt.zero_grad()
        mnist_loss(reference(x[256 * i : 256 * (i + 1)]), is_first(y[256 * i : 256 * (i + 1)])).backward()
        opt.step()
    assert not torch.equal(model.weights, Linear1(784, [3, 7]).weights)  # it did move
    torch.testing.assert_close(model.weights, reference.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bias, reference.bias, rtol=0, atol=1e-6)


# --- learning -------------------------------------------------------------------------------------
def test_simple_net_separates_two_noisy_synthetic_digits(train_run):
    value, run_dir = train_run(*QUIET, "model=simple_net", "data.noise=1.0", "trainer.max_epochs=5")
    s = summary(run_dir)
    assert s["status"] == "completed"
    assert value >= 0.98 and s["metrics"]["val/acc_3"] >= 0.95 and s["metrics"]["val/acc_7"] >= 0.95
    losses = val_curve(run_dir, "val/loss")
    assert len(losses) == 5 and losses[-1] < losses[0]
    assert (run_dir / "loss_vs_accuracy.png").is_file()


def test_recipes_are_the_chapters(compose_run):
    lin = compose_run("task=mnist_basics", "model=linear")
    net = compose_run("task=mnist_basics", "model=simple_net")
    pix = compose_run("task=mnist_basics", "model=pixel_similarity")
    assert (lin.optim.lr, lin.trainer.max_epochs, lin.data.batch_size) == (1.0, 20, 256)
    assert (net.optim.lr, net.trainer.max_epochs, net.data.batch_size) == (0.1, 40, 256)
    for cfg in (lin, net):
        assert (cfg.optim.name, cfg.optim.wd, cfg.schedule.name) == ("scratch_sgd", 0.0, "constant")
    assert pix.trainer.max_epochs == 1 and pix.callbacks.lr_monitor is None
    assert compose_run("task=mnist_basics", "model=linear", "optim.lr=0.3").optim.lr == 0.3  # overrides still win


def test_real_pixel_baseline_matches_the_chapter(train_run, real_data):
    """MNIST's 3s and 7s are MNIST_SAMPLE's images: the chapter's 0.9168 and 0.9854 (L1), to the digit."""
    _, run_dir = train_run("task=mnist_basics", "data=mnist", f"data.root={real_data}", "data.download=false",
                           "model=pixel_similarity", "logger=csv", "callbacks.progress_bar.refresh_rate=0")
    metrics = summary(run_dir)["metrics"]
    assert round(metrics["val/acc_3"], 4) == 0.9168 and round(metrics["val/acc_7"], 4) == 0.9854


@pytest.mark.slow  # importing fastai takes ~10-40 s here
def test_scratch_sgd_takes_fastais_sgd_step():
    """fastai's own `SGD(mom=0)` (the chapter's `opt_func=SGD`) moves linear1 exactly as optim=scratch_sgd."""
    pytest.importorskip("fastai")
    from fastai.optimizer import SGD

    from fastlight.training.optimizers import build_optimizer

    torch.manual_seed(0)
    ours = Linear1(784, [3, 7])
    theirs = copy.deepcopy(ours)
    x, y = torch.rand(64, 784), torch.randint(0, 2, (64,))
    opt_ours = build_optimizer("scratch_sgd", ours.parameters(), lr=1.0, wd=0.0)
    opt_theirs = SGD(list(theirs.parameters()), lr=1.0)
    for model, opt in ((ours, opt_ours), (theirs, opt_theirs)):
        for _ in range(2):
            mnist_loss(model(x), is_first(y)).backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(ours.weights, theirs.weights, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=0, atol=1e-6)
