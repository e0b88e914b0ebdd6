"""Reading a trained collab model, as fastbook chapter 8 does ("Interpreting embeddings and biases").

- `item_bias_table`: the movies with the lowest and highest bias, i.e. liked or disliked even by
  people whose taste (factors) should make them like it.
- `item_pca`, `pca_table`, `plot_pca`: the movie factors of the most-rated movies on their
  principal axes, and the movies at each end of each axis (serious classics vs. blockbusters, ...).
- `recommend_for_user`, `recommend_for_new_user` (cold start: by bias), `nearest_items` (cosine
  similarity of the factors), and `find_user`/`find_item` to turn what a person types into indices.
- `write_interpretation`: all of it into the run's `interpretation/` folder and W&B (through
  `fastlight.interpret.media`); `digest`: the few lines the run prints.

`dm` is a set-up `fastlight.data.collab.CollabData` (titles, id maps, counts); item index 0 is
the unknown item and never recommended.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from fastlight.errors import DataError
from fastlight.interpret.media import publish_figure, publish_table

PCA_MOVIES = 1000  # the lesson runs PCA on the 1000 most-rated movies: rarely rated ones are noise


@torch.no_grad()
def item_bias_table(model, dm, n: int) -> pd.DataFrame | None:
    """The `n` lowest- and highest-bias movies, with their training mean rating and count."""
    bias = model.item_bias()
    if bias is None:
        return None
    count, mean = dm.item_counts()
    order = bias[1:].cpu().argsort() + 1  # index 0 is the unknown item
    ends = [("lowest", order[:n]), ("highest", order.flip(0)[:n])]
    return pd.DataFrame(
        [(end, r + 1, dm.titles[i], float(bias[i]), float(mean[i]), int(count[i]))
         for end, idx in ends for r, i in enumerate(idx.tolist())],
        columns=["end", "rank", "title", "bias", "mean_rating", "n_ratings"],
    )


@torch.no_grad()
def item_pca(model, dm, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(item indices, most-rated first; their factors projected on the top `k` principal axes)."""
    count, _ = dm.item_counts()
    top = count[1:].argsort(descending=True, stable=True)[:PCA_MOVIES] + 1
    w = model.item_factors().detach().cpu()[top]
    w = w - w.mean(0)
    _, _, vh = torch.linalg.svd(w, full_matrices=False)
    coords = w @ vh[:k].T
    # An axis's sign is arbitrary: point each so that its most extreme movie scores positive.
    return top, coords * coords.gather(0, coords.abs().argmax(0, keepdim=True)).sign()


def pca_table(top: torch.Tensor, coords: torch.Tensor, dm, n: int) -> pd.DataFrame:
    rows = []
    for c in range(coords.shape[1]):
        order = coords[:, c].argsort()
        for end, idx in (("low", order[:n]), ("high", order.flip(0)[:n])):
            rows += [(f"PC{c + 1}", end, r + 1, dm.titles[int(top[j])], float(coords[j, c]))
                     for r, j in enumerate(idx.tolist())]
    return pd.DataFrame(rows, columns=["component", "end", "rank", "title", "score"])


@torch.no_grad()
def recommend_for_user(model, dm, user: int, k: int) -> pd.DataFrame:
    """The `k` movies user index `user` has not rated with the highest predicted rating."""
    device = next(model.parameters()).device
    items = torch.arange(1, dm.dims["n_items"], device=device)
    pred = model(torch.full_like(items, user), items).cpu()
    pred[dm.seen_items(user) - 1] = float("-inf")
    return _table(dm, pred, k, "predicted_rating")


@torch.no_grad()
def recommend_for_new_user(model, dm, k: int) -> pd.DataFrame:
    """Cold start: the movies with the highest bias (liked even by people unlike their fans)."""
    bias = model.item_bias()
    if bias is not None:
        return _table(dm, bias[1:].cpu(), k, "bias")
    device = next(model.parameters()).device
    items = torch.arange(1, dm.dims["n_items"], device=device)
    mean = torch.stack([model(torch.full_like(items, u), items) for u in range(1, dm.dims["n_users"])]).mean(0)
    return _table(dm, mean.cpu(), k, "mean_predicted_rating")


def cold_start_rule(model) -> str:
    return "by movie bias" if model.item_bias() is not None else "by mean predicted rating over all users"


@torch.no_grad()
def nearest_items(model, dm, item: int, k: int, min_ratings: int = 10) -> pd.DataFrame:
    """The `k` movies whose factors have the highest cosine similarity with `item`'s."""
    f = model.item_factors().detach().cpu()
    sim = F.cosine_similarity(f[1:], f[item][None], dim=1)
    count, _ = dm.item_counts()
    sim[item - 1] = float("-inf")
    if int((count[1:] >= min_ratings).sum()) > k:  # rarely rated movies keep near-random factors
        sim[count[1:] < min_ratings] = float("-inf")
    return _table(dm, sim, k, "similarity")


def _table(dm, scores: torch.Tensor, k: int, name: str) -> pd.DataFrame:
    """Top `k` of `scores` (one per item index 1..) as title, score, number of ratings."""
    count, _ = dm.item_counts()
    top = scores.topk(min(k, int(torch.isfinite(scores).sum()))).indices + 1
    return pd.DataFrame({"title": [dm.titles[i] for i in top.tolist()], name: scores[top - 1].tolist(),
                         "n_ratings": count[top].tolist()})


def find_user(dm, raw: str) -> int:
    """The embedding index of the user with id `raw` (as written in the ratings file)."""
    ids = dm.user_ids
    try:
        key = int(raw) if ids.dtype.kind in "iu" else float(raw) if ids.dtype.kind == "f" else raw
    except ValueError:
        key = None
    pos = ids.get_indexer([key])[0] if key is not None else -1
    if pos < 0:
        raise DataError(f"user {raw} is not among the {len(ids)} users of this run's training data "
                        f"(ids {ids[0]} ... {ids[-1]}); use --new-user for someone without ratings")
    return int(pos) + 1


def find_item(dm, query: str) -> int:
    """The index of the movie titled `query`: exact (any case), else the most-rated containing it."""
    q = query.strip().lower()
    matches = [i for i, t in enumerate(dm.titles) if i and t.lower() == q]
    matches = matches or [i for i, t in enumerate(dm.titles) if i and q in t.lower()]
    if not matches:
        close = difflib.get_close_matches(query, dm.titles[1:], n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DataError(f"no movie title in this run's training data matches {query!r}{hint}")
    count, _ = dm.item_counts()
    return max(matches, key=lambda i: int(count[i]))


# --- the run folder's interpretation/ -------------------------------------------------------------
def plot_pca(top: torch.Tensor, coords: torch.Tensor, dm, n: int):
    """The `n` most-rated movies on the first two components, labelled with their titles."""
    # no pyplot: no GUI backend, safe in sweeps and threads
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 12))
    ax = fig.subplots()
    x, y = coords[:n, 0].numpy(), coords[:n, 1].numpy()
    ax.scatter(x, y, s=12)
    for i, xi, yi in zip(top[:n].tolist(), x, y):
        ax.text(xi, yi, dm.titles[i], fontsize=8)
    ax.set(xlabel="PC1", ylabel="PC2", title=f"Movie factors of the {n} most-rated movies (PCA)")
    return fig


def write_interpretation(model, dm, out: Path, n_top: int, n_plot: int, loggers=()) -> dict[str, pd.DataFrame]:
    """The lesson's interpretation into `out` (CSV tables, pca.png, a readable interpretation.txt)
    and, with a W&B logger among `loggers`, into W&B."""
    tables = {}
    bias = item_bias_table(model, dm, n_top)
    if bias is not None:
        tables["item_bias"] = bias
    top, coords = item_pca(model, dm)
    tables["pca_components"] = pca_table(top, coords, dm, n_top)
    publish_figure(loggers, out / "pca.png", plot_pca(top, coords, dm, min(n_plot, len(top))), "interpretation/pca")
    tables["new_user"] = recommend_for_new_user(model, dm, n_top)
    most_rated = int(top[0])
    tables["similar_to_most_rated"] = nearest_items(model, dm, most_rated, n_top)
    text = []
    for name, df in tables.items():
        publish_table(loggers, out / f"{name}.csv", df, f"interpretation/{name}")
        head = f"{name} (most rated: {dm.titles[most_rated]})" if name == "similar_to_most_rated" else name
        text += [f"== {head}", df.to_string(index=False, float_format=lambda x: f"{x:.3f}"), ""]
    (out / "interpretation.txt").write_text("\n".join(text))
    return tables


def digest(tables: dict, dm, out: Path, run_dir: Path) -> str:
    """A few lines for the terminal; the full tables are in `out`."""
    s = dm.stats
    lines = [(f"[collab] {s['n_train']} training / {s['n_valid']} validation ratings, {s['n_users']} users, "
              f"{s['n_items']} items; validation rows with an unseen user or item: {s['valid_rows_unseen']} "
              f"({s['valid_unseen_users']} users, {s['valid_unseen_items']} items)")]
    if "item_bias" in tables:
        b = tables["item_bias"]
        for end in ("highest", "lowest"):
            lines.append(f"[collab] {end} bias: " + "; ".join(b[b.end == end].title.head(5)))
    lines.append(f"[collab] interpretation: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    lines.append(f"[collab] recommend: fastlight recommend {run_dir} --user <id> | --new-user | --like <title>")
    return "\n".join(lines)
