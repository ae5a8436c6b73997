"""``teacherstudent teacher inspect``: firing, co-activation, bias signs, output scale."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny, tiny_overrides
from typer.testing import CliRunner

from teacherstudent_cli.main import app
from teacherstudent.diagnostics import coactivation, inspect_teacher

runner = CliRunner()


def cli_args(*overrides: str, **fields) -> list[str]:
    return [a for s in tiny_overrides(*overrides, **fields) for a in ("--set", s)]


def test_coactivation_matches_an_explicit_loop_over_pairs():
    active = torch.rand(500, 6, generator=torch.Generator().manual_seed(0)) < 0.3
    P = coactivation(active)
    for k in range(6):
        for j in range(6):
            assert P[k, j].item() == pytest.approx(sum(bool(a[k] and a[j]) for a in active) / 500)


def test_default_teacher_fires_half_the_time_and_coactivates_like_independent_nodes():
    rep = inspect_teacher(tiny(inputs__eval_samples=4000))
    L = rep.layers
    assert list(L.layer) == [0, 1] and list(L.width) == [4, 6]
    assert ((L.firing_mean - 0.5).abs() < 0.03).all() and (L.firing_target == 0.5).all()
    assert ((L.coact_mean - 0.25).abs() < 0.08).all()
    assert (L.coact_max >= L.coact_mean).all()
    assert ((L.bias_neg + L.bias_zero + L.bias_pos) == L.width).all()
    assert rep.samples == 4000 and rep.input_dim == 20
    assert abs(rep.outputs["std"] - 1) < 0.1 and abs(rep.outputs["mean"]) < 0.1 and rep.outputs["outputs"] == 10


def test_sparse_teacher_rarely_coactivates_and_has_negative_biases():
    L = inspect_teacher(tiny(teacher__firing=0.1, inputs__eval_samples=4000)).layers
    assert ((L.firing_mean - 0.1).abs() < 0.02).all()
    assert L.coact_mean.iloc[0] < 0.03  # the papers' assumption
    assert L.bias_neg.iloc[0] == 4 and L.bias_pos.sum() == 0


def test_output_scale_reflects_standardisation_and_the_wide_teacher_is_inspected():
    raw = inspect_teacher(tiny(teacher__standardize_outputs=False))
    assert abs(raw.outputs["std"] - 1) > 0.5
    wide = inspect_teacher(tiny('inputs.labels="wide_teacher"', inputs__wide_factor=2))
    assert list(wide.layers.width) == [8, 12]


def test_cli_teacher_inspect_prints_the_table():
    res = runner.invoke(app, ["teacher", "inspect", *cli_args(teacher__firing=0.1)])
    assert res.exit_code == 0, res.output
    for text in ["firing", "co-act", "b -/0/+", "outputs: 10", "4/0/0", "0.10"]:
        assert text in res.output
    assert "note: co-activation" not in res.output
    dense = runner.invoke(app, ["teacher", "inspect", *cli_args()])
    assert dense.exit_code == 0 and "note: co-activation up to" in dense.output


def test_cli_teacher_inspect_bad_config_is_one_line_and_exit_2(tmp_path):
    res = runner.invoke(app, ["teacher", "inspect", "--set", "inputs.n_clusters=0"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: invalid config: inputs.n_clusters")
    res = runner.invoke(app, ["teacher", "inspect", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_a_teacher_too_large_for_memory_is_refused_in_one_line():
    from teacherstudent_cli.main import app
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["teacher", "inspect", "--set", "teacher.widths=[100000000]"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error:")
