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


@pytest.mark.parametrize("loss", ["mse", "mse_half_sum", "ce"])
def test_bf16_gradients_match_float64_to_bfloat16_precision(loss):
    params, x, y, labels = _problem()
    target = labels if loss == "ce" else y
    loss64, g64 = fast.loss_and_grads(params, x, target, loss)
    p32 = [p.float() for p in params]
    t32 = labels if loss == "ce" else y.float()
    loss16, g16 = fast.loss_and_grads(p32, x.float(), t32, loss, mm_dtype=BF16)
    _, g32 = fast.loss_and_grads(p32, x.float(), t32, loss)
    assert loss16.dtype == torch.float32 and all(g.dtype == torch.float32 for g in g16)
    assert _rel(loss16, loss64) < 1e-2
    errs = [_rel(a, b) for a, b in zip(g16, g64)]
    assert max(errs) < 0.15  # bfloat16 keeps 8 bits; the small weight gradients are sums that cancel
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


def test_bf16_chunked_step_equals_the_whole_step():
    params, x, y, _ = _problem(K=5)
    whole, chunked = [p.float() for p in params], [p.float() for p in params]
    v1 = fast.sgd_step(whole, x.float(), y.float(), "mse", 0.1, mm_dtype=BF16)
    v2 = fast.sgd_step_chunked(chunked, x.float(), y.float(), "mse", 0.1, 2, mm_dtype=BF16)
    torch.testing.assert_close(v1, v2, rtol=1e-2, atol=1e-6)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-4)


def test_bf16_on_float32_weights_leaves_a_float64_run_in_float64():
    params, x, y, _ = _problem()
    start = [p.clone() for p in params]
    fast.sgd_step(params, x, y, "mse", 0.1, mm_dtype=BF16)
    assert all(p.dtype == torch.float64 for p in params)
    assert all(not torch.equal(p, p0) for p, p0 in zip(params, start))


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


def test_precision_full_keeps_run_ids_and_bf16_gets_its_own():
    assert tiny().run_id == tiny(training__precision="full").run_id
    assert tiny(training__precision="bf16").run_id != tiny().run_id
    assert "precision" not in tiny().canonical().get("training", {})


@pytest.mark.parametrize("fields", [{"training.backend": "autograd"}, {"student.batchnorm": True}])
def test_bf16_where_the_fast_path_does_not_run_is_a_config_error(fields, tmp_path):
    overrides = [f"{k}={v!r}".replace("True", "true") for k, v in fields.items()]
    with pytest.raises(UserError, match="fast path only"):
        tiny("training.precision='bf16'", *overrides)
    result = invoke("run", *cli_sets("training.precision='bf16'", *overrides), "--out", tmp_path / "runs")
    assert_user_error(result)
    assert "precision" in result.stderr and not (tmp_path / "runs").exists()
