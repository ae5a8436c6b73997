"""Deep dynamics for the paper figures: per-layer recovery with and without BatchNorm, luck, L-shape.

Arms: ``plain`` (the base config: the preset ``luckmatters-2019-deep`` with the full correlation
matrices kept after epochs 1, 2 and 4) and ``batchnorm`` (the same students with BatchNorm
after every hidden layer), and ``long`` (``plain`` for ``LONG`` times the epochs, 40 = the official
``recon_multilayer.py`` default ``--num_epoch``, on the first three seeds: F3's explanation arm,
whether the L-shape is a late-training picture). Figures F1 (recovery per layer), F2 (luck: the
final winner's rank at earlier steps) and F3 (L-shape: fan-out norm against best correlation)
read its tables.

Tables: ``curves`` (arm x epoch x layer: mean best correlation per member, the fraction of
teacher nodes recovered), ``ranks`` (arm x member x layer x teacher node x kept step: the
final winner's rank among all students of its layer by correlation with the teacher node
at that step, as a top-% ``100 * rank / n``, rank 1 = best) and ``nodes`` (``student_nodes``
at every kept step: fan-out norm and best correlation of every student node).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.experiments import longer
from teacherstudent.summary import read_table


LONG = 4  # the long arm's epochs, in multiples of the base's


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"plain": base, "batchnorm": base.replace(name=f"{base.name}.bn", student={"batchnorm": True}),
            "long": base.replace(name=f"{base.name}.long", training=longer(base, LONG),
                                 student={"seeds": list(base.student.seeds[:3])})}


def curves_table(arm: str, folder: Path) -> pd.DataFrame:
    m = read_table(folder, "metrics")
    m = m[m.layer.notna() & m.metric.isin(["best_corr_mean", "recovered_frac"])]
    wide = m.pivot_table(index=["step", "epoch", "layer", "member"], columns="metric", values="value").reset_index()
    wide.insert(0, "arm", arm)
    wide["layer"] = wide["layer"].astype(int)
    return wide[["arm", "member", "step", "epoch", "layer", "best_corr_mean", "recovered_frac"]]


def ranks_table(arm: str, folder: Path) -> pd.DataFrame:
    """Top-% rank of every teacher node's final winner at each kept step (from ``corr.npz``)."""
    with np.load(folder / "corr.npz") as z:
        corr = {k: z[k] for k in z.files if k.startswith("step_")}
    steps = sorted({int(k.split("_")[1]) for k in corr})
    layers = sorted({int(k.split("_")[3]) for k in corr})
    epoch = read_table(folder, "metrics").drop_duplicates("step").set_index("step").epoch
    rows = []
    for l in layers:
        final = corr[f"step_{steps[-1]}_layer_{l}"]  # [K, m, n]
        winner = final.argmax(axis=2)  # [K, m]
        for s in steps:
            c = corr[f"step_{s}_layer_{l}"]
            own = np.take_along_axis(c, winner[..., None], axis=2)  # the winner's correlation
            rank = (c > own).sum(axis=2) + 1  # 1 = the best student at step s
            pct = 100.0 * rank / c.shape[2]
            for k in range(c.shape[0]):
                for t in range(c.shape[1]):
                    rows.append({"arm": arm, "member": k, "layer": l, "teacher_node": t, "step": s,
                                 "epoch": float(epoch.get(s, np.nan)), "winner_rank_pct": float(pct[k, t])})
    return pd.DataFrame(rows)


def nodes_table(arm: str, folder: Path) -> pd.DataFrame:
    s = read_table(folder, "student_nodes")
    epoch = read_table(folder, "metrics").drop_duplicates("step").set_index("step").epoch
    s = s.assign(arm=arm, epoch=s.step.map(epoch).astype(float))
    return s[["arm", "member", "layer", "student_node", "step", "epoch", "best_corr", "fanout_norm"]]


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    curves = pd.concat([curves_table(a, f) for a, f in runs.items()], ignore_index=True)
    ranks = pd.concat([ranks_table(a, f) for a, f in runs.items()], ignore_index=True)
    nodes = pd.concat([nodes_table(a, f) for a, f in runs.items()], ignore_index=True)
    return {"curves": curves, "ranks": ranks, "nodes": nodes}
