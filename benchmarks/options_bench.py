"""What each training option costs on the fast path: student-steps per second, one run.

For the default widths (teacher [10, 15, 20, 25], students x10) at K members, every option
is timed against plain SGD (the fused path) measured in the same invocation and printed as
a ratio: momentum (the fast path with torch.optim), per-member gradient clipping (never
fused), dropout (fused: the masks are drawn per member from its own generator), label
smoothing (cross-entropy), AdamW, RMSprop, and the autograd path for scale. The options
take turns (one timing of ``--steps`` steps each per round), best of ``--repeats`` rounds.

    python benchmarks/options_bench.py [--members 4,32] [--steps 20] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import torch

from teacherstudent.config import load_config
from teacherstudent.build import build
from teacherstudent.loop import Trainer

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


def rates(K: int, steps: int, repeats: int) -> dict[str, tuple[str, float]]:
    """Student-steps per second of every option at K members: the options take turns, one
    timing each per round, best of ``repeats`` rounds (a load that drifts hits them alike)."""
    sims = {name: Trainer(build(load_config(None, [f"student.seeds={list(range(K))}", *extra]), torch.device("cpu")))
            for name, extra in OPTIONS.items()}
    for sim in sims.values():
        sim.train_until(5)  # warm up
    best = dict.fromkeys(sims, float("inf"))
    for _ in range(repeats):
        for name, sim in sims.items():
            t0 = time.perf_counter()
            sim.train_until(sim.step + steps)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (sim.backend, K * steps / best[name]) for name, sim in sims.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", default="4,32")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    print(f"{'K':>3}  {'option':<26} {'stepper':<10} {'student-steps/s':>15}  vs sgd")
    for K in (int(k) for k in a.members.split(",")):
        res = rates(K, a.steps, a.repeats)
        base = res["sgd (fused)"][1]
        for name, (backend, r) in res.items():
            print(f"{K:>3}  {name:<26} {backend:<10} {r:>15,.0f}  {r / base:6.2f}")


if __name__ == "__main__":
    main()
