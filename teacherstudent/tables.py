"""The table registry: every table a run folder can hold, with the columns its readers rely on;
and ``TableRecorder``, the extension that adds its own tidy tables to a run.

A ``TableRecorder`` names its ``tables`` (each listed in ``TABLE_COLUMNS``), says whether
a config ``wanted`` it and at which ``steps`` it records, and returns one DataFrame per table from ``rows(tr)``. The run's ``Recorder``
(results.py) calls every recorder of ``results.TABLE_RECORDERS`` that the config wants: at each
of its steps the rows go to ``parts/<table>-<step>.parquet`` (dropped past the resume point
like the metric parts), and at the end they are compacted into ``<table>.parquet``, which
``load_runs(table=...)`` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pandas as pd

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .loop import Trainer
    from .folder import RunFolder

TABLES = ("metrics", "teacher_nodes", "student_nodes")
# The columns every reader relies on (results.py writes more: step_corr_<t>, probe columns).
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "metrics": ("run", "member", "step", "epoch", "split", "layer", "metric", "value"),
    "teacher_nodes": ("run", "member", "layer", "teacher_node", "winner", "init_rank_pct", "init_corr", "final_corr",
                      "match_count", "teacher_fanout_norm"),
    "student_nodes": ("run", "member", "layer", "student_node", "step", "best_corr", "best_teacher", "fanout_norm"),
    "theory": ("run", "member", "step", "layer", "pair", "statistic", "value"),
    "theory_nodes": ("run", "member", "step", "layer", "student_node", "beta_self", "beta_strength", "beta_aligned",
                     "best_corr", "best_teacher", "fanout_norm"),
    # written after the run by `teacherstudent theory ode` (ode_run.py): ODE and simulation side by side
    "theory_ode": ("run", "member", "step", "t", "source", "statistic", "i", "j", "value"),
    # probes that train nothing hold their own table instead of the three above (config ``_Probe.TABLES``)
    "flatness": ("run", "parent", "member", "step", "statistic", "index", "value"),
}
TEXT_COLUMNS = ("run", "split", "metric", "pair", "statistic", "parent", "source")
# tables a command adds to a finished run (not the run itself): load_runs reads them where present
ON_DEMAND_TABLES = ("theory_ode",)


class TableRecorder:
    """Base class: rows of ``tables`` at ``steps``, streamed to parts and compacted at the end."""

    tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, folder: RunFolder, cfg: ExperimentConfig):
        self.folder, self.cfg = folder, cfg

    @classmethod
    def wanted(cls, cfg: ExperimentConfig) -> bool:
        raise NotImplementedError

    def steps(self, tr: Trainer) -> set[int]:
        raise NotImplementedError

    def rows(self, tr: Trainer) -> dict[str, pd.DataFrame]:
        raise NotImplementedError

    def record(self, tr: Trainer) -> None:
        """Write this step's parts (called by the ``Recorder`` at every event step)."""
        if getattr(self, "_steps", None) is None:
            self._steps = self.steps(tr)
        if tr.step in self._steps:
            for table, df in self.rows(tr).items():
                self.folder.write_part(table, tr.step, df)

    def finish(self) -> None:
        """Compact the parts into ``<table>.parquet`` (the ``Recorder`` removes ``parts/`` after)."""
        for table in self.tables:
            self.folder.compact_parts(table)
