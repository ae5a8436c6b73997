"""Probe child runs: finding the parent, the child's config, and the child's extra columns.

A probe is an ordinary run folder next to its parent (same root), named
``<parent name>.<kind>-<hash>``, whose ``config.json`` is the parent's config plus a
``probe`` section (``probe.parent`` = the parent's run id). ``load_runs`` therefore
returns parents and probes in one DataFrame, probes carrying ``probe.*`` columns.
After training, the child's tables get columns that relate it to the parent, so node
identities can be compared across runs:

- ``student_nodes``: ``parent_node`` (the node's index in the parent) and one boolean
  per probe flag (``kept`` or ``reinit``);
- ``teacher_nodes``: ``winner_parent_node`` (the child's winner, in parent indexing),
  ``parent_winner``, ``parent_final_corr``, ``parent_step_corr_0.9``,
  ``parent_step_corr_0.95`` and ``parent_winner_<flag>``;
- ``metrics``: rows with ``split='probe'`` (see ``report.probe_rows``).

``probe.json`` (written last) marks a complete probe; ``probe.pt`` holds its node map and
masks, so iterative pruning can continue from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..config import ExperimentConfig, apply_overrides, build_config
from ..errors import UserError
from ..store import (REPAIR_HINT, TABLES, list_runs, load_torch, read_config, read_corr, read_json, read_table_file,
                     resolve_run, run_status, save_torch, write_json, write_parquet)
from .report import outcome_rows

PROBE_SECTIONS = ("training", "measure")
def teacher_cols(table: pd.DataFrame) -> list[str]:
    """The parent columns a probe's teacher table carries (``step_corr_<t>`` for the parent's thresholds)."""
    return ["winner", "final_corr", *[c for c in table.columns if c.startswith("step_corr_")]]


def run_config(folder: Path) -> ExperimentConfig:
    return build_config(read_config(folder))  # a damaged config.json: one line naming it


def check_parent_files(folder: Path) -> None:
    """Every file a probe reads from its parent, checked before anything trains: the tables, ``corr.npz``
    and the init/final checkpoints (a damaged one is a one-line ``UserError`` naming it)."""
    hint = REPAIR_HINT.format(root=folder.parent)
    for table in TABLES:
        read_table_file(folder / f"{table}.parquet", table, hint)
    read_corr(folder / "corr.npz", hint)
    for name in ("init.pt", "final.pt"):
        path = folder / "checkpoints" / name
        ck = load_torch(path)
        if not isinstance(ck, dict) or not isinstance(ck.get("weights"), (list, tuple)):
            raise UserError(f"checkpoint {path} is corrupted (no weights); {hint}")


def finished_parent(run: str | Path, root: str | Path = "runs") -> tuple[Path, ExperimentConfig]:
    """The folder and config of a finished, non-probe run (else a one-line UserError)."""
    folder = resolve_run(run, root)
    cfg = run_config(folder)
    state = run_status(folder).get("state")
    if state != "finished":
        raise UserError(f"{folder.name} is not finished (state: {state}); finish it with `teacherstudent run` before probing it")
    if cfg.probe is not None:
        raise UserError(f"{folder.name} is itself a probe of {cfg.probe.parent}; probe the parent run instead "
                        "(use --rounds for iterative pruning)")
    for name in ("init.pt", "final.pt"):
        if not (folder / "checkpoints" / name).exists():
            raise UserError(f"{folder.name} has no checkpoints/{name}; rerun it with `teacherstudent run --force`")
    check_parent_files(folder)
    return folder, cfg


def child_config(parent: ExperimentConfig, probe: dict, overrides: list[str] | None = None) -> ExperimentConfig:
    """The parent's config plus ``probe``, with optional ``training.*``/``measure.*`` overrides."""
    bad = [o for o in overrides or [] if o.split("=", 1)[0].strip().split(".")[0] not in PROBE_SECTIONS]
    if bad:
        raise UserError(f"bad --set {bad[0]!r}: a probe may change only {', '.join(s + '.*' for s in PROBE_SECTIONS)}; "
                        "its teacher, data and students come from the parent run")
    data = parent.model_dump(mode="json")
    data["name"] = f"{parent.name}.{probe['kind']}"
    data["probe"] = {**probe, "parent": parent.run_id}
    return build_config(apply_overrides(data, list(overrides or [])))


def is_complete(folder: Path) -> bool:
    return (folder / "probe.json").exists() and run_status(folder).get("state") == "finished"


def probes_of(parent: Path) -> list[Path]:
    """Every complete probe folder of ``parent`` under the same root, by name."""
    out = []
    for f in list_runs(parent.parent):
        if f == parent:
            continue
        probe = read_json(f / "config.json").get("probe")
        if probe and probe.get("parent") == parent.name and is_complete(f):
            out.append(f)
    return out


def load_probe(folder: Path) -> dict:
    """``probe.pt``: ``node_map``, ``kept`` (node pruning), ``masks`` (weight pruning), ``flag_<name>``."""
    return load_torch(folder / "probe.pt")


def _member_index(df: pd.DataFrame, seeds: tuple[int, ...]) -> np.ndarray:
    return df["member"].map({s: k for k, s in enumerate(seeds)}).to_numpy()


def _lookup(table: list[torch.Tensor], k: np.ndarray, layer: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``table[layer][k, j]`` row by row."""
    out = np.zeros(len(k), dtype=table[0].numpy().dtype)
    for l, t in enumerate(table):
        rows = layer == l
        out[rows] = t.numpy()[k[rows], j[rows]]
    return out


def annotate(folder: Path, parent: Path, node_map: list[torch.Tensor], flags: dict[str, list[torch.Tensor]],
             rows: list[dict], info: dict, extra: dict) -> None:
    """Add the parent-relating columns and ``probe`` metric rows to ``folder``'s tables,
    then write ``probe.pt`` (``extra`` plus the node map) and ``probe.json`` (``info``).

    ``node_map[l]``: ``[K, n_child_l]`` parent index of each child node; ``flags[name][l]``:
    ``[K, n_parent_l]`` booleans; ``rows``: the selection's ``probe`` metric rows (the
    outcome rows are added here). Running it again gives the same files.
    """
    seeds = run_config(folder).student.seeds
    sn = read_table_file(folder / "student_nodes.parquet")
    sn = sn.drop(columns=["parent_node", *flags], errors="ignore")
    k, layer = _member_index(sn, seeds), sn["layer"].to_numpy()
    sn["parent_node"] = _lookup(node_map, k, layer, sn["student_node"].to_numpy())
    for name, fl in flags.items():
        sn[name] = _lookup(fl, k, layer, sn["parent_node"].to_numpy())

    tn = read_table_file(folder / "teacher_nodes.parquet")
    tn = tn[[c for c in tn.columns if not c.startswith(("parent_", "winner_parent"))]]
    k, layer = _member_index(tn, seeds), tn["layer"].to_numpy()
    tn["winner_parent_node"] = _lookup(node_map, k, layer, tn["winner"].to_numpy())
    ptn = read_table_file(parent / "teacher_nodes.parquet")
    cols = teacher_cols(ptn)
    ptn = ptn[["member", "layer", "teacher_node", *cols]]
    tn = tn.merge(ptn.rename(columns={c: f"parent_{c}" for c in cols}), on=["member", "layer", "teacher_node"],
                  how="left", validate="one_to_one")
    for name, fl in flags.items():
        tn[f"parent_winner_{name}"] = _lookup(fl, k, layer, tn["parent_winner"].to_numpy())

    metrics = read_table_file(folder / "metrics.parquet")
    metrics = metrics[metrics["split"] != "probe"]
    last = metrics[metrics["step"] == metrics["step"].max()].iloc[0]
    cfg = run_config(folder)
    rows = rows + outcome_rows(tn, cfg.run_id, int(last["step"]), float(last["epoch"]), cfg.measure.recovered)
    new = pd.DataFrame(rows, columns=metrics.columns).astype(metrics.dtypes.to_dict())
    metrics = pd.concat([metrics, new], ignore_index=True)

    write_parquet(folder / "student_nodes.parquet", sn)
    write_parquet(folder / "teacher_nodes.parquet", tn)
    write_parquet(folder / "metrics.parquet", metrics)
    save_torch(folder / "probe.pt", {**extra, "node_map": node_map, **{f"flag_{n}": v for n, v in flags.items()}})
    write_json(folder / "probe.json", info)
