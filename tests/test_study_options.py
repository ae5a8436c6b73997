"""``StudyOptions``: one value for a study's options, checked in one place; the CLI passes one object."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from teacherstudent_cli.main import app
from teacherstudent.errors import UserError
from teacherstudent.experiments import StudyOptions, StudyResult, plan_study

runner = CliRunner()


@pytest.mark.parametrize("fields, fragment", [
    ({"workers": 0}, "--workers must be at least 1, got 0"),
    ({"workers": 1.5}, "--workers must be at least 1, got 1.5"),
    ({"workers": True}, "--workers must be at least 1"),
    ({"members_per_run": 0}, "--members-per-run must be at least 1, got 0"),
    ({"executor": "nope"}, "unknown executor 'nope'; known: dask, local"),
    ({"executor": object()}, "is neither a name (local, dask) nor an executor"),
    ({"scheduler": "tcp://127.0.0.1:8786"}, "--scheduler needs --executor dask (got --executor local)"),
    ({"when_locked": "later"}, "unknown --when-locked 'later'; known: wait, skip"),
    ({"seeds": ()}, "--seeds (): give student seeds as whole numbers >= 0"),
    ({"seeds": (1, -2)}, "--seeds (1, -2)"),
    ({"seeds": "1-4"}, "--seeds '1-4'"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
])
def test_every_bad_value_is_one_line_when_the_options_are_made(fields, fragment):
    with pytest.raises(UserError) as err:
        StudyOptions(**fields)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_values_are_normalised_and_the_options_are_frozen(tmp_path):
    opts = StudyOptions(out=str(tmp_path), root=str(tmp_path / "a"), seeds=[3, 1], members_per_run=2, workers=1)
    assert opts.out == tmp_path and opts.root == tmp_path / "a" and opts.seeds == (3, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.workers = 2  # type: ignore[misc]
    assert dataclasses.replace(opts, workers=3).workers == 3
    with pytest.raises(UserError, match="--workers must be at least 1"):  # replace checks again
        dataclasses.replace(opts, workers=0)
    assert StudyOptions(executor="dask", scheduler="tcp://h:8786").scheduler == "tcp://h:8786"


def test_plan_study_reads_the_study_choices_from_the_options():
    """seeds and members_per_run choose the runs; the default options plan the file as written."""
    plain = plan_study("strength_decay", StudyOptions(quick=True))[1]
    assert plan_study("strength_decay")[1].runs != plain.runs  # quick: other runs
    one = plan_study("strength_decay", StudyOptions(quick=True, seeds=(5, 6), members_per_run=1))[1]
    assert {r.cfg.student.seeds for r in one.runs} == {(5,), (6,)}
    assert len(one.runs) == 2 * len(plain.labels) and all(r.members == 1 for r in one.runs)


def one_line_exit_2(res, fragment: str) -> None:
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.output


@pytest.mark.parametrize("args, fragment", [
    (["experiment", "run", "strength_decay", "--when-locked", "later"], "unknown --when-locked 'later'"),
    (["experiment", "run", "strength_decay", "--executor", "nope"], "unknown executor 'nope'"),
    (["experiment", "run", "strength_decay", "--scheduler", "tcp://h:8786"], "--scheduler needs --executor dask"),
    (["experiment", "run", "strength_decay", "--workers", "0"], "--workers"),
    (["experiment", "plan", "strength_decay", "--members-per-run", "0"], "--members-per-run"),
    (["experiment", "run", "strength_decay", "--device", "tpu"], "unknown device 'tpu'"),
    (["figures", "F4", "--executor", "nope"], "unknown executor 'nope'"),
    (["figures", "F4", "--scheduler", "tcp://h:8786"], "--scheduler needs --executor dask"),
    (["figures", "F4", "--plan", "--no-estimate", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_options_through_the_cli_are_one_line_and_exit_2(tmp_path, args, fragment):
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    one_line_exit_2(res, fragment)
    assert not (tmp_path / "out").exists()


def test_figures_passes_one_options_object(tmp_path, monkeypatch):
    from teacherstudent import paper

    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return paper.BuildResult(Path(args[2]), index=Path(args[2]) / "index.html")

    monkeypatch.setattr(paper, "build_figures", spy)
    res = runner.invoke(app, ["figures", "F4", "--quick", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "figs"),
                              "--workers", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    [(args, kwargs)] = calls
    names, opts, out, progress = args
    assert not kwargs and names == ["F4"] and out == tmp_path / "figs" and callable(progress)
    assert isinstance(opts, StudyOptions)
    assert (opts.out, opts.quick, opts.workers, opts.device, opts.executor, opts.scheduler) == \
        (tmp_path / "runs", True, 1, "cpu", "local", None)
    assert opts.command and not (tmp_path / "runs").exists()


def test_experiment_run_passes_one_options_object(tmp_path, monkeypatch):
    from teacherstudent import experiments

    calls = []

    def spy(name, opts, overrides):
        calls.append((name, opts, overrides))
        _, study = experiments.plan_study(name, opts, overrides)
        return StudyResult(study, opts.out / "experiments" / name, [], {}, note="spy")

    monkeypatch.setattr(experiments, "run_study", spy)
    res = runner.invoke(app, ["experiment", "run", "strength_decay", "--quick", "--out", str(tmp_path / "runs"),
                              "--device", "cpu", "--workers", "1", "--members-per-run", "1", "--seeds", "1-2",
                              "--when-locked", "skip", "--force", "--set", "training.lr=0.02"])
    assert res.exit_code == 0, res.output
    [(name, opts, overrides)] = calls
    assert name == "strength_decay" and overrides == ["training.lr=0.02"] and isinstance(opts, StudyOptions)
    assert (opts.out, opts.device, opts.quick, opts.workers, opts.members_per_run, opts.seeds, opts.when_locked,
            opts.force) == (tmp_path / "runs", "cpu", True, 1, 1, (1, 2), "skip", True)
    assert opts.executor.name == "local"  # made before the progress bar, closed by run_study
    assert all(callable(f) for f in (opts.on_progress, opts.on_report, opts.on_probe))


def test_the_0_2_compatibility_entry_points_are_gone():
    """0.5.0: ``run(cfg, RunOptions(...))`` and ``Trainer(build(cfg, device))`` are the entry points."""
    import teacherstudent
    from teacherstudent import simulate

    for name in ("run_experiment", "Simulation"):
        assert not hasattr(simulate, name) and name not in simulate.__all__ and name not in teacherstudent.__all__
    with pytest.raises(AttributeError):
        teacherstudent.run_experiment  # noqa: B018
    assert teacherstudent.StudyOptions is StudyOptions and teacherstudent.run_study.__module__ == "teacherstudent.experiments"
    assert simulate.RunOptions(out="x").out == Path("x")
