"""WGAN on MNIST: fastlight's `task=wgan` vs fastai's `GANLearner.wgan`, same data, models, sizes.

Both peers train the DCGAN pair (basic_generator / basic_critic with LeakyReLU 0.2, `--features`
wide) on the same 60,000 MNIST training digits resized to 32 px (fastlight's MnistGan tensor, handed
to fastai as a DataLoader of (noise, image) items), batch size 64, weight clipping 0.01, 5 critic
batches per generator batch, Adam betas (0, 0.99), wd 0, constant lr 2e-4, for `--epochs` epochs
(937 batches an epoch: 156 generator steps), both from the same initial weights (fastlight's run
saves them, fastai's models load them; `--own-init`: fastai draws its own). Measured: generator and
critic steps per second (training wall time; and per CPU second of this process, steadier on a
shared machine) and the MNIST quality numbers of both generators on the same 1,000 noise vectors,
scored by fastlight's cached MNIST judge, next to real digits' numbers.

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_gan.py            # ~10 min here
    python tests/benchmarks/bench_gan.py --features 16 --epochs 1 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial

import lightning as L
import torch
from common import (
    Column,
    EpochTimer,
    data_root,
    import_fastai,
    peers_table,
    prepare_process,
    run_fastlight,
    timer_overrides,
)

prepare_process()


class SaveInitialWeights(L.Callback):
    """Added to fastlight's run (`+callbacks.init_weights`): its models' weights before the first
    step -> <run>/initial_weights.pt, so fastai's peer starts from the very same weights."""

    def on_train_start(self, trainer, pl_module):
        model = pl_module.model
        torch.save({"generator": model.generator.state_dict(), "critic": model.critic.state_dict()},
                   os.path.join(trainer.default_root_dir, "initial_weights.pt"))


def fastai_wgan(images: torch.Tensor, features: int, epochs: int, seed: int, init: dict | None = None):
    """fastai's lesson7-wgan learner on `images` (uint8, n x 1 x 32 x 32); (generator, seconds, steps)."""
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.optimizer import Adam
    from fastai.vision.gan import GANLearner, basic_critic, basic_generator
    from torch import nn

    torch.manual_seed(seed)

    class NoiseAndImage:  # fastai's generate_noise as get_x, the image as the target
        def __init__(self, x):
            self.x = x

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return torch.randn(100), self.x[i].float() / 127.5 - 1

    train = DataLoader(NoiseAndImage(images), bs=64, shuffle=True, drop_last=True)
    valid = DataLoader(NoiseAndImage(images[:64]), bs=64)
    dls = DataLoaders(train, valid, device=torch.device("cpu"))
    gen = basic_generator(32, 1, n_features=features)
    crit = basic_critic(32, 1, n_features=features, act_cls=partial(nn.LeakyReLU, negative_slope=0.2))
    if init is not None:  # the same module trees and state-dict keys (tests/models/test_gan.py)
        gen.load_state_dict(init["generator"])
        crit.load_state_dict(init["critic"])

    class Count(Callback):
        order = 100

        def before_fit(self):
            self.n_gen_steps = self.n_crit_steps = 0
            self.train_seconds = self.train_cpu = 0.0

        def before_train(self):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def after_train(self):
            self.train_seconds += time.perf_counter() - self.t0
            self.train_cpu += time.process_time() - self.c0

        def before_batch(self):
            self.gen_turn = self.learn.gan_trainer.gen_mode  # the switcher may flip it in after_batch

        def after_batch(self):
            if self.training:
                if self.gen_turn:
                    self.n_gen_steps += 1
                else:
                    self.n_crit_steps += 1

    count = Count()
    learn = GANLearner.wgan(dls, gen, crit, opt_func=partial(Adam, mom=0.0), wd=0.0, cbs=[count])
    learn.recorder.train_metrics = learn.recorder.valid_metrics = False
    with learn.no_bar(), learn.no_logging():
        learn.fit(epochs, 2e-4)
    return gen, count.train_seconds, count.train_cpu, count.n_gen_steps, count.n_crit_steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="data root holding mnist/ (default ../shared/data)")
    p.add_argument("--features", type=int, default=32, help="n_features of both models (fastai's default 64)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-fastai", action="store_true")
    p.add_argument("--own-init", action="store_true", help="fastai draws its own initial weights (default: fastlight's)")
    p.add_argument("--override", action="append", default=[], help="an extra override for fastlight's run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = data_root(args.data)
    os.environ["FASTLIGHT_DATA"] = str(root)

    from fastlight.data.wgan import MnistGan
    from fastlight.runs import load_run

    dm = MnistGan(root=str(root), size=32, download=False, seed=args.seed)
    dm.prepare_data()
    dm.setup("fit")  # also trains (once) and caches the MNIST judge
    judge = dm.judge
    noise = torch.randn(1000, 100, generator=torch.Generator().manual_seed(1234))

    def score(generator) -> dict:
        generator.eval()
        with torch.no_grad():
            return judge.score(generator(noise))

    results = {}
    summary, run_dir = run_fastlight([
        "task=wgan", "data.size=32", "data.batch_size=64", f"model.n_features={args.features}",
        f"trainer.max_epochs={args.epochs}", "logger=csv", "callbacks.progress_bar=null",
        f"torch_threads={args.threads}", f"seed={args.seed}", *timer_overrides("train"),
        "+callbacks.init_weights._target_=bench_gan.SaveInitialWeights", *args.override,
    ], prefix="bench_gan_", quiet=True)
    if summary["status"] != "completed":
        print(f"fastlight run failed: {summary['error']}", file=sys.stderr)
        return 1
    import pandas as pd

    rows = pd.read_csv(run_dir / "metrics.csv")
    _, _, task = load_run(run_dir, ckpt="last", setup_data=False)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    n_steps = int(ckpt["global_step"])
    train_s = sum(e.wall for e in EpochTimer.epochs)  # training batches only, validation excluded
    train_cpu = sum(e.cpu for e in EpochTimer.epochs)
    results["fastlight"] = {"seconds": train_s, "cpu": train_cpu, "steps": n_steps, **score(task.model.generator)}
    print(f"fastlight run: {run_dir} ({n_steps} optimizer steps; metrics rows {len(rows)})", file=sys.stderr)

    if not args.no_fastai and import_fastai("fastai.vision.gan") is not None:
        torch.set_num_threads(args.threads)
        init = None if args.own_init else torch.load(run_dir / "initial_weights.pt", weights_only=True)
        gen, seconds, cpu, n_gen, n_crit = fastai_wgan(dm.train, args.features, args.epochs, args.seed, init)
        results["fastai"] = {"seconds": seconds, "cpu": cpu, "gen": n_gen, "crit": n_crit, **score(gen)}
    results["real digits"] = {**judge.reference()}

    fl = results["fastlight"]
    fl["gen"], fl["crit"] = n_steps // 6, n_steps - n_steps // 6
    peers = [p for p in ("fastlight", "fastai") if p in results]
    for p in peers:
        r = results[p]
        r["gen/s"], r["crit/s"] = r["gen"] / r["seconds"], r["crit"] / r["seconds"]
        r["gen/cpu-s"] = r["gen"] / r["cpu"]  # steadier than wall time on a shared machine
    table = peers_table(peers + ["real digits"], [
        Column("gen steps", {p: results[p].get("gen", float("nan")) for p in peers + ["real digits"]}, ".0f"),
        Column("gen steps/s", {p: results[p].get("gen/s", float("nan")) for p in peers + ["real digits"]}, ".2f",
               vs=("fastai",)),
        Column("gen steps/CPU-s", {p: results[p].get("gen/cpu-s", float("nan")) for p in peers + ["real digits"]}, ".2f",
               vs=("fastai",)),
        Column("crit steps/s", {p: results[p].get("crit/s", float("nan")) for p in peers + ["real digits"]}, ".2f"),
        Column("fid", {p: results[p]["fid"] for p in peers + ["real digits"]}, ".2f"),
        Column("confident", {p: results[p]["confident"] for p in peers + ["real digits"]}, ".3f"),
        Column("entropy", {p: results[p]["entropy"] for p in peers + ["real digits"]}, ".3f"),
    ])
    print(f"\nWGAN MNIST 32 px, bs 64, n_features {args.features}, {args.epochs} epoch(s), {args.threads} threads; "
          f"judge test accuracy {judge.test_acc:.4f}")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
