"""Online-learning ODEs of a two-layer network (Saad & Solla 1995; Goldt et al. 2019, NeurIPS,
"Dynamics of stochastic gradient descent for two-layer neural networks in the teacher-student setup").

Glossary (the papers' names; note that here ``K`` is the number of *student hidden nodes*, not
the ensemble's members): input dimension ``N`` (the config's ``teacher.d``), ``K`` student and
``M`` teacher hidden nodes, ``C`` outputs. Student local fields ``lambda_i = w_i . x``, teacher
ones ``nu_n = w*_n . x``, outputs ``y = V g(lambda)``, ``y* = V* g(nu)`` (``V: [C, K]``,
``V*: [C, M]``), no biases. The order parameters are the local fields' covariances over the
input distribution: ``Q_ik = E[lambda_i lambda_k]``, ``R_in = E[lambda_i nu_n]``,
``T_nm = E[nu_n nu_m]`` (for x ~ N(0, sigma^2 I): ``Q = sigma^2 W W^T`` and so on). The paper's
single output is ``C = 1`` with ``v = V[0]``; with several outputs every product of second-layer
weights becomes an inner product over outputs (``B = V^T [-V, V*]`` below), which is exact.

Convention (docs/science.md, "Two-layer ODE"): online SGD, batch 1, a fresh sample each step, on
the per-sample loss ``(1/2) ||y* - y||^2``. With plain step size ``eta`` and inputs
N(0, sigma^2 I_N), time ``t = step / N`` and first- and second-layer rates
``eta_w = eta sigma^2 N``, ``eta_v = eta N`` (both O(1) as N -> infinity), the overlaps obey

    dR_in/dt = eta_w E[delta_i nu_n]
    dQ_ik/dt = eta_w (E[delta_i lambda_k] + E[delta_k lambda_i]) + eta_w^2 E[delta_i delta_k]
    dV_ci/dt = eta_v E[(y* - y)_c g(lambda_i)]            (0 with a fixed second layer)

with ``delta_i = g'(lambda_i) sum_c V_ci (y* - y)_c``. This is Goldt et al.'s scaling (first layer
``eta / sqrt N`` on fields ``w x / sqrt N``, second layer ``eta / N``) written in the simulator's
parameterisation: their ``eta`` is our ``eta_w``, and ``eta_v = eta_w`` when ``sigma = 1``.
The generalisation error is ``eps_g = (1/2) E||y* - y||^2``.

Gaussian expectations, all closed form except one: ``I2(a, b) = E[g(a) g(b)]``,
``I3(a, b, c) = E[g'(a) b g(c)]``, ``I4(a, b, c, d) = E[g'(a) g'(b) g(c) g(d)]``. ``erf``
(``g(x) = erf(x / sqrt 2)``): the arcsin formulas of Saad & Solla. ``relu``: I2 is the degree-1
arc-cosine kernel; I3 and I4 follow from Stein's lemma ``E[x_a h] = sum_k C_ak E[d_k h]`` down to
orthant probabilities of zero-mean Gaussians, closed form up to three variables; the one
four-variable orthant probability in I4 (all four fields distinct) has no closed form and is
computed by Plackett's reduction (d P / d rho_ij = phi_2(0, 0; rho_ij) P(rest > 0 | x_i = x_j = 0))
integrated along a straight path from a block-diagonal correlation matrix, with fixed
Gauss-Legendre nodes: deterministic, accurate to ~1e-10 away from singular correlations
(tests/test_ode.py checks it against P4 = 1/5 at rho = 1/2, against Monte Carlo, and I4 against Monte Carlo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("erf", "relu")
_SQRT2PI = math.sqrt(2 * math.pi)


def _clip(r: np.ndarray) -> np.ndarray:
    return np.clip(r, -1.0, 1.0)


# ---- erf: g(x) = erf(x / sqrt 2), g'(x) = sqrt(2/pi) exp(-x^2/2) (Saad & Solla's arcsin forms) ----
def erf_i2(caa, cbb, cab):
    return (2 / np.pi) * np.arcsin(_clip(cab / np.sqrt((1 + caa) * (1 + cbb))))


def erf_i3(caa, cbb, ccc, cab, cac, cbc):
    lam3 = (1 + caa) * (1 + ccc) - cac ** 2
    return (2 / np.pi) / np.sqrt(lam3) * (cbc * (1 + caa) - cab * cac) / (1 + caa)


def erf_i4(C: np.ndarray) -> np.ndarray:
    """``C: [..., 4, 4]`` covariances of (a, b, c, d) -> ``E[g'(a) g'(b) g(c) g(d)]``."""
    c = lambda i, j: C[..., i, j]  # noqa: E731
    l4 = (1 + c(0, 0)) * (1 + c(1, 1)) - c(0, 1) ** 2
    l0 = (l4 * c(2, 3) - c(1, 2) * c(1, 3) * (1 + c(0, 0)) - c(0, 2) * c(0, 3) * (1 + c(1, 1))
          + c(0, 1) * c(0, 2) * c(1, 3) + c(0, 1) * c(0, 3) * c(1, 2))
    l1 = l4 * (1 + c(2, 2)) - c(1, 2) ** 2 * (1 + c(0, 0)) - c(0, 2) ** 2 * (1 + c(1, 1)) + 2 * c(0, 1) * c(0, 2) * c(1, 2)
    l2 = l4 * (1 + c(3, 3)) - c(1, 3) ** 2 * (1 + c(0, 0)) - c(0, 3) ** 2 * (1 + c(1, 1)) + 2 * c(0, 1) * c(0, 3) * c(1, 3)
    return (4 / np.pi ** 2) / np.sqrt(l4) * np.arcsin(_clip(l0 / np.sqrt(l1 * l2)))


# ---- relu: g(x) = max(x, 0), g'(x) = 1[x > 0] ----
def relu_i2(caa, cbb, cab):
    s = np.sqrt(caa * cbb)
    rho = _clip(cab / np.where(s > 0, s, 1.0))
    th = np.arccos(rho)
    return s / (2 * np.pi) * (np.sin(th) + (np.pi - th) * rho)


def relu_i3(caa, cbb, ccc, cab, cac, cbc):
    """``E[1[a>0] b relu(c)] = C_ab E[delta(a) relu(c)] + C_bc P(a > 0, c > 0)`` (Stein on b)."""
    cond = np.maximum(caa * ccc - cac ** 2, 0.0)
    p2 = 0.25 + np.arcsin(_clip(cac / np.sqrt(caa * ccc))) / (2 * np.pi)
    return cab * np.sqrt(cond) / (2 * np.pi * caa) + cbc * p2


def _condition(C: np.ndarray, k: int) -> np.ndarray:
    """Covariance of the other variables given x_k = 0 (zero mean stays zero)."""
    keep = [j for j in range(C.shape[-1]) if j != k]
    ck = C[..., keep, k]
    out = C[..., keep, :][..., :, keep] - ck[..., :, None] * ck[..., None, :] / np.maximum(C[..., k, k], 1e-300)[..., None, None]
    return out


def _corr(C: np.ndarray, i: int, j: int) -> np.ndarray:
    den = np.sqrt(np.maximum(C[..., i, i] * C[..., j, j], 1e-300))
    return _clip(C[..., i, j] / den)


_GL_U, _GL_W = np.polynomial.legendre.leggauss(48)
_GL_U, _GL_W = (_GL_U + 1) / 2, _GL_W / 2  # on [0, 1]


def orthant4(C: np.ndarray) -> np.ndarray:
    """``P(x > 0)`` for zero-mean x with covariance ``C: [..., 4, 4]`` (Plackett's reduction).

    From ``R0`` (the correlation matrix with the (0,1) x (2,3) cross block zeroed, where the
    probability is ``P2(rho_01) P2(rho_23)``) straight to ``R``; ``s = 1 - (1 - u)^2`` clusters the
    nodes at the end of the path, where a near-singular ``R`` makes the integrand peak.
    """
    d = np.sqrt(np.diagonal(C, axis1=-2, axis2=-1))
    R = C / (d[..., :, None] * d[..., None, :])
    R = 0.5 * (R + np.swapaxes(R, -1, -2))
    p0 = (0.25 + np.arcsin(_clip(R[..., 0, 1])) / (2 * np.pi)) * (0.25 + np.arcsin(_clip(R[..., 2, 3])) / (2 * np.pi))
    cross = [(0, 2), (0, 3), (1, 2), (1, 3)]
    mask = np.zeros((4, 4))
    for i, j in cross:
        mask[i, j] = mask[j, i] = 1.0
    s = (1 - (1 - _GL_U) ** 2).reshape((-1,) + (1,) * (R.ndim - 2) + (1, 1))  # [nodes, ..., 1, 1]
    Rs = R * (1 - mask) + s * R * mask
    P = np.linalg.inv(Rs)
    dp = 0.0
    for i, j in cross:
        k, l = (m for m in range(4) if m not in (i, j))
        rho = Rs[..., i, j]
        partial = _clip(-P[..., k, l] / np.sqrt(P[..., k, k] * P[..., l, l]))
        dp = dp + R[..., i, j] / (2 * np.pi * np.sqrt(np.maximum(1 - rho ** 2, 1e-300))) * (0.25 + np.arcsin(partial) / (2 * np.pi))
    w = (_GL_W * 2 * (1 - _GL_U)).reshape((-1,) + (1,) * (R.ndim - 2))
    total = (w * dp).sum(0)
    return p0 + total


def orthant(C: np.ndarray) -> np.ndarray:
    """``P(x > 0)`` for zero-mean x with covariance ``C: [..., D, D]``, D <= 4."""
    D = C.shape[-1]
    if D == 0:
        return np.ones(C.shape[:-2])
    if D == 1:
        return np.full(C.shape[:-2], 0.5)
    if D == 2:
        return 0.25 + np.arcsin(_corr(C, 0, 1)) / (2 * np.pi)
    if D == 3:
        return 0.125 + (np.arcsin(_corr(C, 0, 1)) + np.arcsin(_corr(C, 0, 2)) + np.arcsin(_corr(C, 1, 2))) / (4 * np.pi)
    return orthant4(C)


def _phi0(C: np.ndarray, k: int) -> np.ndarray:
    return 1 / (_SQRT2PI * np.sqrt(np.maximum(C[..., k, k], 1e-300)))


def _linear_gated(C: np.ndarray, b: int) -> np.ndarray:
    """``E[x_b prod_j 1[x_j > 0]]`` (x_b among the gated ones): ``sum_m C_bm phi_m(0) P(rest > 0 | x_m = 0)``."""
    return sum(C[..., b, m] * _phi0(C, m) * orthant(_condition(C, m)) for m in range(C.shape[-1]))


def quadratic_gated(C: np.ndarray, a: int, b: int) -> np.ndarray:
    """``E[x_a x_b prod_j 1[x_j > 0]]`` over all D variables of ``C: [..., D, D]`` (a may equal b)."""
    out = C[..., a, b] * orthant(C)
    for k in range(C.shape[-1]):
        if k != b:
            out = out + C[..., a, k] * _phi0(C, k) * _linear_gated(_condition(C, k), b - (b > k))
    return out


def relu_i4(omega: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``E[1[a>0] 1[b>0] relu(c) relu(d)]`` for index tuples ``idx: [n, 4]`` into the covariance ``omega``.

    Repeated indices are merged first (1[x>0]^2 = 1[x>0], 1[x>0] relu(x) = relu(x),
    relu(x)^2 = x^2 1[x>0]), so every integral left is over distinct fields:
    ``E[x_c x_d prod 1[x > 0]]`` of 1 to 4 variables (``quadratic_gated``).
    """
    idx = _same_fields(omega)[idx]
    out = np.empty(len(idx))
    key = (idx.shape, idx.tobytes())
    if key not in _MERGED:
        _MERGED[key] = _merged(idx)
    for (D, a, b), (rows, var) in _MERGED[key].items():
        out[rows] = quadratic_gated(omega[var[:, :, None], var[:, None, :]], a, b)
    return out


_MERGED: dict[tuple, dict] = {}


def _same_fields(omega: np.ndarray, tol: float = 1e-12) -> np.ndarray:
    """For each field, the first field equal to it (same variance, covariance = variance, to ``tol``
    relative): a student that is exactly a teacher node (perfect learning) is merged like a repeated index."""
    d = np.diag(omega)
    scale = tol * np.maximum(np.abs(d)[:, None], np.abs(d)[None, :])
    same = (np.abs(omega - d[:, None]) <= scale) & (np.abs(d[:, None] - d[None, :]) <= scale)
    return same.argmax(axis=1)


def _merged(idx: np.ndarray) -> dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]]:
    """Tuples grouped by (distinct fields D, position of c, position of d): rows and ``[rows, D]`` field indices."""
    groups: dict[tuple, tuple[list[int], list[list[int]]]] = {}
    for r, t in enumerate(idx.tolist()):
        distinct = list(dict.fromkeys(t))
        g = groups.setdefault((len(distinct), distinct.index(t[2]), distinct.index(t[3])), ([], []))
        g[0].append(r)
        g[1].append(distinct)
    return {key: (np.array(rows), np.array(var).reshape(len(rows), key[0])) for key, (rows, var) in groups.items()}


# ---- the ODE ----
@dataclass
class Overlaps:
    """One state: ``Q: [K, K]``, ``R: [K, M]``, ``T: [M, M]``, ``V: [C, K]``, ``Vt: [C, M]`` (V*)."""

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    V: np.ndarray
    Vt: np.ndarray

    @property
    def omega(self) -> np.ndarray:
        """Covariance of all fields, students first: ``[[Q, R], [R^T, T]]``, ``[K+M, K+M]``."""
        return np.block([[self.Q, self.R], [self.R.T, self.T]])

    @property
    def A(self) -> np.ndarray:
        """``y* - y = A g(fields)``: ``[C, K+M] = [-V, V*]``."""
        return np.concatenate([-self.V, self.Vt], axis=1)


def i2_matrix(act: str, om: np.ndarray) -> np.ndarray:
    d = np.diag(om)
    f = erf_i2 if act == "erf" else relu_i2
    return f(d[:, None], d[None, :], om)


def i3_tensor(act: str, om: np.ndarray, K: int) -> np.ndarray:
    """``I3[i, b, p] = E[g'(f_i) f_b g(f_p)]``, i over students, b and p over all fields."""
    d = np.diag(om)
    f = erf_i3 if act == "erf" else relu_i3
    caa = d[:K, None, None]
    return f(caa, d[None, :, None], d[None, None, :], om[:K, :, None], om[:K, None, :], om[None, :, :])


def i4_tensor(act: str, om: np.ndarray, K: int) -> np.ndarray:
    """``I4[i, k, p, q] = E[g'(f_i) g'(f_k) g(f_p) g(f_q)]``, i, k over students."""
    P = om.shape[0]
    idx, inverse = _i4_index(K, P)
    if act == "erf":
        vals = erf_i4(om[idx[:, :, None], idx[:, None, :]])
    else:
        vals = relu_i4(om, idx)
    return vals[inverse]


_I4_INDEX: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _i4_index(K: int, P: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct tuples of ``I4[i, k, p, q]`` (symmetric in i <-> k and p <-> q), and where each entry reads."""
    if (K, P) not in _I4_INDEX:
        full = np.stack(np.meshgrid(np.arange(K), np.arange(K), np.arange(P), np.arange(P), indexing="ij"), -1)
        canon = np.concatenate([np.sort(full[..., :2], -1), np.sort(full[..., 2:], -1)], -1).reshape(-1, 4)
        idx, inverse = np.unique(canon, axis=0, return_inverse=True)
        _I4_INDEX[(K, P)] = (idx, inverse.reshape(K, K, P, P))
    return _I4_INDEX[(K, P)]


def eg(act: str, s: Overlaps) -> float:
    """``eps_g = (1/2) E||y* - y||^2 = (1/2) sum_pq (A^T A)_pq I2(p, q)``."""
    A = s.A
    return 0.5 * float(np.sum((A.T @ A) * i2_matrix(act, s.omega)))


def derivatives(act: str, s: Overlaps, lr_w: float, lr_v: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dQ/dt, dR/dt, dV/dt)`` at state ``s`` (module docstring)."""
    K = s.Q.shape[0]
    om, A = s.omega, s.A
    B = s.V.T @ A  # [K, K+M]: delta_i = g'(lambda_i) sum_p B_ip g(f_p)
    d3 = np.einsum("ip,ibp->ib", B, i3_tensor(act, om, K))  # E[delta_i f_b]
    dQ = lr_w * (d3[:, :K] + d3[:, :K].T)
    if lr_w:
        dQ = dQ + lr_w ** 2 * np.einsum("ip,kq,ikpq->ik", B, B, i4_tensor(act, om, K))
    dR = lr_w * d3[:, K:]
    dV = lr_v * (A @ i2_matrix(act, om)[:, :K]) if lr_v else np.zeros_like(s.V)
    return dQ, dR, dV


def integrate(act: str, s0: Overlaps, lr_w: float, lr_v: float, times: np.ndarray, dt: float | None = None
              ) -> list[Overlaps]:
    """Classic RK4 with step ``<= dt`` from ``t = 0``, returning the state at each of ``times`` (sorted, >= 0).

    Default ``dt = 0.05 / max(1, eta_w, eta_v)``: halving it changes eps_g by ~1e-10 (K = M = 2, ReLU).
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; known: {', '.join(ACTIVATIONS)}")
    dt = 0.05 / max(1.0, lr_w, lr_v) if dt is None else dt
    out, s, t = [], s0, 0.0

    def step(s: Overlaps, h: float) -> Overlaps:
        def add(base: Overlaps, k, c: float) -> Overlaps:
            return Overlaps(base.Q + c * k[0], base.R + c * k[1], base.T, base.V + c * k[2], base.Vt)
        k1 = derivatives(act, s, lr_w, lr_v)
        k2 = derivatives(act, add(s, k1, h / 2), lr_w, lr_v)
        k3 = derivatives(act, add(s, k2, h / 2), lr_w, lr_v)
        k4 = derivatives(act, add(s, k3, h), lr_w, lr_v)
        k = tuple((a + 2 * b + 2 * c + d) / 6 for a, b, c, d in zip(k1, k2, k3, k4))
        return add(s, k, h)

    for target in times:
        while t < target - 1e-12:
            h = min(dt, target - t)
            s, t = step(s, h), t + h
            s.Q = 0.5 * (s.Q + s.Q.T)
        out.append(s)
    return out
