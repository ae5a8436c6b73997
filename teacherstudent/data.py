"""Training and evaluation data labelled by the teacher.

Every random draw comes from a generator derived from ``(inputs.seed, stream, ...)``, so
the training set, the evaluation set and each epoch's order or fresh samples are pure
functions of the config: nothing about the data stream needs saving to resume.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ExperimentConfig
from .inputs import Draw, InputDistribution
from .labels import relabel
from .seeds import Stream, generator
from .teacher import Teacher



@dataclass
class Data:
    """Tensors on the training device; ``y`` is float ``[N, C]`` (mse) or long ``[N]`` (ce)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    teacher_hidden_eval: list[torch.Tensor]  # [N_eval, m_l]


def label(teacher: Teacher, x: torch.Tensor, loss: str) -> torch.Tensor:
    """``[N, C]`` targets (or ``[N]`` labels); ``[K, N, C]`` (``[K, N]``) with one teacher per member."""
    y = teacher(x)
    return y.argmax(-1) if loss == "ce" else y


class DataSource:
    """Builds the fixed sets once, and each epoch's batches order (or fresh samples)."""

    def __init__(self, cfg: ExperimentConfig, teacher: Teacher, inputs: InputDistribution, device, dtype):
        self.cfg, self.teacher, self.inputs = cfg, teacher, inputs
        self.per_member = teacher.per_member  # labels and teacher activations carry a leading K axis
        self.sample_dim = 1 if self.per_member else 0
        self.device, self.dtype = device, dtype
        seed = cfg.inputs.seed
        drawn = inputs.draw(cfg.inputs.eval_samples, generator(seed, Stream.EVAL), split="eval")
        x_eval = drawn.x
        hidden, _ = teacher.forward(x_eval)
        self.x_eval = self._put(x_eval)
        self.y_eval = self._put(self._targets(drawn))
        self.teacher_hidden_eval = [self._put(h) for h in hidden]
        self._fixed = None if cfg.inputs.fresh else self._labelled(generator(seed, Stream.TRAIN), generator(seed, Stream.PERMUTE))

    @property
    def train_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fixed training inputs and labels, in drawing order (None with ``inputs.fresh``)."""
        return self._fixed

    def _put(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)

    def _labelled(self, gen: torch.Generator, label_gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        drawn = self.inputs.draw(self.cfg.inputs.train_samples, gen)
        y = relabel(self.cfg.inputs, self._targets(drawn), label_gen)
        return self._put(drawn.x), self._put(y)

    def _targets(self, drawn: Draw) -> torch.Tensor:
        """The labels of ``drawn``: its data set's classes (``inputs.labels='dataset'``), else the teacher's."""
        if self.cfg.inputs.labels == "dataset":
            return drawn.label
        return label(self.teacher, drawn.x, self.cfg.training.loss)

    def epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training inputs and labels of ``epoch``, already in this epoch's order (with
        ``training.sampling='replacement'``: ``steps_per_epoch`` minibatches drawn with replacement)."""
        seed = self.cfg.inputs.seed
        x, y = self._fixed if self._fixed is not None else self._labelled(generator(seed, Stream.FRESH, epoch),
                                                                          generator(seed, Stream.PERMUTE, epoch))
        if self.cfg.training.sampling == "replacement":  # every minibatch drawn uniformly with replacement
            n = self.cfg.steps_per_epoch * self.cfg.training.batch_size
            idx = torch.randint(x.shape[0], (n,), generator=generator(seed, Stream.SAMPLE, epoch)).to(self.device)
            return x[idx], y.index_select(self.sample_dim, idx)
        perm = torch.randperm(x.shape[0], generator=generator(seed, Stream.ORDER, epoch)).to(self.device)
        return x[perm], (y.index_select(1, perm) if self.per_member else y[perm])

    def batch(self, y: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Samples ``start:stop`` of an epoch's labels (along the sample axis)."""
        return y[:, start:stop] if self.per_member else y[start:stop]
