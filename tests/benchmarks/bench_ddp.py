"""DDP on CPU: two ranks share each epoch of collab (ML-100K), halving each rank's optimizer steps.

    python tests/benchmarks/bench_ddp.py [--epochs 2] [--repeats 1]

Runs `python train.py task=collab` in one process at batch size 64, with `trainer=ddp
trainer.accelerator=cpu trainer.devices=2` at 64 per rank (each rank half the rows, so half the
optimizer steps), and in one process at 128 (the DDP run's effective batch size: its reference for
the metric), and prints optimizer steps per rank, wall time and the validation MSE side by side. Each rank runs one torch thread.
On a 2-core machine the two ranks compete with each other (and with anything else running), and
DDP on CPU syncs gradients through gloo every step; the table shows what that costs here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], folder: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "train.py", *args, "logger=csv", "callbacks.progress_bar=null",
                        "+callbacks.count._target_=tests.helpers.CountHooks", f"hydra.run.dir={folder}"],
                       cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"run failed: {r.stderr[-1500:]}")
    counts = json.loads((folder / "hook_counts.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    return {"steps": counts["global_step"], "world": counts["world_size"], "wall": wall,
            "mse": summary["metrics"]["val/mse"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    base = ["task=collab", f"trainer.max_epochs={args.epochs}", "torch_threads=1"]
    configs = {
        "1 process, bs 64": [*base, "data.batch_size=64"],
        "DDP 2 CPU ranks, bs 64 each": [*base, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                                         "data.batch_size=64"],
        "1 process, bs 128 (same eff. bs)": [*base, "data.batch_size=128"],
    }
    results: dict[str, list[dict]] = {k: [] for k in configs}
    with tempfile.TemporaryDirectory(prefix="bench_ddp-") as tmp:
        for i in range(args.repeats):
            for name, overrides in configs.items():
                results[name].append(run(overrides, Path(tmp) / f"{i}-{len(results[name])}-{name[:3]}"))
    print(f"\ncollab ML-100K, {args.epochs} epochs, medians of {args.repeats}")
    print(f"{'':32} {'ranks':>5} {'steps/rank':>10} {'wall s':>8} {'val MSE':>8}")
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("steps", "wall", "mse")}
        print(f"{name:32} {rows[0]['world']:>5} {med['steps']:>10.0f} {med['wall']:>8.1f} {med['mse']:>8.4f}")


if __name__ == "__main__":
    main()
