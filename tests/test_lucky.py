"""Lucky by construction (``student.lucky_nodes``, ``student.lucky_noise``): planted teacher nodes."""

from __future__ import annotations

import pytest
import torch

from teacherstudent.config import ExperimentConfig
from teacherstudent.ensemble import Ensemble
from teacherstudent.errors import UserError
from teacherstudent.build import build
from teacherstudent.loop import Trainer

from conftest import tiny

CPU = torch.device("cpu")


def test_lucky_nodes_without_noise_compute_the_teachers_hidden_nodes_exactly():
    cfg = tiny(student__lucky_nodes=[4, 6], training__dtype="float64")
    sim = Trainer(build(cfg, CPU))
    hidden, _ = sim.ens.forward(sim.data.x_eval)
    for l, t in enumerate(sim.data.teacher_hidden_eval):
        m = t.shape[1]
        assert torch.allclose(hidden[l][:, :, :m], t.expand(2, -1, -1), atol=1e-12)
    assert torch.equal(sim.ens.weights[-1][:, :, :6], sim.teacher.weights[-1].expand(2, -1, -1)[:, :, :6])
    assert torch.equal(sim.ens.biases[-1], sim.teacher.biases[-1].expand(2, -1))
    corr0 = sim.snapshot().corr  # initial correlation of teacher node k with student k is 1
    assert all(torch.allclose(c.diagonal(dim1=1, dim2=2), torch.ones(2, c.shape[1]), atol=1e-5) for c in corr0)


def test_lucky_noise_has_the_given_scale_and_leaves_the_other_nodes_random():
    cfg = tiny(student__lucky_nodes=3, student__lucky_noise=0.05, training__dtype="float64",
               teacher__widths=[30, 40], teacher__d=40, teacher__outputs=100, student__multiplier=2)
    sim = Trainer(build(cfg, CPU))
    plain = Ensemble.create(sim.widths, 40, 100, cfg.student, CPU, torch.float64)
    t = sim.teacher
    W0, W1, Wout = sim.ens.weights
    diff0 = W0[:, :3] - t.weights[0][:3]
    assert abs(diff0.std().item() - 0.05) < 0.005 and abs(diff0.mean().item()) < 0.005
    # layer 1: the lucky rows copy the teacher only on the lucky columns below, 0 + noise elsewhere
    assert abs((W1[:, :3, :3] - t.weights[1][:3, :3]).std().item() - 0.05) < 0.02
    assert abs(W1[:, :3, 3:].std().item() - 0.05) < 0.005
    assert abs((Wout[:, :, :3] - t.weights[-1][:, :3]).std().item() - 0.05) < 0.01
    assert torch.equal(W0[:, 3:], plain.weights[0][:, 3:])  # unlucky nodes keep their random init
    assert torch.equal(W1[:, 3:], plain.weights[1][:, 3:])
    assert torch.equal(Wout[:, :, 3:], plain.weights[-1][:, :, 3:])
    assert not torch.equal(diff0[0], diff0[1])  # each member draws its own noise


def test_lucky_defaults_are_a_no_op_and_keep_run_ids():
    cfg = tiny()
    sim = Trainer(build(cfg, CPU))
    plain = Ensemble.create(sim.widths, 20, 10, cfg.student, CPU, torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(sim.ens.params, plain.params))
    new = {"lucky_nodes", "lucky_noise", "n_clusters", "cluster_std", "latent_dim", "noise", "holdout", "labels", "wide_factor"}
    flat = {k for section in cfg.canonical().values() if isinstance(section, dict) for k in section}
    assert not new & flat
    assert ExperimentConfig().digest() == "44136fa355"


@pytest.mark.parametrize("override, message", [
    ({"student__lucky_nodes": 5}, "at most the teacher width: layer 0 asks 5 of 4"),
    ({"student__lucky_nodes": [1, 2, 3]}, "student.lucky_nodes has 3 values but the teacher has 2 hidden layers"),
    ({"student__lucky_nodes": -1}, "student.lucky_nodes must be >= 0"),
    ({"student__lucky_noise": 0.1}, "student.lucky_noise needs student.lucky_nodes > 0"),
    ({"student__lucky_nodes": 2, "student__lucky_noise": -0.1}, "student.lucky_noise: Input should be greater than or equal to 0"),
])
def test_bad_lucky_settings(override, message):
    with pytest.raises(UserError, match=message):
        tiny(**override)
