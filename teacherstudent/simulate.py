"""One run: build the teacher, the data and the student ensemble, train, measure, store.

``run_experiment(cfg)`` is the library entry point behind ``teacherstudent run``. The
training loop only steps; measurements and checkpoints happen at scheduled *event*
steps (``schedule.event_steps``). A finished run is skipped; an interrupted one resumes
from ``checkpoints/latest.pt`` and ends bit-identical (on CPU) to an uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from . import __version__
from .config import ExperimentConfig
from .data import DataSource
from .ensemble import Ensemble
from .errors import UserError
from .fast import loss_and_grads_chunked, members_per_chunk, sgd_step_chunked
from .inputs import make_inputs
from .labels import data_teacher
from .lucky import plant_lucky
from .measure import Snapshot, measure
from .measure import members_per_chunk as measure_chunk
from .results import write_results
from .schedule import event_steps, measure_steps
from .store import load_torch, read_json, run_status, save_torch, write_json
from .teacher import Teacher
from .train import lr_at, make_optimizer, member_loss

DEVICES = ("auto", "cpu", "cuda", "mps")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of activations per step or measurement chunk


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; naming an unavailable device is an error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but this torch build sees no CUDA GPU; use --device cpu or auto")
    if name.startswith("cuda:"):
        index, count = name.removeprefix("cuda:"), torch.cuda.device_count()
        if not index.isdigit() or int(index) >= count:
            raise UserError(f"device {name!r} does not exist: this machine has {count} CUDA GPU(s), "
                            f"cuda:0..cuda:{count - 1}; use --device cuda or cuda:<index>")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' asked for but it is not available here; use --device cpu or auto")
    return torch.device(name)


class Simulation:
    """The state of one run: teacher, data, ensemble, optimiser, position and measurements."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device, teacher: Teacher | None = None,
                 ensemble: Ensemble | None = None, memory_budget: float = DEFAULT_MEMORY_BUDGET):
        self.cfg, self.device = cfg, device
        self.dtype = getattr(torch, cfg.training.dtype)
        inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
        self.teacher = teacher if teacher is not None else data_teacher(cfg, inputs)  # inputs.labels may widen it
        self.data = DataSource(cfg, self.teacher, inputs, device, self.dtype)
        widths = [cfg.student.multiplier * m for m in cfg.teacher.widths]
        d, outputs = self.data.x_eval.shape[1], self.teacher.weights[-1].shape[0]
        self.ens = ensemble if ensemble is not None else Ensemble.create(widths, d, outputs, cfg.student, device, self.dtype)
        if ensemble is None:
            plant_lucky(self.ens, self.teacher, cfg.student)  # student.lucky_nodes (a no-op at 0)
        self.widths = [w.shape[1] for w in self.ens.weights[:-1]]  # a pruned ensemble may be narrower
        for p in self.ens.trainable:
            p.requires_grad_(True)
        self.opt = make_optimizer(self.ens.trainable, cfg.training)
        self.loss_fn = member_loss(cfg.training.loss)
        self.fast = cfg.training.backend == "fast" or (cfg.training.backend == "auto" and not self.ens.batchnorm)
        itemsize = self.ens.params[0].element_size()
        self.step_chunk = members_per_chunk(self.widths, outputs, cfg.training.batch_size, itemsize, memory_budget)
        self.measure_chunk = measure_chunk(self.widths, cfg.inputs.eval_samples, itemsize, memory_budget)
        # plain SGD on the fast path: the update is fused into the backward (fast.sgd_step), no gradients kept
        t = cfg.training
        self.fused_sgd = self.fast and t.optimizer == "sgd" and t.momentum == 0 and t.weight_decay == 0
        self._after_step = getattr(self.ens, "after_step", None)
        if self.fast and self.ens.batchnorm:
            raise UserError("training.backend='fast' covers plain ReLU students only; use 'auto' or 'autograd' with student.batchnorm")
        self.steps_per_epoch = math.ceil(cfg.inputs.train_samples / cfg.training.batch_size)
        self.total_steps = t.steps if t.steps is not None else t.epochs * self.steps_per_epoch
        self.measure_at = measure_steps(cfg.measure, self.steps_per_epoch, self.total_steps)
        self.events = event_steps(cfg, self.steps_per_epoch, self.total_steps)
        self.step = 0
        self.history: list[Snapshot] = []
        self.loss_sum = torch.zeros(self.ens.K, dtype=torch.float64, device=device)
        self.loss_n = 0
        self.first_bad = torch.full((self.ens.K,), -1, dtype=torch.long, device=device)
        self.dead = torch.zeros(self.ens.K, dtype=torch.bool, device=device)
        self._epoch: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self._workspace: dict = {}  # measurement buffers, reused
        self._grads: list[torch.Tensor] | None = None  # fast-path gradient buffers, reused

    # ---- stepping --------------------------------------------------------
    def train_until(self, stop: int, on_step: Callable[[int], None] | None = None) -> None:
        """Take optimiser steps until ``self.step == stop``; no host synchronisation inside.

        Each step's per-member loss goes into a buffer that is reduced once at the end
        (running train loss, first non-finite step per member).
        """
        t, B = self.cfg.training, self.cfg.training.batch_size
        start = self.step
        if stop <= start:
            return
        losses = torch.empty(stop - start, self.ens.K, dtype=self.dtype, device=self.device)
        dead_idx = self.dead.nonzero().flatten() if bool(self.dead.any()) else None
        while self.step < stop:
            epoch, pos = divmod(self.step, self.steps_per_epoch)
            if self._epoch is None or self._epoch[0] != epoch:
                self._epoch = (epoch, *self.data.epoch(epoch))
            x, y = self._epoch[1][pos * B:(pos + 1) * B], self._epoch[2][pos * B:(pos + 1) * B]
            lr = lr_at(t, self.step, self.steps_per_epoch, self.total_steps)
            for g in self.opt.param_groups:
                g["lr"] = lr
            # a stopped member does not move: its weights are put back after the update
            # (zero gradients alone would not hold it still under momentum or Adam)
            frozen = [p[dead_idx].clone() for p in self.ens.trainable] if dead_idx is not None else None
            if self.fused_sgd:
                loss = sgd_step_chunked(self.ens.params, x, y, t.loss, lr, self.step_chunk)
            elif self.fast:
                if self._grads is None:  # written in place every step (see fast.loss_and_grads)
                    self._grads = [torch.empty_like(p) for p in self.ens.params]
                loss, grads = loss_and_grads_chunked(self.ens.params, x, y, t.loss, self.step_chunk, self._grads)
                for p, g in zip(self.ens.params, grads):
                    p.grad = g
            else:
                loss = self.loss_fn(self.ens.output(x, train=True), y)
                self.opt.zero_grad(set_to_none=True)
                loss.sum().backward()
            if not self.fused_sgd:
                self.opt.step()
            if frozen is not None:
                with torch.no_grad():
                    for p, f in zip(self.ens.trainable, frozen):
                        p[dead_idx] = f
            if self._after_step is not None:  # e.g. a weight-pruned ensemble re-applying its masks
                self._after_step()
            losses[self.step - start] = loss.detach()
            self.step += 1
            if on_step is not None:
                on_step(self.step)
        self.loss_sum += losses.sum(0, dtype=torch.float64)
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
        snap = measure(self.ens, self.data.x_eval, self.data.y_eval, self.data.teacher_hidden_eval, self.step,
                       member_chunk=self.measure_chunk, workspace=self._workspace)
        self.history.append(snap)
        return snap

    def train_loss(self) -> torch.Tensor | None:
        """Mean minibatch loss since the previous measurement (then reset)."""
        if self.loss_n == 0:
            return None
        out = (self.loss_sum / self.loss_n).cpu()
        self.loss_sum.zero_()
        self.loss_n = 0
        return out

    # ---- checkpoints -------------------------------------------------------
    def weights(self) -> list[torch.Tensor]:
        return [t.detach().cpu().clone() for t in self.ens.state()]

    def state_dict(self) -> dict:
        return {
            "step": self.step, "weights": self.weights(), "opt": self.opt.state_dict(),
            "loss_sum": self.loss_sum.cpu(), "loss_n": self.loss_n, "first_bad": self.first_bad.cpu(),
            "dead": self.dead.cpu(), "history": [vars(s) for s in self.history],
        }

    def load_state_dict(self, st: dict) -> None:
        self.step = st["step"]
        self.ens.load_state([w.to(self.device) for w in st["weights"]])
        self.opt.load_state_dict(st["opt"])
        self.loss_sum = st["loss_sum"].to(self.device)
        self.loss_n = st["loss_n"]
        self.first_bad = st["first_bad"].to(self.device)
        self.dead = st["dead"].to(self.device)
        self.history = [Snapshot(**h) for h in st["history"]]


def _record(sim: Simulation, snap: Snapshot, rows: list[dict], run_id: str, train_loss: torch.Tensor | None) -> None:
    """Append this measurement's tidy metric rows."""
    seeds = sim.cfg.student.seeds
    epoch = snap.step / sim.steps_per_epoch
    m = sim.cfg.measure

    def add(k: int, split: str, layer: int | None, metric: str, value: float) -> None:
        rows.append({"run": run_id, "member": seeds[k], "step": snap.step, "epoch": epoch, "split": split,
                     "layer": layer, "metric": metric, "value": float(value)})

    for k in range(len(seeds)):
        add(k, "eval", None, "loss", snap.eval_loss[k])
        if snap.eval_acc is not None:
            add(k, "eval", None, "accuracy", snap.eval_acc[k])
        if train_loss is not None:
            add(k, "train", None, "loss", train_loss[k])
        for l, stats in enumerate(snap.layer_stats(m.recovered, m.covered)):
            for name, v in stats.items():
                add(k, "eval", l, name, v[k])


def run_experiment(cfg: ExperimentConfig, out: str | Path = "runs", device: str = "auto",
                   on_progress: Callable[[int, int], None] | None = None, command: list[str] | None = None,
                   max_steps: int | None = None, force: bool = False,
                   init_ensemble: Callable[[torch.device, torch.dtype], Ensemble] | None = None,
                   memory_budget: float = DEFAULT_MEMORY_BUDGET) -> Path:
    """Train and measure ``cfg``; returns the run folder ``out/<name>-<hash>``.

    A finished run is returned as it is (unless ``force``); an interrupted one resumes.
    ``max_steps`` stops (as if interrupted) after the first checkpoint at or past that step.
    ``init_ensemble(device, dtype)``, if given, builds the initial students instead of
    ``cfg.student`` (probes: pruned or re-randomised students); called only when training.
    """
    dev = pick_device(device)
    folder = Path(out) / cfg.run_id
    status = run_status(folder) if folder.exists() else {"state": "new"}
    if status.get("state") == "finished" and not force:
        return folder
    if folder.exists() and (folder / "config.json").exists():
        stored = read_json(folder / "config.json")
        if stored != cfg.model_dump(mode="json"):
            raise UserError(f"{folder} holds a different config; remove the folder or change name")
    # Everything that can refuse the config or the folder's checkpoint runs before the first write,
    # so bad input leaves no half-made run folder and touches no existing one.
    sim = Simulation(cfg, dev, ensemble=init_ensemble(dev, getattr(torch, cfg.training.dtype)) if init_ensemble else None,
                     memory_budget=memory_budget)
    rows: list[dict] = []
    latest = folder / "checkpoints" / "latest.pt"
    if latest.exists() and not force:
        started_by = read_json(folder / "meta.json").get("version") if (folder / "meta.json").exists() else None
        if started_by != __version__:
            by = f"teacherstudent {started_by}" if started_by else "an unknown version (no meta.json)"
            raise UserError(f"{folder} was started by {by}, this is {__version__}: resuming would mix two versions' "
                            "training numerics; finish it with that version or start again with --force")
        st = load_torch(latest)
        try:
            sim.load_state_dict(st["sim"])
            rows = list(st["rows"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
            raise UserError(f"checkpoint {latest} does not hold this run's state ({type(err).__name__}: {err}); "
                            "delete it to start the run again") from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the run folder {folder} ({err.strerror}); pass a writable folder with --out") from None
    if force:  # starting again: the old run's resume point goes before meta.json names this version
        latest.unlink(missing_ok=True)
    write_json(folder / "config.json", cfg.model_dump(mode="json"))
    write_json(folder / "meta.json", {
        "version": __version__, "torch": torch.__version__, "device": str(dev),
        "command": command if command is not None else sys.argv, "run": cfg.run_id,
    })
    t0 = time.perf_counter()
    write_json(folder / "status.json", {"state": "running", "step": sim.step, "total_steps": sim.total_steps})
    if sim.step == 0 and not sim.history:
        save_torch(folder / "checkpoints" / "init.pt", {"step": 0, "weights": sim.weights(), "seeds": list(cfg.student.seeds)})
        _record(sim, sim.snapshot(), rows, cfg.run_id, None)
    progress = (lambda s: on_progress(s, sim.total_steps)) if on_progress else None
    saved = sim.step  # the step that checkpoints/latest.pt (or init) holds
    try:
        for ev in sim.events:
            if ev <= sim.step:
                continue
            sim.train_until(ev, progress)
            sim.check_finite()
            if ev in cfg.training.checkpoint_steps:
                save_torch(folder / "checkpoints" / f"step_{ev}.pt", {"step": ev, "weights": sim.weights(), "seeds": list(cfg.student.seeds)})
            if ev in sim.measure_at:
                _record(sim, sim.snapshot(), rows, cfg.run_id, sim.train_loss())
                save_torch(latest, {"sim": sim.state_dict(), "rows": rows})
                saved = sim.step
            if max_steps is not None and ev >= max_steps and ev < sim.total_steps and ev in sim.measure_at:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        write_json(folder / "status.json", {"state": "interrupted", "step": saved, "total_steps": sim.total_steps})
        if max_steps is not None and saved >= max_steps:
            return folder
        raise
    save_torch(folder / "checkpoints" / "final.pt", {"step": sim.step, "weights": sim.weights(), "seeds": list(cfg.student.seeds)})
    write_results(folder, sim, rows)
    first_bad = sim.first_bad.cpu().tolist()
    members = [{"member": s, "status": "diverged" if fb >= 0 else "ok",
                **({"reason": f"non-finite training loss at step {fb} (epoch {fb // sim.steps_per_epoch}); stopped there"}
                   if fb >= 0 else {})} for s, fb in zip(cfg.student.seeds, first_bad)]
    write_json(folder / "status.json", {"state": "finished", "step": sim.step, "total_steps": sim.total_steps,
                                        "seconds": round(time.perf_counter() - t0, 3), "members": members})
    return folder
