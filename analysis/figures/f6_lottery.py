"""F6: lottery tickets: final eval loss against keep fraction for five ways to retrain a pruned student.

Follows the Luck Matters (2019) lottery-ticket discussion on this tool's default setting (8 seeds,
20 epochs, node pruning per layer at keep 0.1/0.2/0.3, every retrain as long as the parent). The
``rescaled`` arm is the explanation arm: the rewound nodes' initial weights rescaled to the
pruned fan-in's init scale, to tell whether rewinding loses to re-initialising because of the
init scale (a pruned layer keeps weights sized for its full fan-in) rather than the nodes chosen.
"""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Lottery tickets from lucky nodes"
SETTING = "default setting (teacher 10-15-20-25, student 10x), node pruning per layer, retrained as long as the parent"
CLAIM = ("Keeping the most teacher-aligned (lucky) nodes and rewinding them to their initial weights trains better "
         "than the same pruned shape re-initialised, and better than randomly chosen nodes.")
EXPERIMENTS = ("lottery_tickets",)
ARMS = {"rewind": "rewind to init", "rescaled": "rescaled rewind", "late": "late rewind (epoch 1)",
        "reinit": "re-initialised", "random": "random nodes, rewind"}
PANELS = {
    "final evaluation loss": {"xlabel": "fraction of hidden nodes kept", "ylabel": "final eval loss (mean squared error)",
                              "yscale": "log", "xticks": "data"},
    "kept and lucky nodes": {"xlabel": "fraction of hidden nodes kept",
                             "ylabel": "fraction of lucky nodes (final winners) kept", "ylim": (-0.02, 1.02),
                             "xticks": "data"},
}


def data(tables):
    m = tables["lottery_tickets"]["members"]
    probes = m[m.arm != "full"]
    rows = []
    for arm, label in ARMS.items():
        s = spread(probes[probes.arm == arm], ["keep"], "eval_loss")
        rows += series_rows(s, "final evaluation loss", label, "line", "keep", "y", "lo", "hi")
    full = m[m.arm == "full"].eval_loss
    rows += [{"panel": "final evaluation loss", "series": "full student", "kind": "line", "x": k, "y": full.mean(),
              "lo": full.min(), "hi": full.max()} for k in sorted(probes.keep.unique())]
    for arm, label in (("rewind", "by alignment"), ("random", "random")):
        s = spread(probes[probes.arm == arm], ["keep"], "winners_kept_frac")
        rows += series_rows(s, "kept and lucky nodes", label, "line", "keep", "y", "lo", "hi")
    return plot_frame(rows)


def _rescaled_wins(m, keep) -> tuple[int, int]:
    """Seeds (members) whose rescaled rewind ends below their re-initialised student, at ``keep``."""
    at = m[m.keep == keep].pivot_table(index="member", columns="arm", values="eval_loss")
    return int((at["rescaled"] < at["reinit"]).sum()), len(at)


def verdict(tables):
    m = tables["lottery_tickets"]["members"]
    k = m[m.arm != "full"].keep.min()
    loss = m[m.keep == k].groupby("arm").eval_loss.mean()
    text = (f"eval loss at keep {k:g}: rewind {loss['rewind']:.3g}, re-initialised {loss['reinit']:.3g}, "
            f"random {loss['random']:.3g}, late rewind {loss['late']:.3g}")
    if "rescaled" in loss:  # the explanation arm: the same nodes, their init rescaled to the pruned fan-in
        wins = _rescaled_wins(m, k)
        text += f", rescaled rewind {loss['rescaled']:.3g} (below re-initialised in {wins[0]} of {wins[1]} seeds)"
    return text, bool(loss["rewind"] < loss["reinit"] and loss["rewind"] < loss["random"])
