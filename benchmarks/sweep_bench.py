"""Study throughput: one 64-run study, sequential vs local worker processes vs a Dask LocalCluster.

The study is the tiny test config (teacher [4, 6], students x3, 512 samples, batch 64) with
``--epochs`` epochs, measured every 80 steps (each measurement and checkpoint is an fsync'ed
write: on a busy shared disk, measuring every epoch made the study disk-bound) and 2
student seeds per run, swept over 64 teacher seeds. Each mode
trains it from scratch into its own run store; the rate is student-steps per wall-clock
second of the whole command (process start-up, imports and writing the tables included),
printed with the ratio to the first mode, all from this one invocation. A mode with the
suffix ``-alone`` (``local-alone``) trains every run alone (``TEACHERSTUDENT_WIDE_PACK=0``); the
plain modes pack runs that differ only in per-member fields (here the teacher seed) into
wide packs (teacherstudent/widepack.py), one or more per worker.

    python benchmarks/sweep_bench.py [--runs 64] [--epochs 20] [--modes sequential,local,dask]
    python benchmarks/sweep_bench.py --modes local-alone,local     # before / after wide packing
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

STUDY_PY = '''"""Benchmark study: the tiny config over teacher seeds."""
import pandas as pd


def arms(base):
    return {"tiny": base}


def tables(runs):
    return {"runs": pd.DataFrame({"arm": list(runs), "folder": [str(p) for p in runs.values()]})}
'''

STUDY_TOML = '''name = "bench"

[teacher]
widths = [4, 6]
outputs = 10
reference_samples = 2000

[student]
multiplier = 3

[inputs]
train_samples = 512
eval_samples = 256

[training]
epochs = {epochs}

[measure]
every = "steps"
every_steps = 80

[sweep]
seeds = "0-1"

[sweep.grid]
"teacher.seed" = {teacher_seeds}
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--modes", default="sequential,local,dask")
    args = ap.parse_args()

    from teacherstudent.experiments import StudyOptions, plan_study, run_study

    work = Path(tempfile.mkdtemp(prefix="sweep_bench_"))
    root = work / "analysis"
    root.mkdir()
    (root / "bench_study.py").write_text(STUDY_PY)
    (root / "bench_study.toml").write_text(STUDY_TOML.format(epochs=args.epochs, teacher_seeds=list(range(args.runs))))
    _, study = plan_study("bench_study", StudyOptions(root=root))
    steps = sum(r.student_steps for r in study.runs)
    cores = os.cpu_count()
    print(f"study: {len(study.runs)} runs x {study.runs[0].members} members x {study.runs[0].cfg.total_steps} steps "
          f"= {steps} student-steps; {cores} cores; load average before: {os.getloadavg()[0]:.1f}")
    modes = {"sequential": dict(executor="local", workers=1),  # one process, torch's own threads
             "local": dict(executor="local"),  # min(cores, runs) worker processes x cores // workers threads
             # (or, for a study smaller than the workers' start-up, in this process: LocalExecutor.expect)
             "workers": dict(executor="local", workers=min(cores, len(study.runs))),  # always the worker processes
             "dask": dict(executor="dask")}  # LocalCluster(n_workers=2, threads_per_worker=1)
    rows = []
    try:
        for i, mode in enumerate(args.modes.split(",")):
            out = work / f"{i}-{mode}"
            base, alone = mode.removesuffix("-alone"), mode.endswith("-alone")
            t0 = time.perf_counter()
            res = run_study("bench_study", StudyOptions(out, "cpu", root=root, wide_pack=not alone, **modes[base]))
            wall = time.perf_counter() - t0
            assert not res.failed and res.counts()["done"] == len(study.runs), res.counts()
            rows.append((mode, wall, steps / wall))
            print(f"  {mode}: {wall:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][2]
    print(f"\n{'mode':<12}{'wall s':>9}{'student-steps/s':>18}{'x ' + rows[0][0]:>16}")
    for mode, wall, rate in rows:
        print(f"{mode:<12}{wall:>9.1f}{rate:>18.0f}{rate / base:>16.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
