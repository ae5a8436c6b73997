"""When to measure and checkpoint: sets of step numbers (0 = initialisation)."""

from __future__ import annotations

import numpy as np

from .config import ExperimentConfig, MeasureConfig
from .errors import UserError


def measure_steps(m: MeasureConfig, steps_per_epoch: int, total: int) -> set[int]:
    """Initialisation, the scheduled steps, the requested ``corr_steps`` and the last step."""
    if m.every == "epoch":
        steps = set(range(0, total + 1, steps_per_epoch))
    elif m.every == "steps":
        steps = set(range(0, total + 1, m.every_steps))
    else:
        steps = {0} | {int(s) for s in np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), m.log_points)))}
    late = [s for s in m.corr_steps if s > total or s < 0]
    if late:
        raise UserError(f"measure.corr_steps {late} lie outside 0..{total} (the last step); drop them or train longer")
    return {s for s in steps if s <= total} | set(m.corr_steps) | {0, total}


def event_steps(cfg: ExperimentConfig, steps_per_epoch: int, total: int) -> list[int]:
    """Every step after which the loop pauses: measurements and kept checkpoints."""
    late = [s for s in cfg.training.checkpoint_steps if s > total or s < 0]
    if late:
        raise UserError(f"training.checkpoint_steps {late} lie outside 0..{total}; drop them or train longer")
    return sorted((measure_steps(cfg.measure, steps_per_epoch, total) | set(cfg.training.checkpoint_steps)) - {0})
