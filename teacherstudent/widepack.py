"""Wide packing: study runs whose configs differ only in per-member fields train as one ensemble.

A study's runs (``sweep.StudyRun``, one run folder each) that share every tensor shape and
every setting of the computation, and differ only in the fields ``per_member_fields()``
lists, are trained by one process as the members of one stacked ensemble: each member
carries its own teacher (``teacher.TeacherStack``: every field of the teacher section but
its shapes), its own initial weights (its run's student init) and its own optimiser and learning-rate
schedule (plain SGD: ``(k0, k1, rate)`` segments in ``fast.sgd_step``; other optimisers: one
``torch.optim`` optimiser per run over views of its members, ``PackFast``). Each run still gets
its own folder, run id, config and tables, written by its own ``Recorder`` from its slice of
the ensemble, measured against its own evaluation targets exactly as the run alone is.

Equality with training each run alone (tests/test_wide_pack.py): the forward and backward
matmuls are batched over the pack's runs of two or more members (MKL computes each batch
entry of a batched matmul alike for any batch of two or more), a one-member run's are its
own batch-1 calls (MKL rounds those differently), each run's weight update is the call it
makes alone (with per-run rates, its segment; with another optimiser, its own optimiser
over views of its members), the training losses are summed run by run, and measurement runs
per run on its slice. On CPU the tables are then bit for bit those of the run alone, in
float32 and float64 (tested here; another BLAS may partition batched matmuls otherwise).
On the autograd path (``training.backend='autograd'``), which batches every member, a
one-member run trains alone.

Only runs that start from scratch are packed: a pack writes each run's resume point as the
run alone would (``resume_state``), so an interrupted pack's runs resume alone next time. A run
whose config is ``unpackable`` trains alone, as before. ``TEACHERSTUDENT_WIDE_PACK=0`` (or
``[sweep] wide_pack = false``, or ``experiment run --no-wide-pack``) turns packing off.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .config import ExperimentConfig, build_config
from .config.sections import StudentConfig, TeacherConfig, TrainingConfig
from .errors import UserError
from .loop import Trainer
from .steppers import Fast
from .teacher import TeacherStack
from .train import lr_at

ENV = "TEACHERSTUDENT_WIDE_PACK"
TEACHER_SHAPES = ("d", "widths", "outputs")  # the teacher's tensor shapes (the students' follow from them)
STUDENT_INIT = ("init", "init_scale", "init_std")  # how a member's initial weights are drawn (not their shapes)


def training_fields() -> tuple[str, ...]:
    """The training fields that only set a run's optimiser and learning-rate schedule, read from
    the registries: ``optimizer``, ``lr``, ``weight_decay``, every optimiser's own fields
    (``train.OPTIMIZERS``), ``schedule``, every schedule's fields (``train.SCHEDULE_FIELDS``) and the warm-up."""
    from .train import OPTIMIZERS, SCHEDULE_FIELDS

    own = {"optimizer", "lr", "weight_decay", "schedule", "warmup_steps", "warmup_epochs",
           *(f for o in OPTIMIZERS.values() for f in o.fields), *(f for fs in SCHEDULE_FIELDS.values() for f in fs)}
    return tuple(f for f in TrainingConfig.model_fields if f in own)


def per_member_fields() -> tuple[str, ...]:
    """The config fields that may differ between the runs of one pack, derived from the config
    model: the run ``name``, every teacher field but its shapes (each member builds its own
    teacher), the student seeds and init, and the optimiser and schedule (``training_fields``; not
    on the autograd path, and all runs of a pack take the same stepper: see ``pack_key``). Every
    other field is shared: it is equal within a pack."""
    teacher = [f"teacher.{f}" for f in TeacherConfig.model_fields if f not in TEACHER_SHAPES]
    student = [f"student.{f}" for f in ("seeds", *STUDENT_INIT)]
    assert all(f in StudentConfig.model_fields for f in ("seeds", *STUDENT_INIT))
    return ("name", *teacher, *student, *(f"training.{f}" for f in training_fields()))


def config_fields() -> list[str]:
    """Every leaf field of the config model as ``section.field`` (or a top-level field), probes aside."""
    from pydantic import BaseModel

    out = []
    for name, info in ExperimentConfig.model_fields.items():
        ann = info.annotation
        if name == "probe":
            continue
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += [f"{name}.{f}" for f in ann.model_fields]
        else:
            out.append(name)
    return out


def classify(key: str) -> str:
    """``per_member`` (may differ within a pack) or ``shared`` (equal within a pack)."""
    if key not in config_fields():
        raise UserError(f"unknown config field {key!r}")
    return "per_member" if key in per_member_fields() else "shared"


def unpackable(cfg: ExperimentConfig) -> str | None:
    """Why a run of ``cfg`` always trains alone (None: it may be packed)."""
    s, t, m = cfg.student, cfg.training, cfg.measure
    for why, on in (("a probe's child run", cfg.probe is not None), ("arch is not 'mlp'", cfg.arch != "mlp"),
                    ("BatchNorm students", s.batchnorm), ("lucky nodes (planted from the teacher)", s.lucky_nodes != 0),
                    ("dropout (per-member mask streams)", t.dropout > 0),
                    ("early stopping", t.early_stop_patience is not None), ("renorm", t.renorm != "none"),
                    ("theory statistics", m.theory_every != "none"), ("inputs.labels is not 'teacher'", cfg.inputs.labels != "teacher"),
                    ("one member on the autograd path (a batch-1 matmul alone, a batched one in a pack)",
                     t.backend == "autograd" and len(s.seeds) == 1)):
        if on:
            return why
    return None


def stepper_kind(cfg: ExperimentConfig) -> str:
    """The stepper a packable run trains with (``steppers.choose`` for mlp students without BatchNorm):
    ``fused_sgd`` (plain SGD: per-run rates as member segments), ``fast`` (a ``torch.optim`` optimiser
    per run of a pack) or ``autograd`` (one optimiser: the training fields are shared)."""
    t = cfg.training
    if t.backend == "autograd":
        return "autograd"
    plain = t.optimizer == "sgd" and t.momentum == 0 and t.weight_decay == 0 and t.clip_norm is None
    return "fused_sgd" if plain else "fast"


def _input_structure(cfg: ExperimentConfig) -> bool:
    """Whether the input kind draws a structure from ``teacher.seed`` (``inputs.make_inputs``)."""
    from .inputs import INPUTS, InputDistribution

    return INPUTS[cfg.inputs.kind].__init__ is not InputDistribution.__init__


def pack_key(cfg: ExperimentConfig) -> str:
    """Runs with equal keys may share a pack: the config without its per-member fields, and the stepper
    (``teacher.seed`` stays when the inputs draw their structure from it, the training fields on the
    autograd path)."""
    data = cfg.model_dump(mode="json")
    keep = {"teacher.seed"} if _input_structure(cfg) else set()
    data["stepper"] = stepper_kind(cfg)
    if data["stepper"] == "autograd":
        keep.update(f"training.{f}" for f in training_fields())
    for key in per_member_fields():
        if key in keep:
            continue
        *sec, last = key.split(".")
        (data[sec[0]] if sec else data).pop(last, None)
    return json.dumps(data, sort_keys=True)


def enabled(sweep=None) -> bool:
    """Wide packing is on unless ``TEACHERSTUDENT_WIDE_PACK=0`` or the study's ``[sweep] wide_pack = false``."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return getattr(sweep, "wide_pack", True)


def label_bytes(cfg: ExperimentConfig) -> int:
    """One member's own labels and evaluation targets (a pack keeps them per member)."""
    el = 8 if cfg.training.dtype == "float64" else 4
    per = 8 if cfg.training.loss == "ce" else el * cfg.teacher.outputs
    i = cfg.inputs
    return i.train_samples * per + i.eval_samples * (per + el * sum(cfg.teacher.widths))


def pack_bytes(run) -> int:
    from .sweep import member_bytes

    return run.members * (member_bytes(run.cfg) + label_bytes(run.cfg))


def wide_jobs(runs: list, out: str | Path, on: bool = True, min_jobs: int = 1, budget: float | None = None
              ) -> list[tuple]:
    """The study ``runs`` (not finished) as jobs: tuples of runs trained together (one run: alone).

    Packable runs that start from scratch and share a ``pack_key`` fill packs of at most
    ``budget`` bytes (``sweep.MEMBER_BUDGET``: parameters, activations and per-member labels);
    packs are then halved until there are ``min_jobs`` jobs (one per worker) or none can be."""
    from .sweep import MEMBER_BUDGET

    budget = MEMBER_BUDGET if budget is None else budget
    order = {r.run_id: i for i, r in enumerate(runs)}
    jobs: list[list] = []
    groups: dict[str, list] = {}
    for r in runs:
        fresh = not (Path(out) / r.run_id / "checkpoints" / "latest.pt").exists()
        if on and fresh and unpackable(r.cfg) is None:
            groups.setdefault(pack_key(r.cfg), []).append(r)
        else:
            jobs.append([r])
    for rs in groups.values():
        cur, size = [], 0
        for r in rs:
            b = pack_bytes(r)
            if cur and size + b > budget:
                jobs.append(cur)
                cur, size = [], 0
            cur.append(r)
            size += b
        jobs.append(cur)
    while len(jobs) < min_jobs:
        big = max(jobs, key=len, default=None)
        if big is None or len(big) < 2:
            break
        i, h = jobs.index(big), (len(big) + 1) // 2
        jobs[i:i + 1] = [big[:h], big[h:]]
    return sorted((tuple(j) for j in jobs), key=lambda j: order[j[0].run_id])


def pack_spec(runs: tuple, out: Path, device: str, threads: int | None, when_locked: str, force: bool,
              command: list[str] | None) -> dict[str, Any]:
    """A worker's job for ``runs`` trained together (``sweep.job_spec`` for each, plus the pack's own keys)."""
    from .sweep import job_spec

    subs = [job_spec(r, out, device, threads, when_locked, force, command) for r in runs]
    return {"pack": subs, "run_id": f"{runs[0].run_id}+{len(runs) - 1}", "out": str(out), "device": device,
            "threads": threads, "when_locked": when_locked, "force": force, "command": command}


# ---- training a pack -----------------------------------------------------------------------

class PackTeachers(TeacherStack):
    """One teacher per member, where runs share teacher objects: each distinct one labels once."""

    def forward(self, x_NxD: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        uniq = {id(t): t for t in self.members}
        runs = {i: t.forward(x_NxD) for i, t in uniq.items()}
        hidden = [torch.stack([runs[id(t)][0][l] for t in self.members]) for l in range(len(self.widths))]
        return hidden, torch.stack([runs[id(t)][1] for t in self.members])


class PackFast(Fast):
    """The fast stepper with one ``torch.optim`` optimiser per run, over views of its members
    (``lr``: its ``(k0, k1, rate)`` segments): each run's update is the one its own optimiser makes alone."""

    def __init__(self, problem, memory_budget: float, cfgs: list[ExperimentConfig], bounds: list[tuple[int, int]]):
        from .train import make_optimizer

        super().__init__(problem, memory_budget)
        self.views = [[p.detach()[k0:k1] for p in self.ens.params] for k0, k1 in bounds]
        self.opts = [make_optimizer(v, c.training) for v, c in zip(self.views, cfgs)]

    def step(self, x: torch.Tensor, y: torch.Tensor, lr) -> torch.Tensor:
        loss, grads = self.gradients(x, y)
        for (k0, k1, rate), views, opt in zip(lr, self.views, self.opts, strict=True):
            for group in opt.param_groups:
                group["lr"] = rate
            for v, g in zip(views, grads):
                v.grad = g[k0:k1]
            opt.step()
        return loss


class PackTrainer(Trainer):
    """The trainer of a pack: members ``bounds[r]`` are run ``r``'s; per-run learning rates as segments."""

    def __init__(self, problem, cfgs: list[ExperimentConfig], bounds: list[tuple[int, int]], memory_budget: float):
        super().__init__(problem, memory_budget)
        self.cfgs, self.bounds = cfgs, bounds
        self.same_lr = all(c.training == cfgs[0].training for c in cfgs)
        if not self.same_lr and self.backend == "fast":
            self.stepper = PackFast(problem, memory_budget, cfgs, bounds)
        elif not self.same_lr and self.backend != "fused_sgd":
            raise RuntimeError(f"runs with their own training fields need the fused or fast path, not {self.backend}")
        # one-member runs last (train_pack orders them so), each computed alone: MKL rounds a batch-1
        # matmul differently from a batch of several, and alone such a run makes batch-1 matmuls
        singles = [(k0, k1) for k0, k1 in bounds if k1 - k0 == 1]
        if singles:
            first = singles[0][0]
            assert all(k0 >= first for k0, _ in singles) and all(k1 - k0 == 1 for k0, k1 in bounds if k0 >= first)
            self.stepper.groups = ((0, first),) * (first > 0) + tuple(singles)
        self._loss: tuple[int, torch.Tensor | None] | None = None

    def lr_now(self, step: int):
        if self.same_lr:
            return super().lr_now(step)
        return tuple((k0, k1, lr_at(c.training, step, self.steps_per_epoch, self.total_steps))
                     for c, (k0, k1) in zip(self.cfgs, self.bounds))

    def sum_losses(self, losses: torch.Tensor) -> torch.Tensor:
        # a reduction over steps of K columns runs in another order for another K: each run's own columns
        return torch.cat([losses[:, k0:k1].contiguous().sum(0, dtype=torch.float64) for k0, k1 in self.bounds])

    def pack_train_loss(self) -> torch.Tensor | None:
        """``train_loss`` of every member, taken once per step (each run's view slices it)."""
        if self._loss is None or self._loss[0] != self.step:
            self._loss = (self.step, Trainer.train_loss(self))
        return self._loss[1]


class RunView:
    """What a run's callbacks (``Recorder``, ``KeepWeights``) see of the pack: its own config,
    teacher and slice of the members, measured as the run alone is measured."""

    def __init__(self, tr: PackTrainer, index: int, teacher, memory_budget: float):
        from .measure import members_per_chunk

        cfg, (k0, k1) = tr.cfgs[index], tr.bounds[index]
        self.pack, self.index, self.cfg, self.k0, self.k1, self.teacher = tr, index, cfg, k0, k1, teacher
        self.steps_per_epoch, self.total_steps, self.measure_at = tr.steps_per_epoch, tr.total_steps, tr.measure_at
        self.data, self.device = tr.data, tr.device
        self.ens = tr.ens.slice(k0, k1)
        d = tr.data
        if teacher.per_member:  # the run's own [K, ...] targets, as its DataSource holds them
            self.y_eval, self.hidden = d.y_eval[k0:k1], [h[k0:k1] for h in d.teacher_hidden_eval]
        else:  # one teacher: the [N, ...] targets of the run alone
            self.y_eval, self.hidden = d.y_eval[k0], [h[k0] for h in d.teacher_hidden_eval]
        self.measure_chunk = members_per_chunk(tr.problem.activation_widths, cfg.inputs.eval_samples,
                                               tr.ens.params[0].element_size(), memory_budget)
        self._ws: dict = {}

    @property
    def step(self) -> int:
        return self.pack.step

    def snapshot(self):
        from .measure import measure

        snap = measure(self.ens, self.data.x_eval, self.y_eval, self.hidden, self.step,
                       member_chunk=self.measure_chunk, workspace=self._ws)
        if self.cfg.training.loss_reduction == "half_sum":
            snap.eval_loss = snap.eval_loss * (self.y_eval.shape[-1] / 2)
        return snap

    def train_loss(self) -> torch.Tensor | None:
        loss = self.pack.pack_train_loss()
        return None if loss is None else loss[self.k0:self.k1]

    def weights(self) -> list[torch.Tensor]:
        return [t[self.k0:self.k1].detach().cpu().clone() for t in self.pack.ens.state()]

    @property
    def first_bad(self) -> torch.Tensor:
        return self.pack.first_bad[self.k0:self.k1]


def build_pack(cfgs: list[ExperimentConfig], device: torch.device, memory_budget: float
               ) -> tuple[PackTrainer, list[RunView]]:
    """The pack's trainer (teachers, data and students of every run, stacked) and each run's view."""
    from .architectures import ARCHITECTURES
    from .build import Problem
    from .data import DataSource
    from .ensemble import Ensemble
    from .inputs import make_inputs

    cfg0 = cfgs[0]
    arch = ARCHITECTURES[cfg0.arch]
    dtype = getattr(torch, cfg0.training.dtype)
    inputs = make_inputs(cfg0.inputs, cfg0.teacher.d, cfg0.teacher.seed)  # equal for every run (pack_key)
    teachers = [arch.teacher(c, inputs) for c in cfgs]
    members, bounds, k = [], [], 0
    for c, t in zip(cfgs, teachers):
        K = len(c.student.seeds)
        members += list(t.members) if t.per_member else [t] * K
        bounds.append((k, k + K))
        k += K
    data = DataSource(cfg0, PackTeachers(tuple(members)), inputs, device, dtype)
    parts = [arch.students(c, t, data.x_eval.shape[1], device, dtype) for c, t in zip(cfgs, teachers)]
    ens = Ensemble([torch.cat([p.params[i] for p in parts]) for i in range(len(parts[0].params))])
    for p in ens.trainable:
        p.requires_grad_(True)
    problem = Problem(cfg0, device, dtype, data.teacher, data, ens, arch.positions(cfg0))
    tr = PackTrainer(problem, cfgs, bounds, memory_budget)
    views = [RunView(tr, i, t, memory_budget) for i, t in enumerate(teachers)]
    return tr, views


def resume_state(tr: PackTrainer, v: RunView, recorder) -> dict:
    """Run ``v``'s resume point as ``callbacks.ResumePoint`` writes it for the run alone (its trainer
    state: its members' weights, optimiser state and running losses; the callbacks' states in the
    order of ``simulate.run``: StopDiverged, KeepWeights, Recorder), so that it resumes alone."""
    import copy

    K, k0, k1 = tr.ens.K, v.k0, v.k1

    def cut(x):
        return x[k0:k1].clone() if torch.is_tensor(x) and x.dim() > 0 and x.shape[0] == K else x

    if isinstance(tr.stepper, PackFast):  # the run's own optimiser
        opt = copy.deepcopy(tr.stepper.opts[v.index].state_dict())
    else:  # one optimiser over the pack, element-wise: the run's slice of its state
        opt = tr.stepper.state_dict()
        opt = {**opt, "state": {i: {n: cut(x) for n, x in st.items()} for i, st in opt["state"].items()},
               "param_groups": copy.deepcopy(opt["param_groups"])}
    trainer = {"step": tr.step, "weights": v.weights(), "opt": opt, "loss_sum": tr.loss_sum[k0:k1].cpu().clone(),
               "loss_n": tr.loss_n, "first_bad": tr.first_bad[k0:k1].cpu().clone(), "dead": tr.dead[k0:k1].cpu().clone()}
    return {"trainer": trainer, "callbacks": [None, None, recorder.state_dict()]}


def train_pack(spec: dict[str, Any], on_tick=None) -> list[dict[str, Any]]:
    """Train the runs of a pack spec (``pack_spec``) together; one report per run, as
    ``sweep.train_job`` gives for a run alone (a run found with a resume point meanwhile
    trains alone after the pack, by ``train_job``)."""
    from .lock import RunLocked
    from .store import RunFolder
    from .sweep import apply_threads, error_line, new_report, train_job

    t0 = time.perf_counter()
    apply_threads(spec)
    subs = spec["pack"]
    reports = {s["run_id"]: new_report(s) for s in subs}
    alone, live = [], []
    stderr = io.StringIO()
    with contextlib.ExitStack() as locks, contextlib.redirect_stderr(stderr):
        for s in subs:
            rep = reports[s["run_id"]]
            try:
                cfg = build_config(s["config"])
                folder = RunFolder(s["out"], cfg)
                if folder.finished and not spec["force"]:
                    rep["outcome"] = "skipped"
                    continue
                one = contextlib.ExitStack()
                one.enter_context(folder.lock(spec["when_locked"]))
                if (folder.finished and not spec["force"]) or (folder.latest.exists() and not spec["force"]):
                    one.close()  # finished meanwhile, or another process left a resume point: alone
                    if folder.finished:
                        rep["outcome"] = "skipped"
                    else:
                        alone.append(s)
                    continue
                locks.enter_context(one)
                folder.check_config()
                before = folder.status.get("state")
                live.append((s, cfg, folder, before in ("running", "interrupted", "failed")))
            except RunLocked as err:
                rep["outcome"] = "skipped"
                rep["notes"].append(str(err))
            except Exception as err:  # noqa: BLE001
                rep["error"] = error_line(err)
        if live:  # runs of several members first, one-member runs last (PackTrainer computes those apart)
            _train_live(sorted(live, key=lambda item: len(item[1].student.seeds) == 1), spec, reports, on_tick)
    notes = [line for line in stderr.getvalue().splitlines() if line.strip()]
    seconds = round(time.perf_counter() - t0, 3)
    for s, *_ in live:
        reports[s["run_id"]]["notes"].extend(notes)
        reports[s["run_id"]]["seconds"] = seconds
    for s in alone:
        reports[s["run_id"]] = train_job(s, on_tick)
    return [reports[s["run_id"]] for s in subs]


def _train_live(live: list, spec: dict[str, Any], reports: dict, on_tick) -> None:
    """Train the locked runs ``live`` ((spec, cfg, folder, resumable) each) as one pack and finish
    every run folder as ``simulate.run`` finishes a run alone."""
    from .callbacks import KeepWeights
    from .devices import pick_device
    from .results import Recorder
    from .simulate import meta, resume_every_default
    from .steppers import DEFAULT_MEMORY_BUDGET
    from .sweep import PROGRESS_EVERY_S, all_diverged, error_line, mark_failed

    folders = [f for _, _, f, _ in live]
    started, saved = False, 0
    try:
        dev = pick_device(spec["device"])
        tr, views = build_pack([c for _, c, _, _ in live], dev, DEFAULT_MEMORY_BUDGET)
        recorders = [Recorder(f, v.cfg) for f, v in zip(folders, views)]
        keep = [KeepWeights(f) for f in folders]
        ids = [c.run_id for _, c, _, _ in live]
        for f, v in zip(folders, views):
            f.begin(meta(v.cfg, dev, spec.get("command"), backend=tr.backend,
                         wide_pack={"runs": ids, "members": tr.ens.K}), 0, tr.total_steps, spec["force"])
        started = True
        due = [time.perf_counter() + PROGRESS_EVERY_S]

        def on_step(step: int) -> None:
            now = time.perf_counter()
            if now >= due[0] and step < tr.total_steps:
                for f in folders:
                    f.mark("running", step, tr.total_steps)
                # every run's status.json, at most 5% of the time (a pack of many small runs: many fsyncs)
                due[0] = time.perf_counter() + max(PROGRESS_EVERY_S, 20 * (time.perf_counter() - now))
                if on_tick is not None:
                    on_tick()

        t0 = time.perf_counter()
        every = resume_every_default()
        last_saved = time.monotonic()
        for v, kw, rec in zip(views, keep, recorders):  # the callbacks of a run alone, in its order
            kw.on_start(v)
            rec.on_start(v)
        for ev in tr.events:
            tr.train_until(ev, on_step)
            tr.check_finite()  # StopDiverged
            for v, kw, rec in zip(views, keep, recorders):
                kw.on_event(v, ev)
                rec.on_event(v, ev)
            if ev in tr.measure_at and ev < tr.total_steps and time.monotonic() - last_saved >= every:
                for f, v, rec in zip(folders, views, recorders):  # ResumePoint, run by run: each resumes alone
                    f.save_resume(resume_state(tr, v, rec))
                saved, last_saved = ev, time.monotonic()
        seconds = round(time.perf_counter() - t0, 3)
        for (s, cfg, f, resumable), v, rec in zip(live, views, recorders):
            f.save_weights("final", tr.step, v.weights())
            rec.finish(v)
            members = [{"member": seed, "status": "diverged" if fb >= 0 else "ok",
                        **({"reason": f"non-finite training loss at step {fb} (epoch {fb // tr.steps_per_epoch}); "
                                      "stopped there"} if fb >= 0 else {})}
                       for seed, fb in zip(cfg.student.seeds, v.first_bad.cpu().tolist())]
            f.mark("finished", tr.step, tr.total_steps, seconds=seconds, members=members)
            rep = reports[s["run_id"]]
            rep["outcome"] = "resumed" if resumable and not spec["force"] else "done"
            if all_diverged(f.path):
                rep["outcome"], rep["error"] = "failed", f"all {len(members)} members diverged (see status.json)"
    except KeyboardInterrupt:
        for f in folders:
            with contextlib.suppress(Exception):
                if started and not f.finished:
                    f.mark("interrupted", saved, int(f.status.get("total_steps") or 0))
        raise
    except Exception as err:  # noqa: BLE001  (the pack fails: every unfinished run of it says why)
        msg = error_line(err)
        for (s, _, f, _) in live:
            if f.finished:
                continue
            reports[s["run_id"]].update(outcome="failed", error=msg)
            if f.path.exists():
                mark_failed(f, msg)
