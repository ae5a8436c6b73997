"""Lottery-ticket and re-initialisation probes on finished runs (docs/science.md §5).

One file per concept: ``select`` (what to keep: fan-out, alignment, random, magnitude;
per layer or global), ``prune`` (physically smaller or masked students), ``rewind``
(init, step:K, reinit, rescaled), ``lottery`` (prune-rewind-retrain, iterative rounds),
``reinit`` (re-randomise chosen nodes at initialisation), ``runs`` (child run folders
linked to their parent), ``flatness`` and ``hessian`` (the Hessian of the training
loss: top eigenvalues, trace, where its flat directions live; trains nothing), ``report`` (overlap with lucky nodes, summaries, comparisons).

Glossary: ``K`` members, ``n_l`` student width of hidden layer ``l`` in the parent,
``c_l`` nodes kept, ``kept[l]``: ``[K, c_l]`` parent indices of the kept nodes, lucky
nodes ``j*(k)``: each teacher node's final winner in the parent.
"""

from collections.abc import Callable
from pathlib import Path

from .flatness import run_flatness
from .lottery import run_lottery
from .reinit import run_reinit
from .report import compare, member_summary, paired
from .runs import probes_of

# Probe kinds: config.probe.kind -> the function that runs one (its config model is in config.ProbeConfig).
PROBES: dict[str, Callable[..., list[Path] | Path]] = {"lottery": run_lottery, "reinit": run_reinit,
                                                        "flatness": run_flatness}


def run_probe(run: str | Path, spec, **kw) -> list[Path]:
    """Run the probe config ``spec`` (a ``LotteryProbe``, ``ReinitProbe`` or ``FlatnessProbe``) on ``run``; the child folders."""
    out = PROBES[spec.kind](run, spec, **kw)
    return out if isinstance(out, list) else [out]


__all__ = ["PROBES", "compare", "member_summary", "paired", "probes_of", "run_flatness", "run_lottery", "run_probe", "run_reinit"]
