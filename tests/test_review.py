"""Review findings: bad input that left junk or tracebacks, NaN runs, corrupted run folders, devices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from teacherstudent_cli.main import app
from teacherstudent.config import load_config
from teacherstudent.errors import UserError
from teacherstudent.simulate import pick_device, run_experiment

from conftest import file_bytes, tiny, tiny_overrides


def sets(*overrides: str) -> list[str]:
    return [a for s in tiny_overrides(*overrides) for a in ("--set", s)]


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_user_error(result) -> None:
    """Exit 2, one 'error:' line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


# ---- bad config values detected only when the run starts: no junk run folder -------------------------

@pytest.mark.parametrize("overrides", [
    ("measure.corr_steps=[1000]",),
    ("measure.corr_steps=[-4]",),
    ("training.checkpoint_steps=[1000]",),
    ('training.backend="fast"', "student.batchnorm=true"),
])
def test_run_time_config_errors_leave_no_run_folder(tmp_path, overrides):
    root = tmp_path / "runs"
    with pytest.raises(UserError):
        run_experiment(tiny(*overrides), root, device="cpu")
    assert not root.exists() or not any(root.iterdir())


def test_run_time_config_error_in_cli_touches_no_existing_results(finished_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / finished_run.name)
    before = file_bytes(root)
    assert_user_error(invoke("run", "--out", root, "--no-figure", *sets("measure.corr_steps=[1000]")))
    assert file_bytes(root) == before
    assert [p.name for p in root.iterdir()] == [finished_run.name]


# ---- non-finite and out-of-range config values ------------------------------------------------------

@pytest.mark.parametrize("override", [
    "inputs.sigma=inf", "training.lr=inf", "teacher.strength_decay=inf", "training.gamma=inf",
    "training.betas=[1.5, 0.9]", "training.betas=[0.9, -0.1]", "training.betas=[nan, 0.9]",
    "student.seeds=[100000000000000000000000]", "teacher.seed=100000000000000000000000",
    "inputs.seed=-100000000000000000000000",
])
def test_nonsense_values_are_config_errors(override):
    with pytest.raises(UserError, match="invalid config"):
        load_config(None, tiny_overrides(override))


def test_adam_bad_betas_is_one_line_in_cli(tmp_path):
    assert_user_error(invoke("run", "--out", tmp_path, "--no-figure", *sets('training.optimizer="adam"', "training.betas=[1.5, 0.9]")))
    assert not (tmp_path / "default").exists() and list(tmp_path.iterdir()) == []


# ---- a run whose members all diverged still ends with its table --------------------------------------

def test_all_members_diverged_run_shows_its_table(tmp_path):
    diverges = "teacher.widths=[20]"  # lr 0.05 is too much for this one-layer teacher: every weight becomes NaN
    result = invoke("run", "--out", tmp_path, "--no-figure", *sets(diverges))
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


# ---- corrupted run folders: one line, exit 2, nothing modified --------------------------------------

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
    assert_user_error(invoke("run", "--out", root, "--no-figure", *sets()))
    assert file_bytes(root) == before


def test_load_runs_on_structurally_corrupted_config_is_a_user_error(finished_run, tmp_path):
    from teacherstudent.store import load_runs

    root, _ = _damaged(finished_run, tmp_path, lambda f: (f / "config.json").write_text("[1]"))
    with pytest.raises(UserError):
        load_runs(root)


def test_checkpoint_with_wrong_content_is_a_user_error_and_touches_nothing(tmp_path):
    root = tmp_path / "runs"
    folder = run_experiment(tiny(), root, device="cpu", max_steps=8)
    torch.save({"sim": {"step": 3}}, folder / "checkpoints" / "latest.pt")
    before = file_bytes(root)
    result = invoke("run", "--out", root, "--no-figure", *sets())
    assert_user_error(result)
    assert "latest.pt" in result.stderr
    assert file_bytes(root) == before


def test_out_that_is_a_file_is_a_user_error(tmp_path):
    not_a_dir = tmp_path / "afile"
    not_a_dir.write_text("keep me")
    assert_user_error(invoke("run", "--out", not_a_dir, "--no-figure", *sets()))
    assert not_a_dir.read_text() == "keep me"


# ---- devices --------------------------------------------------------------------------------------

def test_cuda_index_and_spelling_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("cuda:0") == torch.device("cuda:0")
    assert pick_device("cuda") == torch.device("cuda")
    for bad in ("cuda:3", "cuda:x", "cuda:-1"):
        with pytest.raises(UserError):
            pick_device(bad)


# ---- atomic writes keep ordinary file permissions ------------------------------------------------

def test_atomic_writes_give_files_the_umask_permissions(tmp_path):
    import os

    from teacherstudent.store import write_json

    mask = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600: unreadable to others
