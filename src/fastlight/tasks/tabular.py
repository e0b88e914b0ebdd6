"""Tabular data with entity embeddings, lessons 4 and 6 (fastai's `tabular_learner`).

Each categorical column gets an embedding, learned like any weight, so the network can place
similar levels (occupations, stores, days of the week) near each other; the continuous columns
go in normalized. fastai's recipe on UCI Adult: layers [200, 100], bs 64, fit_one_cycle(3, 1e-2)
(its tutorial reports 0.836 valid accuracy after one epoch). On Rossmann: log(Sales) in
y_range, layers [1000, 500], fit_one_cycle(5, 1e-3, wd=0.2) -> exp_rmspe ~0.105 in the lesson.

The fitted procs (categories, medians, means and stds) travel in the checkpoint, so a finished
run predicts on new rows with the procs it was trained with; unseen categories map to '#na#':

    fastlight predict <run folder> new_rows.csv [--out predictions.csv]

After training, `interpretation/` in the run folder holds the permutation importance of every
input column on the validation set (how much the metric worsens when that column is shuffled)
and a 2-D PCA of one categorical column's embedding (`data.plot_embedding`), written by
`fastlight.interpret.tabular`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError

from fastlight.data.procs import TabularProcs
from fastlight.errors import ConfigError, DataError, FastlightError
from fastlight.tasks.base import Task
from fastlight.training.fast_path import FastPath


class TabularTask(FastPath, Task):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict):
        super().__init__(optim, schedule)
        self.model = model
        self.procs: TabularProcs | None = None  # from the data module at fit, or from a checkpoint
        # Regression's RMSE and RMSPE per split: root mean squares of errors against zero, over the epoch.
        self.rms = nn.ModuleDict({f"{stage}_{name}": MeanSquaredError(squared=False) for stage in ("val", "test")
                                  for name in ("rmse", "rmspe", "exp_rmspe")})

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        return self.model(x_cat, x_cont)

    def setup(self, stage: str) -> None:
        procs = getattr(self.trainer.datamodule, "procs", None)
        if procs is not None:
            self.procs = procs
        names, main, mode = self.metrics()
        for cb in self.trainer.checkpoint_callbacks if stage == "fit" else []:
            if cb.monitor is not None and cb.monitor.removeprefix("val/") not in names:
                raise ConfigError(
                    f"optimized_metric.name={cb.monitor} is not logged by a {self.procs.problem} task (it logs "
                    f"{', '.join('val/' + n for n in names)}); e.g. optimized_metric.name=val/{main} "
                    f"optimized_metric.mode={mode}")

    # --- loss and metrics ------------------------------------------------------------------
    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.procs.problem == "classification":
            return F.cross_entropy(out, y)
        return F.mse_loss(out[:, 0], y)

    def training_loss(self, batch) -> torch.Tensor:
        x_cat, x_cont, y = batch
        return self.loss(self.model(x_cat, x_cont), y)

    def metrics(self) -> tuple[list[str], str, str]:
        """(every metric logged, the lesson's metric, its mode): acc, exp_rmspe (log target) or rmse."""
        if self.procs.problem == "classification":
            return ["loss", "acc"], "acc", "max"
        pct = "exp_rmspe" if self.procs.log_target else "rmspe"
        return ["loss", "rmse", pct], pct if self.procs.log_target else "rmse", "min"

    def errors(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Regression: the errors whose root mean square is each metric, on the target's own scale."""
        pred, targ = out[:, 0].double(), y.double()
        if self.procs.log_target:
            pred, targ = pred.exp(), targ.exp()
        nonzero = targ != 0  # as Kaggle's Rossmann RMSPE: rows with a zero target are skipped
        pct = (targ[nonzero] - pred[nonzero]) / targ[nonzero]
        return {"rmse": pred - targ, self.metrics()[0][-1]: pct}  # rmspe, or exp_rmspe for a log target

    def scores(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every metric over whole tensors at once."""
        s = {"loss": self.loss(out, y)}
        if self.procs.problem == "classification":
            s["acc"] = (out.argmax(1) == y).float().mean()
            return s
        return s | {name: (err**2).mean().sqrt() for name, err in self.errors(out, y).items()}

    def _evaluate(self, batch, stage: str) -> None:
        x_cat, x_cont, y = batch
        out, n, main = self.model(x_cat, x_cont), len(y), self.metrics()[1]
        self.log(f"{stage}/loss", self.loss(out, y), batch_size=n, sync_dist=True)  # a mean of batch means, weighted: exact
        if self.procs.problem == "classification":
            self.log(f"{stage}/acc", (out.argmax(1) == y).float().mean(), batch_size=n, prog_bar=stage == "val", sync_dist=True)
            return
        for name, err in self.errors(out, y).items():
            # A root of a mean is not a mean of roots: accumulate squares, take the root at epoch end.
            metric = self.rms[f"{stage}_{name}"]
            metric.update(err, torch.zeros_like(err))
            self.log(f"{stage}/{name}", metric, prog_bar=stage == "val" and name == main)

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    # --- the procs travel with the weights ------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # With the model's sizes (fastlight.training.checkpoints.tag), the procs let
        # `predict` rebuild the run from its folder alone, without the training data.
        checkpoint["tabular"] = {"procs": self.procs.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "tabular" not in checkpoint:
            raise FastlightError("this checkpoint was not written by the tabular task")
        self.procs = TabularProcs.from_state(checkpoint["tabular"]["procs"])

    @torch.no_grad()
    def predict_frame(self, df: pd.DataFrame, what: str = "the new rows", batch_size: int = 4096) -> pd.DataFrame:
        """Predictions for raw rows (same columns as training; the target may be absent)."""
        self.eval()
        x_cat, x_cont = self.procs.tensors(df, what, with_target=False)
        if len(df) == 0:
            raise DataError(f"{what} has no rows")
        return self.procs.decode(self.predict_tensors(x_cat, x_cont, batch_size))

    @torch.no_grad()
    def predict_tensors(self, x_cat: torch.Tensor, x_cont: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """The model's outputs for processed inputs, in batches (whatever mode the model is in)."""
        return torch.cat([self.model(x_cat[i : i + batch_size], x_cont[i : i + batch_size])
                          for i in range(0, len(x_cat), batch_size)])

    # --- after training: what the model relies on (fastlight.interpret.tabular) -------------------
    def summarize(self, run_dir: Path) -> dict:
        from fastlight.interpret.tabular import write_interpretation

        out = Path(run_dir) / "interpretation"
        out.mkdir(exist_ok=True)
        return write_interpretation(self, self.trainer.datamodule, out, self.loggers)


if __name__ == "__main__":
    # The old spelling, `python -m fastlight.tasks.tabular predict <run> rows.csv`: the `fastlight` command.
    import sys

    from fastlight.cli import main

    raise SystemExit(main(sys.argv[1:]))
