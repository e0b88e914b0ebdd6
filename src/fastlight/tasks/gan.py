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
Each epoch logs `train/stage`, val/psnr, val/ssim, val/critic_acc, val/vgg_fid (the Fréchet distance to
the real images in the feature loss's VGG16-bn space) and a before / after / target grid; the summary
holds all three numbers before and after the GAN phase (GAN epochs also log the `*_before_gan` values,
for the comparison dashboard). As in fastai's single optimizer, the model sitting a GAN batch out takes
a zero-gradient Adam step (`idle_steps`). Checkpoints hold both optimizers and the
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
from fastlight.tasks.wgan import (
    build_adam,
    check_finite,
    idle_step,
    make_gif,
    make_switcher,
)
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
                 moms: tuple = (0.95, 0.85, 0.95), idle_steps: bool = True, vgg_fid: dict | None = None):
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
        self.idle_steps = bool(idle_steps)
        # not a submodule: the VGG is rebuilt (as the feature loss's), never saved in checkpoints
        self.vgg_fid = dict(vgg_fid) if vgg_fid else None
        self._frechet = None
        self.history: list[dict] = []  # per epoch: stage, phase, val psnr/ssim/critic_acc (kept in checkpoints)
        self.gan_steps = {"critic": 0, "generator": 0}  # GAN-phase steps of each: did the switcher hand over?
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
        if phase == "gan" and self.idle_steps:  # fastai's one optimizer over both (see wgan.idle_step)
            idle_step((opt_g if train_critic else opt_c).optimizer)
        name = "critic" if train_critic else "gen"
        value = check_finite(loss, name, self.global_step)
        self.log(f"train/{name}_loss", loss.detach(), prog_bar=True)
        if phase == "gan":
            self.gan_steps["critic" if train_critic else "generator"] += 1
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
        if self.frechet is not None:
            self.frechet.update(fake, y)  # ImageNet-normalised, as the feature loss feeds its VGG
        pred, target = RestorationBase.denormalize(fake), RestorationBase.denormalize(y)
        self.val_metrics.update(pred, target)
        for name, metric in self.val_metrics.items():
            self.log(f"val/{name}", metric, batch_size=n, prog_bar=name == "psnr")
        if batch_idx == 0:
            k = min(self.n_grid, n)
            inp = RestorationBase.denormalize(x)
            self._grid = [(inp[i].cpu(), pred[i].cpu(), target[i].cpu()) for i in range(k)]

    @property
    def frechet(self):
        if self.vgg_fid is not None and self._frechet is None:
            from fastlight.interpret.gan_quality import VggFrechet

            self._frechet = VggFrechet(**self.vgg_fid)
        return self._frechet

    def on_validation_epoch_start(self):
        if self.frechet is not None:
            self.frechet.reset()

    def vgg_fid_value(self) -> float | None:
        if self.frechet is None or not self.frechet.fake:
            return None
        if self.trainer.world_size > 1:  # every rank's images (DistributedSampler: equal counts)
            for name in ("fake", "real"):
                feats = self.all_gather(torch.cat(getattr(self.frechet, name)).to(self.device))
                setattr(self.frechet, name, [feats.flatten(0, 1).double().cpu()])
        return self.frechet.compute()

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        fid = self.vgg_fid_value()
        m = self.trainer.callback_metrics
        i = self.stage_index()
        entry = {"epoch": self.current_epoch, "stage": i, "phase": self.stages[i].phase,
                 **{k: float(m[f"val/{k}"]) for k in ("psnr", "ssim", "critic_acc") if f"val/{k}" in m}}
        if fid is not None:
            entry["vgg_fid"] = fid
            self.log("val/vgg_fid", fid)
        before = self.before_gan()
        if entry["phase"] == "gan" and before:  # next to this epoch's numbers on the dashboard
            for k in ("psnr", "ssim", "vgg_fid"):
                if before.get(k) is not None:
                    self.log(f"val/{k}_before_gan", float(before[k]))
        self.history.append(entry)
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
        checkpoint["gan_steps"] = dict(self.gan_steps)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "gan_switcher" in checkpoint:
            self.switcher.load_state_dict(checkpoint["gan_switcher"])
        self.history = list(checkpoint.get("gan_history", []))
        self.gan_steps = dict(checkpoint.get("gan_steps", self.gan_steps))

    def before_gan(self) -> dict | None:
        """The generator's numbers just before the first GAN epoch: the last pretraining epoch, or
        (a GAN phase started from an earlier run's generator) the `loaded` evaluation."""
        gan = [h for h in self.history if h["phase"] == "gan"]
        first = gan[0]["epoch"] if gan else self.current_epoch
        before = [h for h in self.history if h["phase"] != "gan" and h["epoch"] < first]
        return before[-1] if before else None

    def on_train_start(self):
        # A run that opens with the GAN phase has no pretraining epoch to compare with: measure the
        # loaded generator once (kept in the history, so a resumed run does not measure it again).
        if self.stages[0].phase == "gan" and not self.history and self.trainer.datamodule is not None:
            self.history.append({"epoch": -1, "stage": -1, "phase": "loaded", **self.evaluate_generator()})

    @torch.no_grad()
    def evaluate_generator(self) -> dict:
        """PSNR, SSIM (and the VGG Fréchet distance) of the generator on the validation images."""
        from fastlight.data.restoration import RestorationBase
        from fastlight.tasks.superres import image_metrics

        dm, was_training = self.trainer.datamodule, self.training
        metrics = image_metrics().to(self.device)
        if self.frechet is not None:
            self.frechet.reset()
        self.eval()
        for batch in dm.val_dataloader():  # every rank sees every image: no gathering needed
            x, y = dm.on_after_batch_transfer([t.to(self.device) for t in batch], 0)
            fake = self.model.generator(x).float()
            if self.frechet is not None:
                self.frechet.update(fake, y)
            metrics.update(RestorationBase.denormalize(fake), RestorationBase.denormalize(y))
        self.train(was_training)
        out = {k: float(v) for k, v in metrics.compute().items()}
        fid = self.frechet.compute() if self.frechet is not None else None
        return {**out, "vgg_fid": fid} if fid is not None else out

    def summarize(self, run_dir: Path) -> dict:
        """PSNR/SSIM/VGG Fréchet distance of the generator just before the first GAN stage and at the end."""
        out: dict = {"stages": [s.__dict__ for s in self.stages], "switcher": self.switcher.state_dict(),
                     "gan_steps": dict(self.gan_steps), "history": self.history}
        gan = [h for h in self.history if h["phase"] == "gan"]
        before = self.before_gan()
        for when, h in (("before", before if gan else None), ("after", gan[-1] if gan else None)):
            for k in ("psnr", "ssim", "vgg_fid"):
                if h is not None and h.get(k) is not None:
                    out[f"{k}_{when}_gan"] = h[k]
        if self.vgg_fid is not None:
            out["vgg_fid_features"] = ("pretrained" if self.frechet.pretrained else "untrained (random, seed 0)") + \
                " vgg16_bn, as the feature loss builds it"
        return out
