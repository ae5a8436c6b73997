"""F5: strength decay: recovery step against strength rank, and the two-layer success rate against width."""

from __future__ import annotations

import numpy as np

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Strength decay: weak teacher nodes are recovered later, or not at all"
SETTING = "teacher strength decay p in {0, 1, 2}; left: teacher 10-15, student 5x; right: 2020 two-layer setting"
CLAIM = ("Strong teacher nodes are recovered first and weak ones later (positive rank correlation between "
         "strength rank and recovery step for p > 0), and wider students recover more of them.")
EXPERIMENTS = ("strength_decay", "specialization_two_layer")
PANELS = {
    "recovery step by strength (layer 0)": {"xlabel": "teacher node strength rank (1 = strongest)",
                                            "ylabel": "step its winner first reached 0.9 (steps)", "yscale": "log"},
    "two-layer success rate": {"xlabel": "student multiplier (student width / teacher width)",
                               "ylabel": "teacher nodes recovered (fraction, > 0.95)",
                               "xticks": "data", "ylim": (-0.02, 1.02)},
}


def _last_epoch(tables):
    """The success table's rows at each arm's last measured epoch (an epoch past the end has no teachers)."""
    sc = tables["specialization_two_layer"]["success"]
    sc = sc[sc.teachers > 0]
    return sc[sc.epoch == sc.groupby(["p", "multiplier"]).epoch.transform("max")]


def data(tables):
    n = tables["strength_decay"]["nodes"]
    n = n[n.layer == 0].assign(step=n["step_corr_0.9"].astype("Float64").astype(float))
    rows = []
    for p, g in n.groupby("p"):
        s = spread(g.dropna(subset=["step"]), ["strength_rank"], "step")
        rows += series_rows(s, "recovery step by strength (layer 0)", f"p = {p:g}", "line", "strength_rank", "y",
                            "lo", "hi")
    last = _last_epoch(tables)
    last = last.assign(y=last.recovered_of_10 / 10, lo=last["min"] / 10, hi=last["max"] / 10)
    for p, g in last.groupby("p"):
        rows += series_rows(g.sort_values("multiplier"), "two-layer success rate", f"p = {p:g}", "line", "multiplier",
                            "y", "lo", "hi")
    return plot_frame(rows)


def verdict(tables):
    s = tables["strength_decay"]["summary"]
    rho = s[(s.layer == 0)].set_index("p").rho_rank_step
    last = _last_epoch(tables).set_index(["p", "multiplier"])
    p2 = last.loc[2.0].recovered_of_10
    text = (f"Spearman(strength rank, recovery step) at layer 0: p=0 {rho.get(0.0, np.nan):.2f}, "
            f"p=2 {rho.get(2.0, np.nan):.2f}; two-layer p=2: {p2.iloc[0]:.1f}/10 recovered at {p2.index[0]}x, "
            f"{p2.iloc[-1]:.1f}/10 at {p2.index[-1]}x")
    return text, bool(rho.get(2.0, np.nan) > 0 and p2.iloc[-1] >= p2.iloc[0])
