"""``ExperimentConfig``: the sections of one experiment, the checks that need two of them,
derived sizes and the run id (the hash of the canonical form: the sorted-key JSON of the
non-default fields, so adding a field with a no-op default keeps old run ids)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_serializer, model_validator

from . import registries
from .probes import ProbeConfig
from .sections import (MAX_STEPS, ConvConfig, InputsConfig, MeasureConfig, StudentConfig, TeacherConfig, TrainingConfig,
                       _Section)

class ExperimentConfig(_Section):
    """One experiment: a teacher, its data, an ensemble of students and how they train."""

    # Sections whose checks need a registry default to model_construct(): defining this class
    # validates nothing, so importing the config imports no registry (config/registries.py).
    name: str = Field("default", pattern=r"^[A-Za-z0-9_.]+$", description="run folder prefix (letters, digits, _ and .)")
    teacher: TeacherConfig = TeacherConfig()
    inputs: InputsConfig = InputsConfig.model_construct()  # the defaults, valid by construction
    student: StudentConfig = StudentConfig()
    training: TrainingConfig = TrainingConfig.model_construct()  # the defaults, valid by construction
    measure: MeasureConfig = MeasureConfig.model_construct()  # the defaults, valid by construction
    arch: str = Field("mlp", description="a name in architectures.ARCHITECTURES: mlp (fully connected), conv "
                      "(convolutional teacher and students; teacher.widths are channels, [conv] the geometry)")
    conv: ConvConfig = ConvConfig()
    probe: ProbeConfig | None = Field(None, description="set only in probe child runs (teacherstudent probe ...)")

    _arch = field_validator("arch")(classmethod(lambda cls, v: registries.architecture(v)))

    @model_validator(mode="after")
    def _cross_sections(self) -> ExperimentConfig:  # checks that need two sections
        if self.arch != "conv" and self.conv != ConvConfig():
            changed = self.conv.changed(*ConvConfig.model_fields)
            self._unused("conv", changed, "arch='conv'")
        registries.architecture_check(self)
        registries.input_dim(self.inputs, self.teacher.d, self.teacher.d == TeacherConfig.model_fields["d"].default)
        registries.lucky(self.student, self.teacher.widths)
        if self.inputs.labels == "dataset" or self.teacher.train is not None:  # teacherstudent/pretrain.py
            registries.dataset_setting(self)
        if self.training.backend == "fast" and self.student.batchnorm:
            raise ValueError("training.backend='fast' covers plain ReLU students only; use 'auto' or 'autograd' "
                             "with student.batchnorm")
        if self.training.precision != "full" and (self.arch != "mlp" or self.student.batchnorm
                                                  or self.training.backend == "autograd"):
            raise ValueError(f"training.precision='{self.training.precision}' runs on the fast path only (mlp "
                             "students without BatchNorm, training.backend 'auto' or 'fast'); use precision='full'")
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
        warm = registries.warmup_steps(t, self.steps_per_epoch)
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
        from .loading import build_config

        return build_config(data)


