"""Generate new samples with a trained generative run: images from a WGAN, text from a language model.

    fastlight generate <wgan run> [--n 64] [--out grid.png] [--seed 0] [--ckpt last]
    fastlight generate <lm run> "The movie was" [--words 40] [--temperature 0.75] [--seed 0]

The run is rebuilt from its folder alone (fastlight.runs.load_run; the training data is not
read): the generator draws `--n` samples from fresh noise (`--seed`) and they are saved as one
grid. Which function generates depends on the run's task (GENERATORS below: a new task adds a line;
each function takes the parsed arguments and returns the file it wrote).
"""

from __future__ import annotations

import argparse

# task -> "module:function(args) -> the path written"
GENERATORS = {
    "wgan": "fastlight.tasks.wgan:generate_command",
    "lm": "fastlight.tasks.lm:generate_command",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the run folder (outputs/<task>/<date>/<time>-<id>)")
    parser.add_argument("prompt", nargs="?", default=None, help="language models: the text to continue")
    parser.add_argument("--n", type=int, default=64, help="how many samples (default 64)")
    parser.add_argument("--words", type=int, default=40, help="language models: words to add (default 40)")
    parser.add_argument("--temperature", type=float, default=0.75,
                        help="language models: sampling temperature (default 0.75)")
    parser.add_argument("--out", default=None, help="the file to write (default: <run>/generated.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--ckpt", default="last", help="best, last or a checkpoint path (default: last)")


def run(args) -> int:
    from fastlight.cli._runs import resolve, run_task
    from fastlight.errors import FastlightError

    task = run_task(args.run_dir)
    if task not in GENERATORS:
        raise FastlightError(f"{args.run_dir} is a {task} run; generate works on runs of {', '.join(sorted(GENERATORS))}")
    if args.n < 1:
        raise FastlightError(f"--n={args.n} must be at least 1")
    path = resolve(GENERATORS[task])(args)
    print(f"wrote {path}")
    return 0
