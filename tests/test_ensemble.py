"""The stacked ensemble against ordinary per-student ``nn.Module``s.

The key reference test: K students trained together through ``Trainer.train_until`` end
where K separately trained ``nn.Sequential`` students end, each with its own ``torch.optim``
optimiser, fed the same batches in the same order, to ~1e-10 in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from teacherstudent.config import StudentConfig
from teacherstudent.ensemble import Ensemble, as_modules, init_member
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.train import member_loss

from conftest import reference_optimizer, tiny

CPU = torch.device("cpu")

# 500 samples in batches of 64: 8 steps per epoch, the last batch has 52 samples.
REF = ("training.dtype=float64", "inputs.train_samples=500", "training.epochs=4", "student.seeds=[0, 1, 2]")


# ---- the reference: K ordinary students ------------------------------------------------------

def hand_lr(t, step: int, steps_per_epoch: int, total: int) -> float:
    """The schedule written out independently of ``train.lr_at``."""
    epoch = step // steps_per_epoch
    if t.schedule == "constant":
        return t.lr
    if t.schedule == "piecewise":
        return t.milestones[max(e for e in t.milestones if e <= epoch)]
    if t.schedule == "step":
        return t.lr * t.gamma ** (epoch // t.step_epochs)
    return t.lr * (1 + math.cos(math.pi * step / total)) / 2


def batchnorm_modules(ens: Ensemble) -> list[torch.nn.Sequential]:
    """Per member: Linear, BatchNorm1d, ReLU, ..., Linear with the ensemble's weights."""
    nets = []
    for k in range(ens.K):
        layers: list[torch.nn.Module] = []
        for l, (w, b) in enumerate(zip(ens.weights, ens.biases)):
            lin = torch.nn.Linear(w.shape[2], w.shape[1], dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w[k])
                lin.bias.copy_(b[k])
            layers.append(lin)
            if l < len(ens.weights) - 1:
                bn = torch.nn.BatchNorm1d(w.shape[1], eps=1e-5, momentum=0.1, dtype=w.dtype)
                with torch.no_grad():
                    bn.weight.copy_(ens.bn_params[2 * l][k])
                    bn.bias.copy_(ens.bn_params[2 * l + 1][k])
                    bn.running_mean.copy_(ens.bn_buffers[2 * l][k])
                    bn.running_var.copy_(ens.bn_buffers[2 * l + 1][k])
                layers += [bn, torch.nn.ReLU()]
        nets.append(torch.nn.Sequential(*layers))
    return nets


def train_reference(sim: Trainer, nets: list[torch.nn.Module], steps: int) -> None:
    """Train each net alone on the simulation's batches, sliced as ``train_until`` slices them."""
    t, B, spe = sim.cfg.training, sim.cfg.training.batch_size, sim.steps_per_epoch
    opts = [reference_optimizer(net.parameters(), t) for net in nets]
    for net in nets:
        net.train()
    for step in range(steps):
        epoch, pos = divmod(step, spe)
        x, y = sim.data.epoch(epoch)
        xb, yb = x[pos * B:(pos + 1) * B], y[pos * B:(pos + 1) * B]
        lr = hand_lr(t, step, spe, sim.total_steps)
        for net, opt in zip(nets, opts):
            for g in opt.param_groups:
                g["lr"] = lr
            opt.zero_grad()
            out = net(xb)
            loss = F.mse_loss(out, yb) if t.loss == "mse" else F.cross_entropy(out, yb)
            loss.backward()
            opt.step()


def assert_matches(sim: Trainer, nets: list[torch.nn.Module], atol: float = 1e-10) -> None:
    linears = [[m for m in net if isinstance(m, torch.nn.Linear)] for net in nets]
    bns = [[m for m in net if isinstance(m, torch.nn.BatchNorm1d)] for net in nets]
    ens = sim.ens
    # A bias feeding a BatchNorm has an exactly-zero true gradient (the batch mean removes it), so
    # its computed gradient is rounding noise (~1e-17) that Adam rescales to steps of ~lr*1e-9:
    # two correct implementations drift apart there by ~1e-10 without any effect on the outputs.
    noisy_bias = ens.batchnorm and sim.cfg.training.optimizer == "adam"
    for k in range(ens.K):
        for l, lin in enumerate(linears[k]):
            torch.testing.assert_close(ens.weights[l][k].detach(), lin.weight.detach(), rtol=0, atol=atol)
            bias_atol = 1e-8 if noisy_bias and l < len(linears[k]) - 1 else atol
            torch.testing.assert_close(ens.biases[l][k].detach(), lin.bias.detach(), rtol=0, atol=bias_atol)
        for l, bn in enumerate(bns[k]):
            torch.testing.assert_close(ens.bn_params[2 * l][k].detach(), bn.weight.detach(), rtol=0, atol=atol)
            torch.testing.assert_close(ens.bn_params[2 * l + 1][k].detach(), bn.bias.detach(), rtol=0, atol=atol)
            mean_atol = 1e-8 if noisy_bias else atol  # the running mean carries that bias
            torch.testing.assert_close(ens.bn_buffers[2 * l][k], bn.running_mean, rtol=0, atol=mean_atol)
            torch.testing.assert_close(ens.bn_buffers[2 * l + 1][k], bn.running_var, rtol=0, atol=atol)


TRAINING_CASES = {
    "sgd-momentum-wd-piecewise-mse": ("training.momentum=0.9", "training.weight_decay=0.001",
                                      "training.schedule=piecewise", "training.milestones={0 = 0.05, 2 = 0.02, 3 = 0.01}"),
    "sgd-nesterov-cosine-ce": ("training.momentum=0.8", "training.nesterov=true", "training.schedule=cosine",
                               "training.loss=ce", "training.lr=0.2"),
    "adam-wd-cosine-mse": ("training.optimizer=adam", "training.lr=0.003", "training.weight_decay=0.01",
                           "training.schedule=cosine", "training.betas=[0.85, 0.99]"),
    "adam-step-ce": ("training.optimizer=adam", "training.lr=0.01", "training.schedule=step",
                     "training.step_epochs=1", "training.gamma=0.5", "training.loss=ce"),
    "sgd-plain-constant-mse": (),
}


@pytest.mark.parametrize("backend", ["autograd", "fast"])
@pytest.mark.parametrize("case", list(TRAINING_CASES))
def test_ensemble_training_equals_separately_trained_modules(case, backend):
    cfg = tiny(*REF, *TRAINING_CASES[case], f"training.backend={backend}")
    sim = Trainer(build(cfg, CPU))
    assert sim.fast == (backend == "fast")
    nets = as_modules(sim.ens)
    init = [p.detach().clone() for p in sim.ens.params]
    assert sim.total_steps == 32 and sim.steps_per_epoch == 8
    sim.train_until(13)  # stop mid-epoch: the next call must pick up the same batch stream
    sim.train_until(sim.total_steps)
    train_reference(sim, nets, sim.total_steps)
    assert_matches(sim, nets)
    # and it really trained: every member moved
    for p, p0 in zip(sim.ens.params, init):
        assert ((p.detach() - p0).flatten(1).abs().amax(1) > 1e-4).all()


def test_member_chunked_fast_steps_equal_the_modules():
    cfg = tiny(*REF, "training.momentum=0.9", "training.backend=fast")
    sim = Trainer(build(cfg, CPU), 1)  # one member per chunk
    assert sim.stepper.chunk == 1 and sim.measure_chunk == 1
    nets = as_modules(sim.ens)
    sim.train_until(sim.total_steps)
    train_reference(sim, nets, sim.total_steps)
    assert_matches(sim, nets)


@pytest.mark.parametrize("optimizer", [("training.momentum=0.9",), ("training.optimizer=adam", "training.lr=0.01")])
def test_batchnorm_students_train_like_batchnorm1d_modules(optimizer):
    cfg = tiny(*REF, "student.batchnorm=true", *optimizer)
    sim = Trainer(build(cfg, CPU))
    assert not sim.fast
    nets = batchnorm_modules(sim.ens)
    sim.train_until(sim.total_steps)
    train_reference(sim, nets, sim.total_steps)
    assert_matches(sim, nets)
    # evaluation mode uses the running statistics
    x = sim.data.x_eval
    hidden, out = sim.ens.forward(x, train=False)
    for k, net in enumerate(nets):
        net.eval()
        with torch.no_grad():
            torch.testing.assert_close(out[k].detach(), net(x), rtol=0, atol=1e-10)
            torch.testing.assert_close(hidden[0][k].detach(), net[:3](x), rtol=0, atol=1e-10)


def test_fast_backend_with_batchnorm_is_a_user_error():
    from teacherstudent.errors import UserError

    with pytest.raises(UserError, match="batchnorm"):
        Trainer(build(tiny("student.batchnorm=true", "training.backend=fast"), CPU))


# ---- forward -------------------------------------------------------------------------------------

def test_member_forward_equals_its_sequential():
    ens = Ensemble.create([7, 9, 5], 4, 3, StudentConfig(seeds=(3, 1, 4)), CPU, torch.float64)
    x = torch.randn(50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    hidden, out = ens.forward(x)
    assert [tuple(h.shape) for h in hidden] == [(3, 50, 7), (3, 50, 9), (3, 50, 5)]
    assert out.shape == (3, 50, 3)
    xs = torch.randn(3, 50, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _, out_per_member = ens.forward(xs)  # a different input per member
    for k, net in enumerate(as_modules(ens)):
        assert isinstance(net, torch.nn.Sequential) and len(net) == 7  # 4 Linear, 3 ReLU
        with torch.no_grad():
            torch.testing.assert_close(out[k], net(x), rtol=0, atol=1e-12)
            torch.testing.assert_close(out_per_member[k], net(xs[k]), rtol=0, atol=1e-12)
            for l in range(3):
                torch.testing.assert_close(hidden[l][k], net[:2 * l + 2](x), rtol=0, atol=1e-12)


def test_batchnorm_forward_equals_batchnorm1d_in_train_and_eval_mode():
    ens = Ensemble.create([6, 4], 3, 2, StudentConfig(seeds=(0, 1), batchnorm=True), CPU, torch.float64)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial affine parameters
        for p in ens.bn_params:
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    nets = batchnorm_modules(ens)
    for i in range(3):  # a few training-mode batches update the running statistics
        x = torch.randn(17 + i, 3, generator=g, dtype=torch.float64) * 3 + 1
        _, out = ens.forward(x, train=True)
        for k, net in enumerate(nets):
            net.train()
            with torch.no_grad():
                torch.testing.assert_close(out[k], net(x), rtol=0, atol=1e-12)
    for k, net in enumerate(nets):
        bn0 = net[1]
        torch.testing.assert_close(ens.bn_buffers[0][k], bn0.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(ens.bn_buffers[1][k], bn0.running_var, rtol=0, atol=1e-12)
    x = torch.randn(9, 3, generator=g, dtype=torch.float64)
    _, out = ens.forward(x, train=False)
    for k, net in enumerate(nets):
        net.eval()
        with torch.no_grad():
            torch.testing.assert_close(out[k], net(x), rtol=0, atol=1e-12)


# ---- initialisation ------------------------------------------------------------------------------

def test_pytorch_init_is_uniform_within_one_over_sqrt_fan_in():
    params = init_member([200, 150], 120, 40, seed=3, cfg=StudentConfig())
    fan_ins = [120, 200, 150]
    assert [tuple(p.shape) for p in params] == [(200, 120), (200,), (150, 200), (150,), (40, 150), (40,)]
    for l, fan_in in enumerate(fan_ins):
        w, b = params[2 * l], params[2 * l + 1]
        bound = 1 / math.sqrt(fan_in)
        assert w.abs().max() <= bound and b.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # fills the interval
        # U(-a, a) has std a / sqrt(3); thousands of draws: within 3%
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
        assert abs(w.mean().item()) < 0.05 * bound
        assert w.dtype == torch.float64


@pytest.mark.parametrize("scale", [1.0, 0.3, 2.5])
def test_scaled_init_has_std_scale_over_sqrt_fan_in(scale):
    params = init_member([200, 150], 120, 40, seed=5, cfg=StudentConfig(init="scaled", init_scale=scale))
    for l, fan_in in enumerate([120, 200, 150]):
        w, b = params[2 * l], params[2 * l + 1]
        # >= 6,000 Gaussian draws: the sample std is within 3% (about 2.5 standard errors)
        assert w.std().item() == pytest.approx(scale / math.sqrt(fan_in), rel=0.03)
        assert abs(w.mean().item()) < 0.05 * scale / math.sqrt(fan_in)
        assert torch.equal(b, torch.zeros_like(b))


def test_init_is_deterministic_per_seed_and_differs_between_seeds():
    cfg = StudentConfig()
    a, b, c = (init_member([5, 6], 4, 3, s, cfg) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    ens = Ensemble.create([5, 6], 4, 3, StudentConfig(seeds=(1, 0)), CPU, torch.float64)
    assert torch.equal(ens.params[0][1], a[0]) and torch.equal(ens.params[0][0], c[0])  # member order = seed order


# ---- student widths and BatchNorm ---------------------------------------------------------------

@pytest.mark.parametrize("multiplier", [1, 4])
def test_student_widths_are_multiplier_times_teacher_widths(multiplier):
    sim = Trainer(build(tiny(student__multiplier=multiplier), CPU))
    assert sim.widths == [4 * multiplier, 6 * multiplier]
    assert [w.shape[1] for w in sim.ens.weights[:-1]] == [4 * multiplier, 6 * multiplier]


def test_student_batchnorm_trains_its_affine_and_running_statistics():
    sim = Trainer(build(tiny(student__batchnorm=True, training__dtype="float64"), CPU))
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
