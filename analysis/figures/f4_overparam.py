"""F4: over-parameterisation: fraction of teacher nodes recovered against the student multiplier.

Follows the Luck Matters (2019) deep setting (preset ``luckmatters-2019-deep``, the official
``recon_multilayer.py`` README command) at a fixed budget of 4 epochs, 4 seeds, widths 1-20x.
The second panel is the explanation arm (``overparam``'s ``long``): the same students at 4x the
steps, to tell a budget effect (the widest students need more steps) from a disagreement with
the paper.
"""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Over-parameterisation: recovered teacher nodes against student width"
SETTING = ("Luck Matters 2019 deep setting, student width = multiplier x teacher width; left: the fixed step "
           "budget (4 epochs), right: 4x the steps")
CLAIM = "At the same number of steps, wider students recover more teacher nodes (best correlation > 0.95)."
EXPERIMENTS = ("overparam",)
_AXES = {"xlabel": "student multiplier (student width / teacher width)",
         "ylabel": "fraction of teacher nodes recovered (> 0.95)", "xscale": "log", "xticks": "data",
         "ylim": (-0.02, 1.02)}
ARMS = {"deep": "recovered at the step budget", "long": "recovered at 4x the steps"}
PANELS = {panel: dict(_AXES) for panel in ARMS.values()}


def data(tables):
    r = tables["overparam"]["recovered"]
    rows = []
    for arm, panel in ARMS.items():
        s = spread(r[r.arm == arm], ["layer", "student.multiplier"], "recovered_frac")
        for layer, g in s.groupby("layer"):
            rows += series_rows(g, panel, f"layer {layer}", "line", "student.multiplier", "y", "lo", "hi")
    return plot_frame(rows)


def _by_width(r):
    """Recovered fraction per multiplier, averaged over the hidden layers."""
    return r.groupby(["student.multiplier", "layer"]).recovered_frac.mean().groupby(level=0).mean()


def verdict(tables):
    """The claim read literally at the papers' budget: the recovered fraction, averaged over the
    hidden layers (layer 0 alone saturates at 1 in the papers' setting), is higher for the widest
    students than at 1x. The long arm's numbers follow, to say whether a failure is the budget."""
    r = tables["overparam"]["recovered"]
    m = _by_width(r[r.arm == "deep"])
    lo, hi = m.index.min(), m.index.max()
    text = "recovered fraction (mean over layers) " + ", ".join(f"{v:.2f} at {k:g}x" for k, v in m.items())
    long = r[r.arm == "long"]
    if len(long):
        ml = _by_width(long)
        text += "; at 4x the steps " + ", ".join(f"{v:.2f} at {k:g}x" for k, v in ml.items())
    return text, bool(m.loc[hi] > m.loc[lo])
