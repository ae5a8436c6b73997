"""Where a probe's students start (docs/science.md §5).

``init``: the parent's own initial weights (the winning ticket); ``step:K``: its weights
at step ``K`` (late rewinding; the parent must have kept ``checkpoints/step_K.pt`` via
``training.checkpoint_steps``); ``reinit``: fresh random weights of the pruned shape (the
control); ``rescaled``: the kept initial weights multiplied per row by
``sqrt(fan_in_full / fan_in_kept)``, the initialisation scale of the pruned shape.
Fresh weights come from ``init_member`` with a seed derived from ``(probe seed, member
seed, stream)``, so they differ from the parent's and from each other's.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..config import ExperimentConfig
from ..seeds import Stream, generator
from ..errors import UserError
from ..folder import load_torch

REWINDS = ("init", "step:K", "reinit", "rescaled")


def rewind_step(rewind: str) -> int | None:
    """The parent checkpoint a rewind starts from (0 = init), or None for ``reinit``."""
    if rewind in ("init", "rescaled"):
        return 0
    if rewind == "reinit":
        return None
    m = re.fullmatch(r"step:([0-9]+)", rewind)
    if m is None:
        raise UserError(f"unknown rewind {rewind!r}; use one of {', '.join(REWINDS)} (e.g. step:500)")
    return int(m.group(1))


def checkpoint_steps(folder: Path) -> list[int]:
    """Steps whose weights the run kept (0 = init)."""
    ck = folder / "checkpoints"
    steps = [0] if (ck / "init.pt").exists() else []
    steps += sorted(int(p.stem.split("_")[1]) for p in ck.glob("step_*.pt") if p.stem.split("_")[1].isdigit())
    return steps


def checkpoint_state(folder: Path, step: int) -> list[torch.Tensor]:
    """The ensemble state the run kept at ``step`` (0 = init)."""
    path = folder / "checkpoints" / ("init.pt" if step == 0 else f"step_{step}.pt")
    if not path.exists():
        kept = checkpoint_steps(folder)
        raise UserError(f"{folder.name} kept no weights at step {step} (kept: {kept or 'none'}); rerun the parent "
                        f"with --set training.checkpoint_steps=[{step}] to rewind there")
    return load_torch(path)["weights"]


def fresh_params(cfg: ExperimentConfig, widths: list[int], probe_seed: int, stream: int) -> list[torch.Tensor]:
    """Freshly initialised ``[W_0, b_0, ...]`` of the given hidden widths, float64, one member per student seed."""
    from ..architectures import ARCHITECTURES

    seeds = [generator(probe_seed, Stream.PROBE_FRESH, s, stream).initial_seed() for s in cfg.student.seeds]
    return ARCHITECTURES[cfg.arch].fresh_params(cfg, widths, seeds)
