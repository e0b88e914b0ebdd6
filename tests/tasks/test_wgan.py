"""The WGAN task: switchers, Lipschitz constraints, learning planted modes, and exact resume."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from fastlight.data.wgan import Mixture2D, SyntheticBlobs
from fastlight.models.gan import dcgan, mlp_gan
from fastlight.tasks.wgan import (
    AdaptiveSwitcher,
    FixedSwitcher,
    WganTask,
    gradient_penalty,
)

OPTIM = {"name": "adam", "lr": 2e-4, "mom": 0.0, "sqr_mom": 0.99, "eps": 1e-5, "wd": 0.0}


def run_modes(switcher, losses) -> str:
    out = ""
    for loss in losses:
        out += "G" if switcher.gen_mode else "C"
        switcher.step(loss)
    return out


def test_fixed_switcher_gives_exactly_n_crit_critic_then_n_gen_generator_batches():
    assert run_modes(FixedSwitcher(5, 1), [0.0] * 13) == "CCCCCG" "CCCCCG" "C"
    assert run_modes(FixedSwitcher(2, 3), [0.0] * 10) == "CCGGG" "CCGGG"


def test_adaptive_switcher_trains_the_critic_until_its_loss_is_below_the_threshold():
    s = AdaptiveSwitcher(critic_thresh=0.65)
    # critic losses 0.9, 0.7 stay above 0.65; 0.6 switches; the generator (no threshold) runs one batch
    assert run_modes(s, [0.9, 0.7, 0.6, 5.0, 0.66, 0.1]) == "CCCGCC"
    s2 = AdaptiveSwitcher(critic_thresh=None, gen_thresh=0.5)
    assert run_modes(s2, [9.0, 0.9, 0.4, 9.0]) == "CGGC"


def test_switcher_state_round_trips():
    a = FixedSwitcher(5, 1)
    run_modes(a, [0.0] * 8)
    b = FixedSwitcher(5, 1)
    b.load_state_dict(a.state_dict())
    assert run_modes(a, [0.0] * 7) == run_modes(b, [0.0] * 7)


def test_gradient_penalty_is_exact_on_a_linear_critic():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    with torch.no_grad():  # gradient w everywhere, ||w|| = 5: penalty (5 - 1)^2 = 16
        critic[1].weight.copy_(torch.tensor([[3.0, 0.0, 4.0, 0.0]]))
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    gp = gradient_penalty(critic, real, fake, torch.rand(6))
    assert gp.item() == pytest.approx(16.0)
    gp.backward()  # the penalty trains the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(critic[1].weight.grad, 2 * 4 * torch.tensor([[3.0, 0.0, 4.0, 0.0]]) / 5)


def test_gradient_penalty_on_a_quadratic_uses_each_interpolated_point():
    class HalfSquare(nn.Module):  # f(x) = ||x||^2 / 2, gradient x
        def forward(self, x):
            return 0.5 * (x**2).sum(1, keepdim=True)

    real, fake, eps = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5)
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    expected = ((x_hat.norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(gradient_penalty(HalfSquare(), real, fake, eps), expected)


@pytest.mark.parametrize("name,mom,wd", [("adam", 0.0, 0.0), ("adamw", 0.9, 0.01)])
def test_two_optimizers_with_idle_steps_follow_fastais_one_optimizer_over_both_models(name, mom, wd):
    """fastai's GANLearner: one Adam over critic and generator, zero_grad leaves zero gradients, so
    the model sitting a batch out also steps; ours: one optimizer each plus `idle_step`."""
    pytest.importorskip("fastai")
    from fastai.optimizer import Adam as FastaiAdam

    from fastlight.tasks.wgan import build_adam, idle_step

    torch.manual_seed(0)
    crit, gen = [torch.randn(3, 4), torch.randn(5)], [torch.randn(4, 2), torch.randn(2)]
    theirs = [p.clone().requires_grad_() for p in crit + gen]
    ours_c, ours_g = [p.clone() for p in crit], [p.clone() for p in gen]
    opt = FastaiAdam(theirs, lr=2e-3, mom=mom, sqr_mom=0.99, eps=1e-5, wd=wd)
    cfg = {"name": name, "lr": 2e-3, "mom": mom, "sqr_mom": 0.99, "eps": 1e-5, "wd": wd}
    opt_c, opt_g = build_adam(ours_c, cfg), build_adam(ours_g, cfg)
    for i, turn in enumerate("CCCCCG" * 3 + "CCG"):
        active = (0, 1) if turn == "C" else (2, 3)
        grads = [torch.randn_like(p) * (1 + i) for p in theirs]
        for j in active:
            theirs[j].grad = grads[j].clone()  # fastai zeroes it in place
        opt.step()
        opt.zero_grad()  # fastai: zeroed, not None, from now on
        ours, step, idle = (ours_c, opt_c, opt_g) if turn == "C" else (ours_g, opt_g, opt_c)
        for p, j in zip(ours, active):
            p.grad = grads[j]
        step.step()
        step.zero_grad(set_to_none=True)
        idle_step(idle)
        for a, b in zip(ours_c + ours_g, theirs):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours_g[0], gen[0]) and not torch.equal(ours_c[0], crit[0])


class StepRecorder(L.Callback):
    """Which optimizer steps, and which models hold gradients at that moment."""

    def __init__(self):
        self.steps = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        critic_opt = optimizer is trainer.optimizers[0]
        has = lambda m: any(p.grad is not None for p in m.parameters())
        self.steps.append(("C" if critic_opt else "G", has(pl_module.model.critic), has(pl_module.model.generator)))


def blob_task(**kw):
    torch.manual_seed(0)
    dm = SyntheticBlobs(n_train=32 * 12, n_valid=32, size=8, batch_size=32)
    task = WganTask(dcgan(8, 1, noise_size=16, n_features=8), OPTIM, {"name": "constant"}, n_samples=4, n_quality=32, **kw)
    return dm, task


def fit(task, dm, tmp_path, callbacks=(), **kw):
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=list(callbacks), **kw)
    trainer.fit(task, datamodule=dm)
    return trainer


def test_five_critic_steps_per_generator_step_and_only_the_trained_model_has_gradients(tmp_path, one_thread):
    dm, task = blob_task()
    rec = StepRecorder()
    fit(task, dm, tmp_path, [rec], max_steps=12, limit_val_batches=0)
    assert "".join(s[0] for s in rec.steps) == "CCCCCGCCCCCG"
    for who, critic_grad, gen_grad in rec.steps:
        assert (critic_grad, gen_grad) == ((True, False) if who == "C" else (False, True))


def test_weight_clipping_keeps_every_critic_weight_within_the_clip(tmp_path, one_thread):
    dm, task = blob_task(clip=0.01)
    assert max(p.abs().max().item() for p in task.model.critic.parameters()) > 0.05  # init is wider
    fit(task, dm, tmp_path, max_steps=8, limit_val_batches=0)
    biggest = max(p.abs().max().item() for p in task.model.critic.parameters())
    assert biggest == pytest.approx(0.01)
    gen = max(p.abs().max().item() for p in task.model.generator.parameters())
    assert gen > 0.05  # the generator is not clipped


@pytest.mark.slow
def test_wgan_gp_on_a_ring_of_gaussians_covers_every_planted_mode(tmp_path, one_thread):
    torch.manual_seed(0)
    dm = Mixture2D(n_modes=8, std=0.05, n_train=128 * 60, n_valid=1024, batch_size=128)
    optim = {**OPTIM, "lr": 1e-3, "mom": 0.5, "sqr_mom": 0.9}
    task = WganTask(mlp_gan(noise_size=8, hidden=128), optim, {"name": "constant"}, penalty="gp", gp_weight=0.1,
                    n_quality=1024)
    fit(task, dm, tmp_path, max_steps=6 * 300, check_val_every_n_epoch=1000)  # 300 generator steps
    task.eval()
    with torch.no_grad():
        quality = dm.quality(task(torch.randn(1024, 8)))
    assert quality["modes"] == 8  # every mode holds at least a quarter of its fair share
    assert quality["in_mode"] > 0.3  # and samples are sharp (real data: ~0.99)


def test_a_run_resumed_from_last_ckpt_continues_exactly_as_an_uninterrupted_one(train_run, tmp_path, one_thread):
    """Kill after epoch 1 (mid-cycle: 3 batches an epoch, 6 a cycle), resume: same switcher
    position, optimizer states and weights as a run that never stopped."""
    common = ["task=wgan", "data=blobs", "data.n_train=96", "data.n_valid=32", "model.n_features=8",
              "model.noise_size=16", "task.n_samples=4", "logger=csv", "callbacks.progress_bar=null", "torch_threads=1"]
    _, straight = train_run(*common, "trainer.max_epochs=2", run_dir=tmp_path / "straight")
    _, killed = train_run(*common, "trainer.max_epochs=1", run_dir=tmp_path / "killed")
    first = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)
    assert first["gan_switcher"] == {"gen_mode": False, "count": 3}
    _, resumed = train_run(*common, "trainer.max_epochs=2", f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}",
                           run_dir=tmp_path / "resumed")
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["gan_switcher"] == b["gan_switcher"] == {"gen_mode": False, "count": 0}  # 6 batches: CCCCCG
    assert a["global_step"] == b["global_step"] == 6
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0)
    assert len(a["optimizer_states"]) == len(b["optimizer_states"]) == 2  # critic and generator
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"]):
        for pa, pb in zip(sa["state"].values(), sb["state"].values()):
            for key in pa:
                torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=0)


def test_one_switcher_config_holds_both_kinds_and_each_reads_its_own_keys():
    from fastlight.errors import ConfigError
    from fastlight.tasks.wgan import make_switcher

    cfg = {"name": "fixed", "n_crit": 2, "n_gen": 1, "critic_thresh": 0.65, "gen_thresh": None}
    assert run_modes(make_switcher(cfg), [0.9] * 6) == "CCGCCG"
    assert run_modes(make_switcher({**cfg, "name": "adaptive"}), [0.9, 0.5, 0.9, 0.9]) == "CCGC"
    with pytest.raises(ConfigError, match="task.switcher.name='both'"):
        make_switcher({**cfg, "name": "both"})


def test_fastlight_generate_draws_a_grid_from_the_run_folder_alone(train_run, tmp_path, one_thread):
    from PIL import Image

    from fastlight.cli import main

    _, run = train_run("task=wgan", "data=blobs", "data.n_train=64", "data.n_valid=32", "model.n_features=8",
                       "model.noise_size=16", "logger=csv", "callbacks.progress_bar=null", "torch_threads=1",
                       run_dir=tmp_path / "run")
    out = tmp_path / "grid.png"
    assert main(["generate", str(run), "--n", "9", "--out", str(out)]) == 0
    grid = Image.open(out)
    assert grid.size == (3 * 8 + 4 * 2, 3 * 8 + 4 * 2)  # 3 x 3 samples of 8 px, 2 px padding
    assert main(["generate", str(tmp_path), "--n", "4"]) == 2  # not a run folder: one line, exit 2
