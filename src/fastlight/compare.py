"""Compare runs from their own records: python -m fastlight.compare <sweep folder | run folders...>

Reads what each run left in its folder (`summary.json`, `config.yaml`, `metrics.csv`; no W&B,
no server), prints a table ranked by the task's optimized metric and writes a self-contained
HTML report (`fastlight.tracking.report`). A sweep that is still running is compared on what
its jobs have logged so far; failed runs are listed as failed, with their error; a run whose
process died without a word (SIGKILL, a lost machine) is shown as killed, with the time it last
reported.

- Swept parameters: the command-line overrides (`summary.json` keeps them) whose values differ
  between runs: exactly what a grid, an Optuna search or a hand-made set of runs varied.
- Replicates: runs that differ only in `seed` are one configuration, shown as mean ± std.

This module reads and ranks; `fastlight.tracking.report` only draws what it is given, and
imports nothing from here (the dependency goes one way).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from fastlight.tracking.liveness import last_report, observed_status, timestamp

LOWER_IS_BETTER = {"min": True, "max": False}
STATUS_ORDER = {"completed": 0, "running": 1, "interrupted": 2, "killed": 2, "failed": 3}
SMOOTH_BETA = 0.98  # fastai's Recorder / AvgSmoothLoss


def smooth_loss(steps: list[int], values: list[float], beta: float = SMOOTH_BETA) -> list[float]:
    """fastai's smoothed training loss (exponentially weighted, debiased: AvgSmoothLoss) per step.

    fastai updates the average at every batch. metrics.csv may log every k-th step only, so each
    logged value stands for the k steps since the previous one: it enters with weight 1 - beta**k
    and the debiasing divides by 1 - beta**(steps so far); steps count from 0, as Lightning's.
    With a value at every step this is exactly fastai's recurrence.
    """
    out: list[float] = []
    avg, weight, prev = 0.0, 0.0, -1
    for step, value in zip(steps, values):
        k = max(step - prev, 1)
        decay = beta**k
        avg = decay * avg + (1 - decay) * value
        weight = decay * weight + (1 - decay)  # = 1 - beta**(steps so far)
        out.append(avg / weight)
        prev = step
    return out


@dataclass
class Run:
    path: Path
    name: str
    summary: dict
    overrides: dict[str, str]
    curves: dict[str, list[tuple[int, float]]]  # val/* metric -> [(epoch, value)] from metrics.csv
    train_loss: list[tuple[int, float]]  # (step, train/loss) as logged
    config_text: str

    @cached_property
    def status(self) -> str:
        """summary.json's status, but "killed" for a "running" run that died without a word."""
        return observed_status(self.summary)

    @property
    def last_report(self) -> float | None:
        """When the run last wrote its summary (its heartbeat), if it says."""
        return last_report(self.summary)

    @property
    def metric_name(self) -> str:
        return self.summary["optimized_metric"]["name"]

    def metric(self, name: str) -> float | None:
        """A final metric from summary.json; for an unfinished run, the best value logged so far."""
        value = self.summary.get("metrics", {}).get(name)
        if value is None and self.status != "completed" and self.curves.get(name):
            values = [v for _, v in self.curves[name]]
            lower = LOWER_IS_BETTER[self.summary["optimized_metric"]["mode"]]
            value = min(values) if lower else max(values)
        return value

    @property
    def wall_time(self) -> float:
        started = timestamp(self.summary.get("started_at"))
        if self.status == "running" and started is not None:
            return max(time.time() - started, 0.0)
        if self.status == "killed" and started is not None and self.last_report is not None:
            return max(self.last_report - started, 0.0)
        return float(self.summary.get("wall_time_s") or 0.0)

    def smoothed_loss(self) -> tuple[list[int], list[float]]:
        steps = [s for s, _ in self.train_loss]
        return steps, smooth_loss(steps, [v for _, v in self.train_loss])


def find_runs(paths: list[Path]) -> list[Path]:
    """Run folders: the paths that hold a summary.json, or the folders below them that do."""
    found: list[Path] = []
    for path in paths:
        if (path / "summary.json").is_file():
            found.append(path)
        else:
            found += [p.parent for p in path.rglob("summary.json") if "wandb" not in p.parts]
    return sorted(set(found), key=_natural_key)


def _natural_key(path: Path) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in path.parts)


def load_run(path: Path, name: str) -> Run:
    summary = json.loads((path / "summary.json").read_text(encoding="utf-8"))
    overrides = {}
    for item in summary.get("overrides", []):
        key, _, value = item.partition("=")
        overrides[key.lstrip("+~")] = value
    config = path / "config.yaml"
    curves, loss = read_metrics(path / "metrics.csv")
    return Run(path, name, summary, overrides, curves, loss,
               config.read_text(encoding="utf-8") if config.is_file() else "")


def read_metrics(path: Path) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, float]]]:
    """Every val/* metric per epoch and the training loss per step, from Lightning's CSVLogger file.

    A running job's file may end in a half-written line: what does not parse is skipped.
    """
    if not path.is_file():
        return {}, []
    try:
        df = pd.read_csv(path, on_bad_lines="skip")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}, []
    df = df.apply(pd.to_numeric, errors="coerce")

    def series(x: str, y: str) -> list[tuple[int, float]]:
        return [(int(a), float(b)) for a, b in df[[x, y]].dropna().itertuples(index=False)] if x in df else []

    curves = {c: pts for c in df.columns if str(c).startswith("val/") and (pts := series("epoch", c))}
    loss_col = next((c for c in ("train/loss_step", "train/loss") if c in df), None)
    return curves, series("step", loss_col) if loss_col else []


def load_runs(paths: list[Path]) -> list[Run]:
    dirs = find_runs(paths)
    if not dirs:
        raise SystemExit(f"error: no run folders (with a summary.json) under {', '.join(map(str, paths))}")
    root = Path(os.path.commonpath(dirs)) if len(dirs) > 1 else dirs[0].parent
    return [load_run(d, str(d.relative_to(root)) or d.name) for d in dirs]


def swept_params(runs: list[Run]) -> list[str]:
    """The overrides whose value is not the same in every run (a missing one counts as a value)."""
    keys = sorted({k for r in runs for k in r.overrides})
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def key_metrics(runs: list[Run], optimized: str, limit: int = 4) -> list[str]:
    """The optimized metric, its test twin, then the other val/ and test/ metrics."""
    names = {k for r in runs for k in r.summary.get("metrics", {})} - {optimized}
    twin = "test/" + optimized.split("/", 1)[-1]
    rest = sorted(names - {twin}, key=lambda k: (not k.startswith("val/"), k))
    return [optimized] + ([twin] if twin in names else []) + rest[: limit - (twin in names)]


def short(value: str) -> str:
    """A swept value as typed, but an Optuna float like 0.0036498788 as 0.00365."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 8 else f"{number:.4g}"


@dataclass
class Comparison:
    runs: list[Run]  # ranked
    params: list[str]
    metric: str
    mode: str
    metrics: list[str]
    frame: pd.DataFrame  # one row per run: params, metrics, status, order, wall
    groups: list[list[Run]]  # ranked configurations, each its replicate runs (one unless seeds vary)

    @property
    def replicated(self) -> bool:
        return any(len(g) > 1 for g in self.groups)

    def table(self) -> pd.DataFrame:
        """The ranked table as text cells: one row per configuration (replicates aggregated)."""
        arrow = "↓" if LOWER_IS_BETTER[self.mode] else "↑"
        shown = [p for p in self.params if p != "seed"] if self.replicated else self.params
        rows = []
        for i, group in enumerate(self.groups, 1):
            every = self.frame.loc[[r.name for r in group]]
            runs = _trusted(every)
            row = {"rank": str(i), "runs" if self.replicated else "run": ",".join(r.name for r in group)}
            row.update({p: short(group[0].overrides.get(p, "")) for p in shown})
            for m in self.metrics:
                row[f"{m} {arrow}" if m == self.metric else m] = _cell(runs[m].dropna())
            if self.replicated:
                row["n"] = str(len(group))
            counts = every["status"].value_counts()
            row["status"] = every["status"].iloc[0] if len(group) == 1 else ", ".join(
                f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: STATUS_ORDER.get(x[0], 4)))
            row["wall"] = f"{every['wall'].mean():.1f}s"
            rows.append(row)
        return pd.DataFrame(rows)


def _trusted(rows: pd.DataFrame) -> pd.DataFrame:
    """The replicates a configuration's numbers come from: its completed runs if it has any
    (a failed or killed replicate would skew the mean), else whatever its runs reached."""
    done = rows[rows["status"].str.startswith("completed")]
    return done if len(done) else rows


def _cell(values: pd.Series) -> str:
    if values.empty:
        return "-"
    if len(values) == 1:
        return f"{values.iloc[0]:.4g}"
    return f"{values.mean():.4g} ± {values.std():.2g}"


def compare(runs: list[Run]) -> Comparison:
    names = [r.metric_name for r in runs]
    metric = max(set(names), key=names.count)  # runs of another task are shown, ranked last
    mode = next(r.summary["optimized_metric"]["mode"] for r in runs if r.metric_name == metric)
    params = swept_params(runs)
    metrics = key_metrics(runs, metric)
    sign = 1.0 if LOWER_IS_BETTER[mode] else -1.0
    frame = pd.DataFrame(
        # A final fit (data.final_fit: trained on train + valid, scored on test) is not comparable
        # with ordinary runs: it is listed after them, marked as such.
        [{"run": r.name, "status": r.status + (" (final fit)" if r.summary.get("final_fit") else ""),
          "order": STATUS_ORDER.get(r.status, 4) + (10 if r.summary.get("final_fit") else 0), "wall": r.wall_time,
          **{p: r.overrides.get(p, "") for p in params}, **{m: r.metric(m) for m in metrics}} for r in runs]
    ).set_index("run", drop=False)
    frame[metrics] = frame[metrics].astype(float)
    # Completed runs by the metric, then running ones (partial values), then the rest.
    frame["key"] = sign * frame[metric]
    frame = frame.sort_values(["order", "key"], na_position="last", kind="stable")
    by_name = {r.name: r for r in runs}
    ranked = [by_name[n] for n in frame.index]
    shown = [p for p in params if p != "seed"]
    if "seed" in params:  # replicates: one configuration per set of the other params, by mean
        grouped = frame.groupby(shown, sort=False) if shown else frame.groupby(lambda _: 0)
        agg = grouped.apply(lambda g: pd.Series({"order": g["order"].min(), "key": _trusted(g)["key"].mean(),
                                                 "runs": list(g["run"])}), include_groups=False)
        agg = agg.sort_values(["order", "key"], na_position="last", kind="stable")
        groups = [sorted((by_name[n] for n in names), key=lambda r: _natural_key(Path(r.name))) for names in agg.runs]
    else:
        groups = [[r] for r in ranked]
    return Comparison(ranked, params, metric, mode, metrics, frame, groups)


def summary_text(comp: Comparison, limit: int | None = None) -> str:
    table = comp.table()
    text = table.head(limit).to_string(index=False) if limit else table.to_string(index=False)
    if limit and len(table) > limit:
        text += f"\n... {len(table) - limit} more (python -m fastlight.compare for all)"
    errors = [f"  {r.name}: {' '.join(str(r.summary.get('error')).split())[:300]}"
              for r in comp.runs if r.status in ("failed", "interrupted")]
    if errors:
        text += "\nfailed runs:\n" + "\n".join(errors)
    killed = [f"  {r.name}: last reported {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.last_report))}"
              if r.last_report else f"  {r.name}" for r in comp.runs if r.status == "killed"]
    if killed:
        text += "\nkilled runs (no final status):\n" + "\n".join(killed)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlight.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="a sweep folder, or run folders")
    parser.add_argument("--html", type=Path, help="report path (default: <folder>/report.html, or ./compare.html)")
    parser.add_argument("--no-html", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    for p in args.paths:
        if not p.is_dir():
            raise SystemExit(f"error: {p} is not a folder")
    comp = compare(load_runs(args.paths))
    print(summary_text(comp))
    if not args.no_html:
        from fastlight.tracking.report import write_report

        default = args.paths[0] / "report.html" if len(args.paths) == 1 else Path("compare.html")
        title = " ".join(str(p) for p in args.paths)
        print(f"report: {write_report(comp, args.html or default, title).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
