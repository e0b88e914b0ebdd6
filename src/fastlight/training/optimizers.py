"""Optimizers by name, and lesson 5's SGD, momentum and Adam written out by hand.

Lesson 5 (fast.ai v3, "lesson5-sgd-mnist") takes the optimizer apart: SGD is `p -= lr * grad`,
weight decay is a penalty `wd * sum(p**2)` added to the loss, momentum keeps a running sum of
gradients, and Adam divides that by a running size of the gradients. The `Scratch*` classes
are those few lines; `build_optimizer` also offers torch's own versions, so a run can compare
`optim=scratch_adam` against `optim=adamw` and see that they take the same steps.

Each class keeps its hyper-parameters in the param groups, not on itself, and reads them at
every step: one param group per fastai layer group carries its own `lr` and `weight_decay`,
and one-cycle writes a new `momentum` (or `betas`) into every group before each step.

Weight decay conventions (these differ on purpose; the tests pin them down):
  scratch_sgd, scratch_momentum  coupled L2 as the lesson writes it, loss + wd * sum(p**2),
                                 so the gradient gains 2*wd*p: torch's SGD with weight_decay=2*wd.
  sgd, momentum, adam            torch's coupled L2, the gradient gains wd*p.
  adamw, scratch_adam            decoupled ("true") weight decay, p *= 1 - lr*wd before the step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer

from fastlight.errors import ConfigError


def _check(condition: bool, message: str) -> None:
    # ValueError, as torch's own optimizers raise for an invalid hyper-parameter.
    if not condition:
        raise ValueError(message)


class _ScratchOptimizer(Optimizer):
    """What the three hand-written optimizers share: closure handling and the loop over params."""

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():  # the closure runs forward and backward
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:  # frozen or unused parameters take no step
                    self._update(p, group, self.state[p])
        return loss

    def _update(self, p: torch.Tensor, group: dict, state: dict) -> None:
        raise NotImplementedError


class ScratchSGD(_ScratchOptimizer):
    """Lesson 5's SGD: `loss + wd * sum(p**2)`, then `p -= lr * p.grad`.

    The penalty's gradient is 2*wd*p, so this equals torch's SGD with weight_decay=2*wd.
    There is deliberately no `momentum` key: one-cycle must see nothing to cycle here.
    """

    def __init__(self, params, lr: float, wd: float = 0.0):
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(wd >= 0, f"Invalid weight decay: {wd}")
        super().__init__(params, dict(lr=lr, weight_decay=wd))

    def _update(self, p, group, state):
        lr, wd = group["lr"], group["weight_decay"]
        g = p.grad if wd == 0 else p.grad.add(p, alpha=2 * wd)  # g = grad + 2*wd*p
        p.add_(g, alpha=-lr)  # p -= lr * g


class ScratchMomentum(_ScratchOptimizer):
    """SGD with momentum as fastai writes it (no dampening): `v = mom*v + g; p -= lr*v`.

    Equals torch's SGD(momentum=mom, dampening=0). Weight decay is the same coupled L2 as
    `ScratchSGD` (g = grad + 2*wd*p), i.e. torch's SGD with weight_decay=2*wd.
    """

    def __init__(self, params, lr: float, mom: float = 0.9, wd: float = 0.0):
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(0 <= mom < 1, f"Invalid momentum: {mom}")
        _check(wd >= 0, f"Invalid weight decay: {wd}")
        # Stored as `momentum`, the key torch's OneCycleLR cycles.
        super().__init__(params, dict(lr=lr, momentum=mom, weight_decay=wd))

    def _update(self, p, group, state):
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        g = p.grad if wd == 0 else p.grad.add(p, alpha=2 * wd)  # g = grad + 2*wd*p
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p)
        v = state["velocity"]
        v.mul_(mom).add_(g)  # v = mom*v + g
        p.add_(v, alpha=-lr)  # p -= lr * v


class ScratchAdam(_ScratchOptimizer):
    """Adam with fastai's defaults and decoupled weight decay (fastai's default optimizer).

        p *= 1 - lr*wd
        grad_avg = mom*grad_avg + (1-mom)*g
        sqr_avg  = sqr_mom*sqr_avg + (1-sqr_mom)*g**2
        p -= lr / (1 - mom**t) * grad_avg / (sqrt(sqr_avg / (1 - sqr_mom**t)) + eps)

    Takes the same steps as torch's AdamW(lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd).
    """

    def __init__(self, params, lr: float, mom: float = 0.9, sqr_mom: float = 0.99, eps: float = 1e-5, wd: float = 0.01):
        _check(lr >= 0, f"Invalid learning rate: {lr}")
        _check(0 <= mom < 1, f"Invalid beta parameter at index 0: {mom}")
        _check(0 <= sqr_mom < 1, f"Invalid beta parameter at index 1: {sqr_mom}")
        _check(eps >= 0, f"Invalid epsilon value: {eps}")
        _check(wd >= 0, f"Invalid weight decay: {wd}")
        # Stored as `betas`, the key torch's OneCycleLR cycles (its first entry).
        super().__init__(params, dict(lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd))

    def _update(self, p, group, state):
        lr, (mom, sqr_mom), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["grad_avg"] = torch.zeros_like(p)
            state["sqr_avg"] = torch.zeros_like(p)
        g, grad_avg, sqr_avg = p.grad, state["grad_avg"], state["sqr_avg"]
        if wd != 0:
            p.mul_(1 - lr * wd)  # decoupled: shrink the weights, leave the gradient statistics alone
        grad_avg.mul_(mom).add_(g, alpha=1 - mom)
        sqr_avg.mul_(sqr_mom).addcmul_(g, g, value=1 - sqr_mom)
        state["step"] += 1
        t = state["step"]
        # Both averages start at zero; dividing by 1 - beta**t undoes that bias in early steps.
        # The current mom is used, so a cycled momentum gives the same step as torch's AdamW.
        denom = (sqr_avg / (1 - sqr_mom**t)).sqrt_().add_(eps)
        p.addcdiv_(grad_avg, denom, value=-lr / (1 - mom**t))


# One small constructor per name. Keyword-only arguments after `wd` are the hypers that name
# accepts (fastai vocabulary); `build_optimizer` reads them off the function to reject others.
def _sgd(params, lr, wd):
    return torch.optim.SGD(params, lr=lr, weight_decay=wd)


def _momentum(params, lr, wd, *, mom=0.9):
    return torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)


# `fused`: torch's one-kernel-per-tensor Adam, the same update as its for-loop version (to float
# rounding) and 2-3x faster per step on a CPU, where the loop is the default; it matters for the
# small models, whose optimizer step costs more than their forward and backward together.
def _adam(params, lr, wd, *, mom=0.9, sqr_mom=0.99, eps=1e-5, fused=True):
    return torch.optim.Adam(params, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, fused=fused or None)


def _adamw(params, lr, wd, *, mom=0.9, sqr_mom=0.99, eps=1e-5, fused=True):
    return torch.optim.AdamW(params, lr=lr, betas=(mom, sqr_mom), eps=eps, weight_decay=wd, fused=fused or None)


def _scratch_sgd(params, lr, wd):
    return ScratchSGD(params, lr=lr, wd=wd)


def _scratch_momentum(params, lr, wd, *, mom=0.9):
    return ScratchMomentum(params, lr=lr, mom=mom, wd=wd)


def _scratch_adam(params, lr, wd, *, mom=0.9, sqr_mom=0.99, eps=1e-5):
    return ScratchAdam(params, lr=lr, mom=mom, sqr_mom=sqr_mom, eps=eps, wd=wd)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "adam": _adam,
    "adamw": _adamw,
    "scratch_sgd": _scratch_sgd,
    "scratch_momentum": _scratch_momentum,
    "scratch_adam": _scratch_adam,
}

# Valid ranges of the hypers, checked here so a bad config value is a ConfigError, not a traceback.
_RANGES = {
    "mom": (lambda x: 0 <= x < 1, "between 0 (inclusive) and 1 (exclusive)"),
    "sqr_mom": (lambda x: 0 <= x < 1, "between 0 (inclusive) and 1 (exclusive)"),
    "eps": (lambda x: x >= 0, ">= 0"),
}


def accepted_hypers(name: str) -> list[str]:
    """The hypers (besides lr and wd) that optimizer `name` takes."""
    return list(OPTIMIZERS[name].__kwdefaults__ or {})


def build_optimizer(name: str, params_or_groups, lr: float, wd: float = 0.0, **hypers) -> Optimizer:
    """The optimizer called `name`, with fastai's hyper names (`mom`, `sqr_mom`, `eps`, `wd`).

    `params_or_groups` is what torch optimizers take: parameters, or param group dicts. A group's
    own `lr` and `weight_decay` win over `lr` and `wd` here, for all seven optimizers alike.
    """
    if name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={name!r} is unknown; choose one of: {', '.join(OPTIMIZERS)}")
    accepted = accepted_hypers(name)
    for key, value in hypers.items():
        if key not in accepted:
            takes = f"takes only lr, wd and {', '.join(accepted)}" if accepted else "takes only lr and wd"
            raise ConfigError(f"optim.{key} is not a setting of optim={name}, which {takes}")
        if isinstance(OPTIMIZERS[name].__kwdefaults__[key], bool):  # a switch (fused)
            if not isinstance(value, bool):
                raise ConfigError(f"optim.{key}={value!r} must be true or false")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"optim.{key}={value!r} must be a number")
        ok, rule = _RANGES.get(key, (lambda x: True, ""))
        if not ok(value):
            raise ConfigError(f"optim.{key}={value} must be {rule}")
    return OPTIMIZERS[name](params_or_groups, lr, wd,
                            **{k: v if isinstance(v, bool) else float(v) for k, v in hypers.items()})
