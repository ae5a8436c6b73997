"""Studies: [sweep] expansion, packing by seeds, executors, the per-run lock, restarts, failures.

Every study here is a tiny two-arm experiment written into a temporary folder (``--dir``),
trained on CPU in seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TINY, toml_literal
from teacherstudent.errors import UserError
from teacherstudent.experiments import StudyOptions, plan_study, run_study
from teacherstudent.lock import RunLocked, is_locked, locked
from teacherstudent.store import load_runs, run_status
from teacherstudent.sweep import Sweep, expand, format_seeds, load_study, parse_sweep
from teacherstudent_cli.main import app

runner = CliRunner()

STUDY_PY = '''"""A tiny study for the tests."""
import pandas as pd
from teacherstudent.experiments import final_losses


def arms(base):
    return {"a": base.replace(name="tiny.a"), "b": base.replace(name="tiny.b", training={"lr": 0.02})}


def tables(runs):
    return {"summary": pd.DataFrame([{"arm": a, **final_losses(f)} for a, f in runs.items()])}
'''


def write_study(root: Path, sweep: str = "", name: str = "tiny_study", fields: dict | None = None,
                py: str = STUDY_PY) -> Path:
    """``root/<name>.py`` and ``.toml``: the tiny config (plus ``fields``) and a ``[sweep]`` table."""
    root.mkdir(parents=True, exist_ok=True)
    sections: dict[str, dict] = {}
    for key, value in {**TINY, **(fields or {})}.items():
        sec, f = key.split(".")
        sections.setdefault(sec, {})[f] = value
    lines = ['name = "tiny"']
    for sec, kv in sections.items():
        lines += ["", f"[{sec}]", *(f"{k} = {toml_literal(v)}" for k, v in kv.items())]
    (root / f"{name}.toml").write_text("\n".join(lines) + "\n\n" + sweep)
    (root / f"{name}.py").write_text(py)
    return root


def tables_of(out: Path) -> dict[str, pd.DataFrame]:
    """``load_runs`` of every table, the columns that name the packing dropped, rows sorted."""
    res = {}
    for table in ("metrics", "teacher_nodes", "student_nodes"):
        df = load_runs(out, table).drop(columns=["run", "student.seeds"])
        keys = [c for c in ("name", "member", "layer", "step", "split", "metric", "teacher_node", "student_node")
                if c in df.columns]
        res[table] = df.sort_values(keys, kind="stable").reset_index(drop=True)
    return res


def assert_same_tables(a: Path, b: Path, exact: bool = True) -> None:
    """Equal tables: bit for bit, or (``exact=False``, ensembles of different member counts) to float64
    rounding, since the BLAS partitions a batch of one member's matmuls differently from a batch of four."""
    ta, tb = tables_of(a), tables_of(b)
    for table in ta:
        assert len(ta[table]) > 0
        pd.testing.assert_frame_equal(ta[table], tb[table], check_exact=exact, rtol=1e-9, atol=1e-12)


def subprocess_env() -> dict[str, str]:
    """The child imports what this process imports (the tree under test first)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from teacherstudent_cli.main import main; main()", *map(str, args)]


# ---- expansion ------------------------------------------------------------------------------

def test_grid_zip_and_seeds_expand_as_written(tiny_config):
    sweep = parse_sweep({"seeds": "3-7", "grid": {"student.multiplier": [2, 3], "training.lr": [0.1, 0.05]},
                         "zip": {"teacher.seed": [0, 1], "inputs.seed": [5, 6]}})
    assert sweep == Sweep({"student.multiplier": (2, 3), "training.lr": (0.1, 0.05)},
                          {"teacher.seed": (0, 1), "inputs.seed": (5, 6)}, (3, 4, 5, 6, 7))
    expected_points = [{"student.multiplier": m, "training.lr": lr, "teacher.seed": t, "inputs.seed": i}
                       for m in (2, 3) for lr in (0.1, 0.05) for t, i in ((0, 5), (1, 6))]
    assert sweep.points() == expected_points
    base = tiny_config()
    study = expand("s", {"x": base, "y": base.replace(name="y")}, sweep, members_per_run=2)
    assert [(lb.arm, lb.point) for lb in study.labels] == [(a, p) for a in "xy" for p in expected_points]
    assert all(lb.seeds == (3, 4, 5, 6, 7) for lb in study.labels)
    assert len(study.runs) == 2 * 8 * 3  # 16 (arm, point) pairs, seeds in chunks 3-4, 5-6, 7
    assert [r.cfg.student.seeds for r in study.runs[:3]] == [(3, 4), (5, 6), (7,)]
    first = study.runs[0].cfg
    assert (first.name, first.student.multiplier, first.training.lr, first.teacher.seed, first.inputs.seed) == \
        ("default", 2, 0.1, 0, 5)
    last = study.runs[-1].cfg
    assert (last.name, last.student.multiplier, last.training.lr, last.teacher.seed, last.inputs.seed) == \
        ("y", 3, 0.05, 1, 6)
    assert len({r.run_id for r in study.runs}) == len(study.runs)
    # default packing: every seed of a small study in one run; no sweep: the arms as they are
    assert [r.cfg.student.seeds for r in expand("s", {"x": base}, sweep).runs[:1]] == [(3, 4, 5, 6, 7)]
    assert [r.run_id for r in expand("s", {"x": base}, None).runs] == [base.run_id]
    assert format_seeds((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"


def test_arms_differing_only_in_seeds_are_one_run(tiny_config):
    base = tiny_config()
    arms = {"s0": base.replace(student={"seeds": [0]}), "s1": base.replace(student={"seeds": [1, 2]}),
            "other": base.replace(training={"lr": 0.02})}
    study = expand("s", arms, None)
    assert [r.cfg.student.seeds for r in study.runs] == [(0, 1, 2), (0, 1)]
    assert [lb.arm for lb in study.runs[0].labels] == ["s0", "s1"]
    assert not study.one_run_per_label()


BAD = {
    "unknown key": ('[sweep.grid]\n"student.multipler" = [1, 2]\n', "unknown config key 'student.multipler'"),
    "unknown section": ('[sweep.grid]\n"trainer.lr" = [1]\n', "unknown config key 'trainer.lr'"),
    "a section": ('[sweep.grid]\n"student" = [1]\n', "is a section"),
    "empty axis": ('[sweep.grid]\n"student.multiplier" = []\n', "axis 'student.multiplier' is empty"),
    "zip lengths": ('[sweep.zip]\n"training.lr" = [0.1, 0.2]\n"training.epochs" = [1, 2, 3]\n', "equal lengths"),
    "bad value": ('[sweep.grid]\n"student.multiplier" = [0]\n', "student.multiplier"),
    "unknown sweep key": ('[sweep]\ngrids = {}\n', "unknown key 'grids'"),
    "empty seeds": ('[sweep]\nseeds = []\n', "seeds is empty"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_sweeps_are_one_line_exit_2_and_train_nothing(tmp_path, case):
    sweep, fragment = BAD[case]
    root = write_study(tmp_path / "analysis", sweep)
    for cmd in ("plan", "run"):
        extra = ["--device", "cpu"] if cmd == "run" else []
        res = runner.invoke(app, ["experiment", cmd, "tiny_study", "--dir", str(root), "--out", str(tmp_path / "runs"), *extra])
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], res.output
    assert not (tmp_path / "runs").exists()


def test_zero_runs_missing_dask_and_unreachable_scheduler_are_exit_2(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    empty = write_study(tmp_path / "empty", py=STUDY_PY.replace('return {"a"', 'return {}\n    return {"a"'))
    res = runner.invoke(app, ["experiment", "run", "tiny_study", "--dir", str(empty), "--out", str(out)])
    assert res.exit_code == 2 and "zero runs" in res.output and len(res.output.strip().splitlines()) == 1
    root = write_study(tmp_path / "analysis")
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the cluster extra were not installed
    res = runner.invoke(app, ["experiment", "run", "tiny_study", "--dir", str(root), "--out", str(out),
                              "--executor", "dask", "--device", "cpu"])
    assert res.exit_code == 2 and res.output.strip() == \
        "error: install the cluster extra: pip install 'teacherstudent[cluster]'"
    res = runner.invoke(app, ["experiment", "run", "tiny_study", "--dir", str(root), "--out", str(out),
                              "--executor", "nope"])
    assert res.exit_code == 2 and "unknown executor 'nope'" in res.output
    assert not out.exists()
    monkeypatch.delitem(sys.modules, "distributed")
    pytest.importorskip("distributed", reason="the unreachable-scheduler check needs the cluster extra")
    t0 = time.perf_counter()
    res = runner.invoke(app, ["experiment", "run", "tiny_study", "--dir", str(root), "--out", str(out),
                              "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9", "--device", "cpu"])
    assert res.exit_code == 2 and "cannot reach the Dask scheduler tcp://127.0.0.1:9" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and time.perf_counter() - t0 < 30
    assert not out.exists()


# ---- packing ---------------------------------------------------------------------------------

def test_packed_and_unpacked_studies_give_the_same_tables(tmp_path):
    # float64, so that "the same up to rounding" is a tight tolerance (see assert_same_tables)
    root = write_study(tmp_path / "analysis", '[sweep]\nseeds = "0-3"\n', fields={"training.dtype": "float64"})
    one = run_study("tiny_study", StudyOptions(tmp_path / "one", "cpu", root=root, workers=1, members_per_run=1))
    assert len(one.reports) == 8 and one.counts()["done"] == 8 and one.tables == {} and "one run per arm" in one.note
    packed = run_study("tiny_study", StudyOptions(tmp_path / "all", "cpu", root=root, workers=1))
    assert len(packed.reports) == 2 and list(packed.tables["summary"].arm) == ["a", "b"]
    assert_same_tables(tmp_path / "one", tmp_path / "all", exact=False)
    keys = ["arm", "member", "layer", "teacher_node"]
    a, b = (load_study(r.study, tmp_path / d, "teacher_nodes").drop(columns="run").sort_values(keys).reset_index(drop=True)
            for r, d in ((one, "one"), (packed, "all")))
    assert len(a) == 2 * 4 * (4 + 6) and set(a.arm) == {"a", "b"}
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)


# ---- plan, status, the lock -------------------------------------------------------------------

def test_plan_and_status_read_the_run_store(tmp_path):
    from teacherstudent.simulate import RunOptions, run

    root = write_study(tmp_path / "analysis", '[sweep]\nseeds = "0-1"\n[sweep.grid]\n"student.multiplier" = [2, 3]\n')
    out = tmp_path / "runs"
    _, study = plan_study("tiny_study", StudyOptions(root=root))
    assert len(study.runs) == 4
    run(study.runs[0].cfg, RunOptions(out, "cpu"))
    run(study.runs[1].cfg, RunOptions(out, "cpu", max_steps=8))
    with locked(out / study.runs[2].run_id):
        assert is_locked(out / study.runs[2].run_id)
        res = runner.invoke(app, ["experiment", "plan", "tiny_study", "--dir", str(root), "--out", str(out)])
        with pytest.raises(RunLocked, match="being trained by pid"):
            with locked(out / study.runs[2].run_id, "skip"):
                pass
    assert res.exit_code == 0, res.output
    rows = {r.run_id: line for r in study.runs for line in res.output.splitlines() if r.run_id in line}
    states = [rows[r.run_id].split("│")[5].strip() for r in study.runs]
    assert states == ["done", "interrupted", "running", "missing"]
    assert "a/student.multiplier=2" in res.output and "1 done, 1 running, 1 interrupted, 1 missing" in res.output
    assert not (out / study.runs[2].run_id).exists()  # the lock left nothing behind
    res = runner.invoke(app, ["experiment", "status", "tiny_study", "--dir", str(root), "--out", str(out)])
    assert res.exit_code == 0 and "tiny_study: status" in res.output and "48 of 128 student-steps" in res.output


def test_a_failing_arm_is_reported_and_the_others_finish(tmp_path):
    py = STUDY_PY.replace('training={"lr": 0.02}', 'training={"lr": 1e12}')  # arm b: every member diverges
    root = write_study(tmp_path / "analysis", py=py)
    out = tmp_path / "runs"
    res = runner.invoke(app, ["experiment", "run", "tiny_study", "--dir", str(root), "--out", str(out),
                              "--device", "cpu", "--workers", "1"])
    assert res.exit_code == 1, res.output
    _, study = plan_study("tiny_study", StudyOptions(root=root))
    good, bad = (r.run_id for r in study.runs)
    assert run_status(out / good)["state"] == "finished"
    assert f"failed: {bad}: all 2 members diverged" in res.output
    assert res.output.strip().splitlines()[-1].startswith(f"error: 1 run(s) failed: {bad}")


# ---- restarts and concurrency (subprocesses) -----------------------------------------------------

def test_a_killed_study_rerun_ends_with_the_tables_of_an_uninterrupted_one(tmp_path):
    root = write_study(tmp_path / "analysis", '[sweep]\nseeds = "0-2"\n',
                       fields={"training.epochs": 12, "measure.every": "steps", "measure.every_steps": 24})
    out, ref = tmp_path / "killed", tmp_path / "ref"
    args = ["experiment", "run", "tiny_study", "--dir", root, "--device", "cpu", "--workers", "1"]
    proc = subprocess.Popen(cli(*args, "--out", out), env=subprocess_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("*/checkpoints/latest.pt")):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started
    proc.wait()
    assert list(out.glob("*/checkpoints/latest.pt")), "the study never reached its first checkpoint"
    states = [run_status(p).get("state") for p in out.iterdir() if p.is_dir()]
    assert "finished" not in states or len(states) < 2  # killed mid-way
    again = run_study("tiny_study", StudyOptions(out, "cpu", root=root, workers=1))  # the same command again
    assert "resumed" in [r["outcome"] for r in again.reports] and not again.failed
    fresh = run_study("tiny_study", StudyOptions(ref, "cpu", root=root, workers=1))
    assert [r["outcome"] for r in fresh.reports] == ["done", "done"]
    assert_same_tables(out, ref)
    pd.testing.assert_frame_equal(again.tables["summary"], fresh.tables["summary"])


def test_two_processes_on_one_study_train_each_run_once(tmp_path):
    root = write_study(tmp_path / "analysis", '[sweep]\nseeds = "0-1"\n[sweep.grid]\n"student.multiplier" = [2, 3]\n')
    out = tmp_path / "runs"
    args = cli("experiment", "run", "tiny_study", "--dir", root, "--out", out, "--device", "cpu", "--workers", "1")
    procs = [subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    counts = []
    for stdout, _ in outputs:
        m = re.search(r"│\s+(\d+) │\s+(\d+) │\s+(\d+) │\s+(\d+) │", stdout)
        assert m, stdout
        counts.append([int(g) for g in m.groups()])
    done, resumed, skipped, failed = (sum(c[i] for c in counts) for i in range(4))
    assert (done, resumed, failed) == (4, 0, 0) and skipped == 4  # every run trained by exactly one process
    _, study = plan_study("tiny_study", StudyOptions(root=root))
    for r in study.runs:
        assert run_status(out / r.run_id)["state"] == "finished"
        assert not (out / r.run_id / ".lock").exists()


def test_dask_local_cluster_gives_the_tables_of_the_local_executor(tmp_path):
    pytest.importorskip("distributed", reason="needs the cluster extra: pip install 'teacherstudent[cluster]'")
    root = write_study(tmp_path / "analysis", '[sweep]\nseeds = "0-1"\n')
    local = run_study("tiny_study", StudyOptions(tmp_path / "local", "cpu", root=root, executor="local", workers=1))
    dask = run_study("tiny_study", StudyOptions(tmp_path / "dask", "cpu", root=root, executor="dask"))
    assert [r["outcome"] for r in dask.reports] == ["done", "done"]
    assert_same_tables(tmp_path / "local", tmp_path / "dask")
    pd.testing.assert_frame_equal(local.tables["summary"], dask.tables["summary"])
    assert json.loads((tmp_path / "dask/experiments/tiny_study/study.json").read_text())["reports"][0]["outcome"] == "done"
