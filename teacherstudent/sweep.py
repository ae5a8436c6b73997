"""Studies: a named experiment's arms times a ``[sweep]`` table, packed into ensemble runs.

A named experiment's TOML may carry

.. code-block:: toml

    [sweep]
    seeds = "1-32"                                  # student seeds (replaces student.seeds)
    [sweep.grid]                                    # every combination (last axis fastest)
    "student.multiplier" = [2, 5]
    "teacher.strength_decay" = [0.0, 1.0]
    [sweep.zip]                                     # paired: the i-th values go together
    "training.lr" = [0.1, 0.05]
    "training.epochs" = [10, 20]

Every arm of ``arms(base)`` is expanded at every point (grid product x zip rows); an axis
value wins over what the arm set. **Packing**: all (arm, point) configs that differ only
in ``student.seeds`` are one computation, an ensemble over the union of their seeds,
split into chunks of ``members_per_run`` seeds (default: as many members as fit
``MEMBER_BUDGET`` bytes, see ``member_bytes``), one run folder per chunk. A member's
numbers do not depend on which other members share its ensemble, so ``load_runs`` sees
the same rows (bar the ``run`` column and ``student.seeds``) however a study is packed, up to
float rounding (MKL partitions a batched matmul of one member differently from one of several).

``train_job`` is what an executor runs for one run (``teacherstudent.executors``): it
trains through ``simulate.run`` (one process per run folder, by the run folder's lock),
reports only a small dict (run id, path, outcome, error) and records a failure in the
run's ``status.json``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, build_config, parse_seeds
from .errors import UserError
from .lock import is_locked
from .store import run_status

MEMBER_BUDGET = 1 << 30  # bytes of parameters, optimiser state and activations per run, for the default packing
SWEEP_KEYS = ("grid", "zip", "seeds", "wide_pack")
OUTCOMES = ("done", "resumed", "skipped", "failed")


# ---- the [sweep] table ------------------------------------------------------------

@dataclass(frozen=True)
class Sweep:
    grid: dict[str, tuple] = field(default_factory=dict)
    zip: dict[str, tuple] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None
    wide_pack: bool = True  # runs that differ only in per-member fields train together (widepack.py)

    @property
    def axes(self) -> list[str]:
        return [*self.grid, *self.zip]

    def points(self) -> list[dict[str, Any]]:
        """Every point: the grid's product (last axis fastest) times the zip rows."""
        grid = [dict(zip(self.grid, values)) for values in itertools.product(*self.grid.values())]
        n = len(next(iter(self.zip.values()))) if self.zip else 1
        rows = [{k: v[i] for k, v in self.zip.items()} for i in range(n)]
        return [{**g, **z} for g in grid for z in rows]


def check_field(key: str, where: str = "[sweep]") -> None:
    """``section.field`` (or a top-level field) must name a config field."""
    from pydantic import BaseModel

    model: Any = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields or part == "probe":
            known = ", ".join(k for k in (fields or {}) if k != "probe")
            at = ".".join(parts[:i]) or "the config"
            raise UserError(f"{where}: unknown config key {key!r} ({part!r} is not a field of {at}; known: {known})")
        ann = fields[part].annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if model is not None:
        raise UserError(f"{where}: {key!r} is a section, not a field; name a field like {key}.<field>")


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        seeds = parse_seeds(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seeds = (value,)
    elif isinstance(value, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        seeds = tuple(value)
    else:
        raise UserError(f"[sweep] seeds = {value!r}: write a range like \"1-32\", a list like [1, 3, 5] or one seed")
    if not seeds:
        raise UserError("[sweep] seeds is empty: give at least one student seed, e.g. seeds = \"1-8\"")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"[sweep] seeds {value!r} repeat a seed; every seed is one member and must be distinct")
    return seeds


def parse_sweep(table: Any) -> Sweep | None:
    """The ``[sweep]`` table of a TOML file (None: no sweep); every problem is one ``UserError``."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise UserError("[sweep] must be a table with grid, zip and/or seeds")
    unknown = [k for k in table if k not in SWEEP_KEYS]
    if unknown:
        raise UserError(f"[sweep]: unknown key {unknown[0]!r}; known: {', '.join(SWEEP_KEYS)} "
                        "(axes go under [sweep.grid] or [sweep.zip])")
    axes: dict[str, dict[str, tuple]] = {}
    for kind in ("grid", "zip"):
        sub = table.get(kind, {})
        if not isinstance(sub, dict):
            raise UserError(f"[sweep.{kind}] must be a table of \"section.field\" = [values]")
        axes[kind] = {}
        for key, values in sub.items():
            if isinstance(values, dict):  # an unquoted dotted key: student.multiplier = [...] nests in TOML
                raise UserError(f"[sweep.{kind}] {key}: quote dotted axis names, e.g. \"{key}.<field>\" = [1, 2]")
            check_field(key, f"[sweep.{kind}]")
            if not isinstance(values, list):
                raise UserError(f"[sweep.{kind}] {key!r} = {values!r}: an axis is a list of values, e.g. [1, 2, 5]")
            if not values:
                raise UserError(f"[sweep.{kind}] axis {key!r} is empty: give it at least one value or remove it")
            axes[kind][key] = tuple(values)
    both = set(axes["grid"]) & set(axes["zip"])
    if both:
        raise UserError(f"[sweep]: {sorted(both)[0]!r} is both a grid and a zip axis; keep it in one")
    lengths = {k: len(v) for k, v in axes["zip"].items()}
    if len(set(lengths.values())) > 1:
        raise UserError("[sweep.zip] axes must have equal lengths (they are paired): "
                        + ", ".join(f"{k} has {n}" for k, n in lengths.items()))
    seeds = _seeds(table["seeds"]) if "seeds" in table else None
    wide = table.get("wide_pack", True)
    if not isinstance(wide, bool):
        raise UserError(f"[sweep] wide_pack = {wide!r}: write true (train runs that differ only in per-member "
                        "fields as one ensemble, the default) or false (every run alone)")
    return Sweep(axes["grid"], axes["zip"], seeds, wide)


def _set(data: dict, key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = data
    for s in sections:
        node = node[s]
    node[last] = value


def at_point(cfg: ExperimentConfig, point: dict[str, Any], seeds: tuple[int, ...] | None) -> ExperimentConfig:
    data = cfg.model_dump()
    for key, value in point.items():
        _set(data, key, value)
    if seeds is not None:
        data["student"]["seeds"] = list(seeds)
    try:
        return build_config(data)
    except UserError as err:
        where = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "the base point"
        raise UserError(f"[sweep] at {where}: {err}") from None


# ---- packing ------------------------------------------------------------------------

@dataclass(frozen=True)
class Label:
    """One (arm, point) of the study and the seeds it asked for."""
    arm: str
    point: dict[str, Any]
    seeds: tuple[int, ...]

    @property
    def text(self) -> str:
        return "/".join([self.arm, *(f"{k}={v}" for k, v in self.point.items())])


@dataclass(frozen=True)
class StudyRun:
    """One run folder of the study: a config (a chunk of seeds) and the labels it serves."""
    cfg: ExperimentConfig
    labels: tuple[Label, ...]

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @property
    def members(self) -> int:
        return len(self.cfg.student.seeds)

    @property
    def student_steps(self) -> int:
        return self.cfg.total_steps * self.members


def member_bytes(cfg: ExperimentConfig) -> int:
    """Rough bytes one member needs: parameters, gradients, optimiser state, one step's and one
    measurement's activations (what decides how many members share a run by default)."""
    from .architectures import ARCHITECTURES

    el = 8 if cfg.training.dtype == "float64" else 4
    widths = [cfg.student.multiplier * w for w in cfg.teacher.widths]
    params = ARCHITECTURES["mlp"].param_count(cfg, cfg.teacher.d)  # fully connected count, for every arch
    t = cfg.training
    moments = 2 if t.optimizer == "adam" else (1 if t.momentum > 0 else 0)
    # a node (conv: a channel) holds an activation at every position
    widths = [n * p for n, p in zip(widths, ARCHITECTURES[cfg.arch].positions(cfg))]
    hidden = sum(widths) + cfg.teacher.outputs
    acts = 3 * t.batch_size * hidden + 2 * cfg.inputs.eval_samples * hidden
    return int(el * (params * (2 + moments) + acts))


RUN_OVERHEAD_S = 0.04  # building, measuring and writing one small run besides its training (measured: ~35 ms, 2026-12-07)
SMALL_GEMM_FLOPS = 20e9  # flop/s the small matmuls of study runs reach on one core, on the low side (bench: 40-120)


def inprocess_seconds(runs: list[StudyRun]) -> float | None:
    """A rough, generous estimate of how long ``runs`` take one after another in one process on
    the CPU: a fixed cost per run plus the multiply-adds of their training steps (6 per parameter per
    sample) and measurements (2 per parameter per evaluation sample). None when a run is not a
    fully connected student (a conv's cost is not its weight count): then nobody guesses."""
    from .architectures import ARCHITECTURES
    from .schedule import measure_steps

    total = 0.0
    for r in runs:
        cfg = r.cfg
        if cfg.arch != "mlp":
            return None
        params = ARCHITECTURES["mlp"].param_count(cfg, cfg.teacher.d)
        measurements = len(measure_steps(cfg.measure, cfg.steps_per_epoch, cfg.total_steps)) + 1
        flops = r.members * params * (6 * cfg.training.batch_size * cfg.total_steps
                                       + 2 * cfg.inputs.eval_samples * measurements)
        total += RUN_OVERHEAD_S + flops / SMALL_GEMM_FLOPS
    return total


def default_members_per_run(cfg: ExperimentConfig, n_seeds: int, budget: float = MEMBER_BUDGET) -> int:
    return max(1, min(n_seeds, int(budget // max(1, member_bytes(cfg)))))


def _without_seeds(cfg: ExperimentConfig) -> str:
    data = cfg.model_dump(mode="json")
    data["student"].pop("seeds")
    return json.dumps(data, sort_keys=True)


def pack(labelled: list[tuple[Label, ExperimentConfig]], members_per_run: int | None) -> list[StudyRun]:
    """Group configs that differ only in seeds; one run per chunk of their seeds (first-seen order)."""
    groups: dict[str, tuple[ExperimentConfig, list[int], list[Label]]] = {}
    for label, cfg in labelled:
        cfg0, seeds, labels = groups.setdefault(_without_seeds(cfg), (cfg, [], []))
        seeds.extend(s for s in cfg.student.seeds if s not in seeds)
        labels.append(label)
    runs = []
    for cfg0, seeds, labels in groups.values():
        k = members_per_run or default_members_per_run(cfg0, len(seeds))
        for i in range(0, len(seeds), k):
            chunk = tuple(seeds[i:i + k])
            cfg = cfg0.replace(student={"seeds": list(chunk)})
            runs.append(StudyRun(cfg, tuple(lb for lb in labels if set(lb.seeds) & set(chunk))))
    return runs


# ---- a study --------------------------------------------------------------------------

@dataclass(frozen=True)
class Study:
    name: str
    sweep: Sweep | None
    labels: tuple[Label, ...]
    runs: tuple[StudyRun, ...]

    def runs_of(self, label: Label) -> list[StudyRun]:
        return [r for r in self.runs if label in r.labels]

    def one_run_per_label(self) -> bool:
        """Every (arm, point) is exactly one run holding exactly its seeds (then the experiment's
        own ``tables(runs)`` apply point by point)."""
        return all(len(rs) == 1 and tuple(rs[0].cfg.student.seeds) == lb.seeds
                   for lb in self.labels for rs in [self.runs_of(lb)])


def expand(name: str, arms: dict[str, ExperimentConfig], sweep: Sweep | None,
           members_per_run: int | None = None, seeds: tuple[int, ...] | None = None) -> Study:
    """Every arm at every point of ``sweep``, packed into runs. ``seeds`` (the ``--seeds`` flag)
    replaces the sweep's seeds."""
    # members_per_run >= 1: checked with the rest of the study's options (experiments.StudyOptions)
    seeds = seeds if seeds is not None else (sweep.seeds if sweep else None)
    points = sweep.points() if sweep else [{}]
    labelled = []
    for arm, cfg in arms.items():
        for point in points:
            c = at_point(cfg, point, seeds) if (point or seeds is not None) else cfg
            labelled.append((Label(arm, point, tuple(c.student.seeds)), c))
    if not labelled:
        raise UserError(f"study {name!r} expands to zero runs (its arms() returned none); nothing to train")
    runs = pack(labelled, members_per_run)
    return Study(name, sweep, tuple(lb for lb, _ in labelled), tuple(runs))


# ---- what the run store says --------------------------------------------------------

STATES = ("done", "running", "interrupted", "failed", "missing")


def run_state(out: Path, run: StudyRun) -> tuple[str, int]:
    """``(state, finished student-steps)`` of a study run, read from its folder only.

    ``running``: some process holds its lock; ``interrupted``: started, not finished and
    nobody trains it (it resumes); ``failed``: the last attempt raised (it is tried again).
    """
    folder = Path(out) / run.run_id
    try:
        st = run_status(folder) if folder.exists() else {"state": "new"}
    except UserError:
        st = {"state": "corrupted"}
    state = st.get("state")
    if state == "finished":
        return "done", run.student_steps
    steps = int(st.get("step") or 0) * run.members
    if is_locked(folder):
        return "running", steps
    if state == "failed":
        return "failed", steps
    if state in ("running", "interrupted", "corrupted"):
        return "interrupted", steps
    return "missing", 0


def all_diverged(folder: Path) -> bool:
    members = run_status(folder).get("members") or []
    return bool(members) and all(m.get("status") == "diverged" for m in members)


def format_seeds(seeds: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``0-2,5``."""
    out, i = [], 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        out.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(out)


def plan_table(study: Study, out: Path, wide_pack: bool = True):
    """One row per run: run id, its arms and points, seeds, state and student-steps done / total,
    and the job that trains it (``wide_pack``: as ``study_jobs`` packs them)."""
    import pandas as pd

    rows = []
    states = [run_state(out, r) for r in study.runs]
    jobs = study_jobs(study, [r for r, (state, _) in zip(study.runs, states) if state != "done"], out,
                      wide_pack=wide_pack)
    pack = {r.run_id: (i + 1, len(j)) for i, j in enumerate(jobs) for r in j}
    for i, (r, (state, done)) in enumerate(zip(study.runs, states)):
        job, n = pack.get(r.run_id, (None, 0))
        rows.append({"#": i + 1, "run": r.run_id, "arms": "; ".join(lb.text for lb in r.labels),
                     "seeds": format_seeds(tuple(r.cfg.student.seeds)), "members": r.members, "state": state,
                     "student_steps": done, "total_student_steps": r.student_steps,
                     "job": job, "runs_in_job": n})
    df = pd.DataFrame(rows)
    df["job"] = df["job"].astype("Int64")
    return df


def study_jobs(study: Study, runs: list[StudyRun], out: Path, workers: int | None = None,
               wide_pack: bool = True) -> list[tuple[StudyRun, ...]]:
    """The jobs that train ``runs`` (the study's unfinished ones): tuples of runs trained as one
    ensemble (wide packing, ``teacherstudent.widepack``, unless ``wide_pack`` is False; one run:
    alone), at least ``workers`` of them where packs can be split (default: this machine's cores)."""
    from .executors import available_cores
    from .widepack import enabled, wide_jobs

    return wide_jobs(runs, out, wide_pack and enabled(study.sweep), workers or available_cores())


def jobs_specs(jobs: list[tuple[StudyRun, ...]], out: Path, device: str, threads: int | None, when_locked: str,
               force: bool, command: list[str] | None) -> list[dict[str, Any]]:
    """One worker spec per job: ``job_spec`` for a run alone, ``widepack.pack_spec`` for a pack."""
    from .widepack import pack_spec

    return [job_spec(j[0], out, device, threads, when_locked, force, command) if len(j) == 1
            else pack_spec(j, out, device, threads, when_locked, force, command) for j in jobs]


def as_reports(result: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A worker's result as reports: one for a run alone, one per run for a pack."""
    return result if isinstance(result, list) else [result]


def failed_reports(spec: dict[str, Any], why: str) -> list[dict[str, Any]]:
    """The reports of a job whose worker was lost: every run of it failed."""
    return [{"run_id": s["run_id"], "path": f"{s['out']}/{s['run_id']}", "outcome": "failed", "error": why,
             "notes": [], "seconds": 0.0} for s in spec.get("pack", [spec])]


def load_study(study: Study, out: str | Path, table: str = "metrics"):
    """The study's rows of ``table`` (finished runs only), each tagged with its ``arm`` and the axis
    values of its point: the same rows however the study was packed (up to float rounding)."""
    import pandas as pd

    from .summary import read_table

    frames = []
    for r in study.runs:
        folder = Path(out) / r.run_id
        if run_status(folder).get("state") != "finished":
            continue
        df = read_table(folder, table)
        for lb in r.labels:
            part = df[df.member.isin(lb.seeds)].copy()
            part.insert(0, "arm", lb.arm)
            for j, (k, v) in enumerate(lb.point.items()):
                part.insert(1 + j, k, json.dumps(v) if isinstance(v, (list, dict)) else v)
            frames.append(part)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---- one run, in a worker -----------------------------------------------------------------

def job_spec(run: StudyRun, out: Path, device: str, threads: int | None, when_locked: str, force: bool,
             command: list[str] | None) -> dict[str, Any]:
    """Everything a worker needs, as plain data (pickles cheaply, crosses to any Dask worker)."""
    return {"config": run.cfg.model_dump(mode="json"), "run_id": run.run_id, "out": str(out), "device": device,
            "threads": threads, "when_locked": when_locked, "force": force, "command": command}


PROGRESS_EVERY_S = 1.0  # how often a training worker writes its step into status.json


def _dask_threads() -> int | None:
    import sys

    if "distributed" not in sys.modules:  # not on a Dask worker (the cluster extra is optional)
        return None
    try:
        w = sys.modules["distributed"].get_worker()
    except ValueError:
        return None
    n = getattr(getattr(w, "state", w), "nthreads", None) or 1
    return max(1, (os.cpu_count() or 1) // n)


def new_report(spec: dict[str, Any]) -> dict[str, Any]:
    """A run's report before it trains (``train_job``'s keys; outcome ``failed`` until it says otherwise)."""
    return {"run_id": spec["run_id"], "path": str(Path(spec["out"]) / spec["run_id"]), "outcome": "failed",
            "error": None, "notes": [], "seconds": 0.0}


def error_line(err: Exception) -> str:
    """A failure as one report line: a ``UserError``'s message, else ``Type: message``."""
    msg = " ".join(str(err).split()) or type(err).__name__
    return msg if isinstance(err, UserError) else f"{type(err).__name__}: {msg}"


def mark_failed(folder, error: str) -> None:
    """Record a failed attempt in an unfinished run folder's status (never in one holding another config)."""
    with contextlib.suppress(Exception):
        folder.check_config()
        st = folder.status
        folder.mark("failed", int(st.get("step") or 0), int(st.get("total_steps") or 0), error=error)


def apply_threads(spec: dict[str, Any]) -> None:
    """Torch threads as the executor told this job (a Dask worker's own count when it did not)."""
    import torch

    threads = spec.get("threads") or _dask_threads()
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def train_job(spec: dict[str, Any], on_tick=None) -> dict[str, Any] | list[dict[str, Any]]:
    """Train one study run (in whatever process an executor chose); returns a small report:
    ``run_id``, ``path``, ``outcome`` (``done``, ``resumed``, ``skipped``, ``failed``),
    ``error`` (one line), ``notes`` (e.g. that it waited for another process), ``seconds``.
    A pack's spec (``widepack.pack_spec``) trains its runs together: one report per run."""
    if "pack" in spec:
        from .widepack import train_pack

        return train_pack(spec, on_tick)

    from .lock import RunLocked
    from .simulate import RunOptions, run
    from .store import RunFolder

    t0 = time.perf_counter()
    apply_threads(spec)
    report = new_report(spec)
    stderr = io.StringIO()
    folder = None
    try:
        cfg = build_config(spec["config"])
        folder = RunFolder(spec["out"], cfg)
        before = folder.status.get("state")
        resumable = before in ("running", "interrupted", "failed") or folder.latest.exists()
        if before == "finished" and not spec["force"]:
            report["outcome"] = "skipped"
        else:
            trained, last = [False], [0.0]

            def on_progress(step: int, total: int) -> None:
                trained[0] = True
                now = time.perf_counter()
                if now - last[0] >= PROGRESS_EVERY_S and step < total:
                    last[0] = now
                    folder.mark("running", step, total)  # the study's progress bar reads it
                    if on_tick is not None:
                        on_tick()

            opts = RunOptions(Path(spec["out"]), spec["device"], spec.get("command"), spec["force"], on_progress,
                              when_locked=spec["when_locked"])
            with contextlib.redirect_stderr(stderr):  # "waiting for it" goes into the report, not over the progress bar
                run(cfg, opts)
            if trained[0]:
                report["outcome"] = "resumed" if resumable and not spec["force"] else "done"
            else:
                report["outcome"] = "resumed" if resumable else "skipped"  # finished by another process meanwhile
            st = folder.status
            if st.get("state") == "interrupted":
                report["outcome"], report["error"] = "failed", "stopped before the last step (a stopping callback)"
            elif all_diverged(folder.path):
                report["outcome"] = "failed"
                report["error"] = f"all {len(st['members'])} members diverged (see status.json)"
    except RunLocked as err:
        report["outcome"] = "skipped"
        report["notes"].append(str(err))
    except Exception as err:  # noqa: BLE001  (one failing run must not stop the study)
        report["error"] = error_line(err)
        if folder is not None and folder.path.exists() and not folder.finished:
            mark_failed(folder, report["error"])
    report["notes"].extend(line for line in stderr.getvalue().splitlines() if line.strip())
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report
