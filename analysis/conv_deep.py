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
from teacherstudent.summary import read_table

EPOCHS = (1, 4, 8)


def arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]:
    return {"conv": base}


def tables(runs: dict[str, Path]) -> dict[str, pd.DataFrame]:
    m = read_table(runs["conv"], "metrics")
    m = m[m.layer.notna() & m.metric.isin(["best_corr_mean", "best_corr_mean_se", "recovered_frac"])]
    wide = m.pivot_table(index=["epoch", "layer", "member"], columns="metric", values="value").reset_index()
    g = wide.groupby(["epoch", "layer"])
    curves = pd.DataFrame({"best_corr_mean": g.best_corr_mean.mean(), "best_corr_min_over_seeds": g.best_corr_mean.min(),
                           "best_corr_max_over_seeds": g.best_corr_mean.max(), "se_eval": g.best_corr_mean_se.mean(),
                           "recovered_frac": g.recovered_frac.mean(), "members": g.size()}).reset_index()
    summary = curves[curves.epoch.round(6).isin(EPOCHS)].reset_index(drop=True)
    return {"summary": summary, "curves": curves}
