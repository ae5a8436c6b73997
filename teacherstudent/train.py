"""Optimisers, learning-rate schedules and losses for stacked ensembles: three registries.

SGD (momentum, Nesterov, weight decay) and Adam are element-wise, so one
``torch.optim`` optimiser over the stacked ``[K, ...]`` parameters updates every member
exactly as its own optimiser would. The loss of a step is the sum over members of each
member's mean loss, so each member receives its own gradient.

Adding an optimiser, schedule or loss: write its function here (or in its own module) and
add one line to ``OPTIMIZERS``, ``SCHEDULES`` or ``LOSSES``; config validation reads the
names from these dicts. ``OPTIMIZER_FIELDS``/``SCHEDULE_FIELDS`` say which
``TrainingConfig`` fields each one reads, so a field set for another one is an error.
"""

from __future__ import annotations

import math
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


OPTIMIZERS: dict[str, Callable[[list[torch.Tensor], TrainingConfig], torch.optim.Optimizer]] = {
    "sgd": _sgd,
    "adam": _adam,
}
OPTIMIZER_FIELDS: dict[str, tuple[str, ...]] = {"sgd": ("momentum", "nesterov"), "adam": ("betas",)}


def make_optimizer(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return OPTIMIZERS[cfg.optimizer](params, cfg)


# A schedule maps (cfg, step, steps_per_epoch, total_steps) to the learning rate of ``step`` (0-based).
Schedule = Callable[["TrainingConfig", int, int, int], float]
SCHEDULES: dict[str, Schedule] = {
    "constant": lambda cfg, step, spe, total: cfg.lr,
    "piecewise": lambda cfg, step, spe, total: cfg.milestones[max(e for e in cfg.milestones if e <= step // spe)],
    "step": lambda cfg, step, spe, total: cfg.lr * cfg.gamma ** ((step // spe) // cfg.step_epochs),
    "cosine": lambda cfg, step, spe, total: 0.5 * cfg.lr * (1 + math.cos(math.pi * step / max(total, 1))),  # per step
}
SCHEDULE_FIELDS: dict[str, tuple[str, ...]] = {"piecewise": ("milestones",), "step": ("step_epochs", "gamma")}


def lr_at(cfg: TrainingConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate of ``step`` (0-based) under the configured schedule."""
    return SCHEDULES[cfg.schedule](cfg, step, steps_per_epoch, total_steps)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over samples and outputs (``nn.MSELoss``)."""
    return (out - y).square().mean((1, 2))


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with integer labels ``[B]``."""
    K, B, C = out.shape
    labels = y.reshape(K * B) if y.dim() == 2 else y.repeat(K)  # [K, B]: one teacher per member
    return F.cross_entropy(out.reshape(K * B, C), labels, reduction="none").view(K, B).mean(1)


# ``loss(out_KxBxC, y) -> [K]``: each member's mean loss on the batch.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"mse": _mse, "ce": _ce}


def _half_sum(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/2B) sum over the batch of the squared error summed over outputs (loss_reduction='half_sum')."""
    return (out - y).square().sum((1, 2)) / (2 * out.shape[1])


def loss_kind(cfg: TrainingConfig) -> str:
    """The loss the steppers and the evaluation compute: ``loss``, or ``mse_half_sum``."""
    return "mse_half_sum" if cfg.loss_reduction == "half_sum" else cfg.loss


def member_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``LOSSES[kind]``, or the half-sum MSE for ``mse_half_sum`` (see ``loss_kind``)."""
    return _half_sum if kind == "mse_half_sum" else LOSSES[kind]
