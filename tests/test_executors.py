"""The local executor: worker processes, and a study too small to repay them trained in this process.

A small study (``sweep.inprocess_seconds`` under what starting the workers costs) trains here at the
thread count each worker would have had, so its tables are bit for bit those of the worker
processes; ``--workers N`` always starts N; this process's thread count is put back afterwards.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from teacherstudent.executors import WORKER_START_S, LocalExecutor
from teacherstudent.experiments import StudyOptions, plan_study, run_study
from teacherstudent.sweep import RUN_OVERHEAD_S, inprocess_seconds
from test_sweep import assert_same_tables, write_study

SWEEP = '[sweep]\nseeds = "0-3"\n'


def test_a_small_study_trains_here_with_the_workers_threads_and_their_tables(tmp_path, monkeypatch):
    root = write_study(tmp_path / "analysis", SWEEP)
    workers = run_study("tiny_study", StudyOptions(tmp_path / "workers", "cpu", root=root, workers=2, members_per_run=2))
    seen: list[str] = []
    real = LocalExecutor.run

    def run(self, specs, poll):
        seen.append(self.describe(len(specs)))
        yield from real(self, specs, poll)

    monkeypatch.setattr(LocalExecutor, "run", run)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here = run_study("tiny_study", StudyOptions(tmp_path / "here", "cpu", root=root, members_per_run=2,
                                                    executor=LocalExecutor(cores=2)))
        assert torch.get_num_threads() == 2  # the jobs ran at 1 thread (the workers' count), then put back
    finally:
        torch.set_num_threads(before)
    assert seen and seen[0].startswith("local: in this process x 1 thread (about ")
    assert [r["outcome"] for r in here.reports] == [r["outcome"] for r in workers.reports] == ["done"] * 4
    assert_same_tables(tmp_path / "workers", tmp_path / "here")


def test_where_a_study_trains_follows_its_estimate_and_the_workers_asked_for(tmp_path):
    ex = LocalExecutor(cores=2)
    ex.expect(8, 0.5)
    assert ex.plan(8) == (1, 1) and ex.threads(1) == 1 and "in this process" in ex.describe(8)
    ex.expect(8, 2 * WORKER_START_S + 0.1)  # more than two workers save over one process
    assert ex.plan(8) == (2, 1) and ex.threads(2) == 1 and ex.describe(8) == "local: 2 worker processes x 1 thread"
    ex.expect(8, None)  # no estimate (a conv study): the workers, as before
    assert ex.plan(8) == (2, 1)
    ex.expect(1, 0.1)  # one run: no worker would be started anyway
    assert ex.plan(1) == (1, 2) and ex.threads(1) is None
    asked = LocalExecutor(workers=2, cores=2)
    asked.expect(8, 0.1)
    assert asked.plan(8) == (2, 1)
    one = LocalExecutor(workers=1, cores=2)
    one.expect(8, 0.1)
    assert one.plan(8) == (1, 2) and one.threads(1) is None  # --workers 1: this process, as it is set


def test_the_estimate_counts_runs_steps_and_refuses_to_guess_for_conv(tmp_path):
    def runs(fields=None, sweep=SWEEP):
        root = write_study(tmp_path / "a", sweep, fields=fields)
        return plan_study("tiny_study", StudyOptions(root=root, members_per_run=2))[1].runs

    def estimate(fields=None, sweep=SWEEP):
        return inprocess_seconds(runs(fields, sweep))

    small = estimate()
    assert small == pytest.approx(4 * RUN_OVERHEAD_S, rel=0.5)  # two arms x two runs of a few hundred steps
    assert estimate({"training.epochs": 40}) > small
    assert estimate(sweep='[sweep]\nseeds = "0-7"\n') == pytest.approx(2 * small)
    conv = [replace(r, cfg=r.cfg.model_copy(update={"arch": "conv"})) for r in runs()]
    assert inprocess_seconds(conv) is None
