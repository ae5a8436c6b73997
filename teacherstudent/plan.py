"""``teacherstudent figures --plan``: what a figure build would train, and how long it would take here.

``figures_plan`` plans every study the chosen figures need (nothing is trained, nothing is
written to the run store), counts the runs still to train and their student-steps (a
student-step is one optimiser step of one member), adds the probe retrains an experiment's
``probes()`` asks for, and estimates the wall time on this machine from a short measured rate.

The rate is measured, not guessed: for every distinct run shape (architecture, widths, data
sizes, batch, members, measurement schedule: what decides the cost, not the seeds or the
learning rate) one run of that shape is built in memory and timed in three parts,

- ``setup``: building the problem (teacher, data, students, stepper),
- ``step``: optimiser steps, timed over a short stretch after a warm-up step,
- ``measure``: one measurement of the evaluation set (``Trainer.snapshot``),

and a run is estimated as ``setup + steps * step + measurements * measure``. Table writes,
checkpoints and the probes' own pruning are left out, and runs are assumed to train one after
another in one process (``--workers`` splits the cores, so the total is about the same on a
CPU); the estimate is meant to say minutes vs hours vs days, not seconds. Probe retrains are
counted as long as their parent run (a lottery retrain trains the pruned students for the
parent's steps).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .config import ExperimentConfig
from .sweep import Study, run_state

if TYPE_CHECKING:
    from .experiments import StudyOptions

# what does not change a run's cost: seeds and rates (the rest of the config decides the shapes and counts)
_FREE = {"seed", "seeds", "lr", "momentum", "epochs", "steps", "milestones", "strength_decay", "name",
         "checkpoint_steps", "corr_steps"}


@dataclass(frozen=True)
class Rate:
    """Seconds per part for one run shape, measured on this machine."""
    setup: float
    step: float  # per optimiser step of the whole ensemble (all members at once)
    measure: float  # per measurement
    members: int

    def seconds(self, steps: int, measurements: int) -> float:
        return self.setup + steps * self.step + measurements * self.measure

    @property
    def student_steps_per_s(self) -> float:
        return self.members / self.step if self.step > 0 else float("inf")


@dataclass
class ExperimentPlan:
    name: str
    figures: list[str]
    runs: int
    runs_to_train: int
    student_steps: int  # of every run of the study
    student_steps_to_train: int  # of the runs not finished (a resumed run counts what is left)
    probes: int  # probe retrains (each as long as its parent)
    probe_student_steps: int
    seconds: float | None  # estimated wall time of what is left (None: not measured)
    rates: list[Rate] = field(default_factory=list)


@dataclass
class FiguresPlan:
    experiments: list[ExperimentPlan]
    quick: bool
    calibration_seconds: float = 0.0

    @property
    def student_steps_to_train(self) -> int:
        return sum(e.student_steps_to_train + e.probe_student_steps for e in self.experiments)

    @property
    def seconds(self) -> float | None:
        if any(e.seconds is None for e in self.experiments):
            return None
        return sum(e.seconds for e in self.experiments)


def shape_key(cfg: ExperimentConfig) -> str:
    """The parts of a config that decide what one run costs (seeds and rates dropped)."""
    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in _FREE}
        return v

    data = strip(cfg.model_dump(mode="json"))
    data["members"] = len(cfg.student.seeds)
    return json.dumps(data, sort_keys=True, default=str)


def measure_rate(cfg: ExperimentConfig, device: str = "auto", seconds: float = 0.5, max_steps: int = 2000) -> Rate:
    """Time one run of ``cfg``'s shape in memory (see the module docstring); writes nothing."""
    from .build import build
    from .devices import pick_device
    from .loop import Trainer

    dev = pick_device(device)
    t0 = time.perf_counter()
    tr = Trainer(build(cfg, dev))
    setup = time.perf_counter() - t0
    total = tr.total_steps
    tr.train_until(min(1, total))  # warm-up: first-call allocations
    n, t1 = 0, time.perf_counter()
    while tr.step < total and n < max_steps and time.perf_counter() - t1 < seconds:
        chunk = min(max(1, n), total - tr.step, max_steps - n)  # doubling stretches: few clock reads
        tr.train_until(tr.step + chunk)
        n += chunk
    _sync(dev)
    step = (time.perf_counter() - t1) / n if n else 0.0
    t2 = time.perf_counter()
    tr.snapshot()
    _sync(dev)
    return Rate(setup, step, time.perf_counter() - t2, tr.ens.K)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def figures_plan(names: list[str] | None = None, opts: StudyOptions | None = None, measure: bool = True,
                 figures: dict[str, ModuleType] | None = None) -> FiguresPlan:
    """The plan of ``teacherstudent figures`` (the same names and ``StudyOptions``: its run store
    ``out``, ``quick``, ``device`` and ``root``): per experiment, the runs and student-steps left to
    train and, with ``measure``, the estimated seconds (module docstring)."""
    from .experiments import StudyOptions, base_config, load_experiment
    from .paper import experiment_plan, resolve
    from .schedule import measure_steps

    opts = opts if opts is not None else StudyOptions()
    quick, runs, device, root = opts.quick, opts.out, opts.device, opts.root
    chosen = resolve(names, figures)
    studies: dict[str, Study] = experiment_plan(chosen, opts)
    users = {e: [k for k, m in chosen.items() if e in m.EXPERIMENTS] for e in studies}
    cache: dict[str, Rate] = {}
    t0 = time.perf_counter()
    plans = []
    for name, study in studies.items():
        left = []  # (run config, steps left)
        total_ss = left_ss = 0
        for r in study.runs:
            done = run_state(runs, r)[1]
            total_ss += r.student_steps
            if done < r.student_steps:
                left.append((r.cfg, r.cfg.total_steps - done // max(r.members, 1)))
                left_ss += r.student_steps - done
        module = load_experiment(name, root)
        probes = 0
        probe_cfgs: list[ExperimentConfig] = []
        if callable(getattr(module, "probes", None)):
            base, _ = base_config(name, None, root, quick)
            wanted = module.probes(base)
            parents = {lb.arm: study.runs_of(lb)[0] for lb in study.labels}
            for _label, (arm, _fields) in wanted.items():
                if arm in parents:
                    probes += 1
                    probe_cfgs.append(parents[arm].cfg)
        probe_ss = sum(c.total_steps * len(c.student.seeds) for c in probe_cfgs)  # finished children: not checked
        seconds = None
        rates: list[Rate] = []
        if measure:
            seconds = 0.0
            for cfg, steps in left + [(c, c.total_steps) for c in probe_cfgs]:
                key = shape_key(cfg)
                if key not in cache:
                    cache[key] = measure_rate(cfg, device)
                rate = cache[key]
                rates.append(rate)
                events = len(measure_steps(cfg.measure, cfg.steps_per_epoch, cfg.total_steps))
                seconds += rate.seconds(steps, round(events * steps / max(cfg.total_steps, 1)))
        plans.append(ExperimentPlan(name, users[name], len(study.runs), len(left), total_ss, left_ss, probes, probe_ss,
                                    seconds, rates))
    return FiguresPlan(plans, quick, time.perf_counter() - t0)


def format_duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
