"""Sweeps: the 8-run collab grid run sequentially (Hydra's basic launcher) and with the parallel
preset (hydra/launcher=parallel: joblib, one job per core, one thread each), in one process run.

The grid is sweeps/sweep/collab_grid.yaml (n_factors 20,50,100,200 x wd 0.01,0.1) on MovieLens
100K, 3 epochs a run. Each sweep is one `python train.py -m ...` process, timed from its start
to its exit (wall) and by the CPU time it and its children used. With --single-thread a third row
runs the sequential sweep with OMP_NUM_THREADS=1, the thread count of each parallel job (the collab
task already trains on one thread: torch_threads).

Then the fixed cost of one job: process start -> first training step of a single
`python train.py task=collab` run (imports, composing the config, loading the data, building
the model, Lightning's sanity check), the median of --repeats.

    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_sweep.py
    flock /tmp/fastlight-bench.lock python tests/benchmarks/bench_sweep.py --sweeps 3 --single-thread
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[2]
STAMP = "+callbacks.stamp._target_=tests.benchmarks.bench_sweep.Stamp"


class Stamp(L.Callback):
    """Added to every benchmarked job: when fit started, when the first training step started,
    when training ended, and the threads torch used; written to <run folder>/stamps.json."""

    def __init__(self):
        self.times: dict[str, float] = {}

    def on_fit_start(self, trainer, pl_module):
        self.times["fit_start"] = time.time()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.times.setdefault("first_step", time.time())

    def on_train_end(self, trainer, pl_module):
        import torch

        self.times["train_end"] = time.time()
        info = {**self.times, "pid": os.getpid(), "threads": torch.get_num_threads()}
        (Path(trainer.default_root_dir) / "stamps.json").write_text(json.dumps(info))


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, subprocess.CompletedProcess]:
    """Runs `python train.py *args`; returns (wall s, CPU s of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"train.py {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out


def sweep_jobs(sweep_dir: Path) -> list[dict]:
    jobs = []
    for folder in sorted(p for p in sweep_dir.iterdir() if p.name.isdigit()):
        summary = json.loads((folder / "summary.json").read_text())
        if summary["status"] != "completed":
            raise SystemExit(f"{folder} failed: {summary['error']}")
        stamps = json.loads((folder / "stamps.json").read_text())
        train = stamps["train_end"] - stamps["first_step"]
        jobs.append({"status": summary["status"], "mse": summary["metrics"].get("val/mse"), "train": train,
                     "overhead": summary["wall_time_s"] - train, "threads": stamps["threads"], "pid": stamps["pid"],
                     "params": tuple(o for o in summary["overrides"] if o.startswith(("model.", "optim.")))})
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sweeps", type=int, default=2, help="repeats of each sweep, interleaved")
    parser.add_argument("--repeats", type=int, default=3, help="single runs timed for the fixed per-job cost")
    parser.add_argument("--single-thread", action="store_true", help="add a sequential row with OMP_NUM_THREADS=1")
    args = parser.parse_args()
    data = os.environ.get("FASTLIGHT_DATA") or str(REPO.parent / "shared" / "data")
    if not (Path(data) / "ml-100k" / "u.data").is_file():
        raise SystemExit(f"MovieLens 100K not found under {data}/ml-100k: set FASTLIGHT_DATA")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(FASTLIGHT_DATA=data, PYTHONPATH=str(REPO), WANDB_MODE="disabled")
    common = ["task=collab", "data=ml100k", f"trainer.max_epochs={args.epochs}", "logger=csv",
              "callbacks.progress_bar=null", STAMP]
    loads = [os.getloadavg()[0]]
    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))

    variants = {"sequential (basic launcher)": ([], {}), "parallel (hydra/launcher=parallel)": (["hydra/launcher=parallel"], {})}
    if args.single_thread:
        variants["sequential, OMP_NUM_THREADS=1"] = ([], {"OMP_NUM_THREADS": "1"})
    timings: dict[str, list[tuple[float, float, list[dict]]]] = {name: [] for name in variants}
    for i in range(args.sweeps):
        for name, (extra, extra_env) in variants.items():  # interleaved: slow drifts in load hit every row
            sweep_dir = tmp / f"sweep{i}-{list(variants).index(name)}"
            wall, cpu, _ = run(["-m", "+sweep=collab_grid", *common, *extra, f"hydra.sweep.dir={sweep_dir}"],
                               {**env, **extra_env})
            timings[name].append((wall, cpu, sweep_jobs(sweep_dir)))
            loads.append(os.getloadavg()[0])
            print(f"  {name}: {wall:.1f}s", file=sys.stderr)

    singles = []
    for i in range(args.repeats):
        run_dir = tmp / f"single{i}"
        start = time.time()
        single = [c for c in common if not c.startswith("trainer.max_epochs")]
        run([*single, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], env)
        stamps = json.loads((run_dir / "stamps.json").read_text())
        singles.append((stamps["fit_start"] - start, stamps["first_step"] - start))

    print(f"\nCollab grid (sweeps/sweep/collab_grid.yaml): 8 runs x {args.epochs} epochs on ML-100K; {os.cpu_count()} "
          f"cores; {args.sweeps} sweeps per row, interleaved; load average {min(loads):.1f}-{max(loads):.1f}")
    header = (f"{'launcher':36} {'wall s (median)':>15} {'min':>6} {'CPU s':>6} {'ratio':>6} {'procs':>5} {'thr':>4} "
              f"{'train s/job':>11} {'other s/job':>11}")
    print(header + "\n" + "-" * len(header))
    base = statistics.median(t[0] for t in timings["sequential (basic launcher)"])
    for name, runs in timings.items():
        jobs = [j for _, _, js in runs for j in js]
        wall = statistics.median(t[0] for t in runs)
        print(f"{name:36} {wall:15.1f} {min(t[0] for t in runs):6.1f} {statistics.median(t[1] for t in runs):6.1f} "
              f"{wall / base:6.2f} {len({j['pid'] for j in runs[0][2]}):>5} {jobs[0]['threads']:>4} "
              f"{statistics.fmean(j['train'] for j in jobs):11.2f} {statistics.fmean(j['overhead'] for j in jobs):11.2f}")
    seq, par = (timings[n] for n in list(variants)[:2])
    ratio = statistics.median(t[0] for t in par) / base
    print(f"\nparallel / sequential wall: {ratio:.2f} (medians), "
          f"{min(t[0] for t in par) / min(t[0] for t in seq):.2f} (fastest of each); target <= 0.6")
    mse = [{j["params"]: j["mse"] for j in js} for _, _, js in seq + par]
    print(f"valid MSE of each config, across all sweeps: max |diff| {max(abs(m[k] - mse[0][k]) for m in mse for k in m):.2g}"
          f" (best config {min(mse[0].values()):.4f})")
    imports = statistics.median(s[0] for s in singles)
    first = statistics.median(s[1] for s in singles)
    print(f"\nfixed per-job cost, process start -> first training step (python train.py task=collab, median of "
          f"{len(singles)}): {first:.2f}s = {imports:.2f}s to Trainer.fit (imports, config, data, model) + "
          f"{first - imports:.2f}s in fit before the first step (sanity check, loaders)")
    print("'train s/job': first training step -> end of training; 'other s/job': the rest of the job inside the sweep "
          "process (data, model, sanity check, test, interpretation, records); 'procs': processes that ran the jobs")


if __name__ == "__main__":
    main()
