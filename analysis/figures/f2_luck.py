"""F2: luck: the final winner's rank among all students at initialisation and at later reference steps."""

from __future__ import annotations

import numpy as np

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Luck: where each teacher node's final winner started"
SETTING = "Luck Matters 2019 deep setting, students without BatchNorm"
CLAIM = ("The student node that ends up best aligned with a teacher node was already among the best aligned "
         "at initialisation (top ranks, far better than the 50% of chance).")
EXPERIMENTS = ("deep_dynamics",)
BINS = np.arange(0, 101, 10)
PANELS = {
    "initial rank of the final winner": {"xlabel": "initial rank of the final winner (top-%, 1 = best)",
                                         "ylabel": "fraction of teacher nodes"},
    "rank by reference step": {"xlabel": "reference epoch (0 = initialisation)",
                               "ylabel": "mean rank of the final winner (top-%)"},
}


def data(tables):
    r = tables["deep_dynamics"]["ranks"]
    r = r[r.arm == "plain"]
    init = r[r.step == r.step.min()]
    rows = []
    for layer, g in init.groupby("layer"):
        counts, _ = np.histogram(g.winner_rank_pct.clip(upper=100), bins=BINS)
        centres = (BINS[:-1] + BINS[1:]) / 2
        rows += [{"panel": "initial rank of the final winner", "series": f"layer {layer}", "kind": "bar",
                  "x": float(x), "y": float(n / len(g))} for x, n in zip(centres, counts)]
    s = spread(r, ["layer", "epoch"], "winner_rank_pct")
    for layer, g in s.groupby("layer"):
        rows += series_rows(g, "rank by reference step", f"layer {layer}", "line", "epoch", "y", "lo", "hi")
    return plot_frame(rows)


def verdict(tables):
    r = tables["deep_dynamics"]["ranks"]
    init = r[(r.arm == "plain") & (r.step == r.step.min())]
    per_layer = init.groupby("layer").winner_rank_pct.mean()
    top10 = (init.winner_rank_pct <= 10).mean()
    text = (f"layer-0 final winners started at a mean top-{per_layer.loc[0]:.1f}% (chance 50%); "
            f"{100 * top10:.0f}% of all winners started in the top 10%")
    return text, bool(per_layer.loc[0] < 25)
