"""The page of `fastlight clean`: one self-contained HTML file (thumbnails inlined, no network) in
which a person marks each image keep / delete / relabel and exports the decisions as a CSV that
`fastlight clean <run> --apply decisions.csv` carries out. Marks survive a reload (localStorage).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

THUMB_PX = 160

STYLE = """
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
header p{margin:4px 0;color:#555}
#controls{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ddd;z-index:1}
#controls label{margin-right:12px}
#grid{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.card{width:172px;border:1px solid #ccc;border-radius:6px;padding:6px;font-size:12px}
.card img{width:160px;height:160px;object-fit:contain;background:#eee;display:block}
.card .name{overflow-wrap:anywhere;color:#666}
.card.delete{border-color:#d62728;background:#fdecec}
.card.relabel{border-color:#1f77b4;background:#eaf2fb}
.card.hidden{display:none}
.card select{width:100%;margin-top:4px}
textarea{width:100%;height:6em;font:12px monospace}
"""

SCRIPT = """
const KEY = "fastlight-clean:" + document.body.dataset.run;
const cards = Array.from(document.querySelectorAll(".card"));
let saved = {};
try { saved = JSON.parse(localStorage.getItem(KEY) || "{}"); } catch (e) { saved = {}; }

function quote(s) { return /[",\\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }

function decisions() {
  const rows = [["path", "action", "new_label"]];
  for (const card of cards) {
    const v = card.querySelector("select").value;
    if (v === "keep") continue;
    const [action, label] = v.startsWith("relabel:") ? ["relabel", v.slice(8)] : [v, ""];
    rows.push([card.dataset.path, action, label]);
  }
  return rows.map(r => r.map(quote).join(",")).join("\\n") + "\\n";
}

function refresh() {
  let marked = 0;
  const store = {};
  for (const card of cards) {
    const v = card.querySelector("select").value;
    card.classList.toggle("delete", v === "delete");
    card.classList.toggle("relabel", v.startsWith("relabel:"));
    if (v !== "keep") { marked++; store[card.dataset.path] = v; }
  }
  document.getElementById("marked").textContent = marked;
  document.getElementById("csv").value = decisions();
  try { localStorage.setItem(KEY, JSON.stringify(store)); } catch (e) { /* a locked-down browser: no memory */ }
}

function filter() {
  const split = document.getElementById("f-split").value, label = document.getElementById("f-label").value;
  let shown = 0;
  for (const card of cards) {
    const hide = (split && card.dataset.split !== split) || (label && card.dataset.label !== label);
    card.classList.toggle("hidden", Boolean(hide));
    if (!hide) shown++;
  }
  document.getElementById("shown").textContent = shown;
}

function download() {
  const blob = new Blob([decisions()], {type: "text/csv"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = "decisions.csv";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

for (const card of cards) {
  const select = card.querySelector("select");
  if (saved[card.dataset.path]) select.value = saved[card.dataset.path];
  select.addEventListener("change", refresh);
}
document.getElementById("f-split").addEventListener("change", filter);
document.getElementById("f-label").addEventListener("change", filter);
document.getElementById("export").addEventListener("click", download);
refresh();
filter();
"""


def thumbnail(path: Path) -> str:
    """A JPEG data URI of the image, at most THUMB_PX on its longer side."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMB_PX, THUMB_PX))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _card(row, root: Path, classes: list[str]) -> str:
    e = html.escape
    options = ['<option value="keep">keep</option>', '<option value="delete">delete</option>']
    options += [f'<option value="relabel:{e(c)}">relabel: {e(c)}</option>' for c in classes if c != row.label]
    return (f'<div class="card" data-path="{e(row.path)}" data-split="{e(row.split)}" data-label="{e(row.label)}">'
            f'<img alt="{e(row.path)}" src="{thumbnail(root / row.path)}">'
            f"<div><b>{e(row.label)}</b> &rarr; {e(row.prediction)}</div>"
            f"<div>loss {row.loss:.3f} &middot; p {row.probability:.3f} &middot; {e(row.split)}</div>"
            f'<div class="name">{e(row.path)}</div>'
            f'<select class="decision">{"".join(options)}</select></div>')


def render(table, root: Path, classes: list[str], run_dir: Path, n_all: int) -> str:
    """The page for the rows of `table` (path relative to `root`, split, label, prediction, loss, probability)."""
    e = html.escape
    splits = "".join(f'<option value="{e(s)}">{e(s)}</option>' for s in sorted(set(table.split)))
    labels = "".join(f'<option value="{e(c)}">{e(c)}</option>' for c in classes)
    cards = "\n".join(_card(row, root, classes) for row in table.itertuples())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fastlight clean: {e(run_dir.name)}</title>
<style>{STYLE}</style></head>
<body data-run="{e(str(run_dir))}">
<header><h2>Images to review: {e(str(run_dir))}</h2>
<p>The {len(table)} images (of {n_all}) with the highest loss under the trained model, highest first:
label &rarr; prediction, loss, probability of the prediction. Data folder: {e(str(root))}.</p>
<p>Mark each image keep, delete (moved to <code>.removed/</code>, never deleted) or relabel (moved to that
class's folder), export the decisions, then run <code>fastlight clean {e(str(run_dir))} --apply decisions.csv</code>.</p>
</header>
<div id="controls"><label>split <select id="f-split"><option value="">all</option>{splits}</select></label>
<label>label <select id="f-label"><option value="">all</option>{labels}</select></label>
<span><span id="shown">0</span> shown, <span id="marked">0</span> marked</span>
<button id="export" type="button">Export decisions (CSV)</button>
<details><summary>decisions.csv (copy it from here)</summary><textarea id="csv" readonly></textarea></details></div>
<div id="grid">
{cards}
</div>
<script>{SCRIPT}</script>
</body></html>
"""
