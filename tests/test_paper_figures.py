"""The paper figures (``teacherstudent figures``): every figure drawn from small synthetic tables
with its CSV checked against what is on the axes, determinism, the quick mechanism, one
tiny end-to-end build, the report pages opened in headless Chromium, and the CLI's errors."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, assert_user_error, file_bytes, invoke, toml_literal

from teacherstudent.errors import UserError
from teacherstudent.experiments import StudyOptions, base_config, default_root, list_experiments, plan_study
from teacherstudent.figures import plotted, render, save_figure_files
from teacherstudent.paper import all_figures, build_figures, resolve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---- synthetic experiment tables (no training) ----------------------------------------------

def synthetic_tables(seed: int = 0) -> dict[str, dict[str, pd.DataFrame]]:
    """Every table the figures read, with the experiments' columns and made-up values."""
    rng = np.random.default_rng(seed)
    members, layers, epochs = (0, 1), (0, 1, 2), (0.0, 1.0, 2.0, 4.0)
    curves = pd.DataFrame([{"arm": a, "member": k, "step": int(e * 10), "epoch": e, "layer": l,
                            "best_corr_mean": min(1.0, 0.4 + 0.15 * e / (1 + l) + 0.01 * k),
                            "recovered_frac": min(1.0, e / 4)}
                           for a in ("plain", "batchnorm") for k in members for l in layers for e in epochs])
    ranks = pd.DataFrame([{"arm": a, "member": k, "layer": l, "teacher_node": t, "step": int(e * 10), "epoch": e,
                           "winner_rank_pct": float(rng.uniform(1, 60) / (1 + e))}
                          for a in ("plain", "batchnorm") for k in members for l in layers for t in range(5)
                          for e in epochs])
    nodes = pd.DataFrame([{"arm": a, "member": k, "layer": l, "student_node": j, "step": int(e * 10), "epoch": e,
                           "best_corr": float(rng.uniform()), "fanout_norm": float(rng.uniform(0.01, 2))}
                          for a in ("plain", "batchnorm") for k in members for l in layers for j in range(12)
                          for e in epochs]
                         + [{"arm": "long", "member": k, "layer": l, "student_node": j, "step": 400, "epoch": 40.0,
                             "best_corr": c, "fanout_norm": 1.0 if c > 0.9 else 0.01}
                            for k in members for l in layers for j, c in enumerate(np.linspace(0, 1, 12))])
    recovered = pd.DataFrame([{"student.multiplier": m, "arm": a, "member": k, "step": 40 * (1 + 3 * (a == "long")),
                               "layer": l, "recovered_frac": min(1.0, 0.1 * m / (1 + l) + 0.05 * k + 0.1 * (a == "long")),
                               "best_corr_mean": 0.9}
                              for m in (1, 2, 5, 10, 20) for a in ("deep", "long") for k in members for l in layers])
    sd_nodes = pd.DataFrame([{"arm": f"p{p:g}", "p": p, "member": k, "layer": l, "teacher_node": t,
                              "strength_rank": t + 1, "step_corr_0.9": None if (t == 4 and k == 1) else 10 * (t + 1) * (1 + p),
                              "final_corr": 0.9}
                             for p in (0.0, 1.0, 2.0) for k in members for l in (0, 1) for t in range(5)])
    sd_nodes["step_corr_0.9"] = sd_nodes["step_corr_0.9"].astype("Int64")
    sd_summary = pd.DataFrame([{"arm": f"p{p:g}", "p": p, "layer": l, "rho_rank_step": 0.2 * p}
                               for p in (0.0, 1.0, 2.0) for l in (0, 1)])
    success = pd.DataFrame([{"p": p, "multiplier": m, "epoch": e, "recovered_of_10": min(10.0, m + 4 - p + e / 8),
                             "min": min(10.0, m + 3 - p), "max": min(10.0, m + 5 - p), "teachers": 2}
                            for p in (0.0, 1.0, 2.0) for m in (1, 2, 5) for e in (4.0, 8.0)]
                           + [{"p": p, "multiplier": m, "epoch": 5.0, "recovered_of_10": np.nan, "min": np.nan,
                               "max": np.nan, "teachers": 0}  # a run shorter than 5 epochs: an empty row
                              for p in (0.0, 1.0, 2.0) for m in (1, 2, 5)])
    svr_nodes = pd.DataFrame([{"arm": a, "member": k, "layer": l, "teacher_node": t,
                               "match_count": int(rng.integers(0, 14 if a == "structured" else 3))}
                              for a in ("structured", "permuted", "wide") for k in members for l in (0, 1)
                              for t in range(6)])
    svr_summary = pd.DataFrame([{"arm": a, "layer": l, "train_loss": 0.1 * (i + 1), "eval_loss": 0.2 * (i + 1)}
                                for i, a in enumerate(("structured", "permuted", "wide")) for l in (0, 1)])
    fan = pd.DataFrame([{"member": k, "layer": 0, "student_node": j, "step": s, "group": "lucky" if j < 4 else "other",
                         "fanout_norm": 1.0 if j < 4 else float(10 ** (-np.log10(s + 1)) * rng.uniform(0.5, 1)),
                         "best_corr": 0.9}
                        for k in members for j in range(8) for s in (0, 10, 100, 1000)])
    lottery = pd.DataFrame([{"keep": 1.0, "arm": "full", "member": k, "eval_loss": 0.1 + 0.01 * k, "train_loss": 0.1,
                             "winners_kept_frac": np.nan} for k in members]
                           + [{"keep": keep, "arm": arm, "member": k, "eval_loss": 0.2 + i * 0.05 + 0.01 * k - keep / 10,
                               "train_loss": 0.2, "winners_kept_frac": min(1.0, 3 * keep) if arm != "random" else keep}
                              for keep in (0.1, 0.3) for i, arm in enumerate(("rewind", "rescaled", "late", "reinit", "random"))
                              for k in members])
    return {"deep_dynamics": {"curves": curves, "ranks": ranks, "nodes": nodes},
            "lottery_tickets": {"members": lottery},
            "overparam": {"recovered": recovered},
            "strength_decay": {"nodes": sd_nodes, "summary": sd_summary},
            "specialization_two_layer": {"success": success},
            "structured_vs_random": {"nodes": svr_nodes, "summary": svr_summary},
            "fanout_curves": {"curves": fan}}


def assert_csv_is_plotted(csv: Path, fig) -> None:
    """Every row of the figure's CSV is drawn on its panel, and everything drawn is in the CSV."""
    data = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    drawn = plotted(fig)
    assert len(drawn) == len(data) > 0
    for (panel, series), d in data.groupby(["panel", "series"], sort=False):
        got = drawn[(drawn.panel == panel) & (drawn.series == series)]
        assert len(got) == len(d), (panel, series)
        assert (got.kind == d.kind.iloc[0]).all()
        np.testing.assert_allclose(got.y.to_numpy(), d.y.to_numpy(), rtol=1e-5)
        if d.kind.iloc[0] == "bar":  # side by side: the drawn centre is within half a bin of x
            assert np.all(np.abs(got.x.to_numpy() - d.x.to_numpy()) < 0.5 * max(np.diff(sorted(set(d.x))), default=1))
        else:
            np.testing.assert_allclose(got.x.to_numpy(), d.x.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("key", list(all_figures()))
def test_each_figure_draws_exactly_the_numbers_in_its_csv(key, tmp_path):
    module = all_figures()[key]
    tables = synthetic_tables()
    df = module.data(tables)
    assert list(df.columns) == ["panel", "series", "kind", "x", "y", "lo", "hi", "xtick"]
    fig = render(df, module.PANELS, module.TITLE)
    png, pdf, csv = save_figure_files(fig, tmp_path / key, df)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert_csv_is_plotted(csv, fig)
    for ax in fig.axes:
        if ax.get_visible():
            assert ax.get_xlabel() and ax.get_ylabel() and (ax.get_legend() is not None or fig.legends)
    measured, holds = module.verdict(tables)
    assert isinstance(holds, bool) and re.search(r"\d", measured)


@pytest.mark.parametrize("key", list(all_figures()))
def test_legends_cover_no_axes_and_each_layer_keeps_its_colour(key):
    import matplotlib as mpl

    from teacherstudent.figures import theme

    module = all_figures()[key]
    fig = render(module.data(synthetic_tables()), module.PANELS, module.TITLE)
    renderer = fig.canvas.get_renderer()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    assert legends
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (key, ax.get_title())
    palette = theme()["axes.prop_cycle"].by_key()["color"]
    for ax in axes:
        for line in ax.lines:
            m = re.match(r"layer (\d+)$", line.get_label())
            if m:
                assert mpl.colors.to_hex(line.get_color()) == palette[int(m.group(1))], (key, line.get_label())
    assert "\n" not in fig._suptitle.get_text()  # the setting is the caption, not a second title line


@pytest.mark.parametrize("widest, holds", [(0.9, True), (0.2, False)])
def test_f4_verdict_compares_the_widest_students_with_1x_over_all_layers(widest, holds):
    import pandas as pd

    r = pd.DataFrame({"student.multiplier": [1, 1, 5, 5, 20, 20] * 2, "layer": [0, 1] * 6,
                      "arm": ["deep"] * 6 + ["long"] * 6,
                      "recovered_frac": [1.0, 0.2, 1.0, 0.8, 1.0, widest] + [1.0, 0.4, 1.0, 1.0, 1.0, 1.0]})
    text, got = all_figures()["F4"].verdict({"overparam": {"recovered": r}})
    assert got is holds and text.startswith("recovered fraction (mean over layers) 0.60 at 1x, 0.90 at 5x")
    assert text.endswith("; at 4x the steps 0.70 at 1x, 1.00 at 5x, 1.00 at 20x")  # the long arm: said, not judged


def test_bands_are_the_spread_over_seeds(tmp_path):
    """F1's band at each point runs from the lowest to the highest member's value."""
    tables = synthetic_tables()
    df = all_figures()["F1"].data(tables)
    c = tables["deep_dynamics"]["curves"]
    row = df[(df.panel == "without BatchNorm") & (df.series == "layer 1") & (df.x == 2.0)].iloc[0]
    pts = c[(c.arm == "plain") & (c.layer == 1) & (c.epoch == 2.0)].best_corr_mean
    assert (row.lo, row.y, row.hi) == pytest.approx((pts.min(), pts.mean(), pts.max()))
    assert pts.min() < pts.max()


def test_f5_reads_the_last_measured_epoch_of_the_success_table():
    tables = synthetic_tables()
    tables["specialization_two_layer"]["success"] = tables["specialization_two_layer"]["success"].query("epoch != 8.0")
    df = all_figures()["F5"].data(tables)
    two = df[df.panel == "two-layer success rate"]
    assert len(two) == 9 and two.y.notna().all()
    assert "nan" not in all_figures()["F5"].verdict(tables)[0]


def test_figures_are_byte_identical_when_rebuilt(tmp_path):
    for key in ("F2", "F8"):  # bars, lines with bands, a symlog axis
        module = all_figures()[key]
        for d in ("a", "b"):
            df = module.data(synthetic_tables())
            save_figure_files(render(df, module.PANELS, module.TITLE), tmp_path / d / key, df)
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")


def test_drawing_leaves_matplotlib_global_state_alone():
    import matplotlib as mpl

    before = (mpl.get_backend(), dict(mpl.rcParams))
    module = all_figures()["F4"]
    render(module.data(synthetic_tables()), module.PANELS, module.TITLE)
    assert (mpl.get_backend(), dict(mpl.rcParams)) == before


def test_unknown_figure_names_are_one_line_errors(tmp_path):
    assert set(resolve(["f1", "F4"])) == {"F1", "F4"}
    with pytest.raises(UserError, match="unknown figure 'F99'; known: F1"):
        resolve(["F99"])
    res = invoke("figures", "F99", "--out", tmp_path / "figs", "--runs", tmp_path / "runs")
    assert_user_error(res)
    assert not (tmp_path / "figs").exists() and not (tmp_path / "runs").exists()


# ---- the quick mechanism ------------------------------------------------------------------------

def test_quick_tables_change_only_quick_run_ids():
    """Every figure's experiment has a [quick] variant with other run ids; without --quick the
    [quick] table changes nothing (the base config equals the file's sections alone)."""
    from teacherstudent.config import build_config, load_toml, with_preset

    needed = {e for m in all_figures().values() for e in m.EXPERIMENTS}
    assert needed <= set(list_experiments())
    for name in needed:
        data = with_preset(load_toml(default_root() / f"{name}.toml"), f"{name}.toml")
        assert "quick" in data
        data.pop("quick"), data.pop("sweep", None)
        assert base_config(name)[0] == build_config(data)
        full = {r.run_id for r in plan_study(name)[1].runs}
        quick = {r.run_id for r in plan_study(name, StudyOptions(quick=True))[1].runs}
        assert full and quick and not full & quick


def test_quick_without_a_quick_table_is_an_error(tmp_path):
    with pytest.raises(UserError, match="has no \\[quick\\] table"):
        plan_study("luckmatters_deep", StudyOptions(quick=True))  # preset = ... in the file: loads
    assert plan_study("luckmatters_deep")[1].runs
    assert_user_error(invoke("experiment", "plan", "luckmatters_deep", "--quick", "--out", tmp_path / "runs"))
    res = invoke("experiment", "plan", "strength_decay", "--quick", "--out", tmp_path / "runs")
    assert res.exit_code == 0 and "0 of 15,120 student-steps" in res.output, res.output


# ---- a tiny end-to-end build, and the pages in a browser ---------------------------------------

def tiny_experiment_root(root: Path) -> Path:
    """analysis/deep_dynamics.py beside a tiny config (and a tiny [quick] table)."""
    root.mkdir(parents=True)
    shutil.copy(default_root() / "deep_dynamics.py", root / "deep_dynamics.py")
    sections: dict[str, dict] = {}
    for key, value in {**TINY, "measure.corr_steps": [8]}.items():
        sec, f = key.split(".")
        sections.setdefault(sec, {})[f] = value
    lines = ['name = "tiny"']
    for sec, kv in sections.items():
        lines += ["", f"[{sec}]", *(f"{k} = {toml_literal(v)}" for k, v in kv.items())]
    lines += ["", "[quick.training]", "epochs = 1", "", "[quick.measure]", "corr_steps = [4]"]
    (root / "deep_dynamics.toml").write_text("\n".join(lines) + "\n")
    return root


def browser_images(page: Path, tmp_path: Path) -> list[dict]:
    """Open ``page`` in headless Chromium; every <img>'s decoded size and drawn size, read from the DOM."""
    probe = tmp_path / f"probe-{page.name}"
    script = ("<script>window.addEventListener('load',()=>{const r=[...document.images].map(i=>({w:i.naturalWidth,"
              "h:i.naturalHeight,ok:i.complete,dw:i.getBoundingClientRect().width,dh:i.getBoundingClientRect().height}));"
              "const p=document.createElement('pre');p.id='probe';p.textContent=JSON.stringify(r);"
              "document.body.appendChild(p);});</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout)
    assert found, (out.returncode, out.stderr[-2000:])
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """F1-F3 built with --quick from a tiny deep_dynamics (two runs of 8 steps and the long arm of 32), once for this module."""
    tmp = tmp_path_factory.mktemp("tiny_build")
    root = tiny_experiment_root(tmp / "analysis")
    figs = {k: all_figures()[k] for k in ("F1", "F2", "F3")}
    seen: list[tuple[float, float]] = []
    res = build_figures(None, StudyOptions(tmp / "runs", "cpu", root=root, quick=True, workers=1,
                                         command=["teacherstudent", "figures", "--quick"]),
                        tmp / "figs", progress=lambda d, t, what: seen.append((d, t)), figures=figs)
    return tmp, root, figs, res, seen


def test_tiny_quick_build_writes_every_file_and_the_index(tiny_build):
    tmp, _, _, res, seen = tiny_build
    assert [f.key for f in res.figures] == ["F1", "F2", "F3"]
    assert seen[-1][0] == seen[-1][1] > 3 and all(d <= t for d, t in seen)
    index = (tmp / "figs" / "index.html").read_text()
    for f in res.figures:
        assert html.escape(f.claim) in index and html.escape(f.measured) in index
        assert {p.suffix for p in f.files} == {".png", ".pdf", ".csv"}
    assert index.count("data:image/png;base64,") == 3 and "teacherstudent figures --quick" in index
    assert (tmp / "figs" / "timings.csv").exists()


def test_deep_dynamics_ranks_match_the_recorded_initial_ranks(tiny_build):
    """The experiment's winner ranks at step 0 (from corr.npz) equal teacher_nodes.init_rank_pct;
    at the end every winner is rank 1."""
    from teacherstudent.summary import read_table

    tmp = tiny_build[0]
    ranks = pd.read_parquet(tmp / "runs" / "experiments" / "deep_dynamics" / "ranks.parquet")
    ranks = ranks[ranks.arm != "long"]  # F3's explanation arm ends later
    assert sorted(ranks.step.unique()) == [0, 4, 8]  # init, the quick corr_steps, the end
    runs = pd.read_csv(tmp / "runs" / "experiments" / "deep_dynamics" / "runs.csv")
    for arm in ("plain", "batchnorm"):
        t = read_table(tmp / "runs" / runs[runs.arms == arm].run.iloc[0], "teacher_nodes")
        r = ranks[(ranks.arm == arm) & (ranks.step == 0)]
        m = t.merge(r, on=["member", "layer", "teacher_node"])
        assert len(m) == len(t) > 0
        np.testing.assert_allclose(m.winner_rank_pct, m.init_rank_pct, rtol=1e-6)
        last = ranks[(ranks.arm == arm) & (ranks.step == 8)]
        np.testing.assert_allclose(last.winner_rank_pct, 100.0 / np.where(last.layer == 0, 12, 18))


def test_rebuilding_reuses_the_runs_and_gives_identical_files(tiny_build):
    tmp, root, figs, _, _ = tiny_build
    first = {k: v for k, v in file_bytes(tmp / "figs").items() if k.startswith("F")}
    runs = sorted(p.name for p in (tmp / "runs").iterdir())
    build_figures(None, StudyOptions(tmp / "runs", "cpu", root=root, quick=True, workers=1), tmp / "figs", figures=figs)
    assert {k: v for k, v in file_bytes(tmp / "figs").items() if k.startswith("F")} == first
    assert sorted(p.name for p in (tmp / "runs").iterdir()) == runs  # nothing trained again


def test_index_page_images_decode_and_show_in_chromium(tiny_build, tmp_path):
    if CHROMIUM is None:
        pytest.skip("headless check needs Chromium (Debian package chromium, /usr/bin/chromium); not installed")
    imgs = browser_images(tiny_build[0] / "figs" / "index.html", tmp_path)
    assert len(imgs) == 3 and all(i["ok"] and i["w"] > 100 and i["h"] > 100 and i["dw"] > 0 and i["dh"] > 0
                                  for i in imgs), imgs


PROBE_PY = """\"\"\"Tiny probe study.\"\"\"
from teacherstudent.probes import member_summary
import pandas as pd


def arms(base):
    return {"parent": base}


def probes(base):
    return {"rewind": ("parent", {"kind": "lottery", "keep": 0.5, "by": "alignment", "rewind": "init"})}


def tables(runs):
    return {"members": pd.concat([member_summary(f).assign(label=k) for k, f in runs.items()], ignore_index=True)}
"""


def test_an_experiment_runs_its_probes_after_its_arms(tmp_path):
    from teacherstudent.experiments import run_study
    from teacherstudent.probes import probes_of

    root = tiny_experiment_root(tmp_path / "analysis")
    (root / "probe_study.toml").write_text((root / "deep_dynamics.toml").read_text().split("[quick")[0])
    (root / "probe_study.py").write_text(PROBE_PY)
    told = []
    res = run_study("probe_study", StudyOptions(tmp_path / "runs", "cpu", root=root, workers=1,
                                          on_probe=lambda *a: told.append(a)))
    assert told == [("rewind", 1, 1)]
    members = res.tables["members"]
    assert sorted(members.label.unique()) == ["parent", "rewind"] and len(members) == 4
    parent = tmp_path / "runs" / res.study.runs[0].run_id
    [child] = probes_of(parent)
    assert set(members[members.label == "rewind"].run) == {child.name}
    again = run_study("probe_study", StudyOptions(tmp_path / "runs", "cpu", root=root, workers=1))  # the child is reused
    assert probes_of(parent) == [child] and again.tables["members"].equals(members)
    with pytest.raises(UserError, match="probes\\(\\) needs one run per arm"):  # refused before training
        run_study("probe_study", StudyOptions(tmp_path / "split", "cpu", root=root, workers=1, members_per_run=1))
    assert not (tmp_path / "split").exists()


def test_report_of_one_run(finished_run, tmp_path):
    dest = tmp_path / "report.html"
    res = invoke("report", finished_run.name, "--out", finished_run.parent, "--to", dest)
    assert res.exit_code == 0, res.output
    page = dest.read_text()
    assert page.count("data:image/png;base64,") == 2 and "Lucky nodes" in page and "<table>" in page
    assert_user_error(invoke("report", "nope-0000", "--out", finished_run.parent))
    if CHROMIUM is None:
        pytest.skip("headless check needs Chromium (Debian package chromium, /usr/bin/chromium); not installed")
    imgs = browser_images(dest, tmp_path)
    assert len(imgs) == 2 and all(i["ok"] and i["w"] > 100 and i["dw"] > 0 for i in imgs), imgs


# ---- figures --plan: counts and an estimate, nothing trained ------------------------------------

def test_plan_counts_every_student_step_and_trains_nothing(tmp_path):
    from teacherstudent.plan import figures_plan

    root = tiny_experiment_root(tmp_path / "analysis")
    figs = {k: all_figures()[k] for k in ("F1", "F2", "F3")}
    p = figures_plan(None, StudyOptions(tmp_path / "runs", "cpu", root=root, quick=True), measure=False, figures=figs)
    study = plan_study("deep_dynamics", StudyOptions(root=root, quick=True))[1]
    [e] = p.experiments  # F1-F3 share one experiment
    assert (e.name, e.figures, e.runs, e.runs_to_train) == ("deep_dynamics", ["F1", "F2", "F3"], len(study.runs),
                                                            len(study.runs))
    assert e.student_steps_to_train == e.student_steps == sum(r.student_steps for r in study.runs) > 0
    assert p.seconds is None and not (tmp_path / "runs").exists()


def test_plan_estimate_is_setup_plus_steps_plus_measurements(tmp_path):
    from teacherstudent.plan import figures_plan

    root = tiny_experiment_root(tmp_path / "analysis")
    figs = {"F1": all_figures()["F1"]}
    p = figures_plan(None, StudyOptions(tmp_path / "runs", "cpu", root=root, quick=True), figures=figs)
    [e] = p.experiments
    study = plan_study("deep_dynamics", StudyOptions(root=root, quick=True))[1]
    assert len(e.rates) == len(study.runs) and all(r.setup > 0 and r.step > 0 and r.measure > 0 for r in e.rates)
    from teacherstudent.schedule import measure_steps

    want = sum(rate.seconds(r.cfg.total_steps, len(measure_steps(r.cfg.measure, r.cfg.steps_per_epoch, r.cfg.total_steps)))
               for rate, r in zip(e.rates, study.runs))
    assert e.seconds == pytest.approx(want) and p.seconds == pytest.approx(want)
    assert not (tmp_path / "runs").exists()


def test_plan_after_a_build_has_nothing_left_to_train(tiny_build):
    from teacherstudent.plan import figures_plan

    tmp, root, figs, _, _ = tiny_build
    p = figures_plan(None, StudyOptions(tmp / "runs", "cpu", root=root, quick=True), figures=figs)
    [e] = p.experiments
    assert (e.runs_to_train, e.student_steps_to_train, e.seconds, p.student_steps_to_train) == (0, 0, 0.0, 0)
    assert e.student_steps > 0


def test_plan_cli_prints_the_real_studies_counts(tmp_path):
    res = invoke("figures", "--plan", "--quick", "--no-estimate", "--runs", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    study = plan_study("deep_dynamics", StudyOptions(quick=True))[1]
    assert f"{sum(r.student_steps for r in study.runs):,}" in res.output and "lottery_tickets" in res.output
    assert "nothing trained" in res.output and not (tmp_path / "runs").exists()
    bad = invoke("figures", "F9", "--plan", "--runs", tmp_path / "runs")
    assert bad.exit_code == 2 and "unknown figure" in bad.output


def test_f3_verdict_judges_the_papers_budget_and_reports_the_long_arm():
    tables = synthetic_tables()
    text, holds = all_figures()["F3"].verdict(tables)
    n = tables["deep_dynamics"]["nodes"]
    last = n[(n.arm == "plain") & (n.step == n[n.arm == "plain"].step.max()) & (n.layer == 0)]
    ratio = last[last.best_corr > 0.9].fanout_norm.median() / last[last.best_corr < 0.6].fanout_norm.median()
    assert holds is bool(ratio > 2) and text.startswith(f"layer 0 at the end: median fan-out of nodes with best "
                                                         f"correlation > 0.9 is {ratio:.1f}x")
    assert text.endswith("; long arm (epoch 40): 100.0x (4 vs 14 nodes)")  # synthetic: 1.0 vs 0.01; 2 + 7 of 12 per member
    df = all_figures()["F3"].data(tables)
    assert set(df[df.series.str.contains("long")].series) == {"epoch 40 (long arm)"}


def test_f6_verdict_reports_the_rescaled_arm_seed_by_seed():
    tables = synthetic_tables()
    m = tables["lottery_tickets"]["members"]
    n = m.member.nunique()
    text, holds = all_figures()["F6"].verdict(tables)
    assert holds and text.endswith(f"(below re-initialised in {n} of {n} seeds)")  # synthetic: rescaled 0.1 below
    m.loc[(m.arm == "rescaled") & (m.member == m.member.min()), "eval_loss"] = 9.0  # one seed worse than reinit
    assert all_figures()["F6"].verdict(tables)[0].endswith(f"(below re-initialised in {n - 1} of {n} seeds)")
