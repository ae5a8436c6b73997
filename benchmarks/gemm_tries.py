"""Issue 20 item 3's remaining tries, as matmul micro-benchmarks of the default setting's step shapes.

The fast path's step at the default widths ([10, 15, 20, 25] x 10 students, d = 20, 100 outputs,
batch 64) is batched matmuls over K members with 64 rows. This times, per variant and in one
run (best of ``--repeats``), the forward matmuls of one step for K members:

- ``bmm``: ``torch.bmm`` float32 (what the fast path does),
- ``loop``: K separate ``torch.mm`` calls (the per-student loop's GEMMs),
- ``blockdiag``: all members as one block-diagonal GEMM (K^2 x the FLOPs, one call),
- ``bf16``: ``torch.bmm`` in bfloat16 (with its relative error against float64 printed),
- ``mkldnn off``: ``bmm`` with ``torch.backends.mkldnn`` disabled.

    python -m teacherstudent_benchmarks.gemm_tries [--K 32] [--repeats 20]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

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


if __name__ == "__main__":
    main()
