"""A quiet, useful console: the progress bar, the task's own lines and the final summary.

Lightning's advertising tip, its accelerator-availability lines and the like, and Python warnings
(mostly library notices a user can do nothing about) are kept out of the console. They are not
lost: everything still reaches the run's `train.log` through the root logger, which Hydra's
`job_logging` points at that file.
"""

from __future__ import annotations

import logging
import warnings

NOISE = (
    "💡 Tip",
    "GPU available",
    "TPU available",
    "HPU available",
    "LOCAL_RANK",
    "Loading `train_dataloader` to estimate",
    "`Trainer.fit` stopped",
    "Restoring states from the checkpoint",
    "Restored all states from the checkpoint",
    "Initializing distributed",
    "distributed_backend=",
    "All distributed processes registered",
    "-----------------------",
)


class DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in NOISE)


def quiet_console() -> None:
    """Route Lightning's log and Python's warnings to train.log; keep only useful console lines."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):  # their own stderr handlers: one console handler is enough
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                lg.removeHandler(h)
        lg.propagate = True  # -> "lightning"'s console handler and the root's train.log
    for h in logging.getLogger("lightning").handlers:
        if not any(isinstance(f, DropNoise) for f in h.filters):
            h.addFilter(DropNoise())
    # Warnings go to the "py.warnings" logger, i.e. train.log only; each is still recorded once.
    logging.captureWarnings(True)
    warnings.simplefilter("default")
