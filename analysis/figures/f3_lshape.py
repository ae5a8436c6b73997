"""F3: L-shape: fan-out norm against best correlation of every student node, per layer, at several times.

Follows the Luck Matters (2019) deep setting (preset ``luckmatters-2019-deep``: the official
``recon_multilayer.py`` README command) for 10 epochs, 6 seeds, plus ``deep_dynamics``'s ``long``
arm (4x the epochs = the official default ``--num_epoch 40``, 3 seeds), drawn as the last series:
it tells whether the L-shape needs more training than the 10-epoch budget.
"""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows

TITLE = "L-shape: only well-aligned student nodes keep a large fan-out"
SETTING = ("Luck Matters 2019 deep setting, students without BatchNorm, every student node of every seed; the last "
           "series is the long arm (4x the epochs, first 3 seeds) at its end")
CLAIM = ("At the end of training, student nodes with a large fan-out norm are the ones highly correlated with a "
         "teacher node; the others' fan-out stays small (an L-shape).")
EXPERIMENTS = ("deep_dynamics",)
MAX_POINTS = 3000  # per layer and time: an even subsample keeps the files small (deterministic)


def panels(layers) -> dict:
    return {f"layer {l}": {"xlabel": "best correlation with a teacher node", "ylabel": "fan-out norm",
                           "yscale": "log"} for l in layers}


def _nodes(tables, arm="plain"):
    n = tables["deep_dynamics"]["nodes"]
    return n[n.arm == arm]


def _ratio(n):
    """Layer 0 at the last step: median fan-out of nodes above 0.9 best correlation over that of nodes below 0.6."""
    last = n[(n.step == n.step.max()) & (n.layer == 0)]
    hi, lo = last[last.best_corr > 0.9].fanout_norm, last[last.best_corr < 0.6].fanout_norm
    return (hi.median() / lo.median() if len(hi) and len(lo) else float("nan")), len(hi), len(lo)


def _thin(d):
    """An even, deterministic subsample of at most about ``MAX_POINTS`` rows."""
    return d.iloc[:: max(1, -(-len(d) // MAX_POINTS))]


def data(tables):
    n = _nodes(tables)
    steps = sorted(n.step.unique())
    keep = [steps[0], steps[len(steps) // 2], steps[-1]] if len(steps) > 2 else steps
    rows = []
    for layer, g in n.groupby("layer"):
        for s in dict.fromkeys(keep):
            d = g[g.step == s]
            d = _thin(d)
            rows += series_rows(d, f"layer {layer}", f"epoch {d.epoch.iloc[0]:g}", "scatter", "best_corr", "fanout_norm")
    long = _nodes(tables, "long")
    for layer, g in long[long.step == long.step.max()].groupby("layer") if len(long) else ():
        g = _thin(g)
        rows += series_rows(g, f"layer {layer}", f"epoch {g.epoch.iloc[0]:g} (long arm)", "scatter", "best_corr",
                            "fanout_norm")
    return plot_frame(rows)


PANELS = panels(range(4))


def verdict(tables):
    """Judged on the papers' budget (the plain arm); the long arm's ratio is reported beside it."""
    ratio, n_hi, n_lo = _ratio(_nodes(tables))
    text = (f"layer 0 at the end: median fan-out of nodes with best correlation > 0.9 is {ratio:.1f}x that of nodes "
            f"below 0.6 ({n_hi} vs {n_lo} nodes)")
    long = _nodes(tables, "long")
    if len(long):
        r, h, l = _ratio(long)
        text += f"; long arm (epoch {long.epoch.max():g}): {r:.1f}x ({h} vs {l} nodes)"
    return text, bool(ratio > 2)
