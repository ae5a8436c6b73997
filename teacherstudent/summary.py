"""Per-layer summaries of a finished run, from its ``metrics.parquet``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import UserError
from .store import read_config, run_status

COLUMNS = {"metrics": ("run", "member", "step", "epoch", "split", "layer", "metric", "value")}
LAYER_METRICS = ["best_corr_mean", "best_corr_min", "recovered_frac", "covered_frac", "match_count_mean"]


def read_table(folder: Path, table: str) -> pd.DataFrame:
    path = folder / f"{table}.parquet"
    if not path.exists():
        state = run_status(folder).get("state")
        raise UserError(f"{folder} has no {table}.parquet (run state: {state}); finish it with `teacherstudent run` first")
    try:
        df = pd.read_parquet(path)
    except Exception as err:
        raise UserError(f"{path} is corrupted ({type(err).__name__}); delete the run folder and run again") from None
    missing = [c for c in COLUMNS.get(table, ()) if c not in df.columns]
    if missing:
        raise UserError(f"{path} is corrupted (no column {', '.join(missing)}); delete the run folder and run again")
    return df


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
