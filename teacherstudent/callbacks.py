"""The built-in callbacks of a run (loop.py calls them at every event step, in order).

``StopDiverged`` holds members whose loss went non-finite; ``KeepWeights`` writes the
weights at initialisation and at ``training.checkpoint_steps``; the ``Recorder``
(results.py) measures; ``ResumePoint`` saves the resume checkpoint after each measurement;
``StopAt`` ends a run early at a measurement (``max_steps``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .loop import Callback, StopRun, Trainer
from .store import RunFolder


class StopDiverged(Callback):
    def on_event(self, tr: Trainer, step: int) -> None:
        tr.check_finite()


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
    """After every measurement: the trainer's state and every callback's running state in
    ``checkpoints/latest.pt`` (no measurement history: its size does not grow)."""

    def __init__(self, folder: RunFolder, callbacks: Sequence[Callback]):
        self.folder, self.callbacks = folder, callbacks
        self.saved = 0  # the step the resume point (or the initial state) holds

    def on_start(self, tr: Trainer) -> None:
        self.saved = tr.step

    def on_event(self, tr: Trainer, step: int) -> None:
        if step in tr.measure_at:
            self.folder.save_resume({"trainer": tr.state_dict(),
                                     "callbacks": [cb.state_dict() for cb in self.callbacks]})
            self.saved = step

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
