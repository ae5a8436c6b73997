"""Assembly: a config and a device in, the ``Problem`` (teacher, data, students) out.

``build`` is the one place that turns a config into tensors; the stepper (steppers.py),
the loop (loop.py) and the run folder (store.py) take what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ExperimentConfig
from .data import DataSource
from .ensemble import Ensemble
from .inputs import make_inputs
from .labels import data_teacher
from .lucky import plant_lucky
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

    @property
    def widths(self) -> list[int]:
        """Student hidden widths ``n_l`` (a pruned ensemble may be narrower than the config says)."""
        return [w.shape[1] for w in self.ens.weights[:-1]]

    @property
    def teacher_widths(self) -> list[int]:
        """Widths of the teacher that is measured (``inputs.labels='wide_teacher'`` widens it)."""
        return list(self.teacher.widths)


def build(cfg: ExperimentConfig, device: torch.device, ensemble: Ensemble | None = None,
          teacher: Teacher | None = None) -> Problem:
    """Teacher, data and students of ``cfg`` on ``device``; ``ensemble`` replaces the
    configured students (probes: pruned or re-randomised students)."""
    dtype = getattr(torch, cfg.training.dtype)
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    teacher = teacher if teacher is not None else data_teacher(cfg, inputs)  # inputs.labels may widen it
    data = DataSource(cfg, teacher, inputs, device, dtype)
    if ensemble is None:
        widths = [cfg.student.multiplier * m for m in cfg.teacher.widths]
        d, outputs = data.x_eval.shape[1], teacher.outputs
        ensemble = Ensemble.create(widths, d, outputs, cfg.student, device, dtype)
        plant_lucky(ensemble, teacher, cfg.student)  # student.lucky_nodes (a no-op at 0)
    for p in ensemble.trainable:
        p.requires_grad_(True)
    return Problem(cfg, device, dtype, teacher, data, ensemble)
