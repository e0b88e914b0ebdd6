"""Write a figure, an image or a table into the run folder and, when a W&B logger is active, to W&B.

Every task's interpretation and every per-epoch grid goes through these three functions, so a
file in the run folder and a panel in W&B always show the same thing.

    publish_figure(loggers, path, fig, key)   a matplotlib Figure -> path (png) + W&B image
    publish_image(loggers, path, image, key)  a PIL image or HxWxC uint8 array -> path + W&B image
    publish_table(loggers, path, df, key)     a pandas DataFrame -> path (csv) + W&B table

`loggers` is `trainer.loggers` (or any list of Lightning loggers); `step` goes to W&B's x-axis.
"""

from __future__ import annotations

from pathlib import Path


def _wandb_loggers(loggers):
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in loggers or [] if isinstance(lg, WandbLogger)]


def publish_figure(loggers, path: str | Path, fig, key: str, step: int | None = None, dpi: int = 100) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    for lg in _wandb_loggers(loggers):
        lg.log_image(key=key, images=[str(path)], step=step)
    return path


def publish_image(loggers, path: str | Path, image, key: str, step: int | None = None) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    image.save(path)
    for lg in _wandb_loggers(loggers):
        lg.log_image(key=key, images=[str(path)], step=step)
    return path


def publish_table(loggers, path: str | Path, df, key: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    for lg in _wandb_loggers(loggers):
        lg.log_table(key=key, dataframe=df)
    return path
