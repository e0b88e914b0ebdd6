"""Honest run records and checked checkpoints: what a run leaves behind however it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

FAST = ("task=mnist", "data=synthetic", "logger=csv", "callbacks.progress_bar=null", "torch_threads=1")
REPO = Path(__file__).resolve().parents[1]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def run_dir_from(err: str) -> Path:
    return Path(next(line.split("run folder: ")[1] for line in err.splitlines() if "run folder: " in line))


class SigtermAt(L.Callback):
    """Send this process SIGTERM (what SLURM sends before preemption) before optimizer step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_at_the_step_boundary_and_records_the_signal(train_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_run(*FAST, "trainer.max_epochs=3", "data.steps_per_call=8", "trainer.log_every_n_steps=8",
                  "+callbacks.term._target_=tests.test_run_record.SigtermAt", "+callbacks.term.step=41")
    assert exit_info.value.code == 143
    run_dir = run_dir_from(capsys.readouterr().err)
    s = summary(run_dir)
    assert s["status"] == "interrupted" and "SIGTERM" in s["error"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 48  # the end of the chunk that was running: a step boundary
    assert "ckpt_path=" in s["resume"] and str(run_dir / "checkpoints" / "last.ckpt") in s["resume"]
    assert s["metrics"]["val/acc"] > 0.5  # the first epoch's validation is kept


def test_a_failed_run_keeps_the_best_validation_metrics_it_reached(train_run, capsys):
    with pytest.raises(SystemExit):
        train_run(*FAST, "trainer.max_epochs=3", "schedule=constant",
                  "+callbacks.boom._target_=tests.helpers.BlowUpAt", "+callbacks.boom.epoch=1")
    s = summary(run_dir_from(capsys.readouterr().err))
    assert s["status"] == "failed"
    assert s["best_epoch"] == 0 and s["metrics"]["val/acc"] > 0.5
    assert s["optimized_metric"]["value"] == s["metrics"]["val/acc"]
    assert "ckpt_path=" in s["resume"]


def test_a_killed_run_is_recognised_by_its_heartbeat(tmp_path):
    from fastlight.tracking.liveness import observed_status

    run_dir = tmp_path / "run"
    code = ("import sys, time; sys.argv=['train.py', *sys.argv[1:]]; from fastlight.run import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", code, *FAST, "trainer.max_epochs=1000",
                             f"hydra.run.dir={run_dir}"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # wait until the first epoch has reported
            if (run_dir / "summary.json").is_file() and summary(run_dir).get("best_epoch") is not None:
                break
            proc.wait(timeout=0.1) if proc.poll() is not None else __import__("time").sleep(0.1)
        s = summary(run_dir)
        assert s["status"] == "running" and s["pid"] == proc.pid and observed_status(s) == "running"
    finally:
        proc.kill()
        proc.wait()
    s = summary(run_dir)
    assert s["status"] == "running"  # a SIGKILL leaves no chance to write anything...
    assert observed_status(s) == "killed"  # ...but its process is gone: the record says so
    assert s["updated_at"] and s["metrics"].get("val/acc") is not None
    stale = {**s, "host": "elsewhere", "updated_at_s": s["updated_at_s"] - 7200}
    assert observed_status(stale) == "killed"  # another machine: by its silence


# --- ckpt_path: one sentence, before any data, nothing on disk changed -----------------------------
def _cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good")
    r = _cli([*FAST, f"hydra.run.dir={out}"])
    assert r.returncode == 0, r.stderr[-1500:]
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("kind, expected", [
    ("missing", "no such file"), ("empty", "empty"), ("truncated", "not a checkpoint"),
    ("text", "not a checkpoint"), ("other_task", "written by task=mnist"), ("other_shape", "another model shape"),
])
def test_bad_checkpoints_stop_with_one_sentence_before_any_data(tmp_path, good_ckpt, kind, expected):
    path = tmp_path / f"{kind}.ckpt"
    args = [*FAST]
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good_ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "other_task":
        path = good_ckpt
        args = ["task=collab", "data=synthetic", "logger=csv", "callbacks.progress_bar=null"]
    elif kind == "other_shape":
        path = good_ckpt
        args = [*FAST, "model.hidden=[7]"]
    if kind in ("missing", "empty", "truncated", "text", "other_task"):
        # data that would fail if it were read: the checkpoint must fail first
        args.append("data.n_users=-5" if kind == "other_task" else "data.n_train=-5")
    before = path.read_bytes() if path.exists() else None
    r = _cli([*args, f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and expected in err[0] and str(path) in err[0], r.stderr[-1500:]
    assert "Traceback" not in r.stderr
    assert (path.read_bytes() if path.exists() else None) == before


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_read_in_a_worker_gives_the_same_one_sentence(tmp_path, workers):
    from PIL import Image

    root = tmp_path / "imgs"
    for split in ("train", "valid"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(root / split / cls / f"{i}.png")
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    r = _cli(["task=vision", "data=folder", f"data.path={root}", "model.arch=resnet18", "model.pretrained=false",
              "task.stages=null", "data.size=16", "data.batch_size=20", f"data.num_workers={workers}",
              "logger=csv", "callbacks.progress_bar=null", f"hydra.run.dir={tmp_path / 'run'}"])
    assert r.returncode == 2, r.stderr[-1500:]
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "broken.png cannot be read as an image" in err[0], r.stderr[-1500:]
    assert "Traceback" not in err[0] and "DataLoader worker" not in err[0]
    assert "Traceback" not in summary(tmp_path / "run")["error"]
