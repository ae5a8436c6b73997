"""Convolutional ensembles: grouped convolution vs batched alternatives, and conv vs MLP.

One command, one table, every ratio from this one run:

    python benchmarks/conv_bench.py [--members 8] [--steps 20] [--repeats 3] [--threads N]

Rows (student-steps per second = K x optimiser steps per second; float32, batch 64, plain
SGD, autograd, best of ``--repeats`` rounds in which the three variants take turns):

- ``grouped``: ``ConvEnsemble`` (the implementation): one convolution per layer over all
  members (``groups=K`` on ``[B, K*n_l, H, W]``, the first layer an ordinary convolution
  with ``K*n_0`` outputs on the shared input);
- ``loop``: the same stacked parameters, ``F.conv2d`` member by member (a Python loop);
- ``vmap``: ``torch.func.vmap`` of one member's functional forward over the stacked parameters;
- ``conv run`` / ``mlp run``: ``Trainer.train_until`` of a whole conv run and of an MLP run of
  about the same parameter count per student (the MLP on its fastest path, fused SGD).

The conv setting: 8x8 Gaussian images (1 channel), teacher channels [8, 16], students x2
([16, 32] channels, 3x3, stride 1, padding 1), 10 outputs; the MLP: d = 64, teacher widths
[20, 40] x5 ([100, 200]), 10 outputs.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F

from teacherstudent.build import build
from teacherstudent.config import build_config
from teacherstudent.conv import ConvEnsemble
from teacherstudent.loop import Trainer
from teacherstudent.train import member_loss

CPU = torch.device("cpu")


def conv_config(K: int, **training):
    return build_config({
        "arch": "conv", "inputs": {"kind": "gaussian_images", "image_size": 8, "sigma": 1.0, "train_samples": 4096,
                                   "eval_samples": 256},
        "teacher": {"widths": [8, 16], "outputs": 10, "reference_samples": 1000},
        "student": {"multiplier": 2, "seeds": list(range(K))}, "training": {"epochs": 50, **training}})


def mlp_config(K: int):
    return build_config({
        "inputs": {"train_samples": 4096, "eval_samples": 256},
        "teacher": {"d": 64, "widths": [20, 40], "outputs": 10, "reference_samples": 1000},
        "student": {"multiplier": 5, "seeds": list(range(K))}, "training": {"epochs": 50}})


def loop_output(ens: ConvEnsemble, x: torch.Tensor) -> torch.Tensor:
    """Member by member: ``F.conv2d`` with each member's weights, outputs stacked ``[K, B, C]``."""
    g, L = ens.geom, len(ens.weights) - 1
    outs = []
    for k in range(ens.K):
        h = x.reshape(-1, *g.image)
        for l in range(L):
            h = torch.relu(F.conv2d(h, ens.weights[l][k], ens.biases[l][k], stride=g.strides[l], padding=g.paddings[l]))
        outs.append(h.flatten(1) @ ens.weights[-1][k].T + ens.biases[-1][k])
    return torch.stack(outs)


def vmap_output(ens: ConvEnsemble, x: torch.Tensor) -> torch.Tensor:
    """``torch.func.vmap`` of one member's forward over the stacked parameters."""
    g, L = ens.geom, len(ens.weights) - 1

    def member(params, x):
        h = x.reshape(-1, *g.image)
        for l in range(L):
            h = torch.relu(F.conv2d(h, params[2 * l], params[2 * l + 1], stride=g.strides[l], padding=g.paddings[l]))
        return h.flatten(1) @ params[-2].T + params[-1]

    return torch.func.vmap(member, in_dims=(0, None))(ens.params, x)


VARIANTS = {"grouped": lambda ens, x: ens.output(x, train=True), "loop": loop_output, "vmap": vmap_output}


def _best(fn, repeats: int) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def variant_runners(K: int, steps: int) -> dict[str, callable]:
    """One closure per variant that takes ``steps`` SGD steps of its own copy of the conv ensemble."""
    runners = {}
    for name, out_fn in VARIANTS.items():
        p = build(conv_config(K), CPU)
        ens, loss_fn = p.ens, member_loss("mse")
        opt = torch.optim.SGD(ens.params, lr=0.01, foreach=True)
        x, y = p.data.epoch(0)

        def run(ens=ens, out_fn=out_fn, loss_fn=loss_fn, opt=opt, x=x, y=y, B=64):
            for s in range(steps):
                loss = loss_fn(out_fn(ens, x[s * B:(s + 1) * B]), y[s * B:(s + 1) * B])
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()

        runners[name] = run
    return runners


def time_variants(K: int, steps: int, repeats: int) -> dict[str, float]:
    """Student-steps per second of every variant, best of ``repeats`` rounds; the variants take turns
    within each round, so a change in the machine's load hits them alike."""
    runners = variant_runners(K, steps)
    for run in runners.values():
        run()  # warm up
    best = dict.fromkeys(runners, math.inf)
    for _ in range(repeats):
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: K * steps / dt for name, dt in best.items()}


def time_run(cfg, steps: int, repeats: int) -> tuple[float, str, int]:
    """Student-steps per second of ``Trainer.train_until`` (the whole run's step), its stepper and parameters per student."""
    tr = Trainer(build(cfg, CPU))
    t = {"step": 0}

    def run():
        t["step"] += steps
        tr.train_until(t["step"])

    rate = tr.ens.K * steps / _best(run, repeats)
    return rate, tr.backend, sum(p[0].numel() for p in tr.ens.params)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    K = a.members
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, K = {K}, {a.steps} steps x best of {a.repeats}")
    rates = time_variants(K, a.steps, a.repeats)
    for v, r in rates.items():
        print(f"{v:8s} {r:10.1f} student-steps/s   grouped / {v} = {rates['grouped'] / r:.2f}")
    conv_rate, conv_backend, conv_params = time_run(conv_config(K), a.steps, a.repeats)
    mlp_rate, mlp_backend, mlp_params = time_run(mlp_config(K), a.steps, a.repeats)
    print(f"conv run {conv_rate:10.1f} student-steps/s ({conv_backend}, {conv_params} parameters per student)")
    print(f"mlp run  {mlp_rate:10.1f} student-steps/s ({mlp_backend}, {mlp_params} parameters per student)")
    print(f"mlp run / conv run = {mlp_rate / conv_rate:.2f}")


if __name__ == "__main__":
    main()
