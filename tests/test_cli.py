"""The ``teacherstudent`` command line (typer's CliRunner): happy paths and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from teacherstudent import runtime
from teacherstudent.simulate import RunOptions, run
from teacherstudent_cli.main import app

from conftest import file_bytes, tiny, tiny_overrides

PNG = b"\x89PNG\r\n\x1a\n"


def sets(*overrides: str) -> list[str]:
    return [a for s in tiny_overrides(*overrides) for a in ("--set", s)]


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output without whitespace (rich wraps long lines and paths at the terminal width)."""
    return "".join(text.split())


def assert_user_error(result, *fragments: str) -> str:
    """Exit 2, one line on stderr starting with 'error:', nothing on stdout, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture
def runs_root(tmp_path, finished_run) -> Path:
    """A runs root holding a copy of the session's finished run and an interrupted run."""
    root = tmp_path / "runs"
    shutil.copytree(finished_run, root / finished_run.name)
    run(tiny("training.epochs=3"), RunOptions(root, "cpu", max_steps=8, command=["pytest"]))
    return root


# ---- happy paths -----------------------------------------------------------------------------------

def test_run_prints_the_table_and_folder_and_writes_the_figure(tmp_path):
    out = tmp_path / "runs"
    result = invoke("run", "--out", out, "--device", "cpu", *sets(), "--set", "student.multiplier=2", "--seeds", "4-5")
    assert result.exit_code == 0, result.output
    cfg = tiny("student.multiplier=2", "student.seeds=[4, 5]")
    folder = out / cfg.run_id
    assert json.loads((folder / "config.json").read_text()) == cfg.model_dump(mode="json")
    assert json.loads((folder / "status.json").read_text())["state"] == "finished"
    text = result.stdout
    assert "teacher-node recovery" in text
    header = next(line for line in text.splitlines() if "best corr" in line and "layer" in line)
    assert all(col in header for col in ("min", ">0.95", ">0.9", "matches"))
    table_rows = [line for line in text.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in table_rows] == ["0", "1"]
    assert [r.split("│")[2].strip() for r in table_rows] == ["4", "6"]  # teacher widths
    assert "final loss" in text
    assert "results:" + str(folder) in flat(text)
    assert (folder / "best_corr.png").read_bytes().startswith(PNG)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["version"]
    assert text.splitlines()[0].startswith("threads: ")  # the thread count and why, before anything else

    again = invoke("run", "--out", out, "--device", "cpu", *sets(), "--set", "student.multiplier=2", "--seeds", "4,5")
    assert again.exit_code == 0
    assert "alreadyfinished" in flat(again.stdout) and "teacher-node recovery" in again.stdout


def test_run_from_a_toml_file_without_figure(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('name = "fromfile"\n[student]\nmultiplier = 2\nseeds = [1]\n')
    out = tmp_path / "runs"
    result = invoke("run", path, "--out", out, "--device", "cpu", "--no-figure",
                    *sets("student.multiplier=2", "student.seeds=[1]"))
    assert result.exit_code == 0, result.output
    [folder] = list(out.iterdir())
    assert folder.name.startswith("fromfile-")
    assert not (folder / "best_corr.png").exists()
    assert json.loads((folder / "config.json").read_text())["student"]["seeds"] == [1]


def test_show_ls_and_figure(runs_root, finished_run):
    run_id = finished_run.name
    shown = invoke("show", run_id, "--out", runs_root)
    assert shown.exit_code == 0, shown.output
    assert run_id in flat(shown.stdout) and "teacher-node recovery" in shown.stdout
    assert "results:" + str(runs_root / run_id) in flat(shown.stdout)
    by_prefix = invoke("show", run_id[:14], "--out", runs_root)  # a unique prefix
    assert by_prefix.exit_code == 0 and flat(by_prefix.stdout) == flat(shown.stdout)
    by_path = invoke("show", runs_root / run_id)
    assert by_path.exit_code == 0

    listed = invoke("ls", "--out", runs_root)
    assert listed.exit_code == 0, listed.output
    text = flat(listed.stdout)
    assert run_id in text and "finished" in text and "interrupted" in text and "16/16" in text

    png = runs_root / run_id / "best_corr.png"
    png.unlink(missing_ok=True)
    drawn = invoke("figure", run_id, "--out", runs_root)
    assert drawn.exit_code == 0, drawn.output
    assert png.read_bytes().startswith(PNG)
    assert str(png) in flat(drawn.stdout)


def test_ls_of_an_empty_or_missing_root(tmp_path):
    result = invoke("ls", "--out", tmp_path / "none")
    assert result.exit_code == 0


def all_command_paths() -> list[list[str]]:
    """Every command and sub-command of the app, as argument lists."""
    paths: list[list[str]] = [[]]

    def walk(cmd, prefix: list[str]) -> None:
        if hasattr(cmd, "list_commands"):  # a group (typer vendors its own click classes)
            ctx = type(cmd).context_class(cmd)  # no bare `import click`: typer 0.29 no longer installs it
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                paths.append(prefix + [name])
                walk(sub, prefix + [name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_has_help():
    paths = all_command_paths()
    names = {p[0] for p in paths if p}
    assert {"run", "show", "figure", "ls"} <= names
    for path in paths:
        result = invoke(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.stdout and "--help" in result.stdout


# ---- bad input: exit 2, one line, nothing touched -------------------------------------------------------

BAD_RUNS = {
    "invalid value": (["--set", "student.multiplier=0"], ["student.multiplier"]),
    "unknown key": (["--set", "student.multiplyer=3"], ["student.multiplyer", "unknown key"]),
    "malformed --set": (["--set", "student.multiplier"], ["section.key=value"]),
    "unknown device": (["--device", "tpu"], ["tpu"]),
    "bad seeds": (["--seeds", "3-1"], ["--seeds", "3-1"]),
    "bad seeds word": (["--seeds", "all"], ["--seeds"]),
    "duplicate seeds": (["--seeds", "1,1"], ["student.seeds"]),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_run_input_is_one_line_exit_2_and_touches_nothing(runs_root, case):
    extra, fragments = BAD_RUNS[case]
    before = file_bytes(runs_root)
    # the otherwise valid config of the interrupted run: a working command would resume it
    args = ["run", "--out", runs_root, *sets("training.epochs=3"), *extra]
    if "--device" not in extra:
        args += ["--device", "cpu"]
    assert_user_error(invoke(*args), *fragments)
    assert file_bytes(runs_root) == before


def test_malformed_toml_file(runs_root, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[student\nmultiplier = 3\n")
    before = file_bytes(runs_root)
    assert_user_error(invoke("run", path, "--out", runs_root, "--device", "cpu"), str(path), "TOML")
    assert file_bytes(runs_root) == before


def test_missing_config_file(runs_root, tmp_path):
    before = file_bytes(runs_root)
    assert_user_error(invoke("run", tmp_path / "nope.toml", "--out", runs_root, "--device", "cpu"), "nope.toml")
    assert file_bytes(runs_root) == before


def test_cuda_without_cuda(runs_root, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = file_bytes(runs_root)
    assert_user_error(invoke("run", "--out", runs_root, *sets("training.epochs=3"), "--device", "cuda"), "cuda")
    assert_user_error(invoke("run", "--out", runs_root, *sets("training.epochs=3"), "--device", "cuda:1"), "cuda")
    assert file_bytes(runs_root) == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_run_on_cuda(tmp_path):
    result = invoke("run", "--out", tmp_path, "--device", "cuda", *sets())
    assert result.exit_code == 0, result.output
    [folder] = list(tmp_path.iterdir())
    assert json.loads((folder / "meta.json").read_text())["device"].startswith("cuda")


def test_show_of_a_missing_run(runs_root):
    before = file_bytes(runs_root)
    assert_user_error(invoke("show", "nosuchrun", "--out", runs_root), "nosuchrun")
    assert_user_error(invoke("figure", "nosuchrun", "--out", runs_root), "nosuchrun")
    assert_user_error(invoke("show", "default-", "--out", runs_root), "several")  # ambiguous prefix
    assert file_bytes(runs_root) == before


def test_show_of_an_unfinished_run(runs_root):
    run_id = tiny("training.epochs=3").run_id
    before = file_bytes(runs_root)
    assert_user_error(invoke("show", run_id, "--out", runs_root), "metrics.parquet", "interrupted")
    assert file_bytes(runs_root) == before


@pytest.mark.parametrize("damage", ["truncated metrics", "garbage config", "empty metrics"])
def test_show_of_a_corrupted_run(runs_root, finished_run, damage):
    folder = runs_root / finished_run.name
    if damage == "truncated metrics":
        path = folder / "metrics.parquet"
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "empty metrics":
        (folder / "metrics.parquet").write_bytes(b"")
    else:
        (folder / "config.json").write_text("{ this is not json")
    before = file_bytes(runs_root)
    assert_user_error(invoke("show", finished_run.name, "--out", runs_root), "corrupted")
    if damage == "garbage config":
        assert_user_error(invoke("ls", "--out", runs_root), "corrupted")
    else:  # the figure needs only the metrics
        assert_user_error(invoke("figure", finished_run.name, "--out", runs_root), "corrupted")
    assert file_bytes(runs_root) == before


def test_run_over_a_corrupted_status_is_a_user_error(runs_root, finished_run):
    (runs_root / finished_run.name / "status.json").write_text("garbage")
    before = file_bytes(runs_root)
    assert_user_error(invoke("run", "--out", runs_root, "--device", "cpu", *sets()), "corrupted")
    assert file_bytes(runs_root) == before


# ---- typer's own usage errors: the same one line, with where to read the usage --------------------------

USAGE_ERRORS = {
    "unknown option": (["run", "--bogus"], ["--bogus", "teacherstudent run --help"]),
    "threads 0": (["run", "--threads", "0"], ["--threads", "teacherstudent run --help"]),
    "string for an int": (["run", "--threads", "many"], ["--threads", "integer"]),
    "missing argument": (["show"], ["Missing argument", "teacherstudent show --help"]),
    "missing option value": (["ls", "--out"], ["--out", "teacherstudent ls --help"]),
    "missing required option": (["probe", "lottery", "somerun", "--by", "fanout"], ["--keep", "teacherstudent probe lottery --help"]),
    "unknown command": (["bogus"], ["bogus", "teacherstudent --help"]),
    "unknown sub-command": (["teacher", "bogus"], ["bogus", "teacherstudent teacher --help"]),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_are_one_line_exit_2(tmp_path, case):
    args, fragments = USAGE_ERRORS[case]
    before = file_bytes(tmp_path)
    line = assert_user_error(invoke(*args), *fragments)
    assert "╭" not in line and "Usage:" not in line
    assert file_bytes(tmp_path) == before


def test_no_arguments_still_prints_the_help():
    result = invoke()
    assert result.exit_code == 2
    assert "Usage" in result.output and "run" in result.output


# ---- help is instant: no heavy imports before a command runs ---------------------------------------

HEAVY = ("torch", "pandas", "numpy", "matplotlib", "seaborn", "teacherstudent")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_importing_the_cli_imports_nothing_heavy():
    res = run_python("import sys, teacherstudent_cli.main\n"
                     f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_run_help_in_a_subprocess_names_the_sections_and_loads_no_torch():
    code = ("import sys\nfrom teacherstudent_cli.main import app\n"
            "try:\n    app(['run', '--help'], prog_name='teacherstudent')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch imported for --help'\n")
    res = run_python(code, COLUMNS="200")
    assert res.returncode == 0, res.stderr
    for section in ("[teacher]", "[inputs]", "[student]", "[training]", "[measure]"):
        assert section in res.stdout, res.stdout
    assert "Usage: teacherstudent run" in res.stdout


def test_the_console_script_answers_help():
    script = Path(sys.executable).with_name("teacherstudent")
    if not script.exists():
        pytest.skip("console script not installed next to this python")
    res = subprocess.run([str(script), "run", "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    assert "[teacher]" in res.stdout


# ---- figures: no global backend switch ------------------------------------------------------------

def test_figures_leave_matplotlib_backend_alone(finished_run, tmp_path):
    png = tmp_path / "fig.png"
    code = ("import matplotlib\nfrom pathlib import Path\nimport teacherstudent.figures as f\n"
            "assert matplotlib.get_backend() == 'template', matplotlib.get_backend()\n"
            f"f.plot_best_corr(Path({str(finished_run)!r}), Path({str(png)!r}))\n"
            "assert matplotlib.get_backend() == 'template', matplotlib.get_backend()\n"
            "import matplotlib.pyplot as plt\nassert plt.get_fignums() == [], plt.get_fignums()\n")
    res = run_python(code, MPLBACKEND="template")
    assert res.returncode == 0, res.stderr
    assert png.read_bytes().startswith(PNG)


# ---- threads: a sane default on a busy machine, said in the run's first line ---------------------------

@pytest.fixture
def machine(monkeypatch):
    """Set the machine's load and core count seen by teacherstudent.runtime: machine(load, cpus)."""
    def set_(load, cpus):
        def getloadavg():
            if load is None:
                raise OSError("no load average")
            return (load, load, load)
        monkeypatch.setattr(runtime.os, "getloadavg", getloadavg)
        monkeypatch.setattr(runtime.os, "cpu_count", lambda: cpus)
    return set_


def test_choose_threads_keeps_torch_default_on_an_idle_machine(machine, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    machine(0.2, 8)
    assert runtime.choose_threads(None) == (4, "torch default")
    machine(4.4, 8)  # 4 cores free: still enough for 4 threads
    assert runtime.choose_threads(None) == (4, "torch default")
    machine(None, 8)  # no load average on this OS
    assert runtime.choose_threads(None) == (4, "torch default")


def test_choose_threads_caps_on_a_busy_machine(machine, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    machine(6.0, 8)
    assert runtime.choose_threads(None) == (2, "machine busy: load 6.0 on 8 cores")
    machine(3.1, 2)
    assert runtime.choose_threads(None) == (1, "machine busy: load 3.1 on 2 cores")
    machine(50.0, 8)  # never below one thread
    assert runtime.choose_threads(None)[0] == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    machine(0.8, 2)  # less than one core's worth of load (e.g. a job that just ended): not busy
    assert runtime.choose_threads(None) == (2, "torch default")


def test_choose_threads_honours_a_request(machine):
    machine(50.0, 2)
    assert runtime.choose_threads(3) == (3, "--threads")
    with pytest.raises(Exception, match="at least 1"):
        runtime.choose_threads(0)


def test_run_says_and_applies_the_thread_count_then_restores_it(tmp_path, machine, monkeypatch):
    seen = []
    real = run

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr("teacherstudent.simulate.run", spy)
    before = torch.get_num_threads()
    machine(1000.0, 2)  # badly oversubscribed
    result = invoke("run", "--out", tmp_path, "--device", "cpu", "--no-figure", *sets())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "threads: 1 (machine busy: load 1000.0 on 2 cores)"
    assert seen == [1]
    assert torch.get_num_threads() == before

    forced = invoke("run", "--out", tmp_path / "b", "--device", "cpu", "--no-figure", "--threads", "2", *sets())
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.splitlines()[0] == "threads: 2 (--threads)"
    assert seen == [1, 2] and torch.get_num_threads() == before


def test_provenance_never_fails_and_names_its_sources(monkeypatch, tmp_path):
    p = runtime.provenance()
    assert {"date", "git_commit", "python", "torch", "numpy", "threads", "host", "platform"} <= set(p)
    assert p["date"].endswith("+00:00") and p["torch"] == torch.__version__ and p["threads"] >= 1
    assert p["git_commit"] is None or len(p["git_commit"]) == 40
    assert runtime.git_commit(tmp_path / "pkg") == (None, None)  # not a checkout
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert runtime.provenance()["git_commit"] == p["git_commit"]  # asked again at once: the answer is reused
    monkeypatch.setattr(runtime, "GIT_CACHE_S", 0.0)
    assert runtime.provenance()["git_commit"] is None


# ---- ls: differing config fields, filters -------------------------------------------------------------

def ls_rows(result) -> dict[str, list[str]]:
    """run id -> the row's cells (rich table rows)."""
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines() if line.startswith("│")]
    return {r[0]: r for r in rows}


def ls_header(result) -> list[str]:
    line = next(line for line in result.stdout.splitlines() if "state" in line and "members" in line)
    return [c.strip() for c in line.split("┃")[1:-1]]


def test_ls_shows_only_the_fields_that_differ(runs_root, finished_run):
    listed = invoke("ls", "--out", runs_root)
    assert listed.exit_code == 0, listed.output
    header = ls_header(listed)
    assert header[:4] == ["run", "state", "members", "step"]
    assert header[4:] == ["training.epochs"]  # the only field in which the two runs differ
    rows = ls_rows(listed)
    interrupted = tiny("training.epochs=3").run_id
    assert rows[finished_run.name][4] != "3" and rows[interrupted][4] == "3"

    shutil.rmtree(runs_root / interrupted)
    alone = invoke("ls", "--out", runs_root)
    assert ls_header(alone) == ["run", "state", "members", "step"]  # nothing differs from nothing


def test_ls_where_filters_by_config_fields(runs_root, finished_run):
    interrupted = tiny("training.epochs=3").run_id
    only = invoke("ls", "--out", runs_root, "--where", "training.epochs=3")
    assert only.exit_code == 0, only.output
    assert list(ls_rows(only)) == [interrupted]
    assert "training.epochs" not in ls_header(only)  # one run: nothing differs

    both = invoke("ls", "--out", runs_root, "--where", "teacher.widths=[4, 6]", "--where", "student.multiplier=3")
    assert sorted(ls_rows(both)) == sorted([finished_run.name, interrupted])
    assert list(ls_rows(invoke("ls", "--out", runs_root, "--where", "teacher.widths=[4,6]", "--where", "training.epochs=3"))) == [interrupted]
    none = invoke("ls", "--out", runs_root, "--where", "student.multiplier=99")
    assert none.exit_code == 0 and ls_rows(none) == {}


def test_ls_where_bad_input(runs_root):
    before = file_bytes(runs_root)
    assert_user_error(invoke("ls", "--out", runs_root, "--where", "training.epoch=3"), "training.epoch", "training.epochs")
    assert_user_error(invoke("ls", "--out", runs_root, "--where", "student.multiplier"), "section.field=value")
    assert_user_error(invoke("ls", "--out", runs_root, "--where", "nosuch.thing=1"), "nosuch.thing")
    assert file_bytes(runs_root) == before
