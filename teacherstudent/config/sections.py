"""The config sections: one frozen, strict pydantic model per concern (``teacher``, ``inputs``,
``student``, ``training``, ``conv``, ``measure``). Checks within one section live here;
checks that need a registry (names, an optimiser's or input kind's own fields) call
``registries`` (the registries' own validators); checks across sections are in ``experiment.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import registries

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


class TeacherTrainConfig(_Section):
    """``teacher.train``: train the teacher on the data set's labels before it is frozen (teacherstudent/pretrain.py):
    ``epochs`` passes of SGD on cross-entropy over the training split, then optionally prune a ``prune`` fraction of
    every hidden layer's nodes (the smallest fan-out norms) and fine-tune ``finetune_epochs`` more."""

    epochs: int = Field(10, ge=1, description="passes over the training split")
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(64, gt=0)
    prune: float = Field(0.0, ge=0, lt=1, description="fraction of every hidden layer's nodes removed after training")
    finetune_epochs: int = Field(0, ge=0, description="passes after pruning (with prune > 0)")
    dtype: Literal["float32", "float64"] = "float32"
    seed: Seed = Field(0, description="the batch order (stream TEACHER_TRAIN of teacher.seed)")

    @model_validator(mode="after")
    def _check(self) -> TeacherTrainConfig:
        if self.prune == 0:
            self._unused("teacher.train", self.changed("finetune_epochs"), "teacher.train.prune > 0")
        return self


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
    train: TeacherTrainConfig | None = Field(None, description="train the (generated) teacher on the data set's labels, "
                                             "optionally prune it, then freeze it (teacherstudent/pretrain.py)")

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
    labels: Literal["teacher", "wide_teacher", "permuted", "dataset"] = Field(
        "teacher", description="teacher: the teacher's outputs; wide_teacher: an independent teacher wide_factor times "
        "wider labels the data (and is the one measured); permuted: training labels randomly permuted across samples; "
        "dataset: the data set's own classes (digits, mnist, fashion_mnist, cifar10; loss='ce')")
    wide_factor: int = Field(10, ge=2, description="labels='wide_teacher': its widths are the teacher's times this")
    path: str | None = Field(None, description="mnist, fashion_mnist, cifar10: the folder holding the data set's files")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return registries.input_kind(v)

    @model_validator(mode="after")
    def _kind_fields(self) -> InputsConfig:
        registries.input_fields(self)
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
    bias: bool = Field(True, description="false: every student bias (hidden and output) starts at zero and is put "
                       "back to zero after every step, i.e. a network without biases (the two-layer ODE's setting, "
                       "teacherstudent theory ode)")
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
    precision: Literal["full", "bf16"] = Field(
        "full", description="bf16: the training step's matmuls in bfloat16 (mixed precision), with the weights, "
        "their update and the loss in the run's dtype; the outputs are rounded to bfloat16 before the loss, so the "
        "training loss floors at about 2e-5 of the targets' mean square; evaluation and correlations are measured in "
        "the run's dtype. The fast path only (mlp students without BatchNorm); full: every matmul in the run's dtype")
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
    # optimiser-specific (the fields of train.OPTIMIZERS' entries): rejected under an optimiser that does not read them
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

    _names = field_validator("optimizer")(classmethod(lambda cls, v: registries.optimizer(v)))
    _schedules = field_validator("schedule")(classmethod(lambda cls, v: registries.schedule(v)))
    _losses = field_validator("loss")(classmethod(lambda cls, v: registries.loss(v)))
    _ckpt = field_validator("checkpoint_steps")(classmethod(lambda cls, v: _distinct_steps("training.checkpoint_steps", v)))

    def _reject_others(self, kind: str, table: dict[str, tuple[str, ...]]) -> None:
        """Fields that only other entries of ``table`` (the optimisers' fields, SCHEDULE_FIELDS) read, if set."""
        own = set(table.get(getattr(self, kind), ()))
        users: dict[tuple[str, ...], list[str]] = {}
        for field in dict.fromkeys(f for fields in table.values() for f in fields):
            # a field this model lacks cannot have been set (an extension's field on a subclass of it)
            if field not in own and field in type(self).model_fields and self.changed(field):
                users.setdefault(tuple(n for n, fs in table.items() if field in fs), []).append(field)
        for names, fields in users.items():
            self._unused("training", fields, f"training.{kind}=" + " or ".join(repr(n) for n in names))

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        self._reject_others("optimizer", registries.optimizer_fields())
        self._reject_others("schedule", {k: v for k, v in registries.schedule_fields().items() if k != "piecewise"})
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
            registries.metric(name)
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


