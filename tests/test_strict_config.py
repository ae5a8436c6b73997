"""Strict configs: a setting that would do nothing is one clear error naming the field;
config-time checks; stored configs compared by canonical form."""

from __future__ import annotations

import json

import pytest

from teacherstudent.config import ExperimentConfig, TrainingConfig, build_config
from teacherstudent.errors import UserError
from teacherstudent.simulate import RunOptions, run

from conftest import tiny


@pytest.mark.parametrize("data, field, fix", [
    ({"training": {"optimizer": "adam", "momentum": 0.9}}, "training.momentum", "training.optimizer='sgd'"),
    ({"training": {"optimizer": "adam", "nesterov": True}}, "training.nesterov", "training.optimizer='sgd'"),
    ({"training": {"betas": [0.8, 0.99]}}, "training.betas", "training.optimizer='adam'"),
    ({"training": {"gamma": 0.5}}, "training.gamma", "training.schedule='step'"),
    ({"training": {"step_epochs": 3}}, "training.step_epochs", "training.schedule='step'"),
    ({"training": {"schedule": "cosine", "gamma": 0.5}}, "training.gamma", "training.schedule='step'"),
    ({"training": {"milestones": {0: 0.1}}}, "milestones", "piecewise"),
    ({"training": {"epochs": 3, "steps": 100}}, "training.epochs", "training.steps is left unset"),
    ({"measure": {"every_steps": 50}}, "measure.every_steps", "measure.every='steps'"),
    ({"measure": {"every": "log", "every_steps": 50}}, "measure.every_steps", "measure.every='steps'"),
    ({"measure": {"log_points": 12}}, "measure.log_points", "measure.every='log'"),
    ({"student": {"init": "normal", "init_scale": 2.0}}, "student.init_scale", "student.init is not 'normal'"),
    ({"training": {"alpha": 0.9}}, "training.alpha", "training.optimizer='rmsprop'"),
    ({"training": {"optimizer": "adam", "centered": True}}, "training.centered", "training.optimizer='rmsprop'"),
    ({"training": {"optimizer": "rmsprop", "lr_decay": 0.1}}, "training.lr_decay", "training.optimizer='adagrad'"),
    ({"training": {"optimizer": "adagrad", "momentum": 0.9}}, "training.momentum", "training.optimizer='sgd' or 'rmsprop'"),
    ({"training": {"optimizer": "rmsprop", "betas": [0.8, 0.9]}}, "training.betas", "training.optimizer='adam' or 'adamw'"),
    ({"training": {"schedule": "cosine", "min_lr": 0.01}}, "training.min_lr", "training.schedule='cyclic'"),
    ({"training": {"half_cycle_steps": 10}}, "training.half_cycle_steps", "training.schedule='cyclic'"),
    ({"training": {"schedule": "cyclic", "pct_start": 0.5}}, "training.pct_start", "training.schedule='onecycle'"),
    ({"training": {"div_factor": 5.0, "final_div_factor": 10.0}}, "training.div_factor, training.final_div_factor",
     "training.schedule='onecycle'"),
    ({"training": {"schedule": "onecycle", "gamma": 0.5}}, "training.gamma", "training.schedule='step' or 'exponential'"),
    ({"training": {"schedule": "exponential", "step_epochs": 2}}, "training.step_epochs", "training.schedule='step'"),
    ({"training": {"label_smoothing": 0.1}}, "training.label_smoothing", "training.loss='ce'"),
    ({"training": {"early_stop_min_delta": 0.01}}, "training.early_stop_min_delta", "early_stop_patience is set"),
    ({"inputs": {"wide_factor": 4}}, "wide_factor", "wide_teacher"),
    ({"inputs": {"n_clusters": 4}}, "n_clusters", "clusters"),
])
def test_every_setting_that_would_do_nothing_is_rejected(data, field, fix):
    with pytest.raises(UserError) as err:
        build_config(data)
    msg = str(err.value)
    assert field in msg and fix in msg and "\n" not in msg


@pytest.mark.parametrize("data", [
    {"training": {"optimizer": "adam", "betas": [0.8, 0.99]}},
    {"training": {"momentum": 0.9, "nesterov": True}},
    {"training": {"schedule": "step", "gamma": 0.5, "step_epochs": 2}},
    {"training": {"steps": 100}},
    {"measure": {"every": "steps", "every_steps": 50}},
    {"measure": {"every": "log", "log_points": 12}},
    {"student": {"init": "scaled", "init_scale": 2.0}},
    *({"student": {"init": init, "init_scale": 0.5}} for init in ("pytorch", "kaiming_normal", "kaiming_uniform",
                                                                 "xavier_normal", "xavier_uniform", "orthogonal")),
    {"training": {"optimizer": "rmsprop", "alpha": 0.9, "momentum": 0.5, "centered": True}},
    {"training": {"optimizer": "adagrad", "lr_decay": 0.01}},
    {"training": {"optimizer": "adamw", "betas": [0.8, 0.99], "weight_decay": 0.01}},
    {"training": {"schedule": "cyclic", "min_lr": 0.001, "half_cycle_steps": 10}},
    {"training": {"schedule": "onecycle", "pct_start": 0.2, "div_factor": 5.0, "final_div_factor": 10.0}},
    {"training": {"schedule": "exponential", "gamma": 0.5, "warmup_steps": 100}},
    {"training": {"schedule": "cosine", "warmup_epochs": 1, "clip_norm": 1.0, "dropout": 0.2}},
    {"training": {"loss": "ce", "label_smoothing": 0.1}},
    {"training": {"early_stop_patience": 3, "early_stop_min_delta": 0.01}},
])
def test_the_same_settings_are_accepted_where_they_act(data):
    build_config(data)


@pytest.mark.parametrize("data, words", [
    ({"training": {"checkpoint_steps": [5, 5]}}, "training.checkpoint_steps lists a step twice"),
    ({"measure": {"corr_steps": [3, 3]}}, "measure.corr_steps lists a step twice"),
    ({"training": {"steps": 100}, "measure": {"corr_steps": [101]}}, "measure.corr_steps [101] lie outside 0..100"),
    ({"training": {"steps": 100, "checkpoint_steps": [200]}}, "training.checkpoint_steps [200] lie outside 0..100"),
    ({"student": {"batchnorm": True}, "training": {"backend": "fast"}}, "training.backend='fast' covers plain ReLU"),
    ({"measure": {"covered": 0.97}}, "measure.covered (0.97) must not exceed measure.recovered"),
    ({"training": {"warmup_steps": 5, "warmup_epochs": 1}}, "warmup_steps and training.warmup_epochs both"),
    ({"training": {"steps": 100, "warmup_steps": 101}}, "the warm-up (101 steps) lasts longer than the run (100 steps)"),
    ({"training": {"schedule": "cyclic", "min_lr": 0.1}}, "training.min_lr (0.1) must lie below training.lr (0.05)"),
    ({"training": {"schedule": "onecycle", "steps": 3}}, "needs more than 1 rising step"),
    ({"training": {"dropout": 1.0}}, "training.dropout"),
    ({"training": {"clip_norm": 0}}, "training.clip_norm"),
    ({"training": {"early_stop_patience": 0}}, "training.early_stop_patience"),
    ({"student": {"init": "he"}}, "student.init"),
    ({"training": {"schedule": "warm"}}, "unknown schedule 'warm'"),
    ({"student": {"seeds": [-1]}}, "student.seeds.0"),
])
def test_config_time_errors_are_found_when_the_config_is_built(data, words):
    with pytest.raises(UserError) as err:
        build_config(data)
    assert words in str(err.value)


def test_unknown_names_list_the_registry():
    """Each name a config gives is checked against its registry; the error lists the registry's
    names, read from it (so a newly registered one is listed too: tests/test_extensions.py)."""
    from teacherstudent.architectures import ARCHITECTURES
    from teacherstudent.inputs import INPUTS
    from teacherstudent.metrics import METRICS
    from teacherstudent.train import LOSSES, OPTIMIZERS, SCHEDULES

    for data, what, name, registry in [
        ({"measure": {"metrics": ["loss", "nonsense"]}}, "metric", "nonsense", METRICS),
        ({"training": {"optimizer": "lbfgs"}}, "optimizer", "lbfgs", OPTIMIZERS),
        ({"training": {"loss": "l1"}}, "loss", "l1", LOSSES),
        ({"training": {"schedule": "warm"}}, "schedule", "warm", SCHEDULES),
        ({"inputs": {"kind": "moons"}}, "input kind", "moons", INPUTS),
        ({"arch": "resnet"}, "architecture", "resnet", ARCHITECTURES),
    ]:
        with pytest.raises(UserError) as err:
            build_config(data)
        assert f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}" in str(err.value)
        assert "\n" not in str(err.value)


def test_every_registered_field_is_a_training_field():
    from teacherstudent.train import OPTIMIZERS, SCHEDULE_FIELDS

    for name, opt in OPTIMIZERS.items():
        assert set(opt.fields) <= set(TrainingConfig.model_fields), name
    for name, fields in SCHEDULE_FIELDS.items():
        assert set(fields) <= set(TrainingConfig.model_fields), name


def test_config_with_epochs_past_the_int32_step_limit_is_refused():
    with pytest.raises(UserError, match="more than 2147483647"):
        build_config({"inputs": {"train_samples": 1_000_000}, "training": {"batch_size": 1, "epochs": 3000}})


def test_pinned_run_ids_are_unchanged():
    """Run ids of 0.2 configs, probes included, must never change."""
    assert ExperimentConfig().run_id == "default-44136fa355"
    assert build_config({"student": {"multiplier": 5}}).run_id == "default-b3dc1d848d"
    assert build_config({"training": {"optimizer": "adam", "lr": 0.001}}).run_id == "default-79b67b357e"
    assert build_config({"probe": {"kind": "lottery", "parent": "default-44136fa355", "by": "alignment", "keep": 0.2,
                                   "scope": "layer", "rewind": "init", "rounds": 1, "round": 1}}).run_id == "default-58c9f0791a"
    assert build_config({"probe": {"kind": "reinit", "parent": "default-44136fa355", "nodes": "random", "layers": [0, 1],
                                   "seed": 3}}).run_id == "default-ef8074a5d7"
    assert build_config({"probe": {"kind": "reinit", "parent": "default-44136fa355"}}).run_id == "default-4002b579f5"


def test_a_field_added_later_with_a_no_op_default_keeps_older_folders_usable(tmp_path, monkeypatch):
    """An older config.json lacks the new field (and a finished or interrupted run of it must
    still be found, resumed and --force-able), compared by canonical form."""
    cfg = tiny("training.epochs=3")
    folder = run(cfg, RunOptions(tmp_path, "cpu", max_steps=8))
    stored = json.loads((folder / "config.json").read_text())
    del stored["measure"]["metrics"]  # as written by a version before measure.metrics existed
    (folder / "config.json").write_text(json.dumps(stored))
    assert run(cfg, RunOptions(tmp_path, "cpu")) == folder  # resumes, no "different config" error
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"
    stored["measure"].pop("metrics", None)  # the older folder, finished: --force must still work
    (folder / "config.json").write_text(json.dumps(stored))
    run(cfg, RunOptions(tmp_path, "cpu", force=True))


def test_a_folder_holding_another_config_is_refused(tmp_path):
    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_path, "cpu", max_steps=8))
    stored = json.loads((folder / "config.json").read_text())
    stored["training"]["lr"] = 0.5
    (folder / "config.json").write_text(json.dumps(stored))
    with pytest.raises(UserError, match="holds a different config"):
        run(cfg, RunOptions(tmp_path, "cpu"))
