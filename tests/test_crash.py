"""Crash consistency: SIGKILL a run, a probe and a named experiment at random points, resume, compare.

Each scenario runs in a subprocess that kills itself with SIGKILL inside its N-th atomic write
(``TEACHERSTUDENT_CRASH_AT_WRITE=N``: half the bytes are in the temporary file, as after a
power cut), or is killed from outside after a random delay. The same command then runs again
(resuming), as often as it takes to finish. The finished folders must equal an uninterrupted
run's bit for bit (every table, ``corr.npz``, every checkpoint's weights, ``probe.pt``), and no
temporary file (``.*.tmp``) may be left anywhere in the run store.

``TS_LONG_TESTS=1``: more kill points per scenario (see RELIABILITY.md).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from teacherstudent.store import CRASH_ENV, TEMP_GLOB

from conftest import tiny

LONG = os.environ.get("TS_LONG_TESTS") == "1"
REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
CFG = ("training.epochs=2", "measure.every=steps", "measure.every_steps=4", "measure.corr_steps=[8]",
       "training.checkpoint_steps=[8]")
KILLS: Counter = Counter()  # scenario -> kills, resumed bit-identical

PRELUDE = f"""
import sys
sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]
from pathlib import Path
from conftest import tiny
root = Path(sys.argv[1])
cfg = tiny(*{CFG!r})
"""
SCRIPTS = {
    "run": PRELUDE + "from teacherstudent.simulate import RunOptions, run\nrun(cfg, RunOptions(root, 'cpu'))\n",
    "probe": PRELUDE + ("from teacherstudent.probes import run_lottery\n"
                        "run_lottery(root / cfg.run_id, {'keep': 0.5, 'by': 'fanout'}, root=root, device='cpu')\n"),
    "experiment": PRELUDE + ("from teacherstudent.experiments import StudyOptions, run_named\n"
                             "run_named('tinyexp', StudyOptions(root, 'cpu', root=Path(sys.argv[2])))\n"),
}
EXPERIMENT = '''"""Two tiny arms (crash test)."""
from teacherstudent.summary import read_table


def arms(base):
    return {"m2": base.replace(student={"multiplier": 2}), "m3": base}


def tables(runs):
    import pandas as pd
    return {"losses": pd.DataFrame([{"arm": a, "rows": len(read_table(f, "metrics"))} for a, f in runs.items()])}
'''


def _env(crash_at: int | None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(CRASH_ENV, None)
    if crash_at is not None:
        env[CRASH_ENV] = str(crash_at)
    return env


def launch(kind: str, root: Path, expdir: Path, crash_at: int | None = None, kill_after: float | None = None) -> int:
    """Run the scenario's script once; returns its exit code (-9: killed)."""
    p = subprocess.Popen([sys.executable, "-c", SCRIPTS[kind], str(root), str(expdir)], env=_env(crash_at),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            p.wait(kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=300)
    assert p.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
    return p.returncode


def count_writes(kind: str, root: Path, expdir: Path) -> int:
    """Atomic writes of an uninterrupted run of the scenario, counted in this process."""
    import teacherstudent.folder as store
    from teacherstudent.experiments import StudyOptions, run_named
    from teacherstudent.probes import run_lottery
    from teacherstudent.simulate import RunOptions, run

    old = os.environ.get(CRASH_ENV)
    os.environ[CRASH_ENV] = str(10**12)
    store._writes = 0
    try:
        cfg = tiny(*CFG)
        if kind == "run":
            run(cfg, RunOptions(root, "cpu"))
        elif kind == "probe":
            run_lottery(root / cfg.run_id, {"keep": 0.5, "by": "fanout"}, root=root, device="cpu")
        else:
            run_named("tinyexp", StudyOptions(root, "cpu", root=expdir))
        return store._writes
    finally:
        store._writes = 0
        if old is None:
            os.environ.pop(CRASH_ENV, None)
        else:
            os.environ[CRASH_ENV] = old


def files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_results(a: Path, b: Path) -> None:
    """Every result file equal: tables as frames (exactly), npz arrays, checkpoint tensors; JSON by content."""
    fa, fb = files(a), files(b)
    skip = ("meta.json", "status.json", "study.json")  # dates, durations, command lines, what this invocation did
    assert {k for k in fa if not k.endswith(skip)} == {k for k in fb if not k.endswith(skip)}
    for k, p in fa.items():
        q = fb[k] if k in fb else None
        if k.endswith(skip):
            continue
        if k.endswith(".parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(p), pd.read_parquet(q), check_exact=True)
        elif k.endswith(".npz"):
            with np.load(p) as x, np.load(q) as y:
                assert x.files == y.files
                for n in x.files:
                    assert np.array_equal(x[n], y[n], equal_nan=True), (k, n)
        elif k.endswith(".pt"):
            _same_obj(torch.load(p, weights_only=False), torch.load(q, weights_only=False), k)
        elif k.endswith(".csv") or k.endswith(".json"):
            assert p.read_bytes() == q.read_bytes(), k
    for k in fa:
        if k.endswith("status.json"):
            assert '"finished"' in fa[k].read_text(), k


def _same_obj(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert torch.equal(x, y) or (x.is_floating_point() and torch.equal(x.nan_to_num(7.0), y.nan_to_num(7.0))), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            _same_obj(x[k], y[k], f"{where}:{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _same_obj(u, v, f"{where}[{i}]")
    else:
        assert x == y or (x != x and y != y), where


@pytest.fixture
def parent_root(tmp_path_factory) -> Path:
    """A finished parent run of ``CFG`` (the probe scenario's starting point)."""
    from teacherstudent.simulate import RunOptions, run

    root = tmp_path_factory.mktemp("crash_parent")
    run(tiny(*CFG), RunOptions(root, "cpu"))
    return root


@pytest.mark.parametrize("kind,kills", [("run", 4), ("probe", 2), ("experiment", 2)])
def test_sigkill_at_random_points_resumes_bit_identical(tmp_path, parent_root, kind, kills):
    kills = kills * 4 if LONG else kills
    expdir = tmp_path / "exp"
    expdir.mkdir()
    (expdir / "tinyexp.py").write_text(EXPERIMENT)
    (expdir / "tinyexp.toml").write_text("\n".join(["[teacher]", "widths = [4, 6]", "outputs = 10",
                                                    "reference_samples = 2000", "[student]", "multiplier = 3",
                                                    "seeds = [0, 1]", "[inputs]", "train_samples = 512",
                                                    "eval_samples = 256", "[training]", "epochs = 2", ""]))
    ref, crashed = tmp_path / "ref", tmp_path / "crashed"
    if kind == "probe":
        shutil.copytree(parent_root, ref)
        shutil.copytree(parent_root, crashed)
    writes = count_writes(kind, ref, expdir)
    rng = random.Random(f"{kind}-{kills}")
    # kill points: the first write, then random writes (each process counts its own writes from 1, so a
    # resumed process gets a point within its share of the rest) and one by the clock
    share = max(2, writes // kills)
    points: list[tuple[str, float]] = [("write", 1)] + [("write", rng.randint(2, share)) for _ in range(kills - 2)]
    writes_points = len(points)
    # last: on a fast, idle machine the whole remaining run may finish before the clock kill
    points.append(("time", rng.uniform(2.0, 5.0)))
    killed = 0
    for how, at in points:
        if how == "write":
            rc = launch(kind, crashed, expdir, crash_at=int(at))
        else:
            rc = launch(kind, crashed, expdir, kill_after=at)
        killed += rc == -signal.SIGKILL
    while launch(kind, crashed, expdir) != 0:  # the same command resumes (finishes) the run
        pass
    assert killed >= max(1, writes_points - 1), "the kills inside writes must actually kill"
    assert not list(crashed.rglob(TEMP_GLOB)), sorted(map(str, crashed.rglob(TEMP_GLOB)))
    assert_same_results(ref, crashed)
    KILLS[kind] += killed


def test_temp_files_of_a_dead_writer_go_when_the_run_is_opened_again(tmp_path):
    """A leftover ``.name.XXXX.tmp`` in the folder and in checkpoints/ is removed by the next run of it."""
    from teacherstudent.simulate import RunOptions, run

    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_path, "cpu", max_steps=8))
    for p in (folder / ".status.json.ab12.tmp", folder / "checkpoints" / ".latest.pt.cd34.tmp",
              folder / "parts" / ".metrics-000000000012.parquet.ef56.tmp"):
        p.write_bytes(b"half")
    run(cfg, RunOptions(tmp_path, "cpu"))
    assert not list(tmp_path.rglob(TEMP_GLOB))


def test_disk_full_mid_run_is_one_line_exit_1_and_the_same_command_resumes(tmp_path, monkeypatch):
    """A write that fails with ENOSPC: one line naming the file, exit 1, status ``interrupted``; once the
    disk has room again the same command finishes the run, bit-identical to an uninterrupted one."""
    import errno
    import json

    from typer.testing import CliRunner

    import teacherstudent.folder as store
    from teacherstudent.simulate import RunOptions, run
    from teacherstudent_cli.main import app

    from conftest import tiny_overrides

    args = ["run", "--out", tmp_path / "runs", "--device", "cpu", "--no-figure",
            *[a for s in tiny_overrides(*CFG) for a in ("--set", s)]]
    real, calls = os.fsync, {"n": 0}

    def full_after_ten(fd):  # every atomic write ends in fsync: from the 11th on the disk is full
        calls["n"] += 1
        if calls["n"] > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(store.os, "fsync", full_after_ten)
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "No space left on device" in lines[0], res.stderr
    import re

    assert re.search(r"cannot write \S+ \([\d.]+ (bytes|KiB|MiB)\)", lines[0]) and "run the same command again" in lines[0]
    folder = tmp_path / "runs" / tiny(*CFG).run_id
    assert json.loads((folder / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.setattr(store.os, "fsync", real)  # space freed
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    assert not list(folder.rglob(TEMP_GLOB))
    ref = run(tiny(*CFG), RunOptions(tmp_path / "ref", "cpu"))
    assert_same_results(ref.parent, folder.parent)


def test_zz_report_kills():
    for kind, n in sorted(KILLS.items()):
        print(f"crash {kind}: {n} kills, resumed bit-identical, 0 temporary files left")
