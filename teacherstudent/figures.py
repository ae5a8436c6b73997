"""Figures made only from the run tables (seaborn on a figure with its own Agg canvas).

Nothing here touches matplotlib's global backend or pyplot's figure registry: a notebook
user's backend stays as it was, and figures are never shown, only written.
"""

from __future__ import annotations

import io
from pathlib import Path

from .store import atomic_write_bytes
from .summary import read_table


def new_figure(figsize: tuple[float, float] = (6, 4)):
    """A figure rendered by its own non-interactive Agg canvas (not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_best_corr(folder: Path, path: Path | None = None) -> Path:
    """Mean best correlation per hidden layer over training (band: spread over members)."""
    import seaborn as sns

    m = read_table(folder, "metrics")
    df = m[m.metric == "best_corr_mean"].copy()
    df["layer"] = df["layer"].astype(int).map(lambda l: f"layer {l}")
    fig = new_figure((6, 4))
    ax = fig.subplots()
    sns.lineplot(data=df, x="step", y="value", hue="layer", errorbar=("pi", 100), marker="o", markersize=3, ax=ax)
    ax.set(xlabel="training step", ylabel="mean best correlation (teacher nodes)", ylim=(0, 1.01),
           title=f"{folder.name}: teacher-node recovery per layer")
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    return save_figure(fig, path or folder / "best_corr.png")
