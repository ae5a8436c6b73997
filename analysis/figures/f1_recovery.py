"""F1: mean best correlation per layer over training, students with and without BatchNorm."""

from __future__ import annotations

from teacherstudent.figures import plot_frame, series_rows, spread

TITLE = "Teacher-node recovery per layer"
SETTING = "Luck Matters 2019 deep setting (teacher 10-15-20-25, student 10x), with and without BatchNorm"
CLAIM = ("Students specialise bottom-up: the lowest layer's teacher nodes are recovered almost perfectly "
         "(mean best correlation > 0.95) early in training, higher layers later and less.")
EXPERIMENTS = ("deep_dynamics",)
ARMS = {"plain": "without BatchNorm", "batchnorm": "with BatchNorm"}
PANELS = {p: {"xlabel": "training epoch", "ylabel": "mean best correlation (teacher nodes)", "ylim": (0, 1.02),
              "hline": 0.95} for p in ARMS.values()}


def data(tables):
    c = tables["deep_dynamics"]["curves"]
    rows = []
    for arm, panel in ARMS.items():
        s = spread(c[c.arm == arm], ["layer", "epoch"], "best_corr_mean")
        for layer, g in s.groupby("layer"):
            rows += series_rows(g, panel, f"layer {layer}", "line", "epoch", "y", "lo", "hi")
    return plot_frame(rows)


def verdict(tables):
    c = tables["deep_dynamics"]["curves"]
    plain = c[(c.arm == "plain") & (c.step == c[c.arm == "plain"].step.max())].groupby("layer").best_corr_mean.mean()
    bn = c[(c.arm == "batchnorm") & (c.step == c[c.arm == "batchnorm"].step.max())].groupby("layer").best_corr_mean.mean()
    epochs = c[c.arm == "plain"].epoch.max()
    top = plain.index.max()
    text = (f"layer-0 mean best correlation {plain.loc[0]:.3f} after {epochs:g} epochs (top layer {plain.loc[top]:.3f}); "
            f"with BatchNorm {bn.loc[0]:.3f} (top layer {bn.loc[top]:.3f})")
    return text, bool(plain.loc[0] > 0.95 and plain.loc[0] >= plain.loc[top])
