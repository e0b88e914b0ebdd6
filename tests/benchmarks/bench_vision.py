"""Vision training speed: fastlight vs fastai's vision_learner vs a plain PyTorch loop, on hymenoptera.

The same job for all three: ResNet-34 with fastai's head, no pretrained weights (none can be had
offline), 128 px, batch size 32, the 245 training images of `hymenoptera/train` (7 full batches
an epoch, the last partial batch dropped as fastai does), RandomResizedCrop(min_scale 0.75) +
flip + rotation + lighting, ImageNet normalisation, Adam(0.9, 0.99, eps 1e-5, decoupled wd 0.01),
one-cycle to 1e-3, the same DataLoader workers. Measured: training images per second (validation
excluded, loading included), per epoch after a warm-up epoch, median over all measured epochs of
all repeats; peers run interleaved, in a rotating order. Wall time and this process's CPU time are
both shown: on a shared machine images per CPU-second are the steadier figure.

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_vision.py
    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_vision.py --repeats 3 --epochs 3

fastai is optional (`pip install -e ".[bench]"`); without it its row is skipped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchvision

from fastlight.data.vision import IMAGENET_MEAN, IMAGENET_STD, train_transform
from fastlight.models.vision import create_vision_model
from fastlight.training.layer_groups import param_groups
from fastlight.training.schedules import build_schedule

try:
    import fastai.vision.all as fv
except ImportError:
    fv = None

os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"  # as run.py does, for every peer
torch.set_flush_denormal(True)

SIZE, BS, LR, WD, SEED = 128, 32, 1e-3, 0.01, 42
REPO = Path(__file__).resolve().parents[2]


# --- plain PyTorch: torchvision's ImageFolder, the same model and transforms, a hand-written loop -----
def run_plain(path: Path, epochs: int, workers: int) -> list[tuple[int, float, float]]:
    torch.manual_seed(SEED)
    ds = torchvision.datasets.ImageFolder(str(path / "train"), transform=train_transform(SIZE))
    loader = torch.utils.data.DataLoader(ds, batch_size=BS, shuffle=True, drop_last=True, num_workers=workers)
    model = create_vision_model(len(ds.classes), arch="resnet34", pretrained=False)
    opt = torch.optim.AdamW(param_groups([model], LR, WD), lr=LR, betas=(0.9, 0.99), eps=1e-5)
    sched = build_schedule(opt, "one_cycle", total_steps=epochs * len(loader))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for _ in range(epochs):
        model.train()
        start, cpu, n = time.perf_counter(), time.process_time(), 0
        for x, y in loader:
            x = (x.float() / 255 - mean) / std
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n += len(y)
        out.append((n, time.perf_counter() - start, time.process_time() - cpu))
    return out


# --- fastlight: the real run, through Hydra ---------------------------------------------------------
class TrainTimer(L.Callback):
    """Training time of each epoch: from its start to its last batch (validation comes after)."""

    epochs: list = []

    def on_train_epoch_start(self, trainer, pl_module):
        self._start, self._n = (time.perf_counter(), time.process_time()), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._n += len(batch[1])
        if batch_idx == trainer.num_training_batches - 1:
            TrainTimer.epochs.append((self._n, time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def run_fastlight(path: Path, epochs: int, workers: int, extra: list[str]) -> list[tuple[int, float, float]]:
    from fastlight import config, run

    run_dir = Path(tempfile.mkdtemp(prefix="bench_vision_"))
    overrides = [
        "task=vision", "data=folder", f"data.path={path}", f"data.size={SIZE}", f"data.batch_size={BS}",
        f"data.num_workers={workers}", "model.arch=resnet34", "model.pretrained=false",
        "task.stages=null", f"optim.lr={LR}", f"optim.wd={WD}", f"trainer.max_epochs={epochs}", "logger=csv",
        f"seed={SEED}", "+callbacks.train_timer._target_=__main__.TrainTimer",
        "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", *extra,  # fastai runs with no_bar too
    ]
    cfg = config.compose(overrides, run_dir, job_name="bench")
    TrainTimer.epochs = []
    run.train(cfg)
    return list(TrainTimer.epochs)


# --- fastai: vision_learner, as the lesson writes it ------------------------------------------------
class FastaiTrainTimer(fv.Callback if fv else object):
    def before_train(self):
        self._start, self._n = (time.perf_counter(), time.process_time()), 0

    def after_batch(self):
        if self.training:
            self._n += len(self.yb[0])

    def after_train(self):
        self.epochs.append((self._n, time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def run_fastai(path: Path, epochs: int, workers: int) -> list[tuple[int, float, float]]:
    fv.set_seed(SEED)
    dls = fv.ImageDataLoaders.from_folder(
        path, train="train", valid="val", bs=BS, num_workers=workers,
        item_tfms=fv.RandomResizedCrop(SIZE, min_scale=0.75),
        batch_tfms=[*fv.aug_transforms(), fv.Normalize.from_stats(*fv.imagenet_stats)])
    learn = fv.vision_learner(dls, fv.resnet34, pretrained=False, metrics=fv.error_rate)
    timer = FastaiTrainTimer()
    timer.epochs = []
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, LR, wd=WD, cbs=[timer])
    return timer.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_root = os.environ.get("FASTLIGHT_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", default=default_root, help="the data root holding hymenoptera/")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is a warm-up, not measured")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for every peer")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, every peer")
    parser.add_argument("--peers", nargs="+", default=["plain", "fastlight", "fastai"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra fastlight overrides")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    path = Path(args.data) / "hymenoptera"
    if not (path / "train").is_dir():
        raise SystemExit(f"no hymenoptera/train under {args.data}; pass --data <folder holding hymenoptera/>")
    peers = [p for p in args.peers if p != "fastai" or fv is not None]
    if "fastai" in args.peers and fv is None:
        print("fastai is not installed: its row is skipped (pip install -e '.[bench]')")
    runners = {
        "plain": lambda: run_plain(path, args.epochs, args.workers),
        "fastlight": lambda: run_fastlight(path, args.epochs, args.workers, args.set),
        "fastai": lambda: run_fastai(path, args.epochs, args.workers),
    }
    measured = {p: [] for p in peers}
    for rep in range(args.repeats):
        for p in peers[rep % len(peers):] + peers[: rep % len(peers)]:  # rotate the order: fair to drifts
            torch.set_num_threads(args.threads)
            epochs = runners[p]()[1:]  # the first epoch warms up (worker start, kernel selection)
            measured[p] += epochs
            print(f"  repeat {rep} {p:9s}: " + ", ".join(f"{n / w:.2f} img/s ({n / c:.2f} img/CPU-s)" for n, w, c in epochs),
                  file=sys.stderr, flush=True)
    wall = {p: statistics.median(n / w for n, w, _ in measured[p]) for p in peers}
    cpu = {p: statistics.median(n / c for n, _, c in measured[p]) for p in peers}

    def ratio(med, p, ref):
        return f"{med[p] / med[ref]:.2f}x" if ref in med else "-"

    print(f"\nhymenoptera train (245 images, 224 per epoch), ResNet-34 from scratch, {SIZE} px, batch size {BS}, "
          f"{args.workers} workers, torch threads {args.threads}; {args.repeats} repeats x {args.epochs - 1} measured epochs")
    print(f"{'':10s} {'img/s':>8s} {'vs plain':>9s} {'vs fastai':>10s} {'img/CPU-s':>10s} {'vs plain':>9s} {'vs fastai':>10s}")
    for p in peers:
        print(f"{p:10s} {wall[p]:8.2f} {ratio(wall, p, 'plain'):>9s} {ratio(wall, p, 'fastai'):>10s} "
              f"{cpu[p]:10.2f} {ratio(cpu, p, 'plain'):>9s} {ratio(cpu, p, 'fastai'):>10s}")


if __name__ == "__main__":
    main()
