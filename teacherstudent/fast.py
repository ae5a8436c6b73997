"""Hand-written forward and backward for the plain ReLU ensemble (no BatchNorm).

Autograd on stacked weights spends a third of its time copying weight gradients that
come out transposed (``AccumulateGrad`` on a non-contiguous ``bmm`` result); writing
the backward by hand gives every gradient directly in the ``[K, n_out, n_in]`` layout of
its weight, reuses the forward buffers, and skips the graph bookkeeping. The autograd
path (``Ensemble.forward`` + ``loss.backward()``) is the tested reference.

With plain SGD (no momentum, no weight decay) the update itself goes into the backward
(``sgd_step``): each weight gradient is accumulated straight into its weight by one
``baddbmm_``, so no gradient is stored and the optimiser's extra pass over the weights
is gone. Other optimisers get the gradients in reused buffers (``loss_and_grads``) and
step through ``torch.optim``.

With ``mm_dtype`` (``training.precision='bf16'``: ``torch.bfloat16``) every matmul of the step runs
in that dtype: the weights are cast at the start of the step, the activations and the backward
signal are kept in it, and the loss, the weight gradients' accumulation into the weights and the
bias gradients stay in the weights' own dtype (float32 "master" weights); the output itself comes out of
a bfloat16 matmul, so the loss sees it rounded to 8 bits. The update then cannot go
into the weight-gradient matmul (``baddbmm_`` needs one dtype), so it is one ``add_`` per weight.

Shapes: ``x_BxD`` shared input batch, ``h[l]: [K, B, n_l]``, ``out: [K, B, C]``.
"""

from __future__ import annotations

import torch


def loss_and_grads(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str,
                   out: list[torch.Tensor] | None = None, masks: list[torch.Tensor] | None = None,
                   smoothing: float = 0.0, mm_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each member's mean loss ``[K]`` and the gradients of their sum w.r.t. ``params``.

    ``params`` = ``[W_0, b_0, ..., W_out, b_out]`` stacked over members; ``loss`` is
    ``mse`` (mean over samples and outputs, ``y: [B, C]``) or ``ce`` (``y: [B]`` labels).
    ``out``, buffers shaped like ``params``, receives the gradients: reusing them step after
    step matters on CPU, where a fresh gradient of tens of MB is a fresh ``mmap`` whose pages
    fault in on every step (the weight-gradient ``bmm`` of the papers' large widths ran at a
    third of its speed that way). ``masks``: dropout masks ``[K, B, n_l]`` per hidden layer
    (0 or ``1 / (1 - p)``), multiplied into each hidden layer's post-activations;
    ``smoothing``: the cross-entropy's label smoothing; ``mm_dtype``: the matmuls' dtype (module docstring).
    """
    grads = out if out is not None else [torch.empty_like(p) for p in params]
    return _forward_backward(params, x_BxD, y, loss, grads, None, masks, smoothing, mm_dtype), grads


def sgd_step(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str, lr: float | tuple,
             masks: list[torch.Tensor] | None = None, smoothing: float = 0.0, mm_dtype: torch.dtype | None = None
             ) -> torch.Tensor:
    """One plain SGD step (no momentum, no weight decay) in place; returns each member's loss ``[K]``.

    The update goes into the weight-gradient matmul (``W.baddbmm_(g^T, h, alpha=-lr)``), so
    no gradient is written and read back: the optimiser's separate pass over every weight
    was a tenth of the step. Each ``W_l`` is used for the gradient below it before it moves.
    Equal to ``loss_and_grads`` followed by ``torch.optim.SGD`` up to float rounding. ``lr``: one
    rate, or ``(k0, k1, rate)`` segments covering the members (per-member rates, widepack.py).
    """
    return _forward_backward(params, x_BxD, y, loss, None, lr, masks, smoothing, mm_dtype)


@torch.no_grad()
def _forward_backward(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str,
                      grads: list[torch.Tensor] | None, lr: float | tuple | None, masks: list[torch.Tensor] | None = None,
                      smoothing: float = 0.0, mm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Forward, loss and backward; gradients go to ``grads``, or (``lr`` given) straight into the weights."""
    masters, master_bs = params[0::2], params[1::2]  # what the update goes into
    mixed = mm_dtype is not None and mm_dtype != masters[0].dtype
    if mixed:  # this step's weights, biases and input in the matmul dtype
        params = [p.to(mm_dtype) for p in params]
        x_BxD = x_BxD.to(mm_dtype)
    Ws, bs = params[0::2], params[1::2]
    L = len(Ws)
    acts: list[torch.Tensor] = []
    h = x_BxD
    for l in range(L - 1):
        z = torch.matmul(h, Ws[l].transpose(1, 2)) if l == 0 else torch.bmm(h, Ws[l].transpose(1, 2))
        z += bs[l][:, None, :]
        h = z.clamp_min_(0)
        if masks is not None:
            h.mul_(masks[l])  # dropout: the ReLU mask below (threshold_backward on h) covers dropped nodes too
        acts.append(h)
    pred = torch.baddbmm(bs[-1][:, None, :], h, Ws[-1].transpose(1, 2))
    if mixed:
        pred = pred.to(masters[0].dtype)  # the loss and its gradient in the weights' dtype
    B, C = pred.shape[1], pred.shape[2]
    if loss == "mse":
        diff = pred.sub_(y)
        value = diff.square().mean((1, 2))
        g = diff.mul_(2.0 / (B * C))
    elif loss == "mse_half_sum":  # (1/2B) sum_b ||y_b - pred_b||^2 (training.loss_reduction='half_sum')
        diff = pred.sub_(y)
        value = diff.square().sum((1, 2)) / (2 * B)
        g = diff.mul_(1.0 / B)
    else:
        logp = torch.log_softmax(pred, -1)
        nll = -logp.gather(2, y.expand(pred.shape[0], B)[..., None]).squeeze(2)
        if smoothing:  # F.cross_entropy(label_smoothing=eps): (1 - eps) * nll + eps * mean over classes of -logp
            value = ((1 - smoothing) * nll - smoothing / C * logp.sum(2)).mean(1)
        else:
            value = nll.mean(1)
        g = logp.exp_()
        g.scatter_add_(2, y.expand(pred.shape[0], B)[..., None], torch.full_like(g[..., :1], -(1.0 - smoothing)))
        if smoothing:
            g.sub_(smoothing / C)
        g.mul_(1.0 / B)
    if mixed:
        g = g.to(mm_dtype)
    for l in range(L - 1, -1, -1):
        h_in = acts[l - 1] if l > 0 else x_BxD
        gT = g.transpose(1, 2)
        g_below = torch.ops.aten.threshold_backward(torch.bmm(g, Ws[l]), h_in, 0.0) if l > 0 else None  # ReLU mask, fused
        if masks is not None and l > 0:
            g_below.mul_(masks[l - 1])
        if grads is not None and mixed:
            grads[2 * l].copy_(torch.bmm(gT, h_in) if l > 0 else torch.matmul(gT, h_in))
            torch.sum(g, 1, dtype=grads[2 * l + 1].dtype, out=grads[2 * l + 1])
        elif grads is not None:
            if l > 0:
                torch.bmm(gT, h_in, out=grads[2 * l])
            else:
                torch.matmul(gT, h_in, out=grads[2 * l])
            torch.sum(g, 1, out=grads[2 * l + 1])
        else:  # the update goes into the masters (the weights themselves unless mixed)
            K = Ws[l].shape[0]
            for k0, k1, a in _segments(lr, K):
                whole = k1 - k0 == K  # one rate: the very calls of a plain run
                W, b, gs, gTs = ((masters[l], master_bs[l], g, gT) if whole
                                 else (masters[l][k0:k1], master_bs[l][k0:k1], g[k0:k1], gT[k0:k1]))
                if l > 0 and not mixed:
                    W.baddbmm_(gTs, h_in if whole else h_in[k0:k1], alpha=-a)
                elif l > 0:  # baddbmm_ needs one dtype: the bfloat16 gradient is added to the masters
                    W.add_(torch.bmm(gTs, h_in if whole else h_in[k0:k1]), alpha=-a)
                else:
                    W.add_(torch.matmul(gTs, h_in), alpha=-a)  # x is shared over members: [K, n, B] @ [B, d]
                b.add_(gs.sum(1, dtype=b.dtype) if mixed else gs.sum(1), alpha=-a)
        g = g_below
    return value


def _segments(lr, K: int) -> tuple[tuple[int, int, float], ...]:
    """``lr`` as ``(k0, k1, rate)`` segments covering members ``0..K-1``: one rate is one segment.
    Per-member rates (a wide pack, widepack.py) update each segment by its own ``baddbmm_``, whose
    batch is that segment's members: the same call a run of those members alone makes."""
    return ((0, K, lr),) if isinstance(lr, (int, float)) else lr


def _clip(lr, k0: int, k1: int):
    """The segments of members ``k0..k1-1``, renumbered from 0 (a chunk of members)."""
    if isinstance(lr, (int, float)):
        return lr
    return tuple((max(a, k0) - k0, min(b, k1) - k0, r) for a, b, r in lr if a < k1 and b > k0)


def members_per_chunk(widths: list[int], outputs: int, batch: int, itemsize: int, budget_bytes: float) -> int:
    """Members whose step activations (forward buffers and their gradients) fit ``budget_bytes``."""
    per_member = 3 * batch * (sum(widths) + outputs) * itemsize
    return max(1, int(budget_bytes // per_member))


def member_targets(y: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
    """Targets of members ``k0:k1``: shared ``[B, C]`` / ``[B]`` as they are, per-member
    ``[K, B, C]`` / ``[K, B]`` (one teacher per member) sliced."""
    stacked = y.dim() == 3 or (y.dim() == 2 and y.dtype == torch.long)
    return y[k0:k1] if stacked else y


def member_ranges(K: int, chunk: int, groups: tuple[tuple[int, int], ...] | None = None) -> list[tuple[int, int]]:
    """The ``(k0, k1)`` member ranges a chunked step computes one after another: ``chunk`` members at a
    time, within each of ``groups`` (default: all ``K`` members as one group; a wide pack computes each
    one-member run as its own group, since MKL rounds a batch-1 matmul differently from a larger batch)."""
    return [(k0, min(k0 + chunk, g1)) for g0, g1 in (groups or ((0, K),)) for k0 in range(g0, g1, chunk)]


def loss_and_grads_chunked(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str, chunk: int,
                           out: list[torch.Tensor] | None = None, masks: list[torch.Tensor] | None = None,
                           smoothing: float = 0.0, groups: tuple[tuple[int, int], ...] | None = None,
                           mm_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``loss_and_grads`` over members ``chunk`` at a time (and ``groups``, see ``member_ranges``): bounded
    activation memory, the same numbers up to float rounding (a batched matmul over fewer members may
    be split over threads differently)."""
    K = params[0].shape[0]
    grads = out if out is not None else [torch.empty_like(p) for p in params]
    ranges = member_ranges(K, chunk, groups)
    if len(ranges) == 1:
        return loss_and_grads(params, x_BxD, y, loss, grads, masks, smoothing, mm_dtype)
    values = []
    for k0, k1 in ranges:  # slices along dim 0 of contiguous buffers are contiguous: written in place
        v, _ = loss_and_grads([p[k0:k1] for p in params], x_BxD, member_targets(y, k0, k1), loss,
                              [g[k0:k1] for g in grads], _rows(masks, k0, k1), smoothing, mm_dtype)
        values.append(v)
    return torch.cat(values), grads


def sgd_step_chunked(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str, lr: float | tuple,
                     chunk: int, masks: list[torch.Tensor] | None = None, smoothing: float = 0.0,
                     groups: tuple[tuple[int, int], ...] | None = None, mm_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``sgd_step`` over members ``chunk`` at a time (and ``groups``; each member's update is its own)."""
    K = params[0].shape[0]
    ranges = member_ranges(K, chunk, groups)
    if len(ranges) == 1:
        return sgd_step(params, x_BxD, y, loss, lr, masks, smoothing, mm_dtype)
    return torch.cat([sgd_step([p[k0:k1] for p in params], x_BxD, member_targets(y, k0, k1), loss, _clip(lr, k0, k1),
                               _rows(masks, k0, k1), smoothing, mm_dtype)
                      for k0, k1 in ranges])


def _rows(masks: list[torch.Tensor] | None, k0: int, k1: int) -> list[torch.Tensor] | None:
    return None if masks is None else [m[k0:k1] for m in masks]
