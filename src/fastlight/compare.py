"""Compare runs from their own records: python -m fastlight.compare <sweep folder | run folders...>

Reads what each run left in its folder (`summary.json`, `config.yaml`, `metrics.csv`; no W&B,
no server), prints a table ranked by the task's optimized metric and writes a self-contained
HTML report (`fastlight.tracking.report`). A sweep that is still running is compared on what
its jobs have logged so far; failed runs are listed as failed, with their error.

- Swept parameters: the command-line overrides (`summary.json` keeps them) whose values differ
  between runs: exactly what a grid, an Optuna search or a hand-made set of runs varied.
- Replicates: runs that differ only in `seed` are one configuration, shown as mean ± std.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path


LOWER_IS_BETTER = {"min": True, "max": False}
STATUS_ORDER = {"completed": 0, "running": 1, "interrupted": 2, "failed": 3}


@dataclass
class Run:
    path: Path
    name: str
    summary: dict
    overrides: dict[str, str]
    curves: dict[str, list[tuple[int, float]]]  # val/* metric -> [(epoch, value)] from metrics.csv
    config_text: str

    @property
    def status(self) -> str:
        return self.summary.get("status", "running")

    @property
    def metric_name(self) -> str:
        return self.summary["optimized_metric"]["name"]

    def metric(self, name: str) -> float | None:
        """A final metric from summary.json; for a running job, the best value logged so far."""
        value = self.summary.get("metrics", {}).get(name)
        if value is None and self.status == "running" and self.curves.get(name):
            values = [v for _, v in self.curves[name]]
            lower = LOWER_IS_BETTER[self.summary["optimized_metric"]["mode"]]
            value = min(values) if lower else max(values)
        return value

    @property
    def wall_time(self) -> float:
        if self.status != "running":
            return float(self.summary.get("wall_time_s") or 0.0)
        started = time.mktime(time.strptime(self.summary["started_at"], "%Y-%m-%dT%H:%M:%S"))
        return max(time.time() - started, 0.0)


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
    return Run(path, name, summary, overrides, read_curves(path / "metrics.csv"),
               config.read_text(encoding="utf-8") if config.is_file() else "")


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Every val/* metric per epoch, from Lightning's CSVLogger file (a partial last line is skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return curves
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith("val/") and value:
                    try:
                        curves.setdefault(key, []).append((int(float(row["epoch"])), float(value)))
                    except (TypeError, ValueError):
                        pass
    return curves


def load_runs(paths: list[Path]) -> list[Run]:
    dirs = find_runs(paths)
    if not dirs:
        raise SystemExit(f"error: no run folders (with a summary.json) under {', '.join(map(str, paths))}")
    root = Path(*_common_parts(dirs)) if len(dirs) > 1 else dirs[0].parent
    return [load_run(d, str(d.relative_to(root)) or d.name) for d in dirs]


def _common_parts(dirs: list[Path]) -> list[str]:
    common = list(dirs[0].parts)
    for d in dirs[1:]:
        n = 0
        while n < min(len(common), len(d.parts)) and common[n] == d.parts[n]:
            n += 1
        common = common[:n]
    return common or ["/"]


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


def rank(runs: list[Run], metric: str, mode: str) -> list[Run]:
    """Completed runs by the metric, then running ones (partial values), then the rest."""
    sign = 1 if LOWER_IS_BETTER[mode] else -1

    def key(r: Run):
        value = r.metric(metric)
        return (STATUS_ORDER.get(r.status, 3), value is None, sign * value if value is not None else 0)

    return sorted(runs, key=key)


@dataclass
class Config:
    """One row of the ranked table: a configuration and its replicate runs (one unless seeds vary)."""

    params: dict[str, str]
    runs: list[Run]

    def values(self, metric: str) -> list[float]:
        return [v for r in self.runs if r.status in ("completed", "running") and (v := r.metric(metric)) is not None]

    def mean(self, metric: str) -> float | None:
        values = self.values(metric)
        return statistics.fmean(values) if values else None

    def cell(self, metric: str) -> str:
        values = self.values(metric)
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.4g}"
        return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"

    @property
    def status(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r.status] = counts.get(r.status, 0) + 1
        if len(self.runs) == 1:
            return self.runs[0].status
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: STATUS_ORDER.get(x[0], 3)))


def group_replicates(runs: list[Run], params: list[str], metric: str, mode: str) -> list[Config]:
    """One Config per distinct set of params other than seed, ranked by the mean metric."""
    shown = [p for p in params if p != "seed"]
    groups: dict[tuple, Config] = {}
    for r in runs:
        values = tuple(r.overrides.get(p, "") for p in shown)
        groups.setdefault(values, Config(dict(zip(shown, values)), [])).runs.append(r)
    sign = 1 if LOWER_IS_BETTER[mode] else -1

    def key(c: Config):
        best = min(STATUS_ORDER.get(r.status, 3) for r in c.runs)
        mean = c.mean(metric)
        return (best, mean is None, sign * mean if mean is not None else 0)

    return sorted(groups.values(), key=key)


@dataclass
class Comparison:
    runs: list[Run]  # ranked
    params: list[str]
    metric: str
    mode: str
    metrics: list[str]
    configs: list[Config]  # ranked; one per run unless seeds were replicated

    @property
    def replicated(self) -> bool:
        return any(len(c.runs) > 1 for c in self.configs)

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The ranked table: one row per configuration (replicates aggregated)."""
        arrow = "↓" if LOWER_IS_BETTER[self.mode] else "↑"
        shown = [p for p in self.params if p != "seed"] if self.replicated else self.params
        header = ["rank", "runs" if self.replicated else "run", *shown]
        header += [f"{m} {arrow}" if m == self.metric else m for m in self.metrics]
        header += ["n"] * self.replicated + ["status", "wall"]
        rows = []
        for i, c in enumerate(self.configs, 1):
            row = [str(i), ",".join(sorted((r.name for r in c.runs), key=lambda n: _natural_key(Path(n))))]
            row += [short(c.params.get(p, "")) for p in shown]
            row += [c.cell(m) for m in self.metrics]
            row += [str(len(c.runs))] * self.replicated
            wall = statistics.fmean(r.wall_time for r in c.runs)
            row += [c.status, f"{wall:.1f}s"]
            rows.append(row)
        return header, rows


def compare(runs: list[Run]) -> Comparison:
    names = [r.metric_name for r in runs]
    metric = max(set(names), key=names.count)  # runs of another task are shown, ranked last
    mode = next(r.summary["optimized_metric"]["mode"] for r in runs if r.metric_name == metric)
    params = swept_params(runs)
    ranked = rank(runs, metric, mode)
    if "seed" in params:
        configs = group_replicates(ranked, params, metric, mode)
    else:
        configs = [Config({p: r.overrides.get(p, "") for p in params}, [r]) for r in ranked]
    return Comparison(ranked, params, metric, mode, key_metrics(runs, metric), configs)


def short(value: str) -> str:
    """A swept value as typed, but an Optuna float like 0.0036498788 as 0.00365."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if len(value) <= 8 else f"{number:.4g}"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def summary_text(comp: Comparison, limit: int | None = None) -> str:
    header, rows = comp.table()
    text = format_table(header, rows[:limit] if limit else rows)
    if limit and len(rows) > limit:
        text += f"\n... {len(rows) - limit} more (python -m fastlight.compare for all)"
    errors = [f"  {r.name}: {' '.join(str(r.summary.get('error')).split())[:300]}"
              for r in comp.runs if r.status in ("failed", "interrupted")]
    if errors:
        text += "\nfailed runs:\n" + "\n".join(errors)
    return text


def write_report(comp: Comparison, path: Path, title: str) -> Path:
    from fastlight.tracking.report import render

    path.write_text(render(comp, title), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
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
        default = args.paths[0] / "report.html" if len(args.paths) == 1 else Path("compare.html")
        title = " ".join(str(p) for p in args.paths)
        print(f"report: {write_report(comp, args.html or default, title).resolve()}")


if __name__ == "__main__":
    main()
