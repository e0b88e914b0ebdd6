"""Image restoration, fast.ai lesson 7 ("decrappification"): a U-Net trained with the feature loss.

The model maps a degraded image (crappified, shrunk, grey, with holes: `fastlight.data.restoration`)
to the original. The lesson's loss compares VGG16-bn activations and their Gram matrices as well
as pixels (`fastlight.models.feature_loss`); `loss.name=mse|l1` trains on pixels only. The
lesson's recipe is the default stages: 10 epochs frozen at slice(1e-2) (pct_start 0.9), then 10
unfrozen at slice(1e-5, 1e-3); a stage's `size` does the lesson's progressive resizing (128 px,
then 256).

Quality is measured against doing nothing: PSNR and SSIM of the output AND of the input itself
(the degraded image upsampled to the target's size), logged per epoch as `val/psnr` next to
`val/psnr_input`, so the gain is visible in dB. With `data.degrade=bicubic` the papers' protocol is
logged too: PSNR on the Y channel with a border of `scale` pixels cropped (`val/psnr_y`). Each
epoch a before / after / target grid goes to the run folder (grids/) and to W&B.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from fastlight.data.restoration import RestorationBase
from fastlight.errors import ConfigError
from fastlight.tasks.base import Task
from fastlight.training.finetune import StagedTraining, parse_stages

LOSSES = ("feature", "mse", "l1")


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of [0, 1] RGB, in [16/255, 235/255] (what Set5/Set14 PSNRs are measured on)."""
    w = torch.tensor([65.481, 128.553, 24.966], device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True) / 255 + 16 / 255


def image_metrics() -> MetricCollection:
    psnr = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))  # mean of per-image PSNRs
    return MetricCollection({"psnr": psnr, "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)})


def make_grid_image(rows: list[tuple[torch.Tensor, ...]]):
    """rows of same-sized [0, 1] CHW images -> one HWC uint8 picture, one row per example."""
    from torchvision.utils import make_grid

    flat = [img for row in rows for img in row]
    grid = make_grid(torch.stack(flat), nrow=len(rows[0]), padding=2, pad_value=1.0)
    return (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


class SuperResTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, loss: dict | str | None = None,
                 stages: list | None = None, train_bn: bool = True, n_grid: int = 4):
        super().__init__(optim, schedule)
        self.model = model
        loss = {"name": loss} if isinstance(loss, str) else dict(loss or {"name": "mse"})
        self.loss_name = loss.pop("name", "feature")
        if self.loss_name not in LOSSES:
            raise ConfigError(f"loss.name={self.loss_name!r} must be one of: {', '.join(LOSSES)}")
        # Pixel losses take no settings; the feature loss takes the VGG's (layer_wgts, pretrained, weights_path).
        self.loss_kwargs = loss if self.loss_name == "feature" else {}
        self.loss_fn: nn.Module | None = None  # built in setup: inference alone never needs the VGG
        self.stages, self.train_bn, self.n_grid = stages, train_bn, int(n_grid)
        self._staged: StagedTraining | None = None
        self.metrics = nn.ModuleDict({f"{stage}{kind}": image_metrics()
                                      for stage in ("val", "test") for kind in ("", "_input")})
        y = {f"{stage}{kind}": PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean", dim=(1, 2, 3))
             for stage in ("val", "test") for kind in ("", "_input")}
        self.psnr_y = nn.ModuleDict(y)
        self._grid_rows: list = []

    # --- model, loss and layer groups ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def layer_groups(self) -> list[nn.Module]:
        return self.model.layer_groups()

    def build_loss(self) -> nn.Module:
        if self.loss_name == "feature":
            from fastlight.models.feature_loss import FeatureLoss

            return FeatureLoss(**self.loss_kwargs)
        return nn.MSELoss() if self.loss_name == "mse" else nn.L1Loss()

    def setup(self, stage: str) -> None:
        if self.loss_fn is None:
            self.loss_fn = self.build_loss()  # a submodule from here on: moves with the model

    def configure_callbacks(self):
        if self.stages is None:
            return []  # one fit_one_cycle(trainer.max_epochs, optim.lr), nothing frozen
        if self._staged is None:  # built once: later calls (trainer.test) must see the same stages
            if isinstance(self.stages, str):
                raise ConfigError(f"task.stages={self.stages!r}: give a list of stages or null")
            self._staged = StagedTraining(parse_stages(self.stages), train_bn=self.train_bn)
        return [self._staged]

    # --- steps -------------------------------------------------------------------------------------
    def training_loss(self, batch) -> torch.Tensor:
        x, y = batch
        return self.loss_fn(self(x).float(), y)

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x, y = batch
        out = self(x).float()
        n = len(y)
        self.log(f"{stage}/loss", self.loss_fn(out, y), batch_size=n, prog_bar=stage == "val")
        denorm = RestorationBase.denormalize
        pred, inp, target = denorm(out), denorm(x), denorm(y)
        for kind, img in (("", pred), ("_input", inp)):
            metrics = self.metrics[f"{stage}{kind}"]
            metrics.update(img, target)
            for name, metric in metrics.items():
                self.log(f"{stage}/{name}{kind}", metric, batch_size=n, prog_bar=stage == "val" and name == "psnr"
                         and not kind)
        dm = self.trainer.datamodule
        if getattr(dm, "degrade", None) == "bicubic":
            b = dm.scale
            for kind, img in (("", pred), ("_input", inp)):
                metric = self.psnr_y[f"{stage}{kind}"]
                metric.update(y_channel(img)[..., b:-b, b:-b], y_channel(target)[..., b:-b, b:-b])
                self.log(f"{stage}/psnr_y{kind}", metric, batch_size=n)
        if stage == "val" and batch_idx == 0:
            k = min(self.n_grid, n)
            self._grid_rows = [(inp[i].cpu(), pred[i].cpu(), target[i].cpu()) for i in range(k)]

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._grid_rows or self.trainer.global_rank != 0:
            return
        from fastlight.interpret.media import publish_image

        path = Path(self.trainer.default_root_dir) / "grids" / f"epoch_{self.current_epoch:03d}.png"
        publish_image(self.trainer.loggers, path, make_grid_image(self._grid_rows), key="val/before_after_target",
                      step=self.global_step)
        self._grid_rows = []

    def summarize(self, run_dir: Path) -> dict | None:
        m = {k: float(v) for k, v in self.trainer.callback_metrics.items()}
        gains = {f"{stage}_psnr_gain_db": m[f"{stage}/psnr"] - m[f"{stage}/psnr_input"]
                 for stage in ("val", "test") if f"{stage}/psnr" in m and f"{stage}/psnr_input" in m}
        return {"restoration": gains} if gains else None


# --- inference from a run folder ---------------------------------------------------------------------
def tiled(model: nn.Module, x: torch.Tensor, tile: int = 256, overlap: int = 32) -> torch.Tensor:
    """model(x) for one CHW-batched image, computed tile by tile so memory stays bounded.

    Tiles overlap by `overlap` pixels; each keeps only its centre part, so the seams a U-Net would
    leave at a tile's border (where it sees no context) never reach the output.
    """
    _, _, h, w = x.shape
    if h <= tile and w <= tile:
        return model(x)
    out = None
    overlap = min(overlap, tile // 4)  # each tile keeps at least its central half
    step = tile - 2 * overlap
    for top in range(0, h, step):
        for left in range(0, w, step):
            t0, l0 = max(0, top - overlap), max(0, left - overlap)
            t1, l1 = min(h, top + step + overlap), min(w, left + step + overlap)
            piece = model(x[..., t0:t1, l0:l1])
            if out is None:
                out = x.new_zeros((x.shape[0], piece.shape[1], h, w))
            bt, bl = min(h, top + step), min(w, left + step)
            out[..., top:bt, left:bl] = piece[..., top - t0: bt - t0, left - l0: bl - l0]
    return out


def restore_image(task: SuperResTask, img, scale: int = 1, tile: int = 256):
    """A PIL image restored by a trained task (on the CPU), `scale` times its size.

    As in training, the input is first resized to the output's size (bicubic), then restored.
    """
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    img = img.convert("RGB")
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.BICUBIC)
    x = RestorationBase.normalize(TF.pil_to_tensor(img)[None])
    with torch.inference_mode():
        out = tiled(task.model, x, tile)
    arr = (RestorationBase.denormalize(out)[0] * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr)

