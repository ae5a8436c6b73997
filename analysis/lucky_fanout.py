"""Lucky by construction: students with some nodes at the teacher's weights; the others' fan-out shrinks.

Arms: ``lucky`` (``student.lucky_nodes`` of the base config: nodes ``0..k-1`` of every
hidden layer start as noisy copies of teacher nodes ``0..k-1``, with the teacher's fan-out)
and ``control`` (the same student, all nodes random). With one hidden layer and
``multiplier = 2`` this is the papers' experiment: the lucky nodes keep fan-out norms
around 1 while the others' fall toward 1e-4..1e-3. A node that never fires gets no
gradient, so the fan-out of dead unlucky nodes stays where it started.

Tables: ``summary`` (arm x layer x group, group = lucky or other student nodes: fan-out
norm at initialisation (median) and at the end (10%, 50%, 90% quantiles, fraction below
1e-3), median best correlation at the end) and
``nodes`` (one row per arm, member, layer, student node: initial and final fan-out norm
and best correlation).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig, build_config
from teacherstudent.lucky import lucky_per_layer
from teacherstudent.store import read_json
from teacherstudent.summary import read_table


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {
        "lucky": base.replace(name=f"{base.name}.lucky"),
        "control": base.replace(name=f"{base.name}.control", student={"lucky_nodes": 0, "lucky_noise": 0.0}),
    }


def node_table(arm: str, folder: Path, k: tuple[int, ...]) -> pd.DataFrame:
    s = read_table(folder, "student_nodes")
    first, last = s[s.step == s.step.min()], s[s.step == s.step.max()]
    keys = ["run", "member", "layer", "student_node"]
    df = first[keys + ["fanout_norm", "best_corr"]].merge(last[keys + ["fanout_norm", "best_corr"]], on=keys,
                                                          suffixes=("_init", "_final"))
    df.insert(0, "arm", arm)
    df["group"] = ["lucky" if j < k[l] else "other" for l, j in zip(df.layer, df.student_node)]
    return df


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    frames = []
    for arm, folder in runs.items():
        c = build_config(read_json(folder / "config.json"))
        k = lucky_per_layer(c.student.lucky_nodes, len(c.teacher.widths)) if arm == "lucky" else (0,) * len(c.teacher.widths)
        frames.append(node_table(arm, folder, k))
    nodes = pd.concat(frames, ignore_index=True)
    q = nodes.groupby(["arm", "layer", "group"])
    summary = pd.DataFrame({
        "students": q.size() / q.member.nunique(),
        "fanout_init_median": q.fanout_norm_init.median(),
        "fanout_final_q10": q.fanout_norm_final.quantile(0.1),
        "fanout_final_median": q.fanout_norm_final.median(),
        "fanout_final_q90": q.fanout_norm_final.quantile(0.9),
        "below_1e-3": q.fanout_norm_final.apply(lambda f: (f < 1e-3).mean()),
        "best_corr_final_median": q.best_corr_final.median(),
    }).reset_index()
    return {"summary": summary, "nodes": nodes}
