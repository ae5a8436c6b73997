"""Over-parameterisation: fraction of teacher nodes recovered against the student multiplier, per layer.

One arm (the preset ``luckmatters-2019-deep`` at a fixed step budget) swept over
``student.multiplier`` in 1, 2, 5, 10, 20 (``[sweep.grid]``). The claim (Luck Matters, 2019):
wider students recover more teacher nodes at the same number of steps, lower layers first.

Tables: ``recovered`` (multiplier x member x layer at the last step: fraction of teacher nodes
with best correlation above ``measure.recovered``, mean best correlation).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.summary import read_table


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"deep": base}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    m = read_table(runs["deep"], "metrics")
    m = m[m.layer.notna() & m.metric.isin(["best_corr_mean", "recovered_frac"]) & (m.step == m.step.max())]
    wide = m.pivot_table(index=["step", "layer", "member"], columns="metric", values="value").reset_index()
    wide["layer"] = wide["layer"].astype(int)
    return {"recovered": wide[["member", "step", "layer", "recovered_frac", "best_corr_mean"]]}
