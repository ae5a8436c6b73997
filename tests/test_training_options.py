"""Training options (optimisers, schedules and warm-up, clipping, label smoothing, dropout,
student inits, early stopping) against their torch references: K separately trained
``nn.Module`` students with their own ``torch.optim`` optimiser, ``torch.optim.lr_scheduler``,
``torch.nn.utils.clip_grad_norm_``, ``F.cross_entropy(label_smoothing=)``, ``torch.nn.init``,
in float64, on the fast (fused or not) and the autograd path."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from teacherstudent.config import StudentConfig
from teacherstudent.ensemble import as_modules, init_member
from teacherstudent.seeds import Stream, generator, seeded
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run
from teacherstudent.train import lr_at

from conftest import reference_optimizer, tiny

CPU = torch.device("cpu")
# 3 members, 500 samples in batches of 64: 8 steps per epoch (the last batch has 52 samples), 3 epochs
REF = ("training.dtype=float64", "inputs.train_samples=500", "training.epochs=3", "student.seeds=[0, 1, 2]")


# ---- schedules -------------------------------------------------------------------------------

def torch_lrs(t, spe: int, total: int) -> list[float]:
    """The rate of every step from ``torch.optim.lr_scheduler``, times a ``LinearLR`` warm-up."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=t.lr)
    if t.schedule == "exponential":
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=t.gamma ** (1 / spe))
    elif t.schedule == "cyclic":
        sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=t.min_lr, max_lr=t.lr, step_size_up=t.half_cycle_steps,
                                                  mode="triangular", cycle_momentum=False)
    elif t.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t.lr, total_steps=total, pct_start=t.pct_start,
                                                    div_factor=t.div_factor, final_div_factor=t.final_div_factor,
                                                    cycle_momentum=False)
    else:
        assert t.schedule == "constant"
        sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)
    w = t.warmup_steps or t.warmup_epochs * spe
    wopt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    warm = torch.optim.lr_scheduler.LinearLR(wopt, start_factor=1 / w, end_factor=1.0, total_iters=w - 1) if w > 1 else None
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"] * (wopt.param_groups[0]["lr"] if w > 1 else 1.0))
        opt.step()
        sched.step()
        if warm is not None:
            wopt.step()
            warm.step()
    return lrs


SCHEDULE_CASES = {
    "exponential": ("training.schedule=exponential", "training.gamma=0.5"),
    "cyclic": ("training.schedule=cyclic", "training.min_lr=0.01", "training.half_cycle_steps=7", "training.lr=0.2"),
    "onecycle": ("training.schedule=onecycle", "training.pct_start=0.25", "training.div_factor=10.0",
                 "training.final_div_factor=100.0"),
    "warmup-constant": ("training.warmup_steps=10",),
    "warmup-epochs-exponential": ("training.schedule=exponential", "training.gamma=0.8", "training.warmup_epochs=2"),
    "warmup-onecycle": ("training.schedule=onecycle", "training.warmup_steps=5"),
    "warmup-cyclic": ("training.schedule=cyclic", "training.half_cycle_steps=4", "training.warmup_steps=3"),
}


@pytest.mark.parametrize("case", list(SCHEDULE_CASES))
def test_schedules_equal_torch_lr_schedulers(case):
    cfg = tiny("training.epochs=6", *SCHEDULE_CASES[case])
    spe, total = cfg.steps_per_epoch, cfg.total_steps
    ours = [lr_at(cfg.training, s, spe, total) for s in range(total)]
    ref = torch_lrs(cfg.training, spe, total)
    assert len({round(v, 12) for v in ours}) >= 5  # the rate really changes
    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), torch.tensor(ref, dtype=torch.float64),
                               rtol=1e-12, atol=1e-15)


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule():
    cfg = tiny("training.warmup_steps=4", "training.lr=0.4")
    t = cfg.training
    assert [lr_at(t, s, 8, 16) for s in range(6)] == [0.1, 0.2, 0.30000000000000004, 0.4, 0.4, 0.4]


# ---- the reference: K ordinary students with torch's optimisers, clipping and losses ----------

class MaskDropout(torch.nn.Module):
    """Dropout with the masks given from outside (``nn.Dropout``'s arithmetic: ``x * mask / (1 - p)``)."""

    def __init__(self, p: float):
        super().__init__()
        self.p, self.mask = p, None

    def forward(self, x):
        return x * self.mask.to(x.dtype).div(1 - self.p)


def with_dropout(net: torch.nn.Sequential, p: float) -> torch.nn.Sequential:
    layers = []
    for m in net:
        layers.append(m)
        if isinstance(m, torch.nn.ReLU):
            layers.append(MaskDropout(p))
    return torch.nn.Sequential(*layers)


def train_reference(sim, nets, steps: int) -> None:
    """Train each net alone on the simulation's batches, with torch's optimiser, schedulers,
    clipping, loss, and dropout masks drawn from the member's own stream as the stepper draws them."""
    t, B, spe = sim.cfg.training, sim.cfg.training.batch_size, sim.steps_per_epoch
    opts = [reference_optimizer(net.parameters(), t) for net in nets]
    lrs = torch_lrs(t, spe, sim.total_steps)
    gens = [generator(s, Stream.DROPOUT) for s in sim.cfg.student.seeds]
    for step in range(steps):
        epoch, pos = divmod(step, spe)
        x, y = sim.data.epoch(epoch)
        xb, yb = x[pos * B:(pos + 1) * B], y[pos * B:(pos + 1) * B]
        for net, opt, gen in zip(nets, opts, gens):
            for m in net:
                if isinstance(m, MaskDropout):
                    m.mask = torch.rand(xb.shape[0], m_width(net, m), generator=gen) < 1 - t.dropout
            for g in opt.param_groups:
                g["lr"] = lrs[step]
            opt.zero_grad()
            out = net(xb)
            loss = F.mse_loss(out, yb) if t.loss == "mse" else F.cross_entropy(out, yb, label_smoothing=t.label_smoothing)
            loss.backward()
            if t.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), t.clip_norm)
            opt.step()


def m_width(net: torch.nn.Sequential, drop: torch.nn.Module) -> int:
    i = list(net).index(drop)
    return net[i - 2].out_features


def assert_matches(sim, nets, atol: float = 1e-10) -> None:
    for k, net in enumerate(nets):
        lins = [m for m in net if isinstance(m, torch.nn.Linear)]
        for l, lin in enumerate(lins):
            torch.testing.assert_close(sim.ens.weights[l][k].detach(), lin.weight.detach(), rtol=0, atol=atol)
            torch.testing.assert_close(sim.ens.biases[l][k].detach(), lin.bias.detach(), rtol=0, atol=atol)


TRAINING_CASES = {
    "adamw": ("training.optimizer=adamw", "training.lr=0.01", "training.weight_decay=0.1", "training.betas=[0.8, 0.99]"),
    "rmsprop": ("training.optimizer=rmsprop", "training.lr=0.002", "training.alpha=0.9", "training.weight_decay=0.01"),
    "rmsprop-centered-momentum": ("training.optimizer=rmsprop", "training.lr=0.001", "training.momentum=0.5",
                                  "training.centered=true"),
    "adagrad": ("training.optimizer=adagrad", "training.lr=0.05", "training.lr_decay=0.01", "training.weight_decay=0.01"),
    "clip-sgd": ("training.clip_norm=0.05", "training.lr=0.2"),
    "clip-adam-warmup-onecycle": ("training.optimizer=adam", "training.lr=0.01", "training.clip_norm=0.1",
                                  "training.schedule=onecycle", "training.warmup_steps=4"),
    "smoothing-ce-cyclic": ("training.loss=ce", "training.label_smoothing=0.2", "training.lr=0.3",
                            "training.schedule=cyclic", "training.half_cycle_steps=5", "training.min_lr=0.05"),
    "dropout-sgd": ("training.dropout=0.3", "training.lr=0.1"),
    "dropout-momentum-clip-ce": ("training.dropout=0.2", "training.momentum=0.9", "training.clip_norm=0.5",
                                 "training.loss=ce", "training.label_smoothing=0.1", "training.lr=0.1"),
}


@pytest.mark.parametrize("backend", ["autograd", "fast"])
@pytest.mark.parametrize("case", list(TRAINING_CASES))
def test_ensemble_with_option_equals_separately_trained_modules(case, backend):
    cfg = tiny(*REF, *TRAINING_CASES[case], f"training.backend={backend}")
    sim = Trainer(build(cfg, CPU))
    t = cfg.training
    plain_sgd = t.optimizer == "sgd" and t.momentum == 0 and t.clip_norm is None
    assert sim.backend == ("autograd" if backend == "autograd" else "fused_sgd" if plain_sgd else "fast")
    nets = as_modules(sim.ens)
    if t.dropout:
        nets = [with_dropout(net, t.dropout) for net in nets]
    init = [p.detach().clone() for p in sim.ens.params]
    sim.train_until(11)  # stop mid-epoch: the dropout streams and the batch stream carry on
    sim.train_until(sim.total_steps)
    train_reference(sim, nets, sim.total_steps)
    assert_matches(sim, nets)
    for p, p0 in zip(sim.ens.params, init):  # it really trained
        assert ((p.detach() - p0).flatten(1).abs().amax(1) > 1e-5).all()


def test_clipping_acts_per_member():
    """Clipping really bites (a member far over the threshold is scaled, not the others):
    the same run without clipping ends elsewhere, and each member's clip uses its own norm."""
    from teacherstudent.train import clip_per_member_

    g = [torch.tensor([[3.0, 0.0], [0.0, 0.1]], dtype=torch.float64), torch.tensor([[4.0], [0.0]], dtype=torch.float64)]
    norms = clip_per_member_(g, 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.1], dtype=torch.float64))
    torch.testing.assert_close(g[0][0], torch.tensor([3.0, 0.0], dtype=torch.float64) / (5 + 1e-6))
    assert g[0][1, 1] == 0.1 and g[1][1, 0] == 0.0  # member 1 under the threshold: untouched


def test_dropout_masks_are_nn_dropouts_and_depend_on_the_member_seed_only():
    """Masks take nn.Dropout's values (0 or 1/(1-p)), keep about 1-p of the nodes, and member
    seed 5's masks are the same whether it trains alone or beside other members."""
    p = 0.25
    pair = Trainer(build(tiny("student.seeds=[3, 5]", f"training.dropout={p}"), CPU))
    alone = Trainer(build(tiny("student.seeds=[5]", f"training.dropout={p}"), CPU))
    m2, m1 = pair.stepper.masks(64), alone.stepper.masks(64)
    ref = F.dropout(torch.ones(10_000, dtype=m2[0].dtype), p=p, training=True)  # nn.Dropout's two values
    for a, b in zip(m2, m1):
        assert torch.equal(a[1], b[0])
        assert set(a.unique().tolist()) == set(ref.unique().tolist())
    keep = torch.cat([(m != 0).flatten() for m in m2]).double().mean()
    assert abs(keep - (1 - p)) < 0.03
    assert pair.stepper.masks(64)[0].ne(m2[0]).any()  # a fresh mask every step


def test_dropout_run_resumes_bit_identical(tmp_path):
    cfg = tiny("training.dropout=0.3", "training.momentum=0.9", "measure.every='steps'", "measure.every_steps=4")
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=6))
    assert json.loads((part / "status.json").read_text())["state"] == "interrupted"
    part = run(cfg, RunOptions(tmp_path / "b", "cpu"))
    a, b = (torch.load(f / "checkpoints" / "final.pt", weights_only=False) for f in (whole, part))
    for x, y in zip(a["weights"], b["weights"]):
        assert torch.equal(x, y)


# ---- student initialisation ---------------------------------------------------------------------

INIT_REF = {
    "kaiming_normal": lambda w, g: torch.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu", generator=g),
    "kaiming_uniform": lambda w, g: torch.nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu", generator=g),
    "xavier_normal": lambda w, g: torch.nn.init.xavier_normal_(w, generator=g),
    "xavier_uniform": lambda w, g: torch.nn.init.xavier_uniform_(w, generator=g),
    "orthogonal": lambda w, g: torch.nn.init.orthogonal_(w, generator=g),
}


@pytest.mark.parametrize("init", list(INIT_REF))
def test_inits_equal_torch_nn_init_on_linear_layers_times_the_scale(init):
    widths, d, outputs, seed, scale = [5, 7], 4, 3, 11, 0.5
    ours = init_member(widths, d, outputs, seed, StudentConfig(init=init, init_scale=scale))
    gen = seeded(seed)
    fan_in = d
    for l, n in enumerate([*widths, outputs]):
        lin = torch.nn.Linear(fan_in, n, dtype=torch.float64)
        with torch.no_grad():
            INIT_REF[init](lin.weight, gen)
        torch.testing.assert_close(ours[2 * l], lin.weight.detach() * scale, rtol=0, atol=0)
        assert torch.equal(ours[2 * l + 1], torch.zeros(n, dtype=torch.float64))
        fan_in = n


@pytest.mark.parametrize("init, std", [("kaiming_normal", lambda n, m: (2 / m) ** 0.5),
                                       ("kaiming_uniform", lambda n, m: (2 / m) ** 0.5),
                                       ("xavier_normal", lambda n, m: (2 / (n + m)) ** 0.5),
                                       ("xavier_uniform", lambda n, m: (2 / (n + m)) ** 0.5)])
def test_init_weight_std_follows_its_definition(init, std):
    n, m, scale = 300, 200, 1.5
    w = init_member([n], m, 2, 0, StudentConfig(init=init, init_scale=scale))[0]
    assert abs(float(w.std()) / (scale * std(n, m)) - 1) < 0.02


def test_orthogonal_init_has_orthonormal_rows_times_the_scale():
    w = init_member([6], 9, 2, 0, StudentConfig(init="orthogonal", init_scale=2.0))[0]
    torch.testing.assert_close(w @ w.T, 4 * torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_existing_inits_keep_their_exact_numbers():
    """Sums of every tensor, pinned from the version before the new inits (float.hex, exact)."""
    pinned = {
        (): ['0x1.744aa52712000p-9', '0x1.175aecb821568p+0', '-0x1.43e9a68624eeep+0', '0x1.4b33c5e38e4eap-1',
             '0x1.2f01300c58aeep+0', '-0x1.b93f1b4d69820p-8'],
        (("init", "scaled"), ("init_scale", 0.5)): ['-0x1.c6993e030012dp-1', '0x0.0p+0', '-0x1.d993d4969f2a0p-1',
                                                    '0x0.0p+0', '0x1.7280910617eefp+0', '0x0.0p+0'],
        (("init", "normal"), ("init_std", 0.3)): ['-0x1.10c25868333e6p+0', '0x0.0p+0', '-0x1.3daf77aa2efa9p+0',
                                                  '0x0.0p+0', '0x1.2613b73b6ab99p+1', '0x0.0p+0'],
    }
    for kw, sums in pinned.items():
        ps = init_member([5, 7], 4, 3, 11, StudentConfig(**dict(kw)))
        assert [float(p.sum()).hex() for p in ps] == sums
    scaled = init_member([5, 7], 4, 3, 11, StudentConfig(init_scale=0.25))  # pytorch's init times a scale
    plain = init_member([5, 7], 4, 3, 11, StudentConfig())
    for l in range(3):
        assert torch.equal(scaled[2 * l], plain[2 * l] * 0.25) and torch.equal(scaled[2 * l + 1], plain[2 * l + 1])


# ---- early stopping -----------------------------------------------------------------------------

def test_early_stopping_freezes_a_member_and_records_it(tmp_path):
    """A min_delta no fall of the eval loss reaches: every member stops after patience=2
    measurements, status.json says when and why, and the weights moved until then."""
    cfg = tiny("student.seeds=[0, 1, 2]", "training.epochs=6", "training.early_stop_patience=2",
               "training.early_stop_min_delta=0.5")  # a fall of 0.5 in eval loss never comes: everyone stops
    folder = run(cfg, RunOptions(tmp_path, "cpu"))
    st = json.loads((folder / "status.json").read_text())
    assert st["state"] == "finished"
    assert [m["status"] for m in st["members"]] == ["stopped_early"] * 3
    # eval loss 1.6, 2.0, 1.5 at init, ~0.9 after epoch 1 (a fall of more than 0.5), then less than 0.1
    # per epoch: epochs 2 and 3 are the two measurements without a fall
    assert {m["step"] for m in st["members"]} == {3 * cfg.steps_per_epoch}
    assert all("2 measurements" in m["reason"] for m in st["members"])
    final = torch.load(folder / "checkpoints" / "final.pt", weights_only=False)["weights"]
    sim = Trainer(build(cfg, CPU))
    sim.train_until(3 * cfg.steps_per_epoch)  # the weights at the stop, kept to the end bit for bit
    assert all(torch.equal(a, b) for a, b in zip(final, sim.weights()))


def test_early_stopping_stops_only_the_members_that_stall():
    from teacherstudent.callbacks import StopEarly

    sim = Trainer(build(tiny("student.seeds=[0, 1, 2]", "training.epochs=4"), CPU))
    cb = StopEarly(2, 0.01)
    sim.last_eval_loss = (0, torch.tensor([1.0, 1.0, 1.0]))
    cb.on_start(sim)
    for step, losses in ((8, [0.5, 0.995, 0.9]), (16, [0.4, 0.999, 0.95]), (24, [0.3, 0.98, 0.95])):
        sim.train_until(step)
        sim.last_eval_loss = (step, torch.tensor(losses))
        cb.on_event(sim, step)
    # member 1 never falls by more than 0.01 below 1.0; member 2 stalls after its 0.9
    assert cb.stopped.tolist() == [-1, 16, 24] and sim.dead.tolist() == [False, True, True]
    before = [p.detach().clone() for p in sim.ens.params]
    sim.train_until(sim.total_steps)
    for p, b in zip(sim.ens.params, before):
        assert torch.equal(p[1:], b[1:]) and not torch.equal(p[0], b[0])


def test_early_stopping_resumes_bit_identical(tmp_path):
    # eval loss falls per epoch: member 0 .13 .14 .18 .12 .064, member 1 .11 .094 .097 .06 .044
    cfg = tiny("training.epochs=6", "training.early_stop_patience=1", "training.early_stop_min_delta=0.07",
               "training.optimizer=adam", "training.lr=0.01")
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=20))  # interrupted at step 24
    part = run(cfg, RunOptions(tmp_path / "b", "cpu"))
    sa, sb = (json.loads((f / "status.json").read_text())["members"] for f in (whole, part))
    assert sa == sb and [m.get("step") for m in sa] == [48, 40]
    a, b = (torch.load(f / "checkpoints" / "final.pt", weights_only=False) for f in (whole, part))
    assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"]))
