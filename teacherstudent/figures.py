"""Figures made only from the run tables (seaborn on a non-interactive backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .store import atomic_write_bytes  # noqa: E402
from .summary import read_table  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_best_corr(folder: Path, path: Path | None = None) -> Path:
    """Mean best correlation per hidden layer over training (band: spread over members)."""
    m = read_table(folder, "metrics")
    df = m[m.metric == "best_corr_mean"].copy()
    df["layer"] = df["layer"].astype(int).map(lambda l: f"layer {l}")
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=df, x="step", y="value", hue="layer", errorbar=("pi", 100), marker="o", markersize=3, ax=ax)
    ax.set(xlabel="training step", ylabel="mean best correlation (teacher nodes)", ylim=(0, 1.01),
           title=f"{folder.name}: teacher-node recovery per layer")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    return save_figure(fig, path or folder / "best_corr.png")
