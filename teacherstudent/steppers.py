"""Steppers: one optimiser step of every ensemble member, one class per backend.

``fused_sgd``: plain SGD fused into the hand-written backward (fast.sgd_step), no
gradients kept. ``fast``: hand-written gradients (fast.loss_and_grads) into reused
buffers, then a ``torch.optim`` optimiser. ``autograd``: ``Ensemble.forward`` and
``loss.backward()``, the reference (and the only path for BatchNorm students).
``choose`` picks one from ``training.backend``; ``STEPPERS`` is the registry.

Every stepper returns each member's loss ``[K]`` on the batch and keeps its state
(optimiser moments) in ``state_dict``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .build import Problem
from .fast import loss_and_grads_chunked, members_per_chunk, sgd_step_chunked
from .train import loss_kind, make_optimizer, member_loss

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per step or measurement chunk


class Stepper:
    name: ClassVar[str] = ""

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        cfg = problem.cfg
        self.problem, self.ens, self.t = problem, problem.ens, cfg.training
        self.loss = loss_kind(cfg.training)
        self.opt = make_optimizer(self.ens.trainable, cfg.training)
        outputs = self.ens.weights[-1].shape[1]
        self.chunk = members_per_chunk(problem.widths, outputs, cfg.training.batch_size,
                                       self.ens.params[0].element_size(), memory_budget)

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, st: dict) -> None:
        self.opt.load_state_dict(st)


class FusedSGD(Stepper):
    """Plain SGD (no momentum, no weight decay) inside the backward: ``W.baddbmm_(g^T, h, alpha=-lr)``."""

    name = "fused_sgd"

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        return sgd_step_chunked(self.ens.params, x, y, self.loss, lr, self.chunk)


class Fast(Stepper):
    """Hand-written gradients into buffers reused every step, then the optimiser."""

    name = "fast"

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        super().__init__(problem, memory_budget)
        self.grads: list[torch.Tensor] | None = None

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.set_lr(lr)
        if self.grads is None:  # written in place every step (see fast.loss_and_grads)
            self.grads = [torch.empty_like(p) for p in self.ens.params]
        loss, grads = loss_and_grads_chunked(self.ens.params, x, y, self.loss, self.chunk, self.grads)
        for p, g in zip(self.ens.params, grads):
            p.grad = g
        self.opt.step()
        return loss


class Autograd(Stepper):
    """The reference: autograd through ``Ensemble.forward`` (BatchNorm students too)."""

    name = "autograd"

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        super().__init__(problem, memory_budget)
        self.loss_fn = member_loss(self.loss)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.set_lr(lr)
        loss = self.loss_fn(self.ens.output(x, train=True), y)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        return loss.detach()


STEPPERS: dict[str, type[Stepper]] = {"fused_sgd": FusedSGD, "fast": Fast, "autograd": Autograd}


def choose(problem: Problem) -> str:
    """The stepper ``training.backend`` asks for: ``auto`` takes the fast path whenever it
    applies (mlp students without BatchNorm), fused when the optimiser is plain SGD."""
    t = problem.cfg.training
    if problem.cfg.arch != "mlp":  # the hand-written paths cover stacked fully connected students only
        return "autograd"
    fast = t.backend == "fast" or (t.backend == "auto" and not problem.ens.batchnorm)
    if not fast:
        return "autograd"
    return "fused_sgd" if t.optimizer == "sgd" and t.momentum == 0 and t.weight_decay == 0 else "fast"


def make_stepper(problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET) -> Stepper:
    return STEPPERS[choose(problem)](problem, memory_budget)
