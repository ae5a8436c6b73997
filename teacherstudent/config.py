"""Experiment configuration: one frozen, validated model per concern.

Sections (the names users type in TOML files and ``--set`` overrides):
``teacher``, ``inputs``, ``student``, ``training``, ``measure`` (and ``probe``, set only
in probe child runs). The canonical form of a config is the sorted-key JSON of its
non-default fields; its hash is the run id, so adding a field with a no-op default keeps
old run ids.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
import math
import re
from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .architectures import ARCHITECTURES
from .errors import UserError
from .inputs import INPUTS, check_dim, check_inputs
from .lucky import check_lucky
from .metrics import METRICS
from .registry import check_name
from .train import LOSSES, OPTIMIZER_FIELDS, OPTIMIZERS, SCHEDULE_FIELDS, SCHEDULES, warmup_steps

MAX_STEPS = 2**31 - 1  # first-pass steps are kept as int32 (results.py)
MAX_MEMBERS = 1 << 20  # --seeds ranges: a typo like 1-100000000 is refused before building the list


# Seeds: non-negative 64-bit integers; every stream derives from one with all its bits (seeds.py).
Seed = Annotated[int, Field(ge=0, lt=2**64, description="a non-negative 64-bit integer seed")]
Beta = Annotated[float, Field(ge=0, lt=1)]


class _Section(BaseModel):
    # inf and nan are never meaningful values here (inf passes gt=0 checks and only fails later, mid-run)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def changed(self, *fields: str) -> list[str]:
        """Those of ``fields`` whose value differs from the default."""
        return [f for f in fields if getattr(self, f) != type(self).model_fields[f].get_default(call_default_factory=True)]

    def _unused(self, section: str, fields: list[str], needs: str) -> None:
        """Raise for settings that would do nothing (a strict config never accepts a no-op)."""
        if fields:
            names = ", ".join(f"{section}.{f}" for f in fields)
            raise ValueError(f"{names} {'does' if len(fields) == 1 else 'do'} nothing unless {needs}; drop "
                             f"{'it' if len(fields) == 1 else 'them'} or set {needs}")


def _distinct_steps(name: str, v: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(v)) != len(v):
        raise ValueError(f"{name} lists a step twice: {list(v)}")
    return v


class TeacherConfig(_Section):
    """The fixed teacher network (docs/science.md §2)."""

    d: int = Field(20, gt=0, description="input dimension")
    widths: tuple[int, ...] = Field((10, 15, 20, 25), min_length=1, description="hidden widths m_1..m_L, bottom up")
    outputs: int = Field(100, gt=0, description="number of outputs C")
    weights: Literal["discrete", "gaussian"] = "discrete"
    grid: tuple[float, ...] | None = Field(None, min_length=2, description="weights='discrete': the values entries are "
                                           "drawn from (default: -1, -0.75, ..., 1); 2019 code: [-0.5, -0.25, 0, 0.25, 0.5]")
    firing: float | tuple[float, ...] = Field(0.5, description="bias_mode='tuned': fraction of reference inputs each node fires on (one value, or one per layer)")
    strength_decay: float = Field(0.0, ge=0, description="p: column i of every layer above the first is divided by (1+i)^p")
    standardize_outputs: bool = True
    bias: bool = True
    bias_mode: Literal["tuned", "fixed", "uniform"] = Field(
        "tuned", description="tuned: each bias set so its node fires on `firing` of the reference inputs (2020 code); "
        "fixed: every hidden bias is bias_value; uniform: drawn U(-bias_range, bias_range) (2019 code)")
    bias_value: float = Field(0.0, description="bias_mode='fixed': the hidden biases (2020 two-layer code: -0.1)")
    bias_range: float = Field(0.5, gt=0, description="bias_mode='uniform': half-width of the uniform draw")
    bias_normalized: bool = Field(False, description="fixed/uniform biases divided by their row's norm along with the row (2019 code)")
    output_normalized: bool = Field(True, description="output rows divided by their norm; false: raw grid values (2020 two-layer code)")
    output_bias: float | Literal["hidden"] | None = Field(
        None, description="None: zero (or the standardisation's); a number: that fixed output bias; 'hidden': drawn "
        "like the hidden biases (bias_mode fixed/uniform)")
    batchnorm: bool = False
    leaky_slope: float = Field(0.0, ge=0, lt=1)
    reference_samples: int = Field(10_000, ge=100)
    seed: Seed = 0
    seeds: tuple[Seed, ...] | None = Field(None, min_length=1, description="one teacher per ensemble member (as many "
                                           "as student.seeds): member k learns and is measured against teacher seeds[k]")

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in v):
            raise ValueError(f"every width must be positive, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _conventions(self) -> TeacherConfig:
        if self.seeds is not None:
            self._unused("teacher", self.changed("seed"), "teacher.seeds is left unset (seeds gives every member's teacher)")
        if self.weights != "discrete":
            self._unused("teacher", self.changed("grid"), "teacher.weights='discrete'")
        if self.grid is not None and not any(v != 0 for v in self.grid):
            raise ValueError("teacher.grid needs a non-zero value")
        if not self.bias:
            self._unused("teacher", self.changed("bias_mode", "bias_value", "bias_range", "bias_normalized"), "teacher.bias=true")
        if self.bias_mode != "tuned":
            self._unused("teacher", self.changed("firing"), "teacher.bias_mode='tuned'")
        if self.bias_mode != "fixed":
            self._unused("teacher", self.changed("bias_value"), "teacher.bias_mode='fixed'")
        if self.bias_mode != "uniform":
            self._unused("teacher", self.changed("bias_range"), "teacher.bias_mode='uniform'")
        if self.bias_mode == "tuned":
            self._unused("teacher", self.changed("bias_normalized"), "teacher.bias_mode='fixed' or 'uniform'")
        if self.output_bias is not None and self.standardize_outputs:
            raise ValueError("teacher.output_bias is replaced by the standardisation's; set teacher.standardize_outputs=false")
        if self.output_bias == "hidden" and (not self.bias or self.bias_mode == "tuned"):
            raise ValueError("teacher.output_bias='hidden' draws the output biases like fixed or uniform hidden biases; "
                             "set teacher.bias_mode='fixed' or 'uniform'")
        if not self.output_normalized and self.standardize_outputs:
            raise ValueError("teacher.output_normalized=false does nothing when the outputs are standardised; "
                             "set teacher.standardize_outputs=false")
        return self

    @model_validator(mode="after")
    def _firing_per_layer(self) -> TeacherConfig:
        fr = self.firing_per_layer
        if len(fr) != len(self.widths):
            raise ValueError(f"firing has {len(fr)} values but the teacher has {len(self.widths)} hidden layers")
        if any(not 0 < f < 1 for f in fr):
            raise ValueError(f"firing fractions must lie in (0, 1), got {list(fr)}")
        if not self.bias and any(f != 0.5 for f in fr):
            raise ValueError("firing fractions need biases: drop teacher.firing or set teacher.bias=true")
        return self

    @property
    def firing_per_layer(self) -> tuple[float, ...]:
        if isinstance(self.firing, tuple):
            return self.firing
        return (self.firing,) * len(self.widths)


class InputsConfig(_Section):
    """Input distribution, training set and evaluation set (docs/science.md §3)."""

    kind: str = "gaussian"
    sigma: float = Field(10.0, gt=0)
    train_samples: int = Field(100_000, gt=0, description="N, the fixed training-set size (or samples per epoch with fresh=true)")
    fresh: bool = Field(False, description="draw N fresh samples every epoch instead of a fixed set")
    eval_samples: int = Field(10_240, ge=16)
    seed: Seed = 0
    # kind-specific (teacherstudent/inputs.py): setting another kind's field is an error
    n_clusters: int = Field(10, ge=1, description="clusters: number of equally likely Gaussian clusters")
    cluster_std: float = Field(1.0, ge=0, description="clusters: per-coordinate std of each cluster")
    latent_dim: int = Field(2, ge=1, description="manifold: latent dimension r (at most the input dimension)")
    noise: float = Field(0.0, ge=0, description="manifold: std of isotropic noise added off the manifold")
    holdout: float = Field(0.2, gt=0, lt=1, description="digits: fraction of the images kept for the evaluation set")
    image_channels: int = Field(1, ge=1, description="gaussian_images: channels of each image")
    image_size: int = Field(8, ge=1, description="gaussian_images: height and width of each image")
    # label regime (teacherstudent/labels.py)
    labels: Literal["teacher", "wide_teacher", "permuted"] = Field(
        "teacher", description="teacher: the teacher's outputs; wide_teacher: an independent teacher wide_factor times "
        "wider labels the data (and is the one measured); permuted: training labels randomly permuted across samples")
    wide_factor: int = Field(10, ge=2, description="labels='wide_teacher': its widths are the teacher's times this")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return check_name(INPUTS, "input kind", v)

    @model_validator(mode="after")
    def _kind_fields(self) -> InputsConfig:
        check_inputs(self)
        if self.labels != "wide_teacher" and self.wide_factor != 10:
            raise ValueError("inputs.wide_factor is only used with inputs.labels='wide_teacher'")
        return self


class StudentConfig(_Section):
    """Over-parameterised students: same depth as the teacher, widths times ``multiplier``."""

    multiplier: int = Field(10, ge=1)
    seeds: tuple[Seed, ...] = Field((0, 1, 2, 3), min_length=1, description="one ensemble member per seed")
    init: Literal["pytorch", "scaled", "normal", "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform",
                  "orthogonal"] = Field(
        "pytorch", description="pytorch: nn.Linear's default; scaled: N(0, init_scale^2 / fan_in) weights, zero biases; "
        "normal: N(0, init_std^2) weights (one std, or one per layer incl. the output), zero biases (2020 two-layer "
        "code: 0.005; 2019 matrix simulator: 0.1); kaiming_normal/kaiming_uniform (relu gain, fan_in), "
        "xavier_normal/xavier_uniform, orthogonal: torch.nn.init's, zero biases")
    init_scale: float = Field(1.0, gt=0, description="every init but 'normal': the weights drawn are multiplied by "
                              "this (scaled: N(0, init_scale^2 / fan_in))")
    init_std: float | tuple[float, ...] = Field(0.1, description="with init='normal': weight std, one or per layer")
    batchnorm: bool = False
    lucky_nodes: int | tuple[int, ...] = Field(0, description="lucky by construction: this many nodes per hidden layer "
                                               "(one value, or one per layer) start at the teacher's weights plus noise")
    lucky_noise: float = Field(0.0, ge=0, description="std of the Gaussian noise added to every lucky weight and bias")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_list(cls, v: Any) -> Any:
        # one clear error per kind of bad value, instead of pydantic's two (item + length)
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            raise ValueError(f"student.seeds is a list of seeds, one ensemble member each: write [{v}] for one "
                             "member, or e.g. [0, 1, 2, 3] (--seeds 0-3)" if isinstance(v, int) and not isinstance(v, bool)
                             else f"student.seeds is a list of non-negative integers, e.g. [0, 1, 2, 3], got {v!r}")
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("student.seeds is empty: an ensemble needs at least one member, e.g. [0]")
            bad = [(i, x) for i, x in enumerate(v) if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2**64]
            if bad:
                i, x = bad[0]
                raise ValueError(f"student.seeds.{i}: a seed is a non-negative 64-bit integer, got {x!r}")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v):
            twice = sorted({s for s in v if v.count(s) > 1})
            raise ValueError(f"student.seeds must be distinct (each seed is one ensemble member; two equal seeds "
                             f"would train the same student twice), got {twice[0]} twice in {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        if self.init == "normal":
            self._unused("student", self.changed("init_scale"), "student.init is not 'normal' (init_std gives its scale)")
        if self.init != "normal":
            self._unused("student", self.changed("init_std"), "student.init='normal'")
        stds = self.init_std if isinstance(self.init_std, tuple) else (self.init_std,)
        if not stds or any(v <= 0 for v in stds):
            raise ValueError(f"student.init_std must be positive, got {self.init_std}")
        return self


class TrainingConfig(_Section):
    """Optimiser, schedule, loss and length of training."""

    optimizer: str = Field("sgd", description="a name in train.OPTIMIZERS: sgd, adam, adamw, rmsprop, adagrad")
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    schedule: str = Field("constant", description="a name in train.SCHEDULES: constant, piecewise, step, cosine, "
                          "exponential, cyclic, onecycle")
    milestones: dict[int, float] = Field(default_factory=dict, description="piecewise: {epoch: lr}, e.g. {0: 0.2, 20: 0.1}")
    step_epochs: int = Field(10, gt=0, description="step schedule: multiply lr by gamma every step_epochs epochs")
    gamma: float = Field(0.1, gt=0)
    batch_size: int = Field(64, gt=0)
    epochs: int = Field(8, ge=0)
    steps: int | None = Field(None, ge=0, le=MAX_STEPS, description="total steps; when set, replaces epochs")
    loss: str = Field("mse", description="a name in train.LOSSES: mse (mean over samples and outputs), ce")
    dtype: Literal["float32", "float64"] = "float32"
    backend: Literal["auto", "fast", "autograd"] = Field(
        "auto", description="fast: hand-written backward (plain ReLU students); autograd: the reference; auto: fast when it applies")
    checkpoint_steps: tuple[int, ...] = Field((), description="extra steps whose weights are kept (for late rewinding)")
    sampling: Literal["epoch", "replacement"] = Field(
        "epoch", description="epoch: each epoch visits the training set once in a fresh order; replacement: every "
        "minibatch drawn uniformly with replacement (2020 two-layer code)")
    steps_per_epoch: int | None = Field(None, gt=0, description="sampling='replacement': steps per 'epoch' "
                                        "(2020 code: 1000); default: ceil(train_samples / batch_size)")
    loss_reduction: Literal["mean", "half_sum"] = Field(
        "mean", description="mse only. mean: over samples and outputs; half_sum: (1/2B) sum over the batch of "
        "||y_teacher - y_student||^2, i.e. summed over outputs (2020 two-layer code)")
    renorm: Literal["none", "fan_in"] = Field(
        "none", description="fan_in: after every step, rescale each node's incoming weights (and bias, renorm_bias) "
        "to unit norm (2019 matrix simulator)")
    renorm_layers: tuple[int, ...] | None = Field(None, description="renorm='fan_in': weight layers renormalised "
                                                  "(0 = the first, L = the output layer); default all")
    renorm_bias: bool = Field(True, description="renorm='fan_in': the bias counts in the norm and is rescaled with the row")
    # optimiser-specific (train.OPTIMIZER_FIELDS): rejected under an optimiser that does not read them
    alpha: float = Field(0.99, ge=0, lt=1, description="rmsprop: smoothing constant of the squared-gradient average")
    centered: bool = Field(False, description="rmsprop: divide by the gradient's estimated variance instead")
    lr_decay: float = Field(0.0, ge=0, description="adagrad: step t uses lr / (1 + (t - 1) * lr_decay)")
    # schedule-specific (train.SCHEDULE_FIELDS)
    min_lr: float = Field(0.0, ge=0, description="cyclic: the low end of every cycle (lr is the high end)")
    half_cycle_steps: int = Field(2000, gt=0, description="cyclic: steps from min_lr up to lr, and as many back down")
    pct_start: float = Field(0.3, gt=0, lt=1, description="onecycle: fraction of the steps spent rising to lr")
    div_factor: float = Field(25.0, gt=0, description="onecycle: starts at lr / div_factor")
    final_div_factor: float = Field(1e4, gt=0, description="onecycle: ends at lr / div_factor / final_div_factor")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up over the first steps: step s runs at (s + 1) / "
                              "warmup_steps times the schedule's rate (any schedule)")
    warmup_epochs: int = Field(0, ge=0, description="the warm-up length in epochs instead of warmup_steps")
    # regularisation and stopping
    clip_norm: float | None = Field(None, gt=0, description="clip each member's total gradient norm to this "
                                    "(torch.nn.utils.clip_grad_norm_ on that member's parameters alone)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="loss='ce': F.cross_entropy's label_smoothing "
                                   "(training loss only; the eval loss stays the plain cross-entropy)")
    dropout: float = Field(0.0, ge=0, lt=1, description="probability that a student hidden node is zeroed in a training "
                           "step (nn.Dropout after every hidden ReLU; masks from each member's own seeded stream)")
    early_stop_patience: int | None = Field(None, ge=1, description="stop (freeze) a member whose eval loss has not "
                                            "fallen below its best minus early_stop_min_delta for this many measurements")
    early_stop_min_delta: float = Field(0.0, ge=0, description="early_stop_patience: the least fall that counts")

    _names = field_validator("optimizer")(classmethod(lambda cls, v: check_name(OPTIMIZERS, "optimizer", v)))
    _schedules = field_validator("schedule")(classmethod(lambda cls, v: check_name(SCHEDULES, "schedule", v)))
    _losses = field_validator("loss")(classmethod(lambda cls, v: check_name(LOSSES, "loss", v)))
    _ckpt = field_validator("checkpoint_steps")(classmethod(lambda cls, v: _distinct_steps("training.checkpoint_steps", v)))

    def _reject_others(self, kind: str, table: dict[str, tuple[str, ...]]) -> None:
        """Fields that only other entries of ``table`` (OPTIMIZER_FIELDS, SCHEDULE_FIELDS) read, if set."""
        own = set(table.get(getattr(self, kind), ()))
        users: dict[tuple[str, ...], list[str]] = {}
        for field in dict.fromkeys(f for fields in table.values() for f in fields):
            if field not in own and self.changed(field):
                users.setdefault(tuple(n for n, fs in table.items() if field in fs), []).append(field)
        for names, fields in users.items():
            self._unused("training", fields, f"training.{kind}=" + " or ".join(repr(n) for n in names))

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        self._reject_others("optimizer", OPTIMIZER_FIELDS)
        self._reject_others("schedule", {k: v for k, v in SCHEDULE_FIELDS.items() if k != "piecewise"})
        if self.warmup_steps and self.warmup_epochs:
            raise ValueError("training.warmup_steps and training.warmup_epochs both give the warm-up length; set one")
        if self.loss != "ce":
            self._unused("training", self.changed("label_smoothing"), "training.loss='ce'")
        if self.early_stop_patience is None:
            self._unused("training", self.changed("early_stop_min_delta"), "training.early_stop_patience is set")
        if self.schedule == "cyclic" and self.min_lr >= self.lr:
            raise ValueError(f"training.min_lr ({self.min_lr}) must lie below training.lr ({self.lr}), the top of the cycle")
        if self.steps is not None:
            self._unused("training", self.changed("epochs"), "training.steps is left unset (steps replaces epochs)")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer='sgd' and momentum > 0")
        if self.schedule == "piecewise":
            self._unused("training", self.changed("lr"), "training.schedule is not 'piecewise' (milestones give the rates)")
        if self.sampling != "replacement":
            self._unused("training", self.changed("steps_per_epoch"), "training.sampling='replacement'")
        if self.renorm == "none":
            self._unused("training", self.changed("renorm_layers", "renorm_bias"), "training.renorm='fan_in'")
        if self.loss_reduction != "mean" and self.loss != "mse":
            raise ValueError("training.loss_reduction='half_sum' is defined for loss='mse' only")
        if self.schedule == "piecewise":
            if 0 not in self.milestones:
                raise ValueError("a piecewise schedule needs milestones with an entry for epoch 0, e.g. {0 = 0.2, 20 = 0.1}")
            if any(v <= 0 for v in self.milestones.values()) or any(k < 0 for k in self.milestones):
                raise ValueError("piecewise milestones need epochs >= 0 and learning rates > 0")
        elif self.milestones:
            raise ValueError("milestones are only used by schedule='piecewise'")
        if self.steps is None and self.epochs == 0:
            raise ValueError("nothing to train: set training.epochs > 0 or training.steps")
        return self


class ConvConfig(_Section):
    """Geometry of convolutional teachers and students (``arch='conv'``; ``teacher.widths`` are their channels)."""

    kernel: int = Field(3, ge=1, description="k: every hidden layer is a k x k convolution")
    stride: int | tuple[int, ...] = Field(1, description="one stride, or one per conv layer")
    padding: int | tuple[int, ...] = Field(1, description="zero padding on every side: one value, or one per conv layer")

    @field_validator("stride", "padding")
    @classmethod
    def _per_layer(cls, v: int | tuple[int, ...], info) -> int | tuple[int, ...]:
        values = v if isinstance(v, tuple) else (v,)
        low = 1 if info.field_name == "stride" else 0
        if not values or any(x < low for x in values):
            raise ValueError(f"conv.{info.field_name} must be {'positive' if low else 'non-negative'}, got {v}")
        return v


class MeasureConfig(_Section):
    """When to measure; every measurement runs on the fixed evaluation set."""

    every: Literal["epoch", "steps", "log"] = "epoch"
    every_steps: int = Field(1000, gt=0, description="with every='steps'")
    log_points: int = Field(30, ge=2, description="with every='log': about this many log-spaced steps")
    corr_steps: tuple[int, ...] = Field((), description="steps whose full correlation matrices are kept besides init and end")
    recovered: float = Field(0.95, gt=0, le=1, description="a teacher node is recovered when its best correlation exceeds this")
    covered: float = Field(0.9, gt=0, le=1, description="covered / matched threshold (match count, covered_frac)")
    metrics: tuple[str, ...] = Field(("loss", "alignment", "alignment_se"), min_length=1,
                                     description="metric callbacks (names in metrics.METRICS) whose rows go to metrics.parquet")

    # theory statistics beta / H (docs/science.md §4; theory.py): costly, off by default, on their own schedule
    theory_every: Literal["none", "steps", "log"] = Field(
        "none", description="when to compute the theory statistics (theory.parquet, theory_nodes.parquet) besides "
        "init and end: none (never), steps (every theory_every_steps) or log (about theory_log_points log-spaced steps)")
    theory_every_steps: int = Field(1000, gt=0, description="with theory_every='steps'")
    theory_log_points: int = Field(10, ge=2, description="with theory_every='log'")
    theory_samples: int | None = Field(None, ge=1, description="theory statistics on the first this many evaluation "
                                       "samples (default: all of them)")

    _corr = field_validator("corr_steps")(classmethod(lambda cls, v: _distinct_steps("measure.corr_steps", v)))

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            check_name(METRICS, "metric", name)
        if len(set(v)) != len(v):
            raise ValueError(f"measure.metrics lists a metric twice: {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> MeasureConfig:
        if self.every != "steps":
            self._unused("measure", self.changed("every_steps"), "measure.every='steps'")
        if self.every != "log":
            self._unused("measure", self.changed("log_points"), "measure.every='log'")
        if self.theory_every != "steps":
            self._unused("measure", self.changed("theory_every_steps"), "measure.theory_every='steps'")
        if self.theory_every != "log":
            self._unused("measure", self.changed("theory_log_points"), "measure.theory_every='log'")
        if self.theory_every == "none":
            self._unused("measure", self.changed("theory_samples"), "measure.theory_every is 'steps' or 'log'")
        if self.covered > self.recovered:
            raise ValueError(f"measure.covered ({self.covered}) must not exceed measure.recovered ({self.recovered})")
        return self


RunId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]+-[0-9a-f]+$", description="run id of the parent run")]


class _Probe(_Section):
    """How a probe child run derives from its finished parent run (docs/science.md §5)."""

    # fields that always appear in the run id, at their default too (0.2 probe run ids listed them)
    _IDENTITY: ClassVar[tuple[str, ...]] = ()
    # the tables its folder holds: None = a run's (the probe trains); else its own (store.folder_tables)
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


class ExperimentConfig(_Section):
    """One experiment: a teacher, its data, an ensemble of students and how they train."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.]+$", description="run folder prefix (letters, digits, _ and .)")
    teacher: TeacherConfig = TeacherConfig()
    inputs: InputsConfig = InputsConfig()
    student: StudentConfig = StudentConfig()
    training: TrainingConfig = TrainingConfig()
    measure: MeasureConfig = MeasureConfig()
    arch: str = Field("mlp", description="a name in architectures.ARCHITECTURES: mlp (fully connected), conv "
                      "(convolutional teacher and students; teacher.widths are channels, [conv] the geometry)")
    conv: ConvConfig = ConvConfig()
    probe: ProbeConfig | None = Field(None, description="set only in probe child runs (teacherstudent probe ...)")

    _arch = field_validator("arch")(classmethod(lambda cls, v: check_name(ARCHITECTURES, "architecture", v)))

    @model_validator(mode="after")
    def _cross_sections(self) -> ExperimentConfig:  # checks that need two sections
        if self.arch != "conv" and self.conv != ConvConfig():
            changed = self.conv.changed(*ConvConfig.model_fields)
            self._unused("conv", changed, "arch='conv'")
        ARCHITECTURES[self.arch].check(self)
        check_dim(self.inputs, self.teacher.d, self.teacher.d == TeacherConfig.model_fields["d"].default)
        check_lucky(self.student, self.teacher.widths)
        if self.training.backend == "fast" and self.student.batchnorm:
            raise ValueError("training.backend='fast' covers plain ReLU students only; use 'auto' or 'autograd' "
                             "with student.batchnorm")
        L = len(self.teacher.widths)
        if self.teacher.seeds is not None:
            if len(self.teacher.seeds) != len(self.student.seeds):
                raise ValueError(f"teacher.seeds has {len(self.teacher.seeds)} seeds but student.seeds has "
                                 f"{len(self.student.seeds)}: give one teacher per ensemble member")
            if self.inputs.labels != "teacher":
                raise ValueError("teacher.seeds (one teacher per member) works with inputs.labels='teacher' only")
        if isinstance(self.student.init_std, tuple) and len(self.student.init_std) != L + 1:
            raise ValueError(f"student.init_std has {len(self.student.init_std)} values but the students have {L + 1} "
                             "weight layers (hidden layers and the output)")
        bad = [l for l in self.training.renorm_layers or () if not 0 <= l <= L]
        if bad:
            raise ValueError(f"training.renorm_layers {bad} are not weight layers 0..{L} (L = the output layer)")
        if (self.measure.theory_samples or 0) > self.inputs.eval_samples:
            raise ValueError(f"measure.theory_samples ({self.measure.theory_samples}) exceeds inputs.eval_samples "
                             f"({self.inputs.eval_samples}); lower it or leave it unset (all evaluation samples)")
        total = self.total_steps
        if total > MAX_STEPS:
            raise ValueError(f"training.epochs gives {total} steps, more than {MAX_STEPS}; train fewer epochs")
        t = self.training
        warm = warmup_steps(t, self.steps_per_epoch)
        if warm > total:
            raise ValueError(f"the warm-up ({warm} steps) lasts longer than the run ({total} steps); shorten "
                             "training.warmup_steps / warmup_epochs or train longer")
        if t.schedule == "onecycle" and not 1 < t.pct_start * total < total:
            raise ValueError(f"training.schedule='onecycle' needs more than 1 rising step: pct_start * steps = "
                             f"{t.pct_start * total:g}; raise training.pct_start or train longer")
        for name, steps in (("measure.corr_steps", self.measure.corr_steps),
                            ("training.checkpoint_steps", self.training.checkpoint_steps)):
            late = [s for s in steps if not 0 <= s <= total]
            if late:
                raise ValueError(f"{name} {late} lie outside 0..{total} (the last step); drop them or train longer")
        return self

    # ---- derived sizes ----------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        if self.training.steps_per_epoch is not None:
            return self.training.steps_per_epoch
        return math.ceil(self.inputs.train_samples / self.training.batch_size)

    @property
    def total_steps(self) -> int:
        t = self.training
        return t.steps if t.steps is not None else t.epochs * self.steps_per_epoch

    @model_serializer(mode="wrap")
    def _drop_no_probe(self, handler):  # keep config.json of ordinary runs as it was
        data = handler(self)
        if isinstance(data, dict) and data.get("probe", 0) is None:
            del data["probe"]
        return data

    # ---- identity -------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """Non-default fields only, as plain JSON values (name excluded)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        data.pop("name", None)
        if self.probe is not None:
            data["probe"] = self.probe.canonical()
        return {k: v for k, v in data.items() if v}

    def digest(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        return f"{self.name}-{self.digest()}"

    def replace(self, **sections: Any) -> ExperimentConfig:
        """Return a copy with some sections or fields replaced, validated again."""
        data = self.model_dump()
        for k, v in sections.items():
            if isinstance(v, dict) and isinstance(data.get(k), dict):
                data[k].update(v)
            else:
                data[k] = v.model_dump() if isinstance(v, BaseModel) else v
        return build_config(data)


# ---- construction from files and overrides ------------------------------

def format_validation_error(err: ValidationError) -> str:
    """One readable line listing every problem and the offending values."""
    parts = []
    for e in err.errors():
        path = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if path[:1] == ["probe"] and len(path) > 1 and path[1] in PROBE_KINDS:
            path.pop(1)  # the union's tag: the kind is already in the config
        loc = ".".join(path)
        msg = e["msg"].removeprefix("Value error, ")
        if path and msg.startswith(path[0] + "."):
            loc = ""  # the message names its fields itself
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `teacherstudent run --help` lists the sections)"
        elif "input" in e and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid config: " + "; ".join(parts)


def probe_config(model: type[_Probe], spec: _Probe | dict[str, Any] | None, **fields: Any) -> _Probe:
    """A validated probe config of ``model``'s kind from a config, a dict and/or fields
    (later ones win); bad values give the one-line ``invalid probe`` error."""
    data = spec.model_dump() if isinstance(spec, BaseModel) else dict(spec or {})
    data.update(fields)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        msg = format_validation_error(err).removeprefix("invalid config: ")
        raise UserError("invalid probe: " + ("; ".join(p if p.startswith("probe.") else f"probe.{p}"
                                                       for p in msg.split("; ")))) from None


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err)) from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (5, 0.1, true, [10, 20], {0 = 0.2}) or else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --set {item!r}: write it as section.key=value, e.g. --set student.multiplier=5")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise UserError(f"bad --set {item!r}: {p} is not a section")
            node = node[p]
        node[parts[-1]] = parse_value(value.strip())
    return data


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist: pass the path of a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read config file {path}: {err}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "milestones" else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                preset: str | None = None) -> ExperimentConfig:
    """Config from an optional preset (preset.py), an optional TOML file on top of it, then
    ``section.key=value`` overrides."""
    from .preset import preset_path

    data = load_toml(preset_path(preset)) if preset is not None else {}
    if path is not None:
        own = load_toml(path)
        study = [k for k in ("sweep", "quick") if k in own]  # tables only a named experiment's file has
        if study:
            raise UserError(f"config file {path} has a [{study[0]}] table: it is a named experiment's base config; run "
                            f"`teacherstudent experiment run {Path(path).stem}` (or remove the table to use it with run)")
        data = _merge(data, with_preset(own, f"config file {path}"))  # it may start from a preset
    return build_config(apply_overrides(data, list(overrides or [])))


def with_preset(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A config file's ``data`` merged over the paper setting it starts from (``preset = "NAME"``), if any
    (``where``: how an error names the file)."""
    from .preset import preset_path

    data = dict(data)
    preset = data.pop("preset", None)
    if preset is None:
        return data
    if not isinstance(preset, str):
        raise UserError(f"{where}: preset must be a preset's name (teacherstudent preset list)")
    return _merge(load_toml(preset_path(preset)), data)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1-8"`` -> (1..8); ``"1,3,5"``; ``"4"``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                if b - a >= MAX_MEMBERS:
                    raise UserError(f"bad --seeds {text!r}: {b - a + 1} students is more than {MAX_MEMBERS}; "
                                    "train fewer members")
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(lo))
    except ValueError:
        raise UserError(f"bad --seeds {text!r}: use a range like 1-8, a list like 1,3,5 or one seed") from None
    return tuple(seeds)
