"""Layer groups as fastai has them: per-group learning rates, freeze/unfreeze with train_bn, and
staged training (fine_tune, explicit stages) inside one Lightning fit."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fastlight.errors import ConfigError
from fastlight.models.vision import VisionModel, create_head
from fastlight.tasks.base import Task
from fastlight.training.finetune import Stage, StagedTraining, fine_tune, parse_stages
from fastlight.training.layer_groups import freeze, freeze_to, group_lrs, param_groups, set_lrs, unfreeze
from fastlight.training.optimizers import OPTIMIZERS, build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


# --- per-group learning rates ------------------------------------------------------------------------
EXPECTED = {  # fastai's Optimizer.set_hyper: a number, slice(hi), slice(lo, hi)
    (3, 1e-3): [1e-3, 1e-3, 1e-3],
    (3, (1e-3,)): [1e-4, 1e-4, 1e-3],
    (3, (1e-6, 1e-4)): [1e-6, 1e-5, 1e-4],
    (5, 1e-3): [1e-3] * 5,
    (5, (1e-3,)): [1e-4, 1e-4, 1e-4, 1e-4, 1e-3],
    (5, (1e-5, 1e-1)): [1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
    (5, (1e-2 / 2.6**4, 1e-2)): [1e-2 / 2.6**k for k in (4, 3, 2, 1, 0)],  # ULMFiT's ratio 2.6 per group
}


@pytest.mark.parametrize(("n", "lr"), list(EXPECTED))
def test_group_lrs_are_fastais(n, lr):
    spelled = list(lr) if isinstance(lr, tuple) else lr  # the config spelling: 1e-3, [1e-3], [lo, hi]
    assert group_lrs(spelled, n) == pytest.approx(EXPECTED[(n, lr)], rel=1e-12)


def test_group_lrs_equal_fastai_itself():
    fastai_optimizer = pytest.importorskip("fastai.optimizer")
    for (n, lr), _ in EXPECTED.items():
        params = [[nn.Parameter(torch.zeros(1))] for _ in range(n)]
        opt = fastai_optimizer.Optimizer(params, [fastai_optimizer.sgd_step], lr=1.0)
        opt.set_hyper("lr", slice(*lr) if isinstance(lr, tuple) else lr)
        spelled = list(lr) if isinstance(lr, tuple) else lr
        assert group_lrs(spelled, n) == pytest.approx([h["lr"] for h in opt.hypers], rel=1e-12)


@pytest.mark.parametrize("bad", [[1e-3, 1e-2, 1e-1], [0.0], -1e-3])
def test_bad_lr_spelling_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        group_lrs(bad, 3)


# --- a tiny model with a ResNet's layout: 8 body children split at 6, then fastai's head ------------
def tiny_model(n_out: int = 4, ps: float = 0.5) -> VisionModel:
    def block(i, o, s):
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Identity(),
                         block(8, 8, 1), block(8, 16, 2), block(16, 16, 2), block(16, 32, 1))
    return VisionModel(body, create_head(32, n_out, lin_ftrs=[16], ps=ps))


def batch(n=16, n_out=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, n_out, (n,), generator=g)


def test_param_groups_follow_layer_groups_and_spare_bn_and_bias_from_weight_decay():
    model = tiny_model()
    groups = param_groups(model.layer_groups(), [1e-5, 1e-3], wd=0.1)
    assert [g["name"] for g in groups] == ["group0", "group0-no_wd", "group1", "group1-no_wd", "group2", "group2-no_wd"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-5, 1e-5, 1e-4, 1e-4, 1e-3, 1e-3])
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    for g in groups:
        assert (g["weight_decay"] == 0.0) == g["name"].endswith("no_wd")
        if g["weight_decay"]:
            assert not any(id(p) in bn_params for p in g["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 0.1 for g in param_groups(model.layer_groups(), 1e-3, 0.1, wd_bn_bias=True))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def kinds(model):
    """Parameter names by where they are: frozen-body weights, body BN params, head params."""
    bns = [name for name, m in model[0].named_modules() if isinstance(m, nn.BatchNorm2d)]
    body_bn = {f"0.{name}.{p}" for name in bns for p in ("weight", "bias")}
    names = [n for n, _ in model.named_parameters()]
    frozen = [n for n in names if n.startswith("0.") and n not in body_bn]
    return frozen, sorted(body_bn), [n for n in names if n.startswith("1.")]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_after_freeze_only_bn_and_the_head_change_even_with_weight_decay(name):
    torch.manual_seed(0)
    model = tiny_model()
    opt = build_optimizer(name, param_groups(model.layer_groups(), 1e-2, wd=0.5, wd_bn_bias=True), lr=1e-2, wd=0.5)
    freeze(model.layer_groups())
    before = snapshot(model)
    for seed in range(2):
        x, y = batch(seed=seed)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    after = snapshot(model)
    frozen, body_bn, head = kinds(model)
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in body_bn)  # train_bn: BN keeps training
    assert all(not torch.equal(before[n], after[n]) for n in head)


def test_train_bn_false_freezes_bn_too_and_unfreeze_trains_everything():
    model = tiny_model()
    freeze(model.layer_groups(), train_bn=False)
    frozen, body_bn, head = kinds(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(head)
    unfreeze(model.layer_groups())
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_to_n_freezes_the_groups_before_n():
    model = tiny_model()
    groups = model.layer_groups()
    conv = {i: next(m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.Linear))) for i, g in enumerate(groups)}
    for n, frozen in [(1, {0}), (-2, {0}), (2, {0, 1}), (-1, {0, 1}), (0, set())]:
        freeze_to(groups, n)
        assert {i for i, m in conv.items() if not m.weight.requires_grad} == frozen
    with pytest.raises(ConfigError, match="freeze_to=3"):
        freeze_to(groups, 3)


def test_set_lrs_gives_each_layer_group_its_lr():
    model = tiny_model()
    opt = torch.optim.AdamW(param_groups(model.layer_groups(), 1.0, wd=0.01))
    set_lrs(opt, [1e-6, 1e-4])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-6, 1e-6, 1e-5, 1e-5, 1e-4, 1e-4])


# --- stages -----------------------------------------------------------------------------------------
def test_fine_tune_is_fastais_two_stages():
    frozen, unfrozen = fine_tune(epochs=2, base_lr=3e-3)
    assert frozen == Stage(1, (3e-3,), freeze_to=-1, pct_start=0.99)
    assert unfrozen == Stage(2, (1.5e-5, 1.5e-3), freeze_to=0, pct_start=0.3, div=5.0)
    assert fine_tune(epochs=3, base_lr=1e-3, freeze_epochs=0) == [Stage(3, (5e-6, 5e-4), 0, pct_start=0.3, div=5.0)]
    with pytest.raises(ConfigError, match="one base learning rate"):
        fine_tune(1, [1e-3])


def test_parse_stages_reads_config_and_rejects_mistakes():
    stages = parse_stages([{"epochs": 4, "lr": 3e-3, "freeze_to": -1}, {"epochs": 2, "lr": [1e-6, 1e-4], "size": 64}])
    assert stages == [Stage(4, 3e-3, -1), Stage(2, (1e-6, 1e-4), 0, size=64)]
    for bad in ([{"epochs": 1}], [{"epochs": 0, "lr": 1e-3}], [{"epochs": 1, "lr": 1e-3, "frozen": True}], []):
        with pytest.raises(ConfigError):
            parse_stages(bad)


class TinyTask(Task):
    def __init__(self, stages=None, schedule=None):
        super().__init__({"name": "adamw", "lr": 1e-3, "wd": 0.01}, schedule or {"name": "one_cycle"})
        self.model = tiny_model(ps=0.0)  # no dropout: a resumed run must repeat the same steps
        self.stages = stages

    def layer_groups(self):
        return self.model.layer_groups()

    def training_loss(self, batch):
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def configure_callbacks(self):
        return [StagedTraining(self.stages)] if self.stages else []


class Recorder(L.Callback):
    """Per optimizer step: each layer group's lr, and which parameters were trainable."""

    def __init__(self):
        self.lrs, self.epochs, self.trainable = [], [], {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        opt = trainer.optimizers[0]
        self.lrs.append([g["lr"] for g in opt.param_groups if not g["name"].endswith("no_wd")])
        self.epochs.append(trainer.current_epoch)
        self.trainable[trainer.current_epoch] = {n for n, p in pl_module.model.named_parameters() if p.requires_grad}


def fit(task, root, epochs=1, ckpt_path=None, callbacks=()):
    x, y = batch(n=64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 4 steps an epoch, same order every time
    checkpoints = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=checkpoints, callbacks=list(callbacks), default_root_dir=root)
    trainer.fit(task, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def test_fine_tune_unfreezes_at_the_stage_boundary_with_a_new_one_cycle_per_stage(tmp_path):
    torch.manual_seed(0)
    task = TinyTask(fine_tune(epochs=2, base_lr=1e-2))
    rec = Recorder()
    start = snapshot(task.model)
    trainer = fit(task, tmp_path, epochs=1, callbacks=[rec])  # the stages, not max_epochs, decide: 1 + 2 epochs
    assert trainer.current_epoch == 3 and rec.epochs == [0] * 4 + [1] * 4 + [2] * 4
    frozen, body_bn, head = kinds(task.model)
    assert rec.trainable[0] == set(body_bn) | set(head)
    assert rec.trainable[1] == rec.trainable[2] == {n for n, _ in task.model.named_parameters()}
    lrs = torch.tensor(rec.lrs)  # steps x 3 groups
    stage1, stage2 = lrs[:4], lrs[4:]
    # Stage 1: slice(1e-2) warming up for 99% of its steps: starts at max/25, the last group 10x the others.
    assert stage1[0].tolist() == pytest.approx([1e-3 / 25, 1e-3 / 25, 1e-2 / 25])
    assert (stage1[:, 2] / stage1[:, 0]).tolist() == pytest.approx([10.0] * 4)
    # Stage 2: slice(base/200, base/2) spread geometrically, a fresh cycle starting at max/div=5.
    assert stage2[0].tolist() == pytest.approx([5e-5 / 5, math.sqrt(5e-5 * 5e-3) / 5, 5e-3 / 5])
    peaks = torch.tensor([5e-5, math.sqrt(5e-5 * 5e-3), 5e-3])
    assert (stage2.max(0).values <= peaks * (1 + 1e-6)).all() and (stage2.max(0).values > 0.8 * peaks).all()
    end = snapshot(task.model)
    assert all(not torch.equal(start[n], end[n]) for n in frozen)  # trained once unfrozen


def test_the_body_does_not_move_during_the_frozen_stage(tmp_path):
    torch.manual_seed(0)
    task = TinyTask([Stage(1, 1e-2, freeze_to=-1), Stage(1, 1e-3, freeze_to=0)])
    before = snapshot(task.model)

    class Check(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                self.after_frozen = snapshot(pl_module.model)

    check = Check()
    fit(task, tmp_path, callbacks=[check])
    frozen, body_bn, head = kinds(task.model)
    assert all(torch.equal(before[n], check.after_frozen[n]) for n in frozen)
    assert all(not torch.equal(before[n], check.after_frozen[n]) for n in body_bn + head)


def test_a_staged_run_resumed_from_a_checkpoint_ends_where_an_uninterrupted_one_does(tmp_path):
    stages = [Stage(1, 1e-2, freeze_to=-1), Stage(2, [1e-4, 1e-2], freeze_to=0)]
    torch.manual_seed(0)
    full = TinyTask(stages)
    every = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    fit(full, tmp_path, callbacks=[every])
    for resume_epoch in (1, 2):  # exactly at the boundary, and in the middle of the unfrozen stage
        torch.manual_seed(1)  # different initial weights: everything must come from the checkpoint
        resumed = TinyTask(stages)
        fit(resumed, tmp_path, ckpt_path=tmp_path / f"epoch={resume_epoch - 1}.ckpt",
            callbacks=[ModelCheckpoint(dirpath=tmp_path / "resumed", save_top_k=0)])
        for (n, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
            torch.testing.assert_close(a, b, msg=f"{n} differs after resuming at epoch {resume_epoch}")


def test_stages_leave_the_lr_finder_ramp_alone(tmp_path):
    from lightning.pytorch.tuner import Tuner

    task = TinyTask(fine_tune(epochs=1, base_lr=1e-2))
    x, y = batch(n=64)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    finder = Tuner(trainer).lr_find(task, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=16),
                                    num_training=8, early_stop_threshold=None, update_attr=False)
    lrs = finder.results["lr"]
    assert lrs[0] == pytest.approx(1e-8, rel=0.5) and lrs[-1] > 1e-2  # the finder's ramp, not a one-cycle
