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
    r = tables["overparam"]["recovered"]
    m = r.groupby(["layer", "student.multiplier"]).recovered_frac.mean()
    l0 = m.loc[0]
    lo, hi = l0.index.min(), l0.index.max()
    text = f"layer-0 recovered fraction {l0.loc[lo]:.2f} at {lo}x, {l0.loc[hi]:.2f} at {hi}x"
    return text, bool(l0.loc[hi] > l0.loc[lo])
