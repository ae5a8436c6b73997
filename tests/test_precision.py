"""``training.precision='bf16'``: the fast paths' matmuls in bfloat16 with the weights, their update
and the loss in the run's dtype (fast.py). Tested against the float64 step (the numbers move by
bfloat16's precision, more than float32's), against itself across the fused and unfused paths, and
as a config field that keeps every existing run id and is refused where it cannot run."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_user_error, cli_sets, invoke, tiny
from teacherstudent import fast
from teacherstudent.build import build
from teacherstudent.errors import UserError
from teacherstudent.simulate import Trainer
from teacherstudent.steppers import make_stepper

BF16 = torch.bfloat16


def _problem(K=3, dims=(5, 7, 6, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    params = []
    for i, o in zip(dims[:-1], dims[1:]):
        params += [torch.randn(K, o, i, generator=g, dtype=torch.float64) / i ** 0.5,
                   torch.randn(K, o, generator=g, dtype=torch.float64) * 0.1]
    x = torch.randn(32, dims[0], generator=g, dtype=torch.float64)
    y = torch.randn(32, dims[-1], generator=g, dtype=torch.float64)
    labels = torch.randint(0, dims[-1], (32,), generator=g)
    return params, x, y, labels


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).norm() / b.norm()).item()


@pytest.mark.parametrize("loss,smoothing,per_member", [("mse", 0.0, False), ("mse_half_sum", 0.0, False),
                                                       ("ce", 0.0, False), ("ce", 0.1, False), ("mse", 0.0, True),
                                                       ("ce", 0.0, True)])
def test_bf16_gradients_match_float64_to_bfloat16_precision(loss, smoothing, per_member):
    params, x, y, labels = _problem()
    if per_member:  # one teacher per member: targets [K, B, C] / [K, B]
        y, labels = y.expand(3, -1, -1) * torch.tensor([1.0, -0.5, 2.0], dtype=y.dtype)[:, None, None], labels.expand(3, -1)
    target = labels if loss == "ce" else y
    loss64, g64 = fast.loss_and_grads(params, x, target, loss, smoothing=smoothing)
    p32 = [p.float() for p in params]
    t32 = labels if loss == "ce" else y.float()
    loss16, g16 = fast.loss_and_grads(p32, x.float(), t32, loss, smoothing=smoothing, mm_dtype=BF16)
    _, g32 = fast.loss_and_grads(p32, x.float(), t32, loss, smoothing=smoothing)
    assert loss16.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g16)
    assert _rel(loss16, loss64) < 1e-2
    errs = [_rel(a, b) for a, b in zip(g16, g64)]
    assert max(errs) < 0.25  # bfloat16 keeps 8 bits; the small weight gradients are sums that cancel (a bug: ~1)
    # the matmuls really ran in bfloat16: the error is far above float32's
    assert max(errs) > 20 * max(_rel(a, b) for a, b in zip(g32, g64))


def test_bf16_fused_step_is_the_gradients_then_sgd_with_dropout_and_per_member_rates():
    params, x, y, _ = _problem(K=4)
    g = torch.Generator().manual_seed(3)
    masks = [(torch.rand(4, 32, n, generator=g) < 0.8).float() / 0.8 for n in (7, 6)]
    lr = ((0, 1, 0.05), (1, 4, 0.2))  # per-member rates (a wide pack)
    fused = [p.float() for p in params]
    fast.sgd_step(fused, x.float(), y.float(), "mse", lr, masks, mm_dtype=BF16)
    plain = [p.float() for p in params]
    _, grads = fast.loss_and_grads(plain, x.float(), y.float(), "mse", masks=masks, mm_dtype=BF16)
    for p, gr in zip(plain, grads):
        p[:1].sub_(0.05 * gr[:1])
        p[1:].sub_(0.2 * gr[1:])
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("groups", [None, ((0, 1), (1, 5))])
def test_bf16_chunked_step_equals_the_whole_step(groups):
    params, x, y, _ = _problem(K=5)
    whole, chunked, full = ([p.float() for p in params] for _ in range(3))
    v1 = fast.sgd_step(whole, x.float(), y.float(), "mse", 0.1, mm_dtype=BF16)
    v2 = fast.sgd_step_chunked(chunked, x.float(), y.float(), "mse", 0.1, 2, groups=groups, mm_dtype=BF16)
    fast.sgd_step_chunked(full, x.float(), y.float(), "mse", 0.1, 2, groups=groups)
    torch.testing.assert_close(v1, v2, rtol=1e-2, atol=1e-6)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)
    # the chunks ran in bfloat16 (not the full-precision step)
    assert max((a - b).abs().max().item() for a, b in zip(chunked, full)) > 1e-4
    _, grads = fast.loss_and_grads_chunked([p.float() for p in params], x.float(), y.float(), "mse", 2, groups=groups,
                                           mm_dtype=BF16)
    _, grads16 = fast.loss_and_grads([p.float() for p in params], x.float(), y.float(), "mse", mm_dtype=BF16)
    _, grads32 = fast.loss_and_grads([p.float() for p in params], x.float(), y.float(), "mse")
    assert all(_rel(a, b.double()) < 1e-2 for a, b in zip(grads, grads16))
    assert max(_rel(a, b.double()) for a, b in zip(grads, grads32)) > 1e-4


def test_bf16_leaves_a_float64_run_in_float64():
    params, x, y, _ = _problem()
    full = [p.clone() for p in params]
    fast.sgd_step(params, x, y, "mse", 0.1, mm_dtype=BF16)
    fast.sgd_step(full, x, y, "mse", 0.1)
    assert all(p.dtype == torch.float64 for p in params)
    errs = [_rel(p, q) for p, q in zip(params, full)]
    assert max(errs) < 1e-2 and min(errs) > 0  # float64 masters, moved by the bfloat16 step


@pytest.mark.parametrize("training", [{}, {"momentum": 0.9}])
def test_a_bf16_run_trains_on_the_fast_paths(training):
    fields = {f"training__{k}": v for k, v in training.items()}
    cfg = tiny(training__precision="bf16", training__epochs=6, **fields)
    problem = build(cfg, torch.device("cpu"))
    stepper = make_stepper(problem)
    assert stepper.name == ("fast" if training else "fused_sgd") and stepper.mm_dtype is BF16
    tr = Trainer(problem)
    first = tr.snapshot().eval_loss
    tr.train_until(cfg.total_steps)
    assert (tr.snapshot().eval_loss < 0.9 * first).all()
    assert all(p.dtype == torch.float32 for p in tr.ens.params)
    full = Trainer(build(cfg.replace(training={"precision": "full"}), torch.device("cpu")))
    full.train_until(cfg.total_steps)
    errs = [_rel(p, q.double()) for p, q in zip(tr.ens.params, full.ens.params)]
    assert 0 < max(errs) < 0.3  # the Trainer's steps ran in bfloat16: apart from the float32 run, not far


def test_precision_full_keeps_run_ids_and_bf16_gets_its_own():
    assert tiny().run_id == tiny(training__precision="full").run_id
    assert tiny(training__precision="bf16").run_id != tiny().run_id
    assert "precision" not in tiny().canonical().get("training", {})


@pytest.mark.parametrize("fields", [{"training.backend": "autograd"}, {"student.batchnorm": True},
                                    {"arch": "conv", "inputs.kind": "gaussian_images"}])
def test_bf16_where_the_fast_path_does_not_run_is_a_config_error(fields, tmp_path):
    overrides = [f"{k}={v!r}".replace("True", "true") for k, v in fields.items()]
    with pytest.raises(UserError, match="fast path only"):
        tiny("training.precision='bf16'", *overrides)
    result = invoke("run", *cli_sets("training.precision='bf16'", *overrides), "--out", tmp_path / "runs")
    assert_user_error(result)
    assert "precision" in result.stderr and not (tmp_path / "runs").exists()
