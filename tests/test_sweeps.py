"""Sweeps: the named sweeps in sweeps/, the parallel and SLURM launcher presets, the Optuna search,
a failed job recorded while the sweep goes on, the sweep's exit code, W&B groups, DDP in a sweep,
and the W&B Sweeps example files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
NAMED = sorted(p.stem for p in (REPO / "sweeps" / "sweep").glob("*.yaml"))
WANDB_FILES = sorted((REPO / "sweeps" / "wandb").glob("*.yaml"))
TASKS = {p.stem for p in (REPO / "conf" / "task").glob("*.yaml")}
FAST = ("task=mnist", "data=synthetic", "callbacks.progress_bar=null")


class RecordThreads(L.Callback):
    """Test-only: writes the job's thread settings to <run folder>/threads.json."""

    def on_train_start(self, trainer, pl_module):
        import torch

        info = {"omp": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads(), "pid": os.getpid()}
        (Path(trainer.default_root_dir) / "threads.json").write_text(json.dumps(info))


def sweep_cli(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "train.py"), "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fastlight import config

    config.register()
    with initialize_config_dir(str(config.CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=True)


def jobs(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def sweep_task(name: str) -> str | None:
    """The task a named sweep picks in its defaults list (`override /task: <task>`), if any."""
    spec = yaml.safe_load((REPO / "sweeps" / "sweep" / f"{name}.yaml").read_text())
    for item in spec.get("defaults", []):
        if isinstance(item, dict) and "override /task" in item:
            return item["override /task"]
    return None


def skip_unless_task(task: str | None) -> None:
    if task is not None and task not in TASKS:
        pytest.skip(f"task={task} is not in conf/task yet")


def swept_values(key: str, expr: str) -> list[str]:
    """Every value a grid sweeps (a,b,c), or both ends of an Optuna interval, as override strings."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    override = OverridesParser.create().parse_override(f"{key}={expr}")
    if override.is_interval_sweep():
        sweep = override.value()
        return [str(sweep.start), str(sweep.end)]
    return list(override.sweep_string_iterator())


def typed(key: str, value: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"{key}={value}").value()


def check_overrides(base: list[str], values: dict[str, list[str]]) -> None:
    """Composes with every key=value (a mistyped key or a bad choice raises) and finds the values
    there: the i-th value of every key in the i-th composition."""
    for i in range(max(len(v) for v in values.values())):
        chosen = {key: vs[min(i, len(vs) - 1)] for key, vs in values.items()}
        cfg = compose(*base, *(f"{k}={v}" for k, v in chosen.items()))
        for key, value in chosen.items():
            if key in cfg.hydra.runtime.choices:
                assert cfg.hydra.runtime.choices[key] == value
                continue
            got = OmegaConf.select(cfg, key, throw_on_missing=True)
            got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
            assert got == (pytest.approx(typed(key, value)) if isinstance(got, float) else typed(key, value))


# --- named sweeps and the presets, composed ------------------------------------------------


def test_the_shipped_named_sweeps_are_there():
    assert {"mnist_optimizers", "collab_grid", "collab_search", "tabular_grid", "seeds"} <= set(NAMED)


@pytest.mark.parametrize("name", NAMED)
def test_named_sweep_is_a_multirun_whose_every_swept_value_is_a_valid_override(name):
    skip_unless_task(sweep_task(name))
    cfg = compose(f"+sweep={name}")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"  # `python train.py +sweep=<name>` sweeps without -m too
    values = {key: swept_values(key, str(expr)) for key, expr in cfg.hydra.sweeper.params.items()}
    assert values and all(len(v) >= 2 for v in values.values())
    check_overrides([f"+sweep={name}"], values)


def test_optuna_search_direction_follows_the_tasks_optimized_metric():
    skip_unless_task("collab")
    cfg = compose("+sweep=collab_search")
    assert (cfg.optimized_metric.mode, cfg.hydra.sweeper.direction) == ("min", "minimize")
    assert cfg.hydra.sweeper.n_trials == 20 and cfg.hydra.sweeper.max_failure_rate == 1.0
    assert set(cfg.hydra.sweeper.params) == {"optim.lr", "optim.wd", "model.n_factors"}
    flipped = compose("+sweep=collab_search", "optimized_metric.mode=max")
    assert flipped.hydra.sweeper.direction == "maximize"
    mnist = compose("task=mnist", "hydra/sweeper=search")  # the preset alone, on a task that maximises
    assert (mnist.optimized_metric.mode, mnist.hydra.sweeper.direction) == ("max", "maximize")


def test_parallel_preset_is_joblib_with_one_job_per_core_by_default():
    launcher = compose("hydra/launcher=parallel").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == -1


@pytest.mark.parametrize("extra", [(), ("hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4")])
def test_slurm_preset_makes_a_valid_sbatch_script(tmp_path, monkeypatch, extra):
    """Hydra's submitit launcher builds the job array from the preset; submission is stopped at sbatch."""
    import submitit
    from hydra.utils import instantiate

    fake_bin = tmp_path / "bin"  # submitit looks for srun before it builds anything
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    cfg = compose("hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}", *extra)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    scripts = []

    def no_submit(executor, *args, **kwargs):
        scripts.append(executor._executor._make_submission_file_text("python train.py", "0"))
        raise RuntimeError("stop before sbatch")

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", no_submit)
    with pytest.raises(RuntimeError, match="stop before sbatch"):
        launcher.launch([["optim.lr=0.1"]], initial_job_idx=0)
    tasks = 4 if extra else 1
    for line in ("--partition=gpu", f"--gpus-per-node={tasks}", f"--ntasks-per-node={tasks}", "--cpus-per-task=8",
                 "--time=240", "--mem=32GB"):
        assert f"#SBATCH {line}" in scripts[0]


@pytest.mark.parametrize("path", WANDB_FILES, ids=lambda p: p.stem)
def test_wandb_sweep_file_sets_only_valid_overrides(path):
    spec = yaml.safe_load(path.read_text())
    assert spec["program"] == "train.py" and (REPO / spec["program"]).is_file()
    command = spec["command"]
    assert command[:3] == ["${env}", "python", "${program}"] and "${args_no_hyphens}" in command  # key=value
    fixed = [c for c in command if "=" in c and "${" not in c]
    task = next(c.split("=", 1)[1] for c in fixed if c.startswith("task="))
    skip_unless_task(task)
    cfg = compose(*fixed)
    goal = {"min": "minimize", "max": "maximize"}[cfg.optimized_metric.mode]
    assert spec["metric"] == {"name": cfg.optimized_metric.name, "goal": goal}
    values = {key: [json.dumps(v) if isinstance(v, list) else str(v) for v in (p["values"] if "values" in p else [p["min"], p["max"]])]
              for key, p in spec["parameters"].items()}
    assert values
    check_overrides(fixed, values)


# --- sweeps that run ------------------------------------------------------------------------


def wandb_run_record(run_dir: Path):
    """The `run` record of the run's offline W&B file (LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block, pos, pending = path.read_bytes(), 32768, 7, b""  # 7: the file's ':W&B' header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        elif kind in (3, 4):  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "run":
                return record.run
    raise AssertionError(f"no run record in {path}")


def test_parallel_sweep_goes_on_past_failed_jobs_splits_the_cores_and_groups_wandb_runs(tmp_path):
    import joblib

    out = sweep_cli(*FAST, "logger=wandb", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
                    "optim.lr=0.01,-1,1e30", "model.hidden=[50],[-5]",
                    "+callbacks.threads._target_=tests.test_sweeps.RecordThreads", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]  # some jobs failed, not all
    runs = jobs(tmp_path)
    assert sorted(runs) == list(range(6))  # one folder per job
    by_case = {}
    for n, s in runs.items():
        overrides = dict(o.split("=", 1) for o in s["overrides"])
        by_case[overrides["optim.lr"], overrides["model.hidden"]] = (n, s)
    assert by_case["0.01", "[50]"][1]["status"] == "completed"
    for case, expected in [(("-1", "[50]"), "optim.lr=-1 must be positive"),
                           (("1e+30", "[50]"), "the training loss became nan"),
                           (("0.01", "[-5]"), "negative dimension")]:
        n, s = by_case[case]
        assert s["status"] == "failed" and expected in s["error"], (case, s["error"])
    assert (tmp_path / str(by_case["0.01", "[-5]"][0]) / "error.log").is_file()  # the exception's traceback
    # every job that trained got cores // n_jobs threads
    expected = max(joblib.cpu_count() // 2, 1)
    threads = [json.loads(p.read_text()) for p in tmp_path.glob("*/threads.json")]
    assert len(threads) == 2 and all(t["omp"] == str(expected) and t["torch"] == expected for t in threads)
    # W&B: one group for the sweep, job_type sweep, the swept values in the config
    trained = [by_case["0.01", "[50]"], by_case["1e+30", "[50]"]]
    records = [wandb_run_record(tmp_path / str(n)) for n, _ in trained]
    assert len({r.run_group for r in records}) == 1 and tmp_path.name in records[0].run_group
    assert all(r.run_group == s["group"] for r, (_, s) in zip(records, trained))
    assert {r.job_type for r in records} == {"sweep"}
    logged = [{item.key: json.loads(item.value_json) for item in r.config.update} for r in records]
    assert [c["optim"]["lr"] for c in logged] == [0.01, 1e30] and logged[0]["model"]["hidden"] == [50]
    # the sweep ends with the ranked table, the report and the tally
    assert "rank" in out.stdout and (tmp_path / "report.html").is_file()
    assert "6 jobs (" in out.stderr and "1 completed" in out.stderr and "5 failed" in out.stderr


def test_sweep_exits_non_zero_only_when_every_job_failed(tmp_path, train_run, capsys):
    """The callback Hydra calls when a sweep ends, on real job folders (two failed, then one completed)."""
    from fastlight.tracking.sweep import SweepCallback

    for job, lr in enumerate(("-1", "-2")):
        with pytest.raises(SystemExit):  # a single failed run exits; a sweep's job returns NaN instead
            train_run(*FAST, "logger=none", f"optim.lr={lr}", run_dir=tmp_path / str(job))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback = SweepCallback()
    callback.on_multirun_start(config)
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(config)
    assert exit_info.value.code == 1
    assert "2 jobs (2 failed)" in capsys.readouterr().err
    train_run(*FAST, "logger=none", "+trainer.limit_train_batches=2", run_dir=tmp_path / "2")
    callback.on_multirun_end(config)  # one job completed: the sweep exits 0
    captured = capsys.readouterr()
    assert "3 jobs (2 failed, 1 completed)" in captured.err
    assert "rank" in captured.out and (tmp_path / "report.html").is_file()


@pytest.mark.slow
def test_sweep_process_exits_1_when_every_job_failed(tmp_path):
    out = sweep_cli(*FAST, "logger=none", "optim.lr=-1,-2", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 1
    assert "every job of the sweep failed" in out.stderr
    assert [s["status"] for s in jobs(tmp_path).values()] == ["failed", "failed"]


def test_optuna_search_records_failed_and_nan_trials_and_goes_on(tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # Optuna's random sampler with this seed asks for 1e30 (NaN loss), 0.01, then -1 (a bad value).
    # (Its grid sampler is avoided: hydra-optuna-sweeper 1.3 crashes when the grid's last trial fails.)
    out = sweep_cli(*FAST, "logger=none", "hydra/sweeper=search", "hydra/sweeper/sampler=random",
                    "hydra.sweeper.sampler.seed=2", "hydra.sweeper.n_trials=3", "optim.lr=choice(0.01,-1,1e30)",
                    f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=t", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name="t", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # mnist's val/acc
    assert [(t.params["optim.lr"], t.state.name) for t in study.trials] == [
        (1e30, "FAIL"), (0.01, "COMPLETE"), (-1, "FAIL")]
    assert yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())["best_params"] == {"optim.lr": 0.01}
    assert sorted(s["status"] for s in jobs(tmp_path / "sweep").values()) == ["completed", "failed", "failed"]


@pytest.mark.slow
def test_ddp_jobs_stay_in_their_own_folders_alone_and_in_a_sweep(tmp_path):
    """Lightning re-runs the command line for DDP rank 1; no rank may start a second run or sweep."""
    ddp = ("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=csv")
    single = subprocess.run([sys.executable, str(REPO / "train.py"), *FAST, *ddp], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert len(list(tmp_path.glob("outputs/mnist/*/*"))) == 1
    out = sweep_cli(*FAST, *ddp, "optim.lr=0.01,0.02", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep_dir,) = tmp_path.glob("outputs/multirun/*/*")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    assert [s["status"] for s in jobs(sweep_dir).values()] == ["completed", "completed"]
    assert len(list(tmp_path.glob("outputs/mnist/*/*"))) == 1  # the sweep made no single-run folder either


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist_optimizers", "collab_grid", "tabular_grid"])
def test_named_grid_sweep_runs_every_job_on_synthetic_data(name, tmp_path):
    skip_unless_task(sweep_task(name))
    out = sweep_cli(f"+sweep={name}", "data=synthetic", "trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null",
                    "hydra/launcher=parallel", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    params = compose(f"+sweep={name}").hydra.sweeper.params
    expected = 1
    for key, expr in params.items():
        expected *= len(swept_values(key, str(expr)))
    assert [s["status"] for s in jobs(tmp_path).values()] == ["completed"] * expected


@pytest.mark.slow
def test_collab_search_runs_its_trials_and_writes_the_best(tmp_path):
    skip_unless_task("collab")
    out = sweep_cli("+sweep=collab_search", "data=synthetic", "trainer.max_epochs=1", "logger=csv",
                    "callbacks.progress_bar=null", "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = jobs(tmp_path)
    assert len(runs) == 4 and all(s["status"] == "completed" for s in runs.values())
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(s["optimized_metric"]["value"] for s in runs.values()))
