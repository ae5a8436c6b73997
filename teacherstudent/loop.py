"""The training loop: a ``Trainer`` that only steps, and ``run_loop`` that pauses at the
event steps and hands each pause to the callbacks.

Everything that is not an optimiser step is a callback (callbacks.py): checking for
divergence, keeping checkpoints, measuring and recording metrics, progress, stopping
early. Inside ``train_until`` there is no host synchronisation: per-step losses go into a
buffer that is reduced once at the next event.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch

from .build import Problem
from .measure import Snapshot, measure
from .measure import members_per_chunk as measure_chunk
from .schedule import event_steps, measure_steps
from .steppers import DEFAULT_MEMORY_BUDGET, make_stepper
from .train import lr_at


class Trainer:
    """Position and running state of one run: step, running train loss, divergence."""

    def __init__(self, problem: Problem, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        cfg, device = problem.cfg, problem.device
        self.problem, self.cfg, self.device = problem, cfg, device
        self.ens, self.data = problem.ens, problem.data
        self.stepper = make_stepper(problem, memory_budget)
        self.steps_per_epoch, self.total_steps = cfg.steps_per_epoch, cfg.total_steps
        self.measure_at = measure_steps(cfg.measure, self.steps_per_epoch, self.total_steps)
        self.events = event_steps(cfg, self.steps_per_epoch, self.total_steps)
        self.measure_chunk = measure_chunk(problem.activation_widths, cfg.inputs.eval_samples, self.ens.params[0].element_size(),
                                           memory_budget)
        self.step = 0
        K = self.ens.K
        self.loss_sum = torch.zeros(K, dtype=torch.float64, device=device)
        self.loss_n = 0
        self.first_bad = torch.full((K,), -1, dtype=torch.long, device=device)  # first non-finite step per member
        self.dead = torch.zeros(K, dtype=torch.bool, device=device)  # members held still
        self._epoch: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self.last_eval_loss: tuple[int, torch.Tensor] | None = None  # (step, [K]) of the latest snapshot
        self._workspace: dict = {}  # measurement buffers, reused
        self._after_step = getattr(self.ens, "after_step", None)  # e.g. a weight-pruned ensemble's masks
        self._no_bias = not cfg.student.bias  # student.bias=false: biases held at zero from the start
        if self._no_bias:
            zero_biases(self.ens)
        t = cfg.training
        L = len(self.ens.weights)
        self._renorm = (list(t.renorm_layers) if t.renorm_layers is not None else list(range(L))) if t.renorm == "fan_in" else []

    # ---- what the stepper is ------------------------------------------------
    @property
    def backend(self) -> str:
        return self.stepper.name

    @property
    def fast(self) -> bool:
        return self.backend != "autograd"

    @property
    def fused_sgd(self) -> bool:
        return self.backend == "fused_sgd"

    @property
    def teacher(self):
        return self.problem.teacher

    @property
    def widths(self) -> list[int]:
        return self.problem.widths

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.stepper.opt

    # ---- stepping --------------------------------------------------------
    def lr_now(self, step: int):
        """The learning rate of ``step`` (a wide pack, widepack.py, gives ``(k0, k1, rate)`` segments)."""
        return lr_at(self.cfg.training, step, self.steps_per_epoch, self.total_steps)

    def sum_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """Each member's sum ``[K]`` (float64) of the step losses ``[steps, K]`` (a wide pack sums run by run)."""
        return losses.sum(0, dtype=torch.float64)

    def train_until(self, stop: int, on_step: Callable[[int], None] | None = None) -> None:
        """Take optimiser steps until ``self.step == stop``."""
        B = self.cfg.training.batch_size
        start = self.step
        if stop <= start:
            return
        losses = torch.empty(stop - start, self.ens.K, dtype=self.problem.dtype, device=self.device)
        dead_idx = self.dead.nonzero().flatten() if bool(self.dead.any()) else None
        while self.step < stop:
            epoch, pos = divmod(self.step, self.steps_per_epoch)
            if self._epoch is None or self._epoch[0] != epoch:
                self._epoch = (epoch, *self.data.epoch(epoch))
            x, y = self._epoch[1][pos * B:(pos + 1) * B], self.data.batch(self._epoch[2], pos * B, (pos + 1) * B)
            lr = self.lr_now(self.step)
            # a stopped member does not move: its weights are put back after the update
            # (zero gradients alone would not hold it still under momentum or Adam)
            frozen = [p[dead_idx].clone() for p in self.ens.trainable] if dead_idx is not None else None
            loss = self.stepper.step(x, y, lr)
            if frozen is not None:
                with torch.no_grad():
                    for p, f in zip(self.ens.trainable, frozen):
                        p[dead_idx] = f
            if self._renorm:
                renormalize_fan_in(self.ens, self._renorm, self.cfg.training.renorm_bias)
            if self._no_bias:
                zero_biases(self.ens)
            if self._after_step is not None:
                self._after_step()
            losses[self.step - start] = loss.detach()
            self.step += 1
            if on_step is not None:
                on_step(self.step)
        self.loss_sum += self.sum_losses(losses)
        self.loss_n += stop - start
        bad = ~torch.isfinite(losses)
        first = bad.to(torch.uint8).argmax(0) + start
        self.first_bad = torch.where(bad.any(0) & (self.first_bad < 0), first, self.first_bad)

    def check_finite(self) -> list[int]:
        """Stop members whose loss went non-finite; returns the newly stopped member indices."""
        bad = (self.first_bad >= 0) & ~self.dead
        new = bad.nonzero().flatten().tolist()
        if new:
            self.dead |= bad
        return new

    def snapshot(self) -> Snapshot:
        d = self.data
        snap = measure(self.ens, d.x_eval, d.y_eval, d.teacher_hidden_eval, self.step,
                       member_chunk=self.measure_chunk, workspace=self._workspace)
        if self.cfg.training.loss_reduction == "half_sum":  # the eval loss in the training loss's units
            snap.eval_loss = snap.eval_loss * (d.y_eval.shape[1] / 2)
        self.last_eval_loss = (snap.step, snap.eval_loss)  # for callbacks after the Recorder (StopEarly)
        return snap

    def train_loss(self) -> torch.Tensor | None:
        """Mean minibatch loss since the previous call (then reset)."""
        if self.loss_n == 0:
            return None
        out = (self.loss_sum / self.loss_n).cpu()
        self.loss_sum.zero_()
        self.loss_n = 0
        return out

    # ---- resume state ------------------------------------------------------
    def weights(self) -> list[torch.Tensor]:
        return [t.detach().cpu().clone() for t in self.ens.state()]

    def state_dict(self) -> dict:
        return {"step": self.step, "weights": self.weights(), "opt": self.stepper.state_dict(),
                "loss_sum": self.loss_sum.cpu(), "loss_n": self.loss_n, "first_bad": self.first_bad.cpu(),
                "dead": self.dead.cpu()}

    def load_state_dict(self, st: dict) -> None:
        self.step = st["step"]
        self.ens.load_state([w.to(self.device) for w in st["weights"]])
        self.stepper.load_state_dict(st["opt"])
        self.loss_sum = st["loss_sum"].to(self.device)
        self.loss_n = st["loss_n"]
        self.first_bad = st["first_bad"].to(self.device)
        self.dead = st["dead"].to(self.device)


@torch.no_grad()
def zero_biases(ens) -> None:
    """``student.bias=false``: every bias back to zero (after an update, whatever the optimiser did to it)."""
    for b in ens.biases:
        b.zero_()


@torch.no_grad()
def renormalize_fan_in(ens, layers: list[int], with_bias: bool) -> None:
    """Rescale every node's incoming weights (and bias) in weight layers ``layers`` to unit norm
    (``training.renorm='fan_in'``, the 2019 matrix simulator)."""
    for l in layers:
        w, b = ens.weights[l], ens.biases[l]
        sq = w.square().sum(2)
        if with_bias:
            sq = sq + b.square()
        norm = sq.sqrt().clamp_min(1e-12)
        w.div_(norm[:, :, None])
        b.div_(norm)


class Callback:
    """Called by ``run_loop``: ``on_start`` once (after a resume too), ``on_event`` at every
    event step after training up to it, ``on_end`` after the last step. A callback with
    running state returns it from ``state_dict`` (it goes into the resume checkpoint)."""

    def on_start(self, tr: Trainer) -> None:
        pass

    def on_event(self, tr: Trainer, step: int) -> None:
        pass

    def on_end(self, tr: Trainer) -> None:
        pass

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, st: dict) -> None:
        pass


class StopRun(Exception):
    """Raised by a callback to end the loop early (as if interrupted; the run resumes later)."""


def run_loop(tr: Trainer, callbacks: Sequence[Callback], on_step: Callable[[int], None] | None = None) -> None:
    """Train from ``tr.step`` to the last step, pausing at every event step for the callbacks."""
    for cb in callbacks:
        cb.on_start(tr)
    for ev in tr.events:
        if ev <= tr.step:
            continue
        tr.train_until(ev, on_step)
        for cb in callbacks:
            cb.on_event(tr, ev)
    for cb in callbacks:
        cb.on_end(tr)
