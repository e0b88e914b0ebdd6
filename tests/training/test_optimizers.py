"""The hand-written optimizers take the same steps as the lesson's recipe and torch's optimizers.

Everything runs in float64 on a Linear(5, 3) regression, so "the same steps" can be checked to
~1e-9; each comparison also has a negative control showing the checked detail changes the result.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.testing import assert_close

from fastlight.errors import ConfigError
from fastlight.training.optimizers import (
    OPTIMIZERS,
    ScratchAdam,
    ScratchMomentum,
    ScratchSGD,
    build_optimizer,
)

STEPS = 10
NAMES = ["sgd", "momentum", "adam", "adamw", "scratch_sgd", "scratch_momentum", "scratch_adam"]


def problem():
    """A fresh Linear(5, 3) (same initial weights every call) and a fixed regression batch."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(32, 3, generator=gen, dtype=torch.float64) * 3
    return model, x, y


def two_groups(model, wd_scale=1.0):
    """Weight and bias as two param groups with their own lr and weight_decay (layer groups)."""
    return [
        {"params": [model.weight], "lr": 0.05, "weight_decay": 0.1 * wd_scale},
        {"params": [model.bias], "lr": 0.01, "weight_decay": 0.0},
    ]


def train(make_opt, groups=None, schedule=None, on_step=None, steps=STEPS):
    """Parameters after `steps` steps of `make_opt(params)` (optionally one scheduler step each)."""
    model, x, y = problem()
    opt = make_opt(groups(model) if groups else model.parameters())
    sched = schedule(opt) if schedule else None
    for _ in range(steps):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        if on_step:
            on_step(opt)
        opt.step()
        if sched:
            sched.step()
    return [p.detach().clone() for p in model.parameters()]


def initial():
    return [p.detach().clone() for p in problem()[0].parameters()]


def assert_same(a, b):
    for pa, pb in zip(a, b, strict=True):
        assert_close(pa, pb, rtol=1e-9, atol=1e-12)


def assert_differs(a, b):
    assert not all(torch.allclose(pa, pb, rtol=1e-6, atol=1e-9) for pa, pb in zip(a, b, strict=True))


# --- SGD: the lesson's recipe ------------------------------------------------------------------


def lesson_recipe(lr, wd, steps=STEPS):
    """lesson5-sgd-mnist's `update`, literally: loss + wd*sum(p**2), backward, p -= lr*grad."""
    model, x, y = problem()
    for _ in range(steps):
        w2 = 0.0
        for p in model.parameters():
            w2 += (p**2).sum()
        loss = F.mse_loss(model(x), y) + w2 * wd
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(lr * p.grad)
                p.grad.zero_()
    return [p.detach().clone() for p in model.parameters()]


def test_scratch_sgd_is_the_lessons_recipe():
    lr, wd = 0.1, 0.1
    ours = train(lambda ps: ScratchSGD(ps, lr=lr, wd=wd))
    assert_same(ours, lesson_recipe(lr, wd))
    assert_differs(ours, lesson_recipe(lr, 0.0))  # wd is large enough to matter
    assert_differs(ours, initial())


def test_scratch_sgd_equals_torch_sgd_with_twice_the_weight_decay():
    lr, wd = 0.1, 0.1
    ours = train(lambda ps: ScratchSGD(ps, lr=lr, wd=wd))
    assert_same(ours, train(lambda ps: torch.optim.SGD(ps, lr=lr, weight_decay=2 * wd)))
    assert_differs(ours, train(lambda ps: torch.optim.SGD(ps, lr=lr, weight_decay=wd)))


# --- momentum and Adam against torch -----------------------------------------------------------


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_scratch_momentum_equals_torch_sgd_momentum(wd):
    ours = train(lambda ps: ScratchMomentum(ps, lr=0.05, mom=0.9, wd=wd))
    theirs = train(lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0, weight_decay=2 * wd))
    assert_same(ours, theirs)
    assert_differs(ours, train(lambda ps: ScratchSGD(ps, lr=0.05, wd=wd)))  # momentum mattered


def test_scratch_adam_equals_torch_adamw():
    ours = train(lambda ps: ScratchAdam(ps, lr=0.05, mom=0.9, sqr_mom=0.99, eps=1e-5, wd=0.01))
    theirs = train(lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01))
    assert_same(ours, theirs)
    # Decoupled, not L2: torch's Adam with the same weight_decay goes elsewhere.
    coupled = train(lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01))
    assert_differs(ours, coupled)


def test_scratch_adam_defaults_are_fastais():
    ours = train(lambda ps: ScratchAdam(ps, lr=0.05))
    assert_same(ours, train(lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.01)))


# (scratch name, torch optimizer taking the same steps, factor on weight_decay for torch)
PAIRS = {
    "scratch_sgd": (lambda ps: torch.optim.SGD(ps, lr=1.0), 2.0),
    "scratch_momentum": (lambda ps: torch.optim.SGD(ps, lr=1.0, momentum=0.9, dampening=0), 2.0),
    "scratch_adam": (lambda ps: torch.optim.AdamW(ps, lr=1.0, betas=(0.9, 0.99), eps=1e-5), 1.0),
}


@pytest.mark.parametrize("name", PAIRS)
def test_param_groups_keep_their_own_lr_and_weight_decay(name):
    torch_opt, wd_scale = PAIRS[name]
    # lr and wd given to build_optimizer are defaults only: every group overrides both.
    ours = train(lambda ps: build_optimizer(name, ps, lr=1.0, wd=0.5), groups=two_groups)
    theirs = train(torch_opt, groups=lambda m: two_groups(m, wd_scale))
    assert_same(ours, theirs)
    single = train(lambda ps: build_optimizer(name, ps, lr=0.05, wd=0.1))
    assert_differs(ours, single)


@pytest.mark.parametrize("name", PAIRS)
def test_one_cycle_drives_lr_and_momentum(name):
    """Under identical OneCycleLR schedules (per-group max_lr) the scratch and torch versions agree."""
    torch_opt, wd_scale = PAIRS[name]
    cycles = name != "scratch_sgd"

    def one_cycle(cycle_momentum):
        return lambda opt: OneCycleLR(
            opt, max_lr=[0.05, 0.01], total_steps=STEPS, pct_start=0.3, cycle_momentum=cycle_momentum
        )

    seen = []

    def record(opt):
        group = opt.param_groups[0]
        seen.append((group["lr"], group["betas"][0] if "betas" in group else group.get("momentum")))

    ours = train(lambda ps: build_optimizer(name, ps, lr=1.0, wd=0.0), groups=two_groups, schedule=one_cycle(cycles), on_step=record)
    theirs = train(torch_opt, groups=lambda m: two_groups(m, wd_scale), schedule=one_cycle(cycles))
    assert_same(ours, theirs)
    assert len({lr for lr, _ in seen}) > 2
    if cycles:
        assert len({mom for _, mom in seen}) > 2
        # The cycled momentum is what step() used: a run with momentum held fixed differs.
        fixed = train(lambda ps: build_optimizer(name, ps, lr=1.0, wd=0.0), groups=two_groups, schedule=one_cycle(False))
        assert_differs(ours, fixed)


def test_scratch_sgd_has_no_momentum_for_one_cycle_to_cycle():
    model = problem()[0]
    opt = ScratchSGD(model.parameters(), lr=0.1)
    assert "momentum" not in opt.defaults and "momentum" not in opt.param_groups[0]
    with pytest.raises(ValueError, match="momentum"):
        OneCycleLR(opt, max_lr=0.1, total_steps=STEPS, cycle_momentum=True)


# --- torch optimizer protocol: closure, state_dict ---------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
def test_step_with_closure(name):
    torch_opt, wd_scale = PAIRS[name]

    def run(make_opt, groups):
        model, x, y = problem()
        opt = make_opt(groups(model))
        losses = []

        def closure():
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            losses.append(loss)
            return loss

        for _ in range(3):
            assert opt.step(closure) is losses[-1]
        return [p.detach().clone() for p in model.parameters()]

    ours = run(lambda ps: build_optimizer(name, ps, lr=1.0), two_groups)
    assert_same(ours, run(torch_opt, lambda m: two_groups(m, wd_scale)))
    assert_differs(ours, initial())


@pytest.mark.parametrize("name", ["scratch_momentum", "scratch_adam"])
def test_state_dict_resumes_the_same_trajectory(name):
    model, x, y = problem()
    opt = build_optimizer(name, model.parameters(), lr=0.05, wd=0.01)
    for i in range(STEPS):
        if i == STEPS // 2:  # checkpoint, then resume into a fresh optimizer
            saved = opt.state_dict()
            opt = build_optimizer(name, model.parameters(), lr=0.05, wd=0.01)
            opt.load_state_dict(saved)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    trajectory = [p.detach().clone() for p in model.parameters()]
    straight = train(lambda ps: build_optimizer(name, ps, lr=0.05, wd=0.01))
    assert_same(trajectory, straight)
    # Resuming without the state (lost velocity / averages) would not give the same result.
    model2, _, _ = problem()
    opt2 = build_optimizer(name, model2.parameters(), lr=0.05, wd=0.01)
    for i in range(STEPS):
        if i == STEPS // 2:
            opt2 = build_optimizer(name, model2.parameters(), lr=0.05, wd=0.01)
        opt2.zero_grad()
        F.mse_loss(model2(x), y).backward()
        opt2.step()
    assert_differs(trajectory, [p.detach().clone() for p in model2.parameters()])


# --- build_optimizer ---------------------------------------------------------------------------


def test_optimizers_are_the_seven_names():
    assert sorted(OPTIMIZERS) == sorted(NAMES)


EXPECTED = {
    "sgd": (torch.optim.SGD, {"momentum": 0}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9, "dampening": 0}),
    "adam": (torch.optim.Adam, {"betas": (0.9, 0.99), "eps": 1e-5}),
    "adamw": (torch.optim.AdamW, {"betas": (0.9, 0.99), "eps": 1e-5}),
    "scratch_sgd": (ScratchSGD, {}),
    "scratch_momentum": (ScratchMomentum, {"momentum": 0.9}),
    "scratch_adam": (ScratchAdam, {"betas": (0.9, 0.99), "eps": 1e-5}),
}


@pytest.mark.parametrize("name", NAMES)
def test_every_name_builds_with_fastai_defaults(name):
    cls, defaults = EXPECTED[name]
    opt = build_optimizer(name, problem()[0].parameters(), lr=0.03, wd=0.02)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.03 and group["weight_decay"] == 0.02
    for key, value in defaults.items():
        assert group[key] == pytest.approx(value), key


@pytest.mark.parametrize("name", NAMES)
def test_every_name_keeps_group_lr_and_weight_decay(name):
    model = problem()[0]
    groups = [{"params": [model.weight], "lr": 0.5, "weight_decay": 0.2}, {"params": [model.bias]}]
    opt = build_optimizer(name, groups, lr=0.03, wd=0.02)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.5, 0.2), (0.03, 0.02)]


@pytest.mark.parametrize(
    "name, hypers, key, value",
    [
        ("momentum", {"mom": 0.7}, "momentum", 0.7),
        ("scratch_momentum", {"mom": 0.7}, "momentum", 0.7),
        ("adam", {"mom": 0.8, "sqr_mom": 0.9}, "betas", (0.8, 0.9)),
        ("adamw", {"mom": 0.8, "sqr_mom": 0.9, "eps": 1e-3}, "betas", (0.8, 0.9)),
        ("scratch_adam", {"mom": 0.8, "sqr_mom": 0.9, "eps": 1e-3}, "betas", (0.8, 0.9)),
        ("scratch_adam", {"eps": 1e-3}, "eps", 1e-3),
    ],
)
def test_fastai_hyper_names_reach_the_optimizer(name, hypers, key, value):
    opt = build_optimizer(name, problem()[0].parameters(), lr=0.01, **hypers)
    assert opt.param_groups[0][key] == pytest.approx(value)


def test_unknown_name_is_a_config_error_listing_the_names():
    with pytest.raises(ConfigError, match="'rmsprop'") as err:
        build_optimizer("rmsprop", problem()[0].parameters(), lr=0.01)
    assert all(name in str(err.value) for name in NAMES)


@pytest.mark.parametrize(
    "name, hyper", [("sgd", "sqr_mom"), ("scratch_sgd", "mom"), ("momentum", "eps"), ("adamw", "momentum")]
)
def test_unknown_hyper_is_a_config_error_naming_it(name, hyper):
    with pytest.raises(ConfigError, match=rf"optim\.{hyper} .*optim={name}\b"):
        build_optimizer(name, problem()[0].parameters(), lr=0.01, **{hyper: 0.5})


@pytest.mark.parametrize("hypers", [{"mom": 1.0}, {"sqr_mom": -0.1}, {"eps": -1e-8}, {"mom": "0.9"}])
def test_bad_hyper_value_is_a_config_error(hypers):
    (key,) = hypers
    with pytest.raises(ConfigError, match=rf"optim\.{key}="):
        build_optimizer("scratch_adam", problem()[0].parameters(), lr=0.01, **hypers)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_is_the_default_and_takes_the_loops_steps(name):
    """fastlight's Adam runs torch's fused kernel by default: the same steps as the for-loop version."""
    fused = build_optimizer(name, problem()[0].parameters(), lr=0.05, wd=0.1)
    assert fused.param_groups[0]["fused"] is True
    ours = train(lambda ps: build_optimizer(name, ps, lr=0.05, wd=0.1))
    loop = train(lambda ps: build_optimizer(name, ps, lr=0.05, wd=0.1, fused=False))
    assert build_optimizer(name, problem()[0].parameters(), lr=0.05, fused=False).param_groups[0]["fused"] is None
    assert_close(ours, loop, rtol=1e-9, atol=1e-12)
    other = train(lambda ps: build_optimizer(name, ps, lr=0.05, wd=0.0))  # negative control: wd matters
    assert not torch.allclose(ours[0], other[0])


def test_fused_must_be_a_switch():
    with pytest.raises(ConfigError, match=r"optim\.fused=1 must be true or false"):
        build_optimizer("adamw", problem()[0].parameters(), lr=0.01, fused=1)
