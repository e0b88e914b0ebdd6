"""U-Net tasks: fastlight vs fastai's unet_learner (restoration and CamVid), the restoration gain on
Set5/Set14, and peak memory. CPU, 2 threads, from scratch (no pretrained weights offline), one run each.

1. superres: the crappified `hymenoptera/train` images (10% held out, seed 42), 128 px random crops +
   flip, batch size 8, unet_learner(resnet34, pretrained=False, blur, weight norm, self-attention,
   y_range (-3, 3)) and fastlight's DynamicUnet with the same options; fit_one_cycle(epochs, 1e-3),
   wd 1e-3. Training images/s (validation excluded) with MSE and with the feature loss (the same
   untrained VGG for both: fastlight's FeatureLoss is fastai's loss_func too), and the validation
   PSNR of both models on the same validation crops, next to the input's own PSNR.
2. beyond fastai: the same budget with `model.residual=true`.
3. the restoration gain on CSet5 / CSet14 (full images): the crappify-trained models against the
   crappy input, and a model trained the same way on `degrade=bicubic scale=2` against bicubic
   interpolation (RGB PSNR and the papers' Y-channel PSNR with a 2-px border cropped).
   `--only gain` measures the same gain after a real CPU budget (`--gain-epochs` on every
   hymenoptera/train image, the residual U-Net with MSE, fastlight only).
4. camvid_tiny at 96x128, batch size 8: unet_learner(resnet34, pretrained=False) vs fastlight,
   fit_one_cycle(3, 3e-3), images/s and acc_camvid (20% random validation), once per --camvid-seeds; with
   3 or more seeds also the paired difference and its 95% CI: a 3-epoch run from scratch moves by ~0.03 a seed.
5. peak resident memory (child processes): one 256 px training step at batch size 8 with the
   feature loss, and `fastlight restore` on a 2000x2000 photo.
6. the training step alone, both U-Nets alternating on the same batch: steadier than whole epochs
   when other jobs share the machine.

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_unet.py            # ~15 min here
    python tests/benchmarks/bench_unet.py --only camvid memory
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    Column,
    Epoch,
    EpochTimer,
    data_root,
    fastai_timer,
    import_fastai,
    median,
    peers_table,
    prepare_process,
    run_fastlight,
    seed_report,
    timer_overrides,
)

prepare_process()

SIZE, BS, LR, WD, SEED, THREADS = 128, 8, 1e-3, 1e-3, 42, 2
UNET = ["model.arch=resnet34", "model.pretrained=false", "model.blur=true", "model.norm_type=weight",
        "model.self_attention=true", "model.y_range=[-3,3]"]
OVERRIDES: list[str] = []  # --override: appended to every fastlight run (e.g. trainer.precision=bf16-mixed)
QUIET = ["logger=csv", "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false",
         "trainer.num_sanity_val_steps=0", f"torch_threads={THREADS}", f"seed={SEED}"]


def superres_overrides(path: Path, epochs: int, loss: str, degrade: str = "crappify", extra=()) -> list[str]:
    return ["task=superres", "data=folder", f"data.path={path}", f"data.degrade={degrade}", f"data.size={SIZE}",
            f"data.batch_size={BS}", "data.num_workers=2", f"loss.name={loss}", "loss.pretrained=false",
            "task.stages=null", f"optim.lr={LR}", f"optim.wd={WD}", f"trainer.max_epochs={epochs}",
            *UNET, *QUIET, *timer_overrides("train"), *extra, *OVERRIDES]


@torch.no_grad()
def psnr_on(model, loader, normalize, denormalize) -> tuple[float, float]:
    """(model's, input's) mean per-image PSNR over a loader of uint8 pairs."""
    model.eval()
    out, inp = [], []
    for x, y in loader:
        xn = normalize(x)
        target = y.float() / 255
        for pred, store in ((denormalize(model(xn).float()), out), (x.float() / 255, inp)):
            mse = ((pred - target) ** 2).flatten(1).mean(1)
            store += (-10 * torch.log10(mse)).tolist()
    return sum(out) / len(out), sum(inp) / len(inp)


def train_ips(epochs: list[Epoch]) -> tuple[float, float]:
    """(images per wall second, per CPU second) of training, after the first (warm-up) epoch."""
    kept = epochs[1:] or epochs
    return median(e.rows / e.wall for e in kept), median(e.rows / e.cpu for e in kept)


def speed_columns(rows: dict) -> list[Column]:
    peers = list(rows)
    return [Column("train img/s", {p: rows[p][0][0] for p in peers}, ".2f", ("fastai",)),
            Column("img/CPU-s", {p: rows[p][0][1] for p in peers}, ".2f", ("fastai",))]


# --- 1-3: restoration -------------------------------------------------------------------------------
def fastlight_superres(path, epochs, loss, degrade="crappify", extra=()):
    from fastlight.runs import load_run

    summary, run_dir = run_fastlight(superres_overrides(path, epochs, loss, degrade, extra), prefix="bench_unet_")
    timing = list(EpochTimer.epochs)
    _, dm, task = load_run(run_dir, "last", setup_data=False)
    dm.setup("fit")
    return task.model, dm, timing, summary


def fastai_superres(dm, epochs, loss_module, n_train: int | None = None):
    import fastai.vision.all as fv
    from PIL import Image

    fv.set_seed(SEED)
    train = list(dm.train_ds.items)[:n_train] if n_train else list(dm.train_ds.items)
    items, n_train = train + list(dm.valid_ds.items), len(train)

    def get_x(i: int):  # as fastlight: the crappy image upsampled (bicubic) to the target's size
        lr, hr = Image.open(items[i][0]).convert("RGB"), Image.open(items[i][1])
        return fv.PILImage.create(lr.resize(hr.size, Image.BICUBIC))

    block = fv.DataBlock(blocks=(fv.ImageBlock, fv.ImageBlock), get_x=get_x,
                         get_y=lambda i: fv.PILImage.create(items[i][1]),
                         splitter=fv.IndexSplitter(list(range(n_train, len(items)))),
                         item_tfms=[fv.RandomResizedCrop(SIZE, min_scale=0.25), fv.FlipItem(0.5)],
                         batch_tfms=[fv.Normalize.from_stats(*fv.imagenet_stats)])
    dls = block.dataloaders(list(range(len(items))), bs=BS, num_workers=2)
    loss_func = loss_module if loss_module is not None else fv.MSELossFlat()
    learn = fv.unet_learner(dls, fv.resnet34, pretrained=False, loss_func=loss_func, blur=True,
                            norm_type=fv.NormType.Weight, self_attention=True, y_range=(-3.0, 3.0), wd=WD, n_out=3)
    timer = fastai_timer("train")
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, LR, cbs=[timer])
    return learn.model, timer.epochs


def cset_gain(model, dm_cls_kwargs, folder: Path, y_border: int | None) -> dict:
    """Mean PSNR of model and input on every full image of `folder`, degraded as in training."""
    from fastlight.data.restoration import PairItems, RestorationData
    from fastlight.tasks.superres import tiled, y_channel

    dm = RestorationData(path=str(folder), **dm_cls_kwargs)
    items = dm.test_items(folder)
    ds = PairItems(items, scale=dm.scale if dm.degrade == "bicubic" else None)
    res = {"psnr": [], "psnr_input": [], "psnr_y": [], "psnr_y_input": []}
    model.eval()
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]
            target = y[None].float() / 255
            pred = dm.denormalize(tiled(model, dm.normalize(x[None]), tile=512))
            for kind, img in (("", pred), ("_input", x[None].float() / 255)):
                res[f"psnr{kind}"].append(float(-10 * torch.log10(((img - target) ** 2).mean())))
                if y_border:
                    b = y_border
                    a, t = y_channel(img)[..., b:-b, b:-b], y_channel(target)[..., b:-b, b:-b]
                    res[f"psnr_y{kind}"].append(float(-10 * torch.log10(((a - t) ** 2).mean())))
    return {k: sum(v) / len(v) for k, v in res.items() if v}


def bench_superres(root: Path, epochs: int, with_fastai: bool, limit: int) -> None:
    from fastlight.models.feature_loss import FeatureLoss

    path = root / "hymenoptera" / "train"
    rows, cset_rows = {}, []
    t0 = time.perf_counter()
    lim = [f"data.limit={limit}"]
    model, dm, timing, _ = fastlight_superres(path, epochs, "mse", extra=lim + ["model.residual=false"])
    rows["fastlight"] = (train_ips(timing), *psnr_on(model, dm.val_dataloader(), dm.normalize, dm.denormalize))
    models = {"fastlight": model}
    if with_fastai:
        fa_model, fa_timing = fastai_superres(dm, epochs, None)
        rows["fastai"] = (train_ips(fa_timing), *psnr_on(fa_model, dm.val_dataloader(), dm.normalize, dm.denormalize))
        models["fastai"] = fa_model
    res_model, _, res_timing, _ = fastlight_superres(path, epochs, "mse", extra=lim + ["model.residual=true"])
    rows["fastlight residual"] = (train_ips(res_timing),
                                  *psnr_on(res_model, dm.val_dataloader(), dm.normalize, dm.denormalize))
    models["fastlight residual"] = res_model
    print(f"\n## superres, hymenoptera/train[:{limit}] crappified, {SIZE} px, bs {BS}, MSE, "
          f"fit_one_cycle({epochs}, {LR:g}), {len(dm.train_ds)} train / {len(dm.valid_ds)} valid "
          f"({time.perf_counter() - t0:.0f} s)")
    peers = list(rows)
    print(peers_table(peers, [*speed_columns(rows), Column("val PSNR dB", {p: rows[p][1] for p in peers}, ".2f"),
                              Column("input PSNR dB", {p: rows[p][2] for p in peers}, ".2f")]))
    # feature loss: speed only, 2 batches an epoch, the second epoch measured
    feat = {}
    _, _, ft, _ = fastlight_superres(path, 2, "feature", extra=lim + ["trainer.limit_train_batches=2",
                                                                       "model.residual=false"])
    feat["fastlight"] = (train_ips(ft),)
    if with_fastai:
        torch.manual_seed(0)
        _, fa_ft = fastai_superres(dm, 2, FeatureLoss(pretrained=False), n_train=2 * BS)
        feat["fastai"] = (train_ips(fa_ft),)
    print("\n## superres with the feature loss (untrained VGG16-bn, the same for both), 2 batches/epoch")
    print(peers_table(list(feat), speed_columns(feat)))
    # the restoration gain on CSet5 / CSet14
    bic_model, _, _, _ = fastlight_superres(path, epochs, "mse", degrade="bicubic", extra=lim + ["model.residual=true"])
    crappy = {"degrade": "crappify", "seed": SEED}
    for name in ("CSet5", "CSet14"):
        folder = root / "sr" / name
        for peer, m in models.items():
            if peer == "fastlight":
                continue  # the validation PSNR above shows what residual changes; keep the CPU budget
            g = cset_gain(m, crappy, folder, None)
            cset_rows.append((name, f"{peer} (crappify)", g["psnr"], g["psnr_input"], g["psnr"] - g["psnr_input"]))
        g = cset_gain(bic_model, {"degrade": "bicubic", "scale": 2, "seed": SEED}, folder, 2)
        cset_rows.append((name, "fastlight residual (bicubic x2)", g["psnr"], g["psnr_input"], g["psnr"] - g["psnr_input"]))
        cset_rows.append((name, "  same, Y channel, border 2", g["psnr_y"], g["psnr_y_input"],
                          g["psnr_y"] - g["psnr_y_input"]))
    print(f"\n## restoration gain on full Set5/Set14 images after the budget above ({epochs} epochs, CPU)")
    print(f"{'set':7s} {'model (degradation)':34s} {'model dB':>9s} {'input dB':>9s} {'gain dB':>8s}")
    for name, peer, a, b, gain in cset_rows:
        print(f"{name:7s} {peer:34s} {a:9.2f} {b:9.2f} {gain:+8.2f}")


def bench_gain(root: Path, epochs: int, limit: int | None) -> None:
    """The restoration gain after `epochs` on hymenoptera/train (all of it unless `limit`): residual U-Nets
    trained on crappify and on bicubic x2, each scored on full CSet5/CSet14 images against its input."""
    path = root / "hymenoptera" / "train"
    extra = ["model.residual=true", *([f"data.limit={limit}"] if limit else [])]
    rows = []
    for degrade, kwargs, border in (("crappify", {"degrade": "crappify", "seed": SEED}, None),
                                    ("bicubic", {"degrade": "bicubic", "scale": 2, "seed": SEED}, 2)):
        t0, c0 = time.perf_counter(), time.process_time()
        model, dm, timing, summary = fastlight_superres(path, epochs, "mse", degrade=degrade, extra=extra)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        steps = sum(e.rows for e in timing) // BS
        print(f"  {degrade}: {len(dm.train_ds)} train images, {steps} steps, {wall:.0f} s wall, {cpu:.0f} CPU-s "
              f"(main process), val PSNR {summary['metrics'].get('val/psnr', float('nan')):.2f} vs input "
              f"{summary['metrics'].get('val/psnr_input', float('nan')):.2f}", file=sys.stderr, flush=True)
        for name in ("CSet5", "CSet14"):
            g = cset_gain(model, kwargs, root / "sr" / name, border)
            rows.append((name, f"residual U-Net ({degrade}{' x2' if border else ''})", g["psnr"], g["psnr_input"]))
            if border:
                rows.append((name, "  same, Y channel, border 2", g["psnr_y"], g["psnr_y_input"]))
        budget = f"  budget: {epochs} epochs, {steps} steps of bs {BS} at {SIZE} px, {wall / 60:.1f} min wall"
        rows.append(("", f"{budget} on {THREADS} threads", None, None))
    print(f"\n## restoration gain after {epochs} epochs on hymenoptera/train, resnet34 residual U-Net from "
          f"scratch, MSE, fit_one_cycle({epochs}, {LR:g}), full Set5/Set14 images")
    print(f"{'set':7s} {'model (degradation)':34s} {'model dB':>9s} {'input dB':>9s} {'gain dB':>8s}")
    for name, peer, a, b in rows:
        print(f"{name:7s} {peer}" if a is None else f"{name:7s} {peer:34s} {a:9.2f} {b:9.2f} {a - b:+8.2f}")


# --- 4: camvid_tiny -------------------------------------------------------------------------------------
def bench_camvid(root: Path, epochs: int, with_fastai: bool, seeds: list[int]) -> None:
    """Both peers on fastlight's split (fastai's own RandomSplitter lists the files in a different
    order, so its 20 validation images were not fastlight's), with denormals flushed for both
    (fastlight's task does it on a CPU; fastai gets the same setting) and channels-last weights for both
    (fastlight's `task.channels_last=true`, fastai's `to_channelslast(use_amp=False)`), once per seed."""
    lr = 3e-3
    path = root / "camvid_tiny"
    t0 = time.perf_counter()
    runs: dict[str, list] = {"fastlight": []}
    for seed in seeds:
        overrides = ["task=segmentation", "data=camvid_tiny", f"data.path={path}", "data.batch_size=8",
                     "model.arch=resnet34", "model.pretrained=false", "task.stages=null", f"optim.lr={lr}",
                     f"trainer.max_epochs={epochs}", *[o for o in QUIET if not o.startswith("seed=")],
                     *timer_overrides("train"), f"seed={seed}", *OVERRIDES]
        summary, run_dir = run_fastlight(overrides, prefix="bench_unet_camvid_")
        runs["fastlight"].append((train_ips(list(EpochTimer.epochs)), summary["metrics"]["val/acc_camvid"]))
        print(f"  seed {seed} fastlight: {runs['fastlight'][-1]}", file=sys.stderr, flush=True)
        if with_fastai:
            runs.setdefault("fastai", []).append(fastai_camvid(path, run_dir, epochs, lr, seed))
            print(f"  seed {seed} fastai: {runs['fastai'][-1]}", file=sys.stderr, flush=True)
    rows = {p: ((median(r[0][0] for r in v), median(r[0][1] for r in v)), median(r[1] for r in v))
            for p, v in runs.items()}
    print(f"\n## camvid_tiny, 96x128, bs 8, fit_one_cycle({epochs}, {lr:g}) from scratch, the same split, "
          f"seeds {seeds}, channels-last, denormals flushed (medians; {time.perf_counter() - t0:.0f} s)")
    peers = list(rows)
    print(peers_table(peers, [*speed_columns(rows), Column("acc_camvid", {p: rows[p][1] for p in peers}, ".3f")]))
    # how far apart the peers are, next to how much a seed moves either
    print(seed_report("acc_camvid", {p: [r[1] for r in v] for p, v in runs.items()}))


def fastai_camvid(path: Path, run_dir: Path, epochs: int, lr: float, seed: int):
    import fastai.vision.all as fv
    from omegaconf import OmegaConf

    from fastlight.data.segmentation import SegmentationData

    cfg = OmegaConf.load(run_dir / "config.yaml").data
    dm = SegmentationData(path=str(path), valid=cfg.valid, valid_pct=cfg.valid_pct, seed=seed)
    dm.setup("fit")
    valid_names = {img.name for img, _ in dm.valid_ds.items}
    fv.set_seed(seed)
    torch.set_flush_denormal(True)
    codes = (path / "codes.txt").read_text().split()
    void = codes.index("Void")

    def acc_camvid(inp, targ):
        targ = targ.squeeze(1)
        mask = targ != void
        return (inp.argmax(dim=1)[mask] == targ[mask]).float().mean()

    block = fv.DataBlock(blocks=(fv.ImageBlock, fv.MaskBlock(codes)), get_items=fv.get_image_files,
                         get_y=lambda o: path / "labels" / f"{o.stem}_P{o.suffix}",
                         splitter=fv.FuncSplitter(lambda o: o.name in valid_names),
                         batch_tfms=[*fv.aug_transforms(), fv.Normalize.from_stats(*fv.imagenet_stats)])
    dls = block.dataloaders(path / "images", bs=8, num_workers=0)
    assert {o.name for o in dls.valid.items} == valid_names
    learn = fv.unet_learner(dls, fv.resnet34, pretrained=False, metrics=acc_camvid)
    learn.to_channelslast(use_amp=False)  # fastlight's task.channels_last=true (fp32 both)
    timer = fastai_timer("train")
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, lr, cbs=[timer])
    # acc_camvid as fastlight computes it (torchmetrics' micro accuracy: every non-void pixel of the
    # validation set counts once); fastai's AvgMetric averages per batch, weighted by the batch size
    preds, targs = learn.get_preds()
    targs = torch.as_tensor(targs).squeeze(1)
    keep = targs != void
    return train_ips(timer.epochs), float((preds.argmax(1)[keep] == targs[keep]).float().mean())


# --- 6: the training step alone, interleaved (steadier than whole epochs on a shared machine) ---------
def bench_step(repeats: int, with_fastai: bool) -> None:
    """Seconds per optimizer step of the two U-Nets on the same batch (128 px, bs 8, MSE), alternating."""
    from fastlight.models.unet import DynamicUnet

    torch.manual_seed(SEED)
    x, y = torch.randn(BS, 3, SIZE, SIZE), torch.randn(BS, 3, SIZE, SIZE)
    models = {"fastlight": DynamicUnet("resnet34", 3, pretrained=False, blur=True, norm_type="weight",
                                       self_attention=True, y_range=(-3.0, 3.0), img_size=SIZE)}
    if with_fastai:
        import fastai.vision.all as fv

        body = fv.create_body(fv.resnet34(), pretrained=False)
        models["fastai"] = fv.models.unet.DynamicUnet(body, 3, (SIZE, SIZE), blur=True, norm_type=fv.NormType.Weight,
                                                      self_attention=True, y_range=(-3.0, 3.0))
    opts = {k: torch.optim.AdamW(m.parameters(), LR) for k, m in models.items()}
    times: dict[str, list] = {k: [] for k in models}

    def step(name):
        m = models[name].train()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = torch.nn.functional.mse_loss(m(x), y)
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()
        return time.perf_counter() - t0, time.process_time() - c0

    for name in models:
        step(name)  # warm-up
    for rep in range(repeats):
        for name in (list(models) if rep % 2 == 0 else list(models)[::-1]):
            times[name].append(step(name))
    rows = {k: ((BS / median(t[0] for t in v), BS / median(t[1] for t in v)),) for k, v in times.items()}
    print(f"\n## the training step alone: resnet34 U-Net, {SIZE} px, bs {BS}, MSE, {repeats} steps each, alternating")
    print(peers_table(list(rows), speed_columns(rows)))


# --- 5: memory --------------------------------------------------------------------------------------------
STEP = """
import resource, torch
torch.set_num_threads({threads})
from fastlight.models.unet import DynamicUnet
from fastlight.models.feature_loss import FeatureLoss
m = DynamicUnet("resnet34", 3, pretrained=False, blur=True, norm_type="weight", self_attention=True, y_range=(-3, 3))
loss_fn = FeatureLoss(pretrained=False)
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x, y = torch.randn(8, 3, 256, 256), torch.randn(8, 3, 256, 256)
loss = loss_fn(m(x), y); loss.backward(); opt.step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

RESTORE = """
import resource, sys
from fastlight.cli import main
code = main(["restore", {run!r}, {photo!r}, "--out", {out!r}, "--threads", "{threads}", "--ckpt", "last"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
sys.exit(code)
"""


def bench_memory(root: Path) -> None:
    import numpy as np
    from PIL import Image

    def child(code: str) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t0

    step_mb, step_s = child(STEP.format(threads=THREADS))
    # a restore run: the trained-for-one-epoch lesson U-Net (the weights do not change the memory)
    _, run_dir = run_fastlight(superres_overrides(root / "sr" / "CSet14", 1, "mse") + ["data.limit=12",
                                                                                     "model.residual=false"],
                               prefix="bench_unet_mem_")
    tmp = Path(tempfile.mkdtemp(prefix="bench_unet_photo_"))
    rng = np.random.default_rng(0)
    big = Image.open(root / "sr" / "CSet14" / "baboon.png").convert("RGB").resize((2000, 2000), Image.BICUBIC)
    noisy = np.asarray(big, dtype=float) + rng.normal(0, 8, (2000, 2000, 3))
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(tmp / "photo.jpg", quality=60)
    restore_mb, restore_s = child(RESTORE.format(run=str(run_dir), photo=str(tmp / "photo.jpg"),
                                                 out=str(tmp / "out"), threads=THREADS))
    print("\n## peak resident memory (child process, MiB)")
    print(f"one training step, 256 px, bs 8, resnet34 U-Net + feature loss: {step_mb:8.0f} MiB ({step_s:.0f} s)")
    print(f"fastlight restore, 2000x2000 photo, tiles of 256 px:          {restore_mb:8.0f} MiB ({restore_s:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="the data root (default: $FASTLIGHT_DATA or ../shared/data)")
    parser.add_argument("--epochs", type=int, default=2, help="superres epochs (default 2, as the issue's fastai run)")
    parser.add_argument("--limit", type=int, default=48, help="superres: the first N hymenoptera/train images")
    parser.add_argument("--camvid-epochs", type=int, default=3)
    parser.add_argument("--camvid-seeds", type=int, nargs="+", default=[42], help="one camvid run per seed")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra overrides for every fastlight run (A/B runs; trainer.precision=bf16-mixed: "
                             "fastai stays at fp32, the only CPU precision its API offers)")
    parser.add_argument("--gain-epochs", type=int, default=8, help="--only gain: epochs on hymenoptera/train")
    parser.add_argument("--gain-limit", type=int, default=None, help="--only gain: the first N images (all)")
    parser.add_argument("--only", nargs="+", choices=["superres", "camvid", "memory", "step", "gain"],
                        default=["superres", "camvid", "memory", "step"])
    parser.add_argument("--step-repeats", type=int, default=8)
    parser.add_argument("--no-fastai", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    OVERRIDES.extend(args.override)
    root = data_root(args.data)
    with_fastai = import_fastai("fastai.vision.all", not args.no_fastai) is not None
    if "superres" in args.only:
        bench_superres(root, args.epochs, with_fastai, args.limit)
    if "gain" in args.only:
        bench_gain(root, args.gain_epochs, args.gain_limit)
    if "camvid" in args.only:
        bench_camvid(root, args.camvid_epochs, with_fastai, args.camvid_seeds)
    if "memory" in args.only:
        bench_memory(root)
    if "step" in args.only:
        bench_step(args.step_repeats, with_fastai)


if __name__ == "__main__":
    main()
