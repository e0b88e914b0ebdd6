"""Predict with a trained run: tabular rows from a CSV, or every image in a folder.

    fastlight predict <tabular run> new_rows.csv [--out new_rows_predictions.csv]
    fastlight predict <vision run> images/ [--out images_predictions.csv]

The run is rebuilt from its folder (fastlight.runs.load_run, `--ckpt best|last|<path>`); the
output is a CSV: the input rows with `predicted_*` columns, or one row per image file
(single-label: its class and probability; multi-label: its tags and each tag's probability).
Which function predicts depends on the run's task (PREDICTORS below: a new task adds a line).
"""

from __future__ import annotations

import argparse

# task -> "module:function(run_dir, inputs, out, ckpt) -> the CSV written"
PREDICTORS = {
    "tabular": "fastlight.interpret.tabular:predict_rows",
    "vision": "fastlight.interpret.vision:predict_images",
    "segmentation": "fastlight.tasks.segmentation:predict_masks",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run folder (outputs/<task>/<date>/<time>-<id>)")
    parser.add_argument("inputs", help="tabular: a CSV with the training columns (the target may be absent); "
                                       "vision: a folder of images (searched recursively)")
    parser.add_argument("--out", help="the CSV to write (default: <inputs>_predictions.csv here)")
    parser.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default: best)")


def run(args) -> int:
    from fastlight.cli._runs import resolve, run_task
    from fastlight.errors import FastlightError

    task = run_task(args.run_dir)
    if task not in PREDICTORS:
        raise FastlightError(f"{args.run_dir} is a {task} run; predict works on runs of {', '.join(sorted(PREDICTORS))}")
    path = resolve(PREDICTORS[task])(args.run_dir, args.inputs, args.out, args.ckpt)
    print(f"wrote {path}")
    return 0
