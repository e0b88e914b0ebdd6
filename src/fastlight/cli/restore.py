"""Restore photos with a trained super-resolution run (decrappify, upscale, colourise, fill holes).

    fastlight restore <superres run> photo.jpg [more.jpg | a folder ...] --out restored/

Each image is written to `--out` under its own name (as PNG), at the model's scale: a run trained
with `data.degrade=bicubic data.scale=2` doubles the size (bicubic first, then the U-Net), the others
keep it (`--scale` overrides). Large images are restored in overlapping tiles (`--tile` px), so
memory stays bounded whatever the photo's size. It runs on a CPU from the run folder alone: the
checkpoint holds every weight, so neither the training data nor pretrained weights are needed.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run folder (outputs/superres/<date>/<time>-<id>)")
    parser.add_argument("inputs", nargs="+", help="images and/or folders of images (searched recursively)")
    parser.add_argument("--out", default="restored", help="the folder to write into (default: ./restored)")
    parser.add_argument("--scale", type=int, default=None, help="output size / input size (default: the run's)")
    parser.add_argument("--tile", type=int, default=256, help="tile size in px for large images (default 256)")
    parser.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default: best)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")


# The tasks whose model maps an image to a restored image (a GAN run's generator is a superres U-Net;
# with --ckpt last it is the generator after the GAN phase, while best is picked by PSNR).
RESTORERS = ("superres", "gan")


def run(args) -> int:
    from pathlib import Path

    import torch

    from fastlight.cli._runs import run_task
    from fastlight.data.images import read_image
    from fastlight.data.vision import image_files
    from fastlight.errors import FastlightError
    from fastlight.runs import load_run
    from fastlight.tasks.superres import restore_image

    task_name = run_task(args.run_dir)
    if task_name not in RESTORERS:
        raise FastlightError(f"{args.run_dir} is a {task_name} run; restore works on runs of {', '.join(RESTORERS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tile < 64:
        raise FastlightError(f"--tile={args.tile} is too small; give at least 64 px")
    files = []
    for p in map(Path, args.inputs):
        if not p.exists():
            raise FastlightError(f"{p} does not exist; give image files or folders of images")
        files += image_files(p) if p.is_dir() else [p]
    if not files:
        raise FastlightError(f"no images found in {', '.join(args.inputs)}")
    cfg, _, task = load_run(args.run_dir, args.ckpt, setup_data=False)
    scale = args.scale or (int(cfg.data.get("scale", 1)) if cfg.data.get("degrade") == "bicubic" else 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in files:
        img = read_image(f, advice="")  # a file the user named, not one of a dataset
        restored = restore_image(task, img, scale=scale, tile=args.tile)
        dest = out / f"{f.stem}.png"
        restored.save(dest)
        print(f"{f} -> {dest} ({restored.width}x{restored.height})")
    return 0
