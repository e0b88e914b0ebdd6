"""Composing and checking a run's config, before any heavy library is imported.

`register` (the resolvers and the task-relative `data=`/`model=` choices), `check_choices` (argv
sniffing for unknown tasks and choices, with the valid list), `validate` (values the configs can't
type-check), `help_text` (fast `--help`) and `compose` (the config `train.py` would run, in-process).

Config layout: a task config (`conf/task/<task>.yaml`) chooses its default `data` and `model`;
`data=<name>` on the command line picks `conf/data/<task>/<name>.yaml` for the current task,
so `data=csv` means the ratings CSV for `task=collab` and a table for `task=tabular`.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fastlight.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
PER_TASK_GROUPS = ("data", "model")


def register() -> None:
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


def choices_for(group: str, task: str | None = None) -> list[str]:
    """The options of a config group: conf/<group>/*.yaml, or conf/<group>/<task>/*.yaml per task."""
    folder = CONF_DIR / group / task if task else CONF_DIR / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_choices(argv: list[str]) -> None:
    """Catch group choices that don't exist (`task=`, `optim=`, `schedule=`, ..., and the per-task
    `data=`/`model=`), with the list of valid ones.

    Hydra would also refuse them, in several lines, and for a task-relative choice it names a file.
    Sweep expressions such as `choice(...)` are left to Hydra.
    """
    args = dict(a.split("=", 1) for a in argv if "=" in a and a[0].isalpha() and "(" not in a)
    sweep = next((a.split("=", 1)[1] for a in argv if a.startswith("+sweep=")), None)
    tasks = choices_for("task")
    for group, value in args.items():  # the task-independent groups: optim=, schedule=, trainer=, ...
        if "." in group or group in ("task", *PER_TASK_GROUPS) or not (CONF_DIR / group).is_dir():
            continue
        valid = choices_for(group)
        for v in value.split(","):
            if v not in valid and v != "null":
                raise ConfigError(f"{group}={v} is not a choice; choose one of: {', '.join(valid)}")
    for task in args["task"].split(",") if "task" in args else [_sweep_task(sweep) or _default_task()]:
        if task not in tasks:
            raise ConfigError(f"unknown task {task!r}; available tasks: {', '.join(tasks)}")
        for group in PER_TASK_GROUPS:
            for value in args[group].split(",") if group in args else []:
                valid = choices_for(group, task)
                if value not in valid:
                    raise ConfigError(f"{group}={value} is not available for task={task}; choose one of: {', '.join(valid)}")


def check_keys(argv: list[str]) -> None:
    """A `key=value` override whose key is not in the config: one sentence naming the nearest key.

    Hydra refuses it too, in four lines; this composes the config once (the group choices from
    argv, the first of a sweep's values) and looks each dotted key up.
    """
    import difflib

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    plain = [a for a in argv if "=" in a and a[0].isalpha() and not a.startswith("hydra.")]
    keys = [a.split("=", 1)[0] for a in plain if "." in a.split("=", 1)[0]]
    if not keys:
        return
    groups = [a.split(",")[0] for a in argv if "=" in a and "." not in a.split("=", 1)[0]
              and not a.startswith("~") and "(" not in a]
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose("config", overrides=groups)
    except Exception:  # a bad group choice: Hydra's own run says so
        return
    missing = object()
    for key in keys:
        if OmegaConf.select(cfg, key, default=missing) is not missing:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
        if not OmegaConf.is_dict(node):
            raise ConfigError(f"{key} is not a config key ({parent} has no keys); add one with +{key}=...")
        near = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
        hint = f"did you mean {parent}.{near[0]}?" if near else f"the keys of {parent} are: {', '.join(map(str, node.keys()))}"
        raise ConfigError(f"{key} is not a config key; {hint} (a new key is added with +{key}=...)")


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
    if bs is not None:  # "auto": Lightning's BatchSizeFinder where the data module supports it
        need((isinstance(bs, int) and bs >= 1) or bs == "auto", f"data.batch_size={bs} must be a positive integer or auto")
    epochs = cfg.trainer.get("max_epochs")
    if epochs is not None:
        need(isinstance(epochs, int) and (epochs >= 1 or epochs == -1), f"trainer.max_epochs={epochs} must be >= 1")
    need(isinstance(cfg.seed, int), f"seed={cfg.seed} must be an integer")
    need(cfg.mode in ("fit", "lr_find"), f"mode={cfg.mode} must be fit or lr_find")
    need(cfg.optimized_metric.mode in ("min", "max"), "optimized_metric.mode must be min or max")


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


def compose(overrides: list[str], run_dir: str | Path, job_name: str = "train") -> DictConfig:
    """In-process, the config that `python train.py <overrides>` would run in `run_dir`, with
    Hydra's runtime set up so `train(cfg)` works (tests, benchmarks, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    register()
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


