"""When to measure and checkpoint: sets of step numbers (0 = initialisation).

The config has checked that ``corr_steps`` and ``checkpoint_steps`` lie in 0..total.
"""

from __future__ import annotations

import numpy as np

from .config import ExperimentConfig, MeasureConfig


def measure_steps(m: MeasureConfig, steps_per_epoch: int, total: int) -> set[int]:
    """Initialisation, the scheduled steps, the requested ``corr_steps`` and the last step."""
    if m.every == "epoch":
        steps = set(range(0, total + 1, steps_per_epoch))
    elif m.every == "steps":
        steps = set(range(0, total + 1, m.every_steps))
    else:
        steps = {0} | {int(s) for s in np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), m.log_points)))}
    return {s for s in steps if s <= total} | set(m.corr_steps) | {0, total}


def theory_steps(m: MeasureConfig, total: int) -> set[int]:
    """Steps of the theory statistics (theory.py): none, or init, the scheduled steps and the last step."""
    if m.theory_every == "none":
        return set()
    if m.theory_every == "steps":
        steps = set(range(0, total + 1, m.theory_every_steps))
    else:
        steps = {int(s) for s in np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), m.theory_log_points)))}
    return {s for s in steps if s <= total} | {0, total}


def event_steps(cfg: ExperimentConfig, steps_per_epoch: int, total: int) -> list[int]:
    """Every step after which the loop pauses: measurements, kept checkpoints and theory statistics."""
    return sorted((measure_steps(cfg.measure, steps_per_epoch, total) | set(cfg.training.checkpoint_steps)
                   | theory_steps(cfg.measure, total)) - {0})
