"""F4: over-parameterisation: fraction of teacher nodes recovered against the student multiplier."""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Over-parameterisation: recovered teacher nodes against student width"
SETTING = "Luck Matters 2019 deep setting at a fixed step budget, student width = multiplier x teacher width"
CLAIM = "At the same number of steps, wider students recover more teacher nodes (best correlation > 0.95)."
EXPERIMENTS = ("overparam",)
PANELS = {"recovered at the step budget": {"xlabel": "student multiplier (student width / teacher width)",
                                           "ylabel": "fraction of teacher nodes recovered (> 0.95)",
                                           "xscale": "log", "xticks": "data", "ylim": (-0.02, 1.02)}}


def data(tables):
    r = tables["overparam"]["recovered"]
    s = spread(r, ["layer", "student.multiplier"], "recovered_frac")
    rows = []
    for layer, g in s.groupby("layer"):
        rows += series_rows(g, "recovered at the step budget", f"layer {layer}", "line", "student.multiplier", "y",
                            "lo", "hi")
    return plot_frame(rows)


def verdict(tables):
    """The claim read literally: the recovered fraction, averaged over the hidden layers (layer 0
    alone saturates at 1 in the papers' setting), is higher for the widest students than at 1x."""
    r = tables["overparam"]["recovered"]
    m = r.groupby(["student.multiplier", "layer"]).recovered_frac.mean().groupby(level=0).mean()
    lo, hi = m.index.min(), m.index.max()
    text = "recovered fraction (mean over layers) " + ", ".join(f"{v:.2f} at {k:g}x" for k, v in m.items())
    return text, bool(m.loc[hi] > m.loc[lo])
