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


@pytest.mark.parametrize("task", TASKS)
def test_bf16_mixed_precision_clips_a_fused_optimizer_for_every_task(train_run, task):
    """Lightning's mixed-precision plugin refuses to clip any fused optimizer (for fp16's scaler); bf16 has
    none, so the task clips the true gradients itself and keeps the fused kernel. The clip must bite: at
    1e-7 Adam's steps shrink (eps 1e-5 dominates), so the result differs from the unclipped run's."""
    args = ("trainer.precision=bf16-mixed", "trainer.limit_train_batches=4", "optim=adam", "optim.fused=true")
    value, _, counts, summary = run(train_run, task, *args, "trainer.gradient_clip_val=0.25")
    assert_hooks_per_step(counts, 4)
    assert summary["status"] == "completed" and math.isfinite(value) and counts["fused"]
    tiny, _, _, _ = run(train_run, task, *args, "trainer.gradient_clip_val=1e-7")
    unclipped, _, _, _ = run(train_run, task, *args)
    assert tiny != pytest.approx(unclipped, rel=1e-4)


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
    resumed, resumed_dir, counts, _ = run(train_run, task, *args, f"ckpt_path={mid}", run_dir=tmp_path / "resumed")
    assert counts["global_step"] == full_counts["global_step"]
    assert counts["on_before_optimizer_step"] == full_counts["global_step"] - saved["global_step"]
    assert resumed == pytest.approx(full, rel=1e-5)
    # the loss too: a coarse metric (accuracy on 32 images) can agree by chance
    val_losses = lambda folder: [float(r["val/loss"]) for r in metrics_rows(folder) if r.get("val/loss")]
    assert val_losses(resumed_dir)[-1] == pytest.approx(val_losses(full_dir)[-1], rel=1e-5)


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

    from fastlight.training.final_fit import data_kwargs

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = hydra.utils.instantiate(data_kwargs(cfg))
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


# --- one-cycle: fastai's formula at every iteration, never past its end ----------------------------
def test_one_cycle_equals_fastai_schedule_at_every_iteration():
    fastai_callback = pytest.importorskip("fastai.callback.schedule")
    from fastlight.training.schedules import OneCycle

    total, lr_max, pct, div, div_final, moms = 37, 3e-3, 0.25, 25.0, 1e5, (0.95, 0.85, 0.95)
    lr_sched = fastai_callback.combined_cos(pct, lr_max / div, lr_max, lr_max / div_final)
    mom_sched = fastai_callback.combined_cos(pct, *moms)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr_max)
    sched = OneCycle(opt, total, pct, div, div_final, moms)
    for i in range(total + 5):  # and past the end: it holds, never raises
        pos = min(i / total, 1.0)
        # fastai evaluates the position in float32 tensors: agreement to ~1e-6 is float32's.
        assert opt.param_groups[0]["lr"] == pytest.approx(float(lr_sched(pos)), rel=2e-6)
        assert opt.param_groups[0]["betas"][0] == pytest.approx(float(mom_sched(pos)), rel=1e-6)
        opt.step()
        sched.step()


def test_fine_tune_frozen_stage_ends_at_lr_max_and_momentum_085():
    """fine_tune's frozen stage (pct_start 0.99, one epoch of under 100 steps): its last step runs
    at ~lr_max and momentum ~0.85, as fastai's (position (n-1)/n is still inside the warm-up)."""
    from fastlight.training.schedules import OneCycle

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1e-3)
    sched = OneCycle(opt, 60, pct_start=0.99)
    for _ in range(59):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-3)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(0.85, abs=1e-3)


def test_max_steps_one_cycle_spans_exactly_those_steps(train_run):
    _, folder, counts, _ = run(train_run, "collab", "trainer.max_steps=40", "trainer.max_epochs=-1",
                               "trainer.log_every_n_steps=10", "data.steps_per_call=10")
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    sched = ckpt["lr_schedulers"][0]
    assert sched["total_steps"] == 40 and sched["last_epoch"] == 40


# --- DDP on CPU: two ranks share each epoch ---------------------------------------------------------
def test_tensor_batches_shard_rows_between_ranks_with_none_twice_and_none_left_out():
    from types import SimpleNamespace

    from fastlight.data.core import TensorBatches

    x = torch.arange(1001)
    seen = []
    lens = []
    for rank in (0, 1):
        trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=3)
        tb = TensorBatches((x,), batch_size=64, shuffle=True, seed=5, trainer=trainer)
        batches = [b[0] for b in tb]
        lens.append(len(batches))
        seen += torch.cat(batches).tolist()
    assert sorted(seen) == x.tolist()  # every row once
    assert lens[0] == lens[1] == 8  # the same number of steps on both ranks: half of 16


@pytest.mark.slow
@pytest.mark.parametrize("task", ["collab", "mnist"])
def test_ddp_two_cpu_ranks_halve_the_steps_and_reach_the_single_process_metric(tmp_path, task):
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    base = [sys.executable, "train.py", *TASKS[task], *COMMON, "trainer.max_epochs=2", "data.batch_size=64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([*base, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                          f"hydra.run.dir={tmp_path / 'ddp'}"], cwd=repo, capture_output=True, text=True, env=env,
                         timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    # The reference: one process with the same effective batch size (2 ranks x 64).
    single = subprocess.run([*base, "data.batch_size=128", f"hydra.run.dir={tmp_path / 'single'}"],
                            cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    c0 = json.loads((tmp_path / "ddp" / "hook_counts.json").read_text())
    c1 = json.loads((tmp_path / "ddp" / "hook_counts.rank1.json").read_text())
    ref = json.loads((tmp_path / "single" / "hook_counts.json").read_text())
    assert c0["world_size"] == 2 and c1["rank"] == 1
    s2 = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    n_train = {"collab": None, "mnist": 2000}[task]
    if n_train is not None:  # half the rows per rank at 64 a batch: half the steps of one process at 64
        assert c0["global_step"] == c1["global_step"] == 2 * -(-(n_train // 2) // 64)
    assert c0["global_step"] == c1["global_step"] == pytest.approx(ref["global_step"], abs=2)
    assert c0["on_before_optimizer_step"] == c0["global_step"]  # the standard loop, hooks per step
    assert len(list(tmp_path.glob("**/summary.json"))) == 2  # one per run: rank 1 wrote none
    s1 = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert s2["status"] == "completed"
    v1, v2 = s1["optimized_metric"]["value"], s2["optimized_metric"]["value"]
    assert v2 == pytest.approx(v1, rel=0.05)  # stated tolerance: 5% of the single-process metric
