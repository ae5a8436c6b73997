"""What every command shares: the consoles, the bad-input handler (one line, exit 2) and the app's
group class that turns typer's own usage errors into the same one line.

Nothing here imports torch, pandas, numpy or matplotlib (nor ``teacherstudent``, whose package
import pulls in torch): ``teacherstudent --help`` must stay instant. Commands import what they
need inside their bodies.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import Abort

# Tables are wide: when output goes to a file or pipe (no terminal width to honour), don't wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

PROG = "teacherstudent"


def print_error(message: str) -> None:
    """One line on stderr: ``error: message`` (no markup, no wrapping; a newline inside the message,
    e.g. from a --set key that holds one, is shown as ``\\n``)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def _out_of_memory(err: BaseException) -> bool:
    """An allocator failure (host or device) that the up-front estimate did not foresee."""
    if isinstance(err, MemoryError):
        return True
    name = type(err).__name__
    text = str(err).splitlines()[0] if str(err) else ""
    low = text.lower()
    return name == "OutOfMemoryError" or (isinstance(err, RuntimeError) and any(
        w in low for w in ("not enough memory", "out of memory", "can't allocate memory", "cannot allocate memory")))


def os_error_line(err: OSError) -> str:
    """``strerror: filename`` (our own OSErrors carry the whole message in ``strerror``)."""
    reason = err.strerror or str(err) or type(err).__name__
    if err.filename and str(err.filename) not in reason:
        reason = f"{reason}: {err.filename}"
    return reason


def user_errors(fn):
    """Print a UserError as one line on stderr and exit 2 (no traceback); an allocation that fails
    likewise (exit 2: the input asked for too much); an OSError (disk full, permissions) as one
    line and exit 1."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            # imported here, not at the top: `teacherstudent` imports torch. When a command body
            # raised, it has imported the library already, so this costs nothing.
            from teacherstudent.errors import UserError

            if isinstance(err, UserError):
                print_error(str(err))
                raise typer.Exit(2) from None
            if _out_of_memory(err):
                first = " ".join(str(err).split())[-160:] if str(err) else type(err).__name__
                print_error(f"out of memory ({first}); shrink the sizes you asked for "
                            "(widths, student.multiplier, samples, seeds) or check with `teacherstudent run --dry-run`")
                raise typer.Exit(2) from None
            if isinstance(err, OSError):
                print_error(os_error_line(err))
                raise typer.Exit(1) from None
            raise
    return wrapper


def _command_path(ctx: Any, root: Any = None, args: list[str] | None = None) -> str:
    """``teacherstudent run`` whatever name the app was started under (CliRunner calls it ``root``).

    Some usage errors carry no context (an option missing its value); then the path is read off
    the arguments by walking the command tree from ``root``.
    """
    if ctx is not None:
        return " ".join([PROG, *ctx.command_path.split()[1:]])
    parts, cmd = [PROG], root
    for arg in args or []:
        commands = getattr(cmd, "commands", None)
        if not commands:  # a leaf command: its path is complete
            break
        if arg in commands:
            parts.append(arg)
            cmd = commands[arg]
        elif not arg.startswith("-"):  # an unknown command name
            break
    return " ".join(parts)


def usage_error_line(err: Any, root: Any = None, args: list[str] | None = None) -> str:
    """One line for a click/typer usage error, with where to read the usage."""
    message = " ".join(err.format_message().split()).rstrip(".")  # click's messages may span lines
    return f"{message} (see {_command_path(getattr(err, 'ctx', None), root, args)} --help)"


class OneLineErrors(TyperGroup):
    """The root group: typer's usage errors (unknown option, bad or missing value, unknown command)
    print one line ``error: ...`` on stderr and exit 2, like every UserError, instead of rich's box.

    Done in ``main`` so that the console script and typer's CliRunner (which call the group's
    ``main``) behave the same.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra: Any) -> Any:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

        if prog_name is None and args is None:
            prog_name = PROG
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as err:  # `teacherstudent` or `teacherstudent probe` alone: the help is printed
            sys.exit(err.exit_code)
        except UsageError as err:
            print_error(usage_error_line(err, self, list(sys.argv[1:] if args is None else args)))
            sys.exit(2)
        except ClickException as err:
            print_error(" ".join(err.format_message().split()))
            sys.exit(err.exit_code)
        except Abort:
            err_console.print("aborted", markup=False)
            sys.exit(1)
        # without standalone mode typer returns the exit code of a typer.Exit (help: 0) or the command's value
        sys.exit(rv if isinstance(rv, int) else 0)


@contextlib.contextmanager
def torch_threads(requested: int | None):
    """Set torch's CPU thread count for a command (``teacherstudent.runtime.choose_threads``) and
    yield ``(threads, reason)``; the previous count comes back afterwards, so calling the app
    in-process (tests, notebooks) leaves torch as it was."""
    import torch

    from teacherstudent.runtime import choose_threads

    n, reason = choose_threads(requested)
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n, reason
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
