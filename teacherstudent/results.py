"""Recording a run as it trains, and the public tables it ends with.

Measurements stream to disk as they happen (one part file per measurement under
``parts/``), and the node tables come from running reductions kept in the resume
checkpoint, so memory and I/O grow linearly with the number of measurements and the
checkpoint does not grow at all. ``Recorder.finish`` compacts the parts into:

``metrics.parquet``: ``run, member, step, epoch, split, layer, metric, value``; rows come
from the metric callbacks named in ``measure.metrics`` (metrics.py).
``teacher_nodes.parquet``: one row per (run, member, layer, teacher_node): the final
winner ``j*(k)`` (the student with the highest final correlation), its initial rank among
all students by initial correlation as a top-% (``100 * rank / n_l``, rank 1 = best), its
initial and final correlation, the first measured step at which the winner's correlation
reached ``measure.covered`` / ``measure.recovered`` (columns ``step_corr_<threshold>``,
null if never), the match count (students above ``measure.covered`` at the end) and the
teacher node's own fan-out norm (its strength).
``student_nodes.parquet``: one row per (run, member, layer, student_node, step) at
initialisation, the end and any ``measure.corr_steps``: best correlation over teacher
nodes, which teacher, fan-out norm; plus the first steps its best correlation reached
each threshold.
``corr.npz``: ``step_<s>_layer_<l>`` -> ``[K, m_l, n_l]`` at init, end and ``corr_steps``.
Optional tables (``TABLE_RECORDERS``, tables.py) stream their own parts and are compacted here
too: ``theory.parquet`` and ``theory_nodes.parquet`` with ``measure.theory_every`` (theory.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from .loop import Callback, Trainer
from .measure import Snapshot
from .metrics import METRICS, Measurement
from .folder import write_npz, write_parquet
from .tables import TABLE_COLUMNS
from .tables import TableRecorder
from .theory import TheoryRecorder

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .folder import RunFolder

# Extensions that add their own tables (tables.py), each turned on by its config fields.
TABLE_RECORDERS: dict[str, type[TableRecorder]] = {
    "theory": TheoryRecorder,
}


def thresholds(cfg: ExperimentConfig) -> tuple[float, ...]:
    """The node tables' thresholds: ``measure.covered`` and ``measure.recovered``."""
    return tuple(sorted({cfg.measure.covered, cfg.measure.recovered}))


def _nullable(a: torch.Tensor | np.ndarray) -> pd.array:
    """First-pass steps as ``Int64``, missing (``-1``: never reached) as ``<NA>``."""
    v = np.asarray(a).reshape(-1).astype(np.int64)
    missing = v < 0
    return pd.arrays.IntegerArray(np.where(missing, 0, v), missing)


def _frame(parts: list[dict], nullable: tuple[str, ...] = (), **scalars) -> pd.DataFrame:
    """One table from parts of equal columns (numpy arrays, ``nullable`` ones as raw first-pass steps),
    concatenated column by column: the frame ``pd.concat`` of one frame per part gave, built once."""
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return pd.DataFrame({**scalars, **{k: _nullable(v) if k in nullable else v for k, v in cols.items()}})


def metrics_table(rows: list[dict] | dict[str, list]) -> pd.DataFrame:
    """The metrics rows (a list of row dicts, or the columns as lists) in the table's columns and types."""
    if isinstance(rows, dict) and rows:  # columns: the layer typed as it is built, not converted after
        return pd.DataFrame({**rows, "layer": pd.array(rows["layer"], dtype="Int64")}, columns=list(TABLE_COLUMNS["metrics"]))
    df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS["metrics"]))
    df["layer"] = df["layer"].astype("Int64")
    return df


class FirstPass:
    """Running reduction: the first measured step at which each value reached each threshold
    (-1: not yet). Pairs ``[K, m, n]`` (for the final winner of every teacher node, known
    only at the end) and students' best correlation ``[K, n]``, per layer, int32."""

    def __init__(self, thr: tuple[float, ...]):
        self.thr = thr
        self.pair: list[list[torch.Tensor]] = []  # [layer][threshold]
        self.student: list[list[torch.Tensor]] = []

    def update(self, snap: Snapshot) -> None:
        if not self.pair:
            self.pair = [[torch.full(C.shape, -1, dtype=torch.int32) for _ in self.thr] for C in snap.corr]
            self.student = [[torch.full((C.shape[0], C.shape[2]), -1, dtype=torch.int32) for _ in self.thr]
                            for C in snap.corr]
        for l, C in enumerate(snap.corr):
            best = C.max(1).values
            for i, t in enumerate(self.thr):
                for first, value in ((self.pair[l][i], C), (self.student[l][i], best)):
                    first.masked_fill_((first < 0) & (value >= t), snap.step)

    def state_dict(self) -> dict:
        return {"thr": self.thr, "pair": self.pair, "student": self.student}

    def load_state_dict(self, st: dict) -> None:
        self.thr, self.pair, self.student = tuple(st["thr"]), st["pair"], st["student"]


class Recorder(Callback):
    """Measures at the scheduled steps and writes what each measurement adds: metric rows
    (one part per measurement), correlation matrices at the kept steps, running reductions."""

    def __init__(self, folder: RunFolder, cfg: ExperimentConfig):
        self.folder, self.cfg = folder, cfg
        self.metrics = [METRICS[name]() for name in cfg.measure.metrics]
        self.first = FirstPass(thresholds(cfg))
        self.keep = {0, cfg.total_steps, *cfg.measure.corr_steps}
        self.extra = [cls(folder, cfg) for cls in TABLE_RECORDERS.values() if cls.wanted(cfg)]
        self.run_id = cfg.run_id  # a digest of the config: computed once, not per row

    def on_start(self, tr: Trainer) -> None:
        if tr.step == 0:
            self.record(tr, tr.snapshot(), None)
            for ext in self.extra:
                ext.record(tr)

    def on_event(self, tr: Trainer, step: int) -> None:
        if step in tr.measure_at:
            self.record(tr, tr.snapshot(), tr.train_loss())
        for ext in self.extra:
            ext.record(tr)

    def record(self, tr: Trainer, snap: Snapshot, train_loss: torch.Tensor | None) -> None:
        seeds, run = self.cfg.student.seeds, self.run_id
        m = Measurement(snap.step, snap.step / tr.steps_per_epoch, snap, train_loss, self.cfg, tr.data.x_eval.shape[0])
        rows = [(seeds[k], *row) for k in range(len(seeds)) for metric in self.metrics for row in metric.member_rows(m, k)]
        cols: dict[str, list] | list = []  # no rows: an empty table, typed as before
        if rows:
            member, split, layer, name, value = zip(*rows)
            n = len(rows)
            cols = {"run": [run] * n, "member": list(member), "step": [m.step] * n, "epoch": [m.epoch] * n,
                    "split": list(split), "layer": list(layer), "metric": list(name), "value": [float(v) for v in value]}
        self.folder.write_part("metrics", snap.step, metrics_table(cols))
        self.first.update(snap)
        if snap.step in self.keep:
            arrays = {f"corr_{l}": C.numpy() for l, C in enumerate(snap.corr)}
            arrays.update({f"fanout_{l}": f.numpy() for l, f in enumerate(snap.fanout)})
            self.folder.write_part("corr", snap.step, arrays)

    def state_dict(self) -> dict:
        return self.first.state_dict()

    def load_state_dict(self, st: dict) -> None:
        self.first.load_state_dict(st)

    # ---- the tables --------------------------------------------------------
    def finish(self, tr: Trainer) -> None:
        """Compact the parts into the run's tables (every measurement has been recorded)."""
        f, cfg = self.folder, self.cfg
        kept = f.read_parts("corr")  # {step: arrays}, ascending
        steps = sorted(kept)
        L = len(cfg.teacher.widths)
        corr = {s: [torch.from_numpy(kept[s][f"corr_{l}"]) for l in range(L)] for s in steps}
        fanout = {s: [torch.from_numpy(kept[s][f"fanout_{l}"]) for l in range(L)] for s in steps}
        arrays = {f"step_{s}_layer_{l}": kept[s][f"corr_{l}"] for s in steps for l in range(L)}  # float32, as measured
        arrays["members"] = np.asarray(cfg.student.seeds)
        write_npz(f.path / "corr.npz", arrays)
        teacher_fanout = [f.float().cpu() for f in tr.teacher.fanout_norms(len(cfg.student.seeds))]  # [K, m_l]
        write_parquet(f.path / "teacher_nodes.parquet",
                      self.teacher_table(corr[steps[0]], corr[steps[-1]], teacher_fanout))
        write_parquet(f.path / "student_nodes.parquet", self.student_table(corr, fanout))
        f.compact_parts("metrics")
        for ext in self.extra:
            ext.finish()
        f.drop_parts()

    def teacher_table(self, C0s: list[torch.Tensor], C1s: list[torch.Tensor], teacher_fanout: list[torch.Tensor]) -> pd.DataFrame:
        seeds, parts = self.cfg.student.seeds, []
        covered = self.cfg.measure.covered
        names = tuple(f"step_corr_{t:g}" for t in self.first.thr)
        for l, (C0, C1) in enumerate(zip(C0s, C1s)):
            K, m, n = C1.shape
            winner = C1.argmax(2)  # [K, m]
            init_of_winner = C0.gather(2, winner[..., None])[..., 0]
            rank = (C0 > init_of_winner[..., None]).sum(2) + 1
            parts.append({
                "member": np.repeat(np.asarray(seeds), m),
                "layer": np.full(K * m, l),
                "teacher_node": np.tile(np.arange(m), K),
                "winner": winner.flatten().numpy(),
                "init_rank_pct": (100.0 * rank / n).flatten().numpy(),
                "init_corr": init_of_winner.flatten().double().numpy(),
                "final_corr": C1.max(2).values.flatten().double().numpy(),
                **{name: p.gather(2, winner[..., None])[..., 0].flatten().numpy()
                   for name, p in zip(names, self.first.pair[l])},
                "match_count": (C1 > covered).sum(2).flatten().numpy(),
                "teacher_fanout_norm": teacher_fanout[l].flatten().numpy(),
                "teacher_seed": np.repeat(np.asarray(self.teacher_seeds()), m),
            })
        return _frame(parts, names, run=self.run_id)

    def teacher_seeds(self) -> list[int]:
        """Each member's teacher seed (``teacher.seeds``, or ``teacher.seed`` for all)."""
        t = self.cfg.teacher
        return list(t.seeds) if t.seeds is not None else [t.seed] * len(self.cfg.student.seeds)

    def student_table(self, corr: dict[int, list[torch.Tensor]], fanout: dict[int, list[torch.Tensor]]) -> pd.DataFrame:
        seeds, parts = self.cfg.student.seeds, []
        names = tuple(f"step_corr_{t:g}" for t in self.first.thr)
        for l in range(len(self.cfg.teacher.widths)):
            passes = {name: p.flatten().numpy() for name, p in zip(names, self.first.student[l])}
            for s in sorted(corr):
                best = corr[s][l].max(1)
                K, n = best.values.shape
                parts.append({
                    "member": np.repeat(np.asarray(seeds), n),
                    "layer": np.full(K * n, l),
                    "student_node": np.tile(np.arange(n), K),
                    "step": np.full(K * n, s),
                    "best_corr": best.values.flatten().double().numpy(),
                    "best_teacher": best.indices.flatten().numpy(),
                    "fanout_norm": fanout[s][l].flatten().double().numpy(),
                    **passes,
                    "teacher_seed": np.repeat(np.asarray(self.teacher_seeds()), n),
                })
        return _frame(parts, names, run=self.run_id)
