"""The run lifecycle: compose -> seed -> build -> fit/test -> record -> return the optimized metric.

`python train.py task=mnist model=mlp optim=adam trainer.max_epochs=1` lands here. Heavy
libraries (torch, lightning, wandb) are imported inside `train`, so commands that only read
configs (`--help`, `--cfg job`) stay fast.

Config layout: a task config (`conf/task/<task>.yaml`) chooses its default `data` and `model`;
`data=<name>` on the command line picks `conf/data/<task>/<name>.yaml` for the current task,
so `data=csv` means the ratings CSV for `task=collab` and a table for `task=tabular`.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastlight.errors import ConfigError, FastlightError

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
PER_TASK_GROUPS = ("data", "model")


def _register() -> None:
    """Resolvers used by conf/hydra, and the task-relative `data=`/`model=` choices."""
    if not OmegaConf.has_resolver("fl_root"):
        OmegaConf.register_new_resolver("fl_root", lambda: str(ROOT))
        # A short random suffix: two runs started in the same second never share a folder.
        OmegaConf.register_new_resolver("fl_unique", lambda: os.urandom(3).hex(), use_cache=True)
    cs = ConfigStore.instance()
    for group in PER_TASK_GROUPS:
        # `data=csv` selects this empty marker; the defaults list then loads data/<task>/csv.yaml.
        for name in sorted({p.stem for p in (CONF_DIR / group).glob("*/*.yaml")}):
            cs.store(group=group, name=name, node={})


def choices_for(group: str, task: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group / task).glob("*.yaml"))


def check_choices(argv: list[str]) -> None:
    """Catch `task=`/`data=`/`model=` choices that don't exist, with the list of valid ones.

    Hydra would also refuse them, but for a task-relative choice it names a file instead.
    Sweep expressions such as `choice(...)` are left to Hydra.
    """
    args = dict(a.split("=", 1) for a in argv if "=" in a and a[0].isalpha() and "(" not in a)
    sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("+sweep=")), None)
    tasks = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
    for task in args["task"].split(",") if "task" in args else [_sweep_task(sweep) or _default_task()]:
        if task not in tasks:
            raise ConfigError(f"unknown task {task!r}; available tasks: {', '.join(tasks)}")
        for group in PER_TASK_GROUPS:
            for value in args[group].split(",") if group in args else []:
                valid = choices_for(group, task)
                if value not in valid:
                    raise ConfigError(f"{group}={value} is not available for task={task}; choose one of: {', '.join(valid)}")


def _sweep_task(name: str | None) -> str | None:
    """The task a named sweep picks (`- override /task: <task>` in sweeps/sweep/<name>.yaml)."""
    path = ROOT / "sweeps" / "sweep" / f"{name}.yaml"
    if name is None or not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.strip().startswith("- override /task:"):
            return line.split(":", 1)[1].split("#")[0].strip()
    return None


def _default_task() -> str:
    for line in (CONF_DIR / "config.yaml").read_text().splitlines():
        if line.strip().startswith("- task:"):
            return line.split(":", 1)[1].strip().split()[0]
    return "collab"


def validate(cfg: DictConfig) -> None:
    """Values the configs can't type-check: one sentence per mistake."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    lr = cfg.optim.lr
    lrs = list(lr) if OmegaConf.is_list(lr) else [lr]
    need(all(number(x) for x in lrs), f"optim.lr={lr} must be a number, [hi] or [lo, hi]")
    need(all(x > 0 for x in lrs), f"optim.lr={lr} must be positive")
    wd = cfg.optim.get("wd", 0.0)
    need(number(wd) and wd >= 0, f"optim.wd={wd} must be a number >= 0")
    bs = cfg.data.get("batch_size")
    if bs is not None:
        need(isinstance(bs, int) and bs >= 1, f"data.batch_size={bs} must be a positive integer")
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None:
        need(isinstance(epochs, int) and (epochs >= 1 or epochs == -1), f"trainer.max_epochs={epochs} must be >= 1")
    need(isinstance(cfg.seed, int), f"seed={cfg.seed} must be an integer")
    need(cfg.mode in ("fit", "lr_find"), f"mode={cfg.mode} must be fit or lr_find")
    need(cfg.optimized_metric.mode in ("min", "max"), "optimized_metric.mode must be min or max")


def _is_multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def train(cfg: DictConfig) -> float:
    """One run. Returns the optimized metric (NaN when the run failed inside a sweep)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    task_name = hc.runtime.choices.get("task")
    multirun = _is_multirun()

    import lightning as L

    # lightning turns this on at import; with a CUDA build of torch and no NVIDIA driver every
    # optimizer step then probes NVML (~0.3 ms a step). Nothing here needs that probe.
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    import torch

    from fastlight.tracking import wandb as fl_wandb
    from fastlight.tracking.record import BestValidation, RunRecord

    torch.set_flush_denormal(True)  # recurrent models crawl on denormal floats on CPU
    # The run folder already holds config.yaml and summary.json when the CSV logger starts.
    warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")  # lightning vs torch 2.14
    # DDP ranks > 0 run this function again in rank 0's folder: only rank 0 writes the record there.
    primary = L.pytorch.utilities.rank_zero_only.rank == 0
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if primary:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    group = cfg.logger.wandb.group if cfg.logger.get("wandb") else None
    if multirun and not group:
        # One W&B group per sweep: the named sweep (else the task), then the sweep folder's date and time.
        sweep_dir = Path(hc.sweep.dir)
        group = f"{hc.runtime.choices.get('sweep') or task_name}-{sweep_dir.parent.name}-{sweep_dir.name}"
    record = RunRecord(
        run_dir if primary else None,
        task=task_name,
        seed=cfg.seed,
        optimized_metric=cfg.optimized_metric,
        extra={"overrides": list(hc.overrides.task), "group": group},
    )

    status, error, exit_code = "failed", None, 1
    metrics: dict[str, float] = {}
    extra: dict = {}
    try:
        validate(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()  # downloads or stops with a clear message, before any training
        datamodule.setup("fit")
        model = hydra.utils.instantiate(cfg.model, **datamodule.dims)
        task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)

        loggers = []
        if cfg.logger.get("csv"):
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
        if cfg.logger.get("wandb"):
            job_type = cfg.logger.wandb.job_type or ("sweep" if multirun else "train")
            loggers.append(
                fl_wandb.make_wandb_logger(cfg.logger.wandb, run_dir, resolved, group, job_type, cfg.tags)
            )
        best = BestValidation(cfg.optimized_metric.name, cfg.optimized_metric.mode)
        callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None] + [best]
        if not loggers:  # nothing to write learning rates to (logger=none)
            from lightning.pytorch.callbacks import LearningRateMonitor

            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        trainer = hydra.utils.instantiate(
            cfg.trainer, callbacks=callbacks, logger=loggers or False, default_root_dir=str(run_dir)
        )

        if cfg.mode == "lr_find":
            extra["lr_find"] = _lr_find(cfg, trainer, task, datamodule, run_dir, loggers)
            metrics["lr_find/suggestion"] = extra["lr_find"]["suggestion"]
        else:
            trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            if trainer.interrupted:
                raise KeyboardInterrupt
            metrics.update(best.metrics)
            extra["best_epoch"] = best.epoch
            if _has_test(datamodule):
                # The final weights, as fastai reports them; best.ckpt is kept for the user.
                for test_metrics in trainer.test(task, datamodule=datamodule, verbose=False):
                    metrics.update(test_metrics)
            task_summary = getattr(task, "summarize", None)
            if task_summary is not None:
                extra.update(task_summary(run_dir) or {})
        status, exit_code = "completed", 0
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit after its own cleanup
        status, error, exit_code = "interrupted", "interrupted by the user", 130
    except Exception as e:
        user_error = _user_error(e)
        if user_error is not None:
            error, exit_code = str(user_error), user_error.exit_code
        else:  # unexpected: keep the traceback in the run folder, say one line
            (run_dir / "error.log").write_text(traceback.format_exc())
            error = f"{type(e).__name__}: {e} (traceback in {run_dir / 'error.log'})"
    finally:
        sync_dir = fl_wandb.finish(exit_code)
        record.finish(status, metrics, error, **extra)

    if primary:
        _print_summary(record.data, run_dir, sync_dir)
    value = record.data["optimized_metric"]["value"]
    if cfg.mode == "lr_find" and status == "completed":
        value = extra["lr_find"]["suggestion"]
    if status == "interrupted" or (status != "completed" and not multirun):
        raise SystemExit(exit_code)  # Ctrl-C stops a whole sweep; a failed job of a sweep does not
    return float("nan") if value is None else value


def _has_test(datamodule) -> bool:
    import lightning as L

    defined = type(datamodule).test_dataloader is not L.LightningDataModule.test_dataloader
    return defined and getattr(datamodule, "has_test", True)  # e.g. an image folder without test/


def _user_error(e: BaseException | None) -> FastlightError | None:
    """The FastlightError behind `e`, if any: hydra's instantiate wraps what a constructor raises."""
    while e is not None and not isinstance(e, FastlightError):
        e = e.__cause__
    return e


def _lr_find(cfg, trainer, task, datamodule, run_dir: Path, loggers) -> dict:
    """Lightning's lr finder; saves the loss-vs-lr plot in the run folder and logs it to W&B."""
    from lightning.pytorch.tuner import Tuner

    # The finder assumes one optimizer step per training_step, stepped by Lightning itself.
    datamodule.steps_per_call = 1
    task.automatic_optimization = True
    finder = Tuner(trainer).lr_find(task, datamodule=datamodule, update_attr=False, **cfg.lr_find)
    if finder is None:
        raise FastlightError("the learning-rate finder stopped before recording any loss")
    fig = finder.plot(suggest=True)
    path = run_dir / "lr_find.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    suggestion = finder.suggestion()
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key="lr_find", images=[str(path)])
    print(f"lr_find: suggested lr {suggestion:.3g} (plot: {path})")
    return {"suggestion": suggestion, "plot": str(path)}


def _print_summary(summary: dict, run_dir: Path, sync_dir: str | None) -> None:
    om = summary["optimized_metric"]
    lines = [f"\n[fastlight] task={summary['task']} status={summary['status']} ({summary['wall_time_s']:.1f}s)"]
    if summary["error"]:
        lines.append(f"error: {summary['error']}")
    shown = {k: v for k, v in summary["metrics"].items() if v is not None}
    if shown:
        lines.append("  " + "  ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
    if om["value"] is not None:
        lines.append(f"  optimized {om['name']} ({om['mode']}) = {om['value']:.4g}")
    lines.append(f"  run folder: {run_dir}")
    if sync_dir:
        lines.append(f"  W&B (offline): wandb sync {sync_dir}")
    print("\n".join(lines), file=sys.stderr if summary["error"] else sys.stdout)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    return train(cfg)


def help_text() -> str:
    """`--help` with conf/hydra/default.yaml's template, the groups listed by scanning conf/:
    Hydra's own listing composes the config once per group (~1 s, 2 s on a busy machine)."""
    groups = sorted(p for p in CONF_DIR.rglob("*") if p.is_dir() and p.relative_to(CONF_DIR).parts[0] != "hydra")
    lines = [
        f"{g.relative_to(CONF_DIR).as_posix()}: {', '.join(sorted(p.stem for p in g.glob('*.yaml')))}"
        for g in groups
        if any(g.glob("*.yaml"))
    ]
    template = OmegaConf.load(CONF_DIR / "hydra" / "default.yaml").help.template
    return template.replace("$APP_CONFIG_GROUPS", "\n".join(lines))


def main() -> None:
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text())
        return
    _register()
    try:
        check_choices(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()


def compose(overrides: list[str], run_dir: str | Path, job_name: str = "train") -> DictConfig:
    """In-process, the config that `python train.py <overrides>` would run in `run_dir`, with
    Hydra's runtime set up so `train(cfg)` works (tests, benchmarks, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    _register()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[f"hydra.run.dir={run_dir}", *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.name = job_name
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # a real run's config has no hydra node; ${hydra:...} still resolves
    return cfg


def load_run(run_dir: str | Path, ckpt: str = "best", setup_data: bool = True):
    """Rebuild a finished run from its folder: (config, datamodule, task with `ckpt` weights loaded).

    For commands that work on a trained model (`recommend`, `predict`). `ckpt` is "best", "last"
    or a path. The data module is set up again from the same config (same seed, same split).
    """
    import torch

    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FastlightError(f"{run_dir} is not a fastlight run folder (no config.yaml)")
    cfg = OmegaConf.load(config_file)
    path = Path(ckpt) if ckpt not in ("best", "last") else run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if not path.is_file():
        raise FastlightError(f"no checkpoint at {path}; did the run finish an epoch?")
    datamodule = hydra.utils.instantiate(cfg.data)
    if setup_data:
        datamodule.prepare_data()
        datamodule.setup("fit")
    model = hydra.utils.instantiate(cfg.model, **datamodule.dims)
    task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
    state = torch.load(path, map_location="cpu", weights_only=False)
    task.on_load_checkpoint(state)  # lets a task restore what it saved beside the weights
    task.load_state_dict(state["state_dict"])
    task.eval()
    return cfg, datamodule, task
