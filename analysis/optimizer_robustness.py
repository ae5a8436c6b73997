"""Optimiser robustness: do the specialisation numbers survive Adam, warm-up and the init scale?

Arms: ``sgd`` (the base config: plain SGD, lr 0.05, constant), ``sgd_warmup`` (the same with
a linear warm-up over the first ``WARMUP_EPOCHS`` epochs), ``adam`` (Adam, lr ``ADAM_LR``) and
``adam_warmup``; the TOML's sweep multiplies the students' initial weights by
``student.init_scale`` (0.5, 1, 2). The question a reviewer asks first: is specialisation
(winners reaching the teacher nodes, the L-shape of fan-out against alignment) a property of
the teacher-student problem, or of plain SGD from PyTorch's default init?

Tables (the sweep adds the ``student.init_scale`` column): ``summary`` (arm x init_scale x
layer, means over members): ``best_corr_mean`` (mean
over teacher nodes of the best final correlation), ``recovered_frac`` (teacher nodes whose
best final correlation exceeds ``measure.recovered``), ``aligned_frac`` (student nodes whose
best correlation reaches ``measure.covered``), the median final fan-out norm of aligned and
of unaligned student nodes and their ratio (the L-shape: aligned nodes keep their fan-out,
the others' shrinks), and the final losses; ``nodes`` (one row per arm, init_scale, member,
layer, student node at the end). Student nodes are *aligned* when their best final
correlation reaches ``measure.covered``; ``fanout_ratio`` is NaN when one group is empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from teacherstudent.config import ExperimentConfig, build_config
from teacherstudent.experiments import final_losses
from teacherstudent.store import read_json
from teacherstudent.summary import read_table

ADAM_LR = 0.002
WARMUP_EPOCHS = 4


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    adam = {"optimizer": "adam", "lr": ADAM_LR}
    warm = {"warmup_epochs": WARMUP_EPOCHS}
    return {
        "sgd": base.replace(name=f"{base.name}.sgd"),
        "sgd_warmup": base.replace(name=f"{base.name}.sgdwarm", training=warm),
        "adam": base.replace(name=f"{base.name}.adam", training=adam),
        "adam_warmup": base.replace(name=f"{base.name}.adamwarm", training={**adam, **warm}),
    }


def summary_rows(arm: str, folder: Path) -> tuple[list[dict], pd.DataFrame]:
    cfg = build_config(read_json(folder / "config.json"))
    recovered, covered = cfg.measure.recovered, cfg.measure.covered
    t = read_table(folder, "teacher_nodes")
    s = read_table(folder, "student_nodes")
    s = s[s.step == s.step.max()].copy()
    s["aligned"] = s.best_corr >= covered
    s.insert(0, "arm", arm)
    rows = []
    for layer, g in s.groupby("layer"):
        tl = t[t.layer == layer]
        al, un = g[g.aligned].fanout_norm, g[~g.aligned].fanout_norm
        rows.append({"arm": arm, "layer": int(layer),
                     "best_corr_mean": tl.final_corr.mean(), "recovered_frac": (tl.final_corr > recovered).mean(),
                     "aligned_frac": g.aligned.mean(),
                     "fanout_aligned_median": al.median() if len(al) else np.nan,
                     "fanout_unaligned_median": un.median() if len(un) else np.nan,
                     "fanout_ratio": al.median() / un.median() if len(al) and len(un) else np.nan,
                     **final_losses(folder)})
    return rows, s[["arm", "run", "member", "layer", "student_node", "best_corr", "fanout_norm", "aligned"]]


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    rows, nodes = [], []
    for arm, folder in runs.items():
        r, n = summary_rows(arm, folder)
        rows += r
        nodes.append(n)
    return {"summary": pd.DataFrame(rows), "nodes": pd.concat(nodes, ignore_index=True)}
