"""Figures made only from the run tables (seaborn on a figure with its own Agg canvas).

Nothing here touches matplotlib's global backend or pyplot's figure registry: a notebook
user's backend stays as it was, and figures are never shown, only written.

The paper figures (``teacherstudent figures``, ``analysis/figures/``) share one theme
(``theme``, applied through ``matplotlib.rc_context`` only while drawing), one renderer
(``render``: a figure's data is one long table of exactly the numbers drawn,
``PLOT_COLUMNS``) and deterministic files (``save_figure_files``: PNG and PDF without
software or date metadata, fixed dpi, DejaVu fonts, and the CSV of the data). ``plotted``
reads the drawn numbers back from the axes (the tests compare it with the CSV).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .folder import atomic_write_bytes
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


# ---- paper figures: one theme, one renderer, deterministic files ------------------------

# A figure's data is one long table, exactly the numbers drawn: one row per plotted point.
PLOT_COLUMNS = ("panel", "series", "kind", "x", "y", "lo", "hi", "xtick")
KINDS = ("line", "scatter", "bar")
DPI = 100


def theme() -> dict:
    """The shared look (seaborn ``whitegrid`` + ``paper`` context, DejaVu Sans, colour-blind palette)
    as matplotlib rc settings, applied only inside ``matplotlib.rc_context`` while a figure is drawn."""
    import seaborn as sns
    from matplotlib.rcsetup import cycler

    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper")}
    rc.update({"font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "svg.hashsalt": "teacherstudent",
               "axes.prop_cycle": cycler(color=sns.color_palette("colorblind").as_hex()), "pdf.compression": 6})
    return rc


def plot_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with some of ``PLOT_COLUMNS``) as a figure's data table, columns in order."""
    blank = {"lo": float("nan"), "hi": float("nan"), "xtick": ""}
    df = pd.DataFrame([{**blank, **r} for r in rows], columns=list(PLOT_COLUMNS))
    for c in ("x", "y", "lo", "hi"):
        df[c] = df[c].astype(float)
    df["xtick"] = df["xtick"].astype(str)
    bad = set(df.kind) - set(KINDS)
    if bad:
        raise ValueError(f"unknown plot kind(s) {sorted(bad)}; known: {', '.join(KINDS)}")
    return df


def series_rows(df: pd.DataFrame, panel: str, series: str, kind: str, x: str, y: str,
                lo: str | None = None, hi: str | None = None) -> list[dict]:
    """``plot_frame`` rows from columns of ``df`` (one row per point, in ``df``'s order)."""
    return [{"panel": panel, "series": series, "kind": kind, "x": float(r[x]), "y": float(r[y]),
             "lo": float(r[lo]) if lo else float("nan"), "hi": float(r[hi]) if hi else float("nan")}
            for _, r in df.iterrows()]


def spread(df: pd.DataFrame, by: list[str], value: str, over: str = "member") -> pd.DataFrame:
    """Mean of ``value`` per ``by`` across ``over`` (seeds), with its min (``lo``) and max (``hi``)."""
    per = df.groupby(by + [over], sort=True)[value].mean().reset_index()
    g = per.groupby(by, sort=True)[value]
    return pd.DataFrame({"y": g.mean(), "lo": g.min(), "hi": g.max()}).reset_index()


def render(data: pd.DataFrame, panels: dict[str, dict], title: str, ncols: int | None = None):
    """Draw ``data`` (see ``PLOT_COLUMNS``) on one Agg figure, one axes per panel (in ``panels``' order;
    each panel's dict: ``xlabel``, ``ylabel``, optional ``xscale``/``yscale``/``ylim``/``hline``/``title``,
    ``xticks="data"`` for a tick at every x value).

    Lines get a band from ``lo`` to ``hi`` where given; bars of several series in one panel
    sit side by side; ``xtick`` labels, where given, replace the x tick labels.
    """
    import matplotlib as mpl

    names = [p for p in panels if (data.panel == p).any()] or list(panels)[:1]
    ncols = ncols or (2 if len(names) == 4 else min(len(names), 3))
    nrows = -(-len(names) // ncols)
    with mpl.rc_context(theme()):
        shared = shared_legend(data, names)
        fig = new_figure((max(4.2 * ncols, 6.5), (3.3 if shared else 3.9) * nrows + 0.5))  # room for legends below
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax in axes[len(names):]:
            ax.set_visible(False)
        for ax, name in zip(axes, names):
            spec = panels[name]
            d = data[data.panel == name]
            series = list(dict.fromkeys(d.series))
            bars = [s for s in series if (d[d.series == s].kind == "bar").any()]
            xs = np.sort(d[d.kind == "bar"].x.unique())
            width = 0.8 * (np.diff(xs).min() if len(xs) > 1 else 1.0) / max(len(bars), 1)
            for i, s in enumerate(series):
                ds = d[d.series == s]
                c = series_color(s, i, colors)
                kind = ds.kind.iloc[0]
                if kind == "line":
                    ax.plot(ds.x.to_numpy(), ds.y.to_numpy(), marker="o", markersize=3, lw=1.5, color=c, label=s)
                    if ds.lo.notna().any():
                        ax.fill_between(ds.x.to_numpy(), ds.lo.to_numpy(), ds.hi.to_numpy(), color=c, alpha=0.2, lw=0)
                elif kind == "scatter":
                    ax.scatter(ds.x.to_numpy(), ds.y.to_numpy(), s=5, alpha=0.5, color=c, label=s, lw=0)
                else:
                    off = (bars.index(s) - (len(bars) - 1) / 2) * width
                    ax.bar(ds.x.to_numpy() + off, ds.y.to_numpy(), width=width, color=c, label=s, alpha=0.85)
                    if ds.lo.notna().any():
                        ax.errorbar(ds.x.to_numpy() + off, ds.y.to_numpy(),
                                    yerr=[ds.y.to_numpy() - ds.lo.to_numpy(), ds.hi.to_numpy() - ds.y.to_numpy()],
                                    fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            ticks = d[d.xtick != ""].drop_duplicates("x")
            if len(ticks):
                ax.set_xticks(ticks.x.to_numpy(), ticks.xtick.tolist())
            if "hline" in spec:
                ax.axhline(spec["hline"], color="grey", lw=0.8, ls="--")
            ax.set(xlabel=spec["xlabel"], ylabel=spec["ylabel"], title=spec.get("title", name))
            if spec.get("xscale"):
                name_, kw = spec["xscale"] if isinstance(spec["xscale"], tuple) else (spec["xscale"], {})
                ax.set_xscale(name_, **kw)
            if spec.get("yscale"):
                ax.set_yscale(spec["yscale"])
            if spec.get("xticks") == "data":  # few x values (multipliers, keep fractions): label each one
                xs = np.sort(d.x.unique())
                ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())
                ax.set_xticks(xs, [f"{x:g}" for x in xs])
            if spec.get("ylim"):
                ax.set_ylim(*spec["ylim"])
        for ax, name in zip(axes, names):
            d = data[data.panel == name]
            if len(d) and not shared:  # below its own panel, outside the axes: it covers no data
                n = len(dict.fromkeys(d.series))
                ax.legend(fontsize="small", markerscale=2 if any(d.kind == "scatter") else 1, loc="upper center",
                          bbox_to_anchor=(0.5, -0.2), ncol=min(n, 2), frameon=False)
        fig.suptitle(title)
        fig.tight_layout()
        if shared:  # one legend for every panel, right of them (the saved bbox grows to hold it): it covers no data
            ax = axes[0]
            handles, labels = ax.get_legend_handles_labels()
            fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small", frameon=False,
                       markerscale=2 if any(data.kind == "scatter") else 1)
    return fig


LAYER_SERIES = re.compile(r"layer (\d+)$")


def series_color(series: str, i: int, colors: list[str]) -> str:
    """A series' colour: ``layer k`` is always the palette's k-th colour (the same layer looks the
    same in every figure); any other series takes its position in the panel."""
    m = LAYER_SERIES.match(series)
    return colors[(int(m.group(1)) if m else i) % len(colors)]


def shared_legend(data: pd.DataFrame, names: list[str]) -> bool:
    """Whether every drawn panel shows the same series in the same order (then one figure legend serves them all)."""
    seen = [tuple(dict.fromkeys(data[data.panel == n].series)) for n in names]
    return bool(seen) and bool(seen[0]) and all(s == seen[0] for s in seen)


# What each file format may not carry, so that the same figure gives the same bytes.
FILE_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}}


def figure_bytes(fig, fmt: str) -> bytes:
    """``fig`` as a ``png`` or ``pdf`` file's bytes, deterministic (``FILE_METADATA``, fixed dpi, the theme's fonts)."""
    import matplotlib as mpl

    buf = io.BytesIO()
    with mpl.rc_context(theme()):
        fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight", metadata=FILE_METADATA[fmt])
    return buf.getvalue()


def save_figure_files(fig, stem: Path, data: pd.DataFrame | None = None) -> list[Path]:
    """``stem``.png and ``stem``.pdf (and ``stem``.csv of ``data``), byte-identical for the same figure:
    no software/date metadata, a fixed dpi, fonts from matplotlib's own DejaVu."""
    out = []
    for fmt in FILE_METADATA:
        path = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(path, figure_bytes(fig, fmt))
        out.append(path)
    if data is not None:
        path = stem.with_suffix(".csv")
        atomic_write_bytes(path, data.to_csv(index=False, float_format="%.6g").encode())
        out.append(path)
    return out


def plotted(fig) -> pd.DataFrame:
    """The numbers drawn on ``fig``'s axes, read back from the artists: ``panel`` (axes title),
    ``series`` (label), ``kind``, ``x``, ``y`` (lines, scatter offsets, bar heights at bar centres)."""
    rows = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        panel = ax.get_title()
        for line in ax.lines:
            if not line.get_label().startswith("_"):
                rows += [{"panel": panel, "series": line.get_label(), "kind": "line", "x": x, "y": y}
                         for x, y in zip(line.get_xdata(), line.get_ydata())]
        for coll in ax.collections:
            if type(coll).__name__ == "PathCollection" and not coll.get_label().startswith("_"):
                rows += [{"panel": panel, "series": coll.get_label(), "kind": "scatter", "x": x, "y": y}
                         for x, y in coll.get_offsets()]
        for cont in ax.containers:
            if type(cont).__name__ == "BarContainer":
                rows += [{"panel": panel, "series": cont.get_label(), "kind": "bar",
                          "x": p.get_x() + p.get_width() / 2, "y": p.get_height()} for p in cont.patches]
    return pd.DataFrame(rows, columns=["panel", "series", "kind", "x", "y"])
