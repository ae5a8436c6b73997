"""F8: lucky by construction, two layers: fan-out norms of planted and other student nodes over training."""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Lucky by construction: fan-out of aligned and unaligned nodes"
SETTING = "two layers: teacher 20 nodes, student 40 with 20 planted at the teacher's nodes (noise 0.05), online SGD"
CLAIM = ("The planted (aligned) nodes keep fan-out norms around 1 while the other nodes' fan-out shrinks by "
         "orders of magnitude (winner-take-all).")
EXPERIMENTS = ("fanout_curves",)
PANELS = {"fan-out over training": {"xlabel": "training step", "ylabel": "median fan-out norm (over nodes)",
                                    "xscale": ("symlog", {"linthresh": 10}), "yscale": "log"}}
GROUPS = {"lucky": "planted (aligned) nodes", "other": "other nodes"}


def _medians(tables):
    c = tables["fanout_curves"]["curves"]
    return c.groupby(["group", "member", "step"]).fanout_norm.median().reset_index()


def data(tables):
    m = _medians(tables)
    rows = []
    for group, label in GROUPS.items():
        s = spread(m[m.group == group], ["step"], "fanout_norm")
        rows += series_rows(s, "fan-out over training", label, "line", "step", "y", "lo", "hi")
    return plot_frame(rows)


def verdict(tables):
    m = _medians(tables)
    last = m[m.step == m.step.max()].groupby("group").fanout_norm.mean()
    ratio = last["lucky"] / last["other"]
    text = (f"median fan-out at step {m.step.max():,}: planted {last['lucky']:.3g}, other {last['other']:.3g} "
            f"({ratio:.0f}x)")
    return text, bool(ratio >= 10)
