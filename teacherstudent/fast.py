"""Hand-written forward and backward for the plain ReLU ensemble (no BatchNorm).

Autograd on stacked weights spends a third of its time copying weight gradients that
come out transposed (``AccumulateGrad`` on a non-contiguous ``bmm`` result); writing
the backward by hand gives every gradient directly in the ``[K, n_out, n_in]`` layout of
its weight, reuses the forward buffers, and skips the graph bookkeeping. The autograd
path (``Ensemble.forward`` + ``loss.backward()``) is the tested reference.

Shapes: ``x_BxD`` shared input batch, ``h[l]: [K, B, n_l]``, ``out: [K, B, C]``.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def loss_and_grads(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each member's mean loss ``[K]`` and the gradients of their sum w.r.t. ``params``.

    ``params`` = ``[W_0, b_0, ..., W_out, b_out]`` stacked over members; ``loss`` is
    ``mse`` (mean over samples and outputs, ``y: [B, C]``) or ``ce`` (``y: [B]`` labels).
    """
    Ws, bs = params[0::2], params[1::2]
    L = len(Ws)
    acts: list[torch.Tensor] = []
    h = x_BxD
    for l in range(L - 1):
        z = torch.matmul(h, Ws[l].transpose(1, 2)) if l == 0 else torch.bmm(h, Ws[l].transpose(1, 2))
        z += bs[l][:, None, :]
        h = z.clamp_min_(0)
        acts.append(h)
    out = torch.baddbmm(bs[-1][:, None, :], h, Ws[-1].transpose(1, 2))
    B, C = out.shape[1], out.shape[2]
    if loss == "mse":
        diff = out.sub_(y)
        value = diff.square().mean((1, 2))
        g = diff.mul_(2.0 / (B * C))
    else:
        logp = torch.log_softmax(out, -1)
        value = -logp.gather(2, y.expand(out.shape[0], B)[..., None]).squeeze(2).mean(1)
        g = logp.exp_()
        g.scatter_add_(2, y.expand(out.shape[0], B)[..., None], torch.full_like(g[..., :1], -1.0))
        g.mul_(1.0 / B)
    grads: list[torch.Tensor] = [None] * (2 * L)  # type: ignore[list-item]
    for l in range(L - 1, -1, -1):
        h_in = acts[l - 1] if l > 0 else x_BxD
        gT = g.transpose(1, 2)
        grads[2 * l] = torch.bmm(gT, h_in) if l > 0 else torch.matmul(gT, h_in)
        grads[2 * l + 1] = g.sum(1)
        if l > 0:
            g = torch.ops.aten.threshold_backward(torch.bmm(g, Ws[l]), h_in, 0.0)  # ReLU mask, fused
    return value, grads


def members_per_chunk(widths: list[int], outputs: int, batch: int, itemsize: int, budget_bytes: float) -> int:
    """Members whose step activations (forward buffers and their gradients) fit ``budget_bytes``."""
    per_member = 3 * batch * (sum(widths) + outputs) * itemsize
    return max(1, int(budget_bytes // per_member))


def loss_and_grads_chunked(params: list[torch.Tensor], x_BxD: torch.Tensor, y: torch.Tensor, loss: str, chunk: int
                           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``loss_and_grads`` over members ``chunk`` at a time: the same numbers, bounded activation memory."""
    K = params[0].shape[0]
    if chunk >= K:
        return loss_and_grads(params, x_BxD, y, loss)
    grads = [torch.empty_like(p) for p in params]
    values = []
    for k0 in range(0, K, chunk):
        v, gs = loss_and_grads([p[k0:k0 + chunk] for p in params], x_BxD, y, loss)
        values.append(v)
        for dst, g in zip(grads, gs):
            dst[k0:k0 + chunk] = g
    return torch.cat(values), grads
