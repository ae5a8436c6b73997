"""What each training option costs on the fast path: student-steps per second, one run.

For the default widths (teacher [10, 15, 20, 25], students x10) at K members, every option
is timed against plain SGD (the fused path) measured in the same invocation and printed as
a ratio: momentum (the fast path with torch.optim), per-member gradient clipping (never
fused), dropout (fused: the masks are drawn per member from its own generator), label
smoothing (cross-entropy), AdamW, RMSprop, and the autograd path for scale. Best of
``--repeats`` timings of ``--steps`` steps each.

    python benchmarks/options_bench.py [--members 4,32] [--steps 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from teacherstudent.config import load_config
from teacherstudent.simulate import Simulation

OPTIONS = {
    "sgd (fused)": [],
    "momentum 0.9": ["training.momentum=0.9"],
    "clip_norm 1.0": ["training.clip_norm=1.0"],
    "dropout 0.1 (fused)": ["training.dropout=0.1"],
    "ce (fused)": ["training.loss='ce'"],
    "ce + label_smoothing 0.1": ["training.loss='ce'", "training.label_smoothing=0.1"],
    "adamw": ["training.optimizer='adamw'", "training.lr=0.001", "training.weight_decay=0.01"],
    "rmsprop": ["training.optimizer='rmsprop'", "training.lr=0.001"],
    "sgd autograd": ["training.backend='autograd'"],
}


def rate(K: int, extra: list[str], steps: int, repeats: int) -> tuple[str, float]:
    sim = Simulation(load_config(None, [f"student.seeds={list(range(K))}", *extra]), torch.device("cpu"))
    sim.train_until(5)  # warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        sim.train_until(sim.step + steps)
        best = min(best, time.perf_counter() - t0)
    return sim.backend, K * steps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="4,32")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    print(f"{'K':>3}  {'option':<26} {'stepper':<10} {'student-steps/s':>15}  vs sgd")
    for K in (int(k) for k in a.members.split(",")):
        base = None
        for name, extra in OPTIONS.items():
            backend, r = rate(K, extra, a.steps, a.repeats)
            base = base or r
            print(f"{K:>3}  {name:<26} {backend:<10} {r:>15,.0f}  {r / base:6.2f}")


if __name__ == "__main__":
    main()
