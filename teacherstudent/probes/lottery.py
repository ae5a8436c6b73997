"""Lottery-ticket probes: prune a finished run, rewind, retrain (docs/science.md §5).

``run_lottery(parent, keep, by, ...)`` makes ``rounds`` child runs. Round ``r`` scores the
nodes (or weights) of the previous round's trained students (round 1: the parent's),
keeps ``keep ** (r / rounds)`` of the parent's nodes (weights), and trains the pruned
students from the rewind point of the *parent* (``init``, ``step:K``, ``rescaled``) or
from fresh weights (``reinit``) with the parent's data, order and schedule. Node
pruning removes nodes for real (narrower matrices); weight pruning keeps masks applied.
Late rewinding starts the parent's schedule afresh from the step-``K`` weights.
A finished probe is reused, not trained again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..architectures import ARCHITECTURES
from ..config import ExperimentConfig, LotteryProbe, probe_config
from ..ensemble import Ensemble
from ..errors import UserError
from ..inputs import input_dim
from .. import simulate
from ..simulate import RunOptions, pick_device
from ..folder import load_torch
from . import report
from .prune import MaskedEnsemble, fan_in_of_masks, fan_in_of_nodes, node_masks, rescale, widths_of
from .rewind import checkpoint_state, fresh_params, rewind_step
from .runs import annotate, child_config, finished_parent, is_complete, load_probe
from .select import alignment_scores, random_scores, select_nodes, select_weights

Progress = Callable[[str, int, int], None]


def lottery_configs(parent: Path, parent_cfg: ExperimentConfig, spec: LotteryProbe,
                    overrides: list[str] | None = None) -> list[ExperimentConfig]:
    """The child configs of every round, after checking that the parent kept the rewind
    checkpoint (nothing is run)."""
    step = rewind_step(spec.rewind)
    if step:
        checkpoint_state(parent, step)
    base = spec.model_dump(mode="json", exclude={"round"})
    return [child_config(parent_cfg, {**base, "round": r}, overrides) for r in range(1, spec.rounds + 1)]


def lottery_plan(run: str | Path, spec: LotteryProbe | dict | None = None, root: str | Path = "runs",
                 overrides: list[str] | None = None, **fields) -> tuple[Path, ExperimentConfig, list[ExperimentConfig]]:
    """The parent and the child config of every round of the probe ``spec`` (a ``LotteryProbe``,
    or its fields: ``keep``, ``by``, ``scope``, ``rewind``, ``rounds``, ``seed``), all checked."""
    parent, pcfg = finished_parent(run, root)
    spec = probe_config(LotteryProbe, spec, **fields, parent=parent.name)
    if pcfg.arch == "conv" and spec.by == "magnitude":
        raise UserError(f"{parent.name} has convolutional students: prune channels with --by fanout, alignment or "
                        "random (weight-level magnitude pruning is for arch='mlp' runs)")
    return parent, pcfg, lottery_configs(parent, pcfg, spec, overrides)


def run_lottery(run: str | Path, spec: LotteryProbe | dict | None = None, *, root: str | Path = "runs",
                device: str = "auto", overrides: list[str] | None = None, on_progress: Progress | None = None,
                command: list[str] | None = None, **fields) -> list[Path]:
    """Prune, rewind and retrain a finished run; returns the child run folder of every round."""
    parent, pcfg, cfgs = lottery_plan(run, spec, root, overrides, **fields)
    pick_device(device)
    folders, source = [], parent
    for cfg in cfgs:
        folder = parent.parent / cfg.run_id
        if not is_complete(folder):
            _round(cfg, parent, pcfg, source, device, on_progress, command)
        folders.append(folder)
        source = folder
    return folders


def _round(cfg: ExperimentConfig, parent: Path, pcfg: ExperimentConfig, source: Path, device: str,
           on_progress: Progress | None, command: list[str] | None) -> None:
    p = cfg.probe
    L, seeds, bn = len(pcfg.teacher.widths), pcfg.student.seeds, pcfg.student.batchnorm
    arch = ARCHITECTURES[pcfg.arch]  # conv: nodes are channels
    widths = [pcfg.student.multiplier * m for m in pcfg.teacher.widths]
    d, outputs = input_dim(pcfg.inputs, pcfg.teacher.d), pcfg.teacher.outputs
    keep_r = p.keep ** (p.round / p.rounds)
    prev = load_probe(source) if source != parent else None
    src = load_torch(source / "checkpoints" / "final.pt")["weights"][:2 * (L + 1)]
    masks = kept = None
    if p.by == "magnitude":
        masks = select_weights(src[0::2], keep_r, p.scope, prev["masks"] if prev else None)
        chosen = [masks[l].any(2) & masks[l + 1].any(1) for l in range(L)]  # nodes with fan-in and fan-out left
        node_map = [torch.arange(n).repeat(len(seeds), 1) for n in widths]
        extra_rows = {"kept_weight_frac": [m.double().mean((1, 2)) for m in masks[:L]]}
    else:
        scores = {"fanout": lambda: arch.fanout(src), "alignment": lambda: alignment_scores(source, p.rule),
                  "random": lambda: random_scores(widths_of(src), seeds, p.seed, p.round)}[p.by]()
        idx = select_nodes(scores, keep_r, p.scope, widths)
        kept = [prev["node_map"][l].gather(1, i) if prev else i for l, i in enumerate(idx)]
        chosen, node_map, extra_rows = node_masks(kept, widths), kept, None

    def init_ensemble(dev: torch.device, dtype: torch.dtype) -> Ensemble:
        if p.rewind == "reinit":
            state = fresh_params(pcfg, widths if masks is not None else [k.shape[1] for k in kept], p.seed, p.round)
            fresh_bn = True
        else:
            state = checkpoint_state(parent, rewind_step(p.rewind))
            if kept is not None:
                state = arch.prune(state, kept, bn)
            if p.rewind == "rescaled":
                fan_kept = fan_in_of_masks(masks) if masks is not None else fan_in_of_nodes(kept, d, outputs)
                state = rescale(state[:2 * (L + 1)], [d, *widths], fan_kept) + state[2 * (L + 1):]
            fresh_bn = False
        params = [t.to(dev, dtype).clone() for t in state[:2 * (L + 1)]]
        ens = MaskedEnsemble(params, bn, masks) if masks is not None else arch.ensemble(pcfg, params, bn)
        if not fresh_bn:
            ens.load_state([t.to(dev, dtype) for t in state])
            if masks is not None:
                ens.after_step()
        return ens

    label = report.describe_probe(cfg.model_dump(mode="json")["probe"])
    progress = (lambda s, t: on_progress(label, s, t)) if on_progress else None
    folder = simulate.run(cfg, RunOptions(parent.parent, device, command, on_progress=progress), init_ensemble)
    lucky_masks, winners = report.lucky(parent, seeds, widths)
    rows = report.selection_rows(cfg.run_id, seeds, "kept", chosen, lucky_masks, winners, extra_rows)
    info = {"parent": parent.name, "source": source.name, "kind": "lottery", "round": p.round, "keep_this_round": keep_r,
            "kept_nodes": [c.sum(1).tolist() for c in chosen], "physical_widths": [n.shape[1] for n in node_map]}
    annotate(folder, parent, node_map, {"kept": chosen}, rows, info, {"masks": masks, "kept": kept})
