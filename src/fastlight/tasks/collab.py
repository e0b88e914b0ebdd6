"""Collaborative filtering, lesson 4 / fastbook chapter 8: MovieLens by matrix factorisation.

Every user and every movie gets a vector of `n_factors` latent factors and a bias; a predicted
rating is their dot product plus both biases, squashed into `y_range` (0, 5.5) by a sigmoid.
Trained with MSE, AdamW (decoupled wd=0.1: the lesson's cure for overfitting) and one-cycle
at 5e-3 for 5 epochs, which reaches ~0.81 valid MSE on ML-100K (fastai publishes 0.811-0.822).

After training the run folder gets the lesson's interpretation (`interpretation/`): the movies
with the lowest and highest bias (liked or disliked whoever watches them), the PCA of the movie
factors with the movies at each end of each component and a plot, and recommendations. A
finished run answers from the command line:

    python -m fastlight.tasks.collab recommend <run folder> --user 42       # top unseen movies
    python -m fastlight.tasks.collab recommend <run folder> --new-user      # cold start: by bias
    python -m fastlight.tasks.collab recommend <run folder> --like "Star Wars"  # similar movies
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError

from fastlight.errors import DataError, FastlightError
from fastlight.tasks.base import Task


class CollabTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, n_top: int = 15, n_plot: int = 50):
        super().__init__(optim, schedule)
        self.model = model
        # torchmetrics objects: Lightning computes them over the whole epoch, then resets them.
        self.eval_metrics = nn.ModuleDict({f"{stage}_{name}": MeanSquaredError(squared=name == "mse")
                                      for stage in ("val", "test") for name in ("mse", "rmse")})
        self.n_top, self.n_plot = n_top, n_plot
        self.saved_ids: dict | None = None  # user/item ids the checkpoint was trained with

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.model(users, items)

    def training_loss(self, batch) -> torch.Tensor:
        users, items, ratings = batch
        return F.mse_loss(self.model(users, items), ratings)

    # --- evaluation: MSE over the whole split, RMSE its square root (not a mean of batch roots) ---
    def _evaluate(self, batch, stage: str) -> None:
        users, items, ratings = batch
        pred = self.model(users, items)
        mse, rmse = self.eval_metrics[f"{stage}_mse"], self.eval_metrics[f"{stage}_rmse"]
        mse.update(pred, ratings)
        rmse.update(pred, ratings)
        self.log(f"{stage}/loss", F.mse_loss(pred, ratings), batch_size=len(ratings))
        self.log(f"{stage}/mse", mse, prog_bar=stage == "val")
        self.log(f"{stage}/rmse", rmse)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    # --- the id maps travel with the weights, so `recommend` can tell if the data changed ---
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        dm = self.trainer.datamodule
        if dm is not None and getattr(dm, "user_ids", None) is not None:
            checkpoint["collab_ids"] = {"users": dm.user_ids.tolist(), "items": dm.item_ids.tolist()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.saved_ids = checkpoint.get("collab_ids")

    # --- after training ---------------------------------------------------------------------
    def summarize(self, run_dir: Path) -> dict:
        """Write the interpretation into `run_dir/interpretation`, log it to W&B, print a digest."""
        dm = self.trainer.datamodule
        self.model.eval()
        out = Path(run_dir) / "interpretation"
        out.mkdir(exist_ok=True)
        tables = write_interpretation(self.model, dm, out, n_top=self.n_top, n_plot=self.n_plot)
        self._log_to_wandb(tables, out)
        print(digest(tables, dm, out, Path(run_dir)))
        return {**dm.stats, "interpretation": str(out)}

    def _log_to_wandb(self, tables: dict, out: Path) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                for name, df in tables.items():
                    logger.log_table(key=f"interpretation/{name}", dataframe=df)
                logger.log_image(key="interpretation/pca", images=[str(out / "pca.png")])


# --- interpretation: what the factors and biases say (fastbook ch. 8, "Interpreting embeddings") ---
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


def plot_pca(top: torch.Tensor, coords: torch.Tensor, dm, n: int, path: Path) -> None:
    """The `n` most-rated movies on the first two components, labelled with their titles."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in sweeps and threads

    fig = Figure(figsize=(12, 12))
    ax = fig.subplots()
    x, y = coords[:n, 0].numpy(), coords[:n, 1].numpy()
    ax.scatter(x, y, s=12)
    for i, xi, yi in zip(top[:n].tolist(), x, y):
        ax.text(xi, yi, dm.titles[i], fontsize=8)
    ax.set(xlabel="PC1", ylabel="PC2", title=f"Movie factors of the {n} most-rated movies (PCA)")
    fig.savefig(path, dpi=100, bbox_inches="tight")


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


def write_interpretation(model, dm, out: Path, n_top: int, n_plot: int) -> dict[str, pd.DataFrame]:
    """All of the above into `out` (CSV files, pca.png, a readable interpretation.txt)."""
    tables = {}
    bias = item_bias_table(model, dm, n_top)
    if bias is not None:
        tables["item_bias"] = bias
    top, coords = item_pca(model, dm)
    tables["pca_components"] = pca_table(top, coords, dm, n_top)
    plot_pca(top, coords, dm, min(n_plot, len(top)), out / "pca.png")
    tables["new_user"] = recommend_for_new_user(model, dm, n_top)
    most_rated = int(top[0])
    tables["similar_to_most_rated"] = nearest_items(model, dm, most_rated, n_top)
    text = []
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
        head = f"{name} (most rated: {dm.titles[most_rated]})" if name == "similar_to_most_rated" else name
        text += [f"== {head}", df.to_string(index=False, float_format=lambda x: f"{x:.3f}"), ""]
    (out / "interpretation.txt").write_text("\n".join(text))
    return tables


def digest(tables: dict, dm, out: Path, run_dir: Path) -> str:
    """A few lines for the terminal; the full tables are in `out`."""
    s = dm.stats
    lines = [f"[collab] {s['n_train']} training / {s['n_valid']} validation ratings, {s['n_users']} users, "
             f"{s['n_items']} items; validation rows with an unseen user or item: {s['valid_rows_unseen']} "
             f"({s['valid_unseen_users']} users, {s['valid_unseen_items']} items)"]
    if "item_bias" in tables:
        b = tables["item_bias"]
        for end in ("highest", "lowest"):
            lines.append(f"[collab] {end} bias: " + "; ".join(b[b.end == end].title.head(5)))
    lines.append(f"[collab] interpretation: {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    lines.append(f"[collab] recommend: python -m fastlight.tasks.collab recommend {run_dir} --user <id> | --new-user | --like <title>")
    return "\n".join(lines)


# --- command line: recommendations from a finished run ------------------------------------------
def load_for_recommend(run_dir: str, ckpt: str = "best"):
    """(model in eval mode, datamodule) of a finished collab run; DataError if the data changed."""
    from fastlight.run import load_run

    cfg, dm, task = load_run(run_dir, ckpt=ckpt)
    if not isinstance(task, CollabTask):
        raise FastlightError(f"{run_dir} is a {type(task).__name__} run, not a collab run")
    saved = task.saved_ids
    if saved is not None and (saved["users"] != dm.user_ids.tolist() or saved["items"] != dm.item_ids.tolist()):
        raise DataError(
            f"the ratings under {cfg.data.get('root') or 'the data root'} no longer match the ones {run_dir} was "
            "trained on (different users or items); retrain, or point FASTLIGHT_DATA at the original data"
        )
    return task.model.eval(), dm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlight.tasks.collab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("recommend", help="recommend movies with a trained collab run")
    rec.add_argument("run_dir", help="the run folder (outputs/collab/<date>/<time>-<id>)")
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="an existing user's id, as in the ratings file")
    who.add_argument("--new-user", action="store_true", help="a user with no ratings yet (by movie bias)")
    who.add_argument("--like", metavar="TITLE", help="movies whose factors are closest to this one's")
    rec.add_argument("-k", type=int, default=10, help="how many movies (default 10)")
    rec.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default best)")
    args = parser.parse_args(argv)
    try:
        model, dm = load_for_recommend(args.run_dir, args.ckpt)
        if args.user is not None:
            user = find_user(dm, args.user)
            print(f"Top {args.k} movies user {args.user} has not rated, by predicted rating:")
            table = recommend_for_user(model, dm, user, args.k)
        elif args.new_user:
            print(f"Top {args.k} movies for a new user ({cold_start_rule(model)}):")
            table = recommend_for_new_user(model, dm, args.k)
        else:
            item = find_item(dm, args.like)
            print(f"The {args.k} movies whose factors are closest to {dm.titles[item]!r} (cosine similarity):")
            table = nearest_items(model, dm, item, args.k)
    except FastlightError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
