"""Label regimes (``inputs.labels``): structured versus random data of the same size.

- ``teacher``: every sample is labelled by the teacher (structured data: a small teacher).
- ``wide_teacher``: an independent teacher ``inputs.wide_factor`` times wider in every
  hidden layer (own seed, same generator settings) labels training and evaluation data,
  and it is the teacher the students are measured against; the student keeps the width
  ``student.multiplier * teacher.widths``, so with ``wide_factor >= multiplier`` the
  teacher is as wide as the student ("random data": each teacher node needs its own
  student).
- ``permuted``: the training labels are the teacher's, randomly permuted across the
  training samples (pure memorisation: no function of x explains them); the evaluation
  labels stay the teacher's, so the evaluation loss measures generalisation to the
  teacher. With ``inputs.fresh`` every epoch's fresh set is permuted anew.
- ``dataset``: the data set's own classes (digits, mnist, fashion_mnist, cifar10; cross-entropy,
  ``teacher.outputs`` = the number of classes) label training and evaluation data, so the
  evaluation ``accuracy`` is against the true labels; the students are still measured
  against the teacher's nodes (a generated teacher, or one trained first: ``teacher.train``).
"""

from __future__ import annotations

import torch

from .config import ExperimentConfig, InputsConfig
from .inputs import InputDistribution
from .seeds import Stream, derive
from .teacher import Teacher, TeacherStack, make_teacher



def wide_seed(seed: int) -> int:
    """The wide teacher's seed: a fixed function of ``teacher.seed``, independent of it as a stream."""
    return derive(seed, Stream.WIDE_TEACHER)


def data_teacher(cfg: ExperimentConfig, inputs: InputDistribution) -> Teacher | TeacherStack:
    """The teacher that labels the data of ``cfg`` (and that its students are measured against);
    with ``teacher.seeds`` one teacher per ensemble member."""
    if cfg.teacher.seeds is not None:
        return TeacherStack(tuple(make_teacher(cfg.teacher.model_copy(update={"seed": s}), inputs) for s in cfg.teacher.seeds))
    if cfg.inputs.labels != "wide_teacher":
        return make_teacher(cfg.teacher, inputs)
    t = cfg.teacher
    wide = t.model_copy(update={"widths": tuple(w * cfg.inputs.wide_factor for w in t.widths), "seed": wide_seed(t.seed)})
    return make_teacher(wide, inputs)


def relabel(cfg: InputsConfig, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Training labels under the regime: ``y`` permuted along samples for ``permuted``, else ``y`` itself."""
    if cfg.labels != "permuted":
        return y
    return y[torch.randperm(y.shape[0], generator=gen)]
