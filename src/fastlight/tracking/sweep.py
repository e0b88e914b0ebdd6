"""What a sweep needs beyond Hydra's sweepers and launchers: a Hydra callback (conf/hydra/default.yaml).

- The exit code. Inside a sweep, `fastlight.run.train` records a failed job (bad value, NaN loss,
  exception) in its summary.json and returns NaN, so the sweep goes on with the other jobs. When
  the sweep ends this callback reads the jobs' summary.json files, prints the ranked table
  (`fastlight.compare`), writes <sweep dir>/report.html, and makes the process exit non-zero
  only if no job completed.
- DDP inside a sweep. Lightning starts ranks 1..N-1 of a `trainer=ddp` job by running the
  command line again with `hydra.run.dir=<hydra.run.dir>`; in a sweep that command line is the
  whole sweep (`-m a=1,2`) and `hydra.run.dir` is not the job's folder, so every rank would run
  its own sweep into new folders. Before each job this callback points both at the job: the
  job's own overrides in RUN mode, and its folder. After it, the job's process group and the
  variables Lightning set for it (LOCAL_RANK, MASTER_PORT, ...) go: left set, they would make
  Lightning believe the next job's ranks were already started.
- A failed job's result. run.py returns NaN for it; a job that returns NaN comes back to the
  sweeper as None (no result). Hydra's Optuna sweeper then records the trial as failed and goes
  on, where with NaN (hydra-optuna-sweeper 1.3) it tells Optuna a completed trial, Optuna refuses
  the NaN, and telling it again as failed crashes the whole study.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict, read_write

# What Lightning's DDP launcher sets in the launching process (and reads to decide whether to launch).
DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def job_summaries(sweep_dir: Path, since: float = 0.0) -> list[dict]:
    """summary.json of every job under sweep_dir written since `since` (a reused folder keeps old ones)."""
    found = []
    for path in sorted(sweep_dir.glob("*/summary.json")):
        if path.stat().st_mtime >= since:
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                found.append({"status": "unreadable", "error": f"{path} could not be read"})
    return found


class SweepCallback(Callback):
    def __init__(self, table_rows: int = 20, report: bool = True):
        self.table_rows = table_rows  # longest table printed at the end of a sweep
        self.report = report  # write <sweep dir>/report.html at the end of a sweep
        self.started = 0.0
        self._argv: list[str] | None = None
        self._environ: dict[str, str | None] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time() - 2  # file times have coarse resolution on some filesystems

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hc = HydraConfig.instance().cfg.hydra
        if hc.mode != RunMode.MULTIRUN:
            return
        # What Lightning's DDP launcher re-runs for the other ranks: this job alone, in its folder.
        self._argv, self._environ = sys.argv, {k: os.environ.get(k) for k in DDP_VARIABLES}
        sys.argv = [sys.argv[0], *config.hydra.overrides.task, "hydra.mode=RUN"]
        with read_write(hc), open_dict(hc):
            hc.run.dir = hc.runtime.output_dir

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self._argv is not None:
            sys.argv, self._argv = self._argv, None
            _end_distributed(self._environ)
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            if isinstance(value, float) and math.isnan(value):
                job_return.return_value = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        jobs = job_summaries(sweep_dir, self.started)
        counts: dict[str, int] = {}
        for job in jobs:
            counts[job.get("status", "?")] = counts.get(job.get("status", "?"), 0) + 1
        if counts.get("completed"):
            self._print_comparison(sweep_dir)
        states = ", ".join(f"{n} {s}" for s, n in counts.items())
        print(f"[fastlight] sweep {sweep_dir}: {len(jobs)} jobs ({states})", file=sys.stderr)
        if not counts.get("completed"):
            print("[fastlight] every job of the sweep failed: see the errors above", file=sys.stderr)
            raise SystemExit(1)
        print(f"  compare: python -m fastlight.compare {sweep_dir}", file=sys.stderr)

    def _print_comparison(self, sweep_dir: Path) -> None:
        from fastlight.compare import compare, load_runs, summary_text
        from fastlight.tracking.report import write_report

        comp = compare(load_runs([sweep_dir]))
        print(summary_text(comp, limit=self.table_rows))
        if self.report:
            print(f"report: {write_report(comp, sweep_dir / 'report.html', str(sweep_dir))}")


def _end_distributed(environ: dict[str, str | None]) -> None:
    """Close the job's torch.distributed group and put back the variables Lightning set for it."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in environ.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
