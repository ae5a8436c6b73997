"""Wide packing (teacherstudent/widepack.py): runs that differ only in per-member fields train as
one ensemble, and every run's tables are those of the run trained alone, bit for bit on CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny
from teacherstudent.config import build_config
from teacherstudent.errors import UserError
from teacherstudent.experiments import StudyOptions, plan_study, run_study
from teacherstudent.simulate import RunOptions, run
from teacherstudent.summary import read_table
from teacherstudent.sweep import StudyRun, load_study, parse_sweep, plan_table
from teacherstudent.widepack import (ENV, classify, config_fields, pack_key, pack_spec, per_member_fields, train_pack,
                                     unpackable, wide_jobs)

TABLES = ("metrics", "teacher_nodes", "student_nodes")


def runs_of(*cfgs) -> list[StudyRun]:
    return [StudyRun(c, ()) for c in cfgs]


def assert_same_run(a: Path, b: Path) -> None:
    """Two run folders with the same tables, bit for bit, and the same config."""
    assert (a / "config.json").read_text() == (b / "config.json").read_text()
    for t in TABLES:
        pd.testing.assert_frame_equal(read_table(a, t), read_table(b, t), check_exact=True)
    import numpy as np

    with np.load(a / "corr.npz") as za, np.load(b / "corr.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            assert np.array_equal(za[k], zb[k])


# ---- which fields --------------------------------------------------------------------------

def test_every_config_field_is_classified_and_shapes_are_shared():
    fields = config_fields()
    assert len(fields) > 60 and "teacher.widths" in fields and "training.lr" in fields
    assert all(classify(f) in ("per_member", "shared") for f in fields)
    assert set(per_member_fields()) <= set(fields)  # no stale names
    for shape in ("teacher.d", "teacher.widths", "teacher.outputs", "student.multiplier", "training.batch_size",
                  "training.dtype", "training.epochs", "training.steps", "inputs.eval_samples", "inputs.train_samples",
                  "arch", "measure.every", "student.batchnorm", "training.clip_norm", "training.backend", "inputs.seed",
                  "training.loss", "training.sampling"):
        assert classify(shape) == "shared", shape
    for per in ("teacher.seed", "teacher.strength_decay", "teacher.bias_mode", "teacher.firing", "student.seeds",
                "student.init_scale", "training.lr", "training.momentum", "training.optimizer", "training.betas",
                "training.schedule", "training.gamma", "training.warmup_steps", "training.weight_decay", "name"):
        assert classify(per) == "per_member", per
    with pytest.raises(UserError):
        classify("teacher.nope")


def test_a_shared_field_never_packs():
    base = tiny()
    for other in (tiny(inputs__seed=3), tiny(training__batch_size=32), tiny(student__multiplier=2),
                  tiny(training__dtype="float64"), tiny(training__epochs=3), tiny(inputs__sigma=2.0)):
        assert pack_key(other) != pack_key(base)
        assert [len(j) for j in wide_jobs(runs_of(base, other), "/nonexistent")] == [1, 1]
    # the optimiser is per run, but a pack's runs take the same stepper; on the autograd path it is shared
    assert pack_key(tiny(training__lr=0.01)) == pack_key(base)
    assert pack_key(tiny(training__momentum=0.9, training__lr=0.01)) == pack_key(tiny(training__optimizer="adam"))
    assert pack_key(tiny(training__momentum=0.9)) != pack_key(base)  # fast versus fused SGD
    assert pack_key(tiny(training__backend="autograd", training__lr=0.01)) != pack_key(tiny(training__backend="autograd"))
    # teacher.seed is shared where the inputs draw their structure from it
    c = {"inputs.kind": "clusters"}
    assert pack_key(tiny(**{k.replace(".", "__"): v for k, v in c.items()}, teacher__seed=1)) != \
        pack_key(tiny(inputs__kind="clusters"))
    assert pack_key(tiny(teacher__seed=1, teacher__strength_decay=1.0, student__init_scale=2.0)) == pack_key(base)
    # configs the pack does not cover train alone
    drop = tiny(training__dropout=0.1)
    assert unpackable(drop) and [len(j) for j in wide_jobs(runs_of(drop, drop.replace(teacher={"seed": 1})), "/x")] == [1, 1]


def test_jobs_split_for_workers_and_respect_the_budget_and_the_switch(tmp_path, monkeypatch):
    runs = runs_of(*(tiny(teacher__seed=s) for s in range(6)))
    assert [len(j) for j in wide_jobs(runs, tmp_path)] == [6]
    assert [len(j) for j in wide_jobs(runs, tmp_path, min_jobs=2)] == [3, 3]
    assert [len(j) for j in wide_jobs(runs, tmp_path, budget=1)] == [1] * 6
    assert [len(j) for j in wide_jobs(runs, tmp_path, on=False)] == [1] * 6
    # a run with a resume point resumes alone
    (tmp_path / runs[2].run_id / "checkpoints").mkdir(parents=True)
    (tmp_path / runs[2].run_id / "checkpoints" / "latest.pt").write_bytes(b"")
    jobs = wide_jobs(runs, tmp_path)
    assert sorted(len(j) for j in jobs) == [1, 5] and (runs[2],) in jobs
    assert parse_sweep({"wide_pack": False}).wide_pack is False
    with pytest.raises(UserError, match="wide_pack"):
        parse_sweep({"wide_pack": "no"})


# ---- packed == alone ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_each_per_member_field_packed_equals_alone(tmp_path, dtype):
    """One pack holding a run per per-member field changed from the base (and a one-member run):
    every run's tables, correlations and config equal those of the run trained alone (float32: a
    few fields at once, to keep the test short; the mixed study below is float32 too)."""
    kw = dict(training__dtype=dtype, training__epochs=1)
    if dtype == "float64":
        cfgs = [tiny(**kw), tiny(**kw, teacher__seed=1), tiny(**kw, teacher__strength_decay=1.5),
                tiny(**kw, teacher__bias_mode="fixed", teacher__bias_value=-0.1),
                tiny(**kw, student__init_scale=0.5), tiny(**kw, training__lr=0.02, student__seeds=[5, 6, 7]),
                tiny(**kw, teacher__seeds=[3, 4]), tiny(**kw, student__seeds=[2]),
                build_config({**tiny(**kw).model_dump(), "name": "other"})]
    else:
        cfgs = [tiny(**kw), tiny(**kw, teacher__seed=1, student__init_scale=0.5, teacher__strength_decay=1.0),
                tiny(**kw, training__lr=0.02, student__seeds=[2])]
    jobs = wide_jobs(runs_of(*cfgs), tmp_path / "pack")
    assert [len(j) for j in jobs] == [len(cfgs)]
    reports = train_pack(pack_spec(jobs[0], tmp_path / "pack", "cpu", None, "wait", False, None))
    assert [r["outcome"] for r in reports] == ["done"] * len(cfgs)
    assert [r["run_id"] for r in reports] == [c.run_id for c in cfgs]
    for c in cfgs:
        run(c, RunOptions(tmp_path / "alone", "cpu"))
        assert_same_run(tmp_path / "pack" / c.run_id, tmp_path / "alone" / c.run_id)
    # a second call finds them finished
    again = train_pack(pack_spec(jobs[0], tmp_path / "pack", "cpu", None, "wait", False, None))
    assert {r["outcome"] for r in again} == {"skipped"}


@pytest.mark.parametrize("training", [{}, {"momentum": 0.9}, {"optimizer": "adam"}])
def test_a_bf16_pack_equals_its_runs_alone(tmp_path, training):
    """training.precision is shared: a pack of bf16 runs (fused SGD, or an optimiser stepping each run's
    slice) trains in bf16 like each run alone, and not like the full-precision runs."""
    kw = dict(training__epochs=1, training__precision="bf16", **{f"training__{k}": v for k, v in training.items()})
    cfgs = [tiny(**kw), tiny(**kw, training__lr=0.02, teacher__seed=1)]
    assert pack_key(tiny(**kw)) != pack_key(tiny(**{**kw, "training__precision": "full"}))
    jobs = wide_jobs(runs_of(*cfgs), tmp_path / "pack")
    assert [len(j) for j in jobs] == [2]
    reports = train_pack(pack_spec(jobs[0], tmp_path / "pack", "cpu", None, "wait", False, None))
    assert [r["outcome"] for r in reports] == ["done"] * 2
    for c in cfgs:
        run(c, RunOptions(tmp_path / "alone", "cpu"))
        assert_same_run(tmp_path / "pack" / c.run_id, tmp_path / "alone" / c.run_id)
        full = c.replace(training={"precision": "full"})
        run(full, RunOptions(tmp_path / "full", "cpu"))
        a, b = read_table(tmp_path / "pack" / c.run_id, "metrics"), read_table(tmp_path / "full" / full.run_id, "metrics")
        assert not a["value"].equals(b["value"])  # the pack really trained in bf16


STUDY_PY = '''"""Wide-pack test study."""
import pandas as pd


def arms(base):
    return {"x": base}


def tables(runs):
    return {"runs": pd.DataFrame({"arm": list(runs)})}
'''


def test_mixed_study_tables_equal_the_runs_trained_one_by_one(tmp_path, monkeypatch):
    from conftest import TINY, toml_literal

    root = tmp_path / "analysis"
    root.mkdir()
    sections: dict[str, dict] = {}
    for key, value in {**TINY, "training.epochs": 1}.items():
        sec, f = key.split(".")
        sections.setdefault(sec, {})[f] = value
    lines = ['name = "wide"']
    for sec, kv in sections.items():
        lines += ["", f"[{sec}]", *(f"{k} = {toml_literal(v)}" for k, v in kv.items())]
    lines += ["", "[sweep]", 'seeds = "0-3"', "", "[sweep.grid]", '"teacher.seed" = [0, 1]', '"training.lr" = [0.05, 0.02]']
    (root / "wide_study.toml").write_text("\n".join(lines) + "\n")
    (root / "wide_study.py").write_text(STUDY_PY)

    _, study = plan_study("wide_study", StudyOptions(root=root, members_per_run=2), [])
    assert len(study.runs) == 8
    plan = plan_table(study, tmp_path / "packed")
    assert plan.runs_in_job.min() > 1 and plan.job.nunique() <= 2  # packed (split in two on a two-core machine)

    packed = run_study("wide_study", StudyOptions(tmp_path / "packed", "cpu", root=root, workers=1, members_per_run=2))
    monkeypatch.setenv(ENV, "0")
    assert set(plan_table(study, tmp_path / "alone").runs_in_job) == {1}
    alone = run_study("wide_study", StudyOptions(tmp_path / "alone", "cpu", root=root, workers=1, members_per_run=2))
    for res in (packed, alone):
        assert res.counts()["done"] == 8 and not res.failed
    assert [r.run_id for r in packed.study.runs] == [r.run_id for r in alone.study.runs]  # run ids unchanged
    for table in TABLES:
        a, b = load_study(packed.study, tmp_path / "packed", table), load_study(alone.study, tmp_path / "alone", table)
        assert len(a) > 0 and set(a["teacher.seed"]) == {0, 1} and set(a["training.lr"]) == {0.05, 0.02}
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    shutil.rmtree(tmp_path / "alone")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_packs_resume_points_are_those_of_the_runs_alone(tmp_path, dtype):
    """Each run of a pack writes the resume point the run alone writes (so an interrupted pack's
    runs resume alone: test_sweep's killed study covers that path), with one optimiser per run
    (momentum, Adam, a schedule with warm-up, gradient clipping shared): tables equal too."""
    import torch

    kw = dict(training__dtype=dtype, training__epochs=2, training__clip_norm=1.0)
    cfgs = [tiny(**kw, training__momentum=0.9), tiny(**kw, training__momentum=0.5, teacher__seed=4, student__seeds=[3]),
            tiny(**kw, training__optimizer="adam", training__lr=0.01, training__schedule="cosine",
                 training__warmup_steps=4, student__seeds=[4, 5, 6])]
    jobs = wide_jobs(runs_of(*cfgs), tmp_path / "pack")
    assert [len(j) for j in jobs] == [3]
    assert {r["outcome"] for r in train_pack(pack_spec(jobs[0], tmp_path / "pack", "cpu", None, "wait", False, None))} == {"done"}

    def same(a, b):
        if torch.is_tensor(a):
            assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
        elif isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                same(a[k], b[k])
        elif isinstance(a, (list, tuple)):
            assert len(a) == len(b)
            for x, y in zip(a, b):
                same(x, y)
        else:
            assert a == b

    for c in cfgs:
        run(c, RunOptions(tmp_path / "alone", "cpu"))
        a = torch.load(tmp_path / "pack" / c.run_id / "checkpoints" / "latest.pt", weights_only=False)
        b = torch.load(tmp_path / "alone" / c.run_id / "checkpoints" / "latest.pt", weights_only=False)
        assert a["trainer"]["step"] == b["trainer"]["step"] > 0 and a["trainer"]["opt"]["state"]
        same(a, b)
        assert_same_run(tmp_path / "pack" / c.run_id, tmp_path / "alone" / c.run_id)


def test_stepper_kind_is_the_stepper_a_run_alone_takes():
    import torch

    from teacherstudent.build import build
    from teacherstudent.steppers import choose
    from teacherstudent.widepack import stepper_kind

    for cfg in (tiny(), tiny(training__momentum=0.9), tiny(training__optimizer="adam"), tiny(training__clip_norm=1.0),
                tiny(training__backend="autograd"), tiny(training__backend="fast"), tiny(training__weight_decay=0.1)):
        assert stepper_kind(cfg) == choose(build(cfg, torch.device("cpu"))), cfg.training
