"""Assembly: a config and a device in, the ``Problem`` (teacher, data, students) out.

``build`` is the one place that turns a config into tensors; the stepper (steppers.py),
the loop (loop.py) and the run folder (store.py) take what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .architectures import ARCHITECTURES
from .config import ExperimentConfig
from .data import DataSource
from .ensemble import Ensemble
from .inputs import make_inputs
from .teacher import Teacher


@dataclass
class Problem:
    """What one run trains: the (data) teacher, its data on the device and the student ensemble."""

    cfg: ExperimentConfig
    device: torch.device
    dtype: torch.dtype
    teacher: Teacher
    data: DataSource
    ens: Ensemble
    positions: list[int]  # activations per node and sample of each hidden layer (mlp: 1, conv: P_l positions)

    @property
    def widths(self) -> list[int]:
        """Student hidden widths ``n_l`` (a pruned ensemble may be narrower than the config says)."""
        return [w.shape[1] for w in self.ens.weights[:-1]]

    @property
    def activation_widths(self) -> list[int]:
        """Activations per sample of each hidden layer and member: ``n_l`` (times ``P_l`` positions for conv)."""
        return [n * p for n, p in zip(self.widths, self.positions)]

    @property
    def teacher_widths(self) -> list[int]:
        """Widths of the teacher that is measured (``inputs.labels='wide_teacher'`` widens it)."""
        return list(self.teacher.widths)


def build(cfg: ExperimentConfig, device: torch.device, ensemble: Ensemble | None = None,
          teacher: Teacher | None = None) -> Problem:
    """Teacher, data and students of ``cfg`` on ``device`` (``ARCHITECTURES[cfg.arch]`` makes the
    teacher and the students); ``ensemble`` replaces the configured students (probes: pruned
    or re-randomised students)."""
    arch = ARCHITECTURES[cfg.arch]
    dtype = getattr(torch, cfg.training.dtype)
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    teacher = teacher if teacher is not None else arch.teacher(cfg, inputs)
    data = DataSource(cfg, teacher, inputs, device, dtype)
    if ensemble is None:
        ensemble = arch.students(cfg, teacher, data.x_eval.shape[1], device, dtype)
    for p in ensemble.trainable:
        p.requires_grad_(True)
    return Problem(cfg, device, dtype, teacher, data, ensemble, arch.ensemble_positions(ensemble))
