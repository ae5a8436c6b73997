"""Node-alignment measurements (docs/science.md §4), batched over ensemble members.

Glossary: ``C_l[k, j]`` Pearson correlation over evaluation samples between teacher node
``k`` and student node ``j`` of hidden layer ``l`` (shape ``[K, m_l, n_l]`` for the
ensemble); best correlation of teacher node ``k`` is ``max_j C_l[k, j]``; a teacher node is
*recovered* above 0.95 and *covered* above 0.9; its match count is how many students
exceed 0.9; the fan-out norm of student node ``j`` is ``||W_{l+1}[:, j]||``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-8


def standardize(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Centre along ``dim`` and divide by the norm (+EPS): dot products become correlations."""
    a = a - a.mean(dim, keepdim=True)
    return a / (a.norm(dim=dim, keepdim=True) + EPS)


def correlation(teacher_NxM: torch.Tensor, student_KxNxN: torch.Tensor) -> torch.Tensor:
    """Pearson correlation ``[K, m, n]`` between every teacher and student unit (dead units give 0)."""
    t = standardize(teacher_NxM, 0)
    s = standardize(student_KxNxN, 1)
    return torch.matmul(t.T, s)


@dataclass
class Snapshot:
    """One measurement of an ensemble: per hidden layer and member."""

    step: int
    corr: list[torch.Tensor]  # [K, m_l, n_l], CPU float32
    fanout: list[torch.Tensor]  # [K, n_l]
    eval_loss: torch.Tensor  # [K]
    eval_acc: torch.Tensor | None  # [K], classification only

    def layer_stats(self, recovered: float = 0.95, covered: float = 0.9) -> list[dict[str, torch.Tensor]]:
        """Per layer: ``best_corr_mean``, ``best_corr_min``, ``recovered_frac``, ``covered_frac``,
        ``match_count_mean`` and ``fanout_norm_mean``, each ``[K]``."""
        out = []
        for C, f in zip(self.corr, self.fanout):
            best = C.max(dim=2).values
            out.append({
                "best_corr_mean": best.mean(1),
                "best_corr_min": best.min(1).values,
                "recovered_frac": (best > recovered).double().mean(1),
                "covered_frac": (best > covered).double().mean(1),
                "match_count_mean": (C > covered).sum(2).double().mean(1),
                "fanout_norm_mean": f.mean(1),
            })
        return out


def members_per_chunk(widths: list[int], samples: int, itemsize: int, budget_bytes: float = 512e6) -> int:
    """How many members' evaluation activations fit the memory budget at once."""
    per_member = samples * (sum(widths) * 2 + 1) * itemsize
    return max(1, int(budget_bytes // per_member))


def _buffer(ws: dict, key, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """A reusable buffer (large fresh allocations cost page faults on every measurement)."""
    buf = ws.get(key)
    if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0] or buf.dtype != like.dtype:
        buf = ws[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return buf[: shape[0]]


def forward_eval_T(ens, x_NxD: torch.Tensor, ws: dict) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Feature-major ``ens.forward(x, train=False)``: hidden ``[K, n_l, N]`` and output ``[K, C, N]``,
    computed into reused buffers so that reductions over samples run along contiguous memory."""
    if hasattr(ens, "forward_T"):  # an architecture with its own layout (conv: positions as samples)
        return ens.forward_T(x_NxD, ws)
    if ens.batchnorm:
        hidden, out = ens.forward(x_NxD, train=False)
        return [h.transpose(1, 2) for h in hidden], out.transpose(1, 2)
    h, hidden = x_NxD.T, []
    N = x_NxD.shape[0]
    for l, (w, b) in enumerate(zip(ens.weights, ens.biases)):
        K, n = w.shape[:2]
        buf = _buffer(ws, l, (K, n, N), x_NxD)
        torch.matmul(w, h, out=buf)
        buf += b[:, :, None]
        if l < len(ens.weights) - 1:
            h = buf.clamp_min_(0)
            hidden.append(h)
    return hidden, buf


def correlation_T(t_std_NxM: torch.Tensor, h_KxNxN: torch.Tensor) -> torch.Tensor:
    """``correlation`` from the standardised teacher ``[N, m]`` and feature-major students
    ``[K, n, N]``, without copying the students' activations.

    The teacher columns are centred, so ``h @ t_std`` equals ``(h - mean) @ t_std``; the
    student norms come from one contiguous ``var_mean`` pass. A unit whose spread is below
    1e-6 of its mean (dead or constant) correlates 0.
    """
    N = h_KxNxN.shape[2]
    s1 = h_KxNxN.sum(2).double()  # vector_norm and sum are vectorised; var_mean is ~30x slower on CPU
    s2 = torch.linalg.vector_norm(h_KxNxN, dim=2).double().square()
    norm = (s2 - s1.square() / N).clamp_min(0).sqrt()
    # One-pass variance cancels catastrophically for units with a large mean and a small spread
    # (float32: error ~ (mean/std)^2 * eps); recompute those few units with the two-pass formula.
    shaky = (norm.square() < 1e-2 * s2) & (s2 > 0)
    if shaky.any():
        rows = h_KxNxN[shaky].double()  # [units, N], a copy of the few affected units only
        norm[shaky] = (rows - rows.mean(1, keepdim=True)).norm(dim=1)
    C = torch.matmul(h_KxNxN, t_std_NxM) / (norm + EPS).to(h_KxNxN.dtype)[:, :, None]  # [K, n, m]
    C.masked_fill_((norm <= 1e-6 * s1.abs() / N**0.5)[:, :, None], 0.0)
    return C.transpose(1, 2)


def eval_loss_T(out_KxCxN: torch.Tensor, y_eval: torch.Tensor, y_T: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-member loss (as ``train.member_loss`` defines it) and accuracy from feature-major outputs.

    Overwrites ``out_KxCxN`` for MSE. ``y_T``: the ``[C, N]`` regression targets (None for labels).
    """
    K, C, N = out_KxCxN.shape
    if y_eval.dtype == torch.long:
        logp = torch.log_softmax(out_KxCxN, 1)
        labels = y_eval.view(-1, 1, N).expand(K, 1, N)  # [N] shared or [K, N] per member
        loss = -logp.gather(1, labels).mean((1, 2))
        return loss, (out_KxCxN.argmax(1) == y_eval).double().mean(1)
    diff = out_KxCxN.sub_(y_T)
    return torch.linalg.vector_norm(diff, dim=(1, 2)).double().square() / (N * C), None


@torch.no_grad()
def measure(ens, x_eval: torch.Tensor, y_eval: torch.Tensor, teacher_hidden: list[torch.Tensor], step: int,
            member_chunk: int | None = None, workspace: dict | None = None) -> Snapshot:
    """Correlations, fan-out norms and evaluation loss of every member on the evaluation set.

    ``teacher_hidden``: the teacher's post-activations ``[N, m_l]`` on ``x_eval``; ``y_eval``
    float targets ``[N, C]`` (MSE) or long labels ``[N]`` (cross-entropy, also gives accuracy).
    With one teacher per member (``teacher.seeds``) both carry a leading ``K`` axis and each
    member is measured against its own teacher. Members are processed in chunks to bound memory;
    ``workspace`` (a dict kept between calls) holds reusable activation buffers.
    """
    K = ens.K
    ws = workspace if workspace is not None else {}
    chunk = member_chunk or members_per_chunk([w.shape[1] for w in ens.weights], x_eval.shape[0], x_eval.element_size())
    t_std = ws.get("teacher")
    key = tuple(t.data_ptr() for t in teacher_hidden) + (y_eval.data_ptr(),)
    if t_std is None or ws.get("teacher_key") != key:
        ws["teacher_key"] = key
        t_std = ws["teacher"] = [standardize(t, t.dim() - 2) for t in teacher_hidden]  # [N, m] or [K, N, m]
        ws["y_T"] = None if y_eval.dtype == torch.long else y_eval.transpose(-1, -2).contiguous()
    per_member = teacher_hidden[0].dim() == 3
    corr: list[list[torch.Tensor]] = [[] for _ in teacher_hidden]
    losses, accs = [], []
    for k0 in range(0, K, chunk):
        sub = ens.slice(k0, k0 + chunk) if chunk < K else ens
        hidden, out_T = forward_eval_T(sub, x_eval, ws)
        k1 = min(k0 + chunk, K)
        for l, h in enumerate(hidden):
            corr[l].append(correlation_T(t_std[l][k0:k1] if per_member else t_std[l], h).float().cpu())
        if per_member:
            y_T = ws["y_T"][k0:k1] if ws["y_T"] is not None else None
            loss, acc = eval_loss_T(out_T, y_eval[k0:k1], y_T)
        else:
            loss, acc = eval_loss_T(out_T, y_eval, ws["y_T"])
        losses.append(loss.cpu())
        if acc is not None:
            accs.append(acc.cpu())
    return Snapshot(
        step=step,
        corr=[torch.cat(c) for c in corr],
        fanout=[f.float().cpu() for f in ens.fanout_norms()],
        eval_loss=torch.cat(losses).double(),
        eval_acc=torch.cat(accs) if accs else None,
    )
