"""Re-initialisation probes at initialisation: a direct test of "luck" (docs/science.md §5).

Take the parent's initial students, re-randomise the fan-in (incoming weights and bias)
of chosen hidden nodes, and train again with the parent's data, order and schedule.
``nodes='winners'``: the parent's final winners ``j*(k)`` (the lucky nodes);
``nodes='random'``: as many nodes per member and layer, drawn from the nodes that did not
win (the control). Only the fan-in is redrawn: it decides a node's initial alignment
(its luck), while keeping the fan-out leaves every other node's input unchanged.
Fresh values come from the student initialiser with a seed derived from ``seed``.
The child's annotated tables say which nodes win instead (``winner_parent_node`` against
``parent_winner``) and how much later each teacher node is recovered.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..architectures import ARCHITECTURES
from ..config import ExperimentConfig, ReinitProbe, probe_config
from ..ensemble import Ensemble
from ..errors import UserError
from ..seeds import Stream, generator
from .. import simulate
from ..simulate import RunOptions, pick_device
from . import report
from .lottery import Progress
from .rewind import checkpoint_state, fresh_params
from .runs import annotate, child_config, finished_parent, is_complete

def choose(nodes: str, lucky_masks: list[torch.Tensor], layers: list[int], seeds: tuple[int, ...],
           seed: int) -> list[torch.Tensor]:
    """Masks ``[K, n_l]`` of the nodes to re-randomise in each hidden layer."""
    out = []
    for l, lm in enumerate(lucky_masks):
        chosen = torch.zeros_like(lm)
        if l in layers:
            if nodes == "winners":
                chosen = lm.clone()
            else:
                for k, s in enumerate(seeds):
                    pool = (~lm[k]).nonzero().flatten()
                    c = int(lm[k].sum())
                    if c > len(pool):
                        raise UserError(f"layer {l} of member {s} has {c} winners but only {len(pool)} other nodes to draw from")
                    pick = torch.randperm(len(pool), generator=generator(seed, Stream.PROBE_CHOICE, s, l))[:c]
                    chosen[k, pool[pick]] = True
        out.append(chosen)
    return out


def reinit_plan(run: str | Path, spec: ReinitProbe | dict | None = None, root: str | Path = "runs",
                overrides: list[str] | None = None, **fields) -> tuple[Path, ExperimentConfig, ExperimentConfig]:
    """The parent and the child config of the probe ``spec`` (a ``ReinitProbe``, or its fields:
    ``nodes``, ``layers``, ``seed``), all checked."""
    parent, pcfg = finished_parent(run, root)
    spec = probe_config(ReinitProbe, spec, **fields, parent=parent.name)
    L = len(pcfg.teacher.widths)
    if spec.layers is not None and max(spec.layers) >= L:
        raise UserError(f"probe.layers must list hidden layers among 0..{L - 1}, got {list(spec.layers)}")
    return parent, pcfg, child_config(pcfg, spec.model_dump(mode="json"), overrides)


def run_reinit(run: str | Path, spec: ReinitProbe | dict | None = None, *, root: str | Path = "runs",
               device: str = "auto", overrides: list[str] | None = None, on_progress: Progress | None = None,
               command: list[str] | None = None, **fields) -> Path:
    """Re-randomise chosen nodes of the parent's initialisation and train again; returns the child folder."""
    parent, pcfg, cfg = reinit_plan(run, spec, root, overrides, **fields)
    p = cfg.probe
    nodes, layers, seed, L = p.nodes, p.layers, p.seed, len(pcfg.teacher.widths)
    pick_device(device)
    folder = parent.parent / cfg.run_id
    if is_complete(folder):
        return folder
    seeds, widths = pcfg.student.seeds, [pcfg.student.multiplier * m for m in pcfg.teacher.widths]
    lucky_masks, winners = report.lucky(parent, seeds, widths)
    chosen = choose(nodes, lucky_masks, layers if layers is not None else list(range(L)), seeds, seed)

    def init_ensemble(dev: torch.device, dtype: torch.dtype) -> Ensemble:
        state = [t.clone() for t in checkpoint_state(parent, 0)]
        fresh = fresh_params(pcfg, widths, seed, 0)
        for l, c in enumerate(chosen):
            w, b = state[2 * l], state[2 * l + 1]
            state[2 * l] = torch.where(c.reshape(*c.shape, *(1,) * (w.dim() - 2)), fresh[2 * l].to(w.dtype), w)
            state[2 * l + 1] = torch.where(c, fresh[2 * l + 1].to(b.dtype), b)
        ens = ARCHITECTURES[pcfg.arch].ensemble(pcfg, [t.to(dev, dtype).clone() for t in state[:2 * (L + 1)]],
                                                pcfg.student.batchnorm)
        ens.load_state([t.to(dev, dtype) for t in state])
        return ens

    label = report.describe_probe(cfg.model_dump(mode="json")["probe"])
    progress = (lambda s, t: on_progress(label, s, t)) if on_progress else None
    folder = simulate.run(cfg, RunOptions(parent.parent, device, command, on_progress=progress), init_ensemble)
    rows = report.selection_rows(cfg.run_id, seeds, "reinit", chosen, lucky_masks, winners)
    node_map = [torch.arange(n).repeat(len(seeds), 1) for n in widths]
    info = {"parent": parent.name, "kind": "reinit", "reinit_nodes": [c.sum(1).tolist() for c in chosen]}
    annotate(folder, parent, node_map, {"reinit": chosen}, rows, info, {})
    return folder
