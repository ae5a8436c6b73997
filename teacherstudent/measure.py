"""Node-alignment measurements (SCIENCE.md section 4), batched over ensemble members.

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


@torch.no_grad()
def measure(ens, x_eval: torch.Tensor, y_eval: torch.Tensor, teacher_hidden: list[torch.Tensor], loss_fn, step: int,
            member_chunk: int | None = None) -> Snapshot:
    """Correlations, fan-out norms and evaluation loss of every member on the evaluation set.

    ``teacher_hidden``: the teacher's post-activations ``[N, m_l]`` on ``x_eval``;
    ``loss_fn(out_KxBxC, y) -> [K]``. Members are processed in chunks to bound memory.
    """
    K = ens.K
    chunk = member_chunk or members_per_chunk([w.shape[1] for w in ens.weights], x_eval.shape[0], x_eval.element_size())
    t_std = [standardize(t, 0).T.contiguous() for t in teacher_hidden]  # [m, N]
    corr: list[list[torch.Tensor]] = [[] for _ in teacher_hidden]
    losses, accs = [], []
    for k0 in range(0, K, chunk):
        sub = ens.slice(k0, k0 + chunk) if chunk < K else ens
        hidden, out = sub.forward(x_eval, train=False)
        for l, h in enumerate(hidden):
            corr[l].append(torch.matmul(t_std[l], standardize(h, 1)).float().cpu())
        losses.append(loss_fn(out, y_eval).cpu())
        if y_eval.dtype == torch.long:
            accs.append((out.argmax(-1) == y_eval).double().mean(1).cpu())
    return Snapshot(
        step=step,
        corr=[torch.cat(c) for c in corr],
        fanout=[f.float().cpu() for f in ens.fanout_norms()],
        eval_loss=torch.cat(losses).double(),
        eval_acc=torch.cat(accs) if accs else None,
    )
