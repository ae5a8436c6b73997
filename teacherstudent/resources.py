"""What a run needs before it starts: an estimate of its memory and the memory there is.

``estimate(cfg)`` adds up the tensors a run holds at once, from the config alone (nothing is
allocated): the training and evaluation sets, the teacher's reference inputs, the students
with their gradients, optimiser state and checkpoint copies, the step and measurement
activations (bounded by the memory budget, as the steppers and ``measure`` chunk members),
the correlation matrices and the bookkeeping per event step. It is a lower bound in
spirit: a run it refuses could not have run; a run it lets through can still be tight.

``check(cfg, device)`` refuses a run whose estimate exceeds the memory available (host
memory from ``/proc/meminfo`` or ``os.sysconf``; on CUDA the device's free memory from
``torch.cuda.mem_get_info``) with one ``UserError`` that gives the estimate and the limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import UserError

# Bytes per event step kept in Python sets/lists (schedule, measure_at) and per measurement
# (the first-pass reductions' bookkeeping): the cost of a huge step count measured often.
EVENT_BYTES = 120
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2}
DEFAULT_BUDGET = 1 << 30  # steppers.DEFAULT_MEMORY_BUDGET (not imported: it pulls in torch)


@dataclass(frozen=True)
class Estimate:
    """Estimated bytes of a run, by part, and how many steps and event steps it has."""

    parts: dict[str, int]
    steps: int
    events: int

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def gib(n: float) -> str:
    """Bytes in a readable unit: ``7.5 MiB``, ``240 GiB``, ``8.9 EiB``."""
    for power, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if n >= 2**power * 0.95:
            return f"{n / 2**power:.3g} {unit}"
    return f"{int(n)} bytes"


def event_count(cfg) -> int:
    """How many steps the loop pauses at (measurements and kept checkpoints), counted without building the set."""
    m, total, spe = cfg.measure, cfg.total_steps, cfg.steps_per_epoch
    if m.every == "epoch":
        n = total // spe + 1
    elif m.every == "steps":
        n = total // m.every_steps + 1
    else:
        n = m.log_points + 1
    theory = {"none": 0, "steps": total // m.theory_every_steps + 1, "log": m.theory_log_points + 1}[m.theory_every]
    return n + len(m.corr_steps) + len(cfg.training.checkpoint_steps) + theory + 1


def estimate(cfg, memory_budget: float = DEFAULT_BUDGET) -> Estimate:
    """The estimated memory of ``cfg`` (see the module docstring); pure arithmetic on the config."""
    from .inputs import INPUTS

    t, i, s, tr = cfg.teacher, cfg.inputs, cfg.student, cfg.training
    item = ITEMSIZE.get(tr.dtype, 4)
    d = INPUTS[i.kind].dim(i, t.d)
    K = len(s.seeds)
    factor = i.wide_factor if i.labels == "wide_teacher" else 1
    tw = [w * factor for w in t.widths]  # the measured (data) teacher
    sw = [s.multiplier * w for w in t.widths]
    C = t.outputs
    label = C if tr.loss != "ce" else 1
    parts: dict[str, int] = {}
    parts["training set"] = i.train_samples * (d + label) * item * (2 if i.fresh else 1)
    parts["evaluation set"] = i.eval_samples * (d + label + sum(tw)) * item
    parts["teacher reference inputs"] = t.reference_samples * (d + max(tw)) * 4
    from .architectures import ARCHITECTURES

    per_member, pos = ARCHITECTURES[cfg.arch].sizes(cfg, d)  # pos: activations per node and sample (conv: a channel's positions)
    weights = K * per_member
    if cfg.arch == "conv":  # the teacher's maps: its channels at every position, in float64 while tuning
        parts["evaluation set"] += i.eval_samples * sum(m * (p - 1) for m, p in zip(tw, pos)) * item
        parts["teacher reference inputs"] = t.reference_samples * (d + max(m * p for m, p in zip(tw, pos))) * 8
    sw = [n * p for n, p in zip(sw, pos)]
    from .train import OPTIMIZERS

    state = OPTIMIZERS[tr.optimizer].state_slots(tr)  # parameter-sized tensors the optimiser keeps
    # weights, gradients, optimiser state, and the copies checkpoints make (init, latest, final)
    parts["students"] = weights * item * (2 + state) + weights * 4 * 2
    per_member_step = 3 * tr.batch_size * (sum(sw) + C) * item
    parts["step activations"] = min(K * per_member_step, max(per_member_step, int(memory_budget)))
    if cfg.arch == "conv":  # one grouped convolution over all members (no chunking)
        parts["step activations"] = K * per_member_step
    per_member_eval = i.eval_samples * (sum(sw) * 2 + 1) * item
    parts["measurement activations"] = min(K * per_member_eval, max(per_member_eval, 512 * 2**20))
    parts["correlations"] = K * sum(m * n // p for m, n, p in zip(tw, sw, pos)) * 8 * 3
    if cfg.measure.theory_every != "none":  # theory.py: chunked intermediates and the float64 sums of beta
        from .theory import DEFAULT_BUDGET as THEORY_BUDGET

        tf = [m * p for m, p in zip(tw, pos)]  # conv: unrolled over positions (theory.conv_net); MLP: pos = 1
        parts["theory statistics"] = int(THEORY_BUDGET) + K * sum((n + 1) * (m + n + 2) for m, n in zip(tf, sw)) * 8 * 2
    events = event_count(cfg)
    parts["event steps"] = events * EVENT_BYTES
    return Estimate(parts, cfg.total_steps, events)


def available(device=None) -> tuple[int, str]:
    """Bytes free for a run on ``device`` (a ``torch.device`` or None for the host) and where that figure comes from."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory of {device}"
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        return int(info["MemAvailable"].split()[0]) * 1024, "MemAvailable in /proc/meminfo"
    except (OSError, KeyError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available physical pages (sysconf)"
    except (ValueError, OSError, AttributeError):
        return math.inf, "unknown"  # type: ignore[return-value]


def check(cfg, device=None, memory_budget: float = DEFAULT_BUDGET, limit: int | None = None) -> Estimate:
    """``estimate(cfg)``, or a ``UserError`` when it exceeds the memory available (``limit`` overrides it)."""
    est = estimate(cfg, memory_budget)
    if limit is not None:
        have, where = limit, "the given limit"
    else:
        have, where = available(device)
    if est.total > have:
        big = sorted(est.parts.items(), key=lambda kv: -kv[1])[:2]
        raise UserError(f"{cfg.run_id} needs about {gib(est.total)} of memory (mostly {', '.join(f'{k} {gib(v)}' for k, v in big)}) "
                        f"but {gib(have)} is available ({where}); shrink the widths, student.multiplier, "
                        "student.seeds, the sample counts or the measurement frequency")
    return est


def describe(est: Estimate) -> str:
    """One line per part, largest first, for ``run --dry-run``."""
    return "\n".join(f"  {k}: {gib(v)}" for k, v in sorted(est.parts.items(), key=lambda kv: -kv[1]))


def check_teacher(cfg, samples: int | None = None, limit: int | None = None) -> int:
    """For ``teacher inspect``: the bytes its teacher, reference and evaluation inputs need (refused like ``check``)."""
    from .inputs import INPUTS

    t, i = cfg.teacher, cfg.inputs
    factor = i.wide_factor if i.labels == "wide_teacher" else 1
    tw = [w * factor for w in t.widths]
    d = INPUTS[i.kind].dim(i, t.d)
    n = samples or i.eval_samples
    dims = [d, *tw, t.outputs]
    need = 8 * (sum(a * b + b for a, b in zip(dims[:-1], dims[1:])) + (t.reference_samples + n) * (d + 3 * max(tw))
                + n * max(tw) * 2)
    have, where = (limit, "the given limit") if limit is not None else available(None)
    if need > have:
        raise UserError(f"inspecting the teacher of {cfg.run_id} needs about {gib(need)} of memory but {gib(have)} is "
                        f"available ({where}); shrink teacher.widths or --samples")
    return need
