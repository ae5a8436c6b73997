"""Named experiments: ``analysis/<name>.py`` beside its base config ``analysis/<name>.toml``.

An experiment file is one module with a docstring (its first line is the description that
``teacherstudent experiment list`` shows) and two functions:

- ``arms(base: ExperimentConfig) -> dict[str, ExperimentConfig]``: the runs to train,
  derived from the base config (``base.replace(...)``);
- ``tables(runs: dict[str, Path]) -> dict[str, pandas.DataFrame]``: its tables, computed
  only from the finished runs' tables; the first one is the summary the CLI prints.

``run_named`` loads the base config (plus ``--set`` overrides), trains every arm with
``run_experiment`` (finished runs are skipped, so a second call only recomputes the
tables) and writes each table as ``<out>/experiments/<name>/<table>.parquet`` and ``.csv``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from .config import ExperimentConfig, load_config
from .errors import UserError
from .simulate import run_experiment
from .store import run_status, write_parquet
from .summary import read_table


def default_root() -> Path:
    """Where the named experiments live.

    In a source checkout (``analysis/`` beside the package, next to ``pyproject.toml``) that
    folder; in an installed wheel the ``teacherstudent_analysis`` package it ships as (an editable
    install maps that package to the same checkout folder); else ``./analysis``.
    """
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "analysis").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "analysis"
    spec = importlib.util.find_spec("teacherstudent_analysis")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path.cwd() / "analysis"


def list_experiments(root: str | Path | None = None) -> dict[str, str]:
    """Name -> description (first docstring line) of every experiment under ``root``."""
    root = Path(root) if root is not None else default_root()
    out = {}
    for py in sorted(root.glob("*.py")) if root.is_dir() else []:
        if py.with_suffix(".toml").exists():
            doc = (load_experiment(py.stem, root).__doc__ or "").strip()
            out[py.stem] = doc.splitlines()[0] if doc else ""
    return out


def load_experiment(name: str, root: str | Path | None = None) -> ModuleType:
    root = Path(root) if root is not None else default_root()
    path = root / f"{name}.py"
    if not path.exists() or not path.with_suffix(".toml").exists():
        known = ", ".join(list_experiments(root)) if root.is_dir() else ""
        raise UserError(f"no experiment {name!r} under {root}/ (known: {known or 'none'}); an experiment is "
                        f"<name>.py with a base config <name>.toml beside it")
    spec = importlib.util.spec_from_file_location(f"teacherstudent_experiment_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for fn in ("arms", "tables"):
        if not callable(getattr(module, fn, None)):
            raise UserError(f"{path} defines no {fn}() function; see teacherstudent/experiments.py for the contract")
    return module


@dataclass(frozen=True)
class ExperimentResult:
    folder: Path  # where the tables went
    runs: dict[str, Path]  # arm -> run folder
    tables: dict[str, pd.DataFrame]


def experiment_arms(name: str, overrides: list[str] | None = None, root: str | Path | None = None
                    ) -> tuple[ModuleType, dict[str, ExperimentConfig]]:
    """The experiment module and its validated arm configs (nothing is trained)."""
    module = load_experiment(name, root)
    root = Path(root) if root is not None else default_root()
    base = load_config(root / f"{name}.toml", list(overrides or []))
    return module, module.arms(base)


def run_named(name: str, out: str | Path = "runs", device: str = "auto", overrides: list[str] | None = None,
              root: str | Path | None = None, force: bool = False, command: list[str] | None = None,
              on_arm: Callable[[str, int, int, bool], Callable[[int, int], None] | None] | None = None
              ) -> ExperimentResult:
    """Train the arms of experiment ``name`` and write its tables.

    ``on_arm(arm, index, count, reused)`` may return a progress callback ``(step, total)`` for
    that arm's run; ``reused`` says the run already finished and will not train.
    """
    module, arms = experiment_arms(name, overrides, root)
    runs = {}
    for i, (arm, cfg) in enumerate(arms.items()):
        reused = not force and run_status(Path(out) / cfg.run_id).get("state") == "finished"
        progress = on_arm(arm, i, len(arms), reused) if on_arm else None
        runs[arm] = run_experiment(cfg, out, device, on_progress=progress, command=command, force=force)
    tables = module.tables(runs)
    folder = Path(out) / "experiments" / name
    folder.mkdir(parents=True, exist_ok=True)
    for tname, df in tables.items():
        write_parquet(folder / f"{tname}.parquet", df)
        df.to_csv(folder / f"{tname}.csv", index=False)
    return ExperimentResult(folder, runs, tables)


# ---- helpers shared by the experiment files --------------------------------

def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = pd.Series(np.asarray(a, dtype=float)).rank().to_numpy()
    rb = pd.Series(np.asarray(b, dtype=float)).rank().to_numpy()
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def final_rows(folder: Path, table: str) -> pd.DataFrame:
    """The last step's rows of a run's ``student_nodes`` (or any table with a ``step`` column)."""
    df = read_table(folder, table)
    return df[df.step == df.step.max()].reset_index(drop=True)


def final_losses(folder: Path) -> dict[str, float]:
    """Mean over members of the loss at the first and last measurement: ``train``, ``eval``, ``eval_init``."""
    m = read_table(folder, "metrics")
    loss = m[m.metric == "loss"]
    last = loss[loss.step == loss.step.max()].groupby("split")["value"].mean()
    first = loss[(loss.step == loss.step.min()) & (loss.split == "eval")]["value"].mean()
    return {"train_loss": float(last.get("train", np.nan)), "eval_loss": float(last.get("eval", np.nan)),
            "eval_loss_init": float(first)}
