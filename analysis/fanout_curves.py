"""Lucky by construction, two layers: fan-out norms of the planted and the other student nodes over training.

One arm: the two-layer setting of ``lucky_fanout`` (20 of 40 student nodes planted at the
teacher's nodes plus noise), with the student-node table kept at log-spaced steps
(``measure.corr_steps``). The claim (Luck Matters, 2019): the planted (aligned) nodes keep
fan-out norms around 1 while the others' shrink by orders of magnitude (winner-take-all).

Tables: ``curves`` (member x student node x kept step: fan-out norm, best correlation and
group, ``lucky`` for the planted nodes, ``other`` for the rest).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig, build_config
from teacherstudent.lucky import lucky_per_layer
from teacherstudent.store import read_json
from teacherstudent.summary import read_table


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"lucky": base}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    folder = runs["lucky"]
    c = build_config(read_json(folder / "config.json"))
    k = lucky_per_layer(c.student.lucky_nodes, len(c.teacher.widths))
    s = read_table(folder, "student_nodes")
    s = s.assign(group=["lucky" if j < k[l] else "other" for l, j in zip(s.layer, s.student_node)])
    return {"curves": s[["member", "layer", "student_node", "step", "group", "fanout_norm", "best_corr"]]}
