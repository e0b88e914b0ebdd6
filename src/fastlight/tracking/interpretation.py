"""fastai's interpretation of a trained vision model, saved in the run folder and logged to W&B.

    interpretation/top_losses.png        the validation images the model got most wrong: prediction,
                                         actual, loss and the predicted class's probability
    interpretation/confusion_matrix.png  single-label: actual (rows) against predicted (columns)
    summary.json "interpretation"        file paths, and the most-confused (actual, predicted, count) pairs
    interpretation/test_predictions.csv  an unlabelled test/ folder: each file's predicted class

fastai's `ClassificationInterpretation.from_learner(learn)`: `plot_top_losses(9)`,
`plot_confusion_matrix()`, `most_confused(min_val=1)`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from matplotlib.figure import Figure


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """counts[actual, predicted]."""
    return torch.bincount(targets * n + preds, minlength=n * n).view(n, n)


def most_confused(cm: torch.Tensor, classes: list[str], min_val: int = 1) -> list[tuple[str, str, int]]:
    """Off-diagonal (actual, predicted, count) pairs seen at least `min_val` times, most frequent first."""
    pairs = [(classes[a], classes[p], int(cm[a, p])) for a in range(len(classes)) for p in range(len(classes))
             if a != p and cm[a, p] >= min_val]
    return sorted(pairs, key=lambda t: -t[2])


def plot_top_losses(images: list[torch.Tensor], titles: list[str], path: Path, title: str, points=None) -> None:
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
    fig.savefig(path, dpi=100)


def plot_confusion_matrix(cm: torch.Tensor, classes: list[str], path: Path) -> None:
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
    fig.savefig(path, dpi=100)


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
    files = {"top_losses": folder / "top_losses.png"}
    title = ("prediction / actual / loss / probability" if task.problem == "single_label"
             else "prediction (x) / actual (o) / loss" if points else "prediction / actual / loss")
    plot_top_losses(images, _titles(task, outs[top], ys[top], losses[top], classes), files["top_losses"], title, points)
    result: dict = {}
    if task.problem == "single_label":
        cm = confusion_matrix(outs.argmax(1), ys, len(classes))
        files["confusion_matrix"] = folder / "confusion_matrix.png"
        plot_confusion_matrix(cm, classes, files["confusion_matrix"])
        result["most_confused"] = most_confused(cm, classes)[:20]
    unlabelled = getattr(datamodule, "unlabelled_test", [])
    if unlabelled and task.problem == "single_label":
        files["test_predictions"] = folder / "test_predictions.csv"
        write_test_predictions(task, datamodule, unlabelled, files["test_predictions"])
    for logger in loggers:
        if hasattr(logger, "log_image"):  # W&B
            for name, path in files.items():
                if path.suffix == ".png":
                    logger.log_image(key=f"interpretation/{name}", images=[str(path)])
            if "most_confused" in result:
                logger.log_table(key="interpretation/most_confused", columns=["actual", "predicted", "count"],
                                 data=[list(r) for r in result["most_confused"]])
    return {"interpretation": {**{k: str(v) for k, v in files.items()}, **result}}


def write_test_predictions(task, datamodule, files: list[Path], path: Path) -> None:
    from fastlight.data.vision import ImageItems

    ds = ImageItems([(f, 0) for f in files], "single_label", len(datamodule.classes), datamodule.valid_ds.transform)
    outs, _ = task.predict_dataset(ds, datamodule)
    probs = outs.softmax(1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "prediction", "probability"])
        for file, p in zip(files, probs):
            w.writerow([str(file), datamodule.classes[int(p.argmax())], f"{float(p.max()):.4f}"])
