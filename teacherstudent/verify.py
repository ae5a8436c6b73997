"""``teacherstudent verify [ROOT] [--repair]``: check every run folder, recompute what can be recomputed.

``check_run(folder)`` reads every file a run folder should hold and returns a ``RunCheck``:
its state, the problems found (one line each, naming the file) and what ``--repair`` would
do about them:

- ``ok``: nothing to do (an interrupted run with a good resume point is ok: `teacherstudent
  run` resumes it);
- ``clean``: only temporary files of a writer that died; they are removed;
- ``resume``: an unfinished run whose ``status.json``/temporary files are damaged but whose
  resume point, measurement parts and ``meta.json`` are good: resumed from its last checkpoint;
- ``redo``: a run whose results are damaged (tables, ``corr.npz``, checkpoints, parts,
  meta.json): trained again from the start with its own config (on CPU the result is
  bit-identical to the original when the version is the same);
- ``cannot``: the config itself is lost (``config.json`` damaged, or its hash does not match the
  folder name), or the run is a probe (its students come from the parent: re-run the
  `teacherstudent probe` command). Nothing is changed; the line says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import UserError
from .store import (TABLES, TEMP_GLOB, RunFolder, load_torch, read_config, read_corr,
                    read_json, read_table_file, remove_temp_files, config_tables)

ACTIONS = ("ok", "clean", "resume", "redo", "cannot")


@dataclass
class RunCheck:
    folder: Path
    state: str = "?"
    problems: list[str] = field(default_factory=list)
    action: str = "ok"
    why: str = ""
    repaired: str = ""  # after --repair: what was done

    @property
    def damaged(self) -> bool:
        return bool(self.problems)


def run_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` that looks like a run folder (``<name>-<hash>``, with or without config.json)."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the folder that holds the run folders (default: runs)")
    return sorted(p for p in root.iterdir() if p.is_dir() and "-" in p.name and p.name != "experiments")


def _try(problems: list[str], fn: Callable, *args) -> object:
    try:
        return fn(*args)
    except UserError as err:
        problems.append(str(err))
        return None


def _weights(problems: list[str], path: Path, key: str = "weights") -> None:
    ck = _try(problems, load_torch, path)
    if ck is not None and (not isinstance(ck, dict) or key not in ck):
        problems.append(f"checkpoint {path} is corrupted (no {key})")


def check_run(folder: Path) -> RunCheck:
    """Read everything in ``folder`` (see the module docstring); changes nothing."""
    from .config import build_config

    rc = RunCheck(folder)
    p = rc.problems
    if not (folder / "config.json").exists():
        p.append(f"{folder / 'config.json'} is missing")
        rc.action, rc.why = "cannot", "its config is lost; delete the folder and run the config again"
        return rc
    data = _try(p, read_config, folder)
    if data is None:
        rc.action, rc.why = "cannot", "its config is lost; delete the folder and run the config again"
        return rc
    cfg = build_config(data)
    if cfg.run_id != folder.name:
        p.append(f"{folder / 'config.json'} holds run {cfg.run_id}, not {folder.name} (config hash does not match the folder name)")
        rc.action, rc.why = "cannot", "the folder name and its config disagree; delete the folder and run the config again"
        return rc
    temps = sorted(folder.rglob(TEMP_GLOB))
    status = None
    if (folder / "status.json").exists():
        status = _try(p, read_json, folder / "status.json")
    rc.state = status.get("state", "?") if status else ("?" if (folder / "status.json").exists() else "created")
    status_bad = bool(p)
    meta = _try(p, read_json, folder / "meta.json") if (folder / "meta.json").exists() else None
    if meta is not None and "version" not in meta:
        p.append(f"{folder / 'meta.json'} is corrupted (no version)")
    n_before_results = len(p)
    if cfg.probe is not None and cfg.probe.TABLES:  # a probe that trains nothing (flatness): its tables, probe.json
        return _check_measuring_probe(rc, cfg, temps)
    finished_files = [folder / f"{t}.parquet" for t in TABLES] + [folder / "corr.npz"]
    has_results = any(f.exists() for f in finished_files)
    ckpts = folder / "checkpoints"
    if rc.state == "finished" or (status_bad and has_results):
        for t in config_tables(cfg):  # the three, and the optional tables its config turns on (theory)
            _try(p, read_table_file, folder / f"{t}.parquet", t, "")
        _try(p, read_corr, folder / "corr.npz", "")
        for name in ["init", "final", *[f"step_{k}" for k in cfg.training.checkpoint_steps]]:
            _weights(p, ckpts / f"{name}.pt")
        if cfg.probe is not None:
            if (folder / "probe.json").exists():
                _try(p, read_json, folder / "probe.json")
                _weights(p, folder / "probe.pt", "node_map")
            else:
                p.append(f"{folder / 'probe.json'} is missing (the probe did not finish annotating its tables)")
    else:
        rf = RunFolder(folder.parent, cfg)
        if (ckpts / "latest.pt").exists():
            _weights(p, ckpts / "latest.pt", "trainer")
        if (ckpts / "init.pt").exists() or (status or {}).get("step", 0) > 0:
            _weights(p, ckpts / "init.pt")
        for kind in rf.part_kinds():
            _try(p, rf.read_parts, kind)
    p[:] = [q.removesuffix("; ") for q in p]
    damage = list(p)
    results_bad = len(p) > n_before_results or (meta is None and rc.state not in ("created", "finished")
                                                 and (ckpts / "latest.pt").exists())
    if temps:
        p.append(_temps_line(temps, folder))
    if not p:
        return rc
    if cfg.probe is not None and damage:
        rc.action, rc.why = "cannot", _rerun_probe(cfg)
    elif results_bad or (status_bad and has_results):
        rc.action, rc.why = "redo", "trained again from the start with its own config"
    elif damage:
        rc.action, rc.why = "resume", "resumed from its last good checkpoint"
    else:
        rc.action, rc.why = "clean", "temporary files removed"
    return rc


def _temps_line(temps: list[Path], folder: Path) -> str:
    return (f"{len(temps)} temporary file(s) of a writer that died: "
            + ", ".join(str(t.relative_to(folder)) for t in temps[:3]) + (" ..." if len(temps) > 3 else ""))


def _rerun_probe(cfg) -> str:
    """Why a damaged probe folder cannot be repaired here, and what to do."""
    return f"a probe of {cfg.probe.parent}: delete the folder and run its `teacherstudent probe {cfg.probe.kind}` command again"


def _check_measuring_probe(rc: RunCheck, cfg, temps: list[Path]) -> RunCheck:
    """A probe that trains nothing: when finished, its own tables and ``probe.json``; unfinished, nothing
    (its command measures it again). Damage cannot be repaired here: its command runs it again."""
    p, folder = rc.problems, rc.folder
    if rc.state == "finished":
        for t in cfg.probe.TABLES:
            _try(p, read_table_file, folder / f"{t}.parquet", t, "")
        if (folder / "probe.json").exists():
            _try(p, read_json, folder / "probe.json")
        else:
            p.append(f"{folder / 'probe.json'} is missing (the probe did not finish)")
    p[:] = [q.removesuffix("; ") for q in p]
    if p:
        rc.action, rc.why = "cannot", _rerun_probe(cfg)
    elif temps:
        p.append(_temps_line(temps, folder))
        rc.action, rc.why = "clean", "temporary files removed"
    return rc


def repair_run(rc: RunCheck, device: str = "cpu", on_progress: Callable[[int, int], None] | None = None) -> RunCheck:
    """Do ``rc.action`` (see the module docstring) and check the folder again; returns the new check."""
    from .config import build_config
    from .simulate import RunOptions, run

    folder = rc.folder
    if rc.action in ("ok", "cannot"):
        return rc
    remove_temp_files(folder)
    if rc.action == "clean":
        after = check_run(folder)
        after.repaired = "removed temporary files"
        return after
    cfg = build_config(read_config(folder))
    status = folder / "status.json"
    try:
        read_json(status)
    except UserError:
        status.unlink(missing_ok=True)  # unreadable: the run's own state is recomputed below
    force = rc.action == "redo"
    if force:
        meta = folder / "meta.json"
        try:
            read_json(meta)
        except UserError:
            meta.unlink(missing_ok=True)
        status.unlink(missing_ok=True)
        (folder / "checkpoints" / "latest.pt").unlink(missing_ok=True)
    run(cfg, RunOptions(out=folder.parent, device=device, force=force, on_progress=on_progress,
                        command=["teacherstudent", "verify", "--repair"]))
    after = check_run(folder)
    after.repaired = "trained again from the start" if force else "resumed from its last good checkpoint"
    return after


def verify(root: str | Path = "runs", repair: bool = False, device: str = "cpu",
           on_run: Callable[[RunCheck], None] | None = None) -> list[RunCheck]:
    """Check (and with ``repair`` repair) every run folder under ``root``; ``on_run`` sees each result."""
    out = []
    for folder in run_folders(Path(root)):
        rc = check_run(folder)
        if repair and rc.damaged:
            rc = repair_run(rc, device)
        out.append(rc)
        if on_run:
            on_run(rc)
    return out
