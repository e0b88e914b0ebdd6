"""The training loop keeps Lightning's contract for every task (issue: the Trainer-flag matrix).

Each task runs on its synthetic twin for a few steps under one Trainer flag, and the test checks
what the flag promises: how many optimizer steps ran, that the per-step hooks fired once per
step (the fast path included), validation counts, and the outcome. "Step" is an optimizer step.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

TASKS = {
    "mnist": ["task=mnist", "data=synthetic"],
    "collab": ["task=collab", "data=synthetic", "data.n_users=100", "data.n_items=100"],
    "tabular": ["task=tabular", "data=synthetic", "data.n_train=1500", "data.n_test=200"],
    "vision": ["task=vision", "data=shapes", "model.arch=resnet18", "model.pretrained=false", "task.stages=null",
               "data.n_train=256", "data.n_valid=32", "data.size=32", "data.image_px=32", "data.batch_size=16"],
}
COMMON = ["trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null", "trainer.num_sanity_val_steps=0", "torch_threads=1",
          "+callbacks.count._target_=tests.helpers.CountHooks"]


def run(train_run, task: str, *overrides: str, run_dir=None):
    value, folder = train_run(*TASKS[task], *COMMON, *overrides, run_dir=run_dir)
    counts = json.loads((folder / "hook_counts.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    return value, folder, counts, summary


def assert_hooks_per_step(counts: dict, steps: int) -> None:
    assert counts["global_step"] == steps
    for hook in ("on_before_backward", "on_after_backward", "on_before_optimizer_step"):
        assert counts[hook] == steps, (hook, counts)


def metrics_rows(folder: Path) -> list[dict]:
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", TASKS)
def test_max_steps_runs_exactly_that_many_steps_then_validates(train_run, task):
    value, folder, counts, summary = run(train_run, task, "trainer.max_steps=7", "trainer.max_epochs=-1")
    assert_hooks_per_step(counts, 7)
    assert counts["validations"] == 1  # validation runs at the end, so the run has its metric
    assert summary["status"] == "completed" and summary["optimized_metric"]["value"] == value
    assert value is not None and math.isfinite(value)
    steps = [int(float(r["step"])) for r in metrics_rows(folder) if r.get("step")]
    assert max(steps) == 6  # the last row is the 7th step's (index 6), as Lightning numbers rows


@pytest.mark.parametrize("task", TASKS)
def test_limit_train_batches_counts_optimizer_steps_per_epoch(train_run, task):
    _, _, counts, _ = run(train_run, task, "trainer.limit_train_batches=5", "trainer.max_epochs=2")
    assert_hooks_per_step(counts, 10)
    assert counts["validations"] == 2


@pytest.mark.parametrize("task", TASKS)
def test_integer_val_check_interval_counts_optimizer_steps(train_run, task):
    _, _, counts, _ = run(train_run, task, "trainer.limit_train_batches=12", "trainer.val_check_interval=4")
    assert_hooks_per_step(counts, 12)
    assert counts["validations"] == 3


@pytest.mark.parametrize("task", ["mnist", "collab"])
def test_fractional_val_check_interval_validates_twice_an_epoch(train_run, task):
    _, _, counts, _ = run(train_run, task, "trainer.limit_train_batches=20", "trainer.val_check_interval=0.5")
    assert_hooks_per_step(counts, 20)
    assert counts["validations"] == 2


@pytest.mark.parametrize("task", TASKS)
def test_fast_path_or_not_every_step_fires_the_per_step_hooks(train_run, task):
    """A whole epoch with the defaults (the fast path for mnist, collab, tabular)."""
    _, folder, counts, _ = run(train_run, task, "trainer.max_epochs=1")
    assert counts["global_step"] > 0
    assert_hooks_per_step(counts, counts["global_step"])
    if task != "vision":  # several optimizer steps per Lightning call on the fast path
        assert counts["train_batches"] < counts["global_step"]


@pytest.mark.parametrize("task", TASKS)
def test_accumulate_grad_batches_halves_the_optimizer_steps(train_run, task):
    _, _, counts, _ = run(train_run, task, "trainer.limit_train_batches=8", "trainer.accumulate_grad_batches=2")
    assert counts["global_step"] == 4
    assert counts["on_before_backward"] == 8 and counts["on_before_optimizer_step"] == 4


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_gradient_clipping_runs_for_every_task(train_run, task, algorithm):
    value, _, counts, summary = run(train_run, task, "trainer.limit_train_batches=6", "trainer.gradient_clip_val=0.5",
                                    f"trainer.gradient_clip_algorithm={algorithm}")
    assert_hooks_per_step(counts, 6)
    assert summary["status"] == "completed" and math.isfinite(value)


@pytest.mark.parametrize("task", TASKS)
def test_bf16_mixed_precision_trains_every_task(train_run, task):
    value, _, counts, summary = run(train_run, task, "trainer.precision=bf16-mixed", "trainer.max_epochs=1")
    assert_hooks_per_step(counts, counts["global_step"])
    assert summary["status"] == "completed" and math.isfinite(value)


@pytest.mark.parametrize("task", ["mnist", "collab", "vision"])
def test_resume_from_a_mid_epoch_checkpoint_equals_an_uninterrupted_run(train_run, tmp_path, task):
    args = ("trainer.max_epochs=2", "schedule=constant")
    if task == "vision":
        args += ("data.n_train=128",)
    else:  # chunks of 8 steps, so the first epoch has chunk boundaries to stop at
        args += ("data.steps_per_call=8", "trainer.log_every_n_steps=8")
    full, full_dir, full_counts, _ = run(train_run, task, *args, run_dir=tmp_path / "full")
    step = full_counts["global_step"] // 3  # inside the first epoch, on a chunk boundary where there is one
    _, cut, _, _ = run(train_run, task, *args, "+callbacks.save._target_=tests.helpers.SaveAtStep",
                       f"+callbacks.save.step={step}", run_dir=tmp_path / "cut")
    mid = cut / "checkpoints" / "mid.ckpt"
    saved = torch.load(mid, weights_only=False)
    assert 0 < saved["global_step"] < full_counts["global_step"] / 2
    resumed, _, counts, _ = run(train_run, task, *args, f"ckpt_path={mid}", run_dir=tmp_path / "resumed")
    assert counts["global_step"] == full_counts["global_step"]
    assert counts["on_before_optimizer_step"] == full_counts["global_step"] - saved["global_step"]
    assert resumed == pytest.approx(full, rel=1e-5)


# --- clipping and accumulation give a plain PyTorch loop's weights ---------------------------------
@pytest.mark.parametrize("flags", [{"gradient_clip_val": 0.05}, {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
                                   {"accumulate_grad_batches": 3}])
def test_clipping_and_accumulation_equal_a_plain_loop(compose_run, tmp_path, flags):
    from fastlight.run import train

    overrides = [*TASKS["collab"], *COMMON, "optim=sgd", "optim.lr=0.5", "schedule=constant",
                 *(f"trainer.{k}={v}" for k, v in flags.items())]
    cfg = compose_run(*overrides, run_dir=tmp_path / "run")
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    ours = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}

    plain, n_batches = plain_loop(cfg, flags)
    assert ckpt["global_step"] == math.ceil(n_batches / flags.get("accumulate_grad_batches", 1))
    for k, v in plain.items():
        torch.testing.assert_close(ours[k], v, rtol=1e-5, atol=1e-6)
    unclipped, _ = plain_loop(cfg, {})
    assert any(not torch.allclose(ours[k], v) for k, v in unclipped.items())  # the flag changed the weights


def plain_loop(cfg, flags: dict):
    """The same run by hand: the same seed, data, initial weights and batches, torch's SGD."""
    import hydra
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    model = hydra.utils.instantiate(cfg.model, **dm.dims)
    task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
    dm.steps_per_call = 1
    batches = list(dm.train_dataloader())
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.wd)  # collab: wd 0.1
    acc = flags.get("accumulate_grad_batches", 1)
    for i, b in enumerate(batches):
        (task.training_loss(b) / acc).backward()
        if (i + 1) % acc == 0 or i + 1 == len(batches):
            if flags.get("gradient_clip_algorithm") == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), flags["gradient_clip_val"])
            elif "gradient_clip_val" in flags:
                torch.nn.utils.clip_grad_norm_(model.parameters(), flags["gradient_clip_val"])
            opt.step()
            opt.zero_grad()
    return model.state_dict(), len(batches)
