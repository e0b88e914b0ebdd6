"""Start-up time of `train.py`: config-only commands, imports, and start to the first training step.

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_startup.py [--repeats 3]

Every row is a fresh `python` process timed from just before it is launched (wall clock):
- config-only commands (`--help`, `--cfg job`) exit after printing; they never import torch,
  lightning or wandb (fastlight.run imports them inside `train`);
- the imports alone (`python -c "import torch"`, ...) show what the heavy libraries cost
  ("imported": launch -> import done; "to exit" adds the interpreter's tear-down of them);
- the "run" rows train `train.py task=mnist data=synthetic` for one epoch with the `FirstStep`
  callback below added from the command line (`+callbacks.first_step._target_=bench_startup.FirstStep`),
  which prints timestamps when the first training batch starts ("to 1st step") and ends
  ("1st step done"); "to exit" is the whole run. `logger=csv` and the default `logger=wandb`
  (offline) are both timed, since W&B's start-up is part of what a user waits for.
Commands are interleaved across repeats; the table shows medians.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[2]
START, END, IMPORTED = "FIRST_STEP_START=", "FIRST_STEP_END=", "IMPORTED_AT="


class FirstStep(L.Callback):
    """Prints the wall-clock times at which the first training batch starts and ends."""

    def __init__(self):
        self.done = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.done:
            print(f"\n{START}{time.time():.6f}", flush=True)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.done:
            self.done = True
            print(f"\n{END}{time.time():.6f}", flush=True)


def timed(cmd: list[str], env: dict) -> dict[str, float]:
    """Seconds from launch to exit, and to the start and end of the first training step if any."""
    start = time.time()
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    times = {"exit": time.time() - start}
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    for key, mark in (("imported", IMPORTED), ("start", START), ("end", END)):
        found = re.search(re.escape(mark) + r"([0-9.]+)", out.stdout)  # tqdm shares stdout
        if found:
            times[key] = float(found.group(1)) - start
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    py = sys.executable
    imports = ("torch", "lightning", "wandb", "torch, lightning, wandb")
    outputs = tempfile.mkdtemp(prefix="bench_startup-")
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    run = [
        py, "train.py", "task=mnist", "data=synthetic", "trainer.max_epochs=1",
        f"hydra.run.dir={outputs}/run", "+callbacks.first_step._target_=bench_startup.FirstStep",
    ]
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "train.py --help": [py, "train.py", "--help"],
        "train.py --cfg job task=mnist": [py, "train.py", "--cfg", "job", "task=mnist"],
        **{f"import {m}": [py, "-c", f"import time, {m}; print('{IMPORTED}%f' % time.time())"] for m in imports},
        "run, logger=csv": [*run, "logger=csv"],
        "run, logger=wandb (offline)": [*run, "logger=wandb"],
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    for i in range(args.repeats):
        for name, cmd in commands.items():
            results[name].append(timed(cmd, env))
        print(f"repeat {i}: " + "  ".join(f"{n} {r[-1]['exit']:.2f}s" for n, r in results.items()), flush=True)

    def median(name: str, key: str) -> str:
        values = [r[key] for r in results[name] if key in r]
        return f"{statistics.median(values):.2f}" if values else "-"

    print(f"\ntrain.py start-up, medians of {args.repeats} interleaved repeats (seconds of wall clock from launch)")
    columns = {"exit": "to exit", "imported": "imported", "start": "to 1st step", "end": "1st step done"}
    print(f"{'command':<32}" + "".join(f"{title:>15}" for title in columns.values()))
    for name in commands:
        print(f"{name:<32}" + "".join(f"{median(name, key):>15}" for key in columns))


if __name__ == "__main__":
    main()
