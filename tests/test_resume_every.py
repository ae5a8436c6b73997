"""The resume point is written at most every ``RunOptions.resume_every_s`` seconds of training."""

from __future__ import annotations

import pytest

from teacherstudent.errors import UserError
from teacherstudent.schedule import measure_steps
from teacherstudent.simulate import DEFAULT_RESUME_EVERY_S, RunOptions, resume_every_default, run
from teacherstudent.store import RunFolder
from teacherstudent.summary import read_table

from conftest import tiny


def _count_saves(monkeypatch) -> list[int]:
    saved: list[int] = []
    real = RunFolder.save_resume

    def counting(self, state):
        saved.append(state["trainer"]["step"])
        real(self, state)

    monkeypatch.setattr(RunFolder, "save_resume", counting)
    return saved


def test_every_measurement_but_the_last_writes_a_resume_point_at_zero_seconds(tmp_path, monkeypatch):
    cfg = tiny("measure.every='steps'", "measure.every_steps=4")
    saved = _count_saves(monkeypatch)
    run(cfg, RunOptions(tmp_path, "cpu", resume_every_s=0))
    steps = [s for s in measure_steps(cfg.measure, cfg.steps_per_epoch, cfg.total_steps) if 0 < s < cfg.total_steps]
    assert saved == steps and len(steps) == 3


def test_a_long_interval_writes_none_and_changes_no_number(tmp_path, monkeypatch):
    cfg = tiny("measure.every='steps'", "measure.every_steps=4")
    saved = _count_saves(monkeypatch)
    a = run(cfg, RunOptions(tmp_path / "a", "cpu", resume_every_s=1e9))
    assert saved == []
    b = run(cfg, RunOptions(tmp_path / "b", "cpu", resume_every_s=0))
    assert read_table(a, "metrics").equals(read_table(b, "metrics"))


def test_max_steps_writes_the_resume_point_where_it_stops_and_the_run_resumes(tmp_path, monkeypatch):
    cfg = tiny("measure.every='steps'", "measure.every_steps=4")
    saved = _count_saves(monkeypatch)
    folder = run(cfg, RunOptions(tmp_path, "cpu", max_steps=8, resume_every_s=1e9))
    assert saved == [8]
    run(cfg, RunOptions(tmp_path, "cpu", resume_every_s=1e9))
    ref = run(cfg, RunOptions(tmp_path / "ref", "cpu"))
    assert read_table(folder, "metrics").equals(read_table(ref, "metrics"))


def test_the_environment_sets_the_default_and_a_bad_value_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("TEACHERSTUDENT_RESUME_EVERY_S")
    assert resume_every_default() == DEFAULT_RESUME_EVERY_S == 60.0
    monkeypatch.setenv("TEACHERSTUDENT_RESUME_EVERY_S", "2.5")
    assert resume_every_default() == 2.5
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("TEACHERSTUDENT_RESUME_EVERY_S", bad)
        with pytest.raises(UserError, match="TEACHERSTUDENT_RESUME_EVERY_S"):
            resume_every_default()
