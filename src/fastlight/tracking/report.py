"""The HTML report of `fastlight.compare`: one self-contained file (inline CSS, inline SVG charts
drawn here, no script or font from anywhere else), so it opens from disk, offline, anywhere.

Contents: the ranked table, every run's validation curves overlaid, the optimized metric
against each swept parameter, and the best run's full config.
"""

from __future__ import annotations

import html
import math
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastlight.compare import Comparison

# matplotlib's tab10: distinct, colour-blind friendlier than random hues.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
W, H = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 30, 46

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{cursor:pointer;background:#f4f4f4} tr.failed td,tr.interrupted td{color:#b00}
tr.running td{color:#777;font-style:italic}
.swatch{display:inline-block;width:10px;height:10px;margin-right:6px;border-radius:2px}
.charts{display:flex;flex-wrap:wrap;gap:16px} svg{background:#fff;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif;fill:#333} svg .title{font-size:13px;font-weight:600}
pre{background:#f7f7f7;padding:12px;overflow:auto;max-height:480px} .muted{color:#777}
"""

# Click a column header to sort by it (numbers by value); the only script in the page.
SORT_JS = """
document.querySelectorAll("table").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, i) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], up = th.dataset.up !== "1";
      th.dataset.up = up ? "1" : "0";
      var key = function (row) {
        var text = row.cells[i].textContent, x = parseFloat(text);
        return isNaN(x) ? text : x;
      };
      Array.from(body.rows).sort(function (a, b) {
        var x = key(a), y = key(b);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      }).forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def render(comp: Comparison, title: str) -> str:
    colors = {r.name: PALETTE[i % len(PALETTE)] for i, r in enumerate(comp.runs)}
    counts: dict[str, int] = {}
    for r in comp.runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    parts = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='muted'>{len(comp.runs)} runs ({esc(', '.join(f'{n} {s}' for s, n in counts.items()))}); "
        f"ranked by {esc(comp.metric)} ({'lower' if comp.mode == 'min' else 'higher'} is better); "
        f"swept: {esc(', '.join(comp.params) or 'nothing')}; written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        "<h2>Ranked</h2>",
        _ranked_table(comp, colors),
    ]
    if comp.replicated:
        parts += ["<h2>All runs</h2>", _runs_table(comp, colors)]
    failed = [r for r in comp.runs if r.status in ("failed", "interrupted")]
    if failed:
        items = "".join(f"<li><b>{esc(r.name)}</b>: {esc(r.summary.get('error'))}</li>" for r in failed)
        parts += ["<h2>Failed runs</h2>", f"<ul id='failures'>{items}</ul>"]
    parts += ["<h2>Validation curves</h2>", "<div class='charts'>", *_curve_charts(comp, colors), "</div>"]
    if comp.params:
        parts += [f"<h2>{esc(comp.metric)} against each swept parameter</h2>", "<div class='charts'>"]
        parts += [_param_chart(comp, p, colors) for p in comp.params] + ["</div>"]
    best = next((r for r in comp.runs if r.status == "completed" and r.metric(comp.metric) is not None), None)
    if best is not None:
        parts += [f"<h2>Best run: {esc(best.name)} ({esc(best.path)})</h2>",
                  f"<pre id='best-config'>{esc(best.config_text)}</pre>"]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n<script>{SORT_JS}</script></body></html>\n")


def _table(table_id: str, header: list[str], rows: list[tuple[list[str], str, str]]) -> str:
    """rows: (cells, css class, run name or "" when the row is several runs)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{esc(cls)}'" + (f" data-run='{esc(run)}'" if run else "") + ">"
        + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        for cells, cls, run in rows
    )
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _swatch(color: str) -> str:
    return f"<span class='swatch' style='background:{color}'></span>"


def _ranked_table(comp: Comparison, colors: dict[str, str]) -> str:
    header, rows = comp.table()
    out = []
    for config, cells in zip(comp.configs, rows):
        single = len(config.runs) == 1
        cells = [esc(c) for c in cells]
        if single:
            cells[1] = _swatch(colors[config.runs[0].name]) + cells[1]
        status = config.runs[0].status if single else ""
        out.append((cells, status, config.runs[0].name if single else ""))
    return _table("ranked", header, out)


def _runs_table(comp: Comparison, colors: dict[str, str]) -> str:
    header = ["run", *comp.params, *comp.metrics, "status", "wall"]
    rows = []
    for r in comp.runs:
        cells = [_swatch(colors[r.name]) + esc(r.name)] + [esc(r.overrides.get(p, "")) for p in comp.params]
        cells += [esc("-" if (v := r.metric(m)) is None else f"{v:.4g}") for m in comp.metrics]
        cells += [esc(r.status), f"{r.wall_time:.1f}s"]
        rows.append((cells, r.status, r.name))
    return _table("runs", header, rows)


def _curve_charts(comp: Comparison, colors: dict[str, str]) -> list[str]:
    names = [comp.metric] + [m for m in ("val/loss",) if m != comp.metric]
    charts = []
    for name in names:
        series = [(r.name, colors[r.name], r.curves[name]) for r in comp.runs if r.curves.get(name)]
        if series:
            charts.append(line_chart(f"{name} per epoch", series, "epoch", name))
    return charts or ["<p class='muted'>No validation metrics logged yet (metrics.csv).</p>"]


def _param_chart(comp: Comparison, param: str, colors: dict[str, str]) -> str:
    points = []
    for r in comp.runs:
        value = r.metric(comp.metric)
        if value is not None:
            points.append((r.overrides.get(param, "(default)"), value, r.name, colors[r.name], r.status == "running"))
    return scatter_chart(f"{comp.metric} vs {param}", points, param, comp.metric)


# --- SVG ------------------------------------------------------------------------------------


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (m * step) <= n + 1:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) + 0.0 for i in range(int((hi - first) / step + 1e-9) + 1)]


def _domain(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.05 or 0.5
        return lo - pad, hi + pad
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


class Axes:
    """Maps data to pixels inside the plot area; x may be linear, log or categorical."""

    def __init__(self, xs: list, ys: list[float], log_x: bool = False):
        self.categories = sorted({x for x in xs if isinstance(x, str)})
        self.log_x = log_x and not self.categories
        if self.categories:
            self.x0, self.x1 = -0.5, len(self.categories) - 0.5
        else:
            self.x0, self.x1 = _domain([math.log10(x) for x in xs] if self.log_x else xs)
        self.y0, self.y1 = _domain(ys)

    def px(self, x) -> float:
        if self.categories:
            x = self.categories.index(x)
        elif self.log_x:
            x = math.log10(x)
        return LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        return H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)

    def frame(self, title: str, x_label: str, y_label: str, integer_x: bool = False) -> list[str]:
        out = [f"<text class='title' x='{LEFT}' y='18'>{esc(title)}</text>",
               f"<rect x='{LEFT}' y='{TOP}' width='{W - LEFT - RIGHT}' height='{H - TOP - BOTTOM}' "
               "fill='none' stroke='#999'/>"]
        for y in nice_ticks(self.y0, self.y1):
            out.append(f"<line x1='{LEFT - 4}' x2='{W - RIGHT}' y1='{self.py(y):.1f}' y2='{self.py(y):.1f}' stroke='#eee'/>"
                       f"<text x='{LEFT - 6}' y='{self.py(y) + 4:.1f}' text-anchor='end'>{y:.4g}</text>")
        if self.categories:
            ticks = [(c, c) for c in self.categories]
        elif self.log_x:
            ticks = [(10.0 ** e, f"{10.0 ** e:g}") for e in range(math.ceil(self.x0), math.floor(self.x1) + 1)]
            ticks = ticks or [(10 ** self.x0, f"{10 ** self.x0:.3g}"), (10 ** self.x1, f"{10 ** self.x1:.3g}")]
        else:
            ticks = [(x, f"{x:.4g}") for x in nice_ticks(self.x0, self.x1) if not integer_x or x == round(x)]
        for x, label in ticks:
            out.append(f"<text x='{self.px(x):.1f}' y='{H - BOTTOM + 16}' text-anchor='middle'>{esc(label)}</text>")
        out.append(f"<text x='{(LEFT + W - RIGHT) / 2}' y='{H - 8}' text-anchor='middle'>{esc(x_label)}</text>")
        out.append(f"<text transform='translate(14,{(TOP + H - BOTTOM) / 2}) rotate(-90)' "
                   f"text-anchor='middle'>{esc(y_label)}</text>")
        return out


def _svg(kind: str, body: list[str]) -> str:
    return f"<svg class='chart {kind}' width='{W}' height='{H}' viewBox='0 0 {W} {H}' role='img'>{''.join(body)}</svg>"


def line_chart(title: str, series: list[tuple[str, str, list[tuple[int, float]]]], x_label: str, y_label: str) -> str:
    """One polyline (with a dot per point) per run; hovering shows the run."""
    xs = [x for _, _, pts in series for x, _ in pts]
    ys = [y for _, _, pts in series for _, y in pts]
    ax = Axes(xs, ys)
    body = ax.frame(title, x_label, y_label, integer_x=True)
    for name, color, pts in series:
        coords = " ".join(f"{ax.px(x):.1f},{ax.py(y):.1f}" for x, y in pts)
        tip = f"<title>{esc(name)}: " + ", ".join(f"{y:.4g}" for _, y in pts) + "</title>"
        body.append(f"<g class='series' data-run='{esc(name)}'><polyline class='curve' points='{coords}' fill='none' "
                    f"stroke='{color}' stroke-width='2'>{tip}</polyline>")
        body += [f"<circle cx='{ax.px(x):.1f}' cy='{ax.py(y):.1f}' r='3' fill='{color}'>{tip}</circle>" for x, y in pts]
        body.append("</g>")
    return _svg("curves", body)


def scatter_chart(title: str, points: list[tuple[str, float, str, str, bool]], x_label: str, y_label: str) -> str:
    """points: (parameter value as typed, metric, run, colour, partial). Numbers are placed on a
    numeric axis (log when they span more than a decade), anything else as categories."""
    if not points:
        return _svg("scatter", [f"<text class='title' x='{LEFT}' y='18'>{esc(title)}: no values yet</text>"])
    xs: list = []
    for value, *_ in points:
        try:
            xs.append(float(value))
        except ValueError:
            xs.append(value)
    if any(isinstance(x, str) for x in xs):
        xs = [str(value) for value, *_ in points]
    numeric = [x for x in xs if not isinstance(x, str)]
    log_x = bool(numeric) and min(numeric) > 0 and max(numeric) / min(numeric) >= 20
    ax = Axes(xs, [p[1] for p in points], log_x=log_x)
    body = ax.frame(title, x_label, y_label, integer_x=bool(numeric) and all(x == int(x) for x in numeric))
    for x, (value, y, run, color, partial) in zip(xs, points):
        fill = "#fff" if partial else color
        body.append(f"<circle class='point' data-run='{esc(run)}' cx='{ax.px(x):.1f}' cy='{ax.py(y):.1f}' r='5' "
                    f"fill='{fill}' stroke='{color}' stroke-width='2'><title>{esc(run)}: {esc(x_label)}={esc(value)}, "
                    f"{y:.4g}{' (so far)' if partial else ''}</title></circle>")
    return _svg("scatter", body)
