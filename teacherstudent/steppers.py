"""Steppers: one optimiser step of every ensemble member, one class per backend.

``fused_sgd``: plain SGD fused into the hand-written backward (fast.sgd_step), no
gradients kept. ``fast``: hand-written gradients (fast.loss_and_grads) into reused
buffers, then a ``torch.optim`` optimiser. ``autograd``: ``Ensemble.forward`` and
``loss.backward()``, the reference (and the only path for BatchNorm students).
``choose`` picks one from ``training.backend``; ``STEPPERS`` is the registry.

Every stepper returns each member's loss ``[K]`` on the batch and keeps its state
(optimiser moments, and with ``training.dropout`` each member's mask generator) in
``state_dict``. Options on every path: label smoothing and dropout (also fused);
per-member gradient clipping (``fast`` and ``autograd``: it needs the whole gradient
before the update, so ``choose`` never fuses with it).
"""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar

import torch

from .build import Problem
from .fast import loss_and_grads_chunked, members_per_chunk, sgd_step_chunked
from .seeds import Stream, generator
from .train import clip_per_member_, loss_kind, make_optimizer, member_loss

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per step or measurement chunk
MATMUL_DTYPES: dict[str, torch.dtype | None] = {"full": None, "bf16": torch.bfloat16}  # training.precision


class Stepper:
    name: ClassVar[str] = ""

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        cfg = problem.cfg
        self.problem, self.ens, self.t = problem, problem.ens, cfg.training
        self.loss = loss_kind(cfg.training.loss, cfg.training.loss_reduction)
        outputs = self.ens.weights[-1].shape[1]
        self.chunk = members_per_chunk(problem.widths, outputs, cfg.training.batch_size,
                                       self.ens.params[0].element_size(), memory_budget)
        self.groups: tuple[tuple[int, int], ...] | None = None  # member ranges computed apart (fast.member_ranges)
        self.smoothing = cfg.training.label_smoothing
        self.mm_dtype = MATMUL_DTYPES[cfg.training.precision]  # the fast paths' matmul dtype (None: the weights')
        self.dropout = cfg.training.dropout
        # one mask stream per member, from its student seed: a member's masks do not depend on its ensemble
        self.dropout_gens = [generator(s, Stream.DROPOUT) for s in cfg.student.seeds] if self.dropout else []

    @cached_property
    def opt(self) -> torch.optim.Optimizer:
        """The run's ``torch.optim`` optimiser, made when first used: the fused path steps without it
        and needs it only for its (empty) state in a resume point. Making the first one in a process
        imports ``torch._dynamo`` (over a second), which a short run of the fused path then never pays."""
        return make_optimizer(self.ens.trainable, self.t)

    def masks(self, B: int) -> list[torch.Tensor] | None:
        """This step's dropout masks ``[K, B, n_l]`` per hidden layer, 0 or ``1 / (1 - p)`` like
        ``nn.Dropout``: member ``k`` keeps a node where ``torch.rand(B, n_l)`` from its own
        generator is below ``1 - p``, layer after layer (None without dropout)."""
        if not self.dropout:
            return None
        p, params = self.dropout, self.ens.params[0]
        keep = [torch.stack([torch.rand(B, n, generator=g) < 1 - p for g in self.dropout_gens])
                for n in self.problem.widths]
        return [k.to(params.device, params.dtype).div_(1 - p) for k in keep]

    def clip(self, grads: list[torch.Tensor]) -> None:
        """Per-member gradient clipping, group by group (a norm over a one-member slice reduces
        differently from a row of several)."""
        for g0, g1 in self.groups or ((0, grads[0].shape[0]),):
            clip_per_member_(grads if self.groups is None else [g[g0:g1] for g in grads], self.t.clip_norm)

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict:
        st = self.opt.state_dict()
        if self.dropout_gens:
            st = {**st, "dropout_rng": [g.get_state() for g in self.dropout_gens]}
        return st

    def load_state_dict(self, st: dict) -> None:
        st = dict(st)
        rng = st.pop("dropout_rng", None)
        if self.dropout_gens:
            for g, state in zip(self.dropout_gens, rng, strict=True):
                g.set_state(state)
        self.opt.load_state_dict(st)


class FusedSGD(Stepper):
    """Plain SGD (no momentum, no weight decay) inside the backward: ``W.baddbmm_(g^T, h, alpha=-lr)``."""

    name = "fused_sgd"

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        return sgd_step_chunked(self.ens.params, x, y, self.loss, lr, self.chunk, self.masks(x.shape[0]), self.smoothing,
                                self.groups, self.mm_dtype)


class Fast(Stepper):
    """Hand-written gradients into buffers reused every step, then the optimiser."""

    name = "fast"

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        super().__init__(problem, memory_budget)
        self.grads: list[torch.Tensor] | None = None

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each member's loss and the (clipped) gradients of this step, in buffers reused every step."""
        if self.grads is None:  # written in place every step (see fast.loss_and_grads)
            self.grads = [torch.empty_like(p) for p in self.ens.params]
        loss, grads = loss_and_grads_chunked(self.ens.params, x, y, self.loss, self.chunk, self.grads,
                                             self.masks(x.shape[0]), self.smoothing, self.groups, self.mm_dtype)
        if self.t.clip_norm is not None:
            self.clip(grads)
        return loss, grads

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.set_lr(lr)
        loss, grads = self.gradients(x, y)
        for p, g in zip(self.ens.params, grads):
            p.grad = g
        self.opt.step()
        return loss


class Autograd(Stepper):
    """The reference: autograd through ``Ensemble.forward`` (BatchNorm students too)."""

    name = "autograd"

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        super().__init__(problem, memory_budget)
        self.loss_fn = member_loss(self.loss, self.smoothing)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        self.set_lr(lr)
        masks = self.masks(x.shape[0])  # passed only with dropout: other architectures need not take masks
        out = self.ens.output(x, train=True) if masks is None else self.ens.output(x, train=True, masks=masks)
        loss = self.loss_fn(out, y)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        if self.t.clip_norm is not None:
            clip_per_member_([p.grad for p in self.ens.trainable], self.t.clip_norm)
        self.opt.step()
        return loss.detach()


STEPPERS: dict[str, type[Stepper]] = {"fused_sgd": FusedSGD, "fast": Fast, "autograd": Autograd}


def choose(problem: Problem) -> str:
    """The stepper ``training.backend`` asks for: ``auto`` takes the fast path whenever it
    applies (mlp students without BatchNorm), fused when the optimiser is plain SGD without gradient clipping."""
    t = problem.cfg.training
    if problem.cfg.arch != "mlp":  # the hand-written paths cover stacked fully connected students only
        return "autograd"
    fast = t.backend == "fast" or (t.backend == "auto" and not problem.ens.batchnorm)
    if not fast:
        return "autograd"
    plain = t.optimizer == "sgd" and t.momentum == 0 and t.weight_decay == 0 and t.clip_norm is None
    return "fused_sgd" if plain else "fast"


def make_stepper(problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET) -> Stepper:
    return STEPPERS[choose(problem)](problem, memory_budget)
