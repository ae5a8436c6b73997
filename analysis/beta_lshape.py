"""The multilayer L-shape in beta terms: effective fan-out strength sqrt(E[B_jj]) against best correlation.

One arm, the default setting with ``measure.theory_every`` on (``beta_lshape.toml``). Per hidden
layer, at initialisation and at the end (docs/science.md §4, theory statistics):

- ``lshape`` (the summary): student nodes split into aligned (best correlation > 0.9) and
  unaligned; their count and the median of ``beta_strength`` = sqrt(E[B_jj]) and of the
  fan-out norm in each group, pooled over the ensemble members; the L-shape predicts a large
  strength for aligned nodes and a strength near zero for the others at the end.
- ``ratios``: the diagonal / off-diagonal ratio of |E[beta]| for student-teacher (aligned
  pairs: each student node with its best teacher node) and student-student pairs, mean over
  members; specialisation predicts the student-teacher ratio grows with training.
- ``nodes``: the per-node rows (theory_nodes.parquet) at init and end, for plots.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.summary import read_table

ALIGNED = 0.9


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"default": base}


def _when(step: pd.Series, last: int) -> pd.Series:
    return step.map(lambda s: "init" if s == 0 else "end" if s == last else None)


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    lshape, ratios, nodes = [], [], []
    for arm, folder in runs.items():
        nd = read_table(folder, "theory_nodes").copy()
        th = read_table(folder, "theory").copy()
        last = int(nd.step.max())
        for df in (nd, th):
            df.insert(0, "arm", arm)
            df["when"] = _when(df.step, last)
        nd, th = nd[nd.when.notna()], th[th.when.notna()]
        nd["aligned"] = nd.best_corr > ALIGNED
        for (when, layer), g in nd.groupby(["when", "layer"], sort=False):
            row = {"arm": arm, "when": when, "step": int(g.step.iloc[0]), "layer": layer}
            for name, part in (("aligned", g[g.aligned]), ("unaligned", g[~g.aligned])):
                row[f"n_{name}"] = len(part)
                row[f"strength_median_{name}"] = part.beta_strength.median()
                row[f"fanout_median_{name}"] = part.fanout_norm.median()
            lshape.append(row)
        r = th[th.statistic == "diag_offdiag_ratio"].groupby(["arm", "when", "step", "layer", "pair"], sort=False).value.mean()
        ratios.append(r.unstack("pair").reset_index())
        nodes.append(nd)
    return {"lshape": pd.DataFrame(lshape), "ratios": pd.concat(ratios, ignore_index=True),
            "nodes": pd.concat(nodes, ignore_index=True)}
