"""Theory statistics (``theory.mean_betas``) against a plain per-sample loop, in one run.

``python -m teacherstudent_benchmarks.theory_bench [--quick]`` prints, per setting (the
default teacher [10, 15, 20, 25] and the papers' larger [50, 75, 100, 125], students x10, d = 20,
100 outputs, float32, CPU): the time of the batched computation (samples and members at once,
chunked by the byte budget) and of the loop the official code uses (one sample and one
member at a time, the same matrix products per sample), per sample, their ratio, and the
largest relative difference of the resulting means ``E[A_l]``, ``E[B_l]`` (the same numbers).
The loop is timed on fewer samples than the batched path when it is slow (per-sample times
are compared); the difference is checked on the loop's samples.
"""

from __future__ import annotations

import argparse
import time

import torch

from teacherstudent.build import build
from teacherstudent.config import load_config
from teacherstudent.theory import Net, mean_betas, student_net, teacher_net

SETTINGS = {"default": [10, 15, 20, 25], "large": [50, 75, 100, 125]}


def loop_betas(student: Net, teacher: Net, x_NxD: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``E[A_l]``, ``E[B_l]`` by a Python loop over members and samples (the reference)."""
    Ws, Ts = student.augmented(), teacher.augmented()
    L, K, N = len(Ws) - 1, Ws[0].shape[0], x_NxD.shape[0]
    sums = [(torch.zeros(K, Ws[l].shape[-2], Ts[l].shape[-2], dtype=torch.float64),
             torch.zeros(K, Ws[l].shape[-2], Ws[l].shape[-2], dtype=torch.float64)) for l in range(L)]
    for k in range(K):
        W = [w[k] for w in Ws]
        T = [t[min(k, t.shape[0] - 1)] for t in Ts]
        one = Net(tuple(w[k:k + 1] for w in student.weights), tuple(b[k:k + 1] for b in student.biases))
        tk = teacher if teacher.weights[0].shape[0] == 1 else Net(tuple(w[k:k + 1] for w in teacher.weights),
                                                                   tuple(b[k:k + 1] for b in teacher.biases), teacher.slope)
        for i in range(N):
            xi = x_NxD[i:i + 1]
            gs = [g[0, 0] for g in one.gates(xi)]
            gt = [g[0, 0] for g in tk.gates(xi)]
            A, B = W[L].T @ T[L], W[L].T @ W[L]
            for l in range(L - 1, -1, -1):
                sums[l][0][k] += A
                sums[l][1][k] += B
                if l:
                    A = W[l].T @ (A * torch.outer(gs[l], gt[l])) @ T[l]
                    B = W[l].T @ (B * torch.outer(gs[l], gs[l])) @ W[l]
    return [(a / N, b / N) for a, b in sums]


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench(setting: str, K: int, samples: int, loop_samples: int, repeats: int) -> dict:
    cfg = load_config(None, [f"teacher.widths={SETTINGS[setting]}", f"student.seeds={list(range(K))}",
                             f"inputs.eval_samples={samples}", "inputs.train_samples=64"])
    p = build(cfg, torch.device("cpu"))
    x = p.data.x_eval
    t_batch, _ = _time(lambda: mean_betas(p.teacher, p.ens, x), repeats)
    st, tn = student_net(p.ens), teacher_net(p.teacher, K, x.device, x.dtype)
    xs = x[:loop_samples]
    t_loop, ref = _time(lambda: loop_betas(st, tn, xs), 1)
    got = mean_betas(p.teacher, p.ens, xs)
    diff = max(float(((g - r).abs().max() / r.abs().max())) for gl, rl in zip(got, ref) for g, r in zip(gl, rl))
    per_b, per_l = t_batch / samples, t_loop / loop_samples
    return {"setting": setting, "K": K, "samples": samples, "loop_samples": loop_samples, "batched_ms_per_sample": 1e3 * per_b,
            "loop_ms_per_sample": 1e3 * per_l, "ratio": per_l / per_b, "max_rel_diff": diff}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    a = ap.parse_args(argv)
    q = a.quick
    runs = [("default", 1, 512 if q else 4096, 64 if q else 512), ("default", 8, 256 if q else 1024, 16 if q else 64),
            ("large", 1, 32 if q else 256, 4 if q else 16)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 CPU")
    print(f"{'setting':8} {'K':>3} {'samples':>8} {'loop smp':>8} {'batched ms/smp':>15} {'loop ms/smp':>12} "
          f"{'ratio':>8} {'max rel diff':>13}")
    rows = []
    for setting, K, n, nl in runs:
        r = bench(setting, K, n, nl, 1 if q else 2)
        rows.append(r)
        print(f"{setting:8} {K:>3} {n:>8} {nl:>8} {r['batched_ms_per_sample']:>15.4f} {r['loop_ms_per_sample']:>12.4f} "
              f"{r['ratio']:>8.1f} {r['max_rel_diff']:>13.2e}", flush=True)
    return rows


if __name__ == "__main__":
    main()
