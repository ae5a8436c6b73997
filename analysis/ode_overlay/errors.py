"""ODE - simulation gaps of finished runs that `teacherstudent theory ode` was run on (analysis/ode_overlay.md).

    python analysis/ode_overlay/errors.py [--t 1,2,5,10] RUNS_ROOT [RUNS_ROOT ...]

Runs with the same N (teacher.d) and initialisation (random, or lucky: student.lucky_nodes > 0)
are pooled. For eg_exact (the closed-form eps_g of the kept weights), q (mean Q_ii) and r
(max_i R_in / sqrt(Q_ii T_nn), mean over n): the RMS over members of ODE - simulation at the
given t, its largest value over the kept steps, the RMS over members and kept steps t > 0, and
that times sqrt(N) (constant if the gap is SGD noise of order N^-1/2), and the largest |mean over
members| of the gap over t (a systematic error would show here; noise alone gives ~RMS / sqrt(members)).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd

from teacherstudent.ode_run import normalised
from teacherstudent.reader import load_runs
from teacherstudent.tables import TABLE_COLUMNS


def gaps(roots: list[str]) -> pd.DataFrame:
    """One row per (N, init, member, statistic, t): ``d`` = ODE - simulation."""
    out = []
    for root in roots:
        df = load_runs(root, table="theory_ode")
        for run, g in df.groupby("run", sort=False):
            n = normalised(g[list(TABLE_COLUMNS["theory_ode"])])
            w = n.pivot_table(index=["statistic", "t", "member"], columns="source", values="value").dropna()
            d = (w["ode"] - w["simulation"]).rename("d").reset_index()
            d["N"] = int(g["teacher.d"].iloc[0])
            d["init"] = "lucky" if int(g["student.lucky_nodes"].iloc[0]) else "random"
            d["member"] = run + ":" + d.member.astype(str)
            out.append(d)
    return pd.concat(out, ignore_index=True)


def main(roots: list[str], ts: list[float]) -> None:
    d = gaps(roots)
    rms = lambda x: float(np.sqrt((x ** 2).mean()))  # noqa: E731
    print("| init | N | members | statistic | " + " | ".join(f"t = {t:g}" for t in ts)
          + " | max over t | all t > 0 | × sqrt(N) | bias |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in ts) + " | --- | --- | --- | --- |")
    for (init, N, stat), g in d[d.statistic.isin(["eg_exact", "q", "r"])].groupby(["init", "N", "statistic"]):
        per_t = g.groupby("t").d.apply(rms)
        pooled = rms(g[g.t > 0].d)
        cells = [f"{per_t.loc[t]:.4f}" if t in per_t.index else "-" for t in ts]
        print(f"| {init} | {N} | {g.member.nunique()} | {stat} | " + " | ".join(cells)
              + f" | {per_t.max():.4f} | {pooled:.4f} | {pooled * np.sqrt(N):.3f} | {g.groupby('t').d.mean().abs().max():.4f} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    ts = [1.0, 2.0, 5.0, 10.0]
    if args[:1] == ["--t"]:
        ts, args = [float(t) for t in args[1].split(",")], args[2:]
    main(args, ts)
