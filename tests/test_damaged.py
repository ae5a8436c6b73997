"""Damaged run folders: every reader names the file and what to do (exit 2); ``verify`` finds and repairs.

Damage kinds: truncated, garbage, empty, missing, wrong schema (another table's / array's
content), applied to each result file of a finished run. Readers: ``show``, ``figure``, ``ls``,
``load_runs``, the probes (``lottery``, ``reinit``, ``show``) and the named experiments'
``read_table``. Nothing is ever changed by a reader.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from teacherstudent.errors import UserError
from teacherstudent.store import DamagedRunWarning, load_runs
from teacherstudent.summary import read_table
from teacherstudent.verify import check_run, verify
from teacherstudent_cli.main import app

from conftest import file_bytes

FILES = ["metrics.parquet", "teacher_nodes.parquet", "student_nodes.parquet", "corr.npz"]
KINDS = ["truncated", "garbage", "empty", "missing", "wrong schema"]
DETECTED: set = set()


def damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "missing":
        path.unlink()
    elif path.suffix == ".parquet":  # another table's content
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(path)
    else:
        np.savez(path.with_suffix(""), junk=np.zeros(3))  # np.savez adds .npz


def one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def copy(tmp_path, finished_run) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / finished_run.name)
    return root / finished_run.name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", FILES)
def test_every_reader_names_the_damaged_file(copy, name, kind):
    root = copy.parent
    damage(copy / name, kind)
    before = file_bytes(root)
    readers = {"probe lottery": ("probe", "lottery", copy.name, "--keep", "0.5", "--by", "fanout", "--out", root,
                                 "--device", "cpu"),
               "probe reinit": ("probe", "reinit", copy.name, "--out", root, "--device", "cpu"),
               "probe show": ("probe", "show", copy.name, "--out", root)}
    if name == "metrics.parquet":
        readers.update({"show": ("show", copy), "figure": ("figure", copy)})
    elif name == "teacher_nodes.parquet":
        readers["show"] = ("show", copy)
    for what, args in readers.items():
        line = one_line_error(invoke(*args), name)
        assert "verify" in line or "delete" in line or "run again" in line, (what, line)  # says what to do
    if name.endswith(".parquet"):
        with pytest.raises(UserError, match=name):
            read_table(copy, name.removesuffix(".parquet"))  # the named experiments read tables through it
        with pytest.raises(UserError, match=name):
            load_runs(root, name.removesuffix(".parquet"), strict=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert load_runs(root, name.removesuffix(".parquet")).empty
        assert any(issubclass(w.category, DamagedRunWarning) and copy.name in str(w.message) for w in caught)
    assert invoke("ls", "--out", root).exit_code == 0  # ls reads configs and status only
    rc = check_run(copy)
    assert rc.action == "redo" and any(name in p for p in rc.problems), rc
    assert file_bytes(root) == before
    DETECTED.add((name, kind))


@pytest.mark.parametrize("name,content", [("config.json", b"{ not json"), ("config.json", b"[1]"),
                                          ("status.json", b"garbage"), ("meta.json", b"")])
def test_damaged_json_is_one_line_for_readers(copy, name, content):
    (copy / name).write_bytes(content)
    before = file_bytes(copy.parent)
    if name == "meta.json":  # show and the probes do not read it; verify does
        assert any("meta.json" in p for p in check_run(copy).problems)
    else:
        one_line_error(invoke("show", copy), name)
        one_line_error(invoke("probe", "show", copy.name, "--out", copy.parent))
    assert file_bytes(copy.parent) == before
    DETECTED.add((name, "garbage"))


def test_verify_repairs_a_damaged_run_bit_identical(copy, finished_run):
    root = copy.parent
    damage(copy / "metrics.parquet", "garbage")
    damage(copy / "checkpoints" / "final.pt", "truncated")
    (copy / "checkpoints" / ".latest.pt.x1y2.tmp").write_bytes(b"half")
    res = invoke("verify", root)
    assert res.exit_code == 2 and "metrics.parquet" in res.stdout and "final.pt" in res.stdout
    res = invoke("verify", root, "--repair")
    assert res.exit_code == 0, res.output
    assert "repaired" in res.stdout
    for t in ("metrics", "teacher_nodes", "student_nodes"):
        pd.testing.assert_frame_equal(pd.read_parquet(copy / f"{t}.parquet"),
                                      pd.read_parquet(finished_run / f"{t}.parquet"), check_exact=True)
    assert not list(root.rglob(".*.tmp"))
    assert invoke("verify", root).exit_code == 0


def test_verify_says_what_it_cannot_repair(copy, tmp_path):
    root = copy.parent
    other = root / (copy.name.split("-")[0] + "-0123456789")
    shutil.copytree(copy, other)  # the config hash does not match the folder name
    (copy / "config.json").write_text("{}")
    before = file_bytes(root)
    res = invoke("verify", root, "--repair")
    assert res.exit_code == 2
    assert "config hash does not match" in res.stdout and "config.json" in res.stdout
    assert res.stdout.count("cannot") >= 2
    assert file_bytes(root) == before


def test_verify_resumes_an_interrupted_run_with_a_damaged_status(tmp_path):
    from teacherstudent.simulate import RunOptions, run

    from conftest import tiny

    folder = run(tiny(), RunOptions(tmp_path, "cpu", max_steps=8))
    (folder / "status.json").write_text("garbage")
    [rc] = verify(tmp_path, repair=True)
    assert rc.repaired.startswith("resumed") and not rc.problems and rc.state == "finished"


def test_zz_report_damage_kinds():
    print(f"damaged: {len(DETECTED)} (file, kind) pairs detected by every reader: "
          + ", ".join(sorted({k for _, k in DETECTED})))
