"""Per-layer summaries of a finished run, from its ``metrics.parquet``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import UserError
from .folder import run_status
from .reader import read_config, read_table_file

LAYER_METRICS = ["best_corr_mean", "best_corr_min", "recovered_frac", "covered_frac", "match_count_mean"]


def read_table(folder: Path, table: str) -> pd.DataFrame:
    """``<table>.parquet`` of a run, checked (present, readable, its columns, rows); else one ``UserError``
    that names the file and what to do."""
    path = folder / f"{table}.parquet"
    if not path.exists():
        state = run_status(folder).get("state")
        if state == "finished":  # a finished run lost a file: not something `run` would redo
            return read_table_file(path, table)
        raise UserError(f"{folder} has no {table}.parquet (run state: {state}); finish it with `teacherstudent run` first")
    return read_table_file(path, table)


def layer_summary(folder: Path) -> pd.DataFrame:
    """At the last step: per hidden layer, the mean over members of each layer metric
    (``best_corr_mean_std`` is the spread of ``best_corr_mean`` over members)."""
    read_config(folder)  # a damaged config.json is an error, not a table without its config
    m = read_table(folder, "metrics")
    last = m[(m.step == m.step.max()) & m.layer.notna() & m.metric.isin(LAYER_METRICS)]
    # dropna=False: a metric that is NaN for every member (all diverged) stays a NaN column, not a missing one
    wide = last.pivot_table(index=["layer", "member"], columns="metric", values="value", dropna=False).reset_index()
    wide = wide.reindex(columns=["layer", "member", *LAYER_METRICS])
    out = wide.groupby("layer")[LAYER_METRICS].mean()
    out["best_corr_mean_std"] = wide.groupby("layer")["best_corr_mean"].std(ddof=0)
    # the measured teacher's widths (inputs.labels='wide_teacher' measures a wider one than teacher.widths)
    nodes = read_table(folder, "teacher_nodes")
    measured = nodes.groupby("layer").teacher_node.max() + 1
    out.insert(0, "teacher_width", [int(measured.get(l, 0)) for l in out.index])
    return out.reset_index()


def final_losses(folder: Path) -> pd.DataFrame:
    """Mean over members of the final train and eval loss."""
    m = read_table(folder, "metrics")
    loss = m[(m.metric == "loss") & (m.step == m.step.max())]
    return loss.groupby("split")["value"].agg(["mean", "std"]).reset_index()


def recovery_curves(folder: Path, epochs: tuple[float, ...]) -> dict[str, pd.DataFrame]:
    """Per (epoch, layer) over members: mean best correlation (its mean, min and max over members),
    the evaluation-size standard error and the recovered fraction, at every measured epoch
    (``curves``) and at ``epochs`` (``summary``): the table of the per-layer recovery experiments."""
    m = read_table(folder, "metrics")
    m = m[m.layer.notna() & m.metric.isin(["best_corr_mean", "best_corr_mean_se", "recovered_frac"])]
    wide = m.pivot_table(index=["epoch", "layer", "member"], columns="metric", values="value").reset_index()
    g = wide.groupby(["epoch", "layer"])
    curves = pd.DataFrame({"best_corr_mean": g.best_corr_mean.mean(), "best_corr_min_over_seeds": g.best_corr_mean.min(),
                           "best_corr_max_over_seeds": g.best_corr_mean.max(), "se_eval": g.best_corr_mean_se.mean(),
                           "recovered_frac": g.recovered_frac.mean(), "members": g.size()}).reset_index()
    summary = curves[curves.epoch.round(6).isin(epochs)].reset_index(drop=True)
    return {"summary": summary, "curves": curves}
