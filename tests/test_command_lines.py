"""Property: any command line drawn from the real config keys and values (valid and invalid mixed)
either trains or stops with one clear sentence and a non-zero exit; never a traceback, never a run
folder left saying "running"."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Every task, on its synthetic data (the image tasks on the test modules' tiny models).
TASK_ARGS = {
    "mnist": ["task=mnist", "data=synthetic"],
    "mnist_basics": ["task=mnist_basics", "data=synthetic"],
    "collab": ["task=collab", "data=synthetic", "data.n_users=60", "data.n_items=60"],
    "tabular": ["task=tabular", "data=synthetic", "data.n_train=600", "data.n_test=100"],
    "vision": ["task=vision", "data=shapes", "model._target_=tests.tasks.test_vision.tiny_vision_model",
               "data.size=32", "data.n_train=64", "data.n_valid=32", "task.stages=null"],
    "superres": ["task=superres", "data=synthetic", "model._target_=tests.tasks.test_superres.tiny_unet",
                 "loss.name=mse", "task.stages=null"],
    "segmentation": ["task=segmentation", "data=synthetic", "model._target_=tests.tasks.test_superres.tiny_unet",
                     "task.stages=null"],
    "wgan": ["task=wgan", "data=blobs", "data.n_train=64", "data.n_valid=32", "model.n_features=8",
             "model.noise_size=16", "task.n_samples=4"],
    "gan": ["task=gan", "data=synthetic", "model=tiny", "data.n_train=16", "data.n_valid=8", "data.batch_size=8"],
    "lm": ["task=lm", "model=tiny", "data=synthetic", "data.n_workers=1"],
    "text_clf": ["task=text_clf", "model=tiny", "data=synthetic", "data.n_workers=1"],
}
# Real keys of the composed configs, with values that are right and values that are wrong.
OVERRIDES = {
    "optim.lr": ["1e-3", "3e-2", "-1", "abc", "0", "[1e-4,1e-2]"],
    "optim.wd": ["0.01", "-0.5", "lots"],
    "data.batch_size": ["16", "0", "-3", "x"],
    "trainer.max_epochs": ["1", "0", "two"],
    "trainer.max_steps": ["3", "-1", "5"],
    "trainer.precision": ["32-true", "bf16-mixed", "float7"],
    "trainer.gradient_clip_val": ["0.5", "big"],
    "trainer.accumulate_grad_batches": ["2", "0"],
    "trainer.val_check_interval": ["0.5", "2"],
    "trainer.log_every_n_steps": ["1", "7"],
    "trainer.max_step": ["3"],
    "model.nonexistent_key": ["1"],
    "seed": ["0", "7", "s"],
    "optim": ["sgd", "adamw", "scratch_adam", "rmsprop"],
    "schedule": ["constant", "one_cycle", "zigzag"],
    "data": ["synthetic", "no_such_data"],
    "model": ["no_such_model"],
    "ckpt_path": ["/does/not/exist.ckpt"],
}

override_lists = st.dictionaries(st.sampled_from(sorted(OVERRIDES)), st.none(), min_size=1, max_size=3).flatmap(
    lambda keys: st.tuples(*[st.sampled_from([f"{k}={v}" for v in OVERRIDES[k]]) for k in keys]))


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASK_ARGS))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=override_lists)
def test_every_command_line_trains_or_stops_with_one_sentence(tmp_path, task, overrides):
    run_dir = tmp_path / uuid.uuid4().hex[:8]
    args = [*TASK_ARGS[task], "debug=fast", "logger=csv", "torch_threads=1", *overrides, f"hydra.run.dir={run_dir}"]
    r = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    if r.returncode == 0:
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    else:
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, (args, r.stderr[-2000:])
        assert len(errors[0]) < 400  # a sentence, not a dump
    if (run_dir / "summary.json").is_file():
        assert json.loads((run_dir / "summary.json").read_text())["status"] != "running"
