"""Fixtures: compose a run's config the way `train.py` does, and run it in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path | None:
    """The real datasets ($FASTLIGHT_DATA, or ../shared/data beside the checkout), if present."""
    for candidate in (os.environ.get("FASTLIGHT_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def real_data() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real datasets not available (set FASTLIGHT_DATA)")
    return root


@pytest.fixture
def one_thread():
    """Tiny models on a busy CPU run many times faster on one thread than on two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose_run(tmp_path):
    """compose_run(*overrides, run_dir=None) -> a config ready for `fastlight.run.train`."""
    from fastlight.config import compose

    def _compose(*overrides: str, run_dir: Path | None = None):
        return compose(list(overrides), run_dir or tmp_path / "run")

    return _compose


@pytest.fixture
def train_run(compose_run):
    """train_run(*overrides, run_dir=None) -> (optimized metric, run folder)."""
    from fastlight.run import train

    def _train(*overrides: str, run_dir: Path | None = None):
        cfg = compose_run(*overrides, run_dir=run_dir)
        value = train(cfg)
        from hydra.core.hydra_config import HydraConfig

        return value, Path(HydraConfig.get().runtime.output_dir)

    return _train
