"""The run lifecycle: compose -> seed -> build -> fit/test -> record -> return the optimized metric.

`python train.py task=mnist model=mlp optim=adam trainer.max_epochs=1` lands here. Heavy
libraries (torch, lightning, wandb) are imported inside `train`, so commands that only read
configs (`--help`, `--cfg job`) stay fast. Composing and checking the config is `fastlight.config`;
rebuilding a finished run is `fastlight.runs.load_run`.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastlight.config import CONF_DIR, check_choices, check_keys, help_text, register, validate
from fastlight.errors import ConfigError, FastlightError


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
    from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

    from fastlight.tracking import wandb as fl_wandb
    from fastlight.tracking.console import quiet_console
    from fastlight.tracking.record import RunRecord, RunRecorder, resume_command
    from fastlight.training import fast_path
    from fastlight.training.checkpoints import check_checkpoint, check_checkpoint_fits, weight_shapes
    from fastlight.training.final_fit import data_kwargs, merge_valid_into_train, test_metric_name

    # Denormal floats crawl on a CPU: recurrent models, and U-Nets late in a one-cycle (camvid_tiny's
    # 3rd epoch took 66 CPU-s unflushed, 25 flushed). Threads started later inherit the setting.
    torch.set_flush_denormal(True)
    quiet_console()
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
    overrides = list(hc.overrides.task)
    record = RunRecord(
        run_dir if primary else None,
        task=task_name,
        seed=cfg.seed,
        optimized_metric=cfg.optimized_metric,
        extra={"overrides": overrides, "group": group},
    )
    ckpt_dir = run_dir / "checkpoints"
    best = RunRecorder(record, cfg.optimized_metric.name, cfg.optimized_metric.mode, ckpt_dir, overrides,
                       task_name, cfg.task._target_)

    status, error, exit_code = "failed", None, 1
    metrics: dict[str, float] = {}
    extra: dict = {}
    final_fit = bool(cfg.data.get("final_fit", False))
    if final_fit:  # the metric comes from the test set, where there is one
        record.data["optimized_metric"]["name"] = test_metric_name(cfg.optimized_metric.name)
    try:
        validate(cfg)
        if cfg.ckpt_path is not None:  # a wrong file stops the run before any data is read
            resumed = weight_shapes(check_checkpoint(cfg.ckpt_path, cfg.task._target_))
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        datamodule = hydra.utils.instantiate(data_kwargs(cfg))
        datamodule.prepare_data()  # downloads or stops with a clear message, before any training
        datamodule.setup("fit")
        if final_fit:
            extra.update(final_fit=True, **merge_valid_into_train(datamodule))
        model = hydra.utils.instantiate(cfg.model, **datamodule.dims)
        task = hydra.utils.instantiate(cfg.task, model=model, optim=cfg.optim, schedule=cfg.schedule)
        if cfg.ckpt_path is not None:
            check_checkpoint_fits(cfg.ckpt_path, resumed, task)

        loggers = []
        if cfg.logger.get("csv"):
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(save_dir=str(run_dir), name="", version=""))
        if cfg.logger.get("wandb"):
            job_type = cfg.logger.wandb.job_type or ("sweep" if multirun else "train")
            loggers.append(
                fl_wandb.make_wandb_logger(cfg.logger.wandb, run_dir, resolved, group, job_type, cfg.tags)
            )
        trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
        if final_fit:  # no validation at all: the validation rows are training rows now
            trainer_kwargs.update(limit_val_batches=0, num_sanity_val_steps=0)
        trainer_kwargs = fast_path.plan(trainer_kwargs, datamodule, task, lr_find=cfg.mode == "lr_find")
        callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None]
        if final_fit:  # nothing to pick a best epoch by; last.ckpt stays
            callbacks = [c for c in callbacks if getattr(c, "monitor", None) is None]
        callbacks = fast_path.with_fast_path_callbacks([*callbacks, best], task)
        if not loggers:  # nothing to write learning rates to (logger=none)
            from lightning.pytorch.callbacks import LearningRateMonitor

            callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
        trainer_kwargs.pop("_target_", None)
        try:
            trainer = L.Trainer(**trainer_kwargs, callbacks=callbacks, logger=loggers or False,
                                default_root_dir=str(run_dir))
        except (ValueError, TypeError, MisconfigurationException) as e:  # a bad trainer.* value
            raise ConfigError(f"trainer: {_first_line(e)}") from None

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
                    metrics.update({k: v for k, v in test_metrics.items() if "/" in k})  # not the step axis
            if final_fit and not _has_test(datamodule):
                extra["note"] = "final fit without a test set: no optimized metric to record"
                print(f"[fastlight] {extra['note']}")
            task_summary = getattr(task, "summarize", None)
            if task_summary is not None:
                extra.update(task_summary(run_dir) or {})
        status, exit_code = "completed", 0
    except SIGTERMException:  # Lightning stops at the next step boundary; the recorder saved last.ckpt
        saved = best.sigterm_checkpoint
        status, exit_code = "interrupted", 143
        error = "stopped by SIGTERM" + (f"; checkpoint saved: {saved}" if saved else "")
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit after its own cleanup
        status, error, exit_code = "interrupted", "interrupted by the user (SIGINT)", 130
    except Exception as e:
        user_error = _user_error(e)
        if user_error is not None:
            error, exit_code = user_error, getattr(_fastlight_error(e), "exit_code", 2)
        else:  # unexpected: keep the traceback in the run folder, say one line
            (run_dir / "error.log").write_text(traceback.format_exc())
            error = f"{type(e).__name__}: {_first_line(e)} (traceback in {run_dir / 'error.log'})"
    finally:
        sync_dir = fl_wandb.finish(exit_code)
        # Whatever the ending, keep the best validation metrics the run reached.
        metrics = {**best.metrics, **metrics}
        extra.setdefault("best_epoch", best.epoch)
        last = ckpt_dir / "last.ckpt"
        if status != "completed" and last.is_file():
            extra["resume"] = resume_command(overrides, last)
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


def _fastlight_error(e: BaseException | None) -> FastlightError | None:
    """The FastlightError behind `e`, if any: hydra's instantiate wraps what a constructor raises."""
    while e is not None and not isinstance(e, FastlightError):
        e = e.__cause__
    return e


def _user_error(e: BaseException) -> str | None:
    """The one sentence for a user's mistake behind `e`, or None for a bug.

    A DataLoader worker re-raises its error in the main process with the worker's whole traceback
    as the message; the sentence is the traceback's last line, as with `num_workers=0`.
    """
    found = _fastlight_error(e)
    if found is None:
        return None
    msg = str(found)
    if "DataLoader worker process" in msg and "Traceback" in msg:
        last = [line for line in msg.strip().splitlines() if line.strip()][-1]
        name = type(found).__name__
        msg = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last
    return msg


def _first_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (hydra's instantiate puts the cause on a second line)."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lr_find(cfg, trainer, task, datamodule, run_dir: Path, loggers) -> dict:
    """Lightning's lr finder; saves the loss-vs-lr plot in the run folder and logs it to W&B."""
    from lightning.pytorch.tuner import Tuner

    # fast_path.plan gave the finder one optimizer step per training_step, stepped by Lightning.
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


def main() -> None:
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text())
        return
    register()
    try:
        check_choices(sys.argv[1:])
        check_keys(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()


