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
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from common import (Column, Epoch, EpochTimer, data_root, fastai_timer, import_fastai, interleaved, median,
                    peers_table, prepare_process, run_fastlight, timer_overrides)

from fastlight.data.vision import IMAGENET_MEAN, IMAGENET_STD, train_transform
from fastlight.models.vision import create_vision_model
from fastlight.training.layer_groups import param_groups
from fastlight.training.schedules import build_schedule

prepare_process()

SIZE, BS, LR, WD, SEED = 128, 32, 1e-3, 0.01, 42


# --- plain PyTorch: torchvision's ImageFolder, the same model and transforms, a hand-written loop -----
def run_plain(path: Path, epochs: int, workers: int) -> list[Epoch]:
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
        out.append(Epoch(time.perf_counter() - start, time.process_time() - cpu, n))
    return out


# --- fastlight: the real run, through Hydra ---------------------------------------------------------
def run_fastlight_vision(path: Path, epochs: int, workers: int, extra: list[str]) -> list[Epoch]:
    overrides = [
        "task=vision", "data=folder", f"data.path={path}", f"data.size={SIZE}", f"data.batch_size={BS}",
        f"data.num_workers={workers}", "model.arch=resnet34", "model.pretrained=false",
        "task.stages=null", f"optim.lr={LR}", f"optim.wd={WD}", f"trainer.max_epochs={epochs}", "logger=csv",
        f"seed={SEED}", *timer_overrides("train"),  # training only: validation comes after
        "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", *extra,  # fastai runs with no_bar too
    ]
    run_fastlight(overrides, prefix="bench_vision_")
    return list(EpochTimer.epochs)


# --- fastai: vision_learner, as the lesson writes it ------------------------------------------------
def run_fastai(path: Path, epochs: int, workers: int) -> list[Epoch]:
    import fastai.vision.all as fv

    fv.set_seed(SEED)
    dls = fv.ImageDataLoaders.from_folder(
        path, train="train", valid="val", bs=BS, num_workers=workers,
        item_tfms=fv.RandomResizedCrop(SIZE, min_scale=0.75),
        batch_tfms=[*fv.aug_transforms(), fv.Normalize.from_stats(*fv.imagenet_stats)])
    learn = fv.vision_learner(dls, fv.resnet34, pretrained=False, metrics=fv.error_rate)
    timer = fastai_timer("train")
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, LR, wd=WD, cbs=[timer])
    return timer.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="the data root holding hymenoptera/ (default: $FASTLIGHT_DATA, ../shared/data)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is a warm-up, not measured")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, the same for every peer")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads, every peer")
    parser.add_argument("--peers", nargs="+", default=["plain", "fastlight", "fastai"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra fastlight overrides")
    args = parser.parse_args()
    path = data_root(args.data) / "hymenoptera"
    if not (path / "train").is_dir():
        raise SystemExit(f"no hymenoptera/train under {path.parent}; pass --data <folder holding hymenoptera/>")
    with_fastai = import_fastai("fastai.vision.all", "fastai" in args.peers) is not None
    peers = [p for p in args.peers if p != "fastai" or with_fastai]
    runners = {
        "plain": lambda: run_plain(path, args.epochs, args.workers),
        "fastlight": lambda: run_fastlight_vision(path, args.epochs, args.workers, args.set),
        "fastai": lambda: run_fastai(path, args.epochs, args.workers),
    }
    # the first epoch of each run warms up (worker start, kernel selection): not measured
    results = interleaved(peers, args.repeats, lambda p, _: runners[p]()[1:], threads=args.threads,
                          describe=lambda epochs: ", ".join(f"{e.rows / e.wall:.2f} img/s ({e.rows / e.cpu:.2f} img/CPU-s)"
                                                            for e in epochs))
    measured = {p: [e for epochs in results[p] for e in epochs] for p in peers}
    print(f"\nhymenoptera train (245 images, 224 per epoch), ResNet-34 from scratch, {SIZE} px, batch size {BS}, "
          f"{args.workers} workers, torch threads {args.threads}; {args.repeats} repeats x {args.epochs - 1} measured epochs")
    print(peers_table(peers, [
        Column("img/s", {p: median(e.rows / e.wall for e in measured[p]) for p in peers}, ".2f", ("plain", "fastai")),
        Column("img/CPU-s", {p: median(e.rows / e.cpu for e in measured[p]) for p in peers}, ".2f", ("plain", "fastai")),
    ]))


if __name__ == "__main__":
    main()
