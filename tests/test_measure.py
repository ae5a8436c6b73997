"""Node-alignment measurements (docs/science.md §4) against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teacherstudent.config import StudentConfig
from teacherstudent.ensemble import Ensemble, as_modules
from teacherstudent.measure import correlation, measure, members_per_chunk
from teacherstudent.train import member_loss

D, WIDTHS, OUTPUTS, N = 5, [6, 8], 3, 300


def random_ensemble(K: int, seeds=None, batchnorm: bool = False) -> Ensemble:
    cfg = StudentConfig(seeds=tuple(seeds or range(K)), batchnorm=batchnorm)
    return Ensemble.create(WIDTHS, D, OUTPUTS, cfg, "cpu", torch.float64)


def teacher_like(x: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """Post-activations of a random ReLU net with widths 4 and 5 (a stand-in teacher), one column dead."""
    g = torch.Generator().manual_seed(seed)
    h1 = torch.relu(x @ torch.randn(D, 4, generator=g, dtype=torch.float64))
    h2 = torch.relu(h1 @ torch.randn(4, 5, generator=g, dtype=torch.float64) - 0.5)
    h2[:, 2] = 0.0  # a dead teacher unit
    return [h1, h2]


def inputs(n: int = N, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def corrcoef_block(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy's Pearson correlation between every column of ``a`` and every column of ``b``."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a dead column gives NaN here
        full = np.corrcoef(a, b, rowvar=False)
    return full[: a.shape[1], a.shape[1]:]


# ---- correlation ------------------------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 3])
def test_correlation_equals_numpy_corrcoef(K):
    g = torch.Generator().manual_seed(0)
    t = torch.randn(200, 4, generator=g, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 3.0], dtype=torch.float64) + 5
    s = torch.randn(K, 200, 6, generator=g, dtype=torch.float64)
    s[..., 0] = t[:, 1] * 2 + 1  # a perfectly correlated student
    s[..., 1] = -t[:, 0]  # and an anti-correlated one
    C = correlation(t, s)
    assert C.shape == (K, 4, 6)
    for k in range(K):
        ref = corrcoef_block(t.numpy(), s[k].numpy())
        np.testing.assert_allclose(C[k].numpy(), ref, rtol=0, atol=1e-8)
    torch.testing.assert_close(C[:, 1, 0], torch.ones(K, dtype=torch.float64), rtol=0, atol=1e-8)
    torch.testing.assert_close(C[:, 0, 1], -torch.ones(K, dtype=torch.float64), rtol=0, atol=1e-8)


def test_correlation_of_relu_activations_equals_numpy():
    x = inputs()
    t = teacher_like(x)[0]
    hidden, _ = random_ensemble(3).forward(x)
    C = correlation(t, hidden[0])
    for k in range(3):
        np.testing.assert_allclose(C[k].numpy(), corrcoef_block(t.numpy(), hidden[0][k].numpy()), rtol=0, atol=1e-8)


def test_dead_units_correlate_zero_not_nan():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(100, 3, generator=g, dtype=torch.float64)
    t[:, 1] = 0.0  # dead teacher unit
    s = torch.randn(2, 100, 4, generator=g, dtype=torch.float64)
    s[0, :, 2] = 0.0  # dead student unit
    s[1, :, 3] = 7.5  # constant (but not zero) student unit
    for dtype in (torch.float64, torch.float32):
        C = correlation(t.to(dtype), s.to(dtype))
        assert torch.isfinite(C).all()
        assert (C[:, 1, :] == 0).all()
        assert (C[0, :, 2] == 0).all()
        assert (C[1, :, 3].abs() < 1e-6).all()


def test_correlation_is_bounded_in_float32():
    g = torch.Generator().manual_seed(3)
    t = torch.randn(1000, 3, generator=g) * 1e3
    s = torch.cat([t[None], (t * 0.5 + 2)[None]], 0)
    C = correlation(t, s)
    assert C.abs().max() <= 1 + 1e-5
    torch.testing.assert_close(C.diagonal(dim1=1, dim2=2), torch.ones(2, 3), rtol=0, atol=1e-5)


# ---- measure -----------------------------------------------------------------------------------

def snapshot(ens: Ensemble, x: torch.Tensor, y: torch.Tensor, t_hidden, loss: str = "mse", chunk=None, workspace=None):
    """``measure`` (``y`` float targets for MSE, long labels for cross-entropy)."""
    assert (y.dtype == torch.long) == (loss == "ce")
    return measure(ens, x, y, t_hidden, step=7, member_chunk=chunk, workspace=workspace)


def test_measure_correlations_match_numpy_for_every_member_and_layer():
    ens, x = random_ensemble(3), inputs()
    t_hidden = teacher_like(x)
    y = torch.zeros(N, OUTPUTS, dtype=torch.float64)
    snap = snapshot(ens, x, y, t_hidden)
    hidden, _ = ens.forward(x)
    assert snap.step == 7
    assert [tuple(c.shape) for c in snap.corr] == [(3, 4, 6), (3, 5, 8)]
    for l in range(2):
        for k in range(3):
            ref = corrcoef_block(t_hidden[l].numpy(), hidden[l][k].numpy())
            ref = np.nan_to_num(ref, nan=0.0)  # numpy gives NaN for the dead unit; we give 0
            np.testing.assert_allclose(snap.corr[l][k].numpy(), ref, rtol=0, atol=1e-6)
    assert torch.isfinite(snap.corr[1]).all() and (snap.corr[1][:, 2, :] == 0).all()


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_member_chunking_changes_nothing(chunk, loss):
    ens, x = random_ensemble(5), inputs()
    t_hidden = teacher_like(x)
    y = torch.randn(N, OUTPUTS, dtype=torch.float64) if loss == "mse" else torch.randint(OUTPUTS, (N,))
    whole = snapshot(ens, x, y, t_hidden, loss)
    part = snapshot(ens, x, y, t_hidden, loss, chunk=chunk)
    for a, b in zip(whole.corr + whole.fanout, part.corr + part.fanout):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole.eval_loss, part.eval_loss, rtol=1e-12, atol=0)
    if loss == "ce":
        torch.testing.assert_close(whole.eval_acc, part.eval_acc)
    else:
        assert whole.eval_acc is None and part.eval_acc is None


def test_measure_chunks_with_batchnorm_students():
    ens, x = random_ensemble(4, batchnorm=True), inputs()
    with torch.no_grad():
        for p in ens.bn_params + ens.bn_buffers:
            p.add_(torch.rand(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    t_hidden = teacher_like(x)
    y = torch.randn(N, OUTPUTS, dtype=torch.float64)
    whole, part = snapshot(ens, x, y, t_hidden), snapshot(ens, x, y, t_hidden, chunk=3)
    for a, b in zip(whole.corr, part.corr):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_eval_loss_and_accuracy_equal_the_modules():
    ens, x = random_ensemble(3), inputs()
    t_hidden = teacher_like(x)
    y_reg = torch.randn(N, OUTPUTS, dtype=torch.float64)
    y_cls = torch.randint(OUTPUTS, (N,), generator=torch.Generator().manual_seed(5))
    reg, cls = snapshot(ens, x, y_reg, t_hidden, "mse"), snapshot(ens, x, y_cls, t_hidden, "ce")
    for k, net in enumerate(as_modules(ens)):
        with torch.no_grad():
            out = net(x)
        assert reg.eval_loss[k].item() == pytest.approx(torch.nn.functional.mse_loss(out, y_reg).item(), rel=1e-12)
        assert cls.eval_loss[k].item() == pytest.approx(torch.nn.functional.cross_entropy(out, y_cls).item(), rel=1e-12)
        assert cls.eval_acc[k].item() == pytest.approx((out.argmax(1) == y_cls).double().mean().item(), abs=1e-12)


def test_measure_does_not_touch_gradients_or_weights():
    ens, x = random_ensemble(2), inputs()
    for p in ens.params:
        p.requires_grad_(True)
    before = [p.detach().clone() for p in ens.params]
    snap = snapshot(ens, x, torch.zeros(N, OUTPUTS, dtype=torch.float64), teacher_like(x))
    assert all(p.grad is None for p in ens.params)
    assert all(torch.equal(a, b) for a, b in zip(before, ens.params))
    assert not any(c.requires_grad for c in snap.corr)


# ---- layer statistics --------------------------------------------------------------------------

def brute_force_stats(C: torch.Tensor, fanout: torch.Tensor, recovered: float, covered: float) -> list[dict]:
    """Per member, with plain Python loops."""
    out = []
    K, m, n = C.shape
    for k in range(K):
        best = [max(float(C[k, i, j]) for j in range(n)) for i in range(m)]
        matches = [sum(1 for j in range(n) if float(C[k, i, j]) > covered) for i in range(m)]
        out.append({
            "best_corr_mean": sum(best) / m,
            "best_corr_min": min(best),
            "recovered_frac": sum(b > recovered for b in best) / m,
            "covered_frac": sum(b > covered for b in best) / m,
            "match_count_mean": sum(matches) / m,
            "fanout_norm_mean": sum(float(f) for f in fanout[k]) / n,
        })
    return out


def crafted_snapshot():
    """Correlations chosen to straddle the thresholds."""
    from teacherstudent.measure import Snapshot

    g = torch.Generator().manual_seed(0)
    C0 = torch.rand(3, 4, 10, generator=g) * 0.8
    C0[0, 0, 3], C0[0, 0, 5], C0[0, 1, 1] = 0.97, 0.93, 0.91  # member 0: one recovered, one covered
    C0[1, :, 0] = 0.96  # member 1: every teacher node recovered by the same student
    C0[1, 2, 4] = 0.951
    C0[2, 3, 9] = 0.9  # exactly the threshold: not above
    C1 = torch.rand(3, 2, 5, generator=g) * 2 - 1
    fan = [torch.rand(3, 10, generator=g), torch.rand(3, 5, generator=g)]
    return Snapshot(step=0, corr=[C0, C1], fanout=fan, eval_loss=torch.zeros(3, dtype=torch.float64), eval_acc=None)


@pytest.mark.parametrize("recovered, covered", [(0.95, 0.9), (0.5, 0.3)])
def test_layer_stats_equal_a_brute_force_loop(recovered, covered):
    snap = crafted_snapshot()
    stats = snap.layer_stats(recovered, covered)
    assert len(stats) == 2
    for l, layer in enumerate(stats):
        ref = brute_force_stats(snap.corr[l], snap.fanout[l], recovered, covered)
        for name in ref[0]:
            got = layer[name]
            assert got.shape == (3,)
            for k in range(3):
                assert float(got[k]) == pytest.approx(ref[k][name], abs=1e-6), (l, name, k)


def test_layer_stats_on_crafted_values():
    stats = crafted_snapshot().layer_stats()[0]
    assert stats["recovered_frac"][0].item() == pytest.approx(0.25)
    assert stats["covered_frac"][0].item() == pytest.approx(0.5)
    assert stats["match_count_mean"][0].item() == pytest.approx((2 + 1) / 4)
    assert stats["recovered_frac"][1].item() == 1.0
    assert stats["match_count_mean"][1].item() == pytest.approx((1 + 1 + 2 + 1) / 4)
    assert stats["covered_frac"][2].item() == 0.0  # 0.9 is not above 0.9


# ---- fan-out ---------------------------------------------------------------------------------

def test_fanout_norm_is_the_norm_of_the_next_layers_column():
    ens, x = random_ensemble(3), inputs()
    snap = snapshot(ens, x, torch.zeros(N, OUTPUTS, dtype=torch.float64), teacher_like(x))
    assert [tuple(f.shape) for f in snap.fanout] == [(3, 6), (3, 8)]
    for l in range(2):
        W_next = ens.weights[l + 1]  # [K, n_{l+1}, n_l]
        for k in range(3):
            for j in range(WIDTHS[l]):
                col = [float(W_next[k, i, j]) for i in range(W_next.shape[1])]
                assert float(snap.fanout[l][k, j]) == pytest.approx(sum(c * c for c in col) ** 0.5, rel=1e-6)
    for f, g in zip(snap.fanout, ens.fanout_norms()):
        torch.testing.assert_close(f, g.float())


def test_members_per_chunk_respects_the_budget():
    per_member = 1000 * (sum([10, 20]) * 2 + 1) * 8
    assert members_per_chunk([10, 20], 1000, 8, budget_bytes=per_member * 3.5) == 3
    assert members_per_chunk([10, 20], 1000, 8, budget_bytes=1) == 1


# ---- numerics and buffers ----------------------------------------------------------------------

def test_float32_correlation_of_a_nearly_constant_unit_is_accurate():
    # A student unit that is always on with a large bias: mean 50, spread 0.05 (std/mean = 1e-3).
    # The float32 answer must agree with float64 numpy to 2e-4 (a one-pass variance
    # sum(h^2) - sum(h)^2/N loses (mean/std)^2 * eps ~ 6% here and was off by 0.02).
    n = 10_240
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(1))
    ens = Ensemble.create(WIDTHS, D, OUTPUTS, StudentConfig(seeds=(0, 1)), "cpu", torch.float32)
    with torch.no_grad():
        w = ens.params[0][0, 0]
        ens.params[0][0, 0] = w / w.norm() * 0.05
        ens.params[1][0, 0] = 50.0
    t_hidden = [h.float() for h in teacher_like(x.double())]
    snap = measure(ens, x, torch.zeros(n, OUTPUTS), t_hidden, step=0)
    hidden, _ = ens.forward(x)
    ref = corrcoef_block(t_hidden[0].double().numpy(), hidden[0][0].double().numpy())
    np.testing.assert_allclose(snap.corr[0][0].numpy(), ref, rtol=0, atol=2e-4)
    assert snap.corr[0].abs().max() <= 1 + 1e-5


def test_workspace_reuse_gives_the_same_numbers():
    x = inputs()
    t_hidden = teacher_like(x)
    y = torch.randn(N, OUTPUTS, dtype=torch.float64)
    y_before, t_before = y.clone(), [t.clone() for t in t_hidden]
    ws: dict = {}
    big, small = random_ensemble(5), random_ensemble(2, seeds=[7, 8])
    first = snapshot(big, x, y, t_hidden, workspace=ws)
    second = snapshot(small, x, y, t_hidden, workspace=ws)  # smaller ensemble, buffers reused
    third = snapshot(big, x, y, t_hidden, workspace=ws, chunk=2)
    for got, ens in [(first, big), (second, small), (third, big)]:
        fresh = snapshot(ens, x, y, t_hidden)
        for a, b in zip(got.corr + got.fanout, fresh.corr + fresh.fanout):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        torch.testing.assert_close(got.eval_loss, fresh.eval_loss, rtol=1e-12, atol=0)
    # measuring must not change the targets or teacher activations it was given
    assert torch.equal(y, y_before) and all(torch.equal(a, b) for a, b in zip(t_hidden, t_before))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_measure_gives_zero_for_dead_and_constant_students(dtype):
    x = inputs().to(dtype)
    ens = Ensemble.create(WIDTHS, D, OUTPUTS, StudentConfig(seeds=(0, 1)), "cpu", dtype)
    with torch.no_grad():
        ens.params[0][0, 1] = 0.0
        ens.params[1][0, 1] = 3.0  # member 0, unit 1: constant 3
        ens.params[1][1, 2] = -1e3  # member 1, unit 2: never fires
    snap = measure(ens, x, torch.zeros(N, OUTPUTS, dtype=dtype), [t.to(dtype) for t in teacher_like(inputs())], step=0)
    assert torch.isfinite(snap.corr[0]).all() and torch.isfinite(snap.corr[1]).all()
    assert (snap.corr[0][0, :, 1] == 0).all()
    assert (snap.corr[0][1, :, 2] == 0).all()
    assert (snap.corr[0][0, :, 0] != 0).all()
