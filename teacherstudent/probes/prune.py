"""Pruned students: physically smaller (node level) or masked (weight level).

An ensemble state is ``[W_0, b_0, ..., W_out, b_out]`` (``W_l: [K, n_l, n_{l-1}]``),
followed with BatchNorm by ``gamma_0, beta_0, ...`` and ``mean_0, var_0, ...`` (``[K, n_l]``).
``kept[l]``: ``[K, c_l]`` indices of the hidden nodes of layer ``l`` that stay.

``prune_nodes`` removes the other nodes for real (rows of ``W_l``, ``b_l``, per-node
BatchNorm entries, columns of ``W_{l+1}``); ``mask_nodes`` zeroes the same entries of
the full-size state, the reference a pruned student must compute exactly.
``MaskedEnsemble`` keeps weight masks applied through training (re-applied after every
optimiser step).
"""

from __future__ import annotations

import torch

from ..ensemble import Ensemble
from ..pruning import _rows, prune_channels, prune_nodes, split_state  # noqa: F401 (moved to teacherstudent/pruning.py)


def node_masks(kept: list[torch.Tensor], widths: list[int]) -> list[torch.Tensor]:
    """Boolean ``[K, n_l]`` per layer: True for kept nodes."""
    return [torch.zeros(idx.shape[0], n, dtype=torch.bool).scatter_(1, idx, True) for idx, n in zip(kept, widths)]


def mask_nodes(state: list[torch.Tensor], kept: list[torch.Tensor], batchnorm: bool = False) -> list[torch.Tensor]:
    """Full-size copy of ``state`` with the pruned nodes' fan-in, bias, BatchNorm affine and fan-out zeroed."""
    params, bn_params, bn_buffers = split_state(state, len(kept), batchnorm)
    alive = node_masks(kept, [w.shape[1] for w in params[0:-2:2]])
    out = []
    for l in range(len(kept) + 1):
        w, b = params[2 * l].clone(), params[2 * l + 1].clone()
        if l < len(kept):
            a = alive[l].to(w.device)
            w, b = w * a[..., None], b * a
        if l > 0:
            w = w * alive[l - 1].to(w.device)[:, None, :]
        out += [w, b]
    out += [t * alive[i // 2].to(t.device) for i, t in enumerate(bn_params)]
    return out + [t.clone() for t in bn_buffers]


def rescale(params: list[torch.Tensor], fan_in_full: list[int], fan_in_kept: list[torch.Tensor]) -> list[torch.Tensor]:
    """Multiply every layer's rows (weights and bias) by ``sqrt(fan_in_full / fan_in_kept)``.

    Initial weights scale as ``1/sqrt(fan_in)`` (both ``pytorch`` and ``scaled`` init), so
    this gives kept initial weights the scale a layer of the pruned fan-in starts with.
    ``fan_in_kept[l]``: ``[K, n_l]`` inputs each row keeps (node pruning: ``c_{l-1}`` everywhere).
    """
    out = []
    for l, (full, kept) in enumerate(zip(fan_in_full, fan_in_kept)):
        w, b = params[2 * l], params[2 * l + 1]
        f = torch.sqrt(full / kept.clamp_min(1).to(torch.float64)).to(w.device, w.dtype)
        out += [w * f.reshape(*f.shape, *(1,) * (w.dim() - 2)), b * f]  # conv rows: [K, n, in, k, k]
    return out


class MaskedEnsemble(Ensemble):
    """Stacked students whose weights stay zero where ``masks`` (one per weight matrix,
    shaped like it) are False: applied at construction and after every optimiser step."""

    def __init__(self, params: list[torch.Tensor], batchnorm: bool, masks: list[torch.Tensor]):
        super().__init__(params, batchnorm)
        self.masks = [m.to(w.device, w.dtype) for m, w in zip(masks, self.weights, strict=True)]
        self.after_step()

    @torch.no_grad()
    def after_step(self) -> None:
        for w, m in zip(self.weights, self.masks):
            w.mul_(m)


def fan_in_of_masks(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Inputs each row keeps, ``[K, out]`` per weight matrix."""
    return [m.sum(-1) for m in masks]


def fan_in_of_nodes(kept: list[torch.Tensor], d: int, outputs: int) -> list[torch.Tensor]:
    """Inputs each row of the pruned student has, ``[K, rows]`` per layer."""
    K = kept[0].shape[0]
    rows = [idx.shape[1] for idx in kept] + [outputs]
    ins = [d] + [idx.shape[1] for idx in kept]
    return [torch.full((K, r), i) for r, i in zip(rows, ins)]


def widths_of(params: list[torch.Tensor]) -> list[int]:
    return [w.shape[1] for w in params[0:-2:2]]
