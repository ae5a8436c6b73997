"""Luck Matters (2019), deep setting: per-layer mean best correlation over training.

One arm: the preset ``luckmatters-2019-deep`` (teacher [10, 15, 20, 25] drawn the 2019 way,
student 10x, SGD lr 0.05, batch 64, 100,000 samples). The paper's claim: the lowest layer
is recovered almost perfectly within the first epochs, higher layers later and less.

Tables: ``summary`` (layer x epoch in 1, 4, 10: mean best correlation as the mean over
members, its min and max over members, the analytic standard error from the evaluation
size, and the fraction of teacher nodes above 0.95) and ``curves`` (every measured epoch).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.summary import recovery_curves

EPOCHS = (1, 4, 10)


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"deep": base}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    return recovery_curves(runs["deep"], EPOCHS)
