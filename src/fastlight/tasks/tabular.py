"""Tabular data with entity embeddings, lessons 4 and 6 (fastai's `tabular_learner`).

Each categorical column gets an embedding, learned like any weight, so the network can place
similar levels (occupations, stores, days of the week) near each other; the continuous columns
go in normalized. fastai's recipe on UCI Adult: layers [200, 100], bs 64, fit_one_cycle(3, 1e-2)
(its tutorial reports 0.836 valid accuracy after one epoch). On Rossmann: log(Sales) in
y_range, layers [1000, 500], fit_one_cycle(5, 1e-3, wd=0.2) -> exp_rmspe ~0.105 in the lesson.

The fitted procs (categories, medians, means and stds) travel in the checkpoint, so a finished
run predicts on new rows without its training data; unseen categories map to '#na#':

    python -m fastlight.tasks.tabular predict <run folder> new_rows.csv [--out predictions.csv]

After training, `interpretation/` in the run folder holds the permutation importance of every
input column on the validation set (how much the metric worsens when that column is shuffled)
and a 2-D PCA of one categorical column's embedding (`data.plot_embedding`).
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

from fastlight.data.procs import TabularProcs
from fastlight.errors import ConfigError, DataError, FastlightError
from fastlight.tasks.base import Task


class TabularTask(Task):
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
        self.log(f"{stage}/loss", self.loss(out, y), batch_size=n)  # a mean of batch means, weighted: exact
        if self.procs.problem == "classification":
            self.log(f"{stage}/acc", (out.argmax(1) == y).float().mean(), batch_size=n, prog_bar=stage == "val")
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
    def model_dims(self) -> dict:
        """What `instantiate(cfg.model, **dims)` needs to rebuild this model without the data."""
        y_range = self.model.y_range
        return {"n_cats": self.procs.cardinalities, "n_cont": len(self.procs.cont_names),
                "out_sz": self.procs.out_sz, "y_range": None if y_range is None else [y_range.lo, y_range.hi]}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tabular"] = {"procs": self.procs.state_dict(), "dims": self.model_dims()}

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
        out = _predict_tensors(self.model, x_cat, x_cont, batch_size)
        return self.procs.decode(out)

    # --- after training: what the model relies on ---------------------------------------------
    def summarize(self, run_dir: Path) -> dict:
        dm = self.trainer.datamodule
        out = Path(run_dir) / "interpretation"
        out.mkdir(exist_ok=True)
        _, metric, mode = self.metrics()
        imp, base = permutation_importance(self, dm.valid, metric, mode, seed=dm.seed)
        imp.to_csv(out / "importance.csv", index=False)
        plot_importance(imp, f"val/{metric} = {base:.4f}; worse by, with the column shuffled", out / "importance.png")
        images = {"importance": out / "importance.png"}
        # By default the categorical with the most levels.
        column = dm.plot_embedding or max(self.procs.cat_names, key=self.procs.categorify.cardinality, default=None)
        if column in self.procs.cat_names:
            coords = embedding_pca(self, column, out / f"embedding_{column}.png")
            coords.to_csv(out / f"embedding_{column}.csv", index=False)
            images["embedding"] = out / f"embedding_{column}.png"
        self._log_to_wandb(imp, images)
        top = ", ".join(f"{r.column} {r.importance:+.4f}" for r in imp.head(5).itertuples())
        print(f"[tabular] permutation importance (val/{metric} worse by): {top}  -> {out}")
        return {"interpretation": {"folder": str(out), f"importance_{metric}": dict(zip(imp.column, imp.importance))}}

    def _log_to_wandb(self, imp: pd.DataFrame, images: dict[str, Path]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="interpretation/importance", dataframe=imp)
                for key, path in images.items():
                    logger.log_image(key=f"interpretation/{key}", images=[str(path)])


# --- interpretation ---------------------------------------------------------------------------
def _predict_tensors(model: nn.Module, x_cat: torch.Tensor, x_cont: torch.Tensor, bs: int = 4096) -> torch.Tensor:
    return torch.cat([model(x_cat[i : i + bs], x_cont[i : i + bs]) for i in range(0, len(x_cat), bs)])


@torch.no_grad()
def permutation_importance(task: TabularTask, valid, metric: str, mode: str, seed: int = 0):
    """(table, baseline): how much `metric` worsens when one input column's values are shuffled.

    Works for any model (fastbook ch. 9 uses it on random forests). A continuous column is
    shuffled together with its `<col>_na` flag: they are one input column of the raw table.
    """
    task.eval()
    procs, (x_cat, x_cont, y) = task.procs, valid
    cat_idx = {n: i for i, n in enumerate(procs.all_cat_names)}

    def score(xc, xn) -> float:
        return float(task.scores(_predict_tensors(task.model, xc, xn), y)[metric])

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


def plot_importance(imp: pd.DataFrame, title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.3 * len(imp) + 1.2))
    ax = fig.add_subplot()
    ax.barh(imp.column[::-1], imp.importance[::-1], color="tab:blue")
    ax.axvline(0, color="black", lw=0.8)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")


@torch.no_grad()
def embedding_pca(task: TabularTask, column: str, path: Path) -> pd.DataFrame:
    """The levels of `column` on the first two principal axes of their embedding, and a plot."""
    from matplotlib.figure import Figure

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
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return pd.DataFrame({"level": levels, "pc1": xy[:, 0].numpy(), "pc2": xy[:, 1].numpy()})


# --- predict on new rows from the command line ------------------------------------------------
def load_task(run_dir: str | Path, ckpt: str = "best") -> TabularTask:
    """The trained task of a run folder, rebuilt from config.yaml and the checkpoint alone."""
    import hydra
    from omegaconf import OmegaConf

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    path = Path(ckpt) if ckpt not in ("best", "last") else run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if not path.is_file():
        raise FastlightError(f"no checkpoint at {path}; did the run finish an epoch?")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "tabular" not in state:
        raise FastlightError(f"{path} was not written by the tabular task")
    model = hydra.utils.instantiate(cfg.model, **state["tabular"]["dims"])
    task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
    task.on_load_checkpoint(state)
    task.load_state_dict(state["state_dict"])
    return task.eval()


def predict(run_dir: str | Path, rows: str | Path, out: str | Path | None = None, ckpt: str = "best") -> Path:
    from fastlight.data.tabular import read_table

    task = load_task(run_dir, ckpt)
    df = read_table(rows, what="the rows file")
    pred = task.predict_frame(df, what=str(rows))
    out = Path(out) if out else Path(f"{Path(rows).stem}_predictions.csv")
    pd.concat([df.reset_index(drop=True), pred.add_prefix("predicted_")], axis=1).to_csv(out, index=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlight.tasks.tabular", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict the target of new rows with a trained run")
    p.add_argument("run_dir", help="the run folder (outputs/tabular/<date>/<time>-<id>)")
    p.add_argument("rows", help="a CSV with the training columns (the target column may be absent)")
    p.add_argument("--out", help="where to write the rows with their predictions (default: <rows>_predictions.csv)")
    p.add_argument("--ckpt", default="best", help="best, last or a checkpoint path (default: best)")
    args = parser.parse_args(argv)
    try:
        path = predict(args.run_dir, args.rows, args.out, args.ckpt)
    except FastlightError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
