"""The run lifecycle: records, seeds, folders, W&B, resume, lr_find, and what failures leave behind."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FAST = ("task=mnist", "data=synthetic", "logger=csv", "callbacks.progress_bar=null")


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_completed_run_leaves_a_full_record(train_run):
    value, run_dir = train_run(*FAST, "trainer.max_epochs=2")
    s = summary(run_dir)
    assert s["status"] == "completed" and s["task"] == "mnist" and s["error"] is None
    assert s["optimized_metric"] == {"name": "val/acc", "value": value, "mode": "max"}
    assert value > 0.9  # the synthetic digits are easy: a run that learned nothing fails here
    assert {"val/acc", "val/loss", "test/acc", "test/loss"} <= set(s["metrics"])
    assert s["seed"] == 42 and s["wall_time_s"] > 0
    assert s["versions"]["torch"] == torch.__version__ and "lightning" in s["versions"]
    assert "git_sha" in s
    config = (run_dir / "config.yaml").read_text()
    assert "${" not in config and "val/acc" in config
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    epochs = {int(float(r["epoch"])) for r in rows if r.get("val/acc")}
    assert epochs == {0, 1}
    assert any(r.get("train/loss") for r in rows)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_same_seed_same_metrics_and_seed_zero_is_honoured(train_run, tmp_path):
    a, _ = train_run(*FAST, "seed=0", "model=mlp", run_dir=tmp_path / "a")
    b, _ = train_run(*FAST, "seed=0", "model=mlp", run_dir=tmp_path / "b")
    c, _ = train_run(*FAST, "seed=1", "model=mlp", run_dir=tmp_path / "c")
    la = json.loads((tmp_path / "a" / "summary.json").read_text())["metrics"]["val/loss"]
    lb = json.loads((tmp_path / "b" / "summary.json").read_text())["metrics"]["val/loss"]
    lc = json.loads((tmp_path / "c" / "summary.json").read_text())["metrics"]["val/loss"]
    assert a == b and la == lb
    assert la != lc  # seed 0 is a seed, not "no seed"


def test_runs_started_in_the_same_second_get_their_own_folders(compose_run):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from fastlight import config

    config.register()  # the resolvers conf/hydra uses (train.py registers them before @hydra.main)
    dirs = set()
    for _ in range(5):
        with initialize_config_dir(str(config.CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=["task=mnist"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # what a Hydra run does: ${hydra:...} resolves against it
        dirs.add(cfg.hydra.run.dir)
    assert len(dirs) == 5
    assert all(d.startswith("outputs/mnist/") for d in dirs)


def test_wandb_offline_run_lives_in_the_run_folder_with_the_resolved_config(train_run, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, run_dir = train_run("task=mnist", "data=synthetic", "logger=wandb", "callbacks.progress_bar=null", "tags=[t1]")
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    # wandb keeps an offline run's config inside its binary .wandb log, as JSON strings; its
    # writer process may still be flushing when wandb.finish() returns.
    for _ in range(100):
        logged = next(offline[0].glob("*.wandb")).read_bytes()
        if b"MnistTask" in logged:
            break
        time.sleep(0.1)
    assert b"fastlight.tasks.mnist.MnistTask" in logged
    assert str(run_dir / "checkpoints").encode() in logged  # ${hydra:runtime.output_dir} resolved
    assert b"${" not in logged
    assert (run_dir / "metrics.csv").is_file()  # the local record is kept beside W&B


def test_logger_none_still_writes_the_summary(train_run):
    _, run_dir = train_run("task=mnist", "data=synthetic", "logger=none", "callbacks.progress_bar=null")
    assert summary(run_dir)["status"] == "completed"
    assert not (run_dir / "metrics.csv").exists()


def test_resume_from_last_checkpoint_matches_an_uninterrupted_run(train_run, tmp_path):
    args = (*FAST, "trainer.max_epochs=4", "seed=3")
    full, _ = train_run(*args, run_dir=tmp_path / "full")
    _, cut = train_run(*args, "+callbacks.stop._target_=tests.helpers.StopAfter", "+callbacks.stop.epochs=2",
                       run_dir=tmp_path / "cut")
    assert torch.load(cut / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 1
    resumed, _ = train_run(*args, f"ckpt_path={cut / 'checkpoints' / 'last.ckpt'}", run_dir=tmp_path / "resumed")
    m_full = summary(tmp_path / "full")["metrics"]
    m_resumed = summary(tmp_path / "resumed")["metrics"]
    assert m_resumed["test/loss"] == pytest.approx(m_full["test/loss"], rel=1e-6)
    assert m_resumed["test/acc"] == m_full["test/acc"]


def test_nan_loss_stops_naming_the_step_and_keeps_earlier_checkpoints(train_run, capsys):
    run_dir = None
    with pytest.raises(SystemExit) as exit_info:
        train_run(*FAST, "trainer.max_epochs=3", "schedule=constant",
                  "+callbacks.boom._target_=tests.helpers.BlowUpAt", "+callbacks.boom.epoch=1")
    assert exit_info.value.code == 3
    err = capsys.readouterr().err
    assert "at step" in err and "lower learning rate" in err
    run_dir = next(Path(p) for p in [line.split("run folder: ")[1] for line in err.splitlines() if "run folder: " in line])
    s = summary(run_dir)
    assert s["status"] == "failed" and "lower learning rate" in s["error"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0  # epoch 0's checkpoint survives, not overwritten by a NaN model
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_interrupted_run_is_recorded_as_interrupted(train_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_run(*FAST, "+callbacks.ctrl_c._target_=tests.helpers.InterruptAt", "+callbacks.ctrl_c.step=10")
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    run_dir = Path(next(line.split("run folder: ")[1] for line in err.splitlines() if "run folder: " in line))
    assert summary(run_dir)["status"] == "interrupted"


def test_lr_find_saves_the_plot_and_suggests_an_lr(train_run, tmp_path):
    value, run_dir = train_run(*FAST, "mode=lr_find", "lr_find.num_training=40", run_dir=tmp_path / "find")
    s = summary(run_dir)
    assert (run_dir / "lr_find.png").stat().st_size > 1000
    assert value == s["lr_find"]["suggestion"]
    # Adam on the synthetic digits: 3e-3 learns them in one epoch, 1e-5 barely moves, 1 diverges.
    # The steepest descent of the 1e-7..10 sweep must land within a decade of the good one ...
    assert 3e-4 < value < 3e-2
    # ... and be one: an epoch at the suggested lr learns the planted classes, one at 300x diverges.
    good, _ = train_run(*FAST, f"optim.lr={value}", run_dir=tmp_path / "good")
    bad, _ = train_run(*FAST, f"optim.lr={value * 300}", run_dir=tmp_path / "bad")
    assert good > 0.95 and bad < 0.5


def test_main_returns_the_optimized_metric_for_sweepers(train_run):
    value, run_dir = train_run(*FAST, "optimized_metric.name=val/loss", "optimized_metric.mode=min")
    assert value == summary(run_dir)["metrics"]["val/loss"]


# --- user mistakes: one clear line, non-zero exit ------------------------------------------


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["task=nope"], "unknown task 'nope'; available tasks:"),
        (["task=mnist", "data=ml100k"], "data=ml100k is not available for task=mnist; choose one of: mnist, synthetic"),
        (["task=mnist", "optim.lrr=1"], "optim.lrr is not a config key; did you mean optim.lr?"),
    ],
)
def test_config_mistakes_give_one_clear_message(args, expected):
    out = cli(*args, "hydra.run.dir=/tmp/fastlight-never-created")
    assert out.returncode != 0
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert not Path("/tmp/fastlight-never-created").exists()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr=-0.1", "optim.lr=-0.1 must be positive"),
        ("optim.lr=abc", "optim.lr=abc must be a number"),
        ("data.batch_size=0", "data.batch_size=0 must be a positive integer"),
    ],
)
def test_bad_values_fail_before_training_with_one_line(train_run, capsys, override, expected):
    with pytest.raises(SystemExit) as exit_info:
        train_run(*FAST, override)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {expected}" in err


def test_missing_data_names_the_files_the_folder_and_the_fix(train_run, capsys, tmp_path):
    with pytest.raises(SystemExit):
        train_run("task=mnist", "logger=csv", f"data.root={tmp_path / 'empty'}", "data.download=false")
    err = capsys.readouterr().err
    line = next(line for line in err.splitlines() if line.startswith("error:"))
    assert "train-images-idx3-ubyte.gz" in line and str(tmp_path / "empty" / "mnist") in line
    assert "FASTLIGHT_DATA" in line


def test_corrupt_data_file_is_reported_as_such(train_run, capsys, tmp_path):
    from fastlight.data.mnist import FILES

    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for name in FILES:
        (folder / name).write_bytes(b"not a gzip file")
    with pytest.raises(SystemExit):
        train_run("task=mnist", "logger=csv", f"data.root={tmp_path / 'root'}", "data.download=false")
    err = capsys.readouterr().err
    assert "is not a valid MNIST idx.gz file" in err and "delete it" in err


def test_cli_error_exit_code_and_single_line(tmp_path):
    out = cli("task=mnist", "data=synthetic", "logger=csv", "optim.lr=-1", f"hydra.run.dir={tmp_path}/r")
    assert out.returncode == 2
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    # the mistake is told once, on one line, and nothing else is printed but the run's status and folder
    assert [line for line in lines if "optim.lr" in line] in (["error: optim.lr=-1 must be positive"],
                                                              ["error: optim.lr=-1.0 must be positive"])
    assert sum(line.startswith("error:") for line in lines) == 1 and len(lines) <= 3, lines  # no traceback, no dump
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "failed"
