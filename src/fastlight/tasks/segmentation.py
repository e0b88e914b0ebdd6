"""Semantic segmentation, fast.ai lesson 3 (CamVid): a U-Net with one output channel per class.

Every pixel is a classification: the loss is cross-entropy over the class channels (fastai's
`CrossEntropyLossFlat(axis=1)`). The lesson's metric `acc_camvid` is the pixel accuracy over the
pixels whose target is not the void class; the mean IoU (torchmetrics, classes absent from both
prediction and target left out) ignores void too. The lesson's recipe is the default stages: 10
epochs frozen at slice(lr) with pct_start 0.9, then 12 unfrozen at slice(lr/400, lr/4) with
pct_start 0.8 (lr = 3e-3); a stage's `size` trains at half size first, as the lesson does.

Each epoch an overlay grid (image, target, prediction) goes to the run folder (grids/) and to W&B;
the class confusion of the validation set is saved as confusion.csv. `data.batch_size=auto` lets
Lightning's BatchSizeFinder choose the batch size on a GPU (see `fastlight.data.segmentation`).
`predict_masks` writes colour masks for new images (`fastlight predict <run> images/`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
)

from fastlight.data.segmentation import SegmentationBase, batch_size_callbacks
from fastlight.errors import ConfigError, FastlightError
from fastlight.tasks.base import Task
from fastlight.training.finetune import StagedTraining, parse_stages


def palette(n: int, void: int | None = None) -> torch.Tensor:
    """n distinct-ish RGB colours (uint8), void black: a fixed golden-angle walk round the hue circle."""
    import colorsys

    cols = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.95 - 0.3 * (i % 3 == 2)) for i in range(n)]
    out = (torch.tensor(cols) * 255).round().byte()
    if void is not None:
        out[void] = 0
    return out


class SegmentationTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, stages: list | None = None,
                 train_bn: bool = True, n_grid: int = 4, ignore_void_in_loss: bool = False,
                 channels_last: bool = False):
        super().__init__(optim, schedule)
        self.model = model
        self.stages, self.train_bn, self.n_grid = stages, train_bn, int(n_grid)
        self.ignore_void_in_loss, self.channels_last = ignore_void_in_loss, bool(channels_last)
        self.codes: list[str] = []
        self.void: int | None = None
        self.metrics: nn.ModuleDict | None = None
        self._staged: StagedTraining | None = None
        self._grid: list = []

    # --- model, classes, callbacks -----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def layer_groups(self) -> list[nn.Module]:
        return self.model.layer_groups()

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        self.codes, self.void = list(dm.codes), dm.void
        n, ignore = len(self.codes), self.void
        if self.metrics is None:  # built here: the number of classes comes with the data
            self.metrics = nn.ModuleDict({
                f"{s}_{name}": metric for s in ("val", "test") for name, metric in (
                    ("acc_camvid", MulticlassAccuracy(n, average="micro", ignore_index=ignore)),
                    ("miou", MulticlassJaccardIndex(n, average="macro", ignore_index=ignore)))})
            self.confusion = MulticlassConfusionMatrix(n, ignore_index=ignore)

    def configure_callbacks(self):
        callbacks = batch_size_callbacks(self.trainer.datamodule, self.trainer)
        if self.stages is None:
            return callbacks
        if self._staged is None:  # built once: later calls (trainer.test) must see the same stages
            if isinstance(self.stages, str):
                raise ConfigError(f"task.stages={self.stages!r}: give a list of stages or null")
            self._staged = StagedTraining(parse_stages(self.stages), train_bn=self.train_bn)
        return callbacks + [self._staged]

    def on_fit_start(self) -> None:
        if self.channels_last:  # NHWC convs: ~1.3x faster steps for this U-Net on a CPU (plain convs + BN)
            self.model.to(memory_format=torch.channels_last)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # BatchSizeFinder's trials are one-step fits (max_steps=1): Task's stop-at-max_steps would end
        # every later trial before its step, so no size would ever run out of memory.
        if not getattr(self, "finding_batch_size", False):
            super().on_train_batch_end(outputs, batch, batch_idx)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # What inference needs without the data: the class names (for masks and overlays) and void.
        checkpoint["fastlight_codes"], checkpoint["fastlight_void"] = self.codes, self.void

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.codes = checkpoint.get("fastlight_codes", self.codes)
        self.void = checkpoint.get("fastlight_void", self.void)

    # --- loss and metrics --------------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ignore = self.void if self.ignore_void_in_loss and self.void is not None else -100
        return F.cross_entropy(out.float(), y, ignore_index=ignore)

    def training_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return self.loss(self(x), y)

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, y = batch
        out = self(x).float()
        n = len(y)
        self.log(f"{stage}/loss", self.loss(out, y), batch_size=n, prog_bar=stage == "val")
        pred = out.argmax(1)
        for name in ("acc_camvid", "miou"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(pred, y)
            self.log(f"{stage}/{name}", metric, batch_size=n, prog_bar=stage == "val")
        if stage == "val":
            self.confusion.update(pred, y)
            if batch_idx == 0:
                k = min(self.n_grid, n)
                self._grid = [(SegmentationBase.denormalize(x[:k]).cpu(), y[:k].cpu(), pred[:k].cpu())]

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        confusion = self.confusion.compute().cpu()
        self.confusion.reset()
        if self.trainer.sanity_checking or self.trainer.global_rank != 0:
            return
        import pandas as pd

        from fastlight.interpret.media import publish_image, publish_table

        run_dir = Path(self.trainer.default_root_dir)
        df = pd.DataFrame(confusion.numpy(), columns=self.codes)
        df.insert(0, "actual", self.codes)
        publish_table(self.trainer.loggers, run_dir / "confusion.csv", df, key="val/confusion")
        if self._grid:
            img, y, pred = self._grid[0]
            grid = overlay_grid(img, y, pred, palette(len(self.codes), self.void))
            publish_image(self.trainer.loggers, run_dir / "grids" / f"epoch_{self.current_epoch:03d}.png", grid,
                          key="val/overlay", step=self.global_step)
            self._grid = []


def overlay_grid(img: torch.Tensor, y: torch.Tensor, pred: torch.Tensor, colours: torch.Tensor, alpha: float = 0.5):
    """One row per image: the image, the target over it, the prediction over it (HWC uint8)."""
    from torchvision.utils import make_grid

    cols = colours.float() / 255
    tiles = []
    for i in range(len(img)):
        for mask in (None, y[i], pred[i]):
            tiles.append(img[i] if mask is None else (1 - alpha) * img[i] + alpha * cols[mask].permute(2, 0, 1))
    grid = make_grid(torch.stack(tiles), nrow=3, padding=2, pad_value=1.0)
    return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# --- `fastlight predict <segmentation run> images/` --------------------------------------------------
def predict_masks(run_dir, inputs, out=None, ckpt: str = "best") -> Path:
    """Colour masks of `inputs` (images or folders of images) written into `out` as `<stem>_mask.png`;
    returns `out` (default: `<first input's name>_masks` here).

    The PNGs are palette images: each pixel's value is its class index, shown in the class's
    colour (the classes are listed in `out/codes.txt`). Images are predicted at the run's
    training size and the mask is resized back (nearest) to the image's own size.
    """
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    from fastlight.data.images import read_image
    from fastlight.data.vision import image_files
    from fastlight.runs import load_run

    cfg, _, task = load_run(run_dir, ckpt, setup_data=False)
    if not isinstance(task, SegmentationTask):
        raise FastlightError(f"{run_dir} is a {type(task).__name__} run, not a segmentation run")
    inputs = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    files = []
    for p in map(Path, inputs):
        if not p.exists():
            raise FastlightError(f"{p} does not exist; give image files or folders of images")
        files += image_files(p) if p.is_dir() else [p]
    if not files:
        raise FastlightError(f"no images found in {', '.join(map(str, inputs))}")
    out = Path(out) if out else Path(f"{Path(inputs[0]).stem}_masks")
    out.mkdir(parents=True, exist_ok=True)
    size = cfg.data.get("size", 128)
    size = [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]
    flat = palette(len(task.codes), task.void).flatten().tolist()
    for f in files:
        img = read_image(f, advice="")  # a file the user named, not one of a dataset
        x = TF.resize(TF.pil_to_tensor(img), size, antialias=True)[None]
        with torch.inference_mode():
            pred = task(SegmentationBase.normalize(x)).argmax(1)
        pred = F.interpolate(pred[None].float(), size=(img.height, img.width), mode="nearest")[0, 0].byte()
        mask = Image.fromarray(pred.numpy(), mode="P")
        mask.putpalette(flat)
        mask.save(out / f"{f.stem}_mask.png")
    (out / "codes.txt").write_text("\n".join(task.codes) + "\n")
    return out
