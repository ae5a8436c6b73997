"""``teacherstudent theory ...``: theory curves held against a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, user_errors

app = typer.Typer(help="Theory curves against a finished run (no training).", no_args_is_help=True)


@app.command()
@user_errors
def ode(run: str = typer.Argument(..., help="Run folder, run id or unique prefix."),
        out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders."),
        dt: Optional[float] = typer.Option(None, "--dt", min=1e-6, help="RK4 step in t = step / N (default 0.05 / max(1, eta_w, eta_v))."),
        figure: bool = typer.Option(True, "--figure/--no-figure", help="Write ode_overlay.png/.pdf into the run folder."),
        ) -> None:
    """Integrate the two-layer online-learning ODE (Saad & Solla; Goldt et al.) from each member's initial
    overlaps; write theory_ode.parquet and the overlay of eps_g and R/Q on the simulation's."""
    from teacherstudent.ode_run import ode_errors, plot_ode, write_ode
    from teacherstudent.store import resolve_run

    folder = resolve_run(run, out)
    path, df = write_ode(folder, dt)
    console.print(f"table:   {path}", markup=False, highlight=False)
    for r in ode_errors(df).itertuples():
        console.print(f"{r.statistic:<9} ODE - simulation: max over members {r.max_member:.3g}, RMS over members "
                      f"{r.rms_member:.3g}, of the member means {r.mean:.3g} ({r.steps} steps)", markup=False, highlight=False)
    if figure:
        console.print(f"figure:  {', '.join(str(p) for p in plot_ode(folder, df))}", markup=False, highlight=False)
