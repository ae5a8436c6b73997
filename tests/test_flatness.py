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
from teacherstudent.probes.flatness import flatness_stats, group_fractions, near_zero_window, node_owners, window_degree
from teacherstudent.probes.hessian import hutchinson, hvp_operator, quadrature, ritz

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
        # r^T H r = sum_i r_i (H r)_i: the trace is the sum of the diagonal estimate, split by group
        torch.testing.assert_close(stats[f"curvature_per_weight_{g}"] * fr[g].sum(1),
                                   stats["trace"] * stats[f"trace_share_{g}"], rtol=1e-9, atol=1e-12)


def test_near_zero_window_quadrature_is_exact_per_probe():
    """Gauss quadrature with m nodes is exact for the window polynomial (degree 2q < 2m): with the
    basis vectors as probes it gives sum_i w_i phi(H)_ii exactly, with m = 20 < P = 39 steps."""
    ens, x, y, loss = _problem(8)
    H = _exact_hessians(ens, x, y)
    P, m = H.shape[1], 20
    lam, U = torch.linalg.eigh(H)
    rho, q = 1.05 * lam.abs().amax(1), window_degree(m)
    phi_ii = torch.einsum("kij,kj->ki", U.square(), near_zero_window(lam, rho[:, None], q))  # diag of phi(H)
    fr = group_fractions(ens, _aligned_masks())
    op = hvp_operator(loss, ens.trainable)
    for g, w in fr.items():
        V = torch.zeros(P, K, P, dtype=torch.float64)
        V[torch.arange(P), :, torch.arange(P)] = w.T.sqrt()
        nodes, weights, _ = quadrature(op, V, m, torch.Generator().manual_seed(9))
        got = (weights * near_zero_window(nodes, rho[None, :, None], q)).sum((0, 2))
        torch.testing.assert_close(got, (w * phi_ii).sum(1), rtol=1e-8, atol=1e-10)
    # the window: 1 at zero, 1/2 at the reported half-width, non-negative past rho
    assert near_zero_window(torch.tensor(0.0), 2.0, q) == 1
    torch.testing.assert_close(near_zero_window(torch.tensor(2.0 * (1 - 0.5 ** (1 / q)) ** 0.5), 2.0, q), torch.tensor(0.5))
    assert near_zero_window(torch.tensor(2.5), 2.0, q) >= 0


def test_near_zero_shares_within_their_standard_errors():
    ens, x, y, loss = _problem(10)
    H = _exact_hessians(ens, x, y)
    P = H.shape[1]
    lam, U = torch.linalg.eigh(H)
    fr = group_fractions(ens, _aligned_masks())
    spec = FlatnessProbe(parent="p-0", top=1, lanczos=20, probes=2, density_probes=50)
    stats = flatness_stats(hvp_operator(loss, ens.trainable), K, P, fr, spec, torch.Generator().manual_seed(11),
                           torch.float64, "cpu")
    rho, q = 1.05 * lam.abs().amax(1), window_degree(spec.lanczos)
    phi = torch.einsum("kij,kj,klj->kil", U, near_zero_window(lam, rho[:, None], q), U)  # phi(H)
    total = phi.diagonal(dim1=1, dim2=2).sum(1)
    # every group's probe uses the same r: their sum is r^T M r, M = sum_g D_g^1/2 phi D_g^1/2 (tr M = tr phi)
    parts = [*fr.values(), 1 - sum(fr.values())]
    M = sum(w.sqrt()[:, :, None] * phi * w.sqrt()[:, None, :] for w in parts)
    se = (2 * (M.square().sum((1, 2)) - M.diagonal(dim1=1, dim2=2).square().sum(1)) / spec.density_probes).sqrt()
    assert ((stats["near_zero_frac"] * P - total).abs() < 4 * se).all(), (stats["near_zero_frac"] * P, total, se)
    for g, w in fr.items():
        exact = (w * phi.diagonal(dim1=1, dim2=2)).sum(1) / total
        # a ratio of two estimates: errors of about 0.003 with these seeds; a swapped group is off by > 0.2
        assert ((stats[f"near_zero_share_{g}"] - exact).abs() < 0.02).all(), (g, stats[f"near_zero_share_{g}"], exact)


# ---- the probe end to end -------------------------------------------------------

FAST = ["--samples", "128", "--top", "3", "--lanczos", "8", "--probes", "4", "--density-probes", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    from teacherstudent.simulate import RunOptions, run

    root = tmp_path_factory.mktemp("flatness_runs")
    return run(tiny(training__checkpoint_steps=[8]), RunOptions(root, "cpu", command=["pytest"]))


def test_cli_final_and_step_k_write_linked_tables_and_rerun_idempotently(parent):
    import pandas as pd

    from teacherstudent.config import build_config
    from teacherstudent.store import load_runs, read_json
    from teacherstudent.verify import verify

    root = parent.parent
    folders = {}
    for at, step in (("final", 16), ("step:8", 8), ("step:0", 0)):
        r = invoke("probe", "flatness", parent.name, "--at", at, *FAST, "--out", root)
        assert r.exit_code == 0, r.output
        assert "Hessian of the training loss" in r.stdout
        folder = root / r.stdout.split("results: ")[1].split()[0].strip().split("/")[-1]
        cfg = build_config(read_json(folder / "config.json"))
        assert cfg.run_id == folder.name and folder.name.startswith(f"{parent.name.split('-')[0]}.flatness-")
        assert cfg.probe.parent == parent.name and cfg.probe.at == at and cfg.probe.samples == 128
        df = pd.read_parquet(folder / "flatness.parquet")
        assert set(df.step) == {step} and set(df.member) == {0, 1} and set(df.parent) == {parent.name}
        assert list(df.columns) == ["run", "parent", "member", "step", "statistic", "index", "value"]
        ev = df[df.statistic == "eigenvalue"].sort_values(["member", "index"])
        assert len(ev) == 6 and (ev.groupby("member").value.diff().dropna() <= 0).all()  # largest first
        assert read_json(folder / "status.json")["state"] == "finished" and (folder / "probe.json").exists()
        folders[at] = folder
    assert len(set(folders.values())) == 3
    # idempotent: asking again reuses the folder, byte for byte
    before = file_bytes(folders["final"])
    r = invoke("probe", "flatness", parent.name, *FAST, "--out", root)
    assert r.exit_code == 0 and file_bytes(folders["final"]) == before
    # the run store: load_runs reads the probe's table (and only the probe folders for it), ls, verify
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl = load_runs(root, table="flatness")
        metrics = load_runs(root, table="metrics")
    assert set(fl.run) == {f.name for f in folders.values()} and "probe.at" in fl.columns
    assert set(metrics.run) == {parent.name}
    r = invoke("ls", "--out", root)
    assert r.exit_code == 0 and all(f.name in r.stdout for f in folders.values())
    r = invoke("probe", "show", parent.name, "--out", root)
    assert r.exit_code == 0 and r.stdout.count("Hessian of the training loss") == 3, r.output
    assert all(rc.action == "ok" for rc in verify(root)), [(rc.folder.name, rc.problems) for rc in verify(root)]


def test_a_damaged_flatness_table_is_reported_by_verify(parent, tmp_path):
    from teacherstudent.verify import verify

    root = tmp_path / "runs"
    shutil.copytree(parent.parent, root)
    r = invoke("probe", "flatness", parent.name, *FAST, "--out", root)
    assert r.exit_code == 0, r.output
    table = next(root.glob("*.flatness-*")) / "flatness.parquet"
    good = table.read_bytes()
    table.write_bytes(b"garbage")
    bad = [rc for rc in verify(root) if rc.damaged]
    assert len(bad) == 1 and bad[0].action == "cannot" and "flatness.parquet" in bad[0].problems[0]
    # what verify says to do: delete the folder and run the command again; on CPU the table is bit-identical
    shutil.rmtree(table.parent)
    assert invoke("probe", "flatness", parent.name, *FAST, "--out", root).exit_code == 0
    assert table.read_bytes() == good


@pytest.mark.parametrize("args, message", [
    (["nosuchrun"], "is not a run folder"),
    (["{parent}", "--at", "step:5"], "kept no weights at step 5 (kept: [0, 8])"),
    (["{parent}", "--at", "middle"], "--at must be final or step:K"),
    (["{parent}", "--top", "9", "--lanczos", "8"], "--top (9) must not exceed --lanczos (8)"),
    (["{parent}", "--samples", "0"], "--samples: Input should be greater than 0"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(parent, args, message):
    from teacherstudent.store import list_runs

    before, runs = file_bytes(parent.parent), list_runs(parent.parent)
    r = invoke("probe", "flatness", *[a.format(parent=parent.name) for a in args], "--out", parent.parent)
    assert_user_error(r)
    assert message in r.stderr, r.stderr
    assert file_bytes(parent.parent) == before and list_runs(parent.parent) == runs
