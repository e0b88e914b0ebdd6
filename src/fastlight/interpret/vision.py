"""fastai's interpretation of a trained vision model, saved in the run folder and logged to W&B.

    interpretation/top_losses.png        the validation images the model got most wrong: prediction,
                                         actual, loss and the predicted class's probability
    interpretation/confusion_matrix.png  single-label: actual (rows) against predicted (columns)
    interpretation/most_confused.csv     single-label: (actual, predicted, count), most frequent first
    summary.json "interpretation"        file paths, and the most-confused pairs
    interpretation/test_predictions.csv  an unlabelled test/ folder: each file's predicted class

fastai's `ClassificationInterpretation.from_learner(learn)`: `plot_top_losses(9)`,
`plot_confusion_matrix()`, `most_confused(min_val=1)`. Also here, for the commands on a finished
run: `predict_files` (a class and its probability per image file, `fastlight predict`) and
`rank_by_loss` (every training and validation image by its loss, `fastlight clean`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure

from fastlight.interpret.media import publish_figure, publish_table


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """counts[actual, predicted]."""
    return torch.bincount(targets * n + preds, minlength=n * n).view(n, n)


def most_confused(cm: torch.Tensor, classes: list[str], min_val: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (actual, predicted, count) pairs seen at least `min_val` times, most frequent first."""
    pairs = [(classes[a], classes[p], int(cm[a, p])) for a in range(len(classes)) for p in range(len(classes))
             if a != p and cm[a, p] >= min_val]
    return sorted(pairs, key=lambda t: -t[2])


def plot_top_losses(images: list[torch.Tensor], titles: list[str], title: str, points=None) -> Figure:
    cols = 3
    rows = (len(images) + cols - 1) // cols
    fig = Figure(figsize=(cols * 3.2, rows * 3.9))
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= len(images):
            continue
        img = images[i]
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(titles[i], fontsize=8)
        if points is not None:  # predicted (x) and actual (o), from [-1, 1] back to pixels
            h, w = img.shape[1:]
            for pts, marker, color in ((points[i][0], "x", "red"), (points[i][1], "o", "lime")):
                xy = (pts.view(-1, 2) + 1) / 2 * torch.tensor([w, h])
                ax.scatter(xy[:, 0], xy[:, 1], marker=marker, c=color, s=40)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm: torch.Tensor, classes: list[str]) -> Figure:
    n = len(classes)
    side = max(4.0, 0.35 * n + 2)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    ax.imshow(cm.numpy(), cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=90, fontsize=7 if n > 15 else 9)
    ax.set_yticks(range(n), classes, fontsize=7 if n > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    if n <= 20:
        top = cm.max().item() or 1
        for a in range(n):
            for p in range(n):
                ax.text(p, a, int(cm[a, p]), ha="center", va="center", fontsize=8,
                        color="white" if cm[a, p] > top / 2 else "black")
    fig.tight_layout()
    return fig


def _titles(task, outs: torch.Tensor, ys: torch.Tensor, losses: torch.Tensor, classes: list[str]) -> list[str]:
    if task.problem == "single_label":
        probs = outs.softmax(1)
        preds = probs.argmax(1)
        return [f"{classes[p]} / {classes[y]}\n{loss:.2f} / {prob[p]:.2f}"
                for p, y, loss, prob in zip(preds.tolist(), ys.tolist(), losses.tolist(), probs)]
    if task.problem == "multi_label":
        def tags(row):
            return " ".join(classes[i] for i in row.nonzero().flatten().tolist()) or "-"
        preds = (outs.sigmoid() > task.thresh).long()
        return [f"{tags(p)}\n{tags(y)}\nloss {loss:.3f}" for p, y, loss in zip(preds, ys, losses.tolist())]
    return [f"{[round(v, 2) for v in o.tolist()]}\n{[round(v, 2) for v in y.tolist()]}\nloss {loss:.4f}"
            for o, y, loss in zip(outs, ys, losses.tolist())]


def interpret(task, datamodule, folder: Path, loggers=(), k: int = 9) -> dict:
    """Write the interpretation files for the validation set; returns what summary.json should add."""
    folder.mkdir(parents=True, exist_ok=True)
    valid = datamodule.valid_ds
    outs, ys = task.predict_dataset(valid, datamodule)
    losses = task.loss(outs, ys, reduction="none")
    top = losses.topk(min(k, len(losses))).indices.tolist()
    classes = datamodule.classes
    images = [valid[i][0] for i in top]
    points = [(outs[i], ys[i]) for i in top] if valid.points else None
    title = ("prediction / actual / loss / probability" if task.problem == "single_label"
             else "prediction (x) / actual (o) / loss" if points else "prediction / actual / loss")
    fig = plot_top_losses(images, _titles(task, outs[top], ys[top], losses[top], classes), title, points)
    files = {"top_losses": publish_figure(loggers, folder / "top_losses.png", fig, "interpretation/top_losses")}
    result: dict = {}
    if task.problem == "single_label":
        cm = confusion_matrix(outs.argmax(1), ys, len(classes))
        files["confusion_matrix"] = publish_figure(loggers, folder / "confusion_matrix.png",
                                                   plot_confusion_matrix(cm, classes), "interpretation/confusion_matrix")
        result["most_confused"] = most_confused(cm, classes)[:20]
        table = pd.DataFrame(result["most_confused"], columns=["actual", "predicted", "count"])
        files["most_confused"] = publish_table(loggers, folder / "most_confused.csv", table, "interpretation/most_confused")
    unlabelled = getattr(datamodule, "unlabelled_test", [])
    if unlabelled and task.problem == "single_label":
        files["test_predictions"] = folder / "test_predictions.csv"
        predict_files(task, datamodule, unlabelled).to_csv(files["test_predictions"], index=False)
    return {"interpretation": {**{k: str(v) for k, v in files.items()}, **result}}


# --- for the commands on a finished run --------------------------------------------------------------
def _dataset(datamodule, items: list):
    """`items` ((path, target) pairs) as the validation images are shown to the model: no augmentation."""
    from fastlight.data.vision import ImageItems

    valid = datamodule.valid_ds
    return ImageItems(items, valid.problem, valid.n_out, valid.transform, draft=valid.draft, points=valid.points)


def predict_files(task, datamodule, files: list[Path]) -> pd.DataFrame:
    """One row per image file: single-label its class and probability, multi-label its tags
    (probability > task.thresh), regression its outputs."""
    dummy = {"single_label": 0, "multi_label": [], "regression": [0.0] * datamodule.valid_ds.n_out}[task.problem]
    outs, _ = task.predict_dataset(_dataset(datamodule, [(f, dummy) for f in files]), datamodule)
    classes, table = datamodule.classes, pd.DataFrame({"file": [str(f) for f in files]})
    if task.problem == "single_label":
        probs = outs.softmax(1)
        table["prediction"] = [classes[i] for i in probs.argmax(1).tolist()]
        table["probability"] = probs.max(1).values.numpy().round(4)
    elif task.problem == "multi_label":
        probs = outs.sigmoid()
        table["prediction"] = [" ".join(classes[i] for i in (p > task.thresh).nonzero().flatten().tolist())
                               for p in probs]
        for j, c in enumerate(classes):
            table[f"p_{c}"] = probs[:, j].numpy().round(4)
    else:
        for j in range(outs.shape[1]):
            table[f"output_{j}"] = outs[:, j].numpy()
    return table


def rank_by_loss(task, datamodule) -> pd.DataFrame:
    """Every training and validation image (single-label) with its loss under the model, highest first:
    path, split, label, prediction, loss, probability (of the prediction)."""
    rows = []
    for split, ds in (("train", datamodule.train_ds), ("valid", datamodule.valid_ds)):
        outs, ys = task.predict_dataset(_dataset(datamodule, ds.items), datamodule)
        losses = task.loss(outs, ys, reduction="none")
        probs = outs.softmax(1)
        for (path, y), p, loss in zip(ds.items, probs, losses.tolist()):
            pred = int(p.argmax())
            rows.append((str(path), split, datamodule.classes[y], datamodule.classes[pred], loss, float(p[pred])))
    table = pd.DataFrame(rows, columns=["path", "split", "label", "prediction", "loss", "probability"])
    return table.sort_values("loss", ascending=False, kind="stable", ignore_index=True)


def predict_images(run_dir: str | Path, folder: str | Path, out: str | Path | None = None, ckpt: str = "best") -> Path:
    """`fastlight predict <vision run> <folder>`: every image under `folder`, predicted, into a CSV."""
    from fastlight.data.vision import image_files
    from fastlight.errors import DataError, FastlightError
    from fastlight.runs import load_run
    from fastlight.tasks.vision import VisionTask

    folder = Path(folder)
    files = image_files(folder) if folder.is_dir() else []
    if not files:
        raise DataError(f"{folder} is not a folder with images in it (.jpg, .png, ...)")
    _, datamodule, task = load_run(run_dir, ckpt)
    if not isinstance(task, VisionTask):
        raise FastlightError(f"{run_dir} is a {type(task).__name__} run, not a vision run")
    out = Path(out) if out else Path(f"{folder.resolve().name}_predictions.csv")
    predict_files(task, datamodule, files).to_csv(out, index=False)
    return out
