"""The two-layer ODE (teacherstudent/ode.py, ode_run.py) against independent references.

Monte-Carlo checks draw the local fields from the same covariance in float64 and allow
``Z = 5`` standard errors of the Monte-Carlo mean (plus 1e-12); Saad & Solla's published erf
formulas and fixed points; the ODE against this tool's own large-N simulation (N = 500 and 1000);
and the ``teacherstudent theory ode`` command.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import assert_user_error, invoke
from teacherstudent import ode

Z = 5.0
SAMPLES = 400_000


def _cov(rng, D, jitter=0.3):
    A = rng.normal(size=(D, D))
    return A @ A.T / D + jitter * np.eye(D)


def _g(act, x):
    return torch.from_numpy(x / math.sqrt(2)).erf().numpy() if act == "erf" else np.maximum(x, 0)


def _gp(act, x):
    return math.sqrt(2 / math.pi) * np.exp(-x ** 2 / 2) if act == "erf" else (x > 0).astype(float)


def _close(value, samples):
    mean, se = samples.mean(), samples.std() / math.sqrt(len(samples))
    assert abs(value - mean) <= Z * se + 1e-12, (value, mean, se)


def test_orthant4_known_values():
    equi = np.full((4, 4), 0.5) + 0.5 * np.eye(4)  # P_n(rho = 1/2) = 1/(n + 1)
    assert ode.orthant4(equi[None])[0] == pytest.approx(0.2, abs=1e-10)
    assert ode.orthant4(np.eye(4)[None])[0] == pytest.approx(1 / 16, abs=1e-12)
    rng = np.random.default_rng(0)
    C = _cov(rng, 4)
    x = rng.multivariate_normal(np.zeros(4), C, size=SAMPLES)
    _close(ode.orthant4(C[None])[0], (x > 0).all(1).astype(float))


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_i2_i3_i4_against_monte_carlo(act):
    rng = np.random.default_rng(1 if act == "erf" else 2)
    C = _cov(rng, 4)
    x = rng.multivariate_normal(np.zeros(4), C, size=SAMPLES)
    g, gp = _g(act, x), _gp(act, x)
    i2 = ode.erf_i2 if act == "erf" else ode.relu_i2
    i3 = ode.erf_i3 if act == "erf" else ode.relu_i3
    _close(i2(C[0, 0], C[1, 1], C[0, 1]), g[:, 0] * g[:, 1])
    _close(i3(C[0, 0], C[1, 1], C[2, 2], C[0, 1], C[0, 2], C[1, 2]), gp[:, 0] * x[:, 1] * g[:, 2])
    _close(i3(C[0, 0], C[0, 0], C[0, 0], C[0, 0], C[0, 0], C[0, 0]), gp[:, 0] * x[:, 0] * g[:, 0])  # a = b = c
    # every pattern of repeated fields the ODE asks for: i = k, p = q, i = p, all four equal
    for t in ([0, 1, 2, 3], [0, 0, 2, 3], [0, 1, 2, 2], [0, 1, 0, 3], [0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 0, 1]):
        if act == "erf":
            value = ode.erf_i4(C[np.ix_(t, t)][None])[0]
        else:
            value = ode.relu_i4(C, np.array([t]))[0]
        _close(value, gp[:, t[0]] * gp[:, t[1]] * g[:, t[2]] * g[:, t[3]])


def _state(rng, K=3, M=2, C=2):
    W, Wt = rng.normal(size=(K, 40)) / 6, rng.normal(size=(M, 40)) / 6
    return ode.Overlaps(W @ W.T, W @ Wt.T, Wt @ Wt.T, rng.normal(size=(C, K)), rng.normal(size=(C, M)))


def _fields(rng, s):
    f = rng.multivariate_normal(np.zeros(len(s.omega)), s.omega, size=SAMPLES)
    return f


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_eg_and_derivatives_against_monte_carlo(act):
    """eps_g and every entry of dQ/dt, dR/dt, dV/dt (the SGD update's mean, written out per sample)."""
    rng = np.random.default_rng(3)
    s = _state(rng)
    K = s.Q.shape[0]
    f = _fields(rng, s)
    g, gp = _g(act, f), _gp(act, f)
    e = g @ s.A.T  # [S, C]: y* - y
    _close(ode.eg(act, s), 0.5 * (e ** 2).sum(1))
    lr_w, lr_v = 0.7, 0.4
    dQ, dR, dV = ode.derivatives(act, s, lr_w, lr_v)
    delta = gp[:, :K] * (e @ s.V)  # [S, K]
    lam, nu = f[:, :K], f[:, K:]
    for i in range(K):
        for n in range(nu.shape[1]):
            _close(dR[i, n], lr_w * delta[:, i] * nu[:, n])
        for k in range(K):
            _close(dQ[i, k], lr_w * (delta[:, i] * lam[:, k] + delta[:, k] * lam[:, i]) + lr_w ** 2 * delta[:, i] * delta[:, k])
        for c in range(e.shape[1]):
            _close(dV[c, i], lr_v * e[:, c] * g[:, i])


def test_erf_symmetric_plateau_and_perfect_learning():
    """Saad & Solla (1995): isotropic teacher T = I, v = v* = 1; the symmetric fixed point of the small-eta
    dynamics Q = C = 1/(2K-1), R = S = 1/sqrt(K(2K-1)) with eps_g = (K/pi)(pi/6 - K arcsin(1/(2K))),
    and eps_g = (1/pi) sum arcsin(...) in general; perfect learning (Q = R = T, V = V*) is a fixed point."""
    for K in (2, 3, 5):
        q, r = 1 / (2 * K - 1), math.sqrt(1 / (K * (2 * K - 1)))
        s = ode.Overlaps(np.full((K, K), q), np.full((K, K), r), np.eye(K), np.ones((1, K)), np.ones((1, K)))
        assert ode.eg("erf", s) == pytest.approx(K / math.pi * (math.pi / 6 - K * math.asin(1 / (2 * K))), rel=1e-12)
        eps = 1e-4  # the O(eta) part vanishes: dX / eta -> 0 as eta -> 0
        dQ, dR, _ = ode.derivatives("erf", s, eps, 0.0)
        assert np.abs(dR).max() / eps < 1e-12 and np.abs(dQ).max() / eps < 1e-3
    rng = np.random.default_rng(4)
    Wt = rng.normal(size=(2, 30)) / 5
    T = Wt @ Wt.T
    for act in ode.ACTIVATIONS:
        s = ode.Overlaps(T.copy(), T.copy(), T, np.array([[0.7, -1.2]]), np.array([[0.7, -1.2]]))
        assert ode.eg(act, s) == pytest.approx(0, abs=1e-12)
        assert all(np.abs(d).max() < 1e-10 for d in ode.derivatives(act, s, 1.0, 1.0))
    # Saad & Solla's eps_g for erf, v = v* = 1, written out
    s = _state(rng, K=3, M=2, C=1)
    s.V, s.Vt = np.ones((1, 3)), np.ones((1, 2))
    a = lambda c, x, y: math.asin(c / math.sqrt((1 + x) * (1 + y)))  # noqa: E731
    Q, R, T = s.Q, s.R, s.T
    ref = (sum(a(Q[i, k], Q[i, i], Q[k, k]) for i in range(3) for k in range(3))
           + sum(a(T[n, m], T[n, n], T[m, m]) for n in range(2) for m in range(2))
           - 2 * sum(a(R[i, n], Q[i, i], T[n, n]) for i in range(3) for n in range(2))) / math.pi
    assert ode.eg("erf", s) == pytest.approx(ref, rel=1e-12)


def test_rk4_converges():
    rng = np.random.default_rng(5)
    s = _state(rng, K=2, M=2, C=1)
    coarse = ode.integrate("relu", s, 1.0, 1.0, np.array([1.0]), dt=0.1)[-1]
    fine = ode.integrate("relu", s, 1.0, 1.0, np.array([1.0]), dt=0.05)[-1]
    assert abs(ode.eg("relu", coarse) - ode.eg("relu", fine)) < 1e-7
    assert np.abs(coarse.Q - fine.Q).max() < 1e-6


SETTING = ["teacher.widths=[2]", "teacher.reference_samples=100", "teacher.outputs=1", "teacher.bias=false", "teacher.standardize_outputs=false",
           'teacher.weights="gaussian"', "inputs.sigma=1.0", "inputs.fresh=true", "inputs.eval_samples=256",
           "student.multiplier=1", 'student.init="normal"', "student.bias=false", "training.batch_size=1",
           'training.loss_reduction="half_sum"', 'training.dtype="float64"', 'measure.every="steps"']


def _setting(N: int, t: float, seeds: list[int], init_std: bool = True) -> list[str]:
    """The ODE's setting at input dimension N for t = steps / N (eta_w = 1; Q_ii ~ 0.25 at the start)."""
    steps = int(t * N)
    return SETTING + [f"teacher.d={N}", f"training.lr={1 / N}", f"training.steps={steps}", f"inputs.train_samples={steps}",
                      f"measure.every_steps={steps}", f"student.seeds={seeds}"] + (
                          [f"student.init_std=[{0.5 / math.sqrt(N)},0.5]"] if init_std else [])


@pytest.fixture
def one_thread():
    """Batch-1 steps are tiny matmuls: torch's thread pool only adds contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("N, t", [(500, 1.0), (1000, 0.5)])
def test_ode_against_large_n_simulation(N, t, tmp_runs, one_thread):
    """500 online steps (eta_w = 1) from the same initial weights: every member's eps_g (closed form of its
    weights) within 0.008 of the ODE started from its initial weights, Q_ii within 0.03, the normalised
    overlap r within 0.06 (one member's SGD fluctuations: measured at most 0.0045, 0.013, 0.035 over 4
    members at N = 1000, t = 0.5), while the ODE's eps_g falls by more than twice its tolerance (member mean);
    analysis/ode_overlay.md has the full measurement. Runs are pure functions of the config: not flaky."""
    from teacherstudent import ode_run
    from teacherstudent.simulate import RunOptions, run

    folder = run(_cfg(_setting(N, t, [0, 1])), RunOptions(tmp_runs, "cpu", ["pytest"]))
    df = ode_run.ode_table(folder)
    err = ode_run.ode_errors(df).set_index("statistic").max_member
    assert err["eg_exact"] < 0.008 and err["q"] < 0.03 and err["r"] < 0.06, err
    n = ode_run.normalised(df)
    ode_eg = n[(n.source == "ode") & (n.statistic == "eg_exact")].groupby("member").value
    assert (ode_eg.first() - ode_eg.last()).mean() > 2 * 0.008  # the ODE moved further than it may miss by
    start = n[(n.step == 0) & (n.statistic == "eg_exact")]
    assert start.groupby("member").value.apply(lambda v: v.max() - v.min()).max() < 1e-12  # the same initial state


def _cfg(overrides):
    from teacherstudent.config import load_config

    return load_config(None, overrides)


def test_check_setting_refuses_in_one_line():
    from teacherstudent import ode_run
    from teacherstudent.errors import UserError

    ode_run.check_setting(_cfg(_setting(50, 1.0, [0])))
    with pytest.raises(UserError, match="student.bias = true") as err:
        ode_run.check_setting(_cfg([*_setting(50, 1.0, [0]), "student.bias=true", "training.batch_size=4"]))
    assert "\n" not in str(err.value) and "batch_size = 4" in str(err.value)
    with pytest.raises(UserError, match="more than once"):
        ode_run.check_setting(_cfg([*_setting(50, 1.0, [0]), "inputs.fresh=false", "inputs.train_samples=10"]))


def test_student_bias_false_holds_biases_at_zero(tmp_runs, one_thread):
    from teacherstudent.simulate import RunOptions, run

    cfg = _cfg(_setting(20, 3.0, [0], init_std=False) + ['student.init="pytorch"'])  # pytorch: non-zero initial biases
    folder = run(cfg, RunOptions(tmp_runs, "cpu", ["pytest"]))
    for name in ("init", "final"):
        w = torch.load(folder / "checkpoints" / f"{name}.pt")["weights"]
        assert all(bool((b == 0).all()) for b in w[1::2]) and bool((w[0] != 0).any())


def test_cli_theory_ode(tmp_runs, finished_run, one_thread):
    from teacherstudent.reader import load_runs
    from teacherstudent.simulate import RunOptions, run
    from teacherstudent.tables import TABLE_COLUMNS

    assert_user_error(result := invoke("theory", "ode", finished_run, "--out", finished_run.parent))
    assert "does not apply" in result.stderr
    folder = run(_cfg(_setting(40, 1.0, [0, 1])), RunOptions(tmp_runs, "cpu", ["pytest"]))
    result = invoke("theory", "ode", folder.name, "--out", tmp_runs)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(folder / "theory_ode.parquet")
    assert list(df.columns) == list(TABLE_COLUMNS["theory_ode"])
    assert set(df.source) == {"ode", "simulation"} and {"eg", "eg_exact", "Q", "R", "T", "V"} <= set(df.statistic)
    assert all((folder / f"ode_overlay.{x}").stat().st_size > 0 for x in ("png", "pdf", "csv"))
    assert len(load_runs(tmp_runs, table="theory_ode")) == len(df)
    assert "eg_exact" in result.output
