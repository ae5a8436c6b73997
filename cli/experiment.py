"""``teacherstudent experiment ...``: named experiments under ``analysis/`` (see teacherstudent/experiments.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import console, user_errors

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


@app.command()
@user_errors
def run(
    name: str = typer.Argument(..., help="Experiment name, e.g. structured_vs_random (see `experiment list`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a base-config field: section.key=value (repeatable)."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders; tables go to OUT/experiments/NAME/."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    force: bool = typer.Option(False, "--force", help="Train every arm again even if its run already finished."),
    root: Optional[Path] = typer.Option(None, "--dir", help=ROOT_HELP),
) -> None:
    """Train every arm of an experiment (finished runs are reused) and write its tables."""
    from teacherstudent.experiments import experiment_arms, run_named
    from teacherstudent.simulate import pick_device

    pick_device(device)
    experiment_arms(name, list(set_), root)  # bad names and configs fail here, before any progress bar
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                  TimeElapsedColumn(), console=console) as progress:
        def on_arm(arm: str, i: int, n: int, reused: bool):
            label = f"{name} {i + 1}/{n}: {arm}"
            if reused:
                progress.add_task(f"{label} (finished run reused)", total=1, completed=1)
                return None
            task = progress.add_task(label, total=None)

            def on_step(step: int, total: int) -> None:
                if step % 50 == 0 or step == total:
                    progress.update(task, completed=step, total=total)
            return on_step

        res = run_named(name, out, device, list(set_), root, force=force, command=sys.argv, on_arm=on_arm)
    first = next(iter(res.tables))
    console.print(frame_table(res.tables[first], f"{name}: {first}"))
    for arm, folder in res.runs.items():
        console.print(f"run {arm}: {folder}")
    console.print(f"tables:  {', '.join(str(res.folder / f'{t}.parquet') for t in res.tables)} (and .csv)")
