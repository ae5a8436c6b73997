"""``teacherstudent probe ...``: lottery-ticket, re-initialisation and flatness probes of a finished run.

Each command calls one library function (``teacherstudent.probes``), shows a progress bar
per probe and closes with a table comparing the probes with the parent. Probes are child
run folders next to the parent; asking for a finished probe again reuses it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import console, user_errors

app = typer.Typer(help="Lottery-ticket, re-initialisation and flatness probes of a finished run (docs/science.md §5, §8).",
                  no_args_is_help=True)

RUN = typer.Argument(..., help="Parent run: folder, run id or unique prefix.")
OUT = typer.Option(Path("runs"), "--out", help="Folder that holds the run folders (probes are written there too).")
DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or mps.")
SET = typer.Option([], "--set", help="Override training.* or measure.* of the probes, e.g. --set training.epochs=10.")


class _Bars:
    """One progress bar per probe label, fed by the library's ``on_progress(label, step, total)``."""

    def __init__(self, progress: Progress):
        self.progress, self.tasks = progress, {}

    def __call__(self, label: str, step: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        if step % 50 == 0 or step == total:
            self.progress.update(self.tasks[label], completed=step, total=total)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeElapsedColumn(), console=console, transient=False)


def _print_table(t: Table) -> None:
    """Tables are wide: in a terminal they fit its width; piped (or captured) they get 150 columns."""
    console.print(t)


def _f(v, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def comparison_table(folders: list[Path], kind: str) -> Table:
    """Parent first, then each probe: widths, losses, best correlation per layer, overlap."""
    from teacherstudent.probes import compare

    df = compare(folders)
    layers = sorted(int(c[len("corr_L"):]) for c in df.columns if c.startswith("corr_L"))
    t = Table(title=f"{folders[0].name} and its {kind} probes (means over {int(df.members.iloc[0])} members)",
              box=box.SIMPLE_HEAD, pad_edge=False)
    t.caption_justify = "left"
    extra = ({"lucky_jaccard": "lucky J", "winners_kept_frac": "win kept", "same_winner_frac": "same win"}
             if kind == "lottery" else
             {"winners_reinit_frac": "win reinit", "same_winner_frac": "same win",
              "delay_0.95_steps": "delay .95", "lost_0.95_frac": "lost .95"})
    labels = [escape(p.removeprefix(f"{kind} ")) for p in df.probe]
    t.add_column("probe", min_width=min(max(map(len, labels)), 48))
    for col in ["widths", "train", "eval", "± seeds", *[f"L{l}" for l in layers], *extra.values()]:
        t.add_column(col, justify="right", no_wrap=True, min_width=max(len(w) for w in col.split()))
    for label, r in zip(labels, df.to_dict("records")):
        widths = "/".join(_f(r.get(f"width_L{l}"), ".0f") for l in layers)
        t.add_row(label, widths, _f(r.get("train_loss"), ".3g"), _f(r.get("eval_loss"), ".3g"),
                  _f(r.get("eval_loss_std"), ".2g"), *[_f(r.get(f"corr_L{l}")) for l in layers],
                  *[_f(r.get(c), ".1f" if c.startswith("delay") else ".2f") for c in extra])
    t.caption = ("train/eval: final losses; Ll: mean over teacher nodes of the best correlation in hidden layer l; "
                 + ("lucky J: Jaccard overlap of the kept nodes with the parent's winners; win kept: fraction of "
                    "teacher nodes whose parent winner was kept; " if kind == "lottery" else
                    "win reinit: fraction of teacher nodes whose parent winner was re-randomised; delay .95: "
                    "mean extra steps to reach 0.95 (nodes recovered in both); lost .95: recovered in the parent, "
                    "not here; ")
                 + "same win: fraction of teacher nodes won by the same parent node.")
    return t


def _train_and_compare(parent: Path, kind: str, jobs: list[Callable[[_Bars], list[Path]]]) -> None:
    """Run each probe job under one progress display, then print the comparison table and the folders."""
    folders: list[Path] = []
    with _progress() as progress:
        bars = _Bars(progress)
        for job in jobs:
            folders += job(bars)
    _print_table(comparison_table([parent, *folders], kind))
    console.print("results: " + ", ".join(str(f) for f in folders))


# The library speaks in config fields (probe.keep); the command line in flags (--keep).
FLAGS = {f"probe.{f}": f"--{f}" for f in ("keep", "by", "scope", "rewind", "rounds", "seed", "nodes", "layers", "rule",
                                         "at", "samples", "top", "lanczos", "probes")}
FLAGS["probe.density_probes"] = "--density-probes"


def flag_errors(fn: Callable) -> Callable:
    """Re-word a library error about a probe field in terms of its command-line flag."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from teacherstudent.errors import UserError

        try:
            return fn(*args, **kwargs)
        except UserError as err:
            msg = str(err)
            for field, flag in FLAGS.items():
                msg = msg.replace(field, flag)
            raise UserError(msg) from None
    return wrapper


def _parse_layers(text: Optional[str]) -> Optional[list[int]]:
    from teacherstudent.errors import UserError

    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"bad --layers {text!r}: list hidden layers like 0,1") from None


@app.command()
@user_errors
@flag_errors
def lottery(
    run: str = RUN,
    keep: float = typer.Option(..., "--keep", help="Fraction of nodes (or weights, with --by magnitude) to keep, in (0, 1]."),
    by: list[str] = typer.Option(..., "--by", help="fanout, alignment, random (nodes) or magnitude (weights); repeatable."),
    scope: str = typer.Option("layer", "--scope", help="layer: keep the fraction of each layer; global: of all layers together."),
    rewind: list[str] = typer.Option(["init"], "--rewind", help="init, step:K, reinit or rescaled; repeatable."),
    rounds: int = typer.Option(1, "--rounds", help="Iterative pruning rounds (IMP); --keep is what is left after the last."),
    seed: int = typer.Option(0, "--seed", help="Seed of random selection and of fresh weights (--by random, --rewind reinit)."),
    rule: str = typer.Option("top", "--rule", help="With --by alignment: top (highest best correlation) or winners_first "
                             "(every teacher node's winner first)."),
    set_: list[str] = SET,
    out: Path = OUT,
    device: str = DEVICE,
) -> None:
    """Prune a finished run to the nodes (or weights) chosen --by, rewind and retrain; compare with the parent."""
    from teacherstudent.probes import run_lottery
    from teacherstudent.probes.lottery import lottery_plan
    from teacherstudent.probes.runs import finished_parent

    parent, _ = finished_parent(run, out)
    # one probe per (selection, rewind); the seed only reaches probes that draw random numbers
    plan = [{"keep": keep, "by": b, "scope": scope, "rewind": r, "rounds": rounds,
             "seed": seed if b == "random" or r == "reinit" else 0, **({"rule": rule} if b == "alignment" else {})}
            for b in by for r in rewind]
    if rule != "top" and "alignment" not in by:
        from teacherstudent.errors import UserError

        raise UserError("--rule does nothing unless --by alignment; drop it")
    if seed != 0 and not any(p["seed"] for p in plan):
        from teacherstudent.errors import UserError

        raise UserError("probe.seed does nothing unless probe.by='random' or probe.rewind='reinit'; drop it")
    for p in plan:  # every bad option fails before anything trains
        lottery_plan(parent, p, out, set_)
    _train_and_compare(parent, "lottery", [
        lambda bars, p=p: run_lottery(parent, p, root=out, device=device, overrides=set_, on_progress=bars,
                                      command=sys.argv)
        for p in plan])


@app.command()
@user_errors
@flag_errors
def reinit(
    run: str = RUN,
    nodes: list[str] = typer.Option(["winners"], "--nodes",
                                    help="winners (the parent's lucky nodes) or random (as many non-winners); repeatable."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Hidden layers to touch, e.g. 0,1 (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fresh weights and of the random choice."),
    set_: list[str] = SET,
    out: Path = OUT,
    device: str = DEVICE,
) -> None:
    """Re-randomise the fan-in of chosen nodes of the parent's initialisation, train again, compare."""
    from teacherstudent.probes import run_reinit
    from teacherstudent.probes.reinit import reinit_plan
    from teacherstudent.probes.runs import finished_parent

    parent, _ = finished_parent(run, out)
    plan = [{"nodes": n, "layers": _parse_layers(layers), "seed": seed} for n in nodes]
    for p in plan:  # every bad option fails before anything trains
        reinit_plan(parent, p, out, set_)
    _train_and_compare(parent, "reinit", [
        lambda bars, p=p: [run_reinit(parent, p, root=out, device=device, overrides=set_, on_progress=bars,
                                      command=sys.argv)]
        for p in plan])


@app.command()
@user_errors
def show(run: str = RUN, out: Path = OUT) -> None:
    """Compare a run with every finished probe of it."""
    from teacherstudent.probes import probes_of
    from teacherstudent.probes.report import describe
    from teacherstudent.probes.runs import finished_parent, run_config

    parent, _ = finished_parent(run, out)
    found = sorted(probes_of(parent), key=describe)
    for kind in ("lottery", "reinit"):
        mine = [f for f in found if run_config(f).probe.kind == kind]
        if mine:
            _print_table(comparison_table([parent, *mine], kind))
    for f in found:
        if run_config(f).probe.kind == "flatness":
            from teacherstudent.store import read_table_file

            _print_table(flatness_table(read_table_file(f / "flatness.parquet"), f.name))
    if not found:
        console.print(f"{parent.name} has no finished probes; make one with `teacherstudent probe lottery`, `probe reinit` "
                      "or `probe flatness`.")


@app.command()
@user_errors
@flag_errors
def flatness(
    run: str = RUN,
    at: str = typer.Option("final", "--at", help="final, or step:K (a checkpoint the parent kept; step:0 = init)."),
    samples: int = typer.Option(4096, "--samples", help="Training samples the loss is taken over (the first ones)."),
    top: int = typer.Option(5, "--top", help="Top Hessian eigenvalues to report."),
    lanczos: int = typer.Option(40, "--lanczos", help="Lanczos steps (Hessian-vector products) per eigen-solve or quadrature."),
    probes: int = typer.Option(64, "--probes", help="Rademacher probes of the Hutchinson trace."),
    density_probes: int = typer.Option(4, "--density-probes", help="Probes per node group of the near-zero quadrature."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Lanczos start and the probes."),
    out: Path = OUT,
    device: str = DEVICE,
) -> None:
    """The Hessian of the training loss at --at: top eigenvalues, trace, and where its top and
    near-zero directions live (unaligned vs aligned student nodes). Trains nothing."""
    from teacherstudent.probes import run_flatness
    from teacherstudent.store import read_table_file

    folder = run_flatness(run, root=out, device=device, command=sys.argv, at=at, samples=samples, top=top,
                          lanczos=lanczos, probes=probes, density_probes=density_probes, seed=seed)
    _print_table(flatness_table(read_table_file(folder / "flatness.parquet"), folder.name))
    console.print(f"results: {folder}")


def flatness_table(df, name: str) -> Table:
    """One row per member: step, top eigenvalues, trace, and the unaligned nodes' shares."""
    t = Table(title=f"{name}: Hessian of the training loss", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = {"eigenvalue": "top eigenvalues", "trace": "trace", "trace_se": "± se",
            "top_share_unaligned": "top: unal.", "near_zero_frac": "near-0 frac",
            "near_zero_share_unaligned": "near-0: unal.", "param_share_unaligned": "params: unal."}
    t.add_column("member")
    t.add_column("step", justify="right")
    for c in cols.values():
        t.add_column(c, justify="right")
    for member, m in df.groupby("member", sort=True):
        v = {s: g.sort_values("index")["value"].tolist() for s, g in m.groupby("statistic")}
        t.add_row(str(member), str(int(m["step"].iloc[0])), " ".join(_f(x, ".4g") for x in v["eigenvalue"]),
                  _f(v["trace"][0], ".4g"), _f(v["trace_se"][0], ".2g"), _f(v["top_share_unaligned"][0]),
                  _f(v["near_zero_frac"][0]), _f(v["near_zero_share_unaligned"][0]), _f(v["param_share_unaligned"][0]))
    t.caption = ("top: unal.: share of the top eigenvector in weights of unaligned nodes (final best correlation below "
                 "measure.covered); near-0 frac: fraction of directions in the window around eigenvalue 0 (docs/science.md "
                 "§8); near-0: unal.: their share in unaligned nodes' weights; params: unal.: the share of all "
                 "weights (the baseline).")
    t.caption_justify = "left"
    return t
