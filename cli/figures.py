"""``teacherstudent figures`` (the paper figures and their report page) and ``teacherstudent report RUN``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .common import console, user_errors


@user_errors
def figures(
    names: Optional[list[str]] = typer.Argument(None, help="Figures to build, e.g. F1 F4 (default: all of them)."),
    quick: bool = typer.Option(False, "--quick", help="Each experiment's quick variant (fewer seeds and steps): minutes, not hours."),
    out: Path = typer.Option(Path("figures"), "--out", help="Folder for <F>.png/.pdf/.csv and index.html."),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Folder that holds the run folders (finished runs are reused)."),
    executor: str = typer.Option("local", "--executor", help="local (worker processes on this machine) or dask."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes (default: as for experiment run)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="With --executor dask: tcp://HOST:8786 of a running cluster."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    plan: bool = typer.Option(False, "--plan", help="Train nothing: print the runs, their student-steps and the "
                              "estimated time on this machine (from a few seconds of measured steps), then exit."),
    estimate: bool = typer.Option(True, "--estimate/--no-estimate", help="With --plan: measure the rate and "
                                  "estimate the time (--no-estimate: counts only, instantly)."),
) -> None:
    """Build the paper figures: train what is missing, draw PNG + PDF + CSV per figure, write index.html."""
    from teacherstudent.experiments import StudyOptions
    from teacherstudent.paper import build_figures, experiment_plan, resolve

    opts = StudyOptions(out=runs, device=device, quick=quick, executor=executor, workers=workers,
                        scheduler=scheduler, command=sys.argv)  # bad options: one line, here
    experiment_plan(resolve(names), opts)  # bad names and configs fail here, before the bar
    if plan:
        print_plan(names, opts, estimate)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("figures", total=None)

        def on_progress(done: float, total: float, what: str) -> None:
            progress.update(task, completed=done, total=total, description=what)

        res = build_figures(names, opts, out, on_progress)
    t = Table(title=f"{len(res.figures)} figures in {res.seconds:.0f} s")
    for col in ("figure", "claim holds", "measured", "train s", "draw s"):
        t.add_column(col, justify="left" if col == "measured" else "right")
    for f in res.figures:
        t.add_row(f.key, "yes" if f.holds else "no", f.measured, f"{f.train_seconds:.0f}", f"{f.render_seconds:.1f}")
    console.print(t)
    console.print(f"report:  {res.index}", markup=False, highlight=False)


def print_plan(names: Optional[list[str]], opts, estimate: bool) -> None:
    """``figures --plan``: one row per experiment, then the total (see teacherstudent.plan)."""
    from teacherstudent.plan import figures_plan, format_duration

    quick, device = opts.quick, opts.device
    with console.status("measuring the rate of each run shape..." if estimate else "planning..."):
        p = figures_plan(names, opts, measure=estimate)
    t = Table(title=f"teacherstudent figures{' --quick' if quick else ''}: the plan (nothing trained)")
    cols = ["experiment", "figures", "runs to train", "student-steps to train", "probe retrains"]
    cols += ["student-steps/s", "estimated time"] if estimate else []
    for col in cols:
        t.add_column(col, justify="left" if col in ("experiment", "figures") else "right")
    for e in p.experiments:
        row = [e.name, " ".join(e.figures), f"{e.runs_to_train} of {e.runs}",
               f"{e.student_steps_to_train:,} of {e.student_steps:,}",
               f"{e.probes} ({e.probe_student_steps:,} student-steps)" if e.probes else "0"]
        if estimate:
            rate = min((r.student_steps_per_s for r in e.rates), default=None)
            row += [f"{rate:,.0f}" if rate else "-", format_duration(e.seconds) if e.rates else "done"]
        t.add_row(*row)
    console.print(t)
    total = f"total: {p.student_steps_to_train:,} student-steps to train"
    if estimate:
        total += (f", about {format_duration(p.seconds)} on {device} here, one run after another "
                  f"(rates measured in {p.calibration_seconds:.0f} s; table writes and checkpoints not counted)")
    console.print(total, markup=False, highlight=False)


@user_errors
def report(run: str = typer.Argument(..., help="Run folder, run id or unique prefix."),
           out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders."),
           dest: Optional[Path] = typer.Option(None, "--to", help="Where to write the page (default: RUN/report.html).")) -> None:
    """Write one run's report page: per-layer curves, lucky-node table, L-shape (self-contained HTML)."""
    from teacherstudent.report import run_report
    from teacherstudent.store import resolve_run

    console.print(f"report: {run_report(resolve_run(run, out), dest, sys.argv)}", markup=False, highlight=False)
