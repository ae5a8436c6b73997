"""The benchmark suite behind ``teacherstudent bench``: one table, measured in one run.

Rows:
- ``gemm``: the machine's fp32 matrix-multiply ceiling (a large square matmul).
- ``train``: for the default widths and the papers' larger ones, at K members: student-steps
  per second and achieved GFLOP/s (forward + backward FLOP count) of the fast path, the
  autograd ensemble, the loop a user would write (K ``nn.Module`` students, each with
  ``torch.optim.SGD``) and PyTorch's documented ensembling recipe (``torch.func``:
  ``stack_module_state`` + ``functional_call`` + ``vmap`` of ``grad``, then an SGD update
  of the stacked parameters; a ``peer`` row), with ratios and the fraction of the GEMM ceiling.
- ``measure``: one measurement (K members, 10,240 evaluation samples) as a fraction of the
  training time between two measurements at the default schedule (one epoch).
- ``memory``: bytes per member (parameters, gradients, optimiser state, step activations),
  counted from tensor sizes; on CUDA also the allocator's measured peak.

Timings take the best of a few repeats (5 in a full run; the machine is shared and noisy).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from teacherstudent.config import load_config
from teacherstudent.ensemble import as_modules
from teacherstudent.build import build
from teacherstudent.loop import Trainer

ORIGINAL_CODE_STEPS_PER_S = 300.0  # quoted in the performance issue for the original research code, same machine
SETTINGS = {"default": [10, 15, 20, 25], "large": [50, 75, 100, 125]}


@dataclass
class Row:
    kind: str
    setting: str = ""
    K: int = 0
    path: str = ""
    steps_per_s: float = math.nan  # student-steps per second
    gflops: float = math.nan
    frac_ceiling: float = math.nan
    vs_reference: float = math.nan
    vs_original: float = math.nan
    extra: dict = field(default_factory=dict)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _best_time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm up
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def gemm_ceiling(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` fp32 matmul."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    reps = 4 if device.type == "cpu" else 50
    dt = _best_time(lambda: [a @ b for _ in range(reps)], repeats, device)
    return 2 * n**3 * reps / dt / 1e9


def flops_per_student_step(widths: list[int], d: int, outputs: int, batch: int) -> float:
    """Forward (2 per multiply-add) plus backward (twice the forward) of one student on one batch."""
    dims = [d, *widths, outputs]
    return 6.0 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def _config(teacher_widths: list[int], K: int, backend: str = "auto", precision: str = "full"):
    return load_config(None, [f"teacher.widths={teacher_widths}", f"student.seeds={list(range(K))}",
                              f"training.backend='{backend}'"] + ([f"training.precision='{precision}'"] if precision != "full" else []))


def _ensemble_rate(sim: Trainer, steps: int, repeats: int) -> float:
    def go():
        sim.train_until(sim.step + steps)
    return sim.ens.K * steps / _best_time(go, repeats, sim.device)


def _reference_rate(sim: Trainer, steps: int, repeats: int) -> float:
    """K ordinary students, one ``nn.Module`` and one ``torch.optim.SGD`` each, same batches."""
    nets = as_modules(sim.ens)
    opts = [torch.optim.SGD(n.parameters(), lr=sim.cfg.training.lr) for n in nets]
    x, y = sim.data.epoch(0)
    B = sim.cfg.training.batch_size
    pos = [0]

    def go():
        for _ in range(steps):
            i = pos[0] % sim.steps_per_epoch
            xb, yb = x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]
            for net, opt in zip(nets, opts):
                opt.zero_grad()
                torch.nn.functional.mse_loss(net(xb), yb).backward()
                opt.step()
            pos[0] += 1
    return len(nets) * steps / _best_time(go, repeats, sim.device)


def _torch_func_rate(sim: Trainer, steps: int, repeats: int) -> float:
    """PyTorch's model-ensembling recipe: the K ``nn.Module`` students stacked with
    ``torch.func.stack_module_state``, per-member gradients by ``vmap(grad(loss))`` over
    ``functional_call`` on a meta-device copy, plain SGD on the stacked tensors; same batches."""
    import copy

    from torch.func import functional_call, grad, stack_module_state, vmap

    nets = as_modules(sim.ens)
    params, buffers = stack_module_state(nets)
    params = {k: v.detach() for k, v in params.items()}
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def loss(p, b, xb, yb):
        return torch.nn.functional.mse_loss(functional_call(skeleton, (p, b), (xb,)), yb)

    member_grads = vmap(grad(loss), in_dims=(0, 0, None, None))
    x, y = sim.data.epoch(0)
    B, lr = sim.cfg.training.batch_size, sim.cfg.training.lr
    pos = [0]

    def go():
        for _ in range(steps):
            i = pos[0] % sim.steps_per_epoch
            g = member_grads(params, buffers, x[i * B:(i + 1) * B], y[i * B:(i + 1) * B])
            for k, v in params.items():
                v.sub_(g[k], alpha=lr)
            pos[0] += 1
    return len(nets) * steps / _best_time(go, repeats, sim.device)


def memory_per_member(sim: Trainer) -> dict:
    p = sum(t.numel() * t.element_size() for t in sim.ens.state()) / sim.ens.K
    opt_state = sum(v.numel() * v.element_size() for s in sim.opt.state.values() for v in s.values()
                    if torch.is_tensor(v)) / sim.ens.K
    B = sim.cfg.training.batch_size
    acts = 3 * B * (sum(sim.widths) + sim.ens.weights[-1].shape[1]) * sim.ens.params[0].element_size()
    grads = 0.0 if sim.fused_sgd else p  # plain SGD on the fast path updates in the backward, keeps no gradients
    out = {"params_bytes": p, "grads_bytes": grads, "optimizer_bytes": opt_state, "step_activation_bytes": acts,
           "total_bytes": p + grads + opt_state + acts}
    if sim.device.type == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(sim.device) / sim.ens.K
    return out


def run_suite(quick: bool = False, device: str = "cpu", settings: tuple[str, ...] = ("default", "large"),
              members: tuple[int, ...] = (1, 8, 32), progress=None) -> dict:
    """Measure everything; returns ``{"machine": ..., "rows": [...]}`` (also what ``--json`` writes)."""
    dev = torch.device(device)
    repeats = 2 if quick else 5  # best of several: neighbours on a shared machine come and go
    rows: list[Row] = []
    ceiling_start = gemm_ceiling(dev, repeats=repeats)
    for setting in settings:
        widths = SETTINGS[setting]
        for K in members:
            if progress:
                progress(f"{setting} K={K}")
            base = 8 if setting == "large" else 60
            steps = max(4, (base if quick else 3 * base) // max(1, K // 8))
            fl = flops_per_student_step([10 * w for w in widths], 20, 100, 64)
            rates = {}
            # "fast bf16": the fast path with training.precision='bf16' (bfloat16 matmuls, float32 weights)
            for path, backend, precision in (("fast", "fast", "full"), ("fast bf16", "fast", "bf16"),
                                             ("autograd", "autograd", "full")):
                sim = None  # free the previous simulation before measuring this one's peak
                if dev.type == "cuda":  # the peak reported for this (setting, K), not the largest one so far
                    torch.cuda.reset_peak_memory_stats(dev)
                sim = Trainer(build(_config(widths, K, backend, precision), dev))
                rates[path] = _ensemble_rate(sim, steps, repeats)
                if path == "fast":
                    mem = memory_per_member(sim)
            ref_steps = max(2, steps // 2 if K > 1 else steps)
            rates["reference"] = _reference_rate(sim, ref_steps, repeats)
            peer = _torch_func_rate(sim, steps, repeats)
            for path, r in rates.items():
                rows.append(Row("train", setting, K, path, r, r * fl / 1e9, math.nan,
                                r / rates["reference"], r / ORIGINAL_CODE_STEPS_PER_S if setting == "default" else math.nan))
            rows.append(Row("peer", setting, K, "torch.func", peer, peer * fl / 1e9, math.nan, peer / rates["reference"],
                            peer / ORIGINAL_CODE_STEPS_PER_S if setting == "default" else math.nan))
            rows.append(Row("memory", setting, K, "fast", extra=mem))
    # measurement cost at the default schedule: one measure() per epoch of training
    for K in (max(members),):
        sim = Trainer(build(_config(SETTINGS["default"], K), dev))
        steps = 60 if quick else 200
        step_rate = _ensemble_rate(sim, steps, repeats) / K  # ensemble steps per second
        t_measure = _best_time(sim.snapshot, repeats, dev)
        t_epoch = sim.steps_per_epoch / step_rate
        rows.append(Row("measure", "default", K, "fast", extra={
            "measure_s": t_measure, "epoch_train_s": t_epoch, "fraction_of_training": t_measure / t_epoch,
            "eval_samples": sim.cfg.inputs.eval_samples, "steps_per_epoch": sim.steps_per_epoch}))
    # The ceiling is measured before and after and the larger kept: on a shared machine the
    # clock and the neighbours change during a run, and a low ceiling would flatter the rows.
    ceiling_end = gemm_ceiling(dev, repeats=repeats)
    ceiling = max(ceiling_start, ceiling_end)
    for r in rows:
        if r.kind in ("train", "peer"):
            r.frac_ceiling = r.gflops / ceiling
    rows.insert(0, Row("gemm", path="matmul 2048", gflops=ceiling, frac_ceiling=1.0,
                       extra={"start_gflops": ceiling_start, "end_gflops": ceiling_end}))
    machine = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "quick": quick,
               "cuda": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return {"machine": machine, "rows": [asdict(r) for r in rows]}


def write_json(result: dict, path: Path) -> Path:
    from teacherstudent.store import write_json as atomic_json

    atomic_json(Path(path), result)
    return Path(path)
