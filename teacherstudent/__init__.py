"""teacherstudent: a teacher-student training-dynamics simulator for deep ReLU networks.

The names below load on first use (PEP 562), so ``import teacherstudent`` is instant and
torch is imported only when something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.4.0"

_LAZY = {
    "ExperimentConfig": "config", "load_config": "config", "UserError": "errors", "run": "simulate",
    "RunOptions": "simulate", "load_runs": "store",
    "run_study": "experiments", "StudyOptions": "experiments",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'teacherstudent' has no attribute {name!r}")
