"""Structured vs random data: one student size on small-teacher labels, permuted labels and a wide teacher.

Arms (same inputs, same student widths ``multiplier * teacher.widths``):

- ``structured``: labels from the small teacher;
- ``permuted``: the same training labels randomly permuted across samples (evaluation
  labels stay the teacher's: the evaluation loss measures generalisation);
- ``wide``: labels from an independent teacher ``multiplier`` times wider, as wide as the
  student, which is also the teacher measured against.

Tables: ``summary`` (arm x layer: matches per teacher node, winner spread, median fan-out
norm of all students at initialisation and, at the end, of the matched students (best
correlation > 0.9) and of the rest; final train/eval loss and the initial eval loss) and ``nodes`` (one row per arm,
member, layer and teacher node). Winner spread of teacher node ``k``: the students whose
best teacher is ``k`` ("attached"), how many there are and the participation ratio of
their fan-out norms ``(sum f)^2 / sum f^2`` (``fanout_eff``: about how many of them carry
``k``'s signal upward; 1 is winner-take-all).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.experiments import final_losses, final_rows
from teacherstudent.summary import read_table


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    m = base.student.multiplier
    return {
        "structured": base.replace(name=f"{base.name}.structured"),
        "permuted": base.replace(name=f"{base.name}.permuted", inputs={"labels": "permuted"}),
        "wide": base.replace(name=f"{base.name}.wide", inputs={"labels": "wide_teacher", "wide_factor": max(m, 2)}),
    }


def node_table(arm: str, folder: Path) -> pd.DataFrame:
    teacher = read_table(folder, "teacher_nodes")
    students = final_rows(folder, "student_nodes")
    s = students.assign(f=students.fanout_norm, f2=students.fanout_norm ** 2)
    g = s.groupby(["member", "layer", "best_teacher"]).agg(attached=("f", "size"), f_sum=("f", "sum"), f2_sum=("f2", "sum"))
    g = g.reset_index().rename(columns={"best_teacher": "teacher_node"})
    df = teacher.merge(g, on=["member", "layer", "teacher_node"], how="left")
    df["attached"] = df["attached"].fillna(0).astype(int)
    df["fanout_eff"] = np.where(df.f2_sum > 0, df.f_sum ** 2 / df.f2_sum, np.nan)
    df.insert(0, "arm", arm)
    return df[["arm", "run", "member", "layer", "teacher_node", "final_corr", "match_count", "attached", "fanout_eff"]]


def summary_row(arm: str, folder: Path, nodes: pd.DataFrame) -> pd.DataFrame:
    students = final_rows(folder, "student_nodes")
    all_steps = read_table(folder, "student_nodes")
    init = all_steps[all_steps.step == all_steps.step.min()]
    losses = final_losses(folder)
    rows = []
    for layer, n in nodes.groupby("layer"):
        st = students[students.layer == layer]
        matched = st[st.best_corr > 0.9].fanout_norm
        rest = st[st.best_corr <= 0.9].fanout_norm
        rows.append({
            "arm": arm, "layer": layer, "teacher_width": int(n.teacher_node.max() + 1),
            "student_width": int(st.student_node.max() + 1),
            "best_corr_mean": n.final_corr.mean(), "matches_per_node": n.match_count.mean(),
            "nodes_matched": (n.match_count > 0).mean(), "attached_per_node": n.attached.mean(),
            "fanout_eff": n.fanout_eff.mean(), "matched_students": len(matched) / st.member.nunique(),
            "fanout_init": init[init.layer == layer].fanout_norm.median(),
            "fanout_matched": matched.median() if len(matched) else np.nan,
            "fanout_rest": rest.median() if len(rest) else np.nan,
            **losses,
        })
    return pd.DataFrame(rows)


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    nodes = {arm: node_table(arm, folder) for arm, folder in runs.items()}
    summary = pd.concat([summary_row(arm, runs[arm], nodes[arm]) for arm in runs], ignore_index=True)
    return {"summary": summary, "nodes": pd.concat(nodes.values(), ignore_index=True)}
