"""Lucky-by-construction students: some student nodes start at the teacher's weights.

With ``student.lucky_nodes = k`` (one value, or one per hidden layer) the first ``k_l``
student nodes of hidden layer ``l`` are noisy copies of teacher nodes ``0..k_l-1``, and the
other ``n_l - k_l`` keep their random initialisation. Every copied number gets independent
Gaussian noise of std ``student.lucky_noise`` (drawn per ensemble member from its seed):

- lucky node ``j`` of layer ``l``: incoming weights ``W_l[j, i]`` = the teacher's for the
  lucky nodes ``i < k_{l-1}`` below (all ``d`` inputs for the lowest layer), 0 for the
  unlucky ones, plus noise on the whole row; bias = the teacher's plus noise;
- output layer: the columns of the lucky top-layer nodes and the output biases = the
  teacher's plus noise; the columns of the unlucky nodes stay random.

With ``k_l = m_l`` in every layer the lucky nodes form a noisy copy of the whole teacher
inside the student: the unlucky nodes only add error, and gradient descent shrinks their
fan-out (Luck Matters, the ``--perturb`` experiment of the official code, which also
added the teacher to the lucky part of a noise initialisation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module (no import cycle at run time)
    from .config import StudentConfig

import torch

from .seeds import Stream, generator
from .ensemble import Ensemble
from .teacher import Teacher



def lucky_per_layer(nodes: int | tuple[int, ...], layers: int) -> tuple[int, ...]:
    """``student.lucky_nodes`` per hidden layer (one value for every layer, or one per layer)."""
    return nodes if isinstance(nodes, tuple) else (nodes,) * layers


def check_lucky(cfg: StudentConfig, teacher_widths: tuple[int, ...]) -> None:
    """Raise ``ValueError`` for lucky counts that are negative, too many, or noise without lucky nodes."""
    if isinstance(cfg.lucky_nodes, tuple) and len(cfg.lucky_nodes) != len(teacher_widths):
        raise ValueError(f"student.lucky_nodes has {len(cfg.lucky_nodes)} values but the teacher has "
                         f"{len(teacher_widths)} hidden layers")
    k = lucky_per_layer(cfg.lucky_nodes, len(teacher_widths))
    if any(v < 0 for v in k):
        raise ValueError(f"student.lucky_nodes must be >= 0, got {cfg.lucky_nodes}")
    over = [(l, v, m) for l, (v, m) in enumerate(zip(k, teacher_widths)) if v > m]
    if over:
        raise ValueError("student.lucky_nodes copies distinct teacher nodes, so it is at most the teacher width: "
                         + ", ".join(f"layer {l} asks {v} of {m}" for l, v, m in over))
    if cfg.lucky_noise > 0 and not any(k):
        raise ValueError("student.lucky_noise needs student.lucky_nodes > 0")


@torch.no_grad()
def plant_lucky(ens: Ensemble, teacher: Teacher, nodes: int | tuple[int, ...], sigma: float,
                seeds: tuple[int, ...]) -> None:
    """Overwrite the lucky part of every member's weights in place (a no-op with no lucky nodes):
    ``nodes`` = ``student.lucky_nodes``, ``sigma`` = ``student.lucky_noise``, one member per seed."""
    L = len(ens.weights) - 1
    k = lucky_per_layer(nodes, L)
    if not any(k):
        return
    all_teachers = teacher
    for member, seed in enumerate(seeds):
        teacher = all_teachers.member(member)
        gen = generator(seed, Stream.LUCKY)

        def noisy(t: torch.Tensor, gen: torch.Generator = gen) -> torch.Tensor:
            return t + sigma * torch.randn(t.shape, generator=gen, dtype=torch.float64) if sigma > 0 else t

        for l in range(L):
            rows = k[l]
            w_t, b_t = teacher.weights[l].cpu().double(), teacher.biases[l].cpu().double()
            fan_in = ens.weights[l].shape[2]
            w = torch.zeros(rows, fan_in, dtype=torch.float64)
            cols = fan_in if l == 0 else k[l - 1]
            w[:, :cols] = w_t[:rows, :cols]
            ens.weights[l][member, :rows].copy_(noisy(w))
            ens.biases[l][member, :rows].copy_(noisy(b_t[:rows]))
        w_out, b_out = teacher.weights[-1].cpu().double(), teacher.biases[-1].cpu().double()
        ens.weights[-1][member, :, :k[-1]].copy_(noisy(w_out[:, :k[-1]]))
        ens.biases[-1][member].copy_(noisy(b_out))
