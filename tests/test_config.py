"""Config defaults, ``--set`` overrides, user errors, run-id stability and seed parsing."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from teacherstudent.config import ExperimentConfig, load_config, parse_seeds, parse_value
from teacherstudent.errors import UserError

from conftest import assert_user_error, cli_sets, invoke, tiny, tiny_overrides, tiny_via_load_config

TOML_FILE = """\
name = "sparse"

[teacher]
widths = [10, 20]
firing = 0.2
strength_decay = 1.0

[student]
multiplier = 4
seeds = [1, 2]

[training]
momentum = 0.9
schedule = "piecewise"
milestones = {0 = 0.1, 10 = 0.01}
"""

# Pinned run ids: if one of these changes, every stored run would silently be re-trained
# (or worse, mixed up). Change them only on purpose, with a migration note.
PINNED = {
    "default": "default-44136fa355",
    "multiplier5": "default-b3dc1d848d",
    "seeds8": "default-ff7d0137c2",
    "toml": "sparse-9cc66064e0",
}


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, f"error message should be one line: {msg!r}"
    return msg


# ---- defaults -----------------------------------------------------------------------------

def test_defaults_match_the_papers_setting():
    cfg = load_config()
    assert cfg.teacher.widths == (10, 15, 20, 25)
    assert cfg.teacher.d == 20
    assert cfg.inputs.sigma == 10.0
    assert cfg.inputs.kind == "gaussian"
    assert cfg.teacher.outputs == 100
    assert cfg.student.multiplier == 10
    assert cfg.training.optimizer == "sgd"
    assert cfg.training.lr == 0.05
    assert cfg.training.batch_size == 64
    assert cfg.training.momentum == 0.0 and cfg.training.weight_decay == 0.0
    assert cfg.training.loss == "mse"
    assert cfg.training.schedule == "constant"
    assert cfg.teacher.firing_per_layer == (0.5, 0.5, 0.5, 0.5)
    assert cfg.inputs.eval_samples == 10_240
    assert cfg.name == "default"
    assert cfg.canonical() == {}


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.student.multiplier = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        cfg.name = "x"  # type: ignore[misc]


# ---- overrides ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("5", 5),
    ("0.1", 0.1),
    ("1e-3", 1e-3),
    ("true", True),
    ("false", False),
    ("[10, 20]", [10, 20]),
    ("[]", []),
    ('"adam"', "adam"),
    ("adam", "adam"),  # bare words fall back to strings
    ("{0 = 0.2, 20 = 0.1}", {"0": 0.2, "20": 0.1}),
])
def test_parse_value_reads_toml_literals(text, value):
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_set_overrides_reach_every_section():
    cfg = load_config(overrides=[
        "teacher.widths=[3, 5]", "teacher.firing=[0.2, 0.3]", "teacher.leaky_slope=0.1",
        "inputs.sigma=2.5", "inputs.fresh=true",
        "student.multiplier=5", "student.init=scaled", "student.seeds=[7, 9]",
        "training.optimizer=adam", "training.betas=[0.8, 0.9]", "training.schedule=piecewise",
        "training.milestones={0 = 0.2, 3 = 0.02}", "training.steps=100",
        "measure.every=log", "measure.corr_steps=[5, 10]", "name=exp.1",
    ])
    assert cfg.teacher.widths == (3, 5)
    assert cfg.teacher.firing_per_layer == (0.2, 0.3)
    assert cfg.teacher.leaky_slope == 0.1
    assert cfg.inputs.sigma == 2.5 and cfg.inputs.fresh is True
    assert cfg.student.multiplier == 5 and cfg.student.init == "scaled" and cfg.student.seeds == (7, 9)
    assert cfg.training.optimizer == "adam" and cfg.training.betas == (0.8, 0.9)
    assert cfg.training.milestones == {0: 0.2, 3: 0.02}
    assert cfg.training.steps == 100
    assert cfg.measure.every == "log" and cfg.measure.corr_steps == (5, 10)
    assert cfg.name == "exp.1" and cfg.run_id.startswith("exp.1-")


def test_later_override_wins_and_file_is_overridden(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML_FILE)
    cfg = load_config(path, ["student.multiplier=2", "student.multiplier=3"])
    assert cfg.student.multiplier == 3
    assert cfg.teacher.widths == (10, 20)  # the rest of the file stays


@pytest.mark.parametrize("table", ["sweep", "quick"])
def test_a_named_experiments_file_given_to_run_says_which_command_runs_it(tmp_path, table):
    path = tmp_path / "overparam.toml"
    path.write_text(f'preset = "luckmatters-2019-deep"\n\n[{table}]\nseeds = "0-1"\n')
    with pytest.raises(UserError) as err:
        load_config(path)
    assert str(err.value) == (f"config file {path} has a [{table}] table: it is a named experiment's base config; "
                              "run `teacherstudent experiment run overparam` (or remove the table to use it with run)")


def test_toml_file_equals_the_same_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML_FILE)
    from_file = load_config(path)
    from_sets = load_config(overrides=[
        "name=sparse", "teacher.widths=[10, 20]", "teacher.firing=0.2", "teacher.strength_decay=1.0",
        "student.multiplier=4", "student.seeds=[1, 2]", "training.momentum=0.9",
        'training.schedule="piecewise"', "training.milestones={0 = 0.1, 10 = 0.01}",
    ])
    assert from_file == from_sets
    assert from_file.run_id == from_sets.run_id


def test_tiny_helper_agrees_with_load_config():
    assert tiny() == tiny_via_load_config()
    assert tiny("student.multiplier=5").student.multiplier == 5
    assert tiny(training__dtype="float64").training.dtype == "float64"


# ---- user errors --------------------------------------------------------------------------

@pytest.mark.parametrize("override, field", [
    ("student.multiplyer=5", "student.multiplyer"),
    ("teachr.d=5", "teachr"),
    ("training.foo=1", "training.foo"),
])
def test_unknown_key_is_a_one_line_user_error(override, field):
    with pytest.raises(UserError) as ei:
        load_config(overrides=[override])
    msg = one_line_error(ei)
    assert field in msg and "unknown key" in msg


@pytest.mark.parametrize("override, field", [
    ("student.multiplier=0", "student.multiplier"),
    ("student.multiplier=many", "student.multiplier"),
    ("training.lr=-0.1", "training.lr"),
    ("training.optimizer=lbfgs", "training.optimizer"),
    ("teacher.widths=[10, 0]", "teacher.widths"),
    ("teacher.firing=1.5", "teacher"),
    ("teacher.firing=[0.5, 0.5]", "teacher"),  # 2 values for 4 layers
    ("student.seeds=[1, 1]", "student.seeds"),
    ("student.seeds=[]", "student.seeds"),
    ("inputs.kind=mnist", "inputs.kind"),
    ("inputs.eval_samples=3", "inputs.eval_samples"),
    ("training.nesterov=true", "training"),  # nesterov without momentum
    ("training.schedule=piecewise", "training"),  # no milestones
    ("training.milestones={0 = 0.1}", "training"),  # milestones without piecewise
    ("training.epochs=0", "training"),
    ("teacher.leaky_slope=1.0", "teacher.leaky_slope"),
    ("name=has space", "name"),
])
def test_bad_value_is_a_one_line_user_error_naming_the_field(override, field):
    with pytest.raises(UserError) as ei:
        load_config(overrides=[override])
    msg = one_line_error(ei)
    assert msg.startswith("invalid config: ")
    assert field in msg


def test_bad_value_message_shows_the_offending_value():
    with pytest.raises(UserError) as ei:
        load_config(overrides=["student.multiplier=0"])
    assert "(got 0)" in str(ei.value)


@pytest.mark.parametrize("override", ["student.multiplier", "=5", " =5"])
def test_malformed_set_is_a_user_error(override):
    with pytest.raises(UserError) as ei:
        load_config(overrides=[override])
    assert "section.key=value" in one_line_error(ei)


def test_set_into_a_non_section_is_a_user_error():
    with pytest.raises(UserError) as ei:
        load_config(overrides=["student.multiplier=5", "student.multiplier.x=3"])
    assert "not a section" in one_line_error(ei)


def test_malformed_toml_is_a_user_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[student\nmultiplier = 5\n")
    with pytest.raises(UserError) as ei:
        load_config(path)
    msg = one_line_error(ei)
    assert str(path) in msg and "TOML" in msg


def test_unknown_key_in_toml_file_is_a_user_error(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[student]\nmultiplier = 5\nwidth = 3\n")
    with pytest.raises(UserError) as ei:
        load_config(path)
    assert "student.width" in one_line_error(ei)


def test_missing_file_is_a_user_error(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(UserError) as ei:
        load_config(path)
    msg = one_line_error(ei)
    assert str(path) in msg and "does not exist" in msg


def test_directory_as_config_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as ei:
        load_config(tmp_path)
    one_line_error(ei)


# ---- identity -----------------------------------------------------------------------------

def test_pinned_run_ids(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TOML_FILE)
    got = {
        "default": load_config().run_id,
        "multiplier5": load_config(overrides=["student.multiplier=5"]).run_id,
        "seeds8": load_config(overrides=["student.seeds=[1,2,3,4,5,6,7,8]"]).run_id,
        "toml": load_config(path).run_id,
    }
    assert got == PINNED


def test_digest_is_the_hash_of_the_sorted_non_default_fields():
    # independent of the implementation: sha256 of the compact sorted JSON of what differs from the defaults
    assert load_config().digest() == hashlib.sha256(b"{}").hexdigest()[:10]
    text = b'{"student":{"multiplier":5}}'
    assert load_config(overrides=["student.multiplier=5"]).digest() == hashlib.sha256(text).hexdigest()[:10]


@pytest.mark.parametrize("override", [
    "student.multiplier=10", "training.lr=0.05", "inputs.sigma=10", "teacher.widths=[10, 15, 20, 25]",
    "teacher.firing=0.5", "student.seeds=[0, 1, 2, 3]", "measure.corr_steps=[]", "training.milestones={}",
    "training.momentum=0", "name=default",
])
def test_explicit_default_gives_the_same_run_id(override):
    assert load_config(overrides=[override]).run_id == load_config().run_id


def test_name_is_not_part_of_the_digest_but_of_the_run_id():
    a, b = load_config(overrides=["name=a"]), load_config(overrides=["name=b"])
    assert a.digest() == b.digest()
    assert a.run_id == f"a-{a.digest()}" and a.run_id != b.run_id


def test_every_field_change_changes_the_run_id():
    base = tiny()
    variants = [
        tiny("student.multiplier=4"), tiny("student.seeds=[0, 2]"), tiny("student.seeds=[1, 0]"),
        tiny("teacher.seed=1"), tiny("inputs.seed=1"), tiny("training.lr=0.01"), tiny("training.dtype=float64"),
        tiny("measure.every=log"), tiny("teacher.firing=0.3"),
    ]
    ids = {base.run_id} | {v.run_id for v in variants}
    assert len(ids) == len(variants) + 1


def test_config_json_round_trip_keeps_the_run_id():
    cfg = tiny("training.schedule=piecewise", "training.milestones={0 = 0.2, 1 = 0.1}", "teacher.firing=[0.3, 0.4]")
    again = ExperimentConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg and again.run_id == cfg.run_id


def test_replace_revalidates():
    cfg = tiny()
    assert cfg.replace(student={"multiplier": 7}).student.multiplier == 7
    assert cfg.replace(student={"multiplier": 7}).teacher == cfg.teacher
    with pytest.raises(UserError):
        cfg.replace(student={"multiplier": 0})


# ---- seeds --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seeds", [
    ("1-8", (1, 2, 3, 4, 5, 6, 7, 8)),
    ("1,3,5", (1, 3, 5)),
    ("4", (4,)),
    ("0", (0,)),
    ("3-3", (3,)),
    (" 1, 2 ,3 ", (1, 2, 3)),
    ("0-2,5", (0, 1, 2, 5)),
])
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "3-1", "1-", "-", "1.5", "1,,2", "1-2-3", "one-two"])
def test_bad_seeds_are_user_errors(text):
    with pytest.raises(UserError) as ei:
        parse_seeds(text)
    assert "--seeds" in one_line_error(ei)


# ---- non-finite and out-of-range values -------------------------------------------------------

@pytest.mark.parametrize("override", [
    "inputs.sigma=inf", "training.lr=inf", "teacher.strength_decay=inf", "training.gamma=inf",
    "training.betas=[1.5, 0.9]", "training.betas=[0.9, -0.1]", "training.betas=[nan, 0.9]",
    "student.seeds=[100000000000000000000000]", "teacher.seed=100000000000000000000000",
    "inputs.seed=-100000000000000000000000",
])
def test_nonsense_values_are_config_errors(override):
    with pytest.raises(UserError, match="invalid config"):
        load_config(None, tiny_overrides(override))


def test_adam_bad_betas_is_one_line_in_cli(tmp_path):
    assert_user_error(invoke("run", "--out", tmp_path, "--no-figure", *cli_sets('training.optimizer="adam"', "training.betas=[1.5, 0.9]")))
    assert not (tmp_path / "default").exists() and list(tmp_path.iterdir()) == []
