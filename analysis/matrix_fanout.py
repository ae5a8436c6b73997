"""Luck Matters (2019), matrix simulator: fan-out norms of planted (lucky) and other nodes.

Arms: ``renorm`` (the preset ``luckmatters-2019-matrix``: every node's incoming weights and
bias renormalised to unit norm after every step, output layer included) and ``plain`` (the
same without renormalisation). The paper's claim: the planted nodes keep their fan-out
while the others' fan-out norms fall to 1e-4..1e-3.

Tables: ``summary`` (arm x group, group = lucky (planted) or other student nodes: fan-out
norm at initialisation (median) and at the end (min, 10%, 50%, 90% quantiles, max, fraction
below 1e-3), median best correlation at the end).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.summary import read_table


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"renorm": base,
            "plain": base.replace(name=f"{base.name}.plain", training={"renorm": "none"})}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    frames = []
    for arm, folder in runs.items():
        from teacherstudent.store import read_config

        lucky = read_config(folder)["student"]["lucky_nodes"]
        s = read_table(folder, "student_nodes")
        first, last = s[s.step == s.step.min()], s[s.step == s.step.max()]
        keys = ["member", "layer", "student_node"]
        final = last[keys + ["fanout_norm", "best_corr"]].rename(columns={"best_corr": "best_corr_final"})
        df = first[keys + ["fanout_norm"]].merge(final, on=keys, suffixes=("_init", "_final"))
        df["arm"] = arm
        df["group"] = ["lucky" if j < lucky else "other" for j in df.student_node]
        frames.append(df)
    nodes = pd.concat(frames, ignore_index=True)
    q = nodes.groupby(["arm", "group"])
    summary = pd.DataFrame({
        "nodes": q.size(),
        "fanout_init_median": q.fanout_norm_init.median(),
        "fanout_final_min": q.fanout_norm_final.min(),
        "fanout_final_q10": q.fanout_norm_final.quantile(0.1),
        "fanout_final_median": q.fanout_norm_final.median(),
        "fanout_final_q90": q.fanout_norm_final.quantile(0.9),
        "fanout_final_max": q.fanout_norm_final.max(),
        "below_1e-3": q.fanout_norm_final.apply(lambda f: (f < 1e-3).mean()),
        "best_corr_final_median": q.best_corr_final.median(),
    }).reset_index()
    return {"summary": summary, "nodes": nodes}
