"""Threads on a busy machine: work that trains in the calling process (a study run with one local
worker, probe retrains) takes as many torch threads as the machine has free, like `run` does, and
gives the caller's count back afterwards."""

from __future__ import annotations

import pytest
import torch

from teacherstudent import runtime


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("load, inside", [(1.5, 1), (5.0, 1), (0.2, 2)])
def test_busy_capped_threads_caps_by_free_cores_and_restores(monkeypatch, two_threads, load, inside):
    monkeypatch.setattr(runtime, "machine_load", lambda: (load, 2))
    with runtime.busy_capped_threads():
        assert torch.get_num_threads() == inside
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), runtime.busy_capped_threads():  # restored when the work raises too
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_a_study_run_in_this_process_trains_with_the_capped_count(monkeypatch, two_threads, tmp_path):
    import teacherstudent.simulate as simulate
    from teacherstudent.sweep import train_job

    from conftest import tiny

    seen = []
    monkeypatch.setattr(runtime, "machine_load", lambda: (1.7, 2))  # one core taken
    monkeypatch.setattr(simulate, "run", lambda cfg, opts: seen.append(torch.get_num_threads()))
    cfg = tiny()
    spec = {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json"), "out": str(tmp_path), "device": "cpu",
            "threads": None, "when_locked": "skip", "force": False, "command": None}
    train_job(spec)
    train_job({**spec, "threads": 2})  # a worker told its count keeps it
    assert seen == [1, 2] and torch.get_num_threads() == 2
