"""Optimisers, learning-rate schedules and losses for stacked ensembles.

SGD (momentum, Nesterov, weight decay) and Adam are element-wise, so one
``torch.optim`` optimiser over the stacked ``[K, ...]`` parameters updates every member
exactly as its own optimiser would. The loss of a step is the sum over members of each
member's mean loss, so each member receives its own gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import TrainingConfig


def make_optimizer(params: list[torch.Tensor], cfg: TrainingConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=True)


def lr_at(cfg: TrainingConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate of ``step`` (0-based) under the configured schedule."""
    epoch = step // steps_per_epoch
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "piecewise":
        return cfg.milestones[max(e for e in cfg.milestones if e <= epoch)]
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_epochs)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * step / max(total_steps, 1)))  # cosine, per step


def member_loss(kind: str):
    """``loss(out_KxBxC, y) -> [K]``: each member's mean loss on the batch.

    ``mse``: mean over samples and outputs (``nn.MSELoss``); ``ce``: cross-entropy with
    integer labels ``[B]``.
    """
    if kind == "mse":
        def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (out - y).square().mean((1, 2))
        return mse

    def ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        K, B, C = out.shape
        return F.cross_entropy(out.reshape(K * B, C), y.repeat(K), reduction="none").view(K, B).mean(1)
    return ce
