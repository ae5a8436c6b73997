"""The papers' ablations, each checked to really do what its config field says.

Teacher: firing fractions, strength decay, discrete vs Gaussian weights, BatchNorm with
fixed statistics, leaky ReLU, no biases. Student: BatchNorm, multiplier, lucky by
construction. Data: fixed set vs fresh samples every epoch.
"""

from __future__ import annotations

import pytest
import torch
from conftest import pre_activations, tiny

from teacherstudent.config import ExperimentConfig
from teacherstudent.data import DataSource
from teacherstudent.seeds import generator
from teacherstudent.ensemble import Ensemble
from teacherstudent.errors import UserError
from teacherstudent.inputs import make_inputs
from teacherstudent.simulate import Simulation
from teacherstudent.train import member_loss
from teacherstudent.teacher import make_teacher

CPU = torch.device("cpu")


def teacher_of(cfg: ExperimentConfig):
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    return make_teacher(cfg.teacher, inputs), inputs


def fresh_x(inputs, n: int = 20_000) -> torch.Tensor:
    return inputs.sample(n, generator(123, 7))



# ---- teacher -------------------------------------------------------------

@pytest.mark.parametrize("firing", [(0.1, 0.3), (0.5, 0.5), (0.8, 0.2)])
def test_teacher_firing_fraction_per_layer_holds_on_fresh_inputs(firing):
    teacher, inputs = teacher_of(tiny(teacher__firing=list(firing)))
    hidden, _ = teacher.forward(fresh_x(inputs))
    for h, target in zip(hidden, firing):
        frac = (h > 0).double().mean(0)
        assert torch.all((frac - target).abs() < 0.03), (frac, target)


def test_sparse_firing_means_negative_biases_on_zero_mean_inputs():
    teacher, _ = teacher_of(tiny(teacher__firing=0.1))
    assert torch.all(teacher.biases[0] < 0)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_strength_decay_divides_column_i_above_the_first_layer_by_1_plus_i_to_the_p(p):
    t0, _ = teacher_of(tiny())
    tp, _ = teacher_of(tiny(teacher__strength_decay=p))
    assert torch.equal(t0.weights[0], tp.weights[0])  # the lowest layer is untouched
    scale = (1.0 + torch.arange(4, dtype=torch.float64)) ** -p
    assert torch.allclose(tp.weights[1], t0.weights[1] * scale)
    # the output layer: the same decay, up to one standardisation factor c_r per output row
    decayed = t0.weights[-1] * (1.0 + torch.arange(6, dtype=torch.float64)) ** -p
    c = (tp.weights[-1] * decayed).sum(1) / decayed.square().sum(1)
    assert torch.allclose(tp.weights[-1], c[:, None] * decayed)
    fan_out = tp.weights[1].norm(dim=0) / t0.weights[1].norm(dim=0)
    assert torch.all(fan_out[1:] < fan_out[:-1])  # node 0 strongest


def test_discrete_weights_come_from_the_grid_and_gaussian_ones_do_not():
    cfg = tiny(teacher__widths=[30], teacher__outputs=3, teacher__d=12)
    discrete, _ = teacher_of(cfg)
    gaussian, _ = teacher_of(cfg.replace(teacher={"weights": "gaussian"}))
    for row in discrete.weights[0]:
        # row = v / |v| with v on the grid {-1, -0.75, ..., 1}: scaled so its largest entry is k/4, it is on the grid
        grid = row / row.abs().max()
        assert any(torch.allclose(grid * k, (grid * k).round(), atol=1e-9) for k in (1, 2, 3, 4))
        assert len(set((grid.abs() * 12).round().tolist())) <= 5
    for row in gaussian.weights[0]:
        assert len(set(row.abs().tolist())) == 12
    assert torch.allclose(discrete.weights[0].norm(dim=1), torch.ones(30, dtype=torch.float64))


def test_teacher_batchnorm_normalises_every_layers_pre_activation():
    plain, inputs = teacher_of(tiny(teacher__widths=[5, 6, 7]))
    bn, _ = teacher_of(tiny(teacher__widths=[5, 6, 7], teacher__batchnorm=True))
    ref = inputs.sample(2000, torch.Generator().manual_seed(0))  # the teacher's reference set (its first draw)
    for z in pre_activations(bn, ref):  # fixed statistics: exactly unit variance where they were taken
        assert torch.allclose(z.std(0), torch.ones(z.shape[1], dtype=torch.float64), atol=1e-9)
    x = fresh_x(inputs)
    for z in pre_activations(bn, x):
        assert torch.allclose(z.std(0), torch.ones(z.shape[1], dtype=torch.float64), atol=0.1)
    assert torch.allclose(pre_activations(plain, x)[0].std(0), torch.full((5,), 10.0, dtype=torch.float64), atol=0.3)
    hidden, _ = bn.forward(x)
    assert all(torch.all(((h > 0).double().mean(0) - 0.5).abs() < 0.03) for h in hidden)  # biases still tuned


def test_leaky_teacher_passes_slope_times_negative_pre_activations():
    teacher, inputs = teacher_of(tiny(teacher__leaky_slope=0.1))
    x = fresh_x(inputs, 2000)
    hidden, _ = teacher.forward(x)
    for z, h in zip(pre_activations(teacher, x), hidden):
        assert torch.allclose(h, torch.where(z > 0, z, 0.1 * z))
        assert (h < 0).any()
    relu, _ = teacher_of(tiny())
    assert all((h >= 0).all() for h in relu.forward(x)[0])


def test_no_bias_teacher_has_zero_hidden_biases_and_fires_half_the_time_at_the_bottom():
    teacher, inputs = teacher_of(tiny(teacher__bias=False))
    assert all(torch.all(b == 0) for b in teacher.biases[:-1])
    h0 = teacher.forward(fresh_x(inputs))[0][0]
    assert torch.all(((h0 > 0).double().mean(0) - 0.5).abs() < 0.03)
    with pytest.raises(UserError, match="firing fractions need biases"):
        tiny(teacher__bias=False, teacher__firing=0.2)


# ---- student and data ----------------------------------------------------

@pytest.mark.parametrize("multiplier", [1, 4])
def test_student_widths_are_multiplier_times_teacher_widths(multiplier):
    sim = Simulation(tiny(student__multiplier=multiplier), CPU)
    assert sim.widths == [4 * multiplier, 6 * multiplier]
    assert [w.shape[1] for w in sim.ens.weights[:-1]] == [4 * multiplier, 6 * multiplier]


def test_student_batchnorm_trains_its_affine_and_running_statistics():
    sim = Simulation(tiny(student__batchnorm=True, training__dtype="float64"), CPU)
    assert sim.ens.batchnorm and not sim.fast
    x = sim.data.x_eval
    before = sim.ens.output(x, train=False).detach().clone()
    loss0 = member_loss(sim.cfg.training.loss)(sim.ens.output(x), sim.data.y_eval).detach()
    sim.train_until(16)
    gamma, running_mean = sim.ens.bn_params[0], sim.ens.bn_buffers[0]
    assert not torch.allclose(gamma, torch.ones_like(gamma))
    assert running_mean.abs().max() > 0
    after = sim.ens.output(x, train=False).detach()
    assert not torch.allclose(before, after)
    assert torch.all(member_loss(sim.cfg.training.loss)(after, sim.data.y_eval) < loss0)


def test_fixed_set_is_reshuffled_while_fresh_draws_new_samples_every_epoch():
    def epochs(fresh: bool):
        cfg = tiny(inputs__fresh=fresh)
        teacher, inputs = teacher_of(cfg)
        data = DataSource(cfg, teacher, inputs, CPU, torch.float64)
        (x0, y0), (x1, y1) = data.epoch(0), data.epoch(1)
        assert torch.equal(y0, teacher(x0)) and torch.equal(y1, teacher(x1))
        return x0, x1

    x0, x1 = epochs(False)
    assert not torch.equal(x0, x1) and torch.equal(x0[torch.argsort(x0[:, 0])], x1[torch.argsort(x1[:, 0])])
    x0, x1 = epochs(True)
    assert not torch.isin(x0[:, 0], x1[:, 0]).any()


# ---- lucky by construction -------------------------------------------------

def test_lucky_nodes_without_noise_compute_the_teachers_hidden_nodes_exactly():
    cfg = tiny(student__lucky_nodes=[4, 6], training__dtype="float64")
    sim = Simulation(cfg, CPU)
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
    sim = Simulation(cfg, CPU)
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
    sim = Simulation(cfg, CPU)
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
