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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from .errors import UserError


# Seeds: non-negative 64-bit integers; every stream derives from one with all its bits (seeds.py).
Seed = Annotated[int, Field(ge=0, lt=2**64, description="a non-negative 64-bit integer seed")]
Beta = Annotated[float, Field(ge=0, lt=1)]


class _Section(BaseModel):
    # inf and nan are never meaningful values here (inf passes gt=0 checks and only fails later, mid-run)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class TeacherConfig(_Section):
    """The fixed teacher network (SCIENCE.md section 2)."""

    d: int = Field(20, gt=0, description="input dimension")
    widths: tuple[int, ...] = Field((10, 15, 20, 25), min_length=1, description="hidden widths m_1..m_L, bottom up")
    outputs: int = Field(100, gt=0, description="number of outputs C")
    weights: Literal["discrete", "gaussian"] = "discrete"
    firing: float | tuple[float, ...] = Field(0.5, description="fraction of reference inputs each node fires on (one value, or one per layer)")
    strength_decay: float = Field(0.0, ge=0, description="p: column i of every layer above the first is divided by (1+i)^p")
    standardize_outputs: bool = True
    bias: bool = True
    batchnorm: bool = False
    leaky_slope: float = Field(0.0, ge=0, lt=1)
    reference_samples: int = Field(10_000, ge=100)
    seed: Seed = 0

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in v):
            raise ValueError(f"every width must be positive, got {list(v)}")
        return v

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
    """Input distribution, training set and evaluation set (SCIENCE.md section 3)."""

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
    # label regime (teacherstudent/labels.py)
    labels: Literal["teacher", "wide_teacher", "permuted"] = Field(
        "teacher", description="teacher: the teacher's outputs; wide_teacher: an independent teacher wide_factor times "
        "wider labels the data (and is the one measured); permuted: training labels randomly permuted across samples")
    wide_factor: int = Field(10, ge=2, description="labels='wide_teacher': its widths are the teacher's times this")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from .inputs import INPUTS

        if v not in INPUTS:
            raise ValueError(f"unknown input kind {v!r}; known: {', '.join(sorted(INPUTS))}")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> InputsConfig:
        from .inputs import check_inputs

        check_inputs(self)
        if self.labels != "wide_teacher" and self.wide_factor != 10:
            raise ValueError("inputs.wide_factor is only used with inputs.labels='wide_teacher'")
        return self


class StudentConfig(_Section):
    """Over-parameterised students: same depth as the teacher, widths times ``multiplier``."""

    multiplier: int = Field(10, ge=1)
    seeds: tuple[Seed, ...] = Field((0, 1, 2, 3), min_length=1, description="one ensemble member per seed")
    init: Literal["pytorch", "scaled"] = "pytorch"
    init_scale: float = Field(1.0, gt=0, description="with init='scaled': weights drawn N(0, init_scale^2 / fan_in)")
    batchnorm: bool = False
    lucky_nodes: int | tuple[int, ...] = Field(0, description="lucky by construction: this many nodes per hidden layer "
                                               "(one value, or one per layer) start at the teacher's weights plus noise")
    lucky_noise: float = Field(0.0, ge=0, description="std of the Gaussian noise added to every lucky weight and bias")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {list(v)}")
        return v


class TrainingConfig(_Section):
    """Optimiser, schedule, loss and length of training."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    schedule: Literal["constant", "piecewise", "cosine", "step"] = "constant"
    milestones: dict[int, float] = Field(default_factory=dict, description="piecewise: {epoch: lr}, e.g. {0: 0.2, 20: 0.1}")
    step_epochs: int = Field(10, gt=0, description="step schedule: multiply lr by gamma every step_epochs epochs")
    gamma: float = Field(0.1, gt=0)
    batch_size: int = Field(64, gt=0)
    epochs: int = Field(8, ge=0)
    steps: int | None = Field(None, ge=0, description="total steps; when set, replaces epochs")
    loss: Literal["mse", "ce"] = "mse"
    dtype: Literal["float32", "float64"] = "float32"
    backend: Literal["auto", "fast", "autograd"] = Field(
        "auto", description="fast: hand-written backward (plain ReLU students); autograd: the reference; auto: fast when it applies")
    checkpoint_steps: tuple[int, ...] = Field((), description="extra steps whose weights are kept (for late rewinding)")

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer='sgd' and momentum > 0")
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


class MeasureConfig(_Section):
    """When to measure; every measurement runs on the fixed evaluation set."""

    every: Literal["epoch", "steps", "log"] = "epoch"
    every_steps: int = Field(1000, gt=0, description="with every='steps'")
    log_points: int = Field(30, ge=2, description="with every='log': about this many log-spaced steps")
    corr_steps: tuple[int, ...] = Field((), description="steps whose full correlation matrices are kept besides init and end")
    recovered: float = Field(0.95, gt=0, le=1)
    covered: float = Field(0.9, gt=0, le=1)


class ProbeConfig(_Section):
    """How a probe child run derives from its finished parent run (SCIENCE.md section 5).

    ``lottery``: keep a fraction of the parent's student nodes (``by`` fanout, alignment or
    random) or weights (``by`` magnitude), per layer or globally (``scope``), and retrain
    from ``rewind``: ``init``, ``step:K``, ``reinit`` or ``rescaled``; round ``round`` of
    ``rounds`` of iterative pruning, ``keep`` being the fraction left after the last round.
    ``reinit``: re-randomise the fan-in of chosen nodes (``nodes`` winners or random) of
    the parent's initialisation in ``layers`` (None: every hidden layer) and train again.
    ``seed`` drives the random choices (random selection, fresh weights).
    """

    kind: Literal["lottery", "reinit"]
    parent: str = Field(pattern=r"^[A-Za-z0-9_.]+-[0-9a-f]+$", description="run id of the parent run")
    by: Literal["fanout", "alignment", "random", "magnitude"] | None = None
    keep: float | None = Field(None, gt=0, le=1, description="fraction kept, in (0, 1]")
    scope: Literal["layer", "global"] | None = None
    rewind: str | None = Field(None, pattern=r"^(init|reinit|rescaled|step:[0-9]+)$")
    rounds: int | None = Field(None, ge=1)
    round: int | None = Field(None, ge=1)
    nodes: Literal["winners", "random"] | None = None
    layers: tuple[int, ...] | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ProbeConfig:
        lottery = {"by": self.by, "keep": self.keep, "scope": self.scope, "rewind": self.rewind,
                   "rounds": self.rounds, "round": self.round}
        reinit = {"nodes": self.nodes, "layers": self.layers}
        own, other = (lottery, reinit) if self.kind == "lottery" else (reinit, lottery)
        missing = [k for k, v in own.items() if v is None and k != "layers"]
        if missing:
            raise ValueError(f"a {self.kind} probe needs {', '.join(missing)}")
        stray = [k for k, v in other.items() if v is not None]
        if stray:
            raise ValueError(f"{', '.join(stray)} do nothing in a {self.kind} probe; drop them")
        if self.kind == "lottery" and self.round > self.rounds:
            raise ValueError(f"round {self.round} lies beyond rounds={self.rounds}")
        if self.seed != 0 and self.kind == "lottery" and self.by != "random" and self.rewind != "reinit":
            raise ValueError("seed only matters for by='random' or rewind='reinit'; drop it")
        return self


class ExperimentConfig(_Section):
    """One experiment: a teacher, its data, an ensemble of students and how they train."""

    name: str = Field("default", pattern=r"^[A-Za-z0-9_.]+$", description="run folder prefix (letters, digits, _ and .)")
    teacher: TeacherConfig = TeacherConfig()
    inputs: InputsConfig = InputsConfig()
    student: StudentConfig = StudentConfig()
    training: TrainingConfig = TrainingConfig()
    measure: MeasureConfig = MeasureConfig()
    probe: ProbeConfig | None = Field(None, description="set only in probe child runs (teacherstudent probe ...)")

    @model_validator(mode="after")
    def _cross_sections(self) -> ExperimentConfig:  # checks that need two sections
        from .inputs import check_dim
        from .lucky import check_lucky

        check_dim(self.inputs, self.teacher.d, self.teacher.d == TeacherConfig.model_fields["d"].default)
        check_lucky(self.student, self.teacher.widths)
        return self

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
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `teacherstudent run --help` lists the sections)"
        elif "input" in e and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid config: " + "; ".join(parts)


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Config from an optional TOML file plus ``section.key=value`` overrides."""
    data = load_toml(path) if path is not None else {}
    return build_config(apply_overrides(data, list(overrides or [])))


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
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(lo))
    except ValueError:
        raise UserError(f"bad --seeds {text!r}: use a range like 1-8, a list like 1,3,5 or one seed") from None
    return tuple(seeds)
