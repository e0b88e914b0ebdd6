"""The vision task: fastai's head on a ResNet body, the image sources, pretrained weights offline, and
learning tests on synthetic shapes for the three problem types (a tiny body keeps them fast)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from fastlight.data.image_csv import MultiLabelCSVData, RegressionCSVData
from fastlight.data.shapes import ShapesData
from fastlight.data.vision import IMAGENET_MEAN, ImageFolderData, LabelledTestFolderData, PetsData, image_folder
from fastlight.errors import ConfigError, DataError
from fastlight.models.vision import AdaptiveConcatPool2d, VisionModel, create_head, create_vision_model

TINY = "model._target_=tests.tasks.test_vision.tiny_vision_model"
FAST = ("task=vision", "data=shapes", TINY, "logger=csv", "data.size=32", "data.n_train=800", "data.n_valid=160",
        "callbacks.progress_bar.refresh_rate=0", "trainer.num_sanity_val_steps=0")
LEARN = ("task.stages=null", "optim.lr=1e-2", "trainer.max_epochs=8")  # from scratch: one plain one-cycle


def tiny_vision_model(n_out, arch=None, pretrained=False, weights_path=None, ps=0.5, lin_ftrs=None, concat_pool=True,
                      y_range=None):
    """A ResNet-shaped body (8 children, split at 6) small enough for CPU tests, with fastai's head."""

    def block(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         nn.Identity(), block(16, 16, 1), block(16, 32, 2), block(32, 64, 2), block(64, 64, 1))
    return VisionModel(body, create_head(64, n_out, lin_ftrs, ps, concat_pool, y_range))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def offline(monkeypatch):
    """No network, whatever the machine has: name lookups fail as they do offline."""

    def fail(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


# --- model --------------------------------------------------------------------------------------------
def test_head_and_layer_groups_are_fastais():
    model = create_vision_model(37, arch="resnet18", pretrained=False)
    body, head = model
    kinds = [type(m) for m in head]
    assert kinds == [AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU,
                     nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert (head[2].num_features, head[4].in_features, head[4].out_features, head[8].out_features) == (1024, 1024, 512, 37)
    assert (head[3].p, head[7].p) == (0.25, 0.5)
    assert head[4].bias is None and head[8].bias is None  # a BN comes right before each Linear
    assert torch.all(head[2].weight == 1) and torch.allclose(head[2].bias, torch.full((1024,), 1e-3))
    assert head[4].weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.1)  # kaiming normal, fan_in
    with torch.device("meta"):  # structure only: no time spent initialising weights
        resnet, rn34, rn50 = (torchvision.models.resnet34(), create_vision_model(37, arch="resnet34", pretrained=False),
                              create_vision_model(2, arch="resnet50", pretrained=False))
    groups = rn34.layer_groups()
    names = [n for n, _ in resnet.named_children()]
    assert [type(m) for m in groups[0]] == [type(getattr(resnet, n)) for n in names[:6]]  # conv1 .. layer2
    assert [type(m) for m in groups[1]] == [type(getattr(resnet, n)) for n in names[6:8]]  # layer3, layer4
    assert groups[2] is rn34[1]
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 37)
    assert rn50[1][2].num_features == 4096
    with pytest.raises(ConfigError, match="resnet18, resnet34, resnet50"):
        create_vision_model(2, arch="vgg16", pretrained=False)


def test_y_range_squashes_outputs():
    model = tiny_vision_model(3, y_range=[2, 5]).eval()
    with torch.no_grad():
        out = model(torch.randn(8, 3, 32, 32))
    assert ((out > 2) & (out < 5)).all() and out.std() > 0


def test_pretrained_weights_offline_say_how_to_get_them(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as e:
        create_vision_model(2, arch="resnet18", pretrained=True)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "model.weights_path" in msg and "model.pretrained=false" in msg
    assert "\n" not in msg


def test_cached_or_local_weights_are_loaded_without_network(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")  # as torchvision's download leaves it
    local = str(cache / "resnet18-f37072fd.pth")
    for model in (create_vision_model(2, arch="resnet18", pretrained=True),
                  create_vision_model(2, arch="resnet18", pretrained=False, weights_path=local)):
        assert torch.equal(model[0][0].weight, reference.conv1.weight)
        assert torch.equal(model[0][7][1].bn2.running_var, reference.layer4[1].bn2.running_var)
    with pytest.raises(DataError, match="do not fit resnet34"):
        create_vision_model(2, arch="resnet34", weights_path=local)
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(DataError, match="not a readable torch state dict"):
        create_vision_model(2, arch="resnet18", weights_path=str(tmp_path / "junk.pth"))


# --- data ---------------------------------------------------------------------------------------------
def write_images(folder, names, size=(40, 30), color=(200, 30, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size, color).save(folder / name)


def test_image_folder_finds_val_or_valid_and_an_optional_test(tmp_path):
    for split, n in (("train", 6), ("val", 3)):
        for c in ("ants", "bees"):
            write_images(tmp_path / split / c, [f"{i}.jpg" for i in range(n)])
    data = image_folder(str(tmp_path), size=16, batch_size=4, num_workers=0)
    assert type(data) is ImageFolderData  # no test/: no test metrics
    data.prepare_data()
    data.setup()
    assert data.classes == ["ants", "bees"] and len(data.train_ds) == 12 and len(data.valid_ds) == 6
    x, y = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    x, _ = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)  # no lighting jitter here
    red = (200 / 255 - IMAGENET_MEAN[0]) / 0.229  # ImageNet-normalised, channel 0 of a red image
    assert x[:, 0].mean().item() == pytest.approx(red, abs=0.05)
    data.set_size(24)  # a stage's progressive resizing
    assert next(iter(data.val_dataloader()))[0].shape[-2:] == (24, 24)
    write_images(tmp_path / "test", ["a.png", "b.png"])  # unlabelled: predictions only
    flat = image_folder(str(tmp_path), size=16, num_workers=0)
    flat.setup()
    assert type(flat) is ImageFolderData and len(flat.unlabelled_test) == 2
    write_images(tmp_path / "test" / "bees", ["c.png"])
    labelled = image_folder(str(tmp_path), size=16, num_workers=0)
    labelled.setup()
    assert type(labelled) is LabelledTestFolderData and len(labelled.test_ds) == 1


def test_image_folder_mistakes_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="is not a folder"):
        image_folder(str(tmp_path / "nope")).prepare_data()
    write_images(tmp_path / "train" / "a", ["1.jpg"])
    with pytest.raises(DataError, match=r"needs train/ and valid/ or val/.*found: train"):
        image_folder(str(tmp_path)).prepare_data()
    write_images(tmp_path / "val" / "a", ["1.jpg"])
    with pytest.raises(ConfigError, match="single_label"):
        image_folder(str(tmp_path), problem="multi_label").setup()
    with pytest.raises(ConfigError, match="data.path is not set"):
        image_folder(None).prepare_data()


def test_pets_labels_come_from_file_names(tmp_path):
    names = [f"{breed}_{i}.jpg" for breed in ("Abyssinian", "american_bulldog", "great_pyrenees") for i in range(10)]
    write_images(tmp_path / "oxford-iiit-pet" / "images", names)
    data = PetsData(root=str(tmp_path), size=16, num_workers=0)
    data.prepare_data()  # present: no download
    data.setup()
    assert data.classes == ["Abyssinian", "american_bulldog", "great_pyrenees"]
    assert (len(data.train_ds), len(data.valid_ds)) == (24, 6)
    labels = {p.name: data.classes[y] for p, y in data.train_ds.items + data.valid_ds.items}
    assert labels["american_bulldog_3.jpg"] == "american_bulldog"


def test_pets_offline_stops_before_training_with_what_to_do(offline, train_run, tmp_path):
    with pytest.raises(SystemExit):
        train_run("task=vision", f"data.root={tmp_path}", "logger=none")
    summary = json.loads(next(tmp_path.rglob("summary.json")).read_text())
    assert summary["status"] == "failed"
    assert "Oxford-IIIT Pets" in summary["error"] and "data=folder data.path=" in summary["error"]


def test_multi_label_csv_gives_multi_hot_targets(tmp_path):
    write_images(tmp_path / "imgs", [f"{i}.jpg" for i in range(10)])
    tags = ["clear primary", "cloudy", "haze primary water", "primary", "clear"] * 2
    pd.DataFrame({"image_name": list(range(10)), "tags": tags}).to_csv(tmp_path / "train.csv", index=False)
    data = MultiLabelCSVData(path=str(tmp_path), csv="train.csv", folder="imgs", suffix=".jpg", problem="multi_label",
                             size=16, num_workers=0)
    data.setup()
    assert data.classes == ["clear", "cloudy", "haze", "primary", "water"] and data.dims == {"n_out": 5}
    by_file = dict(zip([f"{i}.jpg" for i in range(10)], tags))
    for i in range(len(data.valid_ds)):
        _, target = data.valid_ds[i]
        expected = by_file[data.valid_ds.items[i][0].name].split()
        assert [data.classes[j] for j in target.nonzero().flatten()] == sorted(expected)


def test_points_move_with_the_image_and_scale_to_minus_one_one(tmp_path):
    write_images(tmp_path, ["a.png", "b.png"], size=(100, 50))
    pd.DataFrame({"file": ["a.png", "b.png"] * 3, "x": [25.0, 75.0] * 3, "y": [10.0, 40.0] * 3}).to_csv(tmp_path / "pts.csv", index=False)
    data = RegressionCSVData(path=str(tmp_path), csv="pts.csv", problem="regression", size=20, num_workers=0,
                             max_rotate=0, max_lighting=0)
    data.setup()
    for (file, _), i in zip(data.valid_ds.items, range(len(data.valid_ds))):
        img, target = data.valid_ds[i]
        expected = {"a.png": [-0.5, -0.6], "b.png": [0.5, 0.6]}[file.name]
        assert img.shape == (3, 20, 20) and target.tolist() == pytest.approx(expected, abs=0.06)
    data.train_ds.transform.transforms[1].p = 1.0  # always flip: x changes sign
    img, target = data.train_ds[0]
    expected = {"a.png": [0.5, -0.6], "b.png": [-0.5, 0.6]}[data.train_ds.items[0][0].name]
    assert target.tolist() == pytest.approx(expected, abs=0.12)


def test_shapes_have_planted_targets_for_each_problem():
    single = ShapesData(n_train=20, n_valid=10, size=32, num_workers=0)
    multi = ShapesData(problem="multi_label", n_train=20, n_valid=10, size=32, num_workers=0)
    points = ShapesData(problem="regression", n_train=20, n_valid=10, size=32, num_workers=0)
    for d in (single, multi, points):
        d.setup()
    assert single.dims == {"n_out": 4} and multi.dims == {"n_out": 4} and points.dims == {"n_out": 2}
    assert all(1 <= int(multi.valid_ds[i][1].sum()) <= 3 for i in range(10))
    assert all(points.valid_ds[i][1].abs().max() < 1 for i in range(10))


# --- training -----------------------------------------------------------------------------------------
def test_learns_the_shapes_from_scratch_and_leaves_an_interpretation(train_run):
    value, run_dir = train_run(*FAST, *LEARN)
    assert value < 0.1  # error rate; chance is 0.75
    summary = json.loads((run_dir / "summary.json").read_text())
    interp = summary["interpretation"]
    assert (run_dir / "interpretation" / "top_losses.png").is_file()
    assert (run_dir / "interpretation" / "confusion_matrix.png").is_file()
    assert all(a != p and n >= 1 for a, p, n in interp["most_confused"])


def test_fine_tune_logs_each_layer_groups_lr_and_the_interpretation_to_csv_and_wandb(train_run):
    value, run_dir = train_run(*FAST, "optim.lr=1e-2", "trainer.max_epochs=1", "data.n_train=320", "data.n_valid=32",
                               "logger=wandb", "trainer.log_every_n_steps=1")  # offline (conftest), metrics.csv beside it
    media = {p.name.split("_")[0] for p in run_dir.glob("wandb/offline-run-*/files/media/images/interpretation/*.png")}
    assert media == {"top", "confusion"}  # top_losses_<step>_<hash>.png, confusion_matrix_...
    assert list(run_dir.glob("wandb/offline-run-*/files/media/table/interpretation/most_confused*.json"))
    metrics = pd.read_csv(run_dir / "metrics.csv")
    lrs = metrics[["lr-AdamW/group0", "lr-AdamW/group1", "lr-AdamW/group2"]].dropna()
    assert len(lrs) == 20  # 10 steps frozen + 10 unfrozen
    assert (lrs.iloc[0] * 25).tolist() == pytest.approx([1e-3, 1e-3, 1e-2])  # slice(1e-2), warming up from /25
    assert (lrs.iloc[10] * 5).tolist() == pytest.approx([5e-5, 5e-4, 5e-3])  # slice(5e-5, 5e-3), from /5
    assert lrs.iloc[:10].max().tolist() == pytest.approx([1e-3, 1e-3, 1e-2], rel=0.05)  # each stage's own peak
    assert lrs.iloc[10:].max().tolist() == pytest.approx([5e-5, 5e-4, 5e-3], rel=0.05)


def test_multi_label_head_learns_planted_tags(train_run):
    value, _ = train_run(*FAST, *LEARN, "data.problem=multi_label", "data.n_train=1200")  # smaller shapes: more data
    assert value > 0.95  # F-beta(2) over images; each tag is present in ~50% of the images


def test_regression_head_learns_planted_points(train_run):
    value, run_dir = train_run(*FAST, *LEARN, "data.problem=regression", "model.y_range=[-1,1]")
    assert value < 0.012  # MSE in [-1, 1] units; predicting the mean scores 0.048
    assert (run_dir / "interpretation" / "top_losses.png").is_file()


def test_mixed_precision_bf16_on_cpu(train_run):
    dtypes = "+callbacks.dtypes._target_=tests.tasks.test_vision.RecordOutputDtypes"
    value, run_dir = train_run(*FAST, *LEARN, "trainer.precision=bf16-mixed", "trainer.max_epochs=6", dtypes)
    # the forward ran in bfloat16 under autocast, the weights stayed float32, and it still learnt
    assert json.loads((run_dir / "dtypes.json").read_text()) == {"output": ["torch.bfloat16"], "weights": ["torch.float32"]}
    assert value < 0.2  # error rate; chance is 0.75


class RecordOutputDtypes(L.Callback):
    """The dtypes of the model's training outputs and of its weights (a test-only Lightning callback)."""

    def on_fit_start(self, trainer, pl_module):
        self.seen = {"output": set(), "weights": set()}
        last = [m for m in pl_module.modules() if isinstance(m, nn.Linear)][-1]
        last.register_forward_hook(lambda m, i, out: self.seen["output"].add(str(out.dtype)) if m.training else None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen["weights"] |= {str(p.dtype) for p in pl_module.parameters()}

    def on_fit_end(self, trainer, pl_module):
        (Path(trainer.default_root_dir) / "dtypes.json").write_text(json.dumps({k: sorted(v) for k, v in self.seen.items()}))


def test_progressive_resizing_is_a_stage_setting(train_run):
    stages = "task.stages=[{epochs:1,lr:1e-2,freeze_to:-1,size:24},{epochs:1,lr:[1e-4,1e-2],size:32}]"
    sizes = "+callbacks.sizes._target_=tests.tasks.test_vision.RecordSizes"
    value, run_dir = train_run(*FAST, stages, sizes, "data.n_train=64", "data.n_valid=32")
    assert json.loads((run_dir / "sizes.json").read_text()) == {"train": [24, 32], "val": [24, 32]}


class RecordSizes(L.Callback):
    """Image sizes the model saw, per epoch (a test-only Lightning callback)."""

    def __init__(self):
        self.seen = {"train": [], "val": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.seen["train"].append(batch[0].shape[-1])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and not trainer.sanity_checking:
            self.seen["val"].append(batch[0].shape[-1])

    def on_fit_end(self, trainer, pl_module):
        (Path(trainer.default_root_dir) / "sizes.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
def test_resnet18_learns_the_shapes_from_scratch(train_run):
    value, _ = train_run("task=vision", "data=shapes", "model.arch=resnet18", "model.pretrained=false", "logger=csv",
                         "task.stages=null", "optim.lr=3e-3", "trainer.max_epochs=4")
    assert value < 0.15


def planted_hymenoptera(source: Path, dest: Path) -> Path:
    """The real ants/bees jpgs with planted structure: every bee carries a yellow square in its
    centre (as large as augmentation's crops and rotations leave whole), so a ResNet from scratch
    can learn in a couple of epochs what it could never learn from ant and bee features alone."""
    for image in sorted(source.glob("*/*/*.jpg")):
        out = dest / image.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        img = Image.open(image).convert("RGB").resize((96, 96))
        if out.parent.name == "bees":
            img.paste((255, 220, 0), (30, 30, 66, 66))
        img.save(out, quality=90)
    return dest


@pytest.mark.slow
def test_hymenoptera_fine_tunes_end_to_end(train_run, real_data, tmp_path):
    path = planted_hymenoptera(real_data / "hymenoptera", tmp_path / "hymenoptera")
    n_val = {c: len(list((path / "val" / c).glob("*.jpg"))) for c in ("ants", "bees")}
    value, run_dir = train_run("task=vision", "data=folder", f"data.path={path}", "data.size=64",
                               "model.arch=resnet18", "model.pretrained=false", "logger=csv", "trainer.max_epochs=2",
                               "data.batch_size=16")  # 15 steps an epoch, not 3
    majority = min(n_val.values()) / sum(n_val.values())  # 0.46: always answering "bees"
    assert value < majority - 0.25  # fine_tune's frozen then unfrozen stages learnt the planted mark
    interp = json.loads((run_dir / "summary.json").read_text())["interpretation"]
    assert (run_dir / "interpretation" / "confusion_matrix.png").is_file()
    errors = sum(n for _, _, n in interp["most_confused"])
    assert errors == round(value * sum(n_val.values()))  # the confusion matrix is the validation set's
