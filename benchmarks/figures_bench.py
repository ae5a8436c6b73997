"""The full figure build, counted and timed: student-steps, the plan's estimate, and a build's measured time.

For the chosen figures (default all, the papers' budgets; ``--quick`` for the quick set) this
prints one row per experiment (from ``teacherstudent.plan.figures_plan`` against an empty run
store, so everything counts): runs, student-steps (training plus probe retrains) and the
estimated seconds from rates measured here. With ``--build FOLDER`` (the ``--out`` of a finished
``teacherstudent figures`` whose runs were all trained by that build) it adds that build's
measured training seconds per figure (its ``timings.csv``) and the ratio measured / estimated.
With ``--time`` it builds the figures itself into a temporary folder and times the whole
command (training, tables, drawing).

    python -m teacherstudent_benchmarks.figures_bench [F1 F4 ...] [--quick] [--build FIGS] [--time]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def figure_rows(plan, build: Path | None) -> list[dict]:
    """Per figure: the experiments it is the first to need, their student-steps and estimated seconds,
    and (with ``build``) the measured training seconds from ``timings.csv``."""
    import pandas as pd

    measured = {}
    if build is not None:
        path = Path(build) / "timings.csv"
        if not path.is_file():
            sys.exit(f"error: {path} not found: give --build the --out folder of a finished teacherstudent figures")
        measured = dict(pd.read_csv(path)[["figure", "train_seconds"]].itertuples(index=False))
    charged: set[str] = set()
    rows = []
    figures = dict.fromkeys(f for e in plan.experiments for f in e.figures)
    for fig in figures:
        mine = [e for e in plan.experiments if fig in e.figures and e.name not in charged]
        charged.update(e.name for e in mine)
        est = sum(e.seconds or 0.0 for e in mine)
        row = {"figure": fig, "experiments": " ".join(e.name for e in mine) or "-",
               "runs": sum(e.runs for e in mine), "probes": sum(e.probes for e in mine),
               "student_steps": sum(e.student_steps + e.probe_student_steps for e in mine), "estimated_s": est}
        if fig in measured:
            row["measured_s"] = float(measured[fig])
            row["measured/estimated"] = row["measured_s"] / est if est > 0 else float("nan")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    from teacherstudent.experiments import StudyOptions
    from teacherstudent.plan import figures_plan, format_duration

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="figures (default: all)")
    ap.add_argument("--quick", action="store_true", help="the quick set instead of the papers' budgets")
    ap.add_argument("--build", type=Path, help="--out folder of a finished figure build (its timings.csv)")
    ap.add_argument("--time", action="store_true", help="build the figures here into a temporary folder, timed")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        opts = StudyOptions(out=Path(tmp) / "runs", quick=a.quick, device=a.device)  # empty store: count it all
        plan = figures_plan(a.names or None, opts)
    rows = figure_rows(plan, a.build)
    cols = ["figure", "experiments", "runs", "probes", "student_steps", "estimated_s"]
    cols += ["measured_s", "measured/estimated"] if a.build else []
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [f"{r[c]:,}" if c == "student_steps" else f"{r[c]:.2f}" if c == "measured/estimated"
                 else f"{r[c]:.0f}" if c.endswith("_s") else str(r[c]) for c in cols if c in r]
        print("| " + " | ".join(cells) + " |")
    total = sum(r["student_steps"] for r in rows)
    print(f"total: {total:,} student-steps; estimated {format_duration(plan.seconds or 0)} on {a.device} "
          f"(rates measured in {plan.calibration_seconds:.0f} s)")
    if a.build:
        m = sum(r.get("measured_s", 0.0) for r in rows)
        print(f"measured training in {a.build}: {format_duration(m)} "
              f"({m / plan.seconds:.2f} x the estimate)" if plan.seconds else "")
    if a.time:
        from teacherstudent.paper import build_figures

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            build_figures(a.names or None, StudyOptions(out=Path(tmp) / "runs", quick=a.quick, device=a.device),
                          Path(tmp) / "figs")
            wall = time.perf_counter() - t0
        print(f"built here: {format_duration(wall)} wall ({total / wall:,.0f} student-steps/s over the whole build; "
              f"{wall / plan.seconds:.2f} x the estimate)" if plan.seconds else f"built here: {wall:.0f} s")


if __name__ == "__main__":
    main()
