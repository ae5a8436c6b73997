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


def _written(monkeypatch) -> list[str]:
    """The paths of every atomic write, in order (parts as ``parts/<name>``)."""
    import teacherstudent.folder as folder_mod

    paths: list[str] = []
    real = folder_mod.atomic_write_bytes

    def recording(path, data):
        paths.append(f"{path.parent.name}/{path.name}")
        real(path, data)

    monkeypatch.setattr(folder_mod, "atomic_write_bytes", recording)
    return paths


def test_measurement_parts_wait_in_memory_for_the_resume_point_that_needs_them(tmp_path, monkeypatch):
    """No resume point: no part file is written at all (the tables are made from memory); a resume
    point at every measurement: each one finds its measurement's parts on disk before it."""
    cfg = tiny("measure.every='steps'", "measure.every_steps=4", "measure.corr_steps=[4]")
    paths = _written(monkeypatch)
    quiet = run(cfg, RunOptions(tmp_path / "quiet", "cpu", resume_every_s=1e9))
    assert paths and not [p for p in paths if p.startswith("parts/")]
    assert not (quiet / "parts").exists()
    paths.clear()
    every = run(cfg, RunOptions(tmp_path / "every", "cpu", resume_every_s=0))
    resumes = [i for i, p in enumerate(paths) if p == "checkpoints/latest.pt"]
    assert len(resumes) == 3
    for step, i in zip((4, 8, 12), resumes):
        before = set(paths[:i])
        assert f"parts/metrics-{step:012d}.parquet" in before and f"parts/metrics-{step + 4:012d}.parquet" not in before
    assert "parts/corr-000000000004.npz" in paths
    for table in ("metrics", "teacher_nodes", "student_nodes"):
        assert read_table(quiet, table).equals(read_table(every, table))


def test_parts_past_the_memory_budget_are_written_and_the_tables_are_the_same(tmp_path, monkeypatch):
    import teacherstudent.folder as folder_mod

    cfg = tiny("measure.every='steps'", "measure.every_steps=4")
    ref = run(cfg, RunOptions(tmp_path / "ref", "cpu", resume_every_s=1e9))
    monkeypatch.setattr(folder_mod, "PART_BUFFER_BYTES", 1)  # every part goes to disk at once
    paths = _written(monkeypatch)
    low = run(cfg, RunOptions(tmp_path / "low", "cpu", resume_every_s=1e9))
    assert len([p for p in paths if p.startswith("parts/metrics-")]) == len(
        measure_steps(cfg.measure, cfg.steps_per_epoch, cfg.total_steps) | {0})
    assert read_table(low, "metrics").equals(read_table(ref, "metrics"))
    assert not (low / "parts").exists()  # compacted and removed at the end as before
