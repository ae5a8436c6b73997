"""Convolutional teacher and students: per-layer mean best correlation over training.

One arm: a conv teacher of three 3x3 layers ([4, 6, 8] channels, stride 1, padding 1, tuned
biases: each channel fires on half of the reference inputs x positions) on 8x8 Gaussian
images, 10 standardised outputs; students 4x wider per layer ([16, 24, 32] channels),
trained with SGD (momentum) on a fixed training set. Channels are the nodes: a channel's
correlation counts every position of every evaluation image as a sample. The question:
do convolutional students recover the teacher's channels bottom-up, as the MLP students
of ``luckmatters_deep`` recover nodes?

Tables: ``summary`` (layer x epoch in ``EPOCHS``: mean best correlation over members, its min
and max over members, the evaluation-size standard error, the fraction of teacher channels
above 0.95) and ``curves`` (every measured epoch).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from teacherstudent.config import ExperimentConfig
from teacherstudent.summary import recovery_curves

EPOCHS = (1, 4, 8)


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"conv": base}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    return recovery_curves(runs["conv"], EPOCHS)
