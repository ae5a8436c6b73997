"""Metrics: callbacks that add tidy rows to ``metrics.parquet`` at every measurement.

A metric is a class with ``member_rows(m, k)``: the ``(split, layer, metric, value)``
rows of ensemble member ``k`` for the measurement ``m`` (a ``Measurement``: the step, the
``Snapshot`` of correlations, fan-out norms and losses, the running train loss and the
config). The run's ``MetricRecorder`` (results.py) calls every metric named in
``measure.metrics`` and appends the rows, member by member, to the run's metric parts.

Adding a metric: write the class (here or in its own module) and add one line to
``METRICS``; name it in ``measure.metrics`` to turn it on (docs/architecture.md).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from .config import ExperimentConfig
    from .measure import Snapshot

Row = tuple[str, "int | None", str, float]  # split, layer (None: whole network), metric, value


@dataclass(frozen=True)
class Measurement:
    """What metrics see at one measured step (``snap`` tensors are ``[K, ...]`` on the CPU)."""

    step: int
    epoch: float
    snap: Snapshot
    train_loss: torch.Tensor | None  # [K], mean minibatch loss since the previous measurement
    cfg: ExperimentConfig
    eval_samples: int  # N, the evaluation samples the correlations are computed on

    @functools.cached_property
    def layer_stats(self) -> list[dict[str, torch.Tensor]]:
        m = self.cfg.measure
        return self.snap.layer_stats(m.recovered, m.covered)


class Metric:
    """Base class: ``member_rows`` yields the rows of one member at one measurement."""

    name: ClassVar[str] = ""

    def member_rows(self, m: Measurement, k: int) -> Iterable[Row]:
        raise NotImplementedError


class Loss(Metric):
    """``loss`` on the evaluation set (and ``accuracy`` for cross-entropy), and the mean
    training minibatch loss since the previous measurement."""

    def member_rows(self, m: Measurement, k: int) -> Iterable[Row]:
        yield "eval", None, "loss", float(m.snap.eval_loss[k])
        if m.snap.eval_acc is not None:
            yield "eval", None, "accuracy", float(m.snap.eval_acc[k])
        if m.train_loss is not None:
            yield "train", None, "loss", float(m.train_loss[k])


class Alignment(Metric):
    """Per hidden layer: ``best_corr_mean``, ``best_corr_min``, ``recovered_frac``,
    ``covered_frac``, ``match_count_mean``, ``fanout_norm_mean`` (docs/science.md §4)."""

    def member_rows(self, m: Measurement, k: int) -> Iterable[Row]:
        for l, stats in enumerate(m.layer_stats):
            for name, v in stats.items():
                yield "eval", l, name, float(v[k])


class AlignmentSE(Metric):
    """Per hidden layer: ``best_corr_mean_se``, the standard error of ``best_corr_mean`` from the
    finite evaluation set: each best correlation r_k has SE (1 - r_k^2) / sqrt(N - 3) (Fisher z,
    delta method), and the mean over the m_l teacher nodes sqrt(sum_k SE_k^2) / m_l. It ignores
    the upward bias of taking the max over n_l students (larger for small N, many students)."""

    def member_rows(self, m: Measurement, k: int) -> Iterable[Row]:
        n = max(m.eval_samples - 3, 1)
        for l, C in enumerate(m.snap.corr):
            best = C[k].max(1).values.double()
            se = (1 - best.square()).clamp_min(0) / n**0.5
            yield "eval", l, "best_corr_mean_se", float(se.square().sum().sqrt() / len(best))


METRICS: dict[str, type[Metric]] = {
    "loss": Loss,
    "alignment": Alignment,
    "alignment_se": AlignmentSE,
}
