"""``teacherstudent``: a thin typer app over the library's functions.

Every command turns a ``UserError`` (and typer's own usage errors) into one line on
stderr and exit code 2, without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .common import console, err_console, user_errors

app = typer.Typer(help="Teacher-student training dynamics of deep ReLU networks.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def layer_table(folder: Path) -> Table:
    from teacherstudent.store import run_status
    from teacherstudent.summary import final_losses, layer_summary

    s = layer_summary(folder)
    t = Table(title=f"{folder.name}: teacher-node recovery at the last step (mean over members)")
    t.caption_justify = "left"
    for col in ["layer", "m", "best corr", "± seeds", "min", ">0.95", ">0.9", "matches"]:
        t.add_column(col, justify="right")
    for r in s.itertuples():
        t.add_row(str(r.layer), str(r.teacher_width), f"{r.best_corr_mean:.4f}", f"{r.best_corr_mean_std:.4f}",
                  f"{r.best_corr_min:.4f}", f"{r.recovered_frac:.2f}", f"{r.covered_frac:.2f}", f"{r.match_count_mean:.1f}")
    losses = final_losses(folder)
    for m in run_status(folder).get("members", []):
        if m.get("status") != "ok":
            err_console.print(f"warning: member {m['member']} {m['status']}: {m.get('reason', '')}", markup=False)
    t.caption = ("best corr: mean over teacher nodes k of max_j C(k, j); >0.95/>0.9: fraction of teacher nodes "
                 "recovered/covered; matches: students above 0.9 per teacher node.\nfinal loss: "
                 + ", ".join(f"{r.split} {r.mean:.4g}" for r in losses.itertuples()))
    return t


@app.command()
@user_errors
def run(
    config: Optional[Path] = typer.Argument(None, help="TOML file with [teacher], [inputs], [student], [training], [measure] sections."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: section.key=value (repeatable), e.g. --set student.multiplier=5."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Student seeds, one ensemble member each: 1-8, 1,3,5 or 4."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    force: bool = typer.Option(False, "--force", help="Train again even if the run already finished."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Write best_corr.png into the run folder."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
) -> None:
    """Train an ensemble of students on a teacher and track node alignment."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from teacherstudent.config import load_config, parse_seeds
    from teacherstudent.simulate import pick_device, run_experiment
    from teacherstudent.store import run_status

    overrides = list(set_)
    if seeds is not None:
        overrides.append(f"student.seeds=[{','.join(map(str, parse_seeds(seeds)))}]")
    cfg = load_config(config, overrides)
    pick_device(device)
    folder = out / cfg.run_id
    if run_status(folder).get("state") == "finished" and not force:
        console.print(f"{folder} already finished; showing its results (use --force to train again).")
    else:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
            task = progress.add_task(f"{cfg.run_id} ({len(cfg.student.seeds)} students)", total=None)

            def on_progress(step: int, total: int) -> None:
                if step % 50 == 0 or step == total:
                    progress.update(task, completed=step, total=total)

            try:
                folder = run_experiment(cfg, out, device, on_progress=on_progress, command=sys.argv, force=force)
            except KeyboardInterrupt:
                err_console.print(f"interrupted: {folder} keeps its last checkpoint; run the same command again to resume")
                raise typer.Exit(130) from None
    console.print(layer_table(folder))
    if figure:
        from teacherstudent.figures import plot_best_corr

        console.print(f"figure:  {plot_best_corr(folder)}")
    console.print(f"results: {folder}")


@app.command()
@user_errors
def show(run: str = typer.Argument(..., help="Run folder, run id or unique prefix."),
         out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders.")) -> None:
    """Print a finished run's per-layer table of best correlations."""
    from teacherstudent.store import resolve_run

    folder = resolve_run(run, out)
    console.print(layer_table(folder))
    console.print(f"results: {folder}")


@app.command()
@user_errors
def figure(run: str = typer.Argument(..., help="Run folder, run id or unique prefix."),
           out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders.")) -> None:
    """Write best_corr.png (best correlation per layer over training) for a run."""
    from teacherstudent.figures import plot_best_corr
    from teacherstudent.store import resolve_run

    console.print(f"figure: {plot_best_corr(resolve_run(run, out))}")


@app.command("ls")
@user_errors
def ls(out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders.")) -> None:
    """List runs: id, state, members, steps."""
    from teacherstudent.store import list_runs, read_config, run_status

    folders = list_runs(out)
    t = Table(title=f"runs in {out}/")
    # whole run ids (never "default-df25e…"): users pass them to `show`
    t.add_column("run", no_wrap=True, min_width=max((len(f.name) for f in folders), default=3))
    for col in ["state", "members", "step", "teacher widths", "multiplier"]:
        t.add_column(col)
    for folder in folders:
        cfg = read_config(folder)
        st = run_status(folder)
        t.add_row(folder.name, st.get("state", "?"), str(len(cfg["student"]["seeds"])),
                  f"{st.get('step', 0)}/{st.get('total_steps', '?')}", str(cfg["teacher"]["widths"]),
                  str(cfg["student"]["multiplier"]))
    console.print(t)


from . import bench as _bench  # noqa: E402,F401  (registers `teacherstudent bench`)
from .experiment import app as _experiment_app  # noqa: E402
from .teacher import app as _teacher_app  # noqa: E402

app.add_typer(_teacher_app, name="teacher")  # teacherstudent teacher inspect
app.add_typer(_experiment_app, name="experiment")  # teacherstudent experiment list|run
from .probe import app as _probe_app  # noqa: E402
app.add_typer(_probe_app, name="probe")


def main() -> None:
    """Console-script entry: usage errors exit 2 with typer's message, as bad input should."""
    app()


if __name__ == "__main__":
    main()
