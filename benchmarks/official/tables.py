"""The official scripts' saved statistics as our tidy ``metrics`` table (``store.TABLE_COLUMNS``).

``recon_multilayer.py`` saves per epoch ``eval_corrs``/``train_corrs``: one ``[students, teachers]``
matrix per hidden layer (index 0 before training, then after every epoch);
``recon_two_layer.py`` saves per seed a list of epochs with ``corr_eval``/``corr_train``
``[teachers, students]``. Each matrix becomes the per-layer rows our ``Alignment`` metric writes
(``best_corr_mean``, ``best_corr_min``, ``recovered_frac``, ``covered_frac``, ``match_count_mean``)
with the same thresholds, one member per seed, at ``step = epoch * steps_per_epoch``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from teacherstudent.store import TABLE_COLUMNS

SPLITS = {"eval": "eval", "train": "train"}


def layer_rows(corr_TxS: np.ndarray, recovered: float = 0.95, covered: float = 0.9) -> dict[str, float]:
    """Our per-layer alignment statistics of one ``[teachers, students]`` correlation matrix."""
    c = np.asarray(corr_TxS, dtype=np.float64)
    best = c.max(axis=1)
    return {"best_corr_mean": float(best.mean()), "best_corr_min": float(best.min()),
            "recovered_frac": float((best > recovered).mean()), "covered_frac": float((best > covered).mean()),
            "match_count_mean": float((c > covered).sum(axis=1).mean())}


def rows_of(run: str, member: int, epoch: int, steps_per_epoch: int, split: str, corrs_TxS, loss=None):
    for layer, c in enumerate(corrs_TxS):
        for metric, value in layer_rows(c).items():
            yield (run, member, epoch * steps_per_epoch, float(epoch), split, layer, metric, value)
    if loss is not None:
        yield (run, member, epoch * steps_per_epoch, float(epoch), split, None, "loss", float(loss))


def table(rows) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=list(TABLE_COLUMNS["metrics"]))
    df["layer"] = df["layer"].astype("Int64")
    return df


def multilayer_rows(stats: list[dict], run: str, member: int, steps_per_epoch: int):
    """Rows of one ``recon_multilayer.py`` trial (its saved ``data`` list)."""
    for epoch, s in enumerate(stats):
        if "exit" in s:  # the official code stops a trial whose loss went NaN
            return
        for split in SPLITS:
            corrs = [np.asarray(c).T for c in s[f"{split}_corrs"]]  # saved [students, teachers]
            yield from rows_of(run, member, epoch, steps_per_epoch, split, corrs, s.get(f"{split}_loss"))


def two_layer_rows(stats: list[dict], run: str, member: int, steps_per_epoch: int):
    """Rows of one seed of ``recon_two_layer.py`` (its ``stats.pickle`` entry)."""
    for epoch, s in enumerate(stats):
        for split in SPLITS:
            yield from rows_of(run, member, epoch, steps_per_epoch, split, [np.asarray(s[f"corr_{split}"])],
                               s.get(f"{split}_loss"))


def read_multilayer(path: Path) -> list[dict]:
    with open(path, "rb") as f:
        return pickle.load(f)["data"]


def read_two_layer(path: Path) -> dict[int, list[dict]]:
    import torch

    return torch.load(path, weights_only=False)


def bands(metrics: pd.DataFrame, metric: str = "best_corr_mean", split: str = "eval") -> pd.DataFrame:
    """Per (epoch, layer): min, mean and max of ``metric`` over members, and their count."""
    m = metrics[(metrics.metric == metric) & (metrics.split == split) & metrics.layer.notna()]
    g = m.groupby(["epoch", "layer"])["value"]
    return pd.DataFrame({"min": g.min(), "mean": g.mean(), "max": g.max(), "seeds": g.count()}).reset_index()
