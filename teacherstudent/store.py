"""The run store, one import away: every name of ``folder.py`` (writing: atomic writes,
``RunFolder``), ``reader.py`` (reading: checked readers, ``load_runs``) and ``tables.py`` (the
table registry), where they lived until 0.4 and where the public API still finds them.

``runs/<name>-<hash>/`` holds ``config.json``, ``meta.json`` (package version, command
line, device, provenance), ``status.json``, the tables ``metrics.parquet``,
``teacher_nodes.parquet`` and ``student_nodes.parquet``, the correlation matrices
``corr.npz`` and ``checkpoints/`` (``latest.pt`` for resuming, ``init.pt``, ``final.pt``,
``step_<k>.pt``). While a run trains, ``parts/`` holds one file per measurement; the
finished run compacts them into the tables.

Library modules import from ``folder``, ``reader`` and ``tables`` directly.
"""

from __future__ import annotations

from .folder import (CRASH_ENV, PART_SUFFIX, TEMP_GLOB, RunFolder, atomic_write_bytes, load_torch, part_suffix,
                     read_json, remove_temp_files, run_status, save_torch, write_json, write_npz, write_parquet)
from .reader import (REPAIR_HINT, DamagedRunWarning, _flatten, config_tables, flat_config, folder_tables, list_runs,
                     load_runs, read_config, read_corr, read_table_file, resolve_run)
from .tables import TABLE_COLUMNS, TABLES, TEXT_COLUMNS

__all__ = ["CRASH_ENV", "PART_SUFFIX", "REPAIR_HINT", "TABLES", "TABLE_COLUMNS", "TEMP_GLOB", "TEXT_COLUMNS",
           "DamagedRunWarning", "RunFolder", "atomic_write_bytes", "config_tables", "flat_config", "folder_tables",
           "list_runs", "load_runs", "load_torch", "part_suffix", "read_config", "read_corr", "read_json",
           "read_table_file", "remove_temp_files", "resolve_run", "run_status", "save_torch", "write_json",
           "write_npz", "write_parquet", "_flatten"]
