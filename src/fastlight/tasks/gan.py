"""The super-resolution GAN, lesson7-superres-gan: "pretrain the generator and the critic, then ping-pong".

A U-Net generator restores crappified images; a critic (`gan_critic`: a map of logits, one per
patch) tells restored images from real ones. The lesson's four steps are the stages of one run:
  1. generator: the U-Net alone on pixel MSE (one-cycle; frozen encoder, then unfrozen);
  2. critic: the critic alone on the frozen generator's outputs (label 0) vs real images (label 1),
     BCE with logits over every patch (fastai's AdaptiveLoss), its accuracy logged as val/critic_acc;
  3. gan: both, alternating by a switcher (the lesson's `adaptive`: train the critic until its loss
     is below 0.65, then the generator for one batch). Generator loss = 1 * BCE(critic(fake), real)
     + 50 * pixel MSE (weights_gen); critic loss = mean of BCE(critic(real), 1), BCE(critic(fake), 0).
     Adam betas (0, 0.99), wd 1e-3, constant lr, the critic's lr 5x the generator's;
  4. optionally gan again at a larger size and a lower lr (the lesson's 192 px step).
`task.generator=<run>` / `task.critic=<run>` start from an earlier run's weights (a gan run, or a
superres run for the generator) and skip that pretraining, so one pretraining serves many GAN phases.
Each epoch logs `train/stage`, val/psnr, val/ssim, val/critic_acc and a before / after / target grid;
the summary holds PSNR/SSIM before and after the GAN phase. Checkpoints hold both optimizers and the
switcher's position: a run killed mid-GAN-phase resumes there (`ckpt_path=<run>/checkpoints/last.ckpt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from fastlight.errors import ConfigError
from fastlight.tasks.wgan import build_adam, check_finite, make_gif, make_switcher
from fastlight.training.layer_groups import freeze_to, group_lrs
from fastlight.training.schedules import one_cycle_at

PHASES = ("generator", "critic", "gan")


@dataclass
class GanStage:
    phase: str
    epochs: int
    lr: float | list
    pct_start: float = 0.25  # one-cycle (generator and critic phases); the GAN phases run at a constant lr
    freeze_to: int = 0       # generator phase: -1 freezes the encoder (BatchNorm still trains), 0 trains all
    size: int | None = None  # image size from this stage on (progressive resizing)


def parse_gan_stages(stages) -> list[GanStage]:
    out = []
    for i, s in enumerate(stages or []):
        s = dict(s)
        if s.get("phase") not in PHASES:
            raise ConfigError(f"task.stages[{i}].phase={s.get('phase')!r} must be one of: {', '.join(PHASES)}")
        unknown = set(s) - set(GanStage.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"task.stages[{i}] has unknown keys {sorted(unknown)}")
        if int(s.get("epochs", 0)) < 1:
            raise ConfigError(f"task.stages[{i}].epochs must be >= 1")
        out.append(GanStage(**s))
    if not out:
        raise ConfigError("task.stages is empty: give at least one stage")
    return out


def patch_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """fastai's AdaptiveLoss(BCEWithLogits): one label per image, expanded to every patch logit."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def load_part(run_dir: str, part: str) -> nn.Module:
    """The generator (or critic) of an earlier run, through `fastlight.runs.load_run`."""
    from fastlight.runs import load_run

    _, _, task = load_run(run_dir, ckpt="last", setup_data=False)
    model = getattr(task, "model", None)
    found = getattr(model, part, None)
    if found is None and part == "generator" and model is not None and not hasattr(model, "critic"):
        found = model  # a superres run: its U-Net is a generator
    if found is None:
        raise ConfigError(f"task.{part}={run_dir}: that run has no {part} (a gan run, or a superres run for the generator)")
    return found


class GanTask(L.LightningModule):
    def __init__(self, model: nn.Module, optim: dict, schedule: dict, stages: list, switcher: dict | None = None,
                 weights_gen: tuple = (1.0, 50.0), critic_lr_mult: float = 5.0, train_bn: bool = True,
                 generator: str | None = None, critic: str | None = None, n_grid: int = 4,
                 moms: tuple = (0.95, 0.85, 0.95)):
        super().__init__()
        self.automatic_optimization = False  # two optimizers take turns: Lightning's manual optimization
        from fastlight.tasks.superres import image_metrics

        self.model, self.optim = model, dict(optim)
        stages = parse_gan_stages(stages)
        # Start from earlier runs: their pretraining stages are not repeated (weights load in setup).
        self.start_from = {part: run for part, run in (("generator", generator), ("critic", critic)) if run}
        stages = [s for s in stages if s.phase not in self.start_from]
        if not stages:
            raise ConfigError("every stage was skipped (task.generator and task.critic given, no gan stage)")
        self.stages, self.starts = stages, [sum(s.epochs for s in stages[:i]) for i in range(len(stages))]
        self.switcher = make_switcher(switcher or {"name": "adaptive", "critic_thresh": 0.65})
        self.w_adv, self.w_pix = (float(w) for w in weights_gen)
        self.critic_lr_mult, self.train_bn, self.n_grid, self.moms = float(critic_lr_mult), train_bn, int(n_grid), moms
        self.val_metrics = image_metrics()
        self.history: list[dict] = []  # per epoch: stage, phase, val psnr/ssim/critic_acc (kept in checkpoints)
        self._grid = None

    def forward(self, x):
        return self.model.generator(x)

    # --- stages ------------------------------------------------------------------------------------
    def stage_index(self, epoch: int | None = None) -> int:
        epoch = self.current_epoch if epoch is None else epoch
        return max(i for i, s in enumerate(self.starts) if s <= epoch)

    @property
    def stage(self) -> GanStage:
        return self.stages[self.stage_index()]

    def configure_optimizers(self):
        gen_groups = self.model.generator.layer_groups() if hasattr(self.model.generator, "layer_groups") else [self.model.generator]
        params = [{"params": [p for p in g.parameters()], "layer_group": i} for i, g in enumerate(gen_groups)]
        self._gen_groups = gen_groups
        return [build_adam(self.model.critic.parameters(), self.optim), build_adam(params, self.optim)]

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        self.trainer.fit_loop.max_epochs = sum(s.epochs for s in self.stages)  # the stages' epochs are the run's
        # Here, not in __init__: rebuilding a finished run (restore) never needs the earlier runs, and
        # a resumed run's checkpoint, restored after setup, wins over them.
        for part, run in self.start_from.items():
            try:
                getattr(self.model, part).load_state_dict(load_part(run, part).state_dict())
            except RuntimeError as e:
                raise ConfigError(f"task.{part}={run}: its {part} does not fit this model ({str(e)[:120]})") from None

    def on_train_epoch_start(self):
        i = self.stage_index()
        stage = self.stages[i]
        gen_groups = self._gen_groups
        if stage.phase == "generator":
            freeze_to(gen_groups, stage.freeze_to if len(gen_groups) > 1 else 0, self.train_bn)
        else:
            freeze_to(gen_groups, 0)
        if stage.size is not None and hasattr(self.trainer.datamodule, "set_size"):
            self.trainer.datamodule.set_size(stage.size)
        if self.current_epoch == self.starts[i] and stage.phase == "gan" and (i == 0 or self.stages[i - 1].phase != "gan"):
            for opt in self.trainer.optimizers:  # fastai's GANLearner starts with fresh optimizers
                opt.state.clear()
        self.log("train/stage", float(i), on_step=False, on_epoch=True)

    def set_lr(self, batch_idx: int) -> None:
        """lr and beta1 of both optimizers for this step of this stage."""
        stage, i = self.stage, self.stage_index()
        opt_c, opt_g = self.trainer.optimizers
        if stage.phase == "gan":
            scale, mom = 1.0, 0.0
        else:
            nb = max(1, int(self.trainer.num_training_batches))
            pos = ((self.current_epoch - self.starts[i]) * nb + batch_idx) / (stage.epochs * nb)
            scale, mom = one_cycle_at(min(pos, 1.0), 1.0, stage.pct_start, 25.0, 1e5, self.moms)
        lrs = group_lrs(stage.lr, len(self._gen_groups))
        for g in opt_g.param_groups:
            g["lr"], g["betas"] = lrs[g.get("layer_group", 0)] * scale, (mom, g["betas"][1])
        crit_lr = lrs[-1] * scale * (self.critic_lr_mult if stage.phase == "gan" else 1.0)
        for g in opt_c.param_groups:
            g["lr"], g["betas"] = crit_lr, (mom, g["betas"][1])

    # --- one batch -----------------------------------------------------------------------------------
    def critic_loss(self, x, y) -> torch.Tensor:
        with torch.no_grad():
            fake = self.model.generator(x)
        return (patch_bce(self.model.critic(y), 1.0) + patch_bce(self.model.critic(fake), 0.0)) / 2

    def generator_loss(self, x, y) -> torch.Tensor:
        fake = self.model.generator(x)
        pix = F.mse_loss(fake, y)
        if self.stage.phase == "generator":
            return pix
        adv = patch_bce(self.model.critic(fake), 1.0)
        self.log("train/gen_adv", adv.detach())
        self.log("train/gen_pix", pix.detach())
        return self.w_adv * adv + self.w_pix * pix

    def training_step(self, batch, batch_idx):
        x, y = batch
        phase = self.stage.phase
        train_critic = phase == "critic" or (phase == "gan" and not self.switcher.gen_mode)
        self.set_lr(batch_idx)
        opt_c, opt_g = self.optimizers()
        opt = opt_c if train_critic else opt_g
        # the model that does not train runs in eval mode (fastai's switch_eval): no dropout, fixed BN
        self.model.generator.train(not train_critic)
        self.model.critic.train(train_critic)
        self.toggle_optimizer(opt)
        loss = self.critic_loss(x, y) if train_critic else self.generator_loss(x, y)
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt)
        name = "critic" if train_critic else "gen"
        value = check_finite(loss, name, self.global_step)
        self.log(f"train/{name}_loss", loss.detach(), prog_bar=True)
        if phase == "gan":
            self.switcher.step(value)
        return loss.detach()

    # --- validation: PSNR / SSIM of the generator, the critic's accuracy, a grid ---------------------
    def validation_step(self, batch, batch_idx):
        from fastlight.data.restoration import RestorationBase

        x, y = batch
        fake = self.model.generator(x).float()
        real_logits, fake_logits = self.model.critic(y), self.model.critic(fake)
        acc = torch.cat([(real_logits > 0).float().flatten(), (fake_logits <= 0).float().flatten()]).mean()
        n = len(x)
        self.log("val/critic_acc", acc, batch_size=n)
        self.log("val/loss", F.mse_loss(fake, y), batch_size=n)
        pred, target = RestorationBase.denormalize(fake), RestorationBase.denormalize(y)
        self.val_metrics.update(pred, target)
        for name, metric in self.val_metrics.items():
            self.log(f"val/{name}", metric, batch_size=n, prog_bar=name == "psnr")
        if batch_idx == 0:
            k = min(self.n_grid, n)
            inp = RestorationBase.denormalize(x)
            self._grid = [(inp[i].cpu(), pred[i].cpu(), target[i].cpu()) for i in range(k)]

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        m = self.trainer.callback_metrics
        i = self.stage_index()
        self.history.append({"epoch": self.current_epoch, "stage": i, "phase": self.stages[i].phase,
                             **{k: float(m[f"val/{k}"]) for k in ("psnr", "ssim", "critic_acc") if f"val/{k}" in m}})
        if self._grid and self.trainer.global_rank == 0:
            from fastlight.interpret.media import publish_image
            from fastlight.tasks.superres import make_grid_image

            path = Path(self.trainer.default_root_dir) / "grids" / f"epoch_{self.current_epoch:03d}.png"
            publish_image(self.trainer.loggers, path, make_grid_image(self._grid), key="val/before_after_target",
                          step=self.global_step)
        self._grid = None

    def on_train_end(self):
        if self.trainer.global_rank == 0:
            run_dir = Path(self.trainer.default_root_dir)
            make_gif(sorted((run_dir / "grids").glob("epoch_*.png")), run_dir / "grids.gif")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_switcher"] = self.switcher.state_dict()
        checkpoint["gan_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "gan_switcher" in checkpoint:
            self.switcher.load_state_dict(checkpoint["gan_switcher"])
        self.history = list(checkpoint.get("gan_history", []))

    def summarize(self, run_dir: Path) -> dict:
        """PSNR/SSIM of the generator at the end of the last epoch before the first GAN stage, and at the end."""
        out: dict = {"stages": [s.__dict__ for s in self.stages], "switcher": self.switcher.state_dict(),
                     "history": self.history}
        before = [h for h in self.history if h["phase"] != "gan"]
        gan = [h for h in self.history if h["phase"] == "gan"]
        if before and gan and before[-1]["epoch"] < gan[0]["epoch"]:
            out["psnr_before_gan"], out["ssim_before_gan"] = before[-1].get("psnr"), before[-1].get("ssim")
        if gan:
            out["psnr_after_gan"], out["ssim_after_gan"] = gan[-1].get("psnr"), gan[-1].get("ssim")
        return out
