"""Probe configs: how a probe child run derives from its finished parent (docs/science.md §5).

One model per probe kind, joined in the ``ProbeConfig`` union (its runner is in ``probes.PROBES``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from .sections import Seed, _Section

RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]+-[0-9a-f]+$", description="run id of the parent run")]


class _Probe(_Section):
    """How a probe child run derives from its finished parent run (docs/science.md §5)."""

    # fields that always appear in the run id, at their default too (0.2 probe run ids listed them)
    _IDENTITY: ClassVar[tuple[str, ...]] = ()
    # the tables its folder holds: None = a run's (the probe trains); else its own (reader.folder_tables)
    TABLES: ClassVar[tuple[str, ...] | None] = None

    def canonical(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True)
        changed = set(self.changed(*data))
        return {k: v for k, v in data.items() if k in ("kind", "parent", *self._IDENTITY) or k in changed}


class LotteryProbe(_Probe):
    """Keep a fraction of the parent's student nodes (``by`` fanout, alignment or random) or
    weights (``by`` magnitude), per layer or globally (``scope``), and retrain from
    ``rewind``: ``init``, ``step:K``, ``reinit`` or ``rescaled``. With ``rounds`` > 1,
    iterative pruning: round ``r`` keeps ``keep ** (r / rounds)``; ``round`` is set in the
    child run of each round (left unset in a request, which means every round).
    ``seed`` drives random selection and fresh weights."""

    _IDENTITY: ClassVar[tuple[str, ...]] = ("by", "keep", "scope", "rewind", "rounds", "round")
    kind: Literal["lottery"] = "lottery"
    parent: RunId
    by: Literal["fanout", "alignment", "random", "magnitude"]
    keep: float = Field(gt=0, le=1, description="fraction of the nodes (weights) kept after the last round, in (0, 1]")
    scope: Literal["layer", "global"] = "layer"
    rewind: str = Field("init", description="init, rescaled, reinit or step:K (a checkpoint the parent kept)")
    rounds: int = Field(1, ge=1)
    round: int | None = Field(None, ge=1, description="this child's round (unset in a request: all rounds)")
    seed: Seed = 0
    rule: Literal["top", "winners_first"] = Field(
        "top", description="by='alignment': top keeps the highest best correlations; winners_first keeps every "
        "teacher node's winner first, then the rest by best correlation")

    @field_validator("rewind")
    @classmethod
    def _rewind(cls, v: str) -> str:
        if v not in ("init", "rescaled", "reinit") and re.fullmatch(r"step:[0-9]+", v) is None:
            raise ValueError(f"probe.rewind must be init, rescaled, reinit or step:K (K a step whose weights the parent "
                             f"kept), got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> LotteryProbe:
        if self.round is not None and self.round > self.rounds:
            raise ValueError(f"probe.round {self.round} lies beyond probe.rounds={self.rounds}")
        if self.by != "alignment":
            self._unused("probe", self.changed("rule"), "probe.by='alignment'")
        if self.seed != 0 and self.by != "random" and self.rewind != "reinit":
            raise ValueError("probe.seed does nothing unless probe.by='random' or probe.rewind='reinit'; drop it")
        return self


class ReinitProbe(_Probe):
    """Re-randomise the fan-in of chosen nodes (``nodes`` winners or random) of the parent's
    initialisation in ``layers`` (unset: every hidden layer) and train again; ``seed``
    drives the random choice and the fresh weights."""

    _IDENTITY: ClassVar[tuple[str, ...]] = ("nodes",)
    kind: Literal["reinit"] = "reinit"
    parent: RunId
    nodes: Literal["winners", "random"] = "winners"
    layers: tuple[int, ...] | None = Field(None, min_length=1, description="hidden layers whose nodes are redrawn")
    seed: Seed = 0

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (len(set(v)) != len(v) or min(v) < 0):
            raise ValueError(f"probe.layers must list distinct hidden layers (0 = the lowest), got {list(v)}")
        return tuple(sorted(v)) if v is not None else None


class FlatnessProbe(_Probe):
    """The Hessian of the parent's training loss at ``at`` (``final`` or ``step:K``, 0 = init):
    the ``top`` eigenvalues (Lanczos, ``lanczos`` steps), the trace (Hutchinson, ``probes``
    Rademacher probes) and the share of the top and of the near-zero eigen-directions (a
    polynomial window around zero whose width shrinks with ``lanczos``) in the weights of
    unaligned vs aligned student nodes (stochastic Lanczos quadrature, ``density_probes``
    probes), on the first ``samples`` training samples, in float64. It trains nothing: its
    folder holds ``flatness.parquet``."""

    _IDENTITY: ClassVar[tuple[str, ...]] = ("at",)
    TABLES: ClassVar[tuple[str, ...]] = ("flatness",)  # what its folder holds instead of a run's tables
    kind: Literal["flatness"] = "flatness"
    parent: RunId
    at: str = Field("final", description="final, or step:K (a checkpoint the parent kept; step:0 = init)")
    samples: int = Field(4096, gt=0, description="the first this many training samples (all when there are fewer)")
    top: int = Field(5, ge=1, description="top eigenvalues reported")
    lanczos: int = Field(40, ge=3, description="Lanczos steps (Hessian-vector products) per eigen-solve or quadrature; "
                         "the near-zero window's half-width is about sqrt(ln 2 / (lanczos - 2)) of the spectral radius")
    probes: int = Field(64, ge=1, description="Rademacher probes of the Hutchinson trace")
    density_probes: int = Field(4, ge=1, description="Rademacher probes of the near-zero quadrature, per node group")
    seed: Seed = 0

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        if v != "final" and re.fullmatch(r"step:[0-9]+", v) is None:
            raise ValueError(f"probe.at must be final or step:K (K a step whose weights the parent kept, 0 = init), got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> FlatnessProbe:
        if self.top > self.lanczos:
            raise ValueError(f"probe.top ({self.top}) must not exceed probe.lanczos ({self.lanczos}): Lanczos gives "
                             "at most one eigenvalue per step")
        return self


# One model per probe kind (add a kind: its model here, its runner in probes.PROBES).
ProbeConfig = Annotated[Union[LotteryProbe, ReinitProbe, FlatnessProbe], Field(discriminator="kind")]
PROBE_KINDS = tuple(m.model_fields["kind"].default for m in get_args(get_args(ProbeConfig)[0]))  # the union's tags
