"""The public tables of a finished run, built from its measurement history.

``metrics.parquet``: ``run, member, step, epoch, split, layer, metric, value``.
``teacher_nodes.parquet``: one row per (run, member, layer, teacher_node): the final
winner ``j*(k)`` (the student with the highest final correlation), its initial rank among
all students by initial correlation as a top-% (``100 * rank / n_l``, rank 1 = best), its
initial and final correlation, the first measured step at which the winner's correlation
reached 0.9 / 0.95 (null if never), the match count (students above 0.9 at the end) and
the teacher node's own fan-out norm (its strength).
``student_nodes.parquet``: one row per (run, member, layer, student_node, step) at
initialisation, the end and any ``measure.corr_steps``: best correlation over teacher
nodes, which teacher, fan-out norm; plus the first steps its best correlation reached
0.9 / 0.95.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .store import write_npz, write_parquet

THRESHOLDS = (0.9, 0.95)


def first_step(series: torch.Tensor, steps: torch.Tensor, threshold: float) -> torch.Tensor:
    """``series``: ``[T, ...]`` values at measured ``steps`` ``[T]``; first step >= threshold, else -1."""
    hit = series >= threshold
    idx = hit.float().argmax(0)
    return torch.where(hit.any(0), steps[idx], torch.full_like(idx, -1))


def _nullable(a: torch.Tensor) -> pd.array:
    return pd.array([None if v < 0 else int(v) for v in a.flatten().tolist()], dtype="Int64")


def teacher_table(run_id: str, seeds, history, teacher_fanout: list[torch.Tensor]) -> pd.DataFrame:
    steps = torch.tensor([h.step for h in history])
    frames = []
    for l in range(len(history[0].corr)):
        C_t = torch.stack([h.corr[l] for h in history])  # [T, K, m, n]
        C0, C1 = C_t[0], C_t[-1]
        K, m, n = C1.shape
        winner = C1.argmax(2)  # [K, m]
        init_of_winner = C0.gather(2, winner[..., None])[..., 0]
        rank = (C0 > init_of_winner[..., None]).sum(2) + 1
        track = C_t.gather(3, winner[None, ..., None].expand(len(history), K, m, 1))[..., 0]  # [T, K, m]
        df = pd.DataFrame({
            "run": run_id,
            "member": np.repeat(np.asarray(seeds), m),
            "layer": l,
            "teacher_node": np.tile(np.arange(m), K),
            "winner": winner.flatten().numpy(),
            "init_rank_pct": (100.0 * rank / n).flatten().numpy(),
            "init_corr": init_of_winner.flatten().double().numpy(),
            "final_corr": C1.max(2).values.flatten().double().numpy(),
            "step_corr_0.9": _nullable(first_step(track, steps, 0.9)),
            "step_corr_0.95": _nullable(first_step(track, steps, 0.95)),
            "match_count": (C1 > 0.9).sum(2).flatten().numpy(),
            "teacher_fanout_norm": np.tile(teacher_fanout[l].numpy(), K),
        })
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def student_table(run_id: str, seeds, history, keep_steps: set[int]) -> pd.DataFrame:
    steps = torch.tensor([h.step for h in history])
    frames = []
    for l in range(len(history[0].corr)):
        best_t = torch.stack([h.corr[l].max(1).values for h in history])  # [T, K, n]
        passes = {t: first_step(best_t, steps, t) for t in THRESHOLDS}
        for i, h in enumerate(history):
            if not (i == 0 or i == len(history) - 1 or h.step in keep_steps):
                continue
            best = h.corr[l].max(1)
            K, n = best.values.shape
            frames.append(pd.DataFrame({
                "run": run_id,
                "member": np.repeat(np.asarray(seeds), n),
                "layer": l,
                "student_node": np.tile(np.arange(n), K),
                "step": h.step,
                "best_corr": best.values.flatten().double().numpy(),
                "best_teacher": best.indices.flatten().numpy(),
                "fanout_norm": h.fanout[l].flatten().double().numpy(),
                **{f"step_corr_{t}": _nullable(p) for t, p in passes.items()},
            }))
    return pd.concat(frames, ignore_index=True)


def metrics_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["run", "member", "step", "epoch", "split", "layer", "metric", "value"])
    df["layer"] = df["layer"].astype("Int64")
    return df


def corr_arrays(history, keep_steps: set[int]) -> dict[str, np.ndarray]:
    """``step_<s>_layer_<l>`` -> ``[K, m_l, n_l]`` float32 at init, end and ``keep_steps``."""
    out = {}
    for i, h in enumerate(history):
        if i == 0 or i == len(history) - 1 or h.step in keep_steps:
            for l, C in enumerate(h.corr):
                out[f"step_{h.step}_layer_{l}"] = C.numpy().astype(np.float32)
    return out


def write_results(folder: Path, sim, rows: list[dict]) -> None:
    cfg = sim.cfg
    keep = set(cfg.measure.corr_steps)
    seeds = cfg.student.seeds
    teacher_fanout = [w.norm(dim=0).float() for w in sim.teacher.weights[1:]]
    arrays = corr_arrays(sim.history, keep)
    arrays["members"] = np.asarray(seeds)
    write_npz(folder / "corr.npz", arrays)
    write_parquet(folder / "teacher_nodes.parquet", teacher_table(cfg.run_id, seeds, sim.history, teacher_fanout))
    write_parquet(folder / "student_nodes.parquet", student_table(cfg.run_id, seeds, sim.history, keep))
    write_parquet(folder / "metrics.parquet", metrics_table(rows))
