"""The walk of ``cfg`` from ``simulate.run``: which modules a run hands its config to.

A tiny run is traced with ``sys.setprofile``. Every call whose arguments include the config or
one of its sections (a config model as an argument; the config's own methods, and objects that
merely hold a config, are left out) is a step of the walk; a module is *entered* once per distinct call site in another module that hands it the
config (``caller module.function -> callee module.function``; a function called every step is
still one entry), and each entry after a module's first is a *climb back*; the same is
counted per calling module too (``build -> architectures`` once however many functions). Issue 21 asks for
fewer modules than before and none entered more than three times.

    python -m teacherstudent_benchmarks.cfg_walk          # or: python benchmarks/cfg_walk.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from collections import defaultdict


def walk() -> dict[str, set[tuple[str, str]]]:
    """``{module: {(caller, callee), ...}}`` for a traced tiny run (16 steps, CPU)."""
    from pydantic import BaseModel

    from teacherstudent import simulate
    from teacherstudent.config import build_config

    cfg = build_config({"teacher": {"widths": [4, 6], "outputs": 10, "reference_samples": 2000},
                        "student": {"multiplier": 3, "seeds": [0, 1]},
                        "inputs": {"train_samples": 512, "eval_samples": 256}, "training": {"epochs": 2}})
    config_types = tuple(c for c in BaseModel.__subclasses__() if c.__module__.startswith("teacherstudent.config"))
    config_types = tuple({t for c in config_types for t in (c, *_subclasses(c))})
    entries: dict[str, set[tuple[str, str]]] = defaultdict(set)

    def profile(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("teacherstudent.") or module.startswith("teacherstudent.config"):
            return
        code = frame.f_code
        args = [frame.f_locals.get(n) for n in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]]
        if not any(isinstance(a, config_types) for a in args):
            return
        caller = frame.f_back
        cmod = caller.f_globals.get("__name__", "") if caller else ""
        if cmod != module:
            entries[module].add((f"{cmod}.{caller.f_code.co_name}", f"{module}.{code.co_name}"))

    with tempfile.TemporaryDirectory() as out:
        opts = simulate.RunOptions(out=Path(out), device="cpu")
        sys.setprofile(profile)
        try:
            simulate.run(cfg, opts)
        finally:
            sys.setprofile(None)
    return dict(entries)


def _subclasses(c: type) -> list[type]:
    return [s for d in c.__subclasses__() for s in (d, *_subclasses(d))]


def main() -> None:
    entries = walk()
    climbs = sum(len(e) - 1 for e in entries.values())
    by_module = {m: {a.rsplit(".", 1)[0] for a, _ in e} for m, e in entries.items()}
    print(f"cfg walk from simulate.run: {len(entries)} modules entered, {climbs} climbs back, "
          f"most entries {max(len(e) for e in entries.values())} (per call site); "
          f"{sum(len(c) - 1 for c in by_module.values())} climbs back, most entries "
          f"{max(len(c) for c in by_module.values())} (per calling module)")
    for module, e in sorted(entries.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"  {len(e)}  {module}: " + ", ".join(sorted(f"{a} -> {b.rsplit('.', 1)[1]}" for a, b in e)))


if __name__ == "__main__":
    main()
