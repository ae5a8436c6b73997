"""Named experiments: ``analysis/<name>.py`` beside its base config ``analysis/<name>.toml``.

An experiment file is one module with a docstring (its first line is the description that
``teacherstudent experiment list`` shows) and two functions:

- ``arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]``: the runs to train,
  derived from the base config (``base.replace(...)``);
- ``tables(runs: dict[str, Path]) -> dict[str, pandas.DataFrame]``: its tables, computed
  only from the finished runs' tables; the first one is the summary the CLI prints.

The TOML may also carry a ``[sweep]`` table (grid and zip axes over any config field,
student ``seeds``; ``teacherstudent.sweep``): then every arm is trained at every point,
arms that differ only in seeds are packed into ensemble runs, and the experiment's tables
are computed point by point, with one column per axis.

An experiment may also define ``probes(base) -> {label: (arm, probe fields)}``: probes
(``teacherstudent.probes.PROBES``, e.g. ``{"kind": "lottery", "keep": 0.2, "by": "alignment",
"rewind": "init"}``) run on an arm's finished run once every arm has trained; ``tables`` then
gets each probe's (last) child run folder under its label too. Probes need one run per arm
and no sweep axes.

A ``[quick]`` table in the TOML shrinks the study for a fast look (``--quick``;
``teacherstudent figures --quick``): it holds the same sections as the file itself
(``[quick.training]``, ``[quick.student]``, ``[quick.sweep]``, ...) and is merged over
them before any ``--set`` override, so quick runs are ordinary runs with their own ids.
Without ``quick`` the table is ignored; asking for ``quick`` of an experiment without one
is a ``UserError``.

``run_study(name, StudyOptions(...), overrides)`` loads the base config (plus ``--set``
overrides), expands and packs the study (``StudyOptions``: which runs, and where and how
they train), trains its runs on an executor (``teacherstudent.executors``: local worker
processes or Dask; finished runs are skipped, interrupted ones resume, so a second call
only recomputes the tables) and writes each table as
``<out>/experiments/<name>/<table>.parquet`` and ``.csv``, beside ``runs.csv`` (the plan
with each run's state). ``run_named`` is the same, trained in this process.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from .config import ExperimentConfig, _merge, apply_overrides, build_config, load_toml, with_preset
from .errors import UserError
from .lock import locked
from .store import atomic_write_bytes, remove_temp_files, run_status, write_json, write_parquet
from .summary import read_table
from .sweep import (Study, all_diverged, expand, inprocess_seconds, jobs_specs, parse_sweep, plan_table, run_state,
                    study_jobs)


def default_root() -> Path:
    """Where the named experiments live.

    In a source checkout (``analysis/`` beside the package, next to ``pyproject.toml``) that
    folder; in an installed wheel the ``teacherstudent_analysis`` package it ships as (an editable
    install maps that package to the same checkout folder); else ``./analysis``.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "analysis").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "analysis"
    spec = importlib.util.find_spec("teacherstudent_analysis")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path.cwd() / "analysis"


def list_experiments(root: str | Path | None = None) -> dict[str, str]:
    """Name -> description (first docstring line) of every experiment under ``root``."""
    root = Path(root) if root is not None else default_root()
    out = {}
    for py in sorted(root.glob("*.py")) if root.is_dir() else []:
        if py.with_suffix(".toml").exists():
            doc = (load_experiment(py.stem, root).__doc__ or "").strip()
            out[py.stem] = doc.splitlines()[0] if doc else ""
    return out


def load_experiment(name: str, root: str | Path | None = None) -> ModuleType:
    root = Path(root) if root is not None else default_root()
    path = root / f"{name}.py"
    if not path.exists() or not path.with_suffix(".toml").exists():
        known = ", ".join(list_experiments(root)) if root.is_dir() else ""
        raise UserError(f"no experiment {name!r} under {root}/ (known: {known or 'none'}); an experiment is "
                        f"<name>.py with a base config <name>.toml beside it")
    spec = importlib.util.spec_from_file_location(f"teacherstudent_experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for fn in ("arms", "tables"):
        if not callable(getattr(module, fn, None)):
            raise UserError(f"{path} defines no {fn}() function; see teacherstudent/experiments.py for the contract")
    return module


@dataclass(frozen=True)
class StudyOptions:
    """Which study's runs and where and how they train: one value for ``run_study``, ``run_named``,
    ``plan_study``, ``paper.build_figures`` and ``plan.figures_plan`` (as ``simulate.RunOptions``
    is for one run).

    Which runs: the experiments' folder ``root`` (default ``analysis/``), ``quick`` (the file's
    ``[quick]`` table), ``seeds`` (replace the study's student seeds) and ``members_per_run``
    (seeds per ensemble run; default: as many as fit about 1 GB): these choose the runs and
    their ids. Where and how (none of it changes any run's results): the run store ``out``,
    the ``device``, the ``executor`` (a name in ``executors.EXECUTORS`` or an executor made by
    ``make_executor``, which ``run_study`` closes), its ``workers`` and ``scheduler`` (Dask's
    address), ``when_locked`` (a run another process trains: ``wait`` or ``skip``), ``force``
    (train finished runs again), ``wide_pack`` (False: every run trains alone, as ``--no-wide-pack``;
    ``teacherstudent.widepack``), the ``command`` recorded in meta.json and study.json, and the
    callbacks ``on_progress(done, total)`` (finished student-steps, about twice a second),
    ``on_report(report)`` (each run's report as it ends) and ``on_probe(label, i, n)`` (before
    the i-th of n probes trains). Every bad value is a one-line ``UserError`` when the options
    are made, before anything is planned or trained."""

    out: Path = Path("runs")
    device: str = "auto"
    root: Path | None = None
    quick: bool = False
    seeds: tuple[int, ...] | None = None
    members_per_run: int | None = None
    executor: Any = "local"  # a name in executors.EXECUTORS, or an executor object
    workers: int | None = None
    scheduler: str | None = None  # with executor "dask": tcp://HOST:8786 (none: a local cluster)
    when_locked: str = "wait"
    force: bool = False
    wide_pack: bool = True
    command: list[str] | None = None
    on_progress: Callable[[int, int], None] | None = None
    on_report: Callable[[dict], None] | None = None
    on_probe: Callable[[str, int, int], None] | None = None

    def __post_init__(self) -> None:
        from .devices import pick_device
        from .executors import EXECUTORS
        from .lock import WHEN_LOCKED
        from .registry import lookup

        object.__setattr__(self, "out", Path(self.out))
        if self.root is not None:
            object.__setattr__(self, "root", Path(self.root))
        for flag, value in (("--workers", self.workers), ("--members-per-run", self.members_per_run)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{flag} must be at least 1, got {value!r} (a whole number; leave it out for the default)")
        if self.seeds is not None:
            seeds = tuple(self.seeds) if isinstance(self.seeds, (list, tuple)) else None
            if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
                raise UserError(f"--seeds {self.seeds!r}: give student seeds as whole numbers >= 0, e.g. 1-8 or 1,3,5")
            object.__setattr__(self, "seeds", seeds)
        if isinstance(self.executor, str):
            lookup(EXECUTORS, "executor", self.executor)
            if self.scheduler is not None and self.executor != "dask":
                raise UserError(f"--scheduler needs --executor dask (got --executor {self.executor})")
        elif not all(callable(getattr(self.executor, m, None)) for m in ("run", "threads", "close")):
            raise UserError(f"executor {self.executor!r} is neither a name ({', '.join(EXECUTORS)}) nor an executor "
                            "made by teacherstudent.executors.make_executor")
        if self.when_locked not in WHEN_LOCKED:
            raise UserError(f"unknown --when-locked {self.when_locked!r}; known: {', '.join(WHEN_LOCKED)}")
        pick_device(self.device)  # an unknown or unavailable device

    def make_executor(self):
        """The executor these options name (a missing extra or an unreachable scheduler: one ``UserError``),
        or the executor object they hold."""
        from .executors import make_executor

        return make_executor(self.executor, self.workers, self.scheduler) if isinstance(self.executor, str) \
            else self.executor


@dataclass(frozen=True)
class ExperimentResult:
    folder: Path  # where the tables went
    runs: dict[str, Path]  # arm (with its point, when the study has axes) -> run folder (the first, if several)
    tables: dict[str, pd.DataFrame]


def base_config(name: str, overrides: list[str] | None = None, root: str | Path | None = None,
                quick: bool = False):
    """``(base config, [sweep] table or None)`` of experiment ``name`` (the ``[sweep]`` table is not config);
    with ``quick`` the file's ``[quick]`` table is merged over it first (see the module docstring)."""
    root = Path(root) if root is not None else default_root()
    data = quick_data(name, with_preset(load_toml(root / f"{name}.toml"), f"{name}.toml"), quick)
    sweep = parse_sweep(data.pop("sweep", None))
    return build_config(apply_overrides(data, list(overrides or []))), sweep


def quick_data(name: str, data: dict[str, Any], quick: bool) -> dict[str, Any]:
    """The experiment file's data without its ``[quick]`` table, merged over it when ``quick``."""
    data = dict(data)
    table = data.pop("quick", None)
    if not quick:
        return data
    if table is None:
        raise UserError(f"experiment {name!r} has no [quick] table, so it has no quick variant; add one to "
                        f"{name}.toml (sections to merge over the base, e.g. [quick.training] epochs = 2) or drop --quick")
    if not isinstance(table, dict):
        raise UserError(f"{name}.toml: [quick] must be a table of sections, e.g. [quick.training] epochs = 2")
    return _merge(data, table)


def experiment_arms(name: str, overrides: list[str] | None = None, root: str | Path | None = None,
                    quick: bool = False) -> tuple[ModuleType, dict[str, ExperimentConfig]]:
    """The experiment module and its validated arm configs (nothing is trained)."""
    module = load_experiment(name, root)
    base, _ = base_config(name, overrides, root, quick)
    return module, module.arms(base)


def plan_study(name: str, opts: StudyOptions | None = None, overrides: list[str] | None = None
               ) -> tuple[ModuleType, Study]:
    """The experiment module and its study (``opts``' root, quick, seeds and members_per_run):
    every arm at every sweep point, packed into runs (nothing is trained; every bad input is a
    ``UserError`` here)."""
    opts = opts if opts is not None else StudyOptions()
    module = load_experiment(name, opts.root)
    base, sweep = base_config(name, overrides, opts.root, opts.quick)
    return module, expand(name, module.arms(base), sweep, opts.members_per_run, opts.seeds)


@dataclass
class StudyResult:
    study: Study
    folder: Path  # <out>/experiments/<name>
    reports: list[dict]  # one per run: run_id, path, outcome (done/resumed/skipped/failed), error, notes
    tables: dict[str, pd.DataFrame]
    note: str = ""  # why the experiment's own tables were not computed, if they were not

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.reports if r["outcome"] == "failed"]

    def counts(self) -> dict[str, int]:
        return {o: sum(r["outcome"] == o for r in self.reports) for o in ("done", "resumed", "skipped", "failed")}


def study_progress(study: Study, out: Path) -> tuple[int, int]:
    """``(finished student-steps, total)`` of the study, read from the run store."""
    return sum(run_state(out, r)[1] for r in study.runs), sum(r.student_steps for r in study.runs)


def study_tables(module: ModuleType, study: Study, out: Path, children: dict[str, Path] | None = None
                 ) -> tuple[dict[str, pd.DataFrame], str]:
    """The experiment's own ``tables(runs)``, point by point, with one leading column per axis
    (``children``: probe label -> child run folder, added to the runs of an experiment without axes)."""
    if not study.one_run_per_label():
        return {}, ("the experiment's tables need one run per arm; this packing splits or merges arms' seeds "
                    "(use --members-per-run >= the seed count), or read the runs with teacherstudent.sweep.load_study")
    points: dict[str, tuple[dict, dict[str, Path]]] = {}
    for lb in study.labels:
        key = json.dumps(lb.point, sort_keys=True, default=str)
        points.setdefault(key, (lb.point, {}))[1][lb.arm] = Path(out) / study.runs_of(lb)[0].run_id
    parts: dict[str, list[pd.DataFrame]] = {}
    for point, runs in points.values():
        for tname, df in module.tables({**runs, **(children or {})}).items():
            df = df.copy()
            for j, (k, v) in enumerate(point.items()):
                df.insert(j, k, json.dumps(v) if isinstance(v, (list, dict)) else v)
            parts.setdefault(tname, []).append(df)
    return {t: pd.concat(dfs, ignore_index=True) for t, dfs in parts.items()}, ""


def run_study(name: str, opts: StudyOptions | None = None, overrides: list[str] | None = None) -> StudyResult:
    """Train every run of study ``name`` as ``opts`` says (``StudyOptions``) and write its tables
    (see the module docstring); ``overrides`` are ``--set`` fields over the base config.

    A failing run does not stop the others: its report says why (``StudyResult.failed``) and
    the tables are not written. The experiment's ``probes()`` run in this process after the
    arms. Every bad input raises ``UserError`` before anything trains.
    """
    opts = opts if opts is not None else StudyOptions()
    out = opts.out
    module, study = plan_study(name, opts, overrides)
    check_probes(name, module, study)
    reports: list[dict] = []
    todo = []
    for r in study.runs:
        if not opts.force and run_status(out / r.run_id).get("state") == "finished":
            reports.append({"run_id": r.run_id, "path": str(out / r.run_id), "outcome": "skipped", "error": None,
                            "notes": [], "seconds": 0.0})
            if all_diverged(out / r.run_id):
                reports[-1].update(outcome="failed", error="all members diverged (see status.json)")
        else:
            todo.append(r)
    for rep in reports:
        if opts.on_report:
            opts.on_report(rep)
    # an executor given as an object (the CLI makes it before its progress bar) is closed here too
    ex = opts.executor if not isinstance(opts.executor, str) else opts.make_executor() if todo else None

    def poll() -> None:
        if opts.on_progress:
            opts.on_progress(*study_progress(study, out))
    poll()
    try:
        if ex is not None:
            if hasattr(ex, "expect"):
                ex.expect(len(todo), inprocess_seconds(todo))
            jobs = study_jobs(study, todo, out, ex.plan(len(todo))[0] if hasattr(ex, "plan") else None, opts.wide_pack)
            specs = jobs_specs(jobs, out, opts.device, ex.threads(len(jobs)), opts.when_locked, opts.force, opts.command)
            for rep in ex.run(specs, poll):
                reports.append(rep)
                if opts.on_report:
                    opts.on_report(rep)
                poll()
    finally:
        if ex is not None:
            ex.close()
    folder = out / "experiments" / name
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder, say=say_nothing):  # two processes on one study: one writer at a time
        remove_temp_files(folder)  # left by a writer that was killed (a live one would hold the lock)
        write_csv(folder / "runs.csv", plan_table(study, out, opts.wide_pack))
        write_json(folder / "study.json", {"command": opts.command, "reports": reports})
    result = StudyResult(study, folder, reports, {})
    if result.failed:
        result.note = "tables not written: some runs failed"
        return result
    children = run_probes(name, module, study, opts, overrides)
    result.tables, result.note = study_tables(module, study, out, children)
    with locked(folder, say=say_nothing):
        for tname, df in result.tables.items():
            write_parquet(folder / f"{tname}.parquet", df)
            write_csv(folder / f"{tname}.csv", df)
    return result


def say_nothing(message: str) -> None:
    """The study folder's lock is held for milliseconds at a time: waiting on it is not news."""


def check_probes(name: str, module: ModuleType, study: Study) -> None:
    """An experiment with ``probes()`` needs one run per arm and no sweep axes (checked before training)."""
    if callable(getattr(module, "probes", None)) and (any(lb.point for lb in study.labels)
                                                      or not study.one_run_per_label()):
        raise UserError(f"experiment {name}: probes() needs one run per arm and no [sweep] axes "
                        "(use --members-per-run >= the seed count)")


def run_probes(name: str, module: ModuleType, study: Study, opts: StudyOptions,
               overrides: list[str] | None = None) -> dict[str, Path]:
    """Run the experiment's ``probes(base)`` on its finished arms (in this process, on ``opts.device``,
    in ``opts.out``; finished children are reused; ``opts.on_probe`` before each); probe label ->
    the (last) child run folder."""
    if not callable(getattr(module, "probes", None)):
        return {}
    from .probes import PROBES

    base, _ = base_config(name, overrides, opts.root, opts.quick)
    parents = {lb.arm: opts.out / study.runs_of(lb)[0].run_id for lb in study.labels}
    children = {}
    wanted = module.probes(base)
    for i, (label, (arm, fields)) in enumerate(wanted.items(), 1):
        if opts.on_probe:
            opts.on_probe(label, i, len(wanted))
        fields = dict(fields)
        kind = fields.pop("kind")
        if arm not in parents or kind not in PROBES:
            raise UserError(f"experiment {name}: probe {label!r} names arm {arm!r} of {sorted(parents)} "
                            f"and kind {kind!r} of {sorted(PROBES)}")
        got = PROBES[kind](parents[arm], fields, root=opts.out, device=opts.device, command=opts.command)
        children[label] = got[-1] if isinstance(got, list) else got
    return children


def write_csv(path: Path, df: pd.DataFrame) -> None:
    """A table as CSV, written atomically like every other result file."""
    atomic_write_bytes(path, df.to_csv(index=False).encode())


def run_named(name: str, opts: StudyOptions | None = None, overrides: list[str] | None = None) -> ExperimentResult:
    """Train the runs of experiment ``name`` in this process, one after another, and write its
    tables (``run_study`` with ``opts`` but one local worker); a failed run is a ``UserError``."""
    opts = replace(opts if opts is not None else StudyOptions(), executor="local", workers=1, scheduler=None)
    res = run_study(name, opts, overrides)
    if res.failed:
        first = res.failed[0]
        raise UserError(f"{len(res.failed)} run(s) of {name} failed: {', '.join(r['run_id'] for r in res.failed)} "
                        f"(first: {first['error']})")
    runs = {lb.text: opts.out / res.study.runs_of(lb)[0].run_id for lb in res.study.labels}
    return ExperimentResult(res.folder, runs, res.tables)


# ---- helpers shared by the experiment files --------------------------------

def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=float)).rank().to_numpy()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def longer(cfg: ExperimentConfig, factor: int) -> dict:
    """The ``training`` fields that train ``cfg`` ``factor`` times as long (its ``steps``, or its epochs)."""
    t = cfg.training
    return {"steps": t.steps * factor} if t.steps is not None else {"epochs": t.epochs * factor}


def final_rows(folder: Path, table: str) -> pd.DataFrame:
    """The last step's rows of a run's ``student_nodes`` (or any table with a ``step`` column)."""
    df = read_table(folder, table)
    return df[df.step == df.step.max()].reset_index(drop=True)


def final_losses(folder: Path) -> dict[str, float]:
    """Mean over members of the loss at the first and last measurement: ``train``, ``eval``, ``eval_init``."""
    m = read_table(folder, "metrics")
    loss = m[m.metric == "loss"]
    last = loss[loss.step == loss.step.max()].groupby("split")["value"].mean()
    first = loss[(loss.step == loss.step.min()) & (loss.split == "eval")]["value"].mean()
    return {"train_loss": float(last.get("train", np.nan)), "eval_loss": float(last.get("eval", np.nan)),
            "eval_loss_init": float(first)}
