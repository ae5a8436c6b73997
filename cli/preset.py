"""``teacherstudent preset list|show``: the papers' settings shipped with the package."""

from __future__ import annotations

import typer

from .common import console, user_errors

app = typer.Typer(help="The papers' exact settings (use one with: teacherstudent run --preset NAME).", no_args_is_help=True)


@app.command("list")
@user_errors
def list_() -> None:
    """List the presets with the paper and setting each mirrors."""
    from rich.table import Table

    from teacherstudent.preset import list_presets

    t = Table(title="presets (teacherstudent run --preset NAME [--set ...])")
    t.add_column("preset", no_wrap=True)
    t.add_column("paper and setting")
    for name, text in list_presets().items():
        t.add_row(name, text)
    console.print(t)


@app.command()
@user_errors
def show(name: str = typer.Argument(..., help="Preset name (see teacherstudent preset list).")) -> None:
    """Print a preset's header (paper, figure, official command, claim, differences) and its config."""
    from teacherstudent.preset import preset_path

    console.print(preset_path(name).read_text(), markup=False, highlight=False)
