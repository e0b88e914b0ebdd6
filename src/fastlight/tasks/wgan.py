"""Wasserstein GAN, lesson7-wgan: a DCGAN generator from noise against a critic, no labels at all.

The critic scores images (no sigmoid): it learns to give real images low scores and generated ones
high scores, critic loss = mean C(real) - mean C(fake); the generator learns to lower the scores of
its samples, generator loss = mean C(fake). For the critic's score gap to estimate the Wasserstein
distance the critic must be 1-Lipschitz: the lesson clips every critic weight to +-0.01 after each
step (`penalty: clip`); `penalty: gp` adds WGAN-GP's gradient penalty instead,
10 * (||grad C(x_hat)|| - 1)^2 at random points between real and fake images. The critic trains
5 batches for each generator batch (a `FixedSwitcher`), both with Adam betas (0, 0.99) at a
constant lr 2e-4. As in fastai's one optimizer for both models, the model that sits a batch out
takes a zero-gradient Adam step (`idle_steps`, see `idle_step`).

Lightning's manual optimization holds the two optimizers (critic first, then generator); every
batch is one optimizer step of one of them, so `global_step` counts both. The switcher's position
is saved in checkpoints, and the noise of each step is drawn from a generator seeded by the step
number, so a run resumed from last.ckpt continues exactly as an uninterrupted one. Each epoch
saves a grid of samples from one fixed noise batch (and the data's quality numbers, e.g. `val/fid`
for MNIST); at the end the grids become `samples.gif` in the run folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from torch import nn

from fastlight.errors import ConfigError, NonFiniteLossError


# --- switchers: which model trains on the next batch ---------------------------------------------
class FixedSwitcher:
    """`n_crit` critic batches, then `n_gen` generator batches, and again (fastai's FixedGANSwitcher)."""

    def __init__(self, n_crit: int = 5, n_gen: int = 1):
        if n_crit < 1 or n_gen < 1:
            raise ConfigError(f"task.switcher: n_crit={n_crit} and n_gen={n_gen} must both be >= 1")
        self.n_crit, self.n_gen = int(n_crit), int(n_gen)
        self.gen_mode, self.count = False, 0  # the critic goes first

    @property
    def mode(self) -> str:
        return "generator" if self.gen_mode else "critic"

    def step(self, loss: float | None = None) -> None:
        """After one batch of the current mode."""
        self.count += 1
        if self.count >= (self.n_gen if self.gen_mode else self.n_crit):
            self.gen_mode, self.count = not self.gen_mode, 0

    def state_dict(self) -> dict:
        return {"gen_mode": self.gen_mode, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.gen_mode, self.count = bool(state["gen_mode"]), int(state["count"])


class AdaptiveSwitcher(FixedSwitcher):
    """Keep training one model until its batch loss is below its threshold (None: switch after
    every batch), fastai's AdaptiveGANSwitcher; the lesson trains the critic until loss < 0.65."""

    def __init__(self, critic_thresh: float | None = 0.65, gen_thresh: float | None = None):
        super().__init__()
        self.critic_thresh, self.gen_thresh = critic_thresh, gen_thresh

    def step(self, loss: float | None = None) -> None:
        self.count += 1
        thresh = self.gen_thresh if self.gen_mode else self.critic_thresh
        if thresh is None or (loss is not None and loss < thresh):
            self.gen_mode, self.count = not self.gen_mode, 0


def make_switcher(cfg: dict | None) -> FixedSwitcher:
    """From `{name, n_crit, n_gen, critic_thresh, gen_thresh}`: each kind reads its own keys, so the
    config keeps all of them and `task.switcher.name=adaptive` is one override."""
    cfg = dict(cfg or {"name": "fixed"})
    name = cfg.get("name", "fixed")
    if name == "fixed":
        return FixedSwitcher(int(cfg.get("n_crit", 5)), int(cfg.get("n_gen", 1)))
    if name == "adaptive":
        return AdaptiveSwitcher(cfg.get("critic_thresh", 0.65), cfg.get("gen_thresh"))
    raise ConfigError(f"task.switcher.name={name!r} must be fixed or adaptive")


# --- Lipschitz constraints ------------------------------------------------------------------------
@torch.no_grad()
def clip_weights(module: nn.Module, clip: float) -> None:
    for p in module.parameters():
        p.clamp_(-clip, clip)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: mean (||d critic / d x_hat|| - 1)^2 at x_hat = eps * real + (1 - eps) * fake.

    `eps` is one weight per sample (shape (bs,)); the graph is kept so the penalty trains the critic.
    """
    eps = eps.view(-1, *([1] * (real.dim() - 1))).to(real)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def build_adam(params, optim: dict, lr_mult: float = 1.0) -> torch.optim.Optimizer:
    """Adam from the optim config: betas (mom, sqr_mom); adamw: decoupled weight decay (fastai's)."""
    name, lr, wd = optim.get("name", "adam"), optim["lr"], float(optim.get("wd", 0.0))
    lr = float(lr if isinstance(lr, (int, float)) else list(lr)[-1]) * lr_mult  # [hi] / [lo, hi]: hi
    kw = {"lr": lr, "betas": (float(optim.get("mom", 0.0)), float(optim.get("sqr_mom", 0.99))),
          "eps": float(optim.get("eps", 1e-5)), "weight_decay": wd,
          "fused": bool(optim.get("fused", False))}  # torch's fused kernel: the same update, fewer ops
    if name == "adamw":
        return torch.optim.AdamW(params, **kw)
    if name == "adam":
        return torch.optim.Adam(params, **kw)
    raise ConfigError(f"optim={name}: the GAN tasks train with optim=adam or optim=adamw")


@torch.no_grad()
def idle_step(opt: torch.optim.Optimizer) -> None:
    """The zero-gradient Adam step fastai's GANLearner gives the model that sits a batch out.

    fastai holds ONE optimizer over both models, and its zero_grad leaves zero gradients (not None)
    behind, so every batch is also an optimizer step for the model that does not train: its
    gradient average decays by mom, its squared-gradient average by sqr_mom, its step count grows
    and decoupled weight decay applies; with mom 0 (the GANs' Adam) its weights stay put. In the
    WGAN (5 critic batches per generator batch) that makes the generator's Adam steps about twice
    as large as a separate Adam's. Only parameters that have stepped before take part (fastai's
    gradient is None until a parameter's first backward). Written out on torch's Adam/AdamW state
    (a zero-gradient `opt.step()` does the same, several times slower), outside Lightning: not a
    training step."""
    for group in opt.param_groups:
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        decoupled = isinstance(opt, torch.optim.AdamW)
        for p in group["params"]:
            state = opt.state.get(p)
            if not state:
                continue
            state["step"] += 1
            if decoupled and wd:
                p.mul_(1 - lr * wd)
            if beta1:
                exp_avg = state["exp_avg"].mul_(beta1)
                step = float(state["step"])
                denom = (state["exp_avg_sq"].mul_(beta2) / (1 - beta2**step)).sqrt_().add_(eps)
                p.addcdiv_(exp_avg, denom, value=-lr / (1 - beta1**step))
            else:  # the step is 0; exp_avg (the last gradient) is never read with beta1 = 0
                state["exp_avg_sq"].mul_(beta2)


def check_finite(loss: torch.Tensor, what: str, step: int) -> float:
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the {what} loss became {value} at step {step}; try a lower learning rate (optim.lr). "
            "Checkpoints and records written before this step are kept."
        )
    return value


# --- sample grids and the GIF ---------------------------------------------------------------------
def image_grid(images: torch.Tensor, nrow: int = 8):
    """Images in [-1, 1] (n, c, h, w) -> an HxWxC uint8 array (grey images keep one channel)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1)
    array = (grid * 255).round().byte().permute(1, 2, 0).numpy()
    return array[..., 0] if images.shape[1] == 1 else array


def make_gif(frames: list[Path], path: Path, ms_per_frame: int = 400) -> Path | None:
    from PIL import Image

    if not frames:
        return None
    images = [Image.open(f).convert("RGB") for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


def publish_samples(task: L.LightningModule, samples: torch.Tensor, real: torch.Tensor | None = None) -> None:
    """This epoch's samples -> <run>/samples/epoch_NNN.png and W&B key `samples` (rank zero only)."""
    from fastlight.interpret.media import publish_figure, publish_image

    if task.trainer.global_rank != 0:
        return
    path = Path(task.trainer.default_root_dir) / "samples" / f"epoch_{task.current_epoch:03d}.png"
    if samples.dim() == 4:
        publish_image(task.trainer.loggers, path, image_grid(samples), key="samples", step=task.global_step)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    if real is not None:
        ax.scatter(*real[:, :2].cpu().T, s=2, c="tab:blue", alpha=0.3, label="real")
    ax.scatter(*samples[:, :2].cpu().T, s=2, c="tab:red", alpha=0.5, label="generated")
    ax.set_title(f"epoch {task.current_epoch}")
    ax.set_xlim(-1.6, 1.6), ax.set_ylim(-1.6, 1.6), ax.legend(loc="upper right", fontsize=7)
    publish_figure(task.trainer.loggers, path, fig, key="samples", step=task.global_step)
    plt.close(fig)


class WganTask(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        optim: dict,
        schedule: dict,
        penalty: str = "clip",
        clip: float = 0.01,
        gp_weight: float = 10.0,
        switcher: dict | None = None,
        critic_lr_mult: float = 1.0,
        idle_steps: bool = True,
        n_samples: int = 64,
        n_quality: int = 1000,
        noise_seed: int = 0,
    ):
        super().__init__()
        self.automatic_optimization = False  # two optimizers take turns: Lightning's manual optimization
        if penalty not in ("clip", "gp"):
            raise ConfigError(f"task.penalty={penalty!r} must be clip (the lesson's weight clipping) or gp")
        if dict(schedule).get("name", "constant") != "constant":
            raise ConfigError("the WGAN trains at a constant learning rate: use schedule=constant")
        self.model, self.optim = model, dict(optim)
        self.penalty, self.clip, self.gp_weight = penalty, float(clip), float(gp_weight)
        self.switcher = make_switcher(switcher)
        self.critic_lr_mult, self.n_quality, self.noise_seed = float(critic_lr_mult), int(n_quality), int(noise_seed)
        self.idle_steps = bool(idle_steps)
        g = torch.Generator().manual_seed(noise_seed)
        # Buffers: saved in checkpoints, so a resumed run and `fastlight generate` draw the same grid.
        self.register_buffer("fixed_noise", torch.randn(n_samples, model.noise_size, generator=g))
        self.register_buffer("quality_noise", torch.randn(self.n_quality, model.noise_size, generator=g))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.model.generator(noise)

    def configure_optimizers(self):
        opt_c = build_adam(self.model.critic.parameters(), self.optim, self.critic_lr_mult)
        opt_g = build_adam(self.model.generator.parameters(), self.optim)
        return [opt_c, opt_g]

    def noise(self, n: int, salt: int = 0) -> torch.Tensor:
        # Seeded by the step (and rank): a resumed run draws exactly the noise it would have drawn.
        key = (self.noise_seed * 1_000_003 + self.global_step) * 64 + self.global_rank * 8 + salt
        g = torch.Generator().manual_seed(key)
        return torch.randn(n, self.model.noise_size, generator=g).to(self.device)

    # --- one batch: one optimizer step of the critic or the generator ------------------------------
    def critic_loss(self, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            fake = self.model.generator(self.noise(len(real)))
        loss = self.model.critic(real).mean() - self.model.critic(fake).mean()
        if self.penalty == "gp":
            g = torch.Generator().manual_seed(self.noise_seed * 7919 + self.global_step)
            gp = gradient_penalty(self.model.critic, real, fake, torch.rand(len(real), generator=g))
            self.log("train/gp", gp)
            loss = loss + self.gp_weight * gp
        return loss

    def generator_loss(self, real: torch.Tensor) -> torch.Tensor:
        return self.model.critic(self.model.generator(self.noise(len(real), salt=1))).mean()

    def training_step(self, batch, batch_idx):
        real = batch
        opt_c, opt_g = self.optimizers()
        critic_turn = not self.switcher.gen_mode
        opt = opt_c if critic_turn else opt_g
        if self.penalty == "clip":
            # fastai clamps before every batch: the critic's first step already sees clipped
            # weights (its kaiming init would give Adam a first squared gradient far above later ones)
            clip_weights(self.model.critic, self.clip)
        self.toggle_optimizer(opt)  # requires_grad only on the model that trains now
        loss = self.critic_loss(real) if critic_turn else self.generator_loss(real)
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)  # gradients live only between backward and step
        if critic_turn and self.penalty == "clip":
            clip_weights(self.model.critic, self.clip)  # and every weight stays within the clip at rest
        self.untoggle_optimizer(opt)
        if self.idle_steps:
            idle_step((opt_g if critic_turn else opt_c).optimizer)
        name = "critic" if critic_turn else "gen"
        value = check_finite(loss, name, self.global_step)
        self.log(f"train/{name}_loss", loss.detach(), prog_bar=True)
        self.switcher.step(value)
        return loss.detach()

    # --- validation: the critic's gap on held-out images, the data's quality numbers, the grid -----
    def validation_step(self, batch, batch_idx):
        real = batch
        g = torch.Generator().manual_seed(10_007 + batch_idx)
        fake = self.model.generator(torch.randn(len(real), self.model.noise_size, generator=g).to(self.device))
        # The critic's estimate of the Wasserstein distance (>= 0 when it separates the two)
        gap = self.model.critic(fake).mean() - self.model.critic(real).mean()
        self.log("val/wdist", gap, batch_size=len(real), prog_bar=True)

    @torch.no_grad()
    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        dm = self.trainer.datamodule
        samples = torch.cat([self(z) for z in self.quality_noise.split(500)])
        for k, v in dm.quality(samples).items():
            self.log(f"val/{k}", float(v), prog_bar=k in ("fid", "modes"))
        for k, v in dm.reference_quality().items():
            self.log(f"val/real_{k}", float(v))
        shown = self(self.fixed_noise) if samples.dim() == 4 else samples
        publish_samples(self, shown, dm.valid if samples.dim() == 2 else None)

    def on_train_end(self):
        if self.trainer.global_rank == 0:
            run_dir = Path(self.trainer.default_root_dir)
            make_gif(sorted((run_dir / "samples").glob("epoch_*.png")), run_dir / "samples.gif")

    # --- checkpoints hold the switcher's position (the optimizers Lightning saves itself) ----------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_switcher"] = self.switcher.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "gan_switcher" in checkpoint:
            self.switcher.load_state_dict(checkpoint["gan_switcher"])

    def summarize(self, run_dir: Path) -> dict:
        out = {"switcher": self.switcher.state_dict(), "gif": str(Path(run_dir) / "samples.gif")}
        dm = self.trainer.datamodule
        ref = dm.reference_quality() if dm is not None else {}
        if ref:
            out["quality_reference"] = ref
        return out


def generate(run_dir: str | Path, n: int = 64, out: str | Path | None = None, seed: int = 0,
             ckpt: str = "last") -> Path:
    """`fastlight generate <wgan run>`: a grid of `n` samples from fresh noise -> `out` (png)."""
    from PIL import Image

    from fastlight.runs import load_run

    _, _, task = load_run(run_dir, ckpt=ckpt, setup_data=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        samples = task(torch.randn(n, task.model.noise_size, generator=g))
    if samples.dim() != 4:
        raise ConfigError(f"{run_dir} generates points, not images; generate draws image grids")
    out = Path(out or Path(run_dir) / "generated.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(samples, nrow=max(1, round(n**0.5)))).save(out)
    return out


def generate_command(args) -> Path:
    """`fastlight generate` for wgan runs (see fastlight.cli.generate)."""
    return generate(args.run_dir, n=args.n, out=args.out, seed=args.seed, ckpt=args.ckpt)
