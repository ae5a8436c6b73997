"""One run: build, train with callbacks, store (the library entry point behind ``teacherstudent run``).

``run(cfg, RunOptions(...))`` returns the run folder ``out/<name>-<hash>``. A finished run
is returned as it is (unless ``force``); an interrupted one resumes from
``checkpoints/latest.pt`` and ends bit-identical (on CPU) to an uninterrupted run.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__, resources
from .build import build
from .callbacks import KeepWeights, ResumePoint, StopAt, StopDiverged, StopEarly
from .config import ExperimentConfig
from .devices import pick_device
from .ensemble import Ensemble
from .errors import UserError
from .loop import Callback, StopRun, Trainer, run_loop
from .results import Recorder
from .runtime import provenance
from .steppers import DEFAULT_MEMORY_BUDGET
from .store import RunFolder

__all__ = ["RunOptions", "dry_run", "pick_device", "run"]


@dataclass(frozen=True)
class RunOptions:
    """Where and how to run (none of it changes the results): the run store ``out``, the
    ``device``, the ``command`` recorded in meta.json, ``force`` (train again), a progress
    callback ``on_progress(step, total)``, ``max_steps`` (stop at the first measurement at
    or past it, resumable), the activation ``memory_budget`` in bytes and extra
    ``callbacks`` (e.g. a probe's), and ``resume_every_s``: the resume point is written at a
    measurement at most every that many seconds of training (0: at every measurement; the
    environment variable ``TEACHERSTUDENT_RESUME_EVERY_S`` overrides the default)."""

    out: Path = Path("runs")
    device: str = "auto"
    command: list[str] | None = None
    force: bool = False
    on_progress: Callable[[int, int], None] | None = None
    max_steps: int | None = None
    memory_budget: float = DEFAULT_MEMORY_BUDGET
    callbacks: tuple[Callback, ...] = field(default_factory=tuple)
    when_locked: str = "wait"  # another process training this run folder: "wait" for it or "skip" (RunLocked)
    resume_every_s: float | None = None  # None: TEACHERSTUDENT_RESUME_EVERY_S or DEFAULT_RESUME_EVERY_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))  # a str is fine too


DEFAULT_RESUME_EVERY_S = 60.0


def resume_every_default() -> float:
    """``TEACHERSTUDENT_RESUME_EVERY_S`` if set (seconds, >= 0), else ``DEFAULT_RESUME_EVERY_S``."""
    text = os.environ.get("TEACHERSTUDENT_RESUME_EVERY_S")
    if text is None or not text.strip():
        return DEFAULT_RESUME_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"TEACHERSTUDENT_RESUME_EVERY_S={text!r}: give a number of seconds >= 0 (0: a resume point "
                        "at every measurement), or unset it for the default of 60")
    return value


def meta(cfg: ExperimentConfig, device: torch.device, command: list[str] | None, **extra: Any) -> dict:
    """``meta.json``: version, device, ``extra`` (a training run: its stepper, ``backend``), command
    line and provenance (date, git commit, Python/torch/numpy versions, threads, host)."""
    return {**provenance(), "version": __version__, "device": str(device), **extra,
            "command": command if command is not None else sys.argv, "run": cfg.run_id}


def run(cfg: ExperimentConfig, opts: RunOptions = RunOptions(),
        init_ensemble: Callable[[torch.device, torch.dtype], Ensemble] | None = None) -> Path:
    """Train and measure ``cfg``; returns its run folder. ``init_ensemble(device, dtype)``, if
    given, builds the initial students instead of ``cfg.student`` (probes)."""
    dev = pick_device(opts.device)
    folder = RunFolder(opts.out, cfg)
    if folder.finished and not opts.force:
        folder.remove_temp_files()  # a writer that died after the run finished (a probe annotating it)
        return folder.path
    folder.check_config()
    with folder.lock(opts.when_locked):  # one process per run folder
        return _run(cfg, opts, init_ensemble, dev, folder)


def _run(cfg: ExperimentConfig, opts: RunOptions, init_ensemble, dev: torch.device, folder: RunFolder) -> Path:
    if folder.finished and not opts.force:  # another process finished it while this one waited for the lock
        return folder.path
    resources.check(cfg, dev, opts.memory_budget)  # before anything is allocated
    # everything that can refuse the config or the folder's checkpoint runs before the first write
    ens = init_ensemble(dev, getattr(torch, cfg.training.dtype)) if init_ensemble else None
    tr = Trainer(build(cfg, dev, ensemble=ens), opts.memory_budget)
    recorder = Recorder(folder, cfg)
    t = cfg.training
    early = StopEarly(t.early_stop_patience, t.early_stop_min_delta) if t.early_stop_patience is not None else None
    callbacks: list[Callback] = [StopDiverged(), KeepWeights(folder), recorder, *([early] if early else []),
                                 *opts.callbacks]
    every = opts.resume_every_s if opts.resume_every_s is not None else resume_every_default()
    resume = ResumePoint(folder, list(callbacks), every, opts.max_steps)
    callbacks.append(resume)
    if opts.max_steps is not None:
        callbacks.append(StopAt(opts.max_steps))
    st = None if opts.force else folder.resume_point(__version__)
    if st is not None:
        try:
            ResumePoint.restore(tr, resume.callbacks, st)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise _bad_checkpoint(folder, err) from None
    try:
        folder.begin(meta(cfg, dev, opts.command, backend=tr.backend), tr.step, tr.total_steps, opts.force)
        if cfg.teacher.train is not None:  # the trained teacher and its accuracies (pretrain.py)
            from .pretrain import record

            folder.save_teacher(*record(cfg))
        t0 = time.perf_counter()
        on_step = (lambda s: opts.on_progress(s, tr.total_steps)) if opts.on_progress else None
        try:
            run_loop(tr, callbacks, on_step)
        except (KeyboardInterrupt, StopRun) as stop:
            folder.mark("interrupted", resume.saved, tr.total_steps)
            if isinstance(stop, StopRun):
                return folder.path
            raise
        folder.save_weights("final", tr.step, tr.weights())
        recorder.finish(tr)
        first_bad = tr.first_bad.cpu().tolist()
        members = [{"member": s, "status": "diverged" if fb >= 0 else "ok",
                    **({"reason": f"non-finite training loss at step {fb} (epoch {fb // tr.steps_per_epoch}); stopped there"}
                       if fb >= 0 else {})} for s, fb in zip(cfg.student.seeds, first_bad)]
        if early is not None:
            _early_stopped(members, early, t, tr.steps_per_epoch)
        folder.mark("finished", tr.step, tr.total_steps, seconds=round(time.perf_counter() - t0, 3), members=members)
    except OSError as err:  # disk full, read-only folder, ...: the resume point stays; the same command resumes
        raise _interrupted_by(folder, err, resume.saved, tr.total_steps) from None
    return folder.path


def _early_stopped(members: list[dict], early: StopEarly, t, steps_per_epoch: int) -> None:
    """Mark the members ``StopEarly`` froze: status ``stopped_early``, the step and why."""
    for m, s in zip(members, early.stopped.tolist()):
        if s >= 0 and m["status"] == "ok":
            m.update(status="stopped_early", step=s,
                     reason=f"eval loss did not fall by more than {t.early_stop_min_delta:g} below its best for "
                            f"{t.early_stop_patience} measurements: held at step {s} (epoch {s / steps_per_epoch:g})")


def _interrupted_by(folder: RunFolder, err: OSError, step: int, total: int) -> OSError:
    """Leave ``status.json`` at ``interrupted`` (in place if a new file cannot be written) and return
    the one-line ``OSError`` to raise: what failed, and that the same command resumes."""
    import json

    status = {"state": "interrupted", "step": step, "total_steps": total}
    try:
        folder.mark("interrupted", step, total)
    except OSError:
        path = folder.path / "status.json"
        try:  # rewrite the existing file in place: no new blocks or inodes needed for a few bytes
            with open(path, "r+b") as f:
                f.write((json.dumps(status, sort_keys=True) + "\n").encode())
                f.truncate()
        except OSError:
            pass
    reason = err.strerror or str(err)
    if err.filename and str(err.filename) not in reason:
        reason = f"{reason}: {err.filename}"
    return OSError(err.errno, f"{reason}; {folder.path} is left interrupted at step {step} of {total}: "
                              "fix the cause (free some space) and run the same command again to resume")


def dry_run(cfg: ExperimentConfig, opts: RunOptions = RunOptions()) -> dict:
    """What ``run`` would do, without training or writing: the folder, its state, the step and event
    counts, the memory estimate by part and the memory available (``fits``)."""
    dev = pick_device(opts.device)
    est = resources.estimate(cfg, opts.memory_budget)
    have, where = resources.available(dev)
    folder = RunFolder(opts.out, cfg)
    return {"run": cfg.run_id, "folder": folder.path, "state": folder.status.get("state"), "device": str(dev),
            "steps": est.steps, "epochs": est.steps / cfg.steps_per_epoch, "events": est.events, "estimate": est,
            "available": have, "available_from": where, "fits": est.total <= have}


def _bad_checkpoint(folder: RunFolder, err: Exception) -> UserError:
    return UserError(f"checkpoint {folder.latest} does not hold this run's state ({type(err).__name__}: {err}); "
                     "delete it to start the run again")
