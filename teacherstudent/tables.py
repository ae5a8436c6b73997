"""Extra tables: a callback-like extension that adds its own tidy tables to a run.

A ``TableRecorder`` names its ``tables`` (each listed in ``store.TABLE_COLUMNS``), says whether
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
    from .store import RunFolder


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
