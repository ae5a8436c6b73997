"""``teacherstudent experiment ...``: named experiments under ``analysis/`` (see teacherstudent/experiments.py)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.markup import escape
from rich.table import Table

from .common import console, err_console, user_errors

app = typer.Typer(help="Named experiments: analysis/<name>.py with its base config analysis/<name>.toml.",
                  no_args_is_help=True)

ROOT_HELP = "Folder of experiment files (default: the analysis/ experiments that ship with teacherstudent)."




def frame_table(df, title: str) -> Table:
    t = Table(title=title)
    for col in df.columns:
        t.add_column(str(col), justify="right")
    for row in df.itertuples(index=False):
        t.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    return t


@app.command("list")
@user_errors
def list_(root: Optional[Path] = typer.Option(None, "--dir", help=ROOT_HELP)) -> None:
    """List the named experiments."""
    from teacherstudent.experiments import default_root, list_experiments

    t = Table(title=f"experiments in {root or default_root()}/")
    t.add_column("name")
    t.add_column("what it shows")
    for name, doc in list_experiments(root).items():
        t.add_row(name, doc)
    console.print(t)


def _seeds(seeds: Optional[str]):
    if seeds is None:
        return None
    from teacherstudent.config import parse_seeds

    return parse_seeds(seeds)


SET_HELP = "Override a base-config field: section.key=value (repeatable); a sweep axis wins over it."
MPR_HELP = "Student seeds per run (ensemble members); default: as many as fit about 1 GB, all seeds for small studies."
QUICK_HELP = "The experiment's quick variant: its [quick] table (fewer seeds and steps) merged over the base config."
WIDE_HELP = ("Train every run alone: no wide packing of runs that differ only in per-member fields (teacher, "
             "student init, learning rate) into one ensemble; the same tables either way.")
SEEDS_HELP = "Student seeds of the study (replaces [sweep] seeds and student.seeds): 1-32, 1,3,5 or 4."


@app.command()
@user_errors
def run(
    name: str = typer.Argument(..., help="Experiment name, e.g. structured_vs_random (see `experiment list`)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders; tables go to OUT/experiments/NAME/."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    force: bool = typer.Option(False, "--force", help="Train every run again even if it already finished."),
    root: Optional[Path] = typer.Option(None, "--dir", help=ROOT_HELP),
    executor: str = typer.Option("local", "--executor", help="local (worker processes on this machine) or dask."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="With --executor dask: tcp://HOST:8786 of a running cluster (default: a local cluster of 2 workers)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes (local: default min(cores, runs); dask local cluster: default 2)."),
    members_per_run: Optional[int] = typer.Option(None, "--members-per-run", min=1, help=MPR_HELP),
    seeds: Optional[str] = typer.Option(None, "--seeds", help=SEEDS_HELP),
    when_locked: str = typer.Option("wait", "--when-locked", help="A run another process is training: wait for it, or skip it."),
    quick: bool = typer.Option(False, "--quick", help=QUICK_HELP),
    no_wide_pack: bool = typer.Option(False, "--no-wide-pack", help=WIDE_HELP),
) -> None:
    """Train every run of an experiment's study (finished runs are skipped, interrupted ones resume) and write its tables."""
    from rich.progress import TimeRemainingColumn

    from teacherstudent.experiments import StudyOptions, plan_study, run_study, study_progress

    opts = StudyOptions(out=out, device=device, root=root, quick=quick, seeds=_seeds(seeds),
                        members_per_run=members_per_run, executor=executor, workers=workers, scheduler=scheduler,
                        when_locked=when_locked, force=force, wide_pack=not no_wide_pack,
                        command=sys.argv)  # bad options: one line, here
    _, study = plan_study(name, opts, list(set_))  # bad input fails here, before any bar
    done, total = study_progress(study, out)
    ex = opts.make_executor()  # a missing extra or an unreachable scheduler: one line, here
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
                  TextColumn("student-steps"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                  console=console) as progress:
        task = progress.add_task(name, total=total, completed=done)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_report(rep: dict) -> None:
            for note in rep.get("notes") or []:
                progress.console.print(f"{rep['run_id']}: {note}", markup=False, highlight=False)
            if rep["outcome"] == "failed":
                progress.console.print(f"[red]failed[/red] {rep['run_id']}: {escape(str(rep['error']))}")

        def on_probe(label: str, i: int, n: int) -> None:
            progress.update(task, description=f"{name}: probe {label} ({i}/{n})")

        res = run_study(name, replace(opts, executor=ex, on_progress=on_progress, on_report=on_report,
                                      on_probe=on_probe), list(set_))
    counts = res.counts()
    t = Table(title=f"{name}: {len(res.reports)} runs")
    for col in ("done", "resumed", "skipped", "failed"):
        t.add_column(col, justify="right")
    t.add_row(*(str(counts[c]) for c in ("done", "resumed", "skipped", "failed")))
    t.caption = "done: trained from step 0; resumed: from a checkpoint; skipped: finished (or locked)"
    console.print(t)
    if res.failed:
        for rep in res.failed:
            err_console.print(f"failed: {rep['run_id']}: {rep['error']}", markup=False, highlight=False)
        err_console.print(f"error: {len(res.failed)} run(s) failed: {', '.join(r['run_id'] for r in res.failed)}; "
                          "fix the cause and run the same command again (finished runs are skipped)",
                          markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if res.tables:
        first = next(iter(res.tables))
        console.print(frame_table(res.tables[first], f"{name}: {first}"))
        console.print(f"tables:  {', '.join(str(res.folder / f'{t}.parquet') for t in res.tables)} (and .csv)")
    elif res.note:
        console.print(f"note: {res.note}")
    console.print(f"runs:    {res.folder / 'runs.csv'} ({len(res.study.runs)} run folders under {out}/)")


def _plan(name, set_, out, root, members_per_run, seeds, title: str, quick: bool = False, no_wide_pack: bool = False) -> None:
    from teacherstudent.experiments import StudyOptions, plan_study, study_progress
    from teacherstudent.sweep import plan_table

    opts = StudyOptions(out=out, root=root, quick=quick, seeds=_seeds(seeds), members_per_run=members_per_run)
    _, study = plan_study(name, opts, list(set_))
    df = plan_table(study, out, not no_wide_pack)
    t = Table(title=f"{name}: {title}")
    for col in ("#", "run", "arms", "seeds", "state", "student-steps", "job"):
        t.add_column(col, justify="left" if col in ("run", "arms", "state", "job") else "right")
    for r in df.itertuples(index=False):
        job = "" if pd_na(r.job) else f"{r.job}" + (f" (packed, {r.runs_in_job} runs)" if r.runs_in_job > 1 else "")
        t.add_row(str(r[0]), r.run, r.arms, r.seeds, r.state, f"{r.student_steps:,}/{r.total_student_steps:,}", job)
    done, total = study_progress(study, out)
    counts = df.state.value_counts()
    jobs = df.job.dropna()
    packs = df[df.runs_in_job > 1].job.nunique()
    t.caption = (", ".join(f"{counts[s]} {s}" for s in ("done", "running", "interrupted", "failed", "missing") if s in counts)
                 + f"; {done:,} of {total:,} student-steps ({100 * done / max(total, 1):.0f}%) in {out}/"
                 + (f"; the {len(jobs)} runs to train are {jobs.nunique()} jobs" + (
                     f" ({packs} wide packs: runs trained as one ensemble, each with its own folder and tables)"
                     if packs else " (every run alone)") if len(jobs) else ""))
    t.caption_justify = "left"
    console.print(t)
    for r in df.itertuples(index=False):
        if r.state == "failed":
            from teacherstudent.store import run_status

            err_console.print(f"failed: {r.run}: {run_status(out / r.run).get('error', '')}", markup=False, highlight=False)


def pd_na(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


# the options plan and status share
NAME = typer.Argument(..., help="Experiment name (see `experiment list`).")
SET = typer.Option([], "--set", help=SET_HELP)
OUT = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders.")
DIR = typer.Option(None, "--dir", help=ROOT_HELP)
MPR = typer.Option(None, "--members-per-run", min=1, help=MPR_HELP)
SEEDS = typer.Option(None, "--seeds", help=SEEDS_HELP)
QUICK = typer.Option(False, "--quick", help=QUICK_HELP)


@app.command()
@user_errors
def plan(
    name: str = NAME, set_: list[str] = SET, out: Path = OUT, root: Optional[Path] = DIR,
    members_per_run: Optional[int] = MPR, seeds: Optional[str] = SEEDS, quick: bool = QUICK,
    no_wide_pack: bool = typer.Option(False, "--no-wide-pack", help=WIDE_HELP),
) -> None:
    """The study's runs (arms x sweep points, packed by seeds) with run ids, states and the jobs that train them (wide packs); trains nothing."""
    _plan(name, set_, out, root, members_per_run, seeds, "plan", quick, no_wide_pack)


@app.command()
@user_errors
def status(
    name: str = NAME, set_: list[str] = SET, out: Path = OUT, root: Optional[Path] = DIR,
    members_per_run: Optional[int] = MPR, seeds: Optional[str] = SEEDS, quick: bool = QUICK,
) -> None:
    """How far a study is: each run's state (done, running, interrupted, failed, missing) and the student-steps done."""
    _plan(name, set_, out, root, members_per_run, seeds, "status", quick)
