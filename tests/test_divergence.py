"""Diverged members: one member's non-finite loss stays its own, is recorded in status.json,
survives an interrupted and resumed run, and a run whose members all diverged still ends."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from teacherstudent.ensemble import Ensemble
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run

from conftest import cli_sets, invoke, tiny

CPU = torch.device("cpu")


def poison(ens: Ensemble, k: int, value: float = float("nan")) -> None:
    with torch.no_grad():
        ens.params[2][k, 0, 0] = value  # one weight of layer 1


@pytest.mark.parametrize("backend", ["fast", "autograd"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_poisoned_member_does_not_change_the_others(backend, value):
    cfg = tiny("student.seeds=[0, 1, 2]", "training.momentum=0.9", f"training.backend={backend}")
    clean, bad = Trainer(build(cfg, CPU)), Trainer(build(cfg, CPU))
    poison(bad.ens, 1, value)
    for stop in (5, 9, bad.total_steps):  # in segments, so the dead-member masking kicks in
        for sim in (clean, bad):
            sim.train_until(stop)
            sim.check_finite()
    for k in (0, 2):
        for p, q in zip(clean.ens.params, bad.ens.params):
            assert torch.equal(p[k], q[k])
    assert bad.first_bad.tolist() == [-1, 0, -1] and clean.first_bad.tolist() == [-1, -1, -1]
    assert bad.dead.tolist() == [False, True, False]
    snap = bad.snapshot()
    for l in range(len(snap.corr)):
        assert torch.isfinite(snap.corr[l][[0, 2]]).all()
        torch.testing.assert_close(snap.corr[l][[0, 2]], clean.snapshot().corr[l][[0, 2]], rtol=0, atol=0)
    assert torch.isfinite(snap.eval_loss[[0, 2]]).all()


def test_first_bad_step_is_the_step_that_went_non_finite():
    cfg = tiny("student.seeds=[0, 1, 2]")
    sim = Trainer(build(cfg, CPU))
    sim.train_until(10)
    assert sim.check_finite() == []
    poison(sim.ens, 2)
    sim.train_until(14)
    assert sim.first_bad.tolist() == [-1, -1, 10]
    assert sim.check_finite() == [2]
    assert sim.check_finite() == []  # reported once
    sim.train_until(16)
    assert sim.first_bad.tolist() == [-1, -1, 10]


@pytest.mark.parametrize("optimizer", [[], ["training.momentum=0.9"]], ids=["fused-sgd", "momentum"])
def test_run_records_a_diverged_member_and_finishes_the_others(tmp_runs, optimizer):
    cfg = tiny("student.seeds=[0, 1, 2]", *optimizer)

    def init_ensemble(device, dtype):
        probe = Trainer(build(cfg, device))  # the ordinary initial students, then poison seed 1
        poison(probe.ens, 1)
        return Ensemble([p.detach().clone() for p in probe.ens.params])

    folder = run(cfg, RunOptions(tmp_runs, "cpu", command=["pytest"]), init_ensemble=init_ensemble)
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == status["total_steps"] == 16
    members = {m["member"]: m for m in status["members"]}
    assert members[0]["status"] == members[2]["status"] == "ok"
    assert members[1]["status"] == "diverged"
    assert "non-finite" in members[1]["reason"] and "step 0" in members[1]["reason"]
    assert "reason" not in members[0]
    metrics = pd.read_parquet(folder / "metrics.parquet")
    healthy = metrics[metrics.member.isin([0, 2])]
    assert len(healthy) > 0 and np.isfinite(healthy.value).all()
    assert set(healthy.step) == {0, 8, 16}
    nodes = pd.read_parquet(folder / "teacher_nodes.parquet")
    assert np.isfinite(nodes[nodes.member != 1].final_corr).all()
    # the healthy members ended exactly where an unpoisoned run ends
    clean = run(cfg, RunOptions(tmp_runs.parent / "clean", "cpu", command=["pytest"]))
    w_bad = torch.load(folder / "checkpoints" / "final.pt", weights_only=False)["weights"]
    w_ok = torch.load(clean / "checkpoints" / "final.pt", weights_only=False)["weights"]
    for a, b in zip(w_bad, w_ok):
        assert torch.equal(a[[0, 2]], b[[0, 2]])


def blown_up(cfg, k: int, factor: float = 10.0):
    """``init_ensemble`` for ``simulate.run``: the ordinary initial students with every parameter
    of member ``k`` times ``factor`` (at lr 0.05 member ``k``'s loss goes non-finite at step 2 of 16)."""
    def init_ensemble(device, dtype):
        ens = Trainer(build(cfg, device)).ens
        with torch.no_grad():
            for p in ens.params:
                p[k] *= factor
        return Ensemble([p.detach().clone() for p in ens.params])
    return init_ensemble


TABLES = ("metrics", "teacher_nodes", "student_nodes")


def test_a_run_with_a_diverged_member_resumes_to_the_same_status_and_tables(tmp_path):
    """Interrupted after member 1 diverged, then resumed: the member is still marked diverged at the step it
    diverged (first_bad and the stopped flag come back from the checkpoint), and every table is the same."""
    cfg = tiny("student.seeds=[0, 1, 2]", "measure.every=steps", "measure.every_steps=4")
    init = blown_up(cfg, 1)
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu", command=["pytest"]), init_ensemble=init)
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", command=["pytest"], max_steps=8), init_ensemble=init)
    saved = torch.load(part / "checkpoints" / "latest.pt", weights_only=False)["trainer"]
    assert saved["step"] == 8 and saved["first_bad"].tolist() == [-1, 2, -1] and saved["dead"].tolist() == [False, True, False]
    run(cfg, RunOptions(tmp_path / "b", "cpu", command=["pytest"]), init_ensemble=init)

    def status(folder):
        st = json.loads((folder / "status.json").read_text())
        st.pop("seconds")
        return st

    assert status(part) == status(whole)
    members = {m["member"]: m for m in status(whole)["members"]}
    assert members[1]["status"] == "diverged" and "at step 2 " in members[1]["reason"]
    assert members[0]["status"] == members[2]["status"] == "ok"
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(part / f"{name}.parquet"), pd.read_parquet(whole / f"{name}.parquet"))
    for a, b in zip(torch.load(whole / "checkpoints" / "final.pt", weights_only=False)["weights"],
                    torch.load(part / "checkpoints" / "final.pt", weights_only=False)["weights"], strict=True):
        assert torch.equal(a.nan_to_num(), b.nan_to_num()) and torch.equal(a.isnan(), b.isnan())


def test_all_members_diverged_run_shows_its_table(tmp_path):
    diverges = "teacher.widths=[20]"  # lr 0.05 is too much for this one-layer teacher: every weight becomes NaN
    result = invoke("run", "--out", tmp_path, "--no-figure", *cli_sets(diverges))
    assert result.exit_code == 0, (result.output, result.exception)
    folder = tmp_path / tiny(diverges).run_id
    members = json.loads((folder / "status.json").read_text())["members"]
    assert all(m["status"] == "diverged" for m in members)
    assert "diverged" in result.stderr
    result = invoke("show", folder)
    assert result.exit_code == 0, (result.output, result.exception)
    from teacherstudent.summary import layer_summary

    summary = layer_summary(folder)
    assert len(summary) == 1 and summary["best_corr_mean"].isna().all()
