"""Over-parameterisation: fraction of teacher nodes recovered against the student multiplier, per layer.

Two arms swept over ``student.multiplier`` in 1, 2, 5, 10, 20 (``[sweep.grid]``): ``deep``, the
preset ``luckmatters-2019-deep`` at a fixed step budget (4 epochs), and ``long``, the same at
``LONG`` times the steps. The claim (Luck Matters, 2019): wider students recover more teacher
nodes at the same number of steps, lower layers first. ``long`` tests why the widest students
recover less than 5x ones at 4 epochs (issue 19): if it is the budget, the fall moves out or
goes away with more steps.

Tables: ``recovered`` (arm x multiplier x member x layer at the last step: fraction of teacher
nodes with best correlation above ``measure.recovered``, mean best correlation).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.experiments import longer
from teacherstudent.summary import read_table


LONG = 4  # the long arm's step budget, in multiples of the base's


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"deep": base, "long": base.replace(training=longer(base, LONG))}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    parts = []
    for arm, folder in runs.items():
        m = read_table(folder, "metrics")
        m = m[m.layer.notna() & m.metric.isin(["best_corr_mean", "recovered_frac"]) & (m.step == m.step.max())]
        wide = m.pivot_table(index=["step", "layer", "member"], columns="metric", values="value").reset_index()
        wide["layer"] = wide["layer"].astype(int)
        wide.insert(0, "arm", arm)
        parts.append(wide[["arm", "member", "step", "layer", "recovered_frac", "best_corr_mean"]])
    return {"recovered": pd.concat(parts, ignore_index=True)}
