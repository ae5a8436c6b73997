"""What a lottery probe keeps (docs/science.md §5).

Node level (structured): every hidden student node gets a score, ``[K, n_l]`` per layer,
and the highest-scoring nodes are kept. ``count(keep, n)`` is ``keep * n`` rounded half
up (2.5 -> 3, 4.5 -> 5: not Python's ``round``, which rounds half to even), at least 1 and
at most ``n``. ``scope='layer'`` keeps ``count(keep, n_l)`` nodes of every layer;
``scope='global'`` keeps ``count(keep, sum_l n_l)`` nodes of all hidden layers ranked
together (each layer keeps at least one). The ensemble stays stacked, so with ``global``
the number kept per layer is the members' mean of their own global choice
(largest-remainder rounding), and each member keeps its own top nodes per layer; with
one member this is exactly the global top set.

Weight level (unstructured, Frankle & Carbin): a boolean mask per weight matrix (output
layer included, biases never pruned) keeping the largest ``|W|``, per matrix or over all
matrices together; masks may differ between members.

Ties go to the lower index; kept node indices come back sorted ascending.
Scores: ``fanout`` the fan-out norm ``||W_{l+1}[:, j]||``, ``alignment`` the best
correlation ``max_k C_l[k, j]`` (both at the end of the source run), ``random`` uniform
draws from an explicit seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..seeds import Stream, generator
from ..errors import UserError
from ..pruning import fanout_scores  # noqa: F401 (moved to teacherstudent/pruning.py)

NODE_RULES = ("fanout", "alignment", "random")
WEIGHT_RULES = ("magnitude",)
RULES = NODE_RULES + WEIGHT_RULES
SCOPES = ("layer", "global")


def count(keep: float, n: int) -> int:
    """How many of ``n`` items a keep fraction keeps: ``keep * n`` rounded half up (0.25 of 10
    -> 3, where ``round`` would give 2), at least 1, at most ``n``."""
    return max(1, min(n, math.floor(keep * n + 0.5)))


# ---- scores -----------------------------------------------------------------

def alignment_scores(folder: Path, rule: str = "top") -> list[torch.Tensor]:
    """Best correlation with any teacher node at the last measured step, ``[K, n_l]`` per layer.

    ``rule='winners_first'``: every teacher node's winner (the student with the highest
    correlation to it) ranks above every other node (+2), so a keep fraction keeps the
    winners first, then the rest by best correlation. ``top``: by best correlation only.
    """
    with np.load(folder / "corr.npz") as z:
        keys = [k for k in z.files if k.startswith("step_")]
        last = max(int(k.split("_")[1]) for k in keys)
        layers = sorted(int(k.rsplit("_", 1)[1]) for k in keys if int(k.split("_")[1]) == last)
        out = []
        for l in layers:
            C = torch.from_numpy(z[f"step_{last}_layer_{l}"]).double()  # [K, m, n]
            score = C.max(1).values
            if rule == "winners_first":
                winners = torch.zeros_like(score, dtype=torch.bool).scatter_(1, C.argmax(2), True)
                score = score + 2.0 * winners
            out.append(score)
        return out


def random_scores(widths: list[int], seeds: tuple[int, ...], probe_seed: int, round_: int) -> list[torch.Tensor]:
    """Uniform scores, one independent stream per (probe seed, member seed, layer, round)."""
    return [torch.stack([torch.rand(n, generator=generator(probe_seed, Stream.PROBE_RANDOM, s, l, round_), dtype=torch.float64)
                         for s in seeds]) for l, n in enumerate(widths)]


# ---- node selection -----------------------------------------------------------

def top_nodes(scores_KxN: torch.Tensor, c: int) -> torch.Tensor:
    """Indices ``[K, c]`` of the ``c`` highest scores of each member, sorted ascending."""
    order = torch.sort(scores_KxN, dim=1, descending=True, stable=True).indices
    return order[:, :c].sort(dim=1).values


def _global_counts(scores: list[torch.Tensor], total: int) -> list[int]:
    """Per-layer counts: each member's best ``total`` nodes over all layers (at least one
    per layer: every layer's best node first, then the best of the rest), averaged over
    members and rounded so that they sum to ``total``."""
    L = len(scores)
    K = scores[0].shape[0]
    layer_of = torch.cat([torch.full((s.shape[1],), l) for l, s in enumerate(scores)])
    per_member = torch.zeros(K, L, dtype=torch.float64)
    for k in range(K):
        flat = torch.cat([s[k] for s in scores])
        chosen = torch.zeros(flat.shape[0], dtype=torch.bool)
        offset = 0
        for s in scores:  # each layer's best node is in any optimal set
            chosen[offset + top_nodes(s[k:k + 1], 1)[0, 0]] = True
            offset += s.shape[1]
        rest = torch.where(chosen, -math.inf, flat)
        order = torch.sort(rest, descending=True, stable=True).indices
        chosen[order[:total - L]] = True
        per_member[k] = torch.bincount(layer_of[chosen], minlength=L).double()
    mean = per_member.mean(0)
    counts = mean.floor().long()
    short = total - int(counts.sum())
    frac_order = torch.sort(mean - counts, descending=True, stable=True).indices
    counts[frac_order[:short]] += 1
    return counts.tolist()


def select_nodes(scores: list[torch.Tensor], keep: float, scope: str, root_widths: list[int]) -> list[torch.Tensor]:
    """Kept node indices ``[K, c_l]`` per hidden layer (indices into ``scores``' nodes).

    ``keep`` is a fraction of the original (root) widths ``root_widths``; the scored
    nodes may already be a pruned subset (iterative pruning).
    """
    if scope == "layer":
        counts = [min(count(keep, n0), s.shape[1]) for n0, s in zip(root_widths, scores)]
    elif scope == "global":
        total = min(count(keep, sum(root_widths)), sum(s.shape[1] for s in scores))
        counts = _global_counts(scores, max(total, len(scores)))
    else:
        raise UserError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    return [top_nodes(s, c) for s, c in zip(scores, counts)]


# ---- weight selection -----------------------------------------------------------

def _top_mask(scores_KxN: torch.Tensor, c: int) -> torch.Tensor:
    mask = torch.zeros_like(scores_KxN, dtype=torch.bool)
    return mask.scatter_(1, top_nodes(scores_KxN, c), True)


def select_weights(weights: list[torch.Tensor], keep: float, scope: str,
                   alive: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Masks (bool, shaped like each ``[K, out, in]`` weight) keeping the largest ``|W|``.

    ``alive``: masks of weights still present (iterative pruning); pruned weights are
    never chosen again. Counts are fractions of the full matrices.
    """
    K = weights[0].shape[0]
    scores = [w.detach().double().abs().reshape(K, -1) for w in weights]
    if alive is not None:
        scores = [torch.where(a.reshape(K, -1), s, -math.inf) for s, a in zip(scores, alive)]
    if scope == "layer":
        masks = [_top_mask(s, count(keep, s.shape[1])) for s in scores]
    elif scope == "global":
        sizes = [s.shape[1] for s in scores]
        flat = torch.cat(scores, 1)
        total = max(count(keep, flat.shape[1]), len(scores))
        mask = torch.zeros_like(flat, dtype=torch.bool)
        offset = 0
        for n in sizes:  # at least one weight per matrix, so the network stays connected
            best = top_nodes(flat[:, offset:offset + n], 1)[:, 0] + offset
            mask[torch.arange(K), best] = True
            offset += n
        rest = torch.where(mask, -math.inf, flat)
        order = torch.sort(rest, dim=1, descending=True, stable=True).indices[:, :total - len(sizes)]
        mask.scatter_(1, order, True)
        masks = list(torch.split(mask, sizes, dim=1))
    else:
        raise UserError(f"unknown scope {scope!r}; known: {', '.join(SCOPES)}")
    return [m.reshape(w.shape) for m, w in zip(masks, weights)]
