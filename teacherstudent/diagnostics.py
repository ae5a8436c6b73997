"""Teacher diagnostics (``teacherstudent teacher inspect``): does the papers' assumption hold?

The theory assumes two teacher nodes of one layer are rarely active together (sparse
firing). For the teacher that labels a config's data (``labels.data_teacher``), on the
run's own evaluation inputs, per hidden layer ``l`` with ``m_l`` nodes:

- firing fraction of node ``k``: ``P(z_k > 0)`` (``z`` the pre-activation), against the
  configured target ``teacher.firing``; ``dead``: nodes that never fire;
- co-activation rate of a pair ``k != k'``: ``P(z_k > 0 and z_k' > 0)``, its mean and
  max over pairs, and the mean ``f_k f_k'`` that independent firing would give;
- bias signs: how many biases are negative, zero and positive;
- output scale: mean and standard deviation of the outputs (standardised: 0 and 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .config import ExperimentConfig
from .seeds import Stream, generator
from .inputs import make_inputs
from .architectures import ARCHITECTURES


@dataclass(frozen=True)
class TeacherReport:
    """``layers``: one row per hidden layer; ``outputs``: output statistics; ``samples``: inputs used."""

    layers: pd.DataFrame
    outputs: dict[str, float]
    samples: int
    input_dim: int


def coactivation(active_NxM: torch.Tensor) -> torch.Tensor:
    """``[m, m]`` rates ``P(node k and node k' both active)`` over the ``N`` samples."""
    a = active_NxM.double()
    return a.T @ a / a.shape[0]


@torch.no_grad()
def inspect_teacher(cfg: ExperimentConfig, samples: int | None = None) -> TeacherReport:
    """Statistics of the data teacher of ``cfg`` on its evaluation inputs (``samples`` of them; default the run's)."""
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    teacher = ARCHITECTURES[cfg.arch].teacher(cfg, inputs)  # conv: channels, positions as samples
    n = samples or cfg.inputs.eval_samples
    x = inputs.sample(n, generator(cfg.inputs.seed, Stream.EVAL), split="eval")
    hidden, y = teacher.forward(x)
    rows = []
    targets = cfg.teacher.firing_per_layer
    for l, (h, b) in enumerate(zip(hidden, teacher.biases[:-1])):
        active = h > 0  # post > 0 iff pre > 0, for ReLU and leaky ReLU alike
        f = active.double().mean(0)
        m = f.shape[0]
        P = coactivation(active)
        off = ~torch.eye(m, dtype=torch.bool)
        indep = torch.outer(f, f)[off]
        rows.append({
            "layer": l, "width": m, "firing_target": targets[l] if cfg.teacher.bias else float("nan"),
            "firing_mean": f.mean().item(), "firing_min": f.min().item(), "firing_max": f.max().item(),
            "dead": int((f == 0).sum()),
            "coact_mean": P[off].mean().item() if m > 1 else float("nan"),
            "coact_max": P[off].max().item() if m > 1 else float("nan"),
            "coact_independent": indep.mean().item() if m > 1 else float("nan"),
            "bias_neg": int((b < 0).sum()), "bias_zero": int((b == 0).sum()), "bias_pos": int((b > 0).sum()),
        })
    outputs = {"outputs": y.shape[1], "mean": y.mean().item(), "std": y.std(0).mean().item(),
               "abs_mean": y.abs().mean().item(), "abs_max": y.abs().max().item()}
    return TeacherReport(pd.DataFrame(rows), outputs, n, x.shape[1])
