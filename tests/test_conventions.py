"""The official codes' conventions (docs/science.md §2), each against a hand computation,
one teacher per member, and the presets that combine them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from teacherstudent.build import build
from teacherstudent.config import load_config
from teacherstudent.fast import loss_and_grads
from teacherstudent.preset import list_presets, preset_header
from teacherstudent.probes.select import alignment_scores
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run

from conftest import tiny

CPU = torch.device("cpu")


def test_fixed_hidden_bias_raw_output_rows_and_output_bias():
    cfg = tiny(teacher__bias_mode="fixed", teacher__bias_value=-0.1, teacher__standardize_outputs=False,
               teacher__output_normalized=False, teacher__output_bias=-0.1, teacher__grid=[-1.0, -0.5, 0.0, 0.5, 1.0])
    t = build(cfg, CPU).teacher
    for b in t.biases[:-1]:
        assert torch.equal(b, torch.full_like(b, -0.1))
    w_out = t.weights[-1]
    assert set(w_out.flatten().tolist()) <= {-1.0, -0.5, 0.0, 0.5, 1.0}  # raw grid values, not normalised
    assert torch.equal(t.biases[-1], torch.full_like(t.biases[-1], -0.1))
    for w in t.weights[:-1]:
        assert torch.allclose(w.norm(dim=1), torch.ones(w.shape[0], dtype=w.dtype))


def test_bias_normalised_with_its_row():
    """Grid {-0.5, 0, 0.5}: a raw row with z non-zero entries has norm 0.5 sqrt(z); its bias is -0.1 / that."""
    cfg = tiny(teacher__bias_mode="fixed", teacher__bias_value=-0.1, teacher__bias_normalized=True,
               teacher__grid=[-0.5, 0.0, 0.5])
    t = build(cfg, CPU).teacher
    for w, b in zip(t.weights[:-1], t.biases[:-1]):
        nnz = (w != 0).sum(1).double()
        assert torch.allclose(b, -0.1 / (0.5 * nnz.sqrt()), rtol=1e-12)


def test_uniform_biases_lie_in_their_range_and_differ():
    t = build(tiny(teacher__bias_mode="uniform", teacher__bias_range=0.3), CPU).teacher
    b = torch.cat(t.biases[:-1])
    assert b.abs().max() <= 0.3 and len(set(b.tolist())) == len(b)


@pytest.mark.parametrize("std", [0.005, [0.1, 0.2, 0.3]])
def test_student_normal_init_std_and_zero_biases(std):
    cfg = tiny(student__init="normal", student__init_std=std, student__multiplier=40, student__seeds=[0, 1, 2, 3])
    ens = build(cfg, CPU).ens
    stds = std if isinstance(std, list) else [std] * 3
    for w, b, s in zip(ens.weights, ens.biases, stds):
        assert abs(w.double().std().item() / s - 1) < 0.1, (w.std(), s)
        assert torch.equal(b, torch.zeros_like(b))


def test_sampling_with_replacement_is_reproducible_and_resumable(tmp_path):
    cfg = tiny(training__sampling="replacement", training__steps_per_epoch=5, training__batch_size=32,
               training__epochs=4)
    a, b = build(cfg, CPU).data, build(cfg, CPU).data
    x1, y1 = a.epoch(1)
    assert torch.equal(x1, b.epoch(1)[0]) and x1.shape[0] == 5 * 32
    rows = {tuple(r) for r in x1.tolist()}
    fixed = {tuple(r) for r in a._fixed[0].tolist()}
    assert rows <= fixed and not torch.equal(x1, a.epoch(2)[0])
    assert len(rows) < x1.shape[0]  # 160 draws from 512 with replacement: repeats (probability ~1 - 1e-11)
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=10))
    run(cfg, RunOptions(tmp_path / "b", "cpu"))
    for t in ("metrics", "teacher_nodes"):
        pd.testing.assert_frame_equal(pd.read_parquet(whole / f"{t}.parquet").drop(columns="run"),
                                      pd.read_parquet(part / f"{t}.parquet").drop(columns="run"))


def test_half_sum_loss_and_gradient_against_autograd():
    torch.manual_seed(0)
    K, B, d, n, C = 3, 16, 5, 7, 4
    params = [torch.randn(K, n, d, dtype=torch.float64), torch.randn(K, n, dtype=torch.float64),
              torch.randn(K, C, n, dtype=torch.float64), torch.randn(K, C, dtype=torch.float64)]
    x, y = torch.randn(B, d, dtype=torch.float64), torch.randn(B, C, dtype=torch.float64)
    value, grads = loss_and_grads([p.clone() for p in params], x, y, "mse_half_sum")
    ref = [p.clone().requires_grad_(True) for p in params]
    out = torch.relu(x @ ref[0].transpose(1, 2) + ref[1][:, None]) @ ref[2].transpose(1, 2) + ref[3][:, None]
    per_member = ((out - y) ** 2).sum((1, 2)) / (2 * B)  # (1/2B) sum_b ||y_t - y_s||^2
    per_member.sum().backward()
    assert torch.allclose(value, per_member.detach(), rtol=1e-12)
    for g, r in zip(grads, ref):
        assert torch.allclose(g, r.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layers, bias", [(None, True), ([1], False)])
def test_fan_in_renormalisation_keeps_unit_rows(layers, bias):
    extra = {"training__renorm_layers": layers} if layers is not None else {}
    sim = Trainer(build(tiny(training__renorm="fan_in", training__renorm_bias=bias, **extra), CPU))
    sim.train_until(10)
    for l, (w, b) in enumerate(zip(sim.ens.weights, sim.ens.biases)):
        norm = (w.square().sum(2) + (b.square() if bias else 0)).sqrt()
        unit = torch.allclose(norm, torch.ones_like(norm), atol=1e-5)
        assert unit == (layers is None or l in layers), (l, norm)


def test_one_teacher_per_member_equals_separate_single_teacher_runs(tmp_path):
    both = run(tiny(teacher__seeds=[3, 4], student__seeds=[0, 1], training__dtype="float64"), RunOptions(tmp_path / "k"))
    one = [run(tiny(teacher__seed=t, student__seeds=[s], training__dtype="float64"), RunOptions(tmp_path / f"s{t}"))
           for t, s in ((3, 0), (4, 1))]
    wk = torch.load(both / "checkpoints" / "final.pt")["weights"]
    for k, f in enumerate(one):
        w1 = torch.load(f / "checkpoints" / "final.pt")["weights"]
        for a, b in zip(wk, w1):
            assert torch.allclose(a[k:k + 1], b, rtol=1e-12, atol=1e-14)
    for table in ("teacher_nodes", "metrics"):
        got = pd.read_parquet(both / f"{table}.parquet").drop(columns="run")
        want = pd.concat([pd.read_parquet(f / f"{table}.parquet") for f in one]).drop(columns="run")
        cols = [c for c in got.columns if c in want.columns]
        key = [c for c in ("member", "step", "split", "layer", "metric", "teacher_node") if c in cols]
        got = got[cols].sort_values(key).reset_index(drop=True)
        want = want[cols].sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-12)
    tn = pd.read_parquet(both / "teacher_nodes.parquet")
    assert tn.groupby("member").teacher_seed.first().to_dict() == {0: 3, 1: 4}


def test_winners_first_keeps_every_teacher_nodes_winner(tmp_path):
    C = np.array([[[0.9, 0.95, 0.1, 0.2], [0.1, 0.2, 0.3, 0.5]]], dtype=np.float32)  # K=1, m=2, n=4
    np.savez(tmp_path / "corr.npz", step_10_layer_0=C, step_0_layer_0=C)
    top = alignment_scores(tmp_path, "top")[0]
    first = alignment_scores(tmp_path, "winners_first")[0]
    assert top.argsort(descending=True)[0, :2].tolist() == [1, 0]  # top-2 by best correlation: nodes 1, 0
    assert sorted(first.argsort(descending=True)[0, :2].tolist()) == [1, 3]  # the two winners


def test_presets_load_and_say_what_they_mirror():
    names = list_presets()
    assert set(names) == {"luckmatters-2019-deep", "luckmatters-2019-matrix", "specialization-2020-two-layer",
                          "specialization-2020-deep"}
    for name in names:
        cfg = load_config(preset=name)
        head = preset_header(name)
        assert all(w in head for w in ("Paper:", "Mirrors:", "Claim:", "Differs from the official code:"))
        assert cfg.name != "default"
    two = load_config(preset="specialization-2020-two-layer", overrides=["student.multiplier=5"])
    assert two.student.multiplier == 5 and two.training.loss_reduction == "half_sum"


def test_teacher_seeds_need_one_per_member_and_plain_labels():
    from teacherstudent.errors import UserError

    with pytest.raises(UserError, match="one teacher per ensemble member"):
        tiny(teacher__seeds=[1, 2, 3])
    with pytest.raises(UserError, match="teacher.seed does nothing"):
        tiny(teacher__seeds=[1, 2], teacher__seed=5)


def test_a_config_file_may_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('preset = "specialization-2020-two-layer"\n\n[student]\nmultiplier = 5\n')
    cfg = load_config(path, ["training.epochs=2"])
    ref = load_config(preset="specialization-2020-two-layer", overrides=["student.multiplier=5", "training.epochs=2"])
    assert cfg == ref
    path.write_text('preset = "nope"\n')
    from teacherstudent.errors import UserError

    with pytest.raises(UserError, match="unknown preset 'nope'; known: luckmatters-2019-deep"):
        load_config(path)


def test_preset_cli_lists_shows_and_runs(tmp_path):
    from conftest import invoke

    listed = invoke("preset", "list")
    assert listed.exit_code == 0 and "specialization-2020-two-layer" in listed.stdout
    shown = invoke("preset", "show", "luckmatters-2019-matrix")
    assert shown.exit_code == 0 and "Claim:" in shown.stdout and "renorm" in shown.stdout
    r = invoke("run", "--preset", "luckmatters-2019-matrix", "--set", "training.steps=40", "--set", "inputs.eval_samples=256",
               "--out", str(tmp_path), "--no-figure")
    assert r.exit_code == 0, r.stderr
    bad = invoke("run", "--preset", "nope", "--out", str(tmp_path))
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1 and "unknown preset" in bad.stderr
