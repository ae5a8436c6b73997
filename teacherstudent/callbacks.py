"""The built-in callbacks of a run (loop.py calls them at every event step, in order).

``StopDiverged`` holds members whose loss went non-finite; ``KeepWeights`` writes the
weights at initialisation and at ``training.checkpoint_steps``; the ``Recorder``
(results.py) measures; ``ResumePoint`` saves the resume checkpoint after each measurement;
``StopAt`` ends a run early at a measurement (``max_steps``); ``StopEarly`` freezes members
whose evaluation loss stopped improving (``training.early_stop_patience``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from .loop import Callback, StopRun, Trainer
from .folder import RunFolder


class StopDiverged(Callback):
    def on_event(self, tr: Trainer, step: int) -> None:
        tr.check_finite()


class StopEarly(Callback):
    """Early stopping per member, on the evaluation loss the Recorder just measured (so it
    comes after the Recorder): a member whose loss has not fallen below its best so far minus
    ``min_delta`` for ``patience`` measurements in a row is held still from then on, exactly
    like a diverged member (``Trainer.dead``). ``stopped[k]``: the step it stopped at, or -1."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best: torch.Tensor | None = None  # [K] float64, best eval loss so far
        self.waited: torch.Tensor | None = None  # [K] measurements since the last improvement
        self.stopped: torch.Tensor | None = None  # [K] step stopped at, -1: training

    def on_start(self, tr: Trainer) -> None:
        if self.best is None:
            K = tr.ens.K
            self.best = torch.full((K,), float("inf"), dtype=torch.float64)
            self.waited = torch.zeros(K, dtype=torch.long)
            self.stopped = torch.full((K,), -1, dtype=torch.long)
        if tr.step == 0 and tr.last_eval_loss is not None:  # the Recorder measured the initial students
            self.update(tr)

    def on_event(self, tr: Trainer, step: int) -> None:
        if step in tr.measure_at and tr.last_eval_loss is not None and tr.last_eval_loss[0] == step:
            self.update(tr)

    def update(self, tr: Trainer) -> None:
        step, loss = tr.last_eval_loss
        loss = loss.detach().double().cpu()
        active = (self.stopped < 0) & ~tr.dead.cpu()
        better = loss < self.best - self.min_delta
        self.best = torch.where(better & active, loss, self.best)
        self.waited = torch.where(better, 0, self.waited + 1) * active
        new = active & (self.waited >= self.patience)
        if bool(new.any()):
            self.stopped[new] = step
            tr.dead |= new.to(tr.dead.device)

    def state_dict(self) -> dict:
        return {"best": self.best, "waited": self.waited, "stopped": self.stopped}

    def load_state_dict(self, st: dict) -> None:
        self.best, self.waited, self.stopped = st["best"], st["waited"], st["stopped"]


class KeepWeights(Callback):
    """``checkpoints/init.pt`` before the first step and ``step_<k>.pt`` at ``training.checkpoint_steps``."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_start(self, tr: Trainer) -> None:
        if tr.step == 0:
            self.folder.save_weights("init", 0, tr.weights())

    def on_event(self, tr: Trainer, step: int) -> None:
        if step in tr.cfg.training.checkpoint_steps:
            self.folder.save_weights(f"step_{step}", step, tr.weights())


class ResumePoint(Callback):
    """At a measurement at least ``every_s`` seconds of training after the last one written:
    the trainer's state and every callback's running state in ``checkpoints/latest.pt`` (no
    measurement history: its size does not grow). ``every_s = 0`` writes it at every
    measurement; a run stopped by ``max_steps`` (``stop_at``) writes it where it stops.
    A resumed run redoes the steps past the resume point (their measurement parts are
    removed first), so writing it less often changes no number, only how much is redone."""

    def __init__(self, folder: RunFolder, callbacks: Sequence[Callback], every_s: float = 0.0,
                 stop_at: int | None = None):
        self.folder, self.callbacks = folder, callbacks
        self.every_s, self.stop_at = every_s, stop_at
        self.saved = 0  # the step the resume point (or the initial state) holds
        self._last = time.monotonic()

    def on_start(self, tr: Trainer) -> None:
        self.saved = tr.step
        self._last = time.monotonic()

    def on_event(self, tr: Trainer, step: int) -> None:
        if step not in tr.measure_at or step >= tr.total_steps:  # the last step is final.pt and the tables
            return
        due = time.monotonic() - self._last >= self.every_s
        if due or (self.stop_at is not None and step >= self.stop_at):
            self.folder.save_resume({"trainer": tr.state_dict(),
                                     "callbacks": [cb.state_dict() for cb in self.callbacks]})
            self.saved = step
            self._last = time.monotonic()

    @staticmethod
    def restore(tr: Trainer, callbacks: Sequence[Callback], st: dict) -> None:
        tr.load_state_dict(st["trainer"])
        for cb, s in zip(callbacks, st["callbacks"], strict=True):
            if s is not None:
                cb.load_state_dict(s)


class StopAt(Callback):
    """Stop (as if interrupted) at the first measurement at or past ``max_steps``."""

    def __init__(self, max_steps: int):
        self.max_steps = max_steps

    def on_event(self, tr: Trainer, step: int) -> None:
        if step >= self.max_steps and step < tr.total_steps and step in tr.measure_at:
            raise StopRun
