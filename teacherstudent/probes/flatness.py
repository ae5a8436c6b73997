"""The flat-minima probe: the Hessian of a finished run's training loss (docs/science.md §8).

``run_flatness(parent, at=...)`` loads the parent's students at ``final`` or ``step:K``
(``step:0`` = init), in float64, and measures per member the Hessian ``H_k`` of its training
loss (the parent's loss on its first ``samples`` fixed training samples; with fresh inputs
the evaluation set stands in for the population):

- the top eigenvalues and their Ritz vectors (Lanczos from a seeded random start);
- the trace (Hutchinson, Rademacher probes) and, from the same probes, the diagonal of ``H``;
- how much of the top and of the near-zero eigen-directions lies in the weights of the
  parent's *unaligned* student nodes (final best correlation below ``measure.covered``)
  versus its *aligned* ones. Weight ownership is ``node_owners`` (one map); an entry owned by
  two nodes counts half to each; output biases belong to no node.

The near-zero share is basis-free: ``tr(D_g phi(H)) / tr(phi(H))``, ``D_g`` the diagonal of
group ``g``'s ownership fractions and ``phi`` a window around zero, the polynomial
``(1 - lambda^2 / rho^2)^q`` (``rho`` just above the spectral radius, ``q`` even, ``2q`` below
twice the Lanczos steps): stochastic Lanczos quadrature with probes ``r * sqrt(D_g)`` computes it
exactly for each probe (no Lanczos resolution error), and the only error is the probes'.
The window's half-height half-width (``near_zero_halfwidth``, about ``rho sqrt(ln 2 / q)``) is
reported: more Lanczos steps narrow it. A sharp cut ``|lambda| < tol * lambda_max`` cannot be
resolved by a few dozen Lanczos steps when the spectrum is continuous near zero.

The probe trains nothing. Its folder ``<parent name>.flatness-<hash>`` next to the parent holds
``config.json`` (the parent's config plus the ``probe`` section), ``meta.json``, ``status.json``,
``flatness.parquet`` (``run, parent, member, step, statistic, index, value``) and ``probe.json``
(written last: the probe is complete). Asking again for a complete probe reuses it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..build import Problem, build
from ..config import ExperimentConfig, FlatnessProbe, probe_config
from ..devices import pick_device
from ..ensemble import Ensemble
from ..errors import UserError
from ..lock import locked
from ..seeds import Stream, generator
from ..simulate import meta
from ..folder import RunFolder, load_torch, write_json, write_parquet
from ..reader import read_table_file
from ..train import loss_kind, member_loss
from .hessian import flatten, hutchinson, hvp_operator, quadrature, rademacher
from .rewind import checkpoint_state
from .runs import child_config, finished_parent, is_complete

GROUPS = ("unaligned", "aligned")  # plus "unowned" (output biases): the three fractions sum to 1


def flatness_plan(run: str | Path, spec: FlatnessProbe | dict | None = None, root: str | Path = "runs",
                  **fields) -> tuple[Path, ExperimentConfig, ExperimentConfig]:
    """The parent and the probe's child config (fields: ``at``, ``samples``, ``top``, ``lanczos``,
    ``probes``, ``density_probes``, ``seed``), all checked; the weights at ``at`` exist."""
    parent, pcfg = finished_parent(run, root)
    if pcfg.arch != "mlp":
        raise UserError(f"probe flatness covers MLP students; {parent.name} has arch={pcfg.arch!r} (which weights "
                        "belong to a channel is not defined for it yet): probe an arch='mlp' run")
    spec = probe_config(FlatnessProbe, spec, **fields, parent=parent.name)
    weights_at(parent, spec.at)
    return parent, pcfg, child_config(pcfg, spec.model_dump(mode="json"))


def weights_at(parent: Path, at: str) -> tuple[int, list[torch.Tensor]]:
    """``(step, state)`` the parent kept at ``at`` (``final`` or ``step:K``; a missing step: one line)."""
    if at == "final":
        ck = load_torch(parent / "checkpoints" / "final.pt")
        return int(ck["step"]), ck["weights"]
    step = int(at.split(":", 1)[1])
    return step, checkpoint_state(parent, step)


# ---- which weights belong to which node ---------------------------------------

def node_owners(ens: Ensemble) -> list[list[tuple[int, torch.Tensor]]]:
    """The node-ownership map: for every tensor of ``ens.trainable`` (in order), its owners as
    ``(hidden layer l, index of the owning node for every entry, shaped like the tensor without K)``.

    Hidden node ``j`` of layer ``l`` owns its fan-in row ``W_l[j, :]``, its bias ``b_l[j]``, its
    BatchNorm ``gamma``/``beta`` and its fan-out column ``W_{l+1}[:, j]``; so a hidden-to-hidden
    weight has two owners and the output biases have none. (Stacked-MLP shapes: another
    architecture provides its own map.)
    """
    L = len(ens.weights) - 1
    out: list[list[tuple[int, torch.Tensor]]] = []
    for l, w in enumerate(ens.weights):
        n, fan_in = w.shape[1:]
        rows = torch.arange(n)[:, None].expand(n, fan_in)
        cols = torch.arange(fan_in)[None, :].expand(n, fan_in)
        out.append(([(l, rows)] if l < L else []) + ([(l - 1, cols)] if l > 0 else []))
        out.append([(l, torch.arange(n))] if l < L else [])
    for i, g in enumerate(ens.bn_params):  # gamma_0, beta_0, gamma_1, ...
        out.append([(i // 2, torch.arange(g.shape[1]))])
    return out


def group_fractions(ens: Ensemble, aligned: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per group (``GROUPS``) the fraction ``[K, P]`` of every parameter entry its owners give to the
    group (``aligned[l]``: ``[K, n_l]`` booleans); entries without owners count for neither."""
    frac = {g: [] for g in GROUPS}
    for t, owners in zip(ens.trainable, node_owners(ens), strict=True):
        K = t.shape[0]
        shares = {g: torch.zeros(K, *t.shape[1:], dtype=torch.float64) for g in GROUPS}
        for l, idx in owners:
            a = aligned[l][:, idx.reshape(-1)].reshape(K, *idx.shape).to(torch.float64)
            shares["aligned"] += a / len(owners)
            shares["unaligned"] += (1 - a) / len(owners)
        for g in GROUPS:
            frac[g].append(shares[g])
    return {g: flatten(v, ens.K).to(ens.params[0].device) for g, v in frac.items()}


def aligned_nodes(parent: Path, cfg: ExperimentConfig, widths: list[int]) -> list[torch.Tensor]:
    """``[K, n_l]`` per hidden layer: True where the student node's best correlation at the parent's
    last measurement is at least ``measure.covered``."""
    sn = read_table_file(parent / "student_nodes.parquet")
    last = sn[sn["step"] == sn["step"].max()]
    member = last["member"].map({s: k for k, s in enumerate(cfg.student.seeds)}).to_numpy()
    out = []
    for l, n in enumerate(widths):
        rows = last["layer"].to_numpy() == l
        a = torch.zeros(len(cfg.student.seeds), n, dtype=torch.bool)
        ok = torch.tensor(last["best_corr"].to_numpy()[rows] >= cfg.measure.covered)
        a[torch.tensor(member[rows]), torch.tensor(last["student_node"].to_numpy()[rows].astype(np.int64))] = ok
        out.append(a)
    return out


# ---- the loss and the statistics ------------------------------------------------

def with_trainable(ens: Ensemble, tensors: list[torch.Tensor]) -> Ensemble:
    """A shallow copy of ``ens`` computing with ``tensors`` in place of ``ens.trainable``."""
    e = copy.copy(ens)
    n = len(ens.params)
    e.params, e.bn_params = list(tensors[:n]), list(tensors[n:])
    return e


def training_loss(problem: Problem, samples: int):
    """``(loss, n)``: ``loss(tensors)`` is the sum over members of each member's training loss on
    the first ``n = min(samples, N)`` fixed training samples (evaluation mode: BatchNorm uses its
    running statistics); with fresh inputs, on the evaluation set."""
    data = problem.data
    x, y = data.train_set if data.train_set is not None else (data.x_eval, data.y_eval)
    n = min(samples, x.shape[0])
    x, y = x[:n], data.batch(y, 0, n)
    f = member_loss(loss_kind(problem.cfg.training.loss, problem.cfg.training.loss_reduction))
    return (lambda tensors: f(with_trainable(problem.ens, tensors).output(x, train=False), y).sum()), n


def flatness_stats(op, K: int, P: int, fractions: dict[str, torch.Tensor], spec: FlatnessProbe,
                   gen: torch.Generator, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    """Every statistic, ``[K]`` or ``[K, top]`` (see the module docstring and docs/science.md §8)."""
    out: dict[str, torch.Tensor] = {}
    # one batched Lanczos run: row 0 from a random start (the top eigenpairs), then for every density
    # probe r one row per node group, r * sqrt(D_g) (the near-zero quadrature)
    owned = torch.stack(list(fractions.values()))
    parts = torch.cat([owned, (1 - owned.sum(0, keepdim=True)).clamp_min(0)])  # [G + 1, K, P], the last: unowned
    starts = [torch.randn(1, K, P, generator=gen, dtype=dtype).to(device)]
    starts += [rademacher((1, K, P), gen, dtype, device) * parts.sqrt() for _ in range(spec.density_probes)]
    theta, weights, vecs = quadrature(op, torch.cat(starts), spec.lanczos, gen, vectors=1)
    top = min(spec.top, theta.shape[-1])
    vals, u = theta[0, :, -top:].flip(-1), vecs[0, :, -top:].flip(1)  # [K, top], [K, top, P]
    res = op(u.transpose(0, 1)).transpose(0, 1) - vals[..., None] * u
    out["eigenvalue"] = vals
    out["eigenvalue_residual"] = res.norm(dim=-1) / vals.abs()  # ||H u - theta u|| / |theta|
    for g, w in fractions.items():
        out[f"top_share_{g}"] = (u.square() * w[:, None, :]).sum(-1)

    quad, diag = hutchinson(op, K, P, spec.probes, gen, dtype, device)
    out["trace"] = quad.mean(0)
    out["trace_se"] = quad.std(0) / spec.probes ** 0.5 if spec.probes > 1 else torch.full((K,), float("nan"))
    for g, w in fractions.items():
        out[f"trace_share_{g}"] = (diag * w).sum(-1) / diag.sum(-1)
        out[f"curvature_per_weight_{g}"] = (diag * w).sum(-1) / w.sum(-1)  # tr(D_g H) / tr(D_g)

    rho, q = 1.05 * theta[0].abs().amax(-1), window_degree(spec.lanczos)  # rho: above the spectral radius
    phi = (weights[1:] * near_zero_window(theta[1:], rho[None, :, None], q)).sum(-1)  # [density_probes * (G + 1), K]
    mass = phi.view(spec.density_probes, len(parts), K).mean(0)
    total = mass.sum(0)
    out["near_zero_frac"] = total / P
    out["near_zero_halfwidth"] = rho * (1 - 0.5 ** (1 / q)) ** 0.5  # |lambda| where the window is 1/2
    for i, g in enumerate(fractions):
        out[f"near_zero_share_{g}"] = mass[i] / total
        out[f"param_share_{g}"] = fractions[g].sum(-1) / P
    return out


def window_degree(steps: int) -> int:
    """``q``: the largest even power with ``2q < 2 * steps`` (Gauss quadrature of ``steps`` nodes is exact
    for polynomials of degree below ``2 * steps``)."""
    return max(2, 2 * ((steps - 1) // 2))


def near_zero_window(lam: torch.Tensor, rho: torch.Tensor | float, q: int) -> torch.Tensor:
    """``phi(lambda) = (1 - lambda^2 / rho^2)^q``: 1 at zero, 1/2 at ``|lambda| = rho sqrt(1 - 2^(-1/q))``
    (about ``rho sqrt(ln 2 / q)``), near 0 at ``|lambda| ~ rho``; non-negative (``q`` even)."""
    return (1 - (lam / rho).square()) ** q


def flatness_table(run_id: str, parent: str, seeds: tuple[int, ...], step: int, stats: dict[str, torch.Tensor],
                   extra: dict[str, torch.Tensor]) -> pd.DataFrame:
    """Tidy rows ``run, parent, member, step, statistic, index, value`` (``index``: the eigenvalue's
    rank, 0 = largest, for per-eigenvalue statistics; missing otherwise)."""
    rows = []
    for name, v in {**stats, **extra}.items():
        v = v.detach().double().cpu()
        for k, s in enumerate(seeds):
            if v.dim() == 2:
                rows += [(run_id, parent, s, step, name, i, float(x)) for i, x in enumerate(v[k])]
            else:
                rows.append((run_id, parent, s, step, name, None, float(v[k])))
    df = pd.DataFrame(rows, columns=["run", "parent", "member", "step", "statistic", "index", "value"])
    return df.astype({"member": "int64", "step": "int64", "index": "Int64", "value": "float64"})


def run_flatness(run: str | Path, spec: FlatnessProbe | dict | None = None, *, root: str | Path = "runs",
                 device: str = "auto", command: list[str] | None = None, **fields) -> Path:
    """Measure the Hessian of a finished run's training loss at ``at``; returns the probe's folder."""
    parent, pcfg, cfg = flatness_plan(run, spec, root, **fields)
    folder = parent.parent / cfg.run_id
    if is_complete(folder):
        return folder
    dev = pick_device(device)
    with locked(folder, "wait"):
        if is_complete(folder):  # another process finished it while this one waited
            return folder
        _measure(cfg, parent, pcfg, folder, dev, command)
    return folder


def _measure(cfg: ExperimentConfig, parent: Path, pcfg: ExperimentConfig, folder: Path, dev: torch.device,
             command: list[str] | None) -> None:
    p = cfg.probe
    step, state = weights_at(parent, p.at)
    rf = RunFolder(folder.parent, cfg)
    rf.begin(meta(cfg, dev, command), step, pcfg.total_steps, force=False)  # config, meta, status: running
    t0 = time.perf_counter()
    problem = build(pcfg.replace(training={"dtype": "float64"}), dev)  # the parent's data and students, in float64
    ens = problem.ens
    ens.load_state([t.to(dev, torch.float64) for t in state])
    loss, n = training_loss(problem, p.samples)
    K, P = ens.K, flatten(ens.trainable, ens.K).shape[1]
    aligned = aligned_nodes(parent, pcfg, problem.widths)
    fractions = group_fractions(ens, aligned)
    op = hvp_operator(loss, ens.trainable, chunk=8)
    gen = generator(p.seed, Stream.PROBE_FLATNESS)
    stats = flatness_stats(op, K, P, fractions, p, gen, torch.float64, dev)
    extra = {"aligned_nodes": sum(a.sum(1) for a in aligned).double(),
             "unaligned_nodes": sum((~a).sum(1) for a in aligned).double(),
             "params": torch.full((K,), float(P)), "samples": torch.full((K,), float(n))}
    table = flatness_table(cfg.run_id, parent.name, pcfg.student.seeds, step, stats, extra)
    write_parquet(folder / "flatness.parquet", table)
    rf.mark("finished", step, pcfg.total_steps, seconds=round(time.perf_counter() - t0, 3))
    write_json(folder / "probe.json", {"parent": parent.name, "kind": "flatness", "at": p.at, "step": step,
                                       "samples": n, "params": P})
