"""Strength decay: the step at which each teacher node is recovered against its strength rank.

Arms: ``teacher.strength_decay`` p = 0 (control), 1 and 2 (column ``i`` of every layer
above the first divided by ``(1+i)^p``: node 0 strong, later nodes weak). The strength of
teacher node ``k`` is its fan-out norm (``teacher_fanout_norm``); rank 1 = strongest.

Tables: ``summary`` (p x layer: Spearman correlation between strength rank and the step at
which the winner's correlation first reached 0.9, a node never reaching it counting as
last; Spearman between strength and final best correlation; fraction covered; each as the
mean over ensemble members) and ``nodes`` (one row per p, member, layer, teacher node).
The theory predicts a positive ``rho_rank_step`` (weak nodes later) and a positive
``rho_strength_corr`` when p > 0.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.experiments import final_losses, spearman
from teacherstudent.summary import read_table

DECAYS = (0.0, 1.0, 2.0)


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {f"p{p:g}": base.replace(name=f"{base.name}.p{p:g}", teacher={"strength_decay": p}) for p in DECAYS}


def node_table(arm: str, folder: Path) -> pd.DataFrame:
    t = read_table(folder, "teacher_nodes").copy()
    t.insert(0, "arm", arm)
    t.insert(1, "p", float(arm[1:]))
    t["strength"] = t.teacher_fanout_norm
    t["strength_rank"] = t.groupby(["member", "layer"]).strength.rank(ascending=False, method="first").astype(int)
    return t[["arm", "p", "run", "member", "layer", "teacher_node", "strength", "strength_rank", "init_corr",
              "final_corr", "step_corr_0.9", "step_corr_0.95", "match_count"]]


def summary_rows(arm: str, folder: Path, nodes: pd.DataFrame) -> list[dict]:
    last = int(read_table(folder, "metrics").step.max())
    rows = []
    for layer, g in nodes.groupby("layer"):
        per_member = pd.DataFrame([
            {"step": spearman(m.strength_rank, m["step_corr_0.9"].astype("Float64").fillna(last + 1).to_numpy(dtype=float)),
             "corr": spearman(m.strength, m.final_corr)}
            for _, m in g.groupby("member")]).mean()  # NaN (a constant side) skipped
        rho_step, rho_corr = per_member["step"], per_member["corr"]
        rows.append({"arm": arm, "p": float(arm[1:]), "layer": layer, "teacher_width": int(g.teacher_node.max() + 1),
                     "rho_rank_step": rho_step, "rho_strength_corr": rho_corr,
                     "covered": (g.final_corr > 0.9).mean(), "best_corr_mean": g.final_corr.mean(),
                     "strength_max_over_min": g.strength.max() / g.strength.min(), **final_losses(folder)})
    return rows


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    nodes = {arm: node_table(arm, folder) for arm, folder in runs.items()}
    summary = pd.DataFrame([r for arm, folder in runs.items() for r in summary_rows(arm, folder, nodes[arm])])
    return {"summary": summary, "nodes": pd.concat(nodes.values(), ignore_index=True)}
