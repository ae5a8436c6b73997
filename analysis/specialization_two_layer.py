"""Student Specialization (2020), two layers: success rate against strength decay and over-parameterisation.

Arms: ``teacher.strength_decay`` p in {0, 1, 2} x ``student.multiplier`` in {1, 2, 5}, each
an ensemble with one teacher per member (``teacher.seeds``), so every statistic is over
independent teachers. The paper's claim: with finite width and input dimension the student
recovers the teacher's nodes; weak nodes (large p) are recovered later or not at all, and
more over-parameterisation recovers more.

Tables: ``success`` (p x multiplier x epoch in 5 and the last: mean over teachers of the
number of the 10 teacher nodes recovered, best correlation > ``measure.recovered``, and its
min and max over teachers) and ``order`` (p x multiplier: Spearman correlation between a
teacher node's strength rank and the step at which its winner first passed
``measure.covered``, never counting as last; mean over teachers).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.experiments import spearman
from teacherstudent.summary import read_table

DECAYS = (0.0, 1.0, 2.0)
MULTIPLIERS = (1, 2, 5)


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {f"p{p:g}_x{k}": base.replace(name=f"{base.name}.p{p:g}x{k}", teacher={"strength_decay": p},
                                         student={"multiplier": k})
            for p in DECAYS for k in MULTIPLIERS}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    success, order = [], []
    for arm, folder in runs.items():
        p, k = float(arm[1:arm.index("_")]), int(arm[arm.index("x") + 1:])
        m = read_table(folder, "metrics")
        rec = m[(m.metric == "recovered_frac") & (m.layer == 0)]
        last = rec.epoch.max()
        for epoch in (5.0, last):
            at = rec[rec.epoch.round(6) == epoch]
            n = at.value * 10  # teacher nodes recovered of 10
            success.append({"p": p, "multiplier": k, "epoch": epoch, "recovered_of_10": n.mean(),
                            "min": n.min(), "max": n.max(), "teachers": len(at)})
        t = read_table(folder, "teacher_nodes")
        step_col = sorted(c for c in t.columns if c.startswith("step_corr_"))[0]
        rhos = []
        for _, g in t.groupby("member"):
            strength_rank = (-g.teacher_fanout_norm).rank(method="first")
            steps = g[step_col].astype("Float64").fillna(np.inf).astype(float)
            rhos.append(spearman(strength_rank, steps))
        rhos = [r for r in rhos if not np.isnan(r)]  # NaN: a member that recovered no teacher node
        order.append({"p": p, "multiplier": k, "rho_rank_step": float(np.mean(rhos)) if rhos else float("nan")})
    return {"success": pd.DataFrame(success), "order": pd.DataFrame(order)}
