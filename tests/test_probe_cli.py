"""``teacherstudent probe ...`` through typer's CliRunner: tables, reuse, one-line errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from teacherstudent_cli.main import app
from teacherstudent.simulate import RunOptions, run
from teacherstudent.store import list_runs

from conftest import file_bytes, tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_cli_runs")
    return run(tiny(training__checkpoint_steps=[8]), RunOptions(root, "cpu", command=["pytest"]))


def invoke(parent, *args):
    return runner.invoke(app, ["probe", *args, "--out", str(parent.parent)])


def test_lottery_prints_a_comparison_and_reuses_finished_probes(parent):
    args = ["lottery", parent.name, "--keep", "0.5", "--by", "alignment", "--by", "random", "--rewind", "init",
            "--rewind", "reinit", "--device", "cpu"]
    first = invoke(parent, *args)
    assert first.exit_code == 0, first.output
    for label in ("parent", "alignment 0.5 init", "alignment 0.5 reinit", "random 0.5 init", "random 0.5 reinit"):
        assert label in first.stdout
    assert "lucky J" in first.stdout and "6/9" in first.stdout
    children = [r for r in list_runs(parent.parent) if r.name.startswith("default.lottery")]
    assert len(children) == 4
    snap = {c: file_bytes(c) for c in children}
    again = invoke(parent, *args)
    assert again.exit_code == 0
    assert {c: file_bytes(c) for c in children} == snap  # reused, not trained again
    assert again.stdout.split("results:")[0].splitlines()[-12:] == first.stdout.split("results:")[0].splitlines()[-12:]


def test_iterative_and_weight_pruning(parent):
    r = invoke(parent, "lottery", parent.name, "--keep", "0.25", "--by", "magnitude", "--scope", "global",
               "--rounds", "2", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "magnitude 0.25 init global r1/2" in r.stdout and "magnitude 0.25 init global r2/2" in r.stdout


def test_reinit_and_show(parent):
    r = invoke(parent, "reinit", parent.name, "--nodes", "winners", "--nodes", "random", "--layers", "0", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "winners L0" in r.stdout and "random L0" in r.stdout and "win reinit" in r.stdout
    shown = invoke(parent, "show", parent.name)
    assert shown.exit_code == 0 and "reinit probes" in shown.stdout and "winners L0" in shown.stdout


@pytest.mark.parametrize("args, message", [
    (["lottery", "nosuchrun", "--keep", "0.5", "--by", "fanout"], "is not a run folder"),
    (["lottery", "{parent}", "--keep", "1.5", "--by", "fanout"], "--keep: Input should be less than or equal to 1"),
    (["lottery", "{parent}", "--keep", "0", "--by", "fanout"], "--keep: Input should be greater than 0"),
    (["lottery", "{parent}", "--keep", "0.5", "--by", "fanout", "--rewind", "init", "--rewind", "step:3"],
     "kept no weights at step 3"),
    (["lottery", "{parent}", "--keep", "0.5", "--by", "size"], "--by: Input should be 'fanout', 'alignment', 'random' or 'magnitude' (got 'size')"),
    (["lottery", "{parent}", "--keep", "0.5", "--by", "fanout", "--set", "student.multiplier=2"], "may change only"),
    (["reinit", "{parent}", "--nodes", "lucky"], "--nodes: Input should be 'winners' or 'random' (got 'lucky')"),
    (["reinit", "{parent}", "--nodes", "random", "--nodes", "lucky", "--layers", "1"], "--nodes: Input should be 'winners' or 'random'"),  # before any trains
    (["reinit", "{parent}", "--layers", "0,x"], "bad --layers"),
    (["reinit", "{parent}", "--layers", "3"], "--layers must list hidden layers among 0..1"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(parent, args, message):
    before, runs = file_bytes(parent), list_runs(parent.parent)
    r = invoke(parent, *[a.format(parent=parent.name) for a in args])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], r.stderr
    assert file_bytes(parent) == before and list_runs(parent.parent) == runs


def test_unfinished_parent_is_refused(tmp_path):
    unfinished = run(tiny(), RunOptions(tmp_path, "cpu", max_steps=8))
    before = file_bytes(unfinished)
    r = runner.invoke(app, ["probe", "lottery", unfinished.name, "--keep", "0.5", "--by", "fanout", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "is not finished" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert file_bytes(unfinished) == before and list_runs(tmp_path) == [unfinished]
