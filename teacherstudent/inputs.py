"""Input distributions (SCIENCE.md section 3): a plain-dict registry, one small class each.

Every distribution draws from an explicit ``torch.Generator`` (CPU), so the same seed
gives the same samples on every device. ``dim(d)`` says the input dimension a kind
produces given the teacher's ``d`` (a kind with a fixed dimension ignores ``d``).
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import InputsConfig


class InputDistribution:
    """Base class: ``sample(n, gen) -> x_NxD`` (float64, CPU)."""

    def __init__(self, cfg: InputsConfig, d: int, seed: int):
        self.cfg = cfg
        self.d = d

    @staticmethod
    def dim(cfg: InputsConfig, d: int) -> int:
        return d

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class Gaussian(InputDistribution):
    """x ~ N(0, sigma^2 I_d)."""

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.d, generator=gen, dtype=torch.float64) * self.cfg.sigma


INPUTS: dict[str, Callable[..., InputDistribution]] = {"gaussian": Gaussian}


def make_inputs(cfg: InputsConfig, d: int, seed: int) -> InputDistribution:
    """The distribution named by ``cfg.kind`` (``seed`` fixes any structure it draws, e.g. cluster centres)."""
    return INPUTS[cfg.kind](cfg, INPUTS[cfg.kind].dim(cfg, d), seed)


def input_dim(cfg: InputsConfig, d: int) -> int:
    return INPUTS[cfg.kind].dim(cfg, d)
