"""The loop and its callbacks: metrics as callbacks, streaming measurements, lean checkpoints,
thresholds honoured by the node tables, resume with a diverged member."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from teacherstudent.metrics import METRICS, Metric
from teacherstudent.simulate import RunOptions, run
from teacherstudent.steppers import STEPPERS, choose
from teacherstudent.build import build

from conftest import tiny

CPU = torch.device("cpu")


class WeightNorm(Metric):
    """A metric added by a test: the squared norm of each member's first-layer weights."""

    def member_rows(self, m, k):
        yield "eval", 0, "test_w0_norm", float(m.snap.fanout[0][k].square().sum())


def test_a_metric_added_as_a_callback_lands_in_metrics_parquet(tmp_path, monkeypatch):
    monkeypatch.setitem(METRICS, "w0", WeightNorm)
    cfg = tiny(measure__metrics=["loss", "alignment", "alignment_se", "w0"])
    folder = run(cfg, RunOptions(out=tmp_path, device="cpu"))
    m = pd.read_parquet(folder / "metrics.parquet")
    mine = m[m.metric == "test_w0_norm"]
    steps = sorted(m[m.metric == "best_corr_mean"].step.unique())
    assert sorted(mine.step.unique()) == steps and len(mine) == len(steps) * len(cfg.student.seeds)
    assert (mine.value > 0).all()
    # the built-in metrics are unchanged by it
    plain = pd.read_parquet(run(tiny(), RunOptions(out=tmp_path, device="cpu")) / "metrics.parquet")
    pd.testing.assert_frame_equal(m[m.metric != "test_w0_norm"].drop(columns="run").reset_index(drop=True),
                                  plain.drop(columns="run"))


def test_only_the_named_metrics_are_recorded(tmp_path):
    folder = run(tiny(measure__metrics=["loss"]), RunOptions(out=tmp_path, device="cpu"))
    assert set(pd.read_parquet(folder / "metrics.parquet").metric) == {"loss"}


def test_checkpoint_size_does_not_grow_with_the_number_of_measurements(tmp_path):
    """latest.pt holds weights, optimiser, position and running reductions, not the history."""
    cfg = tiny("training.steps=400", "measure.every='steps'", "measure.every_steps=10", training__epochs=8)
    sizes = []
    for stop in (20, 200, 390):
        folder = run(cfg, RunOptions(tmp_path, "cpu", max_steps=stop))
        sizes.append((folder / "checkpoints" / "latest.pt").stat().st_size)
        parts = sorted((folder / "parts").iterdir())
        assert len([p for p in parts if p.name.startswith("metrics-")]) == stop // 10 + 1  # step 0 too
    assert max(sizes) - min(sizes) < 512, sizes  # pickle framing only
    run(cfg, RunOptions(tmp_path, "cpu"))
    assert not (folder / "parts").exists()  # compacted into the tables


def test_resume_drops_parts_written_after_the_last_checkpoint(tmp_path):
    """A kill between a measurement's part and its checkpoint leaves a part past the resume
    point; the resumed run must not count it twice."""
    cfg = tiny("training.epochs=4")
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=8))
    import shutil

    shutil.copy(part / "parts" / "metrics-000000000008.parquet", part / "parts" / "metrics-000000000013.parquet")
    run(cfg, RunOptions(tmp_path / "b", "cpu"))
    for t in ("metrics", "teacher_nodes", "student_nodes"):
        pd.testing.assert_frame_equal(pd.read_parquet(whole / f"{t}.parquet"), pd.read_parquet(part / f"{t}.parquet"))


def test_node_tables_honour_the_configured_thresholds(tmp_path):
    cfg = tiny("measure.recovered=0.8", "measure.covered=0.5", "training.epochs=3")
    folder = run(cfg, RunOptions(tmp_path, "cpu"))
    tn = pd.read_parquet(folder / "teacher_nodes.parquet")
    sn = pd.read_parquet(folder / "student_nodes.parquet")
    assert {"step_corr_0.5", "step_corr_0.8"} <= set(tn.columns) and "step_corr_0.9" not in tn.columns
    assert {"step_corr_0.5", "step_corr_0.8"} <= set(sn.columns)
    import numpy as np

    C = np.load(folder / "corr.npz")
    final = max(int(k.split("_")[1]) for k in C.files if k.startswith("step_"))
    for l in range(2):
        C1 = C[f"step_{final}_layer_{l}"]
        want = (C1 > 0.5).sum(2).flatten()
        assert (tn[tn.layer == l].match_count.to_numpy() == want).all()
    # the first-pass steps agree with the metric rows: a teacher node counted as recovered at the
    # last step has a step at which its winner passed the threshold
    assert tn[tn.final_corr > 0.8]["step_corr_0.8"].notna().all()


def test_steppers_registry_and_choice():
    assert set(STEPPERS) == {"fused_sgd", "fast", "autograd"}
    assert choose(build(tiny(), CPU)) == "fused_sgd"
    assert choose(build(tiny(training__momentum=0.9), CPU)) == "fast"
    assert choose(build(tiny(training__backend="autograd"), CPU)) == "autograd"
    assert choose(build(tiny(student__batchnorm=True), CPU)) == "autograd"


def test_meta_names_the_stepper(tmp_path):
    import json

    folder = run(tiny(training__optimizer="adam", training__lr=0.01), RunOptions(tmp_path, "cpu"))
    assert json.loads((folder / "meta.json").read_text())["backend"] == "fast"


def test_layer_summary_gives_the_measured_teacher_width_with_a_wide_teacher(tmp_path):
    from teacherstudent.summary import layer_summary

    folder = run(tiny(inputs__labels="wide_teacher", inputs__wide_factor=2), RunOptions(tmp_path, "cpu"))
    assert layer_summary(folder).teacher_width.tolist() == [8, 12]  # tiny's [4, 6] times 2
