"""The HTML report of `fastlight.compare`: one self-contained file that opens from disk, offline.

Charts are matplotlib figures saved as SVG and inlined (no image files, no script or font from
anywhere else); tables are pandas Stylers. Contents: the ranked table, every run's validation
curves overlaid, its training loss per step smoothed as fastai's Recorder smooths it (what
`learn.recorder.plot_loss()` shows), the optimized metric against each swept parameter, and the
best run's full config.

This module draws what it is given: a `fastlight.compare.Comparison`, used only through its
attributes (it imports nothing from `fastlight.compare`, so neither module needs the other to load).
"""

from __future__ import annotations

import html
import io
import itertools
import re
import time
from pathlib import Path

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}
th{cursor:pointer;background:#f4f4f4} td.failed,td.interrupted,td.killed{color:#b00}
td.running{color:#777;font-style:italic}
.charts{display:flex;flex-wrap:wrap;gap:16px} svg.chart{background:#fff;border:1px solid #eee}
pre{background:#f7f7f7;padding:12px;overflow:auto;max-height:480px} .muted{color:#777}
"""

# Click a column header to sort by it (numbers by value); the only script in the page.
SORT_JS = """
document.querySelectorAll("table").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, i) {
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
FIGSIZE = (5.8, 3.4)  # inches; an SVG point is 1/72 inch


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def palette() -> list[str]:
    """matplotlib's default colour cycle (tab10): distinct, colour-blind friendlier than random hues."""
    import matplotlib
    from matplotlib.colors import to_hex

    return [to_hex(c) for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]


def write_report(comp, path: Path, title: str) -> Path:
    path = Path(path)
    path.write_text(render(comp, title), encoding="utf-8")
    return path


def render(comp, title: str) -> str:
    colors = palette()
    color = {r.name: colors[i % len(colors)] for i, r in enumerate(comp.runs)}
    counts = comp.frame["status"].value_counts()
    parts = [
        f"<h1>{esc(title)}</h1>",
        f"<p class='muted'>{len(comp.runs)} runs ({esc(', '.join(f'{n} {s}' for s, n in counts.items()))}); "
        f"ranked by {esc(comp.metric)} ({'lower' if comp.mode == 'min' else 'higher'} is better); "
        f"swept: {esc(', '.join(comp.params) or 'nothing')}; written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>",
        "<h2>Ranked</h2>",
        _ranked_table(comp, color),
    ]
    if comp.replicated:
        parts += ["<h2>All runs</h2>", _runs_table(comp, color)]
    failed = [r for r in comp.runs if r.status in ("failed", "interrupted")]
    if failed:
        items = "".join(f"<li><b>{esc(r.name)}</b>: {esc(r.summary.get('error'))}</li>" for r in failed)
        parts += ["<h2>Failed runs</h2>", f"<ul id='failures'>{items}</ul>"]
    killed = [r for r in comp.runs if r.status == "killed"]
    if killed:
        items = "".join(f"<li><b>{esc(r.name)}</b>: last reported "
                        f"{esc(time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(r.last_report)) if r.last_report else 'never')}"
                        "</li>" for r in killed)
        parts += ["<h2>Killed runs (stopped without a final status)</h2>", f"<ul id='killed'>{items}</ul>"]
    with _svg_style():
        parts += ["<h2>Validation curves</h2>", "<div class='charts'>", *_curve_charts(comp, color), "</div>"]
        parts += ["<h2>Training loss</h2>", "<div class='charts'>", _loss_chart(comp, color), "</div>"]
        if comp.params:
            parts += [f"<h2>{esc(comp.metric)} against each swept parameter</h2>", "<div class='charts'>"]
            parts += [_param_chart(comp, p, color) for p in comp.params] + ["</div>"]
    best = next((r for r in comp.runs if r.status == "completed" and r.metric(comp.metric) is not None), None)
    if best is not None:
        parts += [f"<h2>Best run: {esc(best.name)} ({esc(best.path)})</h2>",
                  f"<pre id='best-config'>{esc(best.config_text)}</pre>"]
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n<script>{SORT_JS}</script></body></html>\n")


# --- tables -----------------------------------------------------------------------------------


def _styled(df, table_id: str, statuses: list[str], swatches: list[str | None], run_column: str) -> str:
    """A pandas Styler table: each cell classed by its row's status, the run cell edged in its colour."""
    import pandas as pd

    classes = pd.DataFrame([[s] * len(df.columns) for s in statuses], index=df.index, columns=df.columns)
    style = (df.style.hide(axis="index").set_uuid(table_id).format(escape="html")
             .format_index(escape="html", axis=1).set_td_classes(classes))
    edge = [f"border-left:8px solid {c}" if c else "" for c in swatches]
    style = style.apply(lambda col: edge, subset=[run_column])
    return style.to_html()


def _ranked_table(comp, color: dict[str, str]) -> str:
    df = comp.table()
    single = [len(g) == 1 for g in comp.groups]
    statuses = [g[0].status if one else "" for g, one in zip(comp.groups, single)]
    swatches = [color[g[0].name] if one else None for g, one in zip(comp.groups, single)]
    return _styled(df, "ranked", statuses, swatches, df.columns[1])


def _runs_table(comp, color: dict[str, str]) -> str:
    df = comp.frame[["run", *comp.params, *comp.metrics, "status"]].copy()
    df[comp.metrics] = df[comp.metrics].apply(lambda col: col.map(lambda v: "-" if v != v else f"{v:.4g}"))
    df["wall"] = comp.frame["wall"].map(lambda s: f"{s:.1f}s")
    df = df.reset_index(drop=True)
    return _styled(df, "runs", [r.status for r in comp.runs], [color[r.name] for r in comp.runs], "run")


# --- charts -----------------------------------------------------------------------------------


def _svg_style():
    import matplotlib

    # Text stays text (small, searchable), ids are stable from one report to the next.
    return matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "fastlight", "font.size": 9})


def _axes(title: str, x_label: str, y_label: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, loc="left", fontsize=10, fontweight="bold")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, color="#eee")
    return fig, ax


_figures = itertools.count()  # a fresh id prefix per figure: ids stay unique in the page


def inline_svg(fig, kind: str, runs: list[str]) -> str:
    """The figure as an <svg> element for an HTML page.

    Artists given the gid `fl-<what>-<i>` become `<g class="<what>" data-run="<runs[i]>">` with the
    run's name as tooltip, so the page (and its tests) can find each run's marks.
    """
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)  # implied inside HTML
    p = f"f{next(_figures)}-"
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{p}\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{p}\1)", svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{p}\1"', svg)

    def mark(m: re.Match) -> str:
        name = esc(runs[int(m.group(2))])
        return f'<g id="{p}{m.group(1)}-{m.group(2)}" class="{m.group(1)}" data-run="{name}"><title>{name}</title>'

    svg = re.sub(rf'<g id="{p}fl-(\w+)-(\d+)">', mark, svg)
    return svg.replace("<svg", f"<svg class='chart {kind}' role='img'", 1)


def _legend(ax, n: int) -> None:
    if 1 < n <= 10:  # more than that is unreadable; the tables' colour edges name the runs
        ax.legend(fontsize=7, frameon=False)


def _curve_charts(comp, color: dict[str, str]) -> list[str]:
    names = [comp.metric] + [m for m in ("val/loss",) if m != comp.metric]
    charts = []
    for metric in names:
        runs = [r for r in comp.runs if r.curves.get(metric)]
        if not runs:
            continue
        fig, ax = _axes(f"{metric} per epoch", "epoch", metric)
        for i, r in enumerate(runs):
            epochs, values = zip(*r.curves[metric])
            ax.plot(epochs, values, marker="o", ms=4, lw=2, color=color[r.name], label=r.name, gid=f"fl-curve-{i}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        _legend(ax, len(runs))
        charts.append(inline_svg(fig, "curves", [r.name for r in runs]))
    return charts or ["<p class='muted'>No validation metrics logged yet (metrics.csv).</p>"]


def _loss_chart(comp, color: dict[str, str]) -> str:
    runs = [r for r in comp.runs if r.train_loss]
    if not runs:
        return "<p class='muted'>No training loss logged yet (metrics.csv).</p>"
    fig, ax = _axes("train/loss per step, smoothed as fastai's (β=0.98)", "step", "train/loss")
    for i, r in enumerate(runs):
        steps, smooth = r.smoothed_loss()
        ax.plot(steps, smooth, lw=1.5, color=color[r.name], label=r.name, gid=f"fl-loss-{i}")
    _legend(ax, len(runs))
    return inline_svg(fig, "losses", [r.name for r in runs])


def _param_chart(comp, param: str, color: dict[str, str]) -> str:
    """Numbers on a numeric axis (log when they span more than a decade), anything else as categories;
    an unfinished run's point is hollow (its value is the best so far)."""
    points = [(r, r.overrides.get(param, "(default)"), v) for r in comp.runs if (v := comp.frame.at[r.name, comp.metric]) == v]
    fig, ax = _axes(f"{comp.metric} vs {param}" + ("" if points else ": no values yet"), param, comp.metric)
    try:
        xs = [float(x) for _, x, _ in points]
    except ValueError:  # categories, in sorted order, at 0, 1, 2...
        labels = sorted({x for _, x, _ in points})
        xs = [labels.index(x) for _, x, _ in points]
        ax.set_xticks(range(len(labels)), labels)
        ax.margins(x=0.5 / max(len(labels), 1))  # half a slot either side: no point on the frame
    else:
        if xs and min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        elif all(x == int(x) for x in xs):  # seeds, sizes: no ticks at 0.2
            ax.xaxis.get_major_locator().set_params(integer=True)
    for i, ((r, _, y), x) in enumerate(zip(points, xs)):
        done = r.status == "completed"
        ax.scatter([x], [y], s=36, edgecolors=color[r.name], facecolors=color[r.name] if done else "white",
                   linewidths=1.5, zorder=3, gid=f"fl-point-{i}")
    return inline_svg(fig, "scatter", [r.name for r, _, _ in points])
