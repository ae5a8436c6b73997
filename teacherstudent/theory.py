"""Theory statistics ``beta`` and ``H`` (docs/science.md §4), batched over samples and members.

Glossary: hidden layers ``l = 0..L-1`` bottom up, the output layer is ``L``; student widths
``n_l``, teacher widths ``m_l``, ``C`` outputs, ``K`` ensemble members, ``S`` samples of one
chunk. Augmented weights ``W^_l = [[W_l, b_l], [0, 1]]`` (``[n_l+1, n_{l-1}+1]``; the output
layer has no constant row: ``[C, n_{L-1}+1]``), augmented activations ``f^_l = [f_l; 1]`` and
gates ``g^_l = [g_l; 1]`` (``g`` = the activation's slope at the pre-activation: 1 where a
ReLU is on, 0 (ReLU) or the leaky slope (teacher) where it is off).

Walking down from ``H_L = I``: ``beta_l(x) = W^_{l+1}^T H_{l+1}(x) W*^_{l+1}`` and
``H_l(x) = beta_l(x) * (g^_l(x) g*^_l(x)^T)``, for the pair (student, teacher) (``A_l``,
``[n_l+1, m_l+1]``) and (student, student) (``B_l``, ``[n_l+1, n_l+1]``). With BatchNorm,
students are measured in evaluation mode, where BatchNorm is the per-node affine map
``u = a z + c`` (``a = gamma / sqrt(running_var + eps)``, ``c = beta - a * running_mean``); it is
folded into the layer (``W~ = diag(a) W``, ``b~ = a b + c``), so ``beta`` and ``H`` are those of
the folded network and the gradient at the pre-BatchNorm ``z_l`` carries the Jacobian ``diag(a)``.

``sum_betas`` computes the per-sample matrices for a chunk of samples and members at once
(batched matmuls, no loop over samples) and ``mean_betas`` averages them over an evaluation
set in chunks sized from a byte budget. ``theory_tables`` turns the means into the rows of
``theory.parquet`` and ``theory_nodes.parquet``; ``TheoryRecorder`` writes them during a run.

Convolutional nets (``arch='conv'``) are measured as their dense unrolled form over flattened units
(channel x position; ``conv_net``), so the same code runs on flattened images; ``channel_blocks``
then averages the same-position entries of each channel block over positions, and the tables are
per channel (docs/science.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .schedule import theory_steps
from .tables import TableRecorder

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .loop import Trainer

DEFAULT_BUDGET = 256 * 2**20  # bytes of per-sample beta/H intermediates held at once
PAIRS = ("student_teacher", "student_student")


@dataclass(frozen=True)
class Net:
    """Weights ``[K or 1, out, in]`` and biases ``[K or 1, out]`` per layer (output last), the
    hidden activation's slope where it is off, and the augmented weights ``[K or 1, ., .]``."""

    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    slope: float = 0.0

    def augmented(self) -> list[torch.Tensor]:
        out = []
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            a = torch.cat([w, b[..., None]], -1)
            if l < len(self.weights) - 1:
                row = torch.zeros(*a.shape[:-2], 1, a.shape[-1], dtype=a.dtype, device=a.device)
                row[..., -1] = 1
                a = torch.cat([a, row], -2)
            out.append(a)
        return out

    def gates(self, x_SxD: torch.Tensor) -> list[torch.Tensor]:
        """Augmented gates ``g^`` (``[K or 1, S, width+1]``) of every hidden layer."""
        h, gs = x_SxD, []
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            z = torch.matmul(h, w.transpose(-1, -2)) + b[..., None, :]
            on = z > 0
            g = on.to(z.dtype) if not self.slope else on.to(z.dtype) * (1 - self.slope) + self.slope
            h = g * z
            gs.append(torch.cat([g, torch.ones(*z.shape[:-1], 1, dtype=z.dtype, device=z.device)], -1))
        return gs


def student_net(ens) -> Net:
    """The students as a ``Net``; BatchNorm (evaluation mode) folded into each hidden layer. Convolutional
    students (``arch='conv'``) are unrolled to their dense form (``conv_net``)."""
    if hasattr(ens, "geom"):
        return conv_net(ens)
    ws, bs = list(ens.weights), list(ens.biases)
    if ens.batchnorm:
        for l in range(len(ws) - 1):
            a, mean, beta = bn_affine(ens, l)
            ws[l], bs[l] = a[..., None] * ws[l], a * (bs[l] - mean) + beta
    return Net(tuple(w.detach() for w in ws), tuple(b.detach() for b in bs))


@torch.no_grad()
def conv_net(model, device=None, dtype=None) -> Net:
    """A convolutional teacher (``ConvTeacher``, ``[1, ...]``) or ensemble (``ConvEnsemble``, ``[K, ...]``) as
    the ``Net`` of its dense unrolled form over flattened units (docs/science.md §4): conv layer ``l`` becomes
    the matrix ``[n_l P_l, n_{l-1} P_{l-1}]`` (unit ``c * P + p``, the ``[C, H, W]`` flattening; the input is
    the flattened image) with its bias repeated over positions, BatchNorm (evaluation mode) folded per channel;
    the readout is already dense. The matrix is the layer's ``conv2d`` (no bias) applied to the identity basis
    of its flattened input."""
    g = model.geom
    weights = list(model.weights) if hasattr(model, "params") else [w[None] for w in model.weights]
    biases = list(model.biases) if hasattr(model, "params") else [b[None] for b in model.biases]
    device = device or weights[0].device
    dtype = dtype or weights[0].dtype
    weights = [w.detach().to(device, dtype) for w in weights]
    biases = [b.detach().to(device, dtype) for b in biases]
    shape = g.image
    ws, bs = [], []
    for l, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
        K, n, D = w.shape[0], w.shape[1], math.prod(shape)
        basis = torch.eye(D, dtype=dtype, device=device).view(D, *shape)
        cols = F.conv2d(basis, w.reshape(K * n, *w.shape[2:]), stride=g.strides[l], padding=g.paddings[l])
        shape = (n, *cols.shape[2:])
        P = cols.shape[2] * cols.shape[3]
        dense = cols.view(D, K, n * P).permute(1, 2, 0)  # [K, n P, D]
        bias = b
        if getattr(model, "batchnorm", False):
            a, mean, beta = bn_affine(model, l, device, dtype)
            dense, bias = a.repeat_interleave(P, -1)[..., None] * dense, a * (b - mean) + beta
        ws.append(dense.contiguous())
        bs.append(bias.repeat_interleave(P, -1))
    return Net((*ws, weights[-1]), (*bs, biases[-1]), getattr(model, "leaky_slope", 0.0))


def channel_blocks(betas: list[tuple[torch.Tensor, torch.Tensor]], positions: list[int]
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Channel-level means from the unrolled (unit-level) means of a conv net: ``X_ch[j, k] = mean_p
    X[(j, p), (k, p)]`` (same-position entries, averaged over the ``P_l`` positions of layer ``l``); the
    constant's row and column are averaged over positions likewise (``[K, n_l+1, m_l+1]``)."""
    out = []
    for (A, B), P in zip(betas, positions):
        out.append(tuple(_blocks(X, P) for X in (A, B)))
    return out  # type: ignore[return-value]


def _blocks(X: torch.Tensor, P: int) -> torch.Tensor:
    K, r, c = X.shape
    n, m = (r - 1) // P, (c - 1) // P
    out = X.new_empty(K, n + 1, m + 1)
    out[:, :n, :m] = X[:, :-1, :-1].reshape(K, n, P, m, P).diagonal(dim1=2, dim2=4).mean(-1)
    out[:, :n, m] = X[:, :-1, -1].reshape(K, n, P).mean(-1)
    out[:, n, :m] = X[:, -1, :-1].reshape(K, m, P).mean(-1)
    out[:, n, m] = X[:, -1, -1]
    return out


def bn_affine(model, l: int, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden layer ``l``'s BatchNorm in evaluation mode, ``BN(z) = a (z - mean) + beta``: ``(a, mean, beta)``,
    each ``[K, n_l]``, with ``a = gamma / sqrt(running_var + eps)`` (its Jacobian)."""
    gamma, beta = model.bn_params[2 * l], model.bn_params[2 * l + 1]
    mean, var = model.bn_buffers[2 * l], model.bn_buffers[2 * l + 1]
    if device is not None:
        gamma, beta, mean, var = (t.to(device, dtype) for t in (gamma, beta, mean, var))
    return gamma / torch.sqrt(var + model.BN_EPS), mean, beta


def bn_scale(ens) -> list[torch.Tensor] | None:
    """BatchNorm's Jacobian ``a_l = gamma / sqrt(running_var + eps)`` (``[K, n_l]``), or None without it."""
    if not ens.batchnorm:
        return None
    return [bn_affine(ens, l)[0].detach() for l in range(len(ens.weights) - 1)]


def teacher_net(teacher, K: int, device, dtype) -> Net:
    """The teacher (one shared, ``[1, ...]``, or one per member, ``[K, ...]``) on ``device``; a convolutional
    teacher unrolled to its dense form (``conv_net``)."""
    if hasattr(teacher, "geom"):
        return conv_net(teacher, device, dtype)
    members = [teacher.member(k) for k in range(K)] if teacher.per_member else [teacher]
    L = len(members[0].weights)
    ws = tuple(torch.stack([t.weights[l] for t in members]).to(device, dtype) for l in range(L))
    bs = tuple(torch.stack([t.biases[l] for t in members]).to(device, dtype) for l in range(L))
    return Net(ws, bs, members[0].leaky_slope)


def _right(X: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """``X @ R`` for per-sample ``X`` ``[K, S, a, b]`` and a per-member ``R`` ``[K or 1, b, c]``, as one
    batched matmul over members (``torch.matmul`` would copy ``R`` once per sample)."""
    K, S, a, b = X.shape
    return torch.matmul(X.reshape(K, S * a, b), R).view(K, S, a, R.shape[-1])


def _left(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``W^T @ X`` for ``W`` ``[K or 1, a, b]`` and per-sample ``X`` ``[K, S, a, c]``: ``(X^T W)^T``."""
    return _right(X.transpose(-1, -2).contiguous(), W).transpose(-1, -2)


def _sandwich(left: torch.Tensor, H: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``left^T H right`` per sample (``left``, ``right`` per member), multiplied in the cheaper order."""
    a, b = left.shape[-1], H.shape[-2]
    c, d = H.shape[-1], right.shape[-1]
    if a * b * c + a * c * d < b * c * d + a * b * d:
        return _right(_left(left, H), right)
    return _left(left, _right(H, right))


def sum_betas(student: Net, teacher: Net, x_SxD: torch.Tensor, per_sample: bool = False
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per hidden layer ``(A_l, B_l)``: ``beta`` of (student, teacher) and (student, student),
    summed over the samples of ``x`` (``[K, n_l+1, m_l+1]``, ``[K, n_l+1, n_l+1]``), or with
    ``per_sample`` one per sample (``[K, S, ...]``). Augmented: the last row/column is the bias's."""
    S = x_SxD.shape[0]
    Ws, Ts = student.augmented(), teacher.augmented()
    gs, gt = student.gates(x_SxD), teacher.gates(x_SxD)
    L = len(Ws) - 1
    K = Ws[0].shape[0]
    A = torch.matmul(Ws[L].transpose(-1, -2), Ts[L])[:, None]  # [K, 1, n+1, m+1]: H_L = I
    B = torch.matmul(Ws[L].transpose(-1, -2), Ws[L])[:, None]
    out: list[tuple[torch.Tensor, torch.Tensor]] = [None] * L  # type: ignore[list-item]
    for l in range(L - 1, -1, -1):
        if per_sample:
            out[l] = (A.expand(K, S, *A.shape[2:]), B.expand(K, S, *B.shape[2:]))
        else:
            out[l] = (A.sum(1) if A.shape[1] == S else A[:, 0] * S, B.sum(1) if B.shape[1] == S else B[:, 0] * S)
        if l == 0:
            break
        if not B.is_contiguous() and B.mT.is_contiguous():
            B = B.mT  # B is symmetric: its transpose is the same matrix, laid out for the next products
        # H = beta * (g g*^T), written contiguously (the products below then need no copy)
        HA = torch.mul(A, gs[l][..., :, None], out=A.new_empty(K, S, *A.shape[2:])).mul_(gt[l][..., None, :])
        HB = torch.mul(B, gs[l][..., :, None], out=B.new_empty(K, S, *B.shape[2:])).mul_(gs[l][..., None, :])
        if l == 1 and not per_sample:  # the lowest layer is only summed: sum_x W^T H W = W^T (sum_x H) W
            HA, HB = HA.sum(1, keepdim=True), HB.sum(1, keepdim=True)
            out[0] = (_sandwich(Ws[1], HA, Ts[1])[:, 0], _sandwich(Ws[1], HB, Ws[1])[:, 0])
            break
        A = _sandwich(Ws[l], HA, Ts[l])
        B = _sandwich(Ws[l], HB, Ws[l])
    return out


def samples_per_chunk(student_widths: list[int], teacher_widths: list[int], K: int, itemsize: int,
                      budget_bytes: float = DEFAULT_BUDGET) -> tuple[int, int]:
    """``(members, samples)`` per chunk so that the per-sample intermediates fit ``budget_bytes``."""
    n = [w + 1 for w in student_widths]
    m = [w + 1 for w in teacher_widths]
    per = max(3 * (n[l] * m[l] + n[l] * n[l]) + 2 * (n[l - 1] * n[l] + n[l - 1] * m[l]) if l else 3 * (n[0] * m[0] + n[0] * n[0])
              for l in range(len(n))) * itemsize  # bytes per (member, sample)
    units = max(1, int(budget_bytes // per))
    return (K, max(1, units // K)) if units >= K else (units, 1)


@torch.no_grad()
def mean_betas(teacher, ens, x_NxD: torch.Tensor, budget_bytes: float = DEFAULT_BUDGET
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``E_x[A_l]``, ``E_x[B_l]`` over the samples ``x`` for every member (float64, on ``x``'s device),
    in chunks of members and samples that keep the intermediates within ``budget_bytes``."""
    K, N = ens.K, x_NxD.shape[0]
    st = student_net(ens)
    tn = teacher_net(teacher, K, x_NxD.device, x_NxD.dtype)
    kc, sc = samples_per_chunk([w.shape[1] for w in st.weights[:-1]], [w.shape[1] for w in tn.weights[:-1]], K,
                               x_NxD.element_size(), budget_bytes)
    sums: list[list[torch.Tensor]] | None = None
    rows: list[list[list[torch.Tensor]]] = []
    for k0 in range(0, K, kc):
        k1 = min(K, k0 + kc)
        sub = Net(tuple(w[k0:k1] for w in st.weights), tuple(b[k0:k1] for b in st.biases))
        tsub = tn if tn.weights[0].shape[0] == 1 else Net(tuple(w[k0:k1] for w in tn.weights),
                                                            tuple(b[k0:k1] for b in tn.biases), tn.slope)
        sums = None
        for s0 in range(0, N, sc):
            part = sum_betas(sub, tsub, x_NxD[s0:s0 + sc])
            if sums is None:
                sums = [[a.double(), b.double()] for a, b in part]
            else:
                for acc, (a, b) in zip(sums, part):
                    acc[0] += a
                    acc[1] += b
        rows.append(sums)
    return [(torch.cat([r[l][0] for r in rows]) / N, torch.cat([r[l][1] for r in rows]) / N) for l in range(len(rows[0]))]


def _diag_off(a_Kxnxm: torch.Tensor, diag_Kxn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``|.|`` of the chosen "diagonal" entries and of all the others, ``[K]`` each (NaN: none)."""
    n, m = a_Kxnxm.shape[1:]
    total = a_Kxnxm.abs().sum((1, 2))
    d = diag_Kxn.abs()
    off = (total - d.sum(1)) / (n * m - n) if n * m > n else torch.full_like(total, float("nan"))
    return d.mean(1), off


def theory_tables(betas: list[tuple[torch.Tensor, torch.Tensor]], corr: list[torch.Tensor]
                  ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The statistics of the means ``betas`` given the correlations ``C_l`` ``[K, m_l, n_l]``.

    Returns long columns for ``theory`` (``member`` index, ``layer``, ``pair``, ``statistic``,
    ``value``) and ``theory_nodes`` (one row per member, layer, student node). Student-teacher
    "diagonal": each student node ``j`` with its best teacher node ``k*(j) = argmax_k C_l[k, j]``;
    student-student: ``j`` with itself. ``beta_strength = sqrt(E[B_jj])``.
    """
    rows: dict[str, list] = {k: [] for k in ("member", "layer", "pair", "statistic", "value")}
    nodes: dict[str, list] = {k: [] for k in ("member", "layer", "student_node", "beta_self", "beta_strength",
                                              "beta_aligned", "best_corr", "best_teacher")}
    for l, ((A, B), C) in enumerate(zip(betas, corr)):
        A, B = A[:, :-1, :-1].cpu(), B[:, :-1, :-1].cpu()  # the nodes (the constant row/column dropped)
        K, n, m = A.shape
        best = C.double().max(1)  # over teacher nodes: [K, n]
        aligned = A.gather(2, best.indices[..., None])[..., 0]
        self_ = B.diagonal(dim1=1, dim2=2)
        for pair, mat, diag in (("student_teacher", A, aligned), ("student_student", B, self_)):
            d, off = _diag_off(mat, diag)
            for k in range(K):
                for stat, v in (("diag_abs_mean", d[k]), ("offdiag_abs_mean", off[k]), ("diag_offdiag_ratio", d[k] / off[k])):
                    for col, val in zip(rows, (k, l, pair, stat, float(v))):
                        rows[col].append(val)
        nodes["member"].append(np.repeat(np.arange(K), n))
        nodes["layer"].append(np.full(K * n, l))
        nodes["student_node"].append(np.tile(np.arange(n), K))
        nodes["beta_self"].append(self_.flatten().numpy())
        nodes["beta_strength"].append(self_.clamp_min(0).sqrt().flatten().numpy())
        nodes["beta_aligned"].append(aligned.flatten().numpy())
        nodes["best_corr"].append(best.values.flatten().numpy())
        nodes["best_teacher"].append(best.indices.flatten().numpy())
    return ({k: np.asarray(v) for k, v in rows.items()}, {k: np.concatenate(v) for k, v in nodes.items()})


class TheoryRecorder(TableRecorder):
    """``theory.parquet`` and ``theory_nodes.parquet`` at ``measure.theory_every`` (init and end included),
    on the first ``measure.theory_samples`` evaluation samples; correlations on the whole evaluation set."""

    tables: ClassVar[tuple[str, ...]] = ("theory", "theory_nodes")

    @classmethod
    def wanted(cls, cfg: ExperimentConfig) -> bool:
        return cfg.measure.theory_every != "none"

    def steps(self, tr: Trainer) -> set[int]:
        return theory_steps(self.cfg.measure, tr.total_steps)

    def rows(self, tr: Trainer) -> dict[str, pd.DataFrame]:
        d = tr.data
        N = self.cfg.measure.theory_samples or d.x_eval.shape[0]
        betas = mean_betas(tr.teacher, tr.ens, d.x_eval[:N])
        if hasattr(tr.ens, "geom"):  # conv: the unrolled means -> channel blocks (docs/science.md §4)
            betas = channel_blocks(betas, tr.ens.geom.positions())
        theory, nodes = theory_tables(betas, tr.snapshot().corr)
        seeds = np.asarray(self.cfg.student.seeds)
        fanout = np.concatenate([f.double().cpu().numpy().reshape(-1) for f in tr.ens.fanout_norms()])
        head = {"run": self.cfg.run_id}
        t = pd.DataFrame({**head, "member": seeds[theory.pop("member")], "step": tr.step, **theory})
        nd = pd.DataFrame({**head, "member": seeds[nodes.pop("member")], "step": tr.step, **nodes,
                           "fanout_norm": fanout})
        return {"theory": t, "theory_nodes": nd}
