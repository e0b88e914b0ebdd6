"""The super-resolution GAN task: its stages, its switcher, and a resume in the middle of the GAN phase."""

from __future__ import annotations

import typing

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from fastlight.data.restoration import SyntheticRestorationData
from fastlight.errors import ConfigError
from fastlight.models.gan import unet_gan
from fastlight.tasks.gan import GanTask, parse_gan_stages, patch_bce

OPTIM = {"name": "adamw", "lr": 1e-4, "mom": 0.0, "sqr_mom": 0.99, "eps": 1e-5, "wd": 1e-3}


def tiny_task(stages, switcher=None, seed=0):
    torch.manual_seed(seed)

    def conv(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1), nn.ReLU())

    encoder = nn.Sequential(conv(3, 8, 1), conv(8, 16, 2), conv(16, 16, 1), conv(16, 32, 2), conv(32, 32, 1))
    model = unet_gan(encoder=encoder, img_size=32, critic_nf=8, critic_blocks=2, pretrained=False)
    dm = SyntheticRestorationData(n_train=32, n_valid=8, size=32, batch_size=8, seed=seed)
    return dm, GanTask(model, OPTIM, {"name": "constant"}, stages, switcher=switcher, n_grid=2)


class Steps(L.Callback):
    def __init__(self):
        self.seq = ""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.seq += "C" if optimizer is trainer.optimizers[0] else "G"


class KillAt(L.Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("killed")


def trainer_for(tmp_path, callbacks, **kw):
    return L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, callbacks=callbacks, **kw)


def test_the_lessons_stages_run_in_order_with_the_switcher_in_the_gan_phase(tmp_path, one_thread):
    stages = [{"phase": "generator", "epochs": 1, "lr": 1e-3}, {"phase": "critic", "epochs": 1, "lr": 1e-3},
              {"phase": "gan", "epochs": 2, "lr": 1e-4}]
    dm, task = tiny_task(stages, {"name": "fixed", "n_crit": 2, "n_gen": 1})
    gen_before = {k: v.clone() for k, v in task.model.generator.state_dict().items()}
    steps = Steps()
    critic_stage = []

    class GenUnchangedInCriticStage(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                critic_stage.append({k: v.clone() for k, v in pl_module.model.generator.state_dict().items()})
            if trainer.current_epoch == 1:
                after = pl_module.model.generator.state_dict()
                critic_stage.append(all(torch.equal(after[k], v) for k, v in critic_stage[0].items()))

    trainer = trainer_for(tmp_path, [steps, GenUnchangedInCriticStage()], enable_checkpointing=False)
    trainer.fit(task, datamodule=dm)
    assert trainer.current_epoch == 4  # the stages' epochs are the run's
    assert steps.seq == "GGGG" "CCCC" "CCGC" "CGCC"  # 4 batches an epoch; fixed(2, 1) carries over epochs
    assert critic_stage[1] is True  # the critic stage leaves the generator alone
    changed = [k for k, v in task.model.generator.state_dict().items() if not torch.equal(v, gen_before[k])]
    assert changed
    assert [h["phase"] for h in task.history] == ["generator", "critic", "gan", "gan"]
    summary = task.summarize(tmp_path)
    assert summary["psnr_before_gan"] == task.history[1]["psnr"] and summary["psnr_after_gan"] == task.history[3]["psnr"]
    assert summary["gan_steps"] == {"critic": 6, "generator": 2}


def test_critic_loss_is_the_mean_of_real_vs_one_and_fake_vs_zero_over_every_patch():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    expected = nn.BCEWithLogitsLoss()(logits, torch.ones(2, 2))
    torch.testing.assert_close(patch_bce(logits, 1.0), expected)


def test_bad_stages_say_what_is_wrong():
    with pytest.raises(ConfigError, match="phase='gen'"):
        parse_gan_stages([{"phase": "gen", "epochs": 1, "lr": 1e-3}])
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_gan_stages([{"phase": "gan", "epochs": 1, "lr": 1e-3, "lrs": 2}])


def test_killed_in_the_gan_phase_a_run_resumes_at_the_same_switcher_position_and_optimizer_states(tmp_path, one_thread):
    stages = [{"phase": "generator", "epochs": 1, "lr": 1e-3}, {"phase": "critic", "epochs": 1, "lr": 1e-3},
              {"phase": "gan", "epochs": 3, "lr": 1e-4}]
    switcher = {"name": "fixed", "n_crit": 3, "n_gen": 2}
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", save_top_k=1, enable_version_counter=False)
    dm, task = tiny_task(stages, switcher)
    with pytest.raises(RuntimeError, match="killed"):
        trainer_for(tmp_path, [ckpt, KillAt(3)]).fit(task, datamodule=dm)  # after GAN epoch 1 of 3
    at_kill = task.switcher.state_dict()
    assert at_kill == {"gen_mode": True, "count": 1}  # 4 GAN batches, CCCG: mid-way through the generator's turn
    opt_states = [{k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()}
                  for opt in task.trainer.optimizers]

    dm2, task2 = tiny_task(stages, switcher, seed=1)  # different initial weights: everything must come from the ckpt
    seen = {}

    class Capture(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            seen["epoch"] = trainer.current_epoch
            seen["switcher"] = pl_module.switcher.state_dict()
            seen["opt"] = [opt.state_dict()["state"] for opt in trainer.optimizers]
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        trainer_for(tmp_path, [Capture()], enable_checkpointing=False).fit(
            task2, datamodule=dm2, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert seen["epoch"] == 3 and seen["switcher"] == at_kill
    for before, after in zip(opt_states, seen["opt"]):
        assert before.keys() == after.keys() and before
        for k in before:
            for name in before[k]:
                torch.testing.assert_close(after[k][name], before[k][name], rtol=0, atol=0)
    for k, v in task.state_dict().items():
        torch.testing.assert_close(task2.state_dict()[k], v, rtol=0, atol=0)


class FirstStep(L.Callback):
    """What a run's task holds when training starts (kept on the class: Hydra builds the instance)."""

    seen: typing.ClassVar[dict] = {}

    def on_train_start(self, trainer, pl_module):
        FirstStep.seen = {"stages": [s.phase for s in pl_module.stages],
                          "state": {k: v.clone() for k, v in pl_module.state_dict().items()}}


@pytest.mark.slow
def test_a_gan_phase_can_start_from_an_earlier_runs_generator_and_critic(train_run, tmp_path, one_thread):
    common = ["task=gan", "data=synthetic", "model=tiny", "data.n_train=16", "data.n_valid=8", "data.batch_size=8",
              "logger=csv", "callbacks.progress_bar=null", "torch_threads=1"]
    _, pre = train_run(*common, "task.stages=[{phase:generator,epochs:1,lr:1e-3},{phase:critic,epochs:1,lr:1e-3}]",
                       run_dir=tmp_path / "pretrain")
    pre_ckpt = torch.load(pre / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    FirstStep.seen = {}
    probe = ["+callbacks.probe._target_=tests.tasks.test_gan.FirstStep"]
    train_run(*common, *probe, f"task.generator={pre}", f"task.critic={pre}",
              "task.stages=[{phase:generator,epochs:1,lr:1e-3},{phase:critic,epochs:1,lr:1e-3},"
              "{phase:gan,epochs:1,lr:1e-4}]", run_dir=tmp_path / "gan")
    seen = FirstStep.seen
    assert seen["stages"] == ["gan"]
    for k, v in pre_ckpt.items():
        if k.startswith("model."):
            torch.testing.assert_close(seen["state"][k], v, rtol=0, atol=0)


def test_a_gan_phase_from_a_loaded_generator_reports_its_numbers_before_and_after(tmp_path, one_thread):
    dm, task = tiny_task([{"phase": "gan", "epochs": 1, "lr": 1e-4}], {"name": "fixed", "n_crit": 1, "n_gen": 1})
    task.vgg_fid = {"pretrained": False}  # the feature loss's untrained VGG16-bn
    trainer_for(tmp_path, [], enable_checkpointing=False).fit(task, datamodule=dm)
    loaded, gan = task.history
    assert loaded["phase"] == "loaded" and gan["phase"] == "gan"
    summary = task.summarize(tmp_path)
    for k in ("psnr", "ssim", "vgg_fid"):
        assert summary[f"{k}_before_gan"] == loaded[k] and summary[f"{k}_after_gan"] == gan[k]
    assert summary["vgg_fid_before_gan"] != summary["vgg_fid_after_gan"]  # the generator trained
    assert "untrained" in summary["vgg_fid_features"]
    assert task.trainer.callback_metrics["val/psnr_before_gan"] == pytest.approx(loaded["psnr"])


def test_vgg_frechet_distance_is_zero_for_the_same_images_and_grows_with_a_difference():
    from fastlight.interpret.gan_quality import VggFrechet

    torch.manual_seed(0)
    real = torch.randn(16, 3, 16, 16)
    fd = VggFrechet(pretrained=False, layer=22)  # a shallower layer (256-d) keeps the test quick
    fd.update(real, real)
    assert fd.compute() == pytest.approx(0.0, abs=1e-6)
    fd.reset()
    fd.update(real + 0.3 * torch.randn_like(real), real)
    small = fd.compute()
    fd.reset()
    fd.update(real + 1.0 * torch.randn_like(real), real)
    assert 0 < small < fd.compute()


def test_a_pretrained_critic_tells_fakes_from_real_so_the_adaptive_switcher_hands_over(tmp_path, one_thread):
    stages = [{"phase": "generator", "epochs": 2, "lr": 1e-3}, {"phase": "critic", "epochs": 6, "lr": 1e-3},
              {"phase": "gan", "epochs": 2, "lr": 1e-4}]
    dm, task = tiny_task(stages, {"name": "adaptive", "critic_thresh": 0.65})
    losses = []

    class CriticLosses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.stage.phase == "critic":
                losses.append(float(outputs["loss"]))

    trainer_for(tmp_path, [CriticLosses()], enable_checkpointing=False).fit(task, datamodule=dm)
    assert losses[0] > 0.65 > sum(losses[-4:]) / 4  # from chance (ln 2) to below the switcher's threshold
    assert task.gan_steps["generator"] >= 2  # so the GAN phase trains the generator too
