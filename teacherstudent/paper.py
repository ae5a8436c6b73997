"""``teacherstudent figures``: the paper figures F1..F8 from the named experiments, and their report page.

``build_figures`` resolves the figure names (``teacherstudent_analysis.figures.FIGURES``), runs
every named experiment they need through ``experiments.run_study`` (finished runs are reused
by id, so a second build only recomputes tables and redraws), then for each figure writes
``<KEY>.png``, ``<KEY>.pdf`` and ``<KEY>.csv`` (exactly the numbers plotted) and finally
``index.html``: every figure embedded (base64) with the claim it tests, the measured number
that decides it and whether it holds, plus the command, version and date.

``quick`` uses each experiment's ``[quick]`` table (fewer seeds and steps; other run ids).
The PNGs, PDFs and CSVs are deterministic: the same runs give byte-identical files.
"""

from __future__ import annotations

import base64
import html
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import UserError
from .folder import atomic_write_bytes

if TYPE_CHECKING:
    from .experiments import StudyOptions


def all_figures() -> dict[str, ModuleType]:
    """Key (``F1``..) -> figure module, from ``teacherstudent_analysis.figures``."""
    return dict(importlib.import_module("teacherstudent_analysis.figures").FIGURES)


def resolve(names: list[str] | None, figures: dict[str, ModuleType] | None = None) -> dict[str, ModuleType]:
    """The figures named (all when none; case-insensitive); an unknown name is one ``UserError``."""
    figures = figures if figures is not None else all_figures()
    if not names:
        return dict(figures)
    out = {}
    for n in names:
        key = n.upper()
        if key not in figures:
            raise UserError(f"unknown figure {n!r}; known: {', '.join(figures)} (or none for all of them)")
        out[key] = figures[key]
    return out


@dataclass
class FigureResult:
    key: str
    title: str
    claim: str
    measured: str
    holds: bool
    files: list[Path]
    train_seconds: float  # training time of the experiments this figure was the first to need
    render_seconds: float
    setting: str = ""  # the figure's caption: the setting it was measured in


@dataclass
class BuildResult:
    out: Path
    figures: list[FigureResult] = field(default_factory=list)
    seconds: float = 0.0
    index: Path | None = None


def experiment_plan(figures: dict[str, ModuleType], opts: StudyOptions | None = None) -> dict[str, Any]:
    """Every experiment the figures need -> its study as ``opts`` plans it (nothing trained; bad input fails here)."""
    from .experiments import plan_study

    needed = dict.fromkeys(e for m in figures.values() for e in m.EXPERIMENTS)  # F1-F3 share one: plan it once
    return {e: plan_study(e, opts)[1] for e in needed}


def figure_files(key: str, module: ModuleType, tables: dict[str, dict[str, pd.DataFrame]], out: Path,
                 quick: bool) -> tuple[list[Path], str, bool]:
    """Draw one figure from the experiments' tables and write its PNG, PDF and CSV."""
    from .figures import render, save_figure_files

    df = module.data(tables)
    title = f"{key}. {module.TITLE}" + (" (quick)" if quick else "")  # the setting goes in the caption
    fig = render(df, module.PANELS, title)
    files = save_figure_files(fig, out / key, df)
    measured, holds = module.verdict(tables)
    return files, measured, bool(holds)


def build_figures(names: list[str] | None = None, opts: StudyOptions | None = None, out: str | Path = "figures",
                  progress: Callable[[float, float, str], None] | None = None,
                  figures: dict[str, ModuleType] | None = None) -> BuildResult:
    """Run what is missing as ``opts`` says (``experiments.StudyOptions``: ``opts.out`` is the run
    store, ``opts.quick`` the quick variant), draw every figure into ``out``, write ``index.html``
    (see the module docstring).

    ``progress(done, total, what)`` gets the job's finished student-steps (each figure's drawing
    counts as one more unit) as it goes; it replaces ``opts``' own ``on_progress`` and ``on_probe``.
    ``figures`` (default: all of ``teacherstudent_analysis.figures``) is for tests, as is
    ``opts.root`` (the experiments' folder, default ``analysis/``).
    """
    from .experiments import StudyOptions, run_study, study_progress

    t0 = time.perf_counter()
    opts = opts if opts is not None else StudyOptions()
    chosen = resolve(names, figures)
    studies = experiment_plan(chosen, opts)
    runs, out, quick = opts.out, Path(out), opts.quick
    totals = {e: study_progress(s, runs) for e, s in studies.items()}
    total = sum(t for _, t in totals.values()) + len(chosen)
    done_before = 0.0

    def tell(done: float, what: str) -> None:
        if progress:
            progress(done, total, what)

    tables: dict[str, dict[str, pd.DataFrame]] = {}
    seconds: dict[str, float] = {}
    for exp in studies:
        t = time.perf_counter()
        res = run_study(exp, replace(opts, on_progress=lambda d, _t, e=exp, b=done_before: tell(b + d, f"training {e}"),
                                     on_probe=lambda label, i, n, e=exp, b=done_before + totals[exp][1]:
                                     tell(b, f"probing {e}: {label} ({i}/{n})")))
        if res.failed:
            first = res.failed[0]
            raise UserError(f"{len(res.failed)} run(s) of experiment {exp} failed (first: {first['run_id']}: "
                            f"{first['error']}); fix the cause and run the same command again")
        if not res.tables:
            raise UserError(f"experiment {exp} wrote no tables: {res.note}")
        tables[exp] = res.tables
        seconds[exp] = time.perf_counter() - t
        done_before += totals[exp][1]
        tell(done_before, f"trained {exp}")
    out.mkdir(parents=True, exist_ok=True)
    result = BuildResult(out)
    charged: set[str] = set()
    for key, module in chosen.items():
        tell(done_before, f"drawing {key}")
        t = time.perf_counter()
        files, measured, holds = figure_files(key, module, {e: tables[e] for e in module.EXPERIMENTS}, out, quick)
        train = sum(seconds[e] for e in module.EXPERIMENTS if e not in charged)
        charged.update(module.EXPERIMENTS)
        result.figures.append(FigureResult(key, module.TITLE, module.CLAIM, measured, holds, files, train,
                                           time.perf_counter() - t, module.SETTING))
        done_before += 1
        tell(done_before, f"drew {key}")
    result.seconds = time.perf_counter() - t0
    timings = pd.DataFrame([{"figure": f.key, "train_seconds": round(f.train_seconds, 1),
                             "render_seconds": round(f.render_seconds, 2), "holds": f.holds} for f in result.figures])
    atomic_write_bytes(out / "timings.csv", timings.to_csv(index=False).encode())
    result.index = write_index(result, opts.command, quick)
    return result


# ---- the report page ---------------------------------------------------------------------

STYLE = """body{font-family:'DejaVu Sans',sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #ddd}section{margin-bottom:2.5em}
.holds{color:#1a7f37;font-weight:bold}.fails{color:#b42318;font-weight:bold}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.meta{color:#666;font-size:90%}"""


def image_tag(png: Path | bytes, alt: str) -> str:
    """An ``<img>`` with the PNG (a file, or its bytes) embedded as base64."""
    data = base64.b64encode(png if isinstance(png, bytes) else png.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def page(title: str, body: list[str], command: list[str] | None) -> str:
    from . import __version__

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = html.escape(" ".join(command) if command else "(library call)")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(body)
            + f"\n<p class=\"meta\">made by <code>{cmd}</code> with teacherstudent {html.escape(__version__)} "
            f"on {when}</p></body></html>\n")


def write_index(result: BuildResult, command: list[str] | None, quick: bool) -> Path:
    body = [f"<p>{len(result.figures)} figures{' (quick mode: fewer seeds and steps)' if quick else ''}; "
            f"{sum(f.holds for f in result.figures)} claims hold. Each figure's numbers are in its CSV.</p>"]
    for f in result.figures:
        png, pdf, csv = f.files
        verdict = '<span class="holds">holds</span>' if f.holds else '<span class="fails">does not hold</span>'
        body.append(f"<section id=\"{f.key}\"><h2>{f.key}. {html.escape(f.title)}</h2>"
                    f"<p><b>Claim.</b> {html.escape(f.claim)}</p>"
                    f"<p><b>Measured.</b> {html.escape(f.measured)}: {verdict}.</p>"
                    f"{image_tag(png, f.key + ' ' + f.title)}"
                    f"<p><b>Setting.</b> {html.escape(f.setting)}{' (quick variant)' if quick else ''}.</p>"
                    f"<p class=\"meta\"><a href=\"{pdf.name}\">PDF</a> · <a href=\"{csv.name}\">CSV</a> · "
                    f"training {f.train_seconds:.0f} s, drawing {f.render_seconds:.1f} s</p></section>")
    path = result.out / "index.html"
    atomic_write_bytes(path, page("teacherstudent: paper figures", body, command).encode())
    return path
