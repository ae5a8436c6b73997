"""``teacherstudent``: a thin typer app over the library's functions.

Every command turns a ``UserError`` (and typer's own usage errors) into one line on
stderr and exit code 2, without a traceback.

This module registers every command and sub-app explicitly; nothing imports it back. Only
typer and rich are imported here: torch, pandas, numpy and matplotlib load inside the command
bodies, so ``--help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .bench import bench
from .common import PROG, OneLineErrors, console, err_console, user_errors
from .experiment import app as experiment_app
from .figures import figures, report
from .probe import app as probe_app
from .preset import app as preset_app
from .teacher import app as teacher_app
from .theory import app as theory_app

app = typer.Typer(cls=OneLineErrors, help="Teacher-student training dynamics of deep ReLU networks.", no_args_is_help=True,
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
    config: Optional[Path] = typer.Argument(None, help=escape("TOML file with [teacher], [inputs], [student], [training], [measure] sections (and arch = 'conv' with [conv]).")),
    set_: list[str] = typer.Option([], "--set", help="Override a field: section.key=value (repeatable), e.g. --set student.multiplier=5."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Student seeds, one ensemble member each: 1-8, 1,3,5 or 4."),
    out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    force: bool = typer.Option(False, "--force", help="Train again even if the run already finished."),
    figure: bool = typer.Option(True, "--figure/--no-figure", help="Write best_corr.png into the run folder."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice, fewer when the machine is busy)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Start from a paper's setting (teacherstudent preset list); a config file and --set apply on top."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the run id, step count and memory estimate; train and write nothing."),
) -> None:
    """Train an ensemble of students on a teacher and track node alignment."""
    from teacherstudent.config import load_config, parse_seeds
    from teacherstudent import simulate
    from teacherstudent.simulate import RunOptions, pick_device
    from teacherstudent.store import run_status

    overrides = list(set_)
    if seeds is not None:
        overrides.append(f"student.seeds=[{','.join(map(str, parse_seeds(seeds)))}]")
    cfg = load_config(config, overrides, preset=preset)
    pick_device(device)
    if dry_run:
        _dry_run(cfg, out, device)
        return
    if not (run_status(out / cfg.run_id).get("state") == "finished" and not force):
        from teacherstudent.resources import check

        check(cfg, pick_device(device))  # a run that cannot fit: one line before the progress bar
    folder = out / cfg.run_id
    if run_status(folder).get("state") == "finished" and not force:
        console.print(f"{folder} already finished; showing its results (use --force to train again).")
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from .common import torch_threads

        with torch_threads(threads) as (n, reason):
            console.print(f"threads: {n} ({reason})", markup=False, highlight=False)
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as progress:
                task = progress.add_task(f"{cfg.run_id} ({len(cfg.student.seeds)} students)", total=None)

                def on_progress(step: int, total: int) -> None:
                    if step % 50 == 0 or step == total:
                        progress.update(task, completed=step, total=total)

                try:
                    folder = simulate.run(cfg, RunOptions(out, device, command=sys.argv, force=force, on_progress=on_progress))
                except KeyboardInterrupt:
                    err_console.print(f"interrupted: {folder} keeps its last checkpoint; run the same command again to resume")
                    raise typer.Exit(130) from None
    console.print(layer_table(folder))
    if figure:
        from teacherstudent.figures import plot_best_corr

        console.print(f"figure:  {plot_best_corr(folder)}")
    console.print(f"results: {folder}")


def _dry_run(cfg, out: Path, device: str) -> None:
    from teacherstudent.errors import UserError
    from teacherstudent.resources import describe, gib
    from teacherstudent.simulate import RunOptions, dry_run

    d = dry_run(cfg, RunOptions(out=out, device=device))
    est = d["estimate"]
    console.print(f"run:     {d['folder']} (state: {d['state']})", markup=False, highlight=False)
    console.print(f"steps:   {d['steps']} ({d['epochs']:g} epochs of {cfg.steps_per_epoch} steps), "
                  f"{d['events']} measurement/checkpoint steps, {len(cfg.student.seeds)} students on {d['device']}",
                  markup=False, highlight=False)
    console.print(f"memory:  about {gib(est.total)} estimated; {gib(d['available'])} available "
                  f"({d['available_from']})\n{describe(est)}", markup=False, highlight=False)
    if not d["fits"]:
        raise UserError(f"{cfg.run_id} needs about {gib(est.total)} but {gib(d['available'])} is available; "
                        "it would be refused")
    console.print("dry run: nothing trained, nothing written", markup=False, highlight=False)


@app.command()
@user_errors
def verify(root: Path = typer.Argument(Path("runs"), help="Folder that holds the run folders."),
           repair: bool = typer.Option(False, "--repair", help="Recompute what can be recomputed: resume from the last good checkpoint or train again."),
           device: str = typer.Option("cpu", "--device", help="Device for --repair (cpu keeps results bit-identical)."),
           ) -> None:
    """Check every run folder (files present, readable, schemas, checkpoints, config hash); --repair fixes what it can."""
    from teacherstudent.simulate import pick_device
    from teacherstudent.verify import verify as verify_runs

    if repair:
        pick_device(device)
    counts = {"ok": 0, "damaged": 0, "repaired": 0, "cannot": 0}

    def on_run(rc) -> None:
        if not rc.problems and not rc.repaired:
            counts["ok"] += 1
            console.print(f"ok       {rc.folder.name} ({rc.state})", markup=False, highlight=False)
            return
        if rc.repaired:
            counts["repaired"] += 1
            console.print(f"repaired {rc.folder.name}: {rc.repaired}", markup=False, highlight=False)
        if rc.problems:
            counts["cannot" if rc.action == "cannot" or repair else "damaged"] += 1
            label = "cannot" if rc.action == "cannot" or repair else "damaged"
            fix = rc.why if rc.action == "cannot" else f"--repair: {rc.why}"
            console.print(f"{label:<8} {rc.folder.name}: {'; '.join(rc.problems)} [{fix}]", markup=False, highlight=False)

    verify_runs(root, repair=repair, device=device, on_run=on_run)
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()), markup=False, highlight=False)
    if counts["damaged"] or counts["cannot"]:
        raise typer.Exit(2)


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


MAX_FIELD_COLUMNS = 8  # differing config fields shown as columns; the rest are named in the caption


def _where_filters(where: list[str]) -> list[tuple[str, Any, str]]:
    """``section.field=value`` -> (field, parsed value, value text); values parse like ``--set``."""
    from teacherstudent.config import parse_value
    from teacherstudent.errors import UserError

    out = []
    for item in where:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --where {item!r}: write it as section.field=value, e.g. --where student.multiplier=5")
        out.append((key.strip(), parse_value(value.strip()), value.strip()))
    return out


def _matches(stored: Any, wanted: Any, text: str) -> bool:
    """A flattened config value (lists and dicts as JSON text) against a ``--where`` value."""
    if isinstance(wanted, (list, dict)):
        wanted = json.dumps(wanted, sort_keys=True)
    return stored == wanted or (isinstance(stored, str) and stored == text)


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    from teacherstudent.store import _flatten  # the same flattening as flat_config / load_runs

    out: dict[str, Any] = {}
    _flatten("", data, out)
    return out


def _check_fields(filters: list[tuple[str, Any, str]], known: set[str]) -> None:
    from difflib import get_close_matches

    from teacherstudent.errors import UserError

    for key, _, _ in filters:
        if key not in known:
            close = get_close_matches(key, sorted(known), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "fields are written section.field, as for --set"
            raise UserError(f"unknown config field {key!r} in --where; {hint}")


def differing_fields(configs: list[dict[str, Any]], skip: tuple[str, ...] = ("name",)) -> list[str]:
    """Flattened config fields whose values are not the same in every config (in config order)."""
    missing = object()
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if k not in skip and len({repr(c.get(k, missing)) for c in configs}) > 1]


@app.command("ls")
@user_errors
def ls(out: Path = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders."),
       where: list[str] = typer.Option([], "--where", help="Only runs whose config has section.field=value (repeatable; values as for --set), e.g. --where student.multiplier=5.")) -> None:
    """List runs: id, state, members, steps, and the config fields that differ between them."""
    from teacherstudent.config import load_config
    from teacherstudent.store import flat_config, list_runs, run_status

    filters = _where_filters(where)
    runs = [(folder, flat_config(folder)) for folder in list_runs(out)]
    if filters:
        _check_fields(filters, set(_flat(load_config(None, []).model_dump(mode="json"))).union(*(c for _, c in runs)))
        runs = [(f, c) for f, c in runs if all(k in c and _matches(c[k], v, text) for k, v, text in filters)]
    fields = differing_fields([c for _, c in runs])
    shown, more = fields[:MAX_FIELD_COLUMNS], fields[MAX_FIELD_COLUMNS:]
    t = Table(title=f"runs in {out}/" + (f" where {', '.join(where)}" if where else ""))
    # whole run ids (never "default-df25e…"): users pass them to `show`
    t.add_column("run", no_wrap=True, min_width=max((len(f.name) for f, _ in runs), default=3))
    for col in ["state", "members", "step", *shown]:
        t.add_column(col)
    for folder, cfg in runs:
        st = run_status(folder)
        t.add_row(folder.name, st.get("state", "?"), str(len(json.loads(cfg["student.seeds"]))),
                  f"{st.get('step', 0)}/{st.get('total_steps', '?')}", *[Text(str(cfg.get(k, "-"))) for k in shown])
    if more:
        t.caption = f"also differing: {', '.join(more)}"
        t.caption_justify = "left"
    console.print(t)


app.command("bench")(bench)  # teacherstudent bench
app.command("figures")(figures)  # teacherstudent figures [NAMES...] [--quick]
app.command("report")(report)  # teacherstudent report RUN
app.add_typer(teacher_app, name="teacher")  # teacherstudent teacher inspect
app.add_typer(experiment_app, name="experiment")  # teacherstudent experiment list|run
app.add_typer(probe_app, name="probe")
app.add_typer(preset_app, name="preset")  # teacherstudent preset list|show  # teacherstudent probe lottery|reinit|show
app.add_typer(theory_app, name="theory")  # teacherstudent theory ode RUN


def main() -> None:
    """Console-script entry. The app's group (``OneLineErrors``) prints usage errors as one line and exits 2."""
    app(prog_name=PROG)


if __name__ == "__main__":
    main()
