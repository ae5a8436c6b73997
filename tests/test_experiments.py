"""Named experiments under analysis/: discovery, tables, CLI (shrunk with --set overrides)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from teacherstudent_cli.main import app
from teacherstudent.errors import UserError
from teacherstudent.experiments import StudyOptions, list_experiments, run_named, spearman

runner = CliRunner()

SMALL = ["teacher.widths=[3, 4]", "teacher.outputs=5", "teacher.reference_samples=1000", "inputs.train_samples=256",
         "inputs.eval_samples=128", "student.multiplier=2", "training.epochs=2", "measure.log_points=4"]


def test_the_named_experiments_are_listed():
    names = list_experiments()
    assert {"structured_vs_random", "strength_decay", "lucky_fanout"} <= set(names)
    assert all(names[n] for n in names)  # each has a one-line description
    res = runner.invoke(app, ["experiment", "list"])
    assert res.exit_code == 0 and "structured_vs_random" in res.output


def hand_ranks(v) -> list[float]:
    """1-based ranks, tied values sharing the mean of the ranks they span (a plain loop over sorted values)."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for t in order[i:j + 1]:
            ranks[t] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def hand_pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_spearman_is_the_pearson_correlation_of_average_ranks():
    assert hand_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40), rng.normal(size=40)  # many ties in a
    assert spearman(a, b) == pytest.approx(hand_pearson(hand_ranks(a.tolist()), hand_ranks(b.tolist())), abs=1e-12)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))  # ranks [1, 2.5, 2.5, 4] by hand
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_structured_vs_random_tables(tmp_path):
    res = run_named("structured_vs_random", StudyOptions(tmp_path, "cpu"), SMALL)
    s, nodes = res.tables["summary"], res.tables["nodes"]
    assert list(res.runs) == ["structured", "permuted", "wide"]
    assert set(s.arm) == {"structured", "permuted", "wide"} and len(s) == 6
    widths = s.set_index(["arm", "layer"]).teacher_width
    assert widths["structured"].tolist() == [3, 4] and widths["wide"].tolist() == [6, 8]  # as wide as the student
    assert (s.student_width.values == np.array([6, 8] * 3)).all()
    # every student is attached to exactly one teacher node
    att = nodes.groupby(["arm", "member", "layer"]).attached.sum().unstack("layer")
    assert (att[0] == 6).all() and (att[1] == 8).all()
    assert (nodes.fanout_eff.dropna() >= 1 - 1e-9).all()
    for name in ("summary", "nodes"):
        back = pd.read_parquet(res.folder / f"{name}.parquet")
        assert len(back) == len(res.tables[name]) and (res.folder / f"{name}.csv").exists()
    again = run_named("structured_vs_random", StudyOptions(tmp_path, "cpu"), SMALL)  # finished runs are reused
    assert again.runs == res.runs
    pd.testing.assert_frame_equal(again.tables["summary"], s)


def test_strength_decay_tables(tmp_path):
    res = run_named("strength_decay", StudyOptions(tmp_path, "cpu"), SMALL)
    s, nodes = res.tables["summary"], res.tables["nodes"]
    assert sorted(s.p.unique()) == [0.0, 1.0, 2.0] and len(s) == 6
    strongest = nodes[nodes.strength_rank == 1]
    top = nodes.groupby(["arm", "member", "layer"]).strength.max().reset_index()
    assert np.allclose(strongest.sort_values(["arm", "member", "layer"]).strength.values,
                       top.sort_values(["arm", "member", "layer"]).strength.values)
    # with p = 2 node 0 is the strongest in every layer, and strengths spread far more than with p = 0
    p2 = nodes[(nodes.p == 2.0) & (nodes.teacher_node == 0)]
    assert (p2.strength_rank == 1).all()
    ratio = s.set_index(["p", "layer"]).strength_max_over_min
    assert (ratio[2.0] > ratio[0.0]).all()
    rho = s[["rho_rank_step", "rho_strength_corr"]].to_numpy()
    assert np.all(np.isnan(rho) | ((rho >= -1) & (rho <= 1)))


def test_lucky_fanout_tables(tmp_path):
    res = run_named("lucky_fanout", StudyOptions(tmp_path, "cpu"), ["teacher.widths=[3]", "student.lucky_nodes=3", "training.steps=40",
                                                       "inputs.train_samples=640", "inputs.eval_samples=128",
                                                       "measure.log_points=4", "teacher.reference_samples=1000"])
    s = res.tables["summary"].set_index(["arm", "group"])
    assert s.loc[("lucky", "lucky"), "students"] == 3 and s.loc[("lucky", "other"), "students"] == 3
    assert s.loc[("control", "other"), "students"] == 6
    assert s.loc[("lucky", "lucky"), "best_corr_final_median"] > 0.95  # started on the teacher's nodes


def test_cli_experiment_run_and_errors(tmp_path):
    args = [a for o in SMALL for a in ("--set", o)]
    res = runner.invoke(app, ["experiment", "run", "strength_decay", "--out", str(tmp_path), "--device", "cpu", *args])
    assert res.exit_code == 0, res.output
    assert "strength_decay: summary" in res.output and "summary.parquet" in res.output
    bad = runner.invoke(app, ["experiment", "run", "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "no experiment 'nope'" in bad.output and "structured_vs_random" in bad.output
    bad = runner.invoke(app, ["experiment", "run", "strength_decay", "--out", str(tmp_path), "--set", "inputs.latent_dim=0"])
    assert bad.exit_code == 2 and bad.output.startswith("error: invalid config: inputs.latent_dim")
    with pytest.raises(UserError, match="no experiment"):
        run_named("missing", StudyOptions(tmp_path))
