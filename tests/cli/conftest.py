"""`trained`: one tiny from-scratch vision run on `folders.image_folder`, trained once for all the tests of tests/cli."""

from __future__ import annotations

import pytest

from tests.cli.folders import TINY, image_folder


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """(run folder, image folder): a tiny from-scratch vision run on the shapes folder."""
    import torch

    from fastlight.config import compose
    from fastlight.run import train

    base = tmp_path_factory.mktemp("clean")
    data = image_folder(base / "images")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = compose(["task=vision", "data=folder", f"data.path={data}", TINY, "logger=csv", "data.size=32",
                       "data.num_workers=0", "data.batch_size=16", "data.min_scale=0.9", "task.stages=null",
                       "optim.lr=1e-2", "trainer.max_epochs=4", "callbacks.progress_bar.refresh_rate=0",
                       "trainer.num_sanity_val_steps=0"], base / "run")
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    return base / "run", data
