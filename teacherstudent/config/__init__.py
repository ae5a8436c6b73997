"""Experiment configuration: one frozen, validated model per concern — its own layer.

Sections (the names users type in TOML files and ``--set`` overrides):
``teacher``, ``inputs``, ``student``, ``training``, ``measure``, ``conv`` (and ``probe``, set
only in probe child runs). The canonical form of a config is the sorted-key JSON of its
non-default fields; its hash is the run id, so adding a field with a no-op default keeps
old run ids.

The package, bottom up: ``sections`` (one model per section and its own checks), ``probes``
(the probe configs, a discriminated union), ``experiment`` (``ExperimentConfig``: checks
across sections, run id), ``loading`` (dicts, TOML files, presets, ``--set`` overrides, the
one-line error) and ``registries`` (the checks that need an implementation's registry,
imported when a config is first validated). No module here imports an implementation
module at import time. Every name is importable from ``teacherstudent.config``.
"""

from .experiment import ExperimentConfig
from .loading import (_merge, apply_overrides, build_config, format_validation_error, load_config, load_toml,
                      parse_seeds, parse_value, probe_config, with_preset)
from .probes import PROBE_KINDS, FlatnessProbe, LotteryProbe, ProbeConfig, ReinitProbe, RunId, _Probe
from .sections import (MAX_MEMBERS, MAX_STEPS, Beta, ConvConfig, InputsConfig, MeasureConfig, Seed, StudentConfig,
                       TeacherConfig, TeacherTrainConfig, TrainingConfig, _distinct_steps, _Section)

__all__ = ["MAX_STEPS", "MAX_MEMBERS", "Seed", "Beta", "TeacherConfig", "TeacherTrainConfig", "InputsConfig", "StudentConfig",
           "TrainingConfig", "ConvConfig", "MeasureConfig", "RunId", "LotteryProbe", "ReinitProbe", "FlatnessProbe",
           "ProbeConfig", "PROBE_KINDS", "ExperimentConfig", "format_validation_error", "probe_config", "build_config",
           "parse_value", "apply_overrides", "load_toml", "load_config", "with_preset", "parse_seeds",
           "_Section", "_Probe", "_distinct_steps", "_merge"]
