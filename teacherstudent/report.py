"""``teacherstudent report RUN``: one run's self-contained HTML page (the same kind as the figures' index).

Per-layer recovery curves (mean best correlation over training, band: spread over members),
the lucky-node table (per layer: where the teacher nodes' final winners ranked at
initialisation) and the L-shape (fan-out norm against best correlation at the end), each
drawn with the shared theme of ``teacherstudent.figures`` and embedded as base64 PNG.
"""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from .figures import figure_bytes, plot_frame, render, series_rows, spread
from .paper import image_tag, page
from .folder import atomic_write_bytes
from .summary import read_table


def curves_data(folder: Path) -> pd.DataFrame:
    m = read_table(folder, "metrics")
    m = m[m.metric == "best_corr_mean"].assign(layer=lambda d: d.layer.astype(int))
    rows = []
    for layer, g in spread(m, ["layer", "step"], "value").groupby("layer"):
        rows += series_rows(g, "recovery", f"layer {layer}", "line", "step", "y", "lo", "hi")
    return plot_frame(rows)


def lshape_data(folder: Path) -> pd.DataFrame:
    s = read_table(folder, "student_nodes")
    last = s[s.step == s.step.max()]
    rows = []
    for layer, g in last.groupby("layer"):
        rows += series_rows(g, "L-shape at the end", f"layer {layer}", "scatter", "best_corr", "fanout_norm")
    return plot_frame(rows)


def lucky_table(folder: Path) -> pd.DataFrame:
    t = read_table(folder, "teacher_nodes")
    g = t.groupby("layer")
    return pd.DataFrame({"teacher nodes": g.size() / g.member.nunique(),
                         "winner's initial rank (mean top-%)": g.init_rank_pct.mean(),
                         "winners from the top 10%": g.init_rank_pct.apply(lambda r: (r <= 10).mean()),
                         "initial corr": g.init_corr.mean(), "final corr": g.final_corr.mean(),
                         "matches per node": g.match_count.mean()}).reset_index()


def html_table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{v}</td>" for v in r)
                   + "</tr>" for r in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def run_report(folder: Path, dest: Path | None = None, command: list[str] | None = None) -> Path:
    """Write ``dest`` (default ``<folder>/report.html``) and return its path."""
    folder = Path(folder)
    dest = Path(dest) if dest is not None else folder / "report.html"
    figs = [
        ("Teacher-node recovery per layer", curves_data(folder),
         {"recovery": {"xlabel": "training step", "ylabel": "mean best correlation (teacher nodes)",
                       "ylim": (0, 1.02), "hline": 0.95}}),
        ("L-shape: fan-out norm against best correlation", lshape_data(folder),
         {"L-shape at the end": {"xlabel": "best correlation with a teacher node", "ylabel": "fan-out norm",
                                 "yscale": "log"}}),
    ]
    body = [f"<p>Run folder <code>{html.escape(str(folder))}</code>.</p>"]
    for i, (title, data, panels) in enumerate(figs):
        png = figure_bytes(render(data, panels, f"{folder.name}: {title}"), "png")  # embedded: no file, no PDF
        body.append(f"<section><h2>{html.escape(title)}</h2>{image_tag(png, title)}</section>")
        if i == 0:
            body.append("<section><h2>Lucky nodes</h2><p>Per layer: each teacher node's final winner (the "
                        "student best correlated with it at the end), ranked among all students by its "
                        "correlation at initialisation (top-%: 1 = best; chance: 50).</p>"
                        f"{html_table(lucky_table(folder))}</section>")
    atomic_write_bytes(dest, page(f"teacherstudent report: {folder.name}", body, command).encode())
    return dest
