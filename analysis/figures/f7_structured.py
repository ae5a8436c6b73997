"""F7: structured vs random data: match-count distributions and final losses."""

from __future__ import annotations

import numpy as np

from teacherstudent.figures import plot_frame

TITLE = "Structured vs random data"
SETTING = "teacher 10-15, student 5x; labels from the teacher, permuted labels, or a 5x wider teacher"
CLAIM = ("With structured data (a small teacher) student nodes specialise: teacher nodes have matches "
         "(student nodes above 0.9), more than with permuted labels or a teacher as wide as the student.")
EXPERIMENTS = ("structured_vs_random",)
ARMS = ("structured", "permuted", "wide")
PANELS = {
    "matches per teacher node": {"xlabel": "student nodes above 0.9 correlation (matches)",
                                 "ylabel": "fraction of teacher nodes"},
    "final loss": {"xlabel": "labels", "ylabel": "mean squared error (final, mean over seeds)", "yscale": "log"},
}


def data(tables):
    n = tables["structured_vs_random"]["nodes"]
    top = int(min(n.match_count.max(), 10))
    rows = []
    for arm in ARMS:
        g = n[n.arm == arm]
        counts = np.bincount(g.match_count.clip(upper=top), minlength=top + 1)
        rows += [{"panel": "matches per teacher node", "series": arm, "kind": "bar", "x": float(x),
                  "y": float(c / len(g)), "xtick": f"{x}+" if x == top and top < n.match_count.max() else str(x)}
                 for x, c in enumerate(counts)]
    s = tables["structured_vs_random"]["summary"].drop_duplicates("arm").set_index("arm")
    for split in ("train", "eval"):
        rows += [{"panel": "final loss", "series": f"{split} loss", "kind": "bar", "x": float(i),
                  "y": float(s.loc[arm, f"{split}_loss"]), "xtick": arm} for i, arm in enumerate(ARMS)]
    return plot_frame(rows)


def verdict(tables):
    n = tables["structured_vs_random"]["nodes"].groupby("arm").match_count.mean()
    text = (f"matches per teacher node: structured {n['structured']:.2f}, permuted {n['permuted']:.2f}, "
            f"wide {n['wide']:.2f}")
    return text, bool(n["structured"] > n["permuted"] and n["structured"] > n["wide"])
