"""Hessian-vector products, Lanczos, Hutchinson and stochastic Lanczos quadrature, batched over members.

Glossary: ``K`` ensemble members, ``P`` parameters of one member (every trainable tensor
flattened and concatenated, member by member), ``S`` vectors per member handled together
(probes), ``m`` Lanczos steps, ``H_k`` the Hessian of member ``k``'s loss.

The ensemble's loss is the sum of its members' losses and member ``k``'s loss depends only on
member ``k``'s parameters, so the Hessian of the sum is block diagonal: one Hessian-vector
product of the summed loss with a stacked vector ``V_KxP`` gives every ``H_k v_k`` at once.
Every routine here works on ``[S, K, P]`` stacks and never mixes members.
"""

from __future__ import annotations

from typing import Callable

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]  # [S, K, P] -> [S, K, P]


def flatten(tensors: list[torch.Tensor], K: int) -> torch.Tensor:
    """``[K, P]``: each tensor ``[K, ...]`` flattened per member and concatenated."""
    return torch.cat([t.reshape(K, -1) for t in tensors], 1)


def unflatten(v_KxP: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """The inverse of ``flatten``: tensors shaped like ``like``."""
    out, i = [], 0
    for t in like:
        n = t[0].numel()
        out.append(v_KxP[:, i:i + n].reshape(t.shape))
        i += n
    return out


def hvp_operator(loss: Callable[[list[torch.Tensor]], torch.Tensor], params: list[torch.Tensor],
                 chunk: int | None = None) -> Operator:
    """``V -> H V`` for ``V: [S, K, P]``, ``H`` the Hessian of ``loss`` (a scalar: the sum of the
    members' losses) at ``params``. The gradient's graph is built once (double backward); each
    product is one backward pass through it, batched over the ``S`` vectors ``chunk`` at a time."""
    params = [p.detach().requires_grad_(True) for p in params]
    K = params[0].shape[0]
    with torch.enable_grad():
        grads = torch.autograd.grad(loss(params), params, create_graph=True)
    g = flatten(list(grads), K)

    def op(V: torch.Tensor) -> torch.Tensor:
        out = []
        for part in V.split(chunk or V.shape[0]):
            hv = torch.autograd.grad(g, params, grad_outputs=part, retain_graph=True, is_grads_batched=True)
            out.append(torch.cat([h.reshape(part.shape[0], K, -1) for h in hv], -1))
        return torch.cat(out)

    return op


def rademacher(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype, device) -> torch.Tensor:
    """Entries +1 or -1 with equal probability, drawn on the CPU from ``gen``."""
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(device, dtype)


def _orthogonalize(w: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """``w - Q Q^T w`` twice (classical Gram-Schmidt, repeated for stability); ``Q: [S, K, i, P]``."""
    for _ in range(2):
        w = w - torch.einsum("skip,ski->skp", Q, torch.einsum("skip,skp->ski", Q, w))
    return w


def lanczos(op: Operator, v0: torch.Tensor, steps: int, gen: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lanczos with full re-orthogonalisation from ``v0: [S, K, P]`` (need not be normalised).

    Returns ``T: [S, K, m, m]`` (the tridiagonal ``Q^T H Q``) and ``Q: [S, K, m, P]`` (orthonormal
    rows), ``m = min(steps, P)``. When a Krylov space is exhausted (``beta`` ~ 0) the run
    continues from a random vector orthogonal to it with ``beta = 0``, so ``T`` stays exact.
    """
    S, K, P = v0.shape
    m = min(steps, P)
    Q = v0.new_zeros(S, K, m, P)
    alpha = v0.new_zeros(S, K, m)
    beta = v0.new_zeros(S, K, max(m - 1, 0))
    q = v0 / v0.norm(dim=-1, keepdim=True)
    scale = v0.new_zeros(S, K)
    for i in range(m):
        Q[:, :, i] = q
        w = op(q)
        alpha[:, :, i] = (w * q).sum(-1)
        if i == m - 1:
            break
        w = _orthogonalize(w, Q[:, :, :i + 1])
        b = w.norm(dim=-1)
        scale = torch.maximum(scale, alpha[:, :, i].abs() + b)
        dead = b <= 1e-10 * scale  # an invariant subspace: restart orthogonally, beta = 0
        if dead.any():
            r = torch.randn(S, K, P, generator=gen, dtype=v0.dtype).to(v0.device)
            r = _orthogonalize(r, Q[:, :, :i + 1])
            w = torch.where(dead[..., None], r, w)
            b = torch.where(dead, torch.zeros_like(b), b)
        beta[:, :, i] = b
        q = w / w.norm(dim=-1, keepdim=True)
    T = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return T, Q


def ritz(op: Operator, v0: torch.Tensor, steps: int, gen: torch.Generator | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values ``[S, K, m]`` (ascending) and Ritz vectors ``[S, K, m, P]`` of a Lanczos run."""
    T, Q = lanczos(op, v0, steps, gen)
    theta, s = torch.linalg.eigh(T)
    return theta, torch.einsum("skij,skip->skjp", s, Q)


def quadrature(op: Operator, V: torch.Tensor, steps: int, gen: torch.Generator | None = None, vectors: int = 0
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gauss quadrature of ``v^T f(H) v`` (stochastic Lanczos quadrature, Ubaru et al. 2017):
    nodes ``theta: [S, K, m]`` and weights ``[S, K, m]`` with ``v^T f(H) v ~ sum weights * f(theta)``,
    exact for polynomials of degree < 2m (and for every ``f`` once the Krylov space is exhausted).
    The nodes are the Ritz values; with ``vectors`` > 0 also the Ritz vectors ``[vectors, K, m, P]``
    of the first ``vectors`` rows (one batched Lanczos run serves an eigen-solve and quadratures)."""
    norm2 = V.square().sum(-1, keepdim=True)
    if (norm2 == 0).any():  # a zero vector (an empty node group): any start, weight 0
        V = torch.where(norm2 > 0, V, torch.randn(V.shape, generator=gen, dtype=V.dtype).to(V.device))
    T, Q = lanczos(op, V, steps, gen)
    theta, s = torch.linalg.eigh(T)
    ritz_vectors = torch.einsum("skij,skip->skjp", s[:vectors], Q[:vectors]) if vectors else None
    return theta, s[..., 0, :].square() * norm2, ritz_vectors


def hutchinson(op: Operator, K: int, P: int, probes: int, gen: torch.Generator, dtype: torch.dtype, device,
               chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Hutchinson's estimator with Rademacher probes ``r``: per probe and member ``r^T H r``
    (``[probes, K]``, unbiased for ``tr H``) and the mean of ``r * H r`` (``[K, P]``, unbiased for
    the diagonal of ``H``; Bekas et al. 2007). Probes are drawn ``chunk`` at a time from ``gen``."""
    quad, diag = [], torch.zeros(K, P, dtype=dtype, device=device)
    for start in range(0, probes, chunk):
        r = rademacher((min(chunk, probes - start), K, P), gen, dtype, device)
        rHr = r * op(r)
        quad.append(rHr.sum(-1))
        diag += rHr.sum(0)
    return torch.cat(quad), diag / probes
