"""Where the config meets the registries: every check that needs an implementation's registry.

The config package imports no implementation module when it is imported (so any module may
import the config, and the import graph has no cycle). The few checks that need a registry —
a name must be a key of ``OPTIMIZERS``, ``SCHEDULES``, ``LOSSES``, ``INPUTS``, ``METRICS`` or
``ARCHITECTURES``; a field read only by other optimisers, schedules or input kinds; what an
architecture, an input kind or the lucky nodes refuse — call the registries' own validators
through these functions, which import them when a config is first validated (``build_config``,
``load_config``). The messages are the registries' own.
"""

from __future__ import annotations

from typing import Any

from ..registry import check_name

# The arguments are config sections (``InputsConfig``, ...), typed ``Any`` here: this module is
# imported by the sections, so naming their types would close an import loop.


# ---- names -------------------------------------------------------------------

def optimizer(name: str) -> str:
    from ..train import OPTIMIZERS

    return check_name(OPTIMIZERS, "optimizer", name)


def schedule(name: str) -> str:
    from ..train import SCHEDULES

    return check_name(SCHEDULES, "schedule", name)


def loss(name: str) -> str:
    from ..train import LOSSES

    return check_name(LOSSES, "loss", name)


def input_kind(name: str) -> str:
    from ..inputs import INPUTS

    return check_name(INPUTS, "input kind", name)


def metric(name: str) -> str:
    from ..metrics import METRICS

    return check_name(METRICS, "metric", name)


def architecture(name: str) -> str:
    from ..architectures import ARCHITECTURES

    return check_name(ARCHITECTURES, "architecture", name)


# ---- fields and checks owned by a registry entry ----------------------------------

def optimizer_fields() -> dict[str, tuple[str, ...]]:
    """The ``TrainingConfig`` fields each optimiser reads besides lr and weight_decay."""
    from ..train import optimizer_fields

    return optimizer_fields()


def schedule_fields() -> dict[str, tuple[str, ...]]:
    from ..train import SCHEDULE_FIELDS

    return SCHEDULE_FIELDS


def input_fields(cfg: Any) -> None:
    from ..inputs import check_inputs

    check_inputs(cfg)


def input_dim(cfg: Any, d: int, d_is_default: bool) -> None:
    from ..inputs import check_dim

    check_dim(cfg, d, d_is_default)


def lucky(cfg: Any, widths: tuple[int, ...]) -> None:
    from ..lucky import check_lucky

    check_lucky(cfg, widths)


def dataset_setting(cfg: Any) -> None:
    """inputs.labels='dataset' or teacher.train: what the data set and the pretraining need (pretrain.py)."""
    from ..pretrain import check_dataset_setting

    check_dataset_setting(cfg)


def architecture_check(cfg: Any) -> None:
    from ..architectures import ARCHITECTURES

    ARCHITECTURES[cfg.arch].check(cfg)


def warmup_steps(cfg: Any, steps_per_epoch: int) -> Any:
    from ..train import warmup_steps

    return warmup_steps(cfg, steps_per_epoch)
