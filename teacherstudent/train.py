"""Optimisers, learning-rate schedules and losses for stacked ensembles: three registries.

SGD (momentum, Nesterov, weight decay), Adam, AdamW, RMSprop and Adagrad are
element-wise, so one ``torch.optim`` optimiser over the stacked ``[K, ...]`` parameters
updates every member exactly as its own optimiser would. The loss of a step is the sum over members of each
member's mean loss, so each member receives its own gradient.

Adding an optimiser, schedule or loss: write its function here (or in its own module) and
add one line to ``OPTIMIZERS``, ``SCHEDULES`` or ``LOSSES``; config validation reads the
names from these dicts. An ``OPTIMIZERS`` entry (``Optimizer``) holds the maker, the
``TrainingConfig`` fields it reads and its state slots; ``SCHEDULE_FIELDS`` says which fields
each schedule reads, so a field set for another one is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # config imports this module (no import cycle at run time)
    from .config import TrainingConfig


def _sgd(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay, foreach=True)


def _adam(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=True)


def _adamw(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay (``weight_decay`` shrinks the weights by ``lr * weight_decay`` per step)."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=True)


def _rmsprop(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, centered=cfg.centered,
                               weight_decay=cfg.weight_decay, foreach=True)


def _adagrad(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(params, lr=cfg.lr, lr_decay=cfg.lr_decay, weight_decay=cfg.weight_decay, foreach=True)


@dataclass(frozen=True)
class Optimizer:
    """One optimiser: its maker, the ``TrainingConfig`` fields it reads besides ``lr`` and
    ``weight_decay`` (a field set under an optimiser that does not list it is an error; two
    optimisers may share one) and its state slots: how many parameter-sized tensors it keeps
    per parameter under a config (the memory estimate, resources.py, reads it)."""

    make: Callable[[list[torch.Tensor], TrainingConfig], torch.optim.Optimizer]
    fields: tuple[str, ...] = ()
    state_slots: Callable[[TrainingConfig], int] = lambda t: 0


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(_sgd, ("momentum", "nesterov"), lambda t: 1 if t.momentum > 0 else 0),  # momentum_buffer
    "adam": Optimizer(_adam, ("betas",), lambda t: 2),  # exp_avg, exp_avg_sq
    "adamw": Optimizer(_adamw, ("betas",), lambda t: 2),
    "rmsprop": Optimizer(_rmsprop, ("alpha", "momentum", "centered"),  # square_avg, momentum_buffer, grad_avg
                         lambda t: 1 + (t.momentum > 0) + t.centered),
    "adagrad": Optimizer(_adagrad, ("lr_decay",), lambda t: 1),  # sum
}


def optimizer_fields() -> dict[str, tuple[str, ...]]:
    """``{optimiser: its own TrainingConfig fields}``, read from ``OPTIMIZERS`` (config validation)."""
    return {name: opt.fields for name, opt in OPTIMIZERS.items()}


@torch.no_grad()
def clip_per_member_(grads: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for every member on its own: the total 2-norm of member
    ``k``'s gradients (slice ``k`` of every stacked ``[K, ...]`` gradient), and those gradients
    scaled by ``min(1, max_norm / (norm + 1e-6))``, in place. Returns the norms ``[K]``."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp_(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *(1,) * (g.dim() - 1)))
    return norms


def make_optimizer(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer].make(params, cfg)


def _cyclic(cfg: TrainingConfig, step: int, spe: int, total: int) -> float:
    """Triangular cycles between ``min_lr`` and ``lr``, ``half_cycle_steps`` up then as many
    down (``torch.optim.lr_scheduler.CyclicLR(mode='triangular')``)."""
    pos = step / cfg.half_cycle_steps
    x = abs(pos - 2 * math.floor(1 + pos / 2) + 1)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * max(0.0, 1 - x)


def _one_cycle(cfg: TrainingConfig, step: int, spe: int, total: int) -> float:
    """``torch.optim.lr_scheduler.OneCycleLR`` (cosine, two phases, ``max_lr`` = ``lr``) over
    the run's ``total`` steps: from ``lr / div_factor`` up to ``lr`` in the first ``pct_start``
    of the steps, then down to ``lr / div_factor / final_div_factor``."""
    start, end = cfg.lr / cfg.div_factor, cfg.lr / cfg.div_factor / cfg.final_div_factor
    up = float(cfg.pct_start * total) - 1
    if step <= up:
        a, b, t = start, cfg.lr, step / up
    else:
        a, b, t = cfg.lr, end, (step - up) / (total - 1 - up)
    return b + (a - b) / 2.0 * (math.cos(math.pi * t) + 1)


# A schedule maps (cfg, step, steps_per_epoch, total_steps) to the learning rate of ``step`` (0-based).
Schedule = Callable[["TrainingConfig", int, int, int], float]
SCHEDULES: dict[str, Schedule] = {
    "constant": lambda cfg, step, spe, total: cfg.lr,
    "piecewise": lambda cfg, step, spe, total: cfg.milestones[max(e for e in cfg.milestones if e <= step // spe)],
    "step": lambda cfg, step, spe, total: cfg.lr * cfg.gamma ** ((step // spe) // cfg.step_epochs),
    "cosine": lambda cfg, step, spe, total: 0.5 * cfg.lr * (1 + math.cos(math.pi * step / max(total, 1))),  # per step
    "exponential": lambda cfg, step, spe, total: cfg.lr * cfg.gamma ** (step / spe),  # gamma per epoch, every step
    "cyclic": _cyclic,
    "onecycle": _one_cycle,
}
SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {"piecewise": ("milestones",), "step": ("step_epochs", "gamma"),
                                               "exponential": ("gamma",), "cyclic": ("min_lr", "half_cycle_steps"),
                                               "onecycle": ("pct_start", "div_factor", "final_div_factor")}


def warmup_steps(cfg: TrainingConfig, steps_per_epoch: int) -> int:
    """Length of the linear warm-up in steps (``warmup_steps``, or ``warmup_epochs`` epochs)."""
    return cfg.warmup_steps or cfg.warmup_epochs * steps_per_epoch


def lr_at(cfg: TrainingConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate of ``step`` (0-based) under the configured schedule, times the linear
    warm-up factor ``(step + 1) / W`` during the first ``W`` warm-up steps."""
    lr = SCHEDULES[cfg.schedule](cfg, step, steps_per_epoch, total_steps)
    w = warmup_steps(cfg, steps_per_epoch)
    return lr * ((step + 1) / w) if step < w else lr


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over samples and outputs (``nn.MSELoss``)."""
    return (out - y).square().mean((1, 2))


def _ce(out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with integer labels ``[B]`` (``label_smoothing`` as in ``F.cross_entropy``)."""
    K, B, C = out.shape
    labels = y.reshape(K * B) if y.dim() == 2 else y.repeat(K)  # [K, B]: one teacher per member
    return F.cross_entropy(out.reshape(K * B, C), labels, reduction="none",
                           label_smoothing=label_smoothing).view(K, B).mean(1)


# ``loss(out_KxBxC, y) -> [K]``: each member's mean loss on the batch.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"mse": _mse, "ce": _ce}


def _half_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/2B) sum over the batch of the squared error summed over outputs (loss_reduction='half_sum')."""
    return (out - y).square().sum((1, 2)) / (2 * out.shape[1])


def loss_kind(loss: str, reduction: str) -> str:
    """The loss the steppers and the evaluation compute (``training.loss`` and ``.loss_reduction``):
    ``loss``, or ``mse_half_sum``."""
    return "mse_half_sum" if reduction == "half_sum" else loss


def member_loss(kind: str, label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``LOSSES[kind]``, or the half-sum MSE for ``mse_half_sum`` (see ``loss_kind``); with
    ``label_smoothing`` (cross-entropy only) the smoothed cross-entropy."""
    if label_smoothing:
        return partial(_ce, label_smoothing=label_smoothing)
    return _half_sum if kind == "mse_half_sum" else LOSSES[kind]
