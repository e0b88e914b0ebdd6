"""Collaborative filtering, lesson 4 / fastbook chapter 8: MovieLens by matrix factorisation.

Every user and every movie gets a vector of `n_factors` latent factors and a bias; a predicted
rating is their dot product plus both biases, squashed into `y_range` (0, 5.5) by a sigmoid.
Trained with MSE, AdamW (decoupled wd=0.1: the lesson's cure for overfitting) and one-cycle
at 5e-3 for 5 epochs, which reaches ~0.81 valid MSE on ML-100K (fastai publishes 0.811-0.822).

After training the run folder gets the lesson's interpretation (`interpretation/`, written by
`fastlight.interpret.collab`): the movies with the lowest and highest bias (liked or disliked
whoever watches them), the PCA of the movie factors with the movies at each end of each
component and a plot, and recommendations. A finished run answers from the command line
(`fastlight.cli.recommend`; `python -m fastlight.tasks.collab recommend ...` is an old alias):

    fastlight recommend <run folder> --user 42           # top unseen movies
    fastlight recommend <run folder> --new-user          # cold start: by bias
    fastlight recommend <run folder> --like "Star Wars"  # similar movies
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError

from fastlight.interpret import collab as interpret
from fastlight.models.collab import check_y_range
from fastlight.tasks.base import Task
from fastlight.training.fast_path import FastPath


class CollabTask(FastPath, Task):
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
        self.log(f"{stage}/loss", F.mse_loss(pred, ratings), batch_size=len(ratings), sync_dist=True)
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
        tables = interpret.write_interpretation(self.model, dm, out, self.n_top, self.n_plot, self.loggers)
        print(interpret.digest(tables, dm, out, Path(run_dir)))
        return {**dm.stats, "interpretation": str(out)}


if __name__ == "__main__":
    # The old spelling, `python -m fastlight.tasks.collab recommend <run> ...`: the `fastlight` command.
    import sys

    from fastlight.cli import main

    raise SystemExit(main(sys.argv[1:]))
