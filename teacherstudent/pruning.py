"""Physically smaller students: the rows and columns of the nodes (channels) that stay.

An ensemble state is ``[W_0, b_0, ..., W_out, b_out]`` (``W_l: [K, n_l, n_{l-1}]``),
followed with BatchNorm by ``gamma_0, beta_0, ...`` and ``mean_0, var_0, ...`` (``[K, n_l]``).
``kept[l]``: ``[K, c_l]`` indices of the hidden nodes of layer ``l`` that stay. The
architectures (architectures.py) prune through these; the lottery probe (probes/prune.py)
builds on them.
"""

from __future__ import annotations

import torch


def fanout_scores(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """``||W_{l+1}[:, j]||`` of every hidden node, ``[K, n_l]`` per layer, from ``[W_0, b_0, ...]``."""
    return [w.double().norm(dim=1) for w in params[2::2]]


def split_state(state: list[torch.Tensor], layers: int, batchnorm: bool) -> tuple[list, list, list]:
    """``(params, bn_params, bn_buffers)`` of a state with ``layers`` hidden layers."""
    n_params = 2 * (layers + 1)
    n_bn = 2 * layers if batchnorm else 0
    if len(state) != n_params + 2 * n_bn:
        raise ValueError(f"a state with {layers} hidden layers has {n_params + 2 * n_bn} tensors, got {len(state)}")
    return state[:n_params], state[n_params:n_params + n_bn], state[n_params + n_bn:]


def _rows(t: torch.Tensor, idx_KxC: torch.Tensor) -> torch.Tensor:
    """``t[k, idx[k]]`` along dim 1 for ``[K, n]`` or ``[K, n, i]`` tensors."""
    if t.dim() == 2:
        return t.gather(1, idx_KxC)
    return t.gather(1, idx_KxC[..., None].expand(-1, -1, t.shape[2]))


def prune_nodes(state: list[torch.Tensor], kept: list[torch.Tensor], batchnorm: bool = False) -> list[torch.Tensor]:
    """The physically smaller state keeping nodes ``kept`` (new tensors; ``state`` untouched)."""
    params, bn_params, bn_buffers = split_state(state, len(kept), batchnorm)
    out = []
    for l in range(len(kept) + 1):
        w, b = params[2 * l], params[2 * l + 1]
        if l < len(kept):
            w, b = _rows(w, kept[l]), _rows(b, kept[l])
        if l > 0:
            idx = kept[l - 1].to(w.device)
            w = w.gather(2, idx[:, None, :].expand(-1, w.shape[1], -1))
        out += [w.clone(), b.clone()]
    per_node = [_rows(t, kept[i // 2]).clone() for i, t in enumerate(bn_params)]
    per_node += [_rows(t, kept[i // 2]).clone() for i, t in enumerate(bn_buffers)]
    return out + per_node


def prune_channels(state: list[torch.Tensor], kept: list[torch.Tensor], batchnorm: bool = False) -> list[torch.Tensor]:
    """``prune_nodes`` for convolutional students (arch='conv', conv.py): channel ``j`` of layer ``l``
    is ``W_l[:, j]`` (out-channel), ``b_l[:, j]`` and ``W_{l+1}[:, :, j]`` (in-channel), or for the last
    conv layer the readout columns ``j*P .. (j+1)*P - 1``; new tensors, ``state`` untouched."""
    params, bn_params, bn_buffers = split_state(state, len(kept), batchnorm)
    out = []
    for l in range(len(kept) + 1):
        w, b = params[2 * l], params[2 * l + 1]
        K = w.shape[0]
        if l < len(kept):
            idx = kept[l].to(w.device)
            w = w.gather(1, idx.reshape(K, -1, 1, 1, 1).expand(-1, -1, *w.shape[2:]))
            b = b.gather(1, idx)
        if l > 0:
            idx = kept[l - 1].to(w.device)
            c = idx.shape[1]
            if w.dim() == 5:
                w = w.gather(2, idx.reshape(K, 1, c, 1, 1).expand(-1, w.shape[1], -1, *w.shape[3:]))
            else:  # the readout: every position of a kept channel
                n = params[2 * (l - 1)].shape[1]
                rows, P = w.shape[1], w.shape[2] // n
                w = w.reshape(K, rows, n, P).gather(2, idx.reshape(K, 1, c, 1).expand(-1, rows, -1, P)).reshape(K, rows, c * P)
        out += [w.clone(), b.clone()]
    per_node = [_rows(t, kept[i // 2]).clone() for i, t in enumerate(bn_params)]
    per_node += [_rows(t, kept[i // 2]).clone() for i, t in enumerate(bn_buffers)]
    return out + per_node
