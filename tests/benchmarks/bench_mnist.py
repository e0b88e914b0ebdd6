"""MNIST MLP 784-100-10, one epoch of one-cycle at batch size 64: fastlight vs a plain PyTorch loop.

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_mnist.py [--repeats 3] [--threads 1]

All peers train the same model (torch's default init from the same seed), with Adam, the same
one-cycle schedule, batch size and loss as the task's default config (conf/task/mnist.yaml), on
the real MNIST files in the data root ($FASTLIGHT_DATA, else ../shared/data beside the checkout),
in this one process, interleaved in a rotating order (tests/benchmarks/common.py). Repeat i uses
seed seeds[i] for every peer, so the accuracy column is a median over seeds too.

- fastlight: `fastlight.run.train` on the config `python train.py task=mnist model.hidden=[100]
  logger=csv` composes (the real run lifecycle: datamodule, task, Trainer.fit, Trainer.test; its
  progress bar, checkpoints and lr monitor; csv rather than W&B only to keep runs out of W&B,
  which costs nothing measurable when it logs every few hundred steps).
- loop: a hand-written loop slicing batches from in-memory tensors as `TensorBatches` does,
  torch's Adam and OneCycleLR, no logging, on the same train/test split as the fastlight run.
- fastai (only if importable): Learner + fit_one_cycle with fastai's Adam, loaders from
  `DataLoaders.from_dsets` over (x, y) rows as the lesson builds them (num_workers=0), no bar.

Seconds per epoch is the training epoch only, for every peer: from the start of the epoch to the
end of its last optimizer step, the epoch's shuffle included (fastlight: a callback's
on_train_epoch_start -> last on_train_batch_end; fastai: before_train -> after_train; the loop:
its own timer). Not timed: validation, test, checkpoints, start-up. Test accuracy is on the
official 10,000 test digits.
"""

from __future__ import annotations

import argparse
import math
from functools import partial
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (Column, EpochTimer, data_root, fastai_timer, import_fastai, interleaved, median, peers_table,
                    prepare_process, run_fastlight, timer_overrides)
from torch import nn

from fastlight.config import compose

prepare_process()


def run_fastlight_mnist(overrides: list[str], seed: int, run_dir: Path) -> tuple[float, float]:
    summary, _ = run_fastlight([*overrides, f"seed={seed}", *timer_overrides("train")], run_dir=run_dir)
    return summary["metrics"]["test/acc"], EpochTimer.epochs[-1].wall


def mlp(hidden: list[int]) -> nn.Sequential:
    layers, n_in = [], 784
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU()]
        n_in = h
    return nn.Sequential(*layers, nn.Linear(n_in, 10))


def test_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def one_cycle(opt, cfg, total_steps: int):
    s = cfg.schedule
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.optim.lr, total_steps=total_steps, pct_start=s.pct_start, anneal_strategy="cos",
        max_momentum=s.moms[0], base_momentum=s.moms[1], div_factor=s.div, final_div_factor=s.div_final / s.div,
    )


def run_loop(cfg, data, seed: int, fused: bool = False) -> tuple[float, float]:
    """The plain loop: same model, Adam, OneCycleLR, batch size and loss; batches sliced from tensors."""
    (x, y), (x_test, y_test) = data.train, data.test
    torch.manual_seed(seed)  # what seed_everything does before fastlight builds the model
    model = mlp(list(cfg.model.get("hidden", [])))
    o = cfg.optim
    # adamw (the default, fastai's Adam): decoupled weight decay; adam: torch's coupled L2.
    adam = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]  # fastai: no wd on biases
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    opt = adam([{"params": decay, "weight_decay": o.wd}, {"params": no_decay, "weight_decay": 0.0}],
               lr=o.lr, betas=(o.mom, o.sqr_mom), eps=o.eps, fused=fused or None)
    bs, n = cfg.data.batch_size, len(x)
    steps = math.ceil(n / bs)
    sched = one_cycle(opt, cfg, steps)
    start = time.perf_counter()
    # As TensorBatches does inside the epoch: its epoch-0 order, one gather, then contiguous slices.
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003))
    x, y = x[order], y[order]
    for i in range(steps):
        xb, yb = x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]
        loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.task.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    seconds = time.perf_counter() - start
    return test_accuracy(model, x_test, y_test), seconds


def run_fastai(cfg, data, seed: int) -> tuple[float, float]:
    from fastai.callback.schedule import Learner  # noqa: F401  (adds fit_one_cycle to Learner)
    from fastai.data.core import DataLoaders
    from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropy
    from fastai.optimizer import Adam
    from fastai.torch_core import set_seed

    (x, y), valid, (x_test, y_test) = data.train, data.valid, data.test
    set_seed(seed)  # python, numpy and torch: the model's init and fastai's shuffle
    model = mlp(list(cfg.model.get("hidden", [])))
    dls = DataLoaders.from_dsets(
        list(zip(x, y)), list(zip(*valid)), bs=cfg.data.batch_size, num_workers=0, device=torch.device("cpu")
    )
    ls = cfg.task.label_smoothing
    loss = LabelSmoothingCrossEntropy(eps=ls) if ls else CrossEntropyLossFlat()
    o, s = cfg.optim, cfg.schedule
    timer = fastai_timer("train")
    # fastai's Adam decouples weight decay by default (adamw); optim=adam is coupled L2.
    opt_func = Adam if o.name == "adamw" else partial(Adam, decouple_wd=False)
    learn = Learner(dls, model, loss_func=loss, opt_func=opt_func, cbs=[timer], wd=o.wd)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(
            1, o.lr, div=s.div, div_final=s.div_final, pct_start=s.pct_start, moms=tuple(s.moms),
        )
    return test_accuracy(model, x_test, y_test), timer.epochs[-1].wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; repeat i uses seeds[i]")
    p.add_argument("--seeds", default="42,0,1", help="comma-separated, cycled over the repeats")
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for every peer")
    p.add_argument("--hidden", default="[100]", help="model.hidden ('' with model=logistic)")
    p.add_argument("--no-fastai", action="store_true", help="skip fastai even if it is installed")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every peer, e.g. data.steps_per_call=32")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    root = data_root()
    if not (root / "mnist").is_dir():
        sys.exit(f"no MNIST under {root}; set FASTLIGHT_DATA to a folder that has mnist/")
    hidden = [f"model.hidden={args.hidden}"] if args.hidden else []
    overrides = ["task=mnist", *hidden, "logger=csv", f"data.root={root}", *args.overrides]
    seeds = [int(s) for s in args.seeds.split(",")]
    with_fastai = import_fastai("fastai.learner", not args.no_fastai) is not None

    from fastlight.data.mnist import MNISTData

    with tempfile.TemporaryDirectory(prefix="bench_mnist-") as tmp:
        cfg = compose(overrides, Path(tmp))
    if cfg.optim.name not in ("adam", "adamw") or cfg.schedule.name != "one_cycle":
        sys.exit("the plain loop and fastai peers here are written for optim=adam|adamw schedule=one_cycle")

    # loop_fused: the plain loop with torch's fused Adam, as fastlight's default optimizer
    peers = ["fastlight", "loop", "loop_fused"] + (["fastai"] if with_fastai else [])
    datasets: dict[int, MNISTData] = {}
    with tempfile.TemporaryDirectory(prefix="bench_mnist-") as tmp:

        def run(peer: str, rep: int) -> tuple[float, float]:
            seed = seeds[rep % len(seeds)]
            run_dir = Path(tmp) / f"{peer}{rep}"
            if peer == "fastlight":
                return run_fastlight_mnist(overrides, seed, run_dir)
            cfg = compose([*overrides, f"seed={seed}"], run_dir)
            if seed not in datasets:  # the same split the fastlight run uses (data.seed = seed)
                datasets[seed] = MNISTData(root=str(root), seed=seed)
                datasets[seed].setup("fit")
            if peer == "fastai":
                return run_fastai(cfg, datasets[seed], seed)
            return run_loop(cfg, datasets[seed], seed, fused=peer == "loop_fused")

        results = interleaved(peers, args.repeats, run, threads=args.threads,
                              describe=lambda r: f"test acc {r[0]:.4f} {r[1]:.3f}s")

    acc = {name: median(a for a, _ in r) for name, r in results.items()}
    sec = {name: median(s for _, s in r) for name, r in results.items()}
    print(
        f"\nMNIST MLP 784-{''.join(f'{h}-' for h in cfg.model.get('hidden', []))}10, 1 epoch, bs {cfg.data.batch_size}, "
        f"{cfg.optim.name} lr {cfg.optim.lr} one-cycle, label_smoothing {cfg.task.label_smoothing}, "
        f"steps_per_call {cfg.data.get('steps_per_call')}, {args.threads} thread(s); medians of {args.repeats} "
        f"interleaved repeats, seeds {[seeds[i % len(seeds)] for i in range(args.repeats)]}"
    )
    print(peers_table(peers, [Column("test acc", acc, ".4f"), Column("s/epoch", sec, ".3f", ("loop",))]))
    print(f"fastlight / loop seconds per epoch (ratio of medians): {sec['fastlight'] / sec['loop']:.2f}; "
          f"/ loop_fused: {sec['fastlight'] / sec['loop_fused']:.2f}")


if __name__ == "__main__":
    main()
