"""Collaborative filtering, lesson 4 / fastbook chapter 8: MovieLens by matrix factorisation.

Every user and every movie gets a vector of `n_factors` latent factors and a bias; a predicted
rating is their dot product plus both biases, squashed into `y_range` (0, 5.5) by a sigmoid.
Trained with MSE, AdamW (decoupled wd=0.1: the lesson's cure for overfitting) and one-cycle
at 5e-3 for 5 epochs, which reaches ~0.81 valid MSE on ML-100K (fastai publishes 0.811-0.822).

After training the run folder gets the lesson's interpretation (`interpretation/`, computed by
`fastlight.models.collab_interpret`): the movies with the lowest and highest bias (liked or
disliked whoever watches them), the PCA of the movie factors with the movies at each end of each
component and a plot, and recommendations. A finished run answers from the command line:

    python -m fastlight.tasks.collab recommend <run folder> --user 42       # top unseen movies
    python -m fastlight.tasks.collab recommend <run folder> --new-user      # cold start: by bias
    python -m fastlight.tasks.collab recommend <run folder> --like "Star Wars"  # similar movies
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError

from fastlight.errors import DataError, FastlightError
from fastlight.models import collab_interpret as interpret
from fastlight.models.collab import check_y_range
from fastlight.tasks.base import Task


class CollabTask(Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, n_top: int = 15, n_plot: int = 50):
        super().__init__(optim, schedule)
        self.model = model
        # torchmetrics objects: Lightning computes them over the whole epoch, then resets them.
        self.eval_metrics = nn.ModuleDict({
            f"{stage}_{name}": MeanSquaredError(squared=name == "mse")
            for stage in ("val", "test") for name in ("mse", "rmse")
        })
        self.n_top, self.n_plot = n_top, n_plot
        self.saved_ids: dict | None = None  # user/item ids the checkpoint was trained with

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.model(users, items)

    def training_loss(self, batch) -> torch.Tensor:
        users, items, ratings = batch
        return F.mse_loss(self.model(users, items), ratings)

    def setup(self, stage: str):
        rating_range = getattr(self.trainer.datamodule, "rating_range", None)
        if stage == "fit" and rating_range is not None:
            check_y_range(self.model.y_range, rating_range)  # ConfigError if the ratings are out of reach

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


# --- the interpretation files (the tables come from fastlight.models.collab_interpret) -------------
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


def write_interpretation(model, dm, out: Path, n_top: int, n_plot: int) -> dict[str, pd.DataFrame]:
    """The lesson's interpretation into `out`: CSV tables, pca.png and a readable interpretation.txt."""
    tables = {}
    bias = interpret.item_bias_table(model, dm, n_top)
    if bias is not None:
        tables["item_bias"] = bias
    top, coords = interpret.item_pca(model, dm)
    tables["pca_components"] = interpret.pca_table(top, coords, dm, n_top)
    plot_pca(top, coords, dm, min(n_plot, len(top)), out / "pca.png")
    tables["new_user"] = interpret.recommend_for_new_user(model, dm, n_top)
    most_rated = int(top[0])
    tables["similar_to_most_rated"] = interpret.nearest_items(model, dm, most_rated, n_top)
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
    lines.append(f"[collab] recommend: python -m fastlight.tasks.collab recommend {run_dir} "
                 "--user <id> | --new-user | --like <title>")
    return "\n".join(lines)


# --- command line: recommendations from a finished run ------------------------------------------
def load_for_recommend(run_dir: str, ckpt: str = "best"):
    """(model in eval mode, datamodule) of a finished collab run; DataError if the data changed."""
    from fastlight.runs import load_run

    changed = DataError(
        f"the ratings no longer match the ones {run_dir} was trained on (different users or items); "
        "retrain, or point data.root / FASTLIGHT_DATA at the original data"
    )
    try:
        cfg, dm, task = load_run(run_dir, ckpt=ckpt)
    except RuntimeError as e:  # the embedding tables' sizes differ from the checkpoint's
        if "size mismatch" in str(e):
            raise changed from None
        raise
    if not isinstance(task, CollabTask):
        raise FastlightError(f"{run_dir} is a {type(task).__name__} run, not a collab run")
    saved = task.saved_ids
    if saved is not None and (saved["users"] != dm.user_ids.tolist() or saved["items"] != dm.item_ids.tolist()):
        raise changed
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
            user = interpret.find_user(dm, args.user)
            print(f"Top {args.k} movies user {args.user} has not rated, by predicted rating:")
            table = interpret.recommend_for_user(model, dm, user, args.k)
        elif args.new_user:
            print(f"Top {args.k} movies for a new user ({interpret.cold_start_rule(model)}):")
            table = interpret.recommend_for_new_user(model, dm, args.k)
        else:
            item = interpret.find_item(dm, args.like)
            print(f"The {args.k} movies whose factors are closest to {dm.titles[item]!r} (cosine similarity):")
            table = interpret.nearest_items(model, dm, item, args.k)
    except FastlightError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so the run's CollabTask (built by Hydra from
    # fastlight.tasks.collab) is the same class as the one `isinstance` checks against.
    from fastlight.tasks.collab import main as _main

    raise SystemExit(_main())
