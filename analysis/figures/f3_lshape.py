"""F3: L-shape: fan-out norm against best correlation of every student node, per layer, at several times."""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows

TITLE = "L-shape: only well-aligned student nodes keep a large fan-out"
SETTING = "Luck Matters 2019 deep setting, students without BatchNorm, every student node of every seed"
CLAIM = ("At the end of training, student nodes with a large fan-out norm are the ones highly correlated with a "
         "teacher node; the others' fan-out stays small (an L-shape).")
EXPERIMENTS = ("deep_dynamics",)
MAX_POINTS = 3000  # per layer and time: an even subsample keeps the files small (deterministic)


def panels(layers) -> dict:
    return {f"layer {l}": {"xlabel": "best correlation with a teacher node", "ylabel": "fan-out norm",
                           "yscale": "log"} for l in layers}


def _nodes(tables):
    n = tables["deep_dynamics"]["nodes"]
    return n[n.arm == "plain"]


def data(tables):
    n = _nodes(tables)
    steps = sorted(n.step.unique())
    keep = [steps[0], steps[len(steps) // 2], steps[-1]] if len(steps) > 2 else steps
    rows = []
    for layer, g in n.groupby("layer"):
        for s in dict.fromkeys(keep):
            d = g[g.step == s]
            d = d.iloc[:: max(1, -(-len(d) // MAX_POINTS))]
            rows += series_rows(d, f"layer {layer}", f"epoch {d.epoch.iloc[0]:g}", "scatter", "best_corr", "fanout_norm")
    return plot_frame(rows)


PANELS = panels(range(4))


def verdict(tables):
    n = _nodes(tables)
    last = n[(n.step == n.step.max()) & (n.layer == 0)]
    hi, lo = last[last.best_corr > 0.9].fanout_norm, last[last.best_corr < 0.6].fanout_norm
    ratio = hi.median() / lo.median() if len(hi) and len(lo) else float("nan")
    text = (f"layer 0 at the end: median fan-out of nodes with best correlation > 0.9 is {ratio:.1f}x that of nodes "
            f"below 0.6 ({len(hi)} vs {len(lo)} nodes)")
    return text, bool(ratio > 2)
