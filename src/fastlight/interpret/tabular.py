"""What a trained tabular model relies on, fastbook chapter 9's questions asked of any model.

- `permutation_importance`: how much the validation metric worsens when one input column's values
  are shuffled (works for any model; fastbook uses it on random forests).
- `embedding_pca`: the levels of one categorical column on the first two principal axes of their
  learned embedding (lesson 6: Rossmann's stores and days, Adult's occupations).
- `write_interpretation`: both into the run's `interpretation/` folder and W&B (through
  `fastlight.interpret.media`); `predict_rows`: `fastlight predict <run> new_rows.csv`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure

from fastlight.interpret.media import publish_figure, publish_table


@torch.no_grad()
def permutation_importance(task, valid, metric: str, mode: str, seed: int = 0):
    """(table, baseline): how much `metric` worsens when one input column's values are shuffled.

    A continuous column is shuffled together with its `<col>_na` flag: they are one input column
    of the raw table.
    """
    task.eval()
    procs, (x_cat, x_cont, y) = task.procs, valid
    cat_idx = {n: i for i, n in enumerate(procs.all_cat_names)}

    def score(xc, xn) -> float:
        return float(task.scores(task.predict_tensors(xc, xn), y)[metric])

    base = score(x_cat, x_cont)
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name in procs.cat_names + procs.cont_names:
        perm = torch.randperm(len(y), generator=g)
        xc, xn = x_cat.clone(), x_cont.clone()
        for k in [cat_idx[c] for c in (name, f"{name}_na") if c in cat_idx]:
            xc[:, k] = x_cat[perm, k]
        if name in procs.cont_names:
            j = procs.cont_names.index(name)
            xn[:, j] = x_cont[perm, j]
        shuffled = score(xc, xn)
        rows.append((name, shuffled, base - shuffled if mode == "max" else shuffled - base))
    table = pd.DataFrame(rows, columns=["column", f"{metric}_shuffled", "importance"])
    return table.sort_values("importance", ascending=False, ignore_index=True), base


def plot_importance(imp: pd.DataFrame, title: str) -> Figure:
    fig = Figure(figsize=(7, 0.3 * len(imp) + 1.2))
    ax = fig.add_subplot()
    ax.barh(imp.column[::-1], imp.importance[::-1], color="tab:blue")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_title(title, fontsize=10)
    return fig


@torch.no_grad()
def embedding_pca(task, column: str) -> tuple[pd.DataFrame, Figure]:
    """The levels of `column` on the first two principal axes of their embedding, and a plot."""
    emb = task.model.embeds[task.procs.all_cat_names.index(column)].weight.detach().cpu()
    w = emb[1:] - emb[1:].mean(0)  # without '#na#', which is untrained when nothing was missing
    _, _, vh = torch.linalg.svd(w, full_matrices=False)
    xy = torch.zeros(len(w), 2)
    xy[:, : min(2, len(vh))] = w @ vh[:2].T
    levels = task.procs.categorify.vocab(column)[1:]
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    ax.scatter(xy[:, 0], xy[:, 1], s=12)
    for (x, y), label in zip(xy.tolist(), levels):
        ax.annotate(label, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="PC1", ylabel="PC2")
    ax.set_title(f"{column}: its embedding's first two principal components", fontsize=10)
    return pd.DataFrame({"level": levels, "pc1": xy[:, 0].numpy(), "pc2": xy[:, 1].numpy()}), fig


def write_interpretation(task, dm, out: Path, loggers=()) -> dict:
    """Permutation importance on the validation set and one embedding's PCA into `out` and W&B;
    returns what summary.json should add."""
    _, metric, mode = task.metrics()
    imp, base = permutation_importance(task, dm.valid, metric, mode, seed=dm.seed)
    publish_table(loggers, out / "importance.csv", imp, "interpretation/importance")
    fig = plot_importance(imp, f"val/{metric} = {base:.4f}; worse by, with the column shuffled")
    publish_figure(loggers, out / "importance.png", fig, "interpretation/importance", dpi=120)
    procs = task.procs  # by default the categorical column with the most levels
    column = dm.plot_embedding or max(procs.cat_names, key=procs.categorify.cardinality, default=None)
    if column in procs.cat_names:
        coords, fig = embedding_pca(task, column)
        publish_figure(loggers, out / f"embedding_{column}.png", fig, "interpretation/embedding", dpi=120)
        coords.to_csv(out / f"embedding_{column}.csv", index=False)
    top = ", ".join(f"{r.column} {r.importance:+.4f}" for r in imp.head(5).itertuples())
    print(f"[tabular] permutation importance (val/{metric} worse by): {top}  -> {out}")
    return {"interpretation": {"folder": str(out), f"importance_{metric}": dict(zip(imp.column, imp.importance))}}


def predict_rows(run_dir: str | Path, rows: str | Path, out: str | Path | None = None, ckpt: str = "best") -> Path:
    """`rows` (a CSV with the training columns; the target may be absent) with the run's predictions
    as `predicted_*` columns, written to `out` (default `<rows>_predictions.csv` here)."""
    from fastlight.data.tabular import read_table
    from fastlight.errors import FastlightError
    from fastlight.runs import load_run
    from fastlight.tasks.tabular import TabularTask

    _, _, task = load_run(run_dir, ckpt, setup_data=False)
    if not isinstance(task, TabularTask):
        raise FastlightError(f"{run_dir} is a {type(task).__name__} run, not a tabular run")
    df = read_table(rows, what="the rows file")
    pred = task.predict_frame(df, what=str(rows))
    out = Path(out) if out else Path(f"{Path(rows).stem}_predictions.csv")
    pd.concat([df.reset_index(drop=True), pred.add_prefix("predicted_")], axis=1).to_csv(out, index=False)
    return out
