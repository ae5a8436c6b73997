"""The flatness probe: Hessian numerics against the exact Hessian (float64), the node-ownership
map against an entry-by-entry reference, and the CLI end to end on a tiny finished run."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch

from conftest import assert_user_error, file_bytes, invoke, tiny
from teacherstudent.config import FlatnessProbe
from teacherstudent.ensemble import Ensemble
from teacherstudent.probes.flatness import flatness_stats, group_fractions, node_owners
from teacherstudent.probes.hessian import flatten, hutchinson, hvp_operator, quadrature, ritz

K, D, WIDTHS, C, N = 2, 3, [4, 3], 2, 24


def _problem(seed: int = 0):
    """A tiny two-member ensemble (P = 39 per member), float64 data and its summed MSE loss."""
    g = torch.Generator().manual_seed(seed)
    params, fan = [], D
    for n in [*WIDTHS, C]:
        params += [torch.randn(K, n, fan, generator=g, dtype=torch.float64),
                   torch.randn(K, n, generator=g, dtype=torch.float64) * 0.5]
        fan = n
    ens = Ensemble(params)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randn(N, C, generator=g, dtype=torch.float64)

    def loss(tensors):
        e = Ensemble(list(tensors))
        return (e.output(x) - y).square().mean((1, 2)).sum()

    return ens, x, y, loss


def _exact_hessians(ens: Ensemble, x, y) -> torch.Tensor:
    """``[K, P, P]``: each member's Hessian from its own ``nn.Sequential`` (torch.autograd.functional.hessian)."""
    from teacherstudent.ensemble import as_modules

    out = []
    for net in as_modules(ens):
        names = [n for n, _ in net.named_parameters()]
        shapes = [p.shape for _, p in net.named_parameters()]
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

        def f(v, net=net, names=names, shapes=shapes):
            ps, i = {}, 0
            for name, s in zip(names, shapes):
                ps[name] = v[i:i + math.prod(s)].reshape(s)
                i += math.prod(s)
            return (torch.func.functional_call(net, ps, (x,)) - y).square().mean()

        out.append(torch.autograd.functional.hessian(f, flat))
    return torch.stack(out)


def test_hvp_and_top_eigenvalues_match_the_exact_hessian():
    ens, x, y, loss = _problem()
    H = _exact_hessians(ens, x, y)
    P = H.shape[1]
    op = hvp_operator(loss, ens.trainable)
    V = torch.randn(3, K, P, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op(V), torch.einsum("kpq,skq->skp", H, V), rtol=1e-10, atol=1e-10)
    theta, _ = ritz(op, V[:1], 30, torch.Generator().manual_seed(2))  # 30 steps < P = 39
    exact = torch.linalg.eigvalsh(H)
    for i in (1, 2):
        rel = (theta[0, :, -i] - exact[:, -i]).abs() / exact[:, -i].abs()
        assert (rel < 1e-6).all(), (i, theta[0, :, -i], exact[:, -i])


def test_hutchinson_trace_and_diagonal_within_their_standard_errors():
    ens, x, y, loss = _problem(3)
    H = _exact_hessians(ens, x, y)
    op, probes = hvp_operator(loss, ens.trainable), 400
    quad, diag = hutchinson(op, K, H.shape[1], probes, torch.Generator().manual_seed(4), torch.float64, "cpu")
    exact = H.diagonal(dim1=1, dim2=2)
    # Var(r^T H r) = 2 * sum_{i != j} H_ij^2 for Rademacher r; 4 standard errors: fails about 1 time in 15,000
    se = (2 * (H.square().sum((1, 2)) - exact.square().sum(1)) / probes).sqrt()
    assert ((quad.mean(0) - exact.sum(1)).abs() < 4 * se).all(), (quad.mean(0), exact.sum(1), se)
    assert not torch.allclose(quad.mean(0), exact.sum(1), rtol=1e-9)  # an estimate, not the exact trace
    # the diagonal: Var((r * Hr)_i) = sum_{j != i} H_ij^2
    se_d = ((H.square().sum(2) - exact.square()) / probes).sqrt()
    assert ((diag - exact).abs() < 5 * se_d + 1e-12).all()  # 78 entries at 5 standard errors: fails < 1 in 20,000


def _owner_reference(ens: Ensemble, aligned: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Entry by entry: hidden node (l, j) owns W_l[j, :], b_l[j], W_{l+1}[:, j]; shares split evenly."""
    L = len(ens.weights) - 1
    rows = {"unaligned": [], "aligned": []}
    for k in range(ens.K):
        u, a = [], []
        for l, w in enumerate(ens.weights):
            n, fan_in = w.shape[1:]
            for kind in ("w", "b"):
                for i in range(n):
                    for j in range(fan_in if kind == "w" else 1):
                        owners = ([(l, i)] if l < L else []) + ([(l - 1, j)] if kind == "w" and l > 0 else [])
                        al = [bool(aligned[ll][k, jj]) for ll, jj in owners]
                        u.append(sum(not v for v in al) / max(len(al), 1))
                        a.append(sum(al) / max(len(al), 1))
        rows["unaligned"].append(u)
        rows["aligned"].append(a)
    return {g: torch.tensor(v, dtype=torch.float64) for g, v in rows.items()}


def _aligned_masks(seed: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(K, n, generator=g) < 0.4 for n in WIDTHS]


def test_node_ownership_matches_an_entry_by_entry_reference():
    ens, *_ = _problem()
    aligned = _aligned_masks()
    got = group_fractions(ens, aligned)
    ref = _owner_reference(ens, aligned)
    for g in ref:
        torch.testing.assert_close(got[g], ref[g], rtol=0, atol=0)
    unowned = 1 - got["aligned"] - got["unaligned"]
    assert (unowned[:, -C:] == 1).all() and (unowned[:, :-C] == 0).all()  # only the output biases belong to no node
    assert len(node_owners(ens)) == len(ens.trainable)


def test_top_shares_match_the_exact_eigenvectors():
    ens, x, y, loss = _problem(6)
    H = _exact_hessians(ens, x, y)
    P = H.shape[1]
    fr = group_fractions(ens, _aligned_masks())
    spec = FlatnessProbe(parent="p-0", top=2, lanczos=34, probes=2, density_probes=1)
    stats = flatness_stats(hvp_operator(loss, ens.trainable), K, P, fr, spec, torch.Generator().manual_seed(7),
                           torch.float64, "cpu")
    lam, U = torch.linalg.eigh(H)
    for i in range(2):
        u = U[:, :, -1 - i]  # [K, P]
        for g, w in fr.items():
            torch.testing.assert_close(stats[f"top_share_{g}"][:, i], (u.square() * w).sum(1), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(stats["eigenvalue"], lam[:, -2:].flip(1), rtol=1e-9, atol=0)
    assert (stats["eigenvalue_residual"] < 1e-6).all()
    for g in fr:
        torch.testing.assert_close(stats[f"param_share_{g}"], fr[g].sum(1) / P)


def test_near_zero_share_is_exact_with_a_full_krylov_space():
    """With every basis vector as a probe and P Lanczos steps the quadrature is exact:
    sum_i w_i (P_0)_ii, P_0 the projector on the eigenvectors with |lambda| <= cut."""
    ens, x, y, loss = _problem(8)
    H = _exact_hessians(ens, x, y)
    P = H.shape[1]
    lam, U = torch.linalg.eigh(H)
    fr = group_fractions(ens, _aligned_masks())
    op = hvp_operator(loss, ens.trainable)
    for k in range(K):
        a = lam[k].abs().sort().values
        i0 = int((a <= 1e-9 * a[-1]).sum())  # numerically zero (dead units) below i0
        j = i0 + int((a[i0 + 1:i0 + 6] / a[i0:i0 + 5]).argmax())
        assert a[j + 1] / a[j] > 1.3  # a real gap: the indicator is stable there
        cut = float((a[j] * a[j + 1]).sqrt())  # the zero cluster and a few small eigenvalues lie below
        proj = (U[k][:, lam[k].abs() <= cut].square()).sum(1)  # (P_0)_ii
        for g, w in fr.items():
            V = torch.zeros(P, K, P, dtype=torch.float64)
            V[torch.arange(P), k, torch.arange(P)] = w[k].sqrt()
            V[:, 1 - k] = 1.0  # the other member: any vector
            nodes, weights = quadrature(op, V, P, torch.Generator().manual_seed(9))
            got = (weights[:, k] * (nodes[:, k].abs() <= cut)).sum()
            torch.testing.assert_close(got, (w[k] * proj).sum(), rtol=1e-7, atol=1e-9)
