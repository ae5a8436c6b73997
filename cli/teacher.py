"""``teacherstudent teacher ...``: look at a config's teacher before training on it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from .common import console, user_errors

app = typer.Typer(help="Inspect the teacher of a config (no training).", no_args_is_help=True)




def _fmt(v: float, spec: str = ".3f") -> str:
    return "-" if math.isnan(v) else format(v, spec)  # NaN (no pairs, no target) as a dash


@app.command()
@user_errors
def inspect(
    config: Optional[Path] = typer.Argument(None, help="TOML config (same sections as `teacherstudent run`)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: section.key=value (repeatable)."),
    samples: Optional[int] = typer.Option(None, "--samples", min=16, help="Evaluation inputs to use (default: inputs.eval_samples)."),
) -> None:
    """Per layer: firing fractions, pairwise co-activation rates, bias signs; and the output scale."""
    from teacherstudent.config import load_config
    from teacherstudent.diagnostics import inspect_teacher

    from teacherstudent.resources import check_teacher

    cfg = load_config(config, list(set_))
    check_teacher(cfg, samples)  # a teacher that cannot fit is refused before anything is allocated
    rep = inspect_teacher(cfg, samples)
    wide = cfg.inputs.labels == "wide_teacher"
    which = f"wide teacher (x{cfg.inputs.wide_factor}, inputs.labels=wide_teacher)" if wide else "teacher"
    t = Table(title=f"{which} of {cfg.run_id}: {rep.samples} {cfg.inputs.kind} evaluation inputs, d = {rep.input_dim}",
              box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for col in ["layer", "m", "target", "firing", "range", "dead", "co-act", "max", "indep.", "b -/0/+"]:
        t.add_column(col, justify="right", no_wrap=True)
    for r in rep.layers.itertuples():
        t.add_row(str(r.layer), str(r.width), _fmt(r.firing_target, ".2f"), _fmt(r.firing_mean),
                  f"{_fmt(r.firing_min, '.2f')}-{_fmt(r.firing_max, '.2f')}", str(r.dead),
                  _fmt(r.coact_mean), _fmt(r.coact_max), _fmt(r.coact_independent), f"{r.bias_neg}/{r.bias_zero}/{r.bias_pos}")
    o = rep.outputs
    notes = ("firing: mean fraction of inputs on which a node is active (target: teacher.firing; range over nodes); "
             "co-act: mean over pairs of nodes of P(both active), max: the largest pair, indep.: the mean if nodes "
             "fired independently; b -/0/+: how many biases are negative, zero, positive.\n"
             f"outputs: {o['outputs']}, mean {o['mean']:.3g}, std {o['std']:.3g}, mean |y| {o['abs_mean']:.3g}, "
             f"max |y| {o['abs_max']:.3g}")
    console.print(t)
    console.print(notes)
    worst = rep.layers.coact_mean.max()
    if not math.isnan(worst) and worst > 0.1:
        console.print(f"note: co-activation up to {worst:.2f}; the papers assume it is small (sparse firing, mostly "
                      "negative biases): try a lower teacher.firing, e.g. --set teacher.firing=0.1")
