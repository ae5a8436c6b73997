"""Lottery tickets from lucky nodes (figure F6): eval loss against keep fraction for five ways to retrain a pruned student.

One parent arm (the default Gaussian setting, weights also kept after the first epoch) and,
through ``probes()``, node-pruning lottery probes per layer at every keep fraction:
``rewind`` (the most teacher-aligned nodes, rewound to init), ``rescaled`` (their initial
weights rescaled to the pruned fan-in's init scale), ``late`` (rewound to the end of the
first epoch), ``reinit`` (the pruned shape with fresh weights) and ``random`` (random
nodes, rewound to init). The standalone ``analysis/lottery_probe.py`` runs more arms and
pairs; this experiment is its core, as a named experiment the figures can rebuild.

Tables: ``members`` (keep x arm x member: final eval and train loss, the fraction of the
parent's lucky nodes, the teacher nodes' final winners, that were kept, and the Jaccard
overlap of kept and lucky nodes; the parent as arm ``full`` at keep 1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.probes import member_summary

KEEPS = (0.1, 0.2, 0.3)
ARMS = {"rewind": ("alignment", "init"), "rescaled": ("alignment", "rescaled"), "late": ("alignment", "step"),
        "reinit": ("alignment", "reinit"), "random": ("random", "init")}


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"parent": base}


def probes(base: ExperimentConfig) -> dict[str, tuple[str, dict]]:
    late = f"step:{base.training.checkpoint_steps[0]}"
    return {f"{arm}@{keep:g}": ("parent", {"kind": "lottery", "keep": keep, "by": by,
                                          "rewind": late if rewind == "step" else rewind})
            for keep in KEEPS for arm, (by, rewind) in ARMS.items()}


def _members(folder: Path, keep: float, arm: str) -> pd.DataFrame:
    m = member_summary(folder)
    cols = [c for c in ("member", "eval_loss", "train_loss", "winners_kept_frac", "lucky_jaccard") if c in m.columns]
    m = m[cols].copy()
    m.insert(0, "arm", arm)
    m.insert(0, "keep", keep)
    return m


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    frames = [_members(runs["parent"], 1.0, "full")]
    for label, folder in runs.items():
        if label != "parent":
            arm, keep = label.split("@")
            frames.append(_members(folder, float(keep), arm))
    return {"members": pd.concat(frames, ignore_index=True)}
