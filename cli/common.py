"""What every command shares: the consoles and the bad-input handler (one line, exit 2)."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from teacherstudent.errors import UserError

# Tables are wide: when output goes to a file or pipe (no terminal width to honour), don't wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def user_errors(fn):
    """Print a UserError as one line on stderr and exit 2 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper
