"""Issue 20 item 3's remaining tries, as matmul micro-benchmarks of the default setting's step shapes.

The fast path's step at the default widths ([10, 15, 20, 25] x 10 students, d = 20, 100 outputs,
batch 64) is batched matmuls over K members with 64 rows. This times, per variant and in one
run (best of ``--repeats``), the forward matmuls of one step for K members:

- ``bmm``: ``torch.bmm`` float32 (what the fast path does),
- ``loop``: K separate ``torch.mm`` calls (the per-student loop's GEMMs),
- ``blockdiag``: all members as one block-diagonal GEMM (K^2 x the FLOPs, one call),
- ``bf16``: ``torch.bmm`` in bfloat16 (with its relative error against float64 printed),
- ``mkldnn off``: ``bmm`` with ``torch.backends.mkldnn`` disabled.

and then whole SGD steps (forward, MSE loss, backward and update of every member, the default
widths, 100 outputs), best of ``--repeats``:

- ``fused float32``: ``fast.sgd_step``, what a run does,
- ``bf16 mixed``: bfloat16 matmuls with float32 master weights (each step casts the weights to
  bfloat16 and adds the bfloat16 weight gradients to the float32 weights): ``fast.sgd_step`` with
  ``mm_dtype=torch.bfloat16``, what ``training.precision = "bf16"`` runs,
- ``2 groups x 1 thread``: the members as two halves, each stepped by ``fast.sgd_step`` on its own
  Python thread with one intra-op thread (thread layout per member group),

with the error of ``--steps`` steps from one initialisation on the same batches against the same
steps in float64 (relative distance of all parameters).

    python -m teacherstudent_benchmarks.gemm_tries [--K 32] [--repeats 20] [--steps 200]
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

from teacherstudent import fast

DIMS = [20, 100, 150, 200, 250, 100]  # d, the default student widths (10 x teacher), outputs
BATCH = 64


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args(argv)
    K, g = a.K, torch.Generator().manual_seed(0)
    xs = [torch.randn(K, BATCH, i, generator=g) for i in DIMS[:-1]]
    ws = [torch.randn(K, i, o, generator=g) / i ** 0.5 for i, o in zip(DIMS[:-1], DIMS[1:])]
    flops = 2 * K * BATCH * sum(i * o for i, o in zip(DIMS[:-1], DIMS[1:]))
    bd = [torch.block_diag(*w) for w in ws]
    xcat = [x.transpose(0, 1).reshape(BATCH, -1) for x in xs]
    xb, wb = [x.bfloat16() for x in xs], [w.bfloat16() for w in ws]
    variants = {
        "bmm": lambda: [torch.bmm(x, w) for x, w in zip(xs, ws)],
        "loop": lambda: [[torch.mm(x[k], w[k]) for k in range(K)] for x, w in zip(xs, ws)],
        "blockdiag": lambda: [x @ w for x, w in zip(xcat, bd)],
        "bf16": lambda: [torch.bmm(x, w) for x, w in zip(xb, wb)],
    }
    base = None
    print(f"forward matmuls of one step, K = {K}, batch {BATCH}, dims {DIMS}: {flops / 1e6:.1f} MFLOP useful")
    for name, fn in variants.items():
        t = best(fn, a.repeats)
        base = base or t
        print(f"  {name:10s} {t * 1e6:9.0f} us  {flops / t / 1e9:6.1f} GFLOP/s useful  {base / t:5.2f}x bmm")
    with warnings.catch_warnings():  # the flags context warns about TF32 on Intel GPUs
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=False):
            t = best(variants["bmm"], a.repeats)
    print(f"  {'mkldnn off':10s} {t * 1e6:9.0f} us  {flops / t / 1e9:6.1f} GFLOP/s useful  {base / t:5.2f}x bmm")
    ref = [torch.bmm(x.double(), w.double()) for x, w in zip(xs, ws)]
    err = max(((torch.bmm(x, w).double() - r).norm() / r.norm()).item() for x, w, r in zip(xb, wb, ref))
    err32 = max(((torch.bmm(x, w).double() - r).norm() / r.norm()).item() for x, w, r in zip(xs, ws, ref))
    print(f"  relative error against float64: bf16 {err:.1e}, float32 {err32:.1e}")
    steps(K, a.repeats, a.steps)


def steps(K: int, repeats: int, n_steps: int, lr: float = 0.01) -> None:
    g = torch.Generator().manual_seed(1)
    init = []
    for i, o in zip(DIMS[:-1], DIMS[1:]):
        init += [torch.randn(K, o, i, generator=g, dtype=torch.float64) / i ** 0.5,
                 torch.randn(K, o, generator=g, dtype=torch.float64) * 0.1]
    xs = [torch.randn(BATCH, DIMS[0], generator=g, dtype=torch.float64) for _ in range(8)]
    ys = [torch.randn(BATCH, DIMS[-1], generator=g, dtype=torch.float64) for _ in range(8)]
    halves = (slice(0, K // 2), slice(K // 2, K))
    pool = ThreadPoolExecutor(2)

    def two_groups(ps, x, y, lr):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # process-wide: each Python thread's ops run on one intra-op thread
        try:
            futs = [pool.submit(fast.sgd_step, [p[h] for p in ps], x, y, "mse", lr) for h in halves]
            return torch.cat([f.result() for f in futs])
        finally:
            torch.set_num_threads(threads)

    variants = {"fused float32": lambda ps, x, y, lr: fast.sgd_step(ps, x, y, "mse", lr),
                "bf16 mixed": lambda ps, x, y, lr: fast.sgd_step(ps, x, y, "mse", lr, mm_dtype=torch.bfloat16),
                "2 groups x 1 thread": two_groups}
    x32, y32 = xs[0].float(), ys[0].float()
    print(f"SGD steps, K = {K}, default widths, batch {BATCH}; error after {n_steps} steps against float64:")
    ref = [p.clone() for p in init]
    for s in range(n_steps):
        fast.sgd_step(ref, xs[s % 8], ys[s % 8], "mse", lr)
    times = {name: float("inf") for name in variants}
    for _ in range(repeats):  # the variants take turns, so a neighbour's load falls on all of them
        for name, fn in variants.items():
            ps = [p.float() for p in init]
            times[name] = min(times[name], best(lambda: fn(ps, x32, y32, lr), 4))
    base = times["fused float32"]
    for name, fn in variants.items():
        t = times[name]
        ps = [p.float() for p in init]
        for s in range(n_steps):
            fn(ps, xs[s % 8].float(), ys[s % 8].float(), lr)
        err = (sum((p.double() - r).square().sum() for p, r in zip(ps, ref)).sqrt()
               / sum((r - p0).square().sum() for r, p0 in zip(ref, init)).sqrt()).item()
        print(f"  {name:20s} {t * 1e3:7.2f} ms/step  {K / t:6.0f} student-steps/s  {base / t:5.2f}x fused"
              f"  error {err:.1e} of the distance moved")


if __name__ == "__main__":
    main()
