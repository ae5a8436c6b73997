"""The run folder: files, tables recomputed independently, resume, skip, determinism, load_runs;
bad input and damaged folders are one-line user errors that touch nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import teacherstudent
from teacherstudent.errors import UserError
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run
from teacherstudent.store import load_runs

from conftest import assert_user_error, cli_sets, file_bytes, invoke, tiny

CPU = torch.device("cpu")
MEASURED = list(range(0, 33, 4))  # 4 epochs of 8 steps, measured every 4 steps
# lr 0.2 for 32 steps: some teacher nodes pass 0.9 / 0.95, so the "first step" columns are exercised
STORE = ("training.lr=0.2", "training.epochs=4", "measure.every=steps", "measure.every_steps=4",
         "measure.corr_steps=[4, 8, 12, 16, 20, 24, 28]", "training.checkpoint_steps=[12]", "student.seeds=[3, 0, 5]")

METRICS_COLUMNS = ["run", "member", "step", "epoch", "split", "layer", "metric", "value"]
TEACHER_COLUMNS = ["run", "member", "layer", "teacher_node", "winner", "init_rank_pct", "init_corr", "final_corr",
                   "step_corr_0.9", "step_corr_0.95", "match_count", "teacher_fanout_norm",
                   "teacher_seed"]  # teacher_seed: added in 0.3 (one teacher per member)
STUDENT_COLUMNS = ["run", "member", "layer", "student_node", "step", "best_corr", "best_teacher", "fanout_norm",
                   "step_corr_0.9", "step_corr_0.95", "teacher_seed"]
TABLES = ("metrics", "teacher_nodes", "student_nodes")


@pytest.fixture(scope="module")
def store_run(tmp_path_factory) -> Path:
    return run(tiny(*STORE), RunOptions(tmp_path_factory.mktemp("store"), "cpu", command=["pytest", "store"]))


def table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(folder / f"{name}.parquet")


def corr_at(npz, step: int, layer: int) -> np.ndarray:
    return npz[f"step_{step}_layer_{layer}"]


def first_step(values: list[float], threshold: float):
    return next((s for s, v in zip(MEASURED, values) if v >= threshold), None)


def weights_at(folder: Path, name: str) -> list[torch.Tensor]:
    return torch.load(folder / "checkpoints" / f"{name}.pt", weights_only=False)["weights"]


# ---- files -------------------------------------------------------------------------------------------

def test_run_folder_holds_config_meta_status_and_checkpoints(store_run):
    cfg = tiny(*STORE)
    assert store_run.name == cfg.run_id
    stored = json.loads((store_run / "config.json").read_text())
    assert stored == cfg.model_dump(mode="json")
    assert teacherstudent.ExperimentConfig.model_validate(stored).run_id == cfg.run_id
    meta = json.loads((store_run / "meta.json").read_text())
    assert meta["version"] == teacherstudent.__version__
    assert meta["command"] == ["pytest", "store"]
    assert meta["run"] == cfg.run_id and meta["device"] == "cpu"
    status = json.loads((store_run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == status["total_steps"] == 32
    assert [m["member"] for m in status["members"]] == [3, 0, 5]
    assert all(m["status"] == "ok" for m in status["members"])
    assert {p.name for p in (store_run / "checkpoints").iterdir()} == {"init.pt", "final.pt", "latest.pt", "step_12.pt"}
    ck = torch.load(store_run / "checkpoints" / "step_12.pt", weights_only=False)
    assert ck["step"] == 12 and ck["seeds"] == [3, 0, 5]
    assert {p.name for p in store_run.iterdir()} >= {"config.json", "meta.json", "status.json", "corr.npz",
                                                      "metrics.parquet", "teacher_nodes.parquet", "student_nodes.parquet"}


def test_init_checkpoint_holds_the_initial_students(store_run):
    cfg = tiny(*STORE)
    sim = Trainer(build(cfg, CPU))
    for a, b in zip(weights_at(store_run, "init"), sim.weights()):
        assert torch.equal(a, b)
    final = weights_at(store_run, "final")
    assert not torch.equal(final[0], sim.weights()[0])


# ---- metrics -----------------------------------------------------------------------------------------

def test_metrics_table(store_run):
    m = table(store_run, "metrics")
    assert list(m.columns) == METRICS_COLUMNS
    assert set(m.run) == {tiny(*STORE).run_id}
    assert set(m.member) == {3, 0, 5}
    assert sorted(set(m.step)) == MEASURED
    np.testing.assert_allclose(m.epoch, m.step / 8)
    required = {"loss", "best_corr_mean", "best_corr_min", "recovered_frac", "covered_frac"}
    assert required <= set(m.metric)
    loss = m[m.metric == "loss"]
    assert loss.layer.isna().all()
    assert m[m.metric != "loss"].layer.notna().all()
    assert set(m[m.metric != "loss"].layer) == {0, 1}
    # eval loss at every measurement; train loss (mean since the previous one) after training started
    assert len(loss[loss.split == "eval"]) == 3 * len(MEASURED)
    assert sorted(set(loss[loss.split == "train"].step)) == MEASURED[1:]
    assert np.isfinite(m.value).all()
    # one row per (member, step, split, layer, metric)
    assert not m.duplicated(["member", "step", "split", "layer", "metric"]).any()


def test_metrics_equal_recomputation_from_corr_npz(store_run):
    m = table(store_run, "metrics")
    npz = np.load(store_run / "corr.npz")
    members = list(npz["members"])
    assert members == [3, 0, 5]
    for step in MEASURED:
        for l in range(2):
            C = corr_at(npz, step, l)  # [K, m, n]
            best = C.max(2)
            expected = {
                "best_corr_mean": best.mean(1), "best_corr_min": best.min(1),
                "recovered_frac": (best > 0.95).mean(1), "covered_frac": (best > 0.9).mean(1),
                "match_count_mean": (C > 0.9).sum(2).mean(1),
            }
            for name, values in expected.items():
                for k, seed in enumerate(members):
                    got = m[(m.step == step) & (m.layer == l) & (m.metric == name) & (m.member == seed)].value
                    assert len(got) == 1
                    assert got.iloc[0] == pytest.approx(float(values[k]), abs=1e-6), (step, l, name, seed)


def test_fanout_metric_equals_the_checkpoint_weights(store_run):
    m = table(store_run, "metrics")
    for name, step in [("init", 0), ("final", 32), ("step_12", 12)]:
        W = weights_at(store_run, name)[0::2]  # weight matrices [K, n_out, n_in]
        for l in range(2):
            fan = W[l + 1].norm(dim=1).mean(1)  # [K]
            got = m[(m.step == step) & (m.layer == l) & (m.metric == "fanout_norm_mean")].sort_values("member")
            order = np.argsort([3, 0, 5])
            np.testing.assert_allclose(got.value.to_numpy(), fan.numpy()[order], rtol=1e-5)


# ---- teacher nodes ---------------------------------------------------------------------------------

def test_teacher_nodes_recomputed_from_corr_npz(store_run):
    t = table(store_run, "teacher_nodes")
    assert list(t.columns) == TEACHER_COLUMNS
    npz = np.load(store_run / "corr.npz")
    teacher = Trainer(build(tiny(*STORE), CPU)).teacher
    rows = 0
    for k, seed in enumerate(npz["members"]):
        for l in range(2):
            C0, C1 = corr_at(npz, 0, l)[k], corr_at(npz, 32, l)[k]
            m, n = C1.shape
            strength = teacher.weights[l + 1].norm(dim=0)
            for i in range(m):
                row = t[(t.member == seed) & (t.layer == l) & (t.teacher_node == i)]
                assert len(row) == 1
                row = row.iloc[0]
                winner = int(np.argmax(C1[i]))
                rank = 1 + int((C0[i] > C0[i, winner]).sum())
                track = [corr_at(npz, s, l)[k][i, winner] for s in MEASURED]
                assert row.winner == winner
                assert row.init_rank_pct == pytest.approx(100 * rank / n, rel=1e-6)
                assert row.init_corr == pytest.approx(float(C0[i, winner]), abs=1e-7)
                assert row.final_corr == pytest.approx(float(C1[i].max()), abs=1e-7)
                assert row.match_count == int((C1[i] > 0.9).sum())
                for thr in (0.9, 0.95):
                    expected = first_step(track, thr)
                    got = row[f"step_corr_{thr}"]
                    assert (pd.isna(got) and expected is None) or got == expected, (seed, l, i, thr)
                assert row.teacher_fanout_norm == pytest.approx(float(strength[i]), rel=1e-6)
                rows += 1
    assert rows == len(t) == 3 * (4 + 6)
    assert t["step_corr_0.9"].notna().any(), "the fixture should train far enough to cross 0.9"


def test_student_nodes_recomputed_from_corr_npz_and_checkpoints(store_run):
    s = table(store_run, "student_nodes")
    assert list(s.columns) == STUDENT_COLUMNS
    npz = np.load(store_run / "corr.npz")
    kept = MEASURED  # corr_steps keep every measured step here
    assert sorted(set(s.step)) == kept
    weights = {0: weights_at(store_run, "init")[0::2], 32: weights_at(store_run, "final")[0::2],
               12: weights_at(store_run, "step_12")[0::2]}
    for k, seed in enumerate(npz["members"]):
        for l in range(2):
            best_over_time = [corr_at(npz, st, l)[k].max(0) for st in MEASURED]  # [n] per step
            for step in kept:
                C = corr_at(npz, step, l)[k]  # [m, n]
                part = s[(s.member == seed) & (s.layer == l) & (s.step == step)].sort_values("student_node")
                assert list(part.student_node) == list(range(C.shape[1]))
                np.testing.assert_allclose(part.best_corr, C.max(0), atol=1e-7)
                np.testing.assert_array_equal(part.best_teacher, C.argmax(0))
                if step in weights:
                    fan = weights[step][l + 1][k].norm(dim=0).numpy()
                    np.testing.assert_allclose(part.fanout_norm, fan, rtol=1e-5)
                for thr in (0.9, 0.95):
                    for j in range(C.shape[1]):
                        expected = first_step([b[j] for b in best_over_time], thr)
                        got = part[f"step_corr_{thr}"].iloc[j]
                        assert (pd.isna(got) and expected is None) or got == expected
    assert len(s) == len(kept) * 3 * (12 + 18)


def test_corr_npz_keeps_init_end_and_corr_steps_only(tmp_runs):
    folder = run(tiny("measure.corr_steps=[3]", "measure.every=steps", "measure.every_steps=5"), RunOptions(tmp_runs, "cpu"))
    npz = np.load(folder / "corr.npz")
    assert set(npz.files) == {"members"} | {f"step_{s}_layer_{l}" for s in (0, 3, 16) for l in (0, 1)}
    assert npz["step_0_layer_0"].shape == (2, 4, 12) and npz["step_16_layer_1"].shape == (2, 6, 18)
    assert npz["step_0_layer_0"].dtype == np.float32
    m = table(folder, "metrics")
    assert sorted(set(m.step)) == [0, 3, 5, 10, 15, 16]
    assert sorted(set(table(folder, "student_nodes").step)) == [0, 3, 16]


# ---- resume, skip, determinism ------------------------------------------------------------------------

RESUME = ("training.momentum=0.9", "training.schedule=cosine", "training.lr=0.1", "measure.every=steps",
          "measure.every_steps=4")


def assert_same_run(a: Path, b: Path) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(table(a, name), table(b, name), check_exact=True)
    za, zb = np.load(a / "corr.npz"), np.load(b / "corr.npz")
    assert za.files == zb.files
    for key in za.files:
        np.testing.assert_array_equal(za[key], zb[key])
    for x, y in zip(weights_at(a, "final"), weights_at(b, "final"), strict=True):
        assert torch.equal(x, y)


def test_interrupted_run_resumes_bit_identical(tmp_path):
    cfg = tiny(*RESUME)
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=12))
    status = json.loads((part / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] == 12
    assert not (part / "metrics.parquet").exists() and not (part / "checkpoints" / "final.pt").exists()
    again = run(cfg, RunOptions(tmp_path / "b", "cpu"))
    assert again == part
    assert json.loads((part / "status.json").read_text())["state"] == "finished"
    assert_same_run(whole, part)


def test_crash_between_measurements_resumes_bit_identical(tmp_path):
    cfg = tiny(*RESUME)
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))

    class Crash(Exception):
        pass

    def crash_at_10(step, total):
        if step == 10:
            raise Crash

    with pytest.raises(Crash):
        run(cfg, RunOptions(tmp_path / "b", "cpu", on_progress=crash_at_10))
    folder = tmp_path / "b" / cfg.run_id
    assert json.loads((folder / "status.json").read_text())["state"] == "running"
    run(cfg, RunOptions(tmp_path / "b", "cpu"))  # resumes from the step-8 measurement
    assert_same_run(whole, folder)


def test_finished_run_is_skipped_and_untouched(tmp_runs):
    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_runs, "cpu"))
    before = file_bytes(folder)
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    calls = []
    again = run(cfg, RunOptions(tmp_runs, "cpu", on_progress=lambda s, t: calls.append(s)))
    assert again == folder and calls == []
    assert file_bytes(folder) == before
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes


def test_force_retrains_to_the_same_tables(tmp_runs):
    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_runs, "cpu"))
    before = {name: table(folder, name) for name in TABLES}
    calls = []
    run(cfg, RunOptions(tmp_runs, "cpu", force=True, on_progress=lambda s, t: calls.append(s)))
    assert calls and calls[-1] == 16
    for name in TABLES:
        pd.testing.assert_frame_equal(table(folder, name), before[name], check_exact=True)


def test_same_config_twice_gives_identical_tables(tmp_path):
    cfg = tiny("training.momentum=0.5")
    a = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    b = run(cfg, RunOptions(tmp_path / "b", "cpu"))
    assert_same_run(a, b)


def test_a_folder_with_a_different_config_is_refused(tmp_runs):
    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_runs, "cpu", max_steps=8))
    stored = json.loads((folder / "config.json").read_text())
    stored["training"]["lr"] = 0.5
    (folder / "config.json").write_text(json.dumps(stored))
    before = file_bytes(folder)
    with pytest.raises(UserError, match="different config"):
        run(cfg, RunOptions(tmp_runs, "cpu"))
    assert file_bytes(folder) == before


def test_a_run_started_by_another_version_is_not_resumed(tmp_runs):
    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_runs, "cpu", max_steps=8))
    meta = json.loads((folder / "meta.json").read_text())
    meta["version"] = "0.0.1"
    (folder / "meta.json").write_text(json.dumps(meta))
    before = file_bytes(folder)
    with pytest.raises(UserError, match="started by teacherstudent 0.0.1") as ei:
        run(cfg, RunOptions(tmp_runs, "cpu"))
    assert "--force" in str(ei.value) and "\n" not in str(ei.value)
    assert file_bytes(folder) == before
    run(cfg, RunOptions(tmp_runs, "cpu", force=True))  # starting again is allowed
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"


def test_no_temporary_files_are_left_behind(store_run, tmp_path):
    cfg = tiny(*RESUME)
    run(cfg, RunOptions(tmp_path, "cpu", max_steps=8))
    run(cfg, RunOptions(tmp_path, "cpu"))
    for root in (store_run, tmp_path):
        leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
        assert leftovers == []


# ---- load_runs --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("two_runs")
    folders = [run(tiny(f"student.multiplier={m}"), RunOptions(root, "cpu")) for m in (2, 3)]
    # an unfinished run in the same root is not part of the results
    run(tiny("student.multiplier=4", "training.epochs=3"), RunOptions(root, "cpu", max_steps=8))
    return root, folders


@pytest.mark.parametrize("name", TABLES)
def test_load_runs_concatenates_finished_runs_with_config_columns(two_runs, name):
    root, folders = two_runs
    df = load_runs(root, table=name)
    parts = [table(f, name) for f in folders]
    assert len(df) == sum(len(p) for p in parts)
    assert set(df.run) == {f.name for f in folders}
    assert {"student.multiplier", "teacher.widths", "training.lr", "inputs.sigma", "name"} <= set(df.columns)
    for f, part, mult in zip(folders, parts, (2, 3)):
        rows = df[df.run == f.name]
        assert set(rows["student.multiplier"]) == {mult}
        assert set(rows["teacher.widths"]) == {"[4, 6]"}
        assert set(rows["training.lr"]) == {0.05}
        pd.testing.assert_frame_equal(rows[part.columns].reset_index(drop=True), part, check_dtype=False)
    bare = load_runs(root, table=name, config=False)
    assert list(bare.columns) == list(parts[0].columns)


def test_load_runs_errors_and_empty_root(tmp_path, two_runs):
    with pytest.raises(UserError, match="unknown table"):
        load_runs(two_runs[0], table="nodes")
    assert load_runs(tmp_path / "nothing").empty
    damaged = tmp_path / "damaged"
    shutil.copytree(two_runs[1][0], damaged / two_runs[1][0].name)
    path = damaged / two_runs[1][0].name / "metrics.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupted"):
        load_runs(damaged)


# ---- bad input and damaged folders: a user error that leaves every file as it was ----------------

@pytest.mark.parametrize("overrides", [
    ("measure.corr_steps=[1000]",),
    ("measure.corr_steps=[-4]",),
    ("training.checkpoint_steps=[1000]",),
    ('training.backend="fast"', "student.batchnorm=true"),
])
def test_run_time_config_errors_leave_no_run_folder(tmp_path, overrides):
    root = tmp_path / "runs"
    with pytest.raises(UserError):
        run(tiny(*overrides), RunOptions(root, "cpu"))
    assert not root.exists() or not any(root.iterdir())


def test_run_time_config_error_in_cli_touches_no_existing_results(finished_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / finished_run.name)
    before = file_bytes(root)
    assert_user_error(invoke("run", "--out", root, "--no-figure", *cli_sets("measure.corr_steps=[1000]")))
    assert file_bytes(root) == before
    assert [p.name for p in root.iterdir()] == [finished_run.name]


def _damaged(finished_run: Path, tmp_path: Path, damage) -> tuple[Path, Path]:
    root = tmp_path / "runs"
    folder = root / finished_run.name
    shutil.copytree(finished_run, folder)
    damage(folder)
    return root, folder


@pytest.mark.parametrize("name,damage", [
    ("config {}", lambda f: (f / "config.json").write_text("{}")),
    ("config list", lambda f: (f / "config.json").write_text("[1, 2]")),
    ("status list", lambda f: (f / "status.json").write_text("[]")),
    ("metrics wrong table", lambda f: shutil.copy(f / "teacher_nodes.parquet", f / "metrics.parquet")),
])
def test_structurally_corrupted_run_folder_is_a_user_error(finished_run, tmp_path, name, damage):
    root, folder = _damaged(finished_run, tmp_path, damage)
    before = file_bytes(root)
    assert_user_error(invoke("show", folder))
    if name != "metrics wrong table":
        assert_user_error(invoke("ls", "--out", root))
    assert_user_error(invoke("run", "--out", root, "--no-figure", *cli_sets()))
    assert file_bytes(root) == before


def test_load_runs_on_structurally_corrupted_config_is_a_user_error(finished_run, tmp_path):
    from teacherstudent.store import load_runs

    root, _ = _damaged(finished_run, tmp_path, lambda f: (f / "config.json").write_text("[1]"))
    with pytest.raises(UserError):
        load_runs(root)


def test_checkpoint_with_wrong_content_is_a_user_error_and_touches_nothing(tmp_path):
    root = tmp_path / "runs"
    folder = run(tiny(), RunOptions(root, "cpu", max_steps=8))
    torch.save({"sim": {"step": 3}}, folder / "checkpoints" / "latest.pt")
    before = file_bytes(root)
    result = invoke("run", "--out", root, "--no-figure", *cli_sets())
    assert_user_error(result)
    assert "latest.pt" in result.stderr
    assert file_bytes(root) == before


def test_out_that_is_a_file_is_a_user_error(tmp_path):
    not_a_dir = tmp_path / "afile"
    not_a_dir.write_text("keep me")
    assert_user_error(invoke("run", "--out", not_a_dir, "--no-figure", *cli_sets()))
    assert not_a_dir.read_text() == "keep me"


def test_atomic_writes_give_files_the_umask_permissions(tmp_path):
    import os

    from teacherstudent.store import write_json

    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600: unreadable to others
