"""The teacher generator (docs/science.md §2): rows, bias tuning, strength decay, standardisation."""

from __future__ import annotations


import pytest
import torch
from conftest import pre_activations

from teacherstudent.config import load_config
from teacherstudent.errors import UserError
from teacherstudent.inputs import make_inputs
from teacherstudent.teacher import DISCRETE_VALUES, make_teacher

FRESH = 20_000  # fresh samples for checking firing fractions


def build(*overrides: str):
    cfg = load_config(overrides=list(overrides))
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    return cfg, inputs, make_teacher(cfg.teacher, inputs)


def reference_set(cfg, inputs) -> torch.Tensor:
    """The teacher's reference inputs: the first draw of its seeded generator."""
    return inputs.sample(cfg.teacher.reference_samples, torch.Generator().manual_seed(cfg.teacher.seed))


def fresh_inputs(inputs, n: int = FRESH, seed: int = 12345) -> torch.Tensor:
    return inputs.sample(n, torch.Generator().manual_seed(seed))



def is_discrete_direction(row: torch.Tensor) -> bool:
    """True if ``row`` is a positive multiple of a vector with entries in {-1, -0.75, ..., 1}.

    The largest entry of such a vector is 0.25, 0.5, 0.75 or 1: rescale ``row`` so its
    largest entry is each of these in turn and check every entry lands on the 0.25 grid.
    """
    top = row.abs().max()
    for c in (0.25, 0.5, 0.75, 1.0):
        v = row / top * c
        if torch.allclose(v * 4, (v * 4).round(), atol=1e-9, rtol=0):
            return True
    return False


# ---- firing fractions -----------------------------------------------------------------------
# Tolerance: a node's bias is the (1-f) quantile of its pre-activation over N_ref = 10,000
# reference inputs, so its true firing probability is off by about sqrt(f(1-f)/N_ref) <= 0.005,
# and measuring it on 20,000 fresh inputs adds sqrt(f(1-f)/20,000) <= 0.0035: together <= 0.0061,
# so one node is within 0.03 with overwhelming probability (~5 standard deviations); the mean
# over a layer's nodes is within 0.01. (Everything is seeded: the outcome is deterministic.)

@pytest.mark.parametrize("firing, variant", [
    ("0.5", []),
    ("0.2", []),
    ("[0.5, 0.2, 0.1, 0.3]", []),
    ("[0.1, 0.3, 0.8, 0.2]", []),
    ("0.2", ["teacher.strength_decay=1.5"]),
    ("0.5", ["teacher.weights=gaussian"]),
    ("0.2", ["teacher.leaky_slope=0.05"]),
])
def test_bias_tuning_hits_the_firing_fraction_on_fresh_inputs(firing, variant):
    cfg, inputs, teacher = build(f"teacher.firing={firing}", *variant)
    hidden, _ = teacher.forward(fresh_inputs(inputs))
    for l, (h, frac) in enumerate(zip(hidden, cfg.teacher.firing_per_layer)):
        rate = (h > 0).double().mean(0)
        assert (rate - frac).abs().max() < 0.03, f"layer {l}: firing {rate.tolist()} vs {frac}"
        assert abs(rate.mean() - frac) < 0.01, f"layer {l}"


def assert_bias_is_the_quantile(teacher, ref: torch.Tensor, firing: tuple[float, ...]) -> None:
    """Every hidden node's bias puts its firing threshold at the (1 - f) quantile of its
    pre-activation over the reference set ``ref`` (torch.quantile, linear interpolation).

    With N reference inputs that is exact to one input: the fraction strictly above the
    threshold is below f + 1/N and the fraction at or above it is over f - 1/N. Without ties
    at the threshold both are the firing fraction, so it is within 1/N of f. A node whose
    quantile falls on an atom (below a sparse layer, many inputs give the same
    pre-activation) has the whole atom at the threshold, and the teacher keeps it only if it
    still fires within max(0.01, 2/N) of f (teacher.py draws the row again otherwise).
    """
    n = ref.shape[0]
    eps = 1e-12
    for l, (z, f) in enumerate(zip(pre_activations(teacher, ref), firing)):
        above = (z > eps).double().mean(0)
        at_or_above = (z >= -eps).double().mean(0)
        assert (above < f + 1 / n + eps).all(), f"layer {l}: fires on {above.tolist()}, target {f}"
        assert (at_or_above > f - 1 / n - eps).all(), f"layer {l}: {at_or_above.tolist()} at or above, target {f}"
        tied = at_or_above - above > 1.5 / n  # two or more reference inputs exactly at the threshold
        assert ((above - f).abs()[~tied] <= 1 / n + eps).all(), f"layer {l}: {above.tolist()} vs {f}"
        assert ((above - f).abs()[tied] <= max(0.01, 2 / n) + eps).all(), f"layer {l}: {above.tolist()} vs {f}"
        # the hidden activations fire exactly where the pre-activation is above the threshold
        assert torch.equal(teacher.forward(ref)[0][l] > 0, z > 0)


@pytest.mark.parametrize("firing, variant", [
    ("0.5", []),
    ("0.2", []),
    ("[0.5, 0.3, 0.2, 0.1]", []),
    ("[0.1, 0.3, 0.8, 0.2]", []),
    ("0.05", []),
    ("0.2", ["teacher.widths=[10, 15, 20, 25, 25]"]),
    ("0.3", ["teacher.batchnorm=true"]),
    ("0.5", ["teacher.weights=gaussian"]),
    ("0.2", ["teacher.leaky_slope=0.05"]),
    ("0.2", ["teacher.strength_decay=1.5"]),
    ("0.5", ["teacher.reference_samples=2000", "teacher.widths=[4, 6]"]),
])
def test_bias_tuning_is_exact_to_one_input_on_the_reference_set(firing, variant):
    cfg, inputs, teacher = build(f"teacher.firing={firing}", *variant)
    assert_bias_is_the_quantile(teacher, reference_set(cfg, inputs), cfg.teacher.firing_per_layer)


def test_sparse_deep_teacher_fires_on_the_requested_fraction_in_every_layer():
    # Below a sparse layer many inputs switch every node off: the next layer's pre-activations
    # then have an atom at 0 that can swallow the quantile (the bias became exactly 0 and such
    # nodes fired on 8% instead of 20% of the inputs).
    cfg, inputs, teacher = build("teacher.firing=0.2", "teacher.widths=[10, 15, 20, 25, 25]")
    hidden, _ = teacher.forward(fresh_inputs(inputs))
    for l, h in enumerate(hidden):
        rate = (h > 0).double().mean(0)
        assert (rate - 0.2).abs().max() < 0.03, f"layer {l}: {rate.tolist()}"


# ---- rows -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["discrete", "gaussian"])
def test_rows_are_distinct_and_unit_norm(kind):
    # d = 2: the 9-value set gives 80 non-zero vectors but fewer directions ((0.25, 0.5) and
    # (0.5, 1) normalise to the same row), so 30 rows collide unless distinctness is checked
    # after normalisation
    cfg, _, teacher = build(f"teacher.weights={kind}", "teacher.standardize_outputs=false",
                            "teacher.widths=[30, 15, 20]", "teacher.d=2")
    for w in teacher.weights:
        torch.testing.assert_close(w.norm(dim=1), torch.ones(w.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
        cos = w @ w.T - 2 * torch.eye(w.shape[0], dtype=torch.float64)
        assert cos.max() < 1 - 1e-9, "two rows point the same way"
    assert teacher.widths == (30, 15, 20)
    assert all(w.dtype == torch.float64 for w in teacher.weights + teacher.biases)


def test_too_many_rows_for_the_discrete_set_is_a_user_error():
    with pytest.raises(UserError, match="distinct rows"):
        build("teacher.d=1", "teacher.widths=[3]")


def test_discrete_rows_come_from_the_nine_value_set():
    assert DISCRETE_VALUES.tolist() == [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0]
    _, _, teacher = build("teacher.standardize_outputs=false")
    for w in teacher.weights:
        assert all(is_discrete_direction(r) for r in w)


def test_gaussian_rows_are_not_discrete():
    _, _, teacher = build("teacher.weights=gaussian")
    assert not any(is_discrete_direction(r) for r in teacher.weights[0])


def test_discrete_check_rejects_non_grid_rows():
    assert is_discrete_direction(torch.tensor([0.5, -0.25, 0.0], dtype=torch.float64) * 3.7)
    assert not is_discrete_direction(torch.tensor([0.5, -0.3, 0.0], dtype=torch.float64))


# ---- strength decay ---------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_strength_decay_scales_columns_above_the_first_layer(p):
    _, _, plain = build("teacher.standardize_outputs=false")
    _, _, decayed = build(f"teacher.strength_decay={p}", "teacher.standardize_outputs=false")
    torch.testing.assert_close(decayed.weights[0], plain.weights[0], rtol=0, atol=0)  # first layer untouched
    for l in range(1, len(plain.weights)):  # every layer above the first, and the output layer
        cols = plain.weights[l].shape[1]
        expected = (1.0 + torch.arange(cols, dtype=torch.float64)) ** -p
        ratio = decayed.weights[l] / plain.weights[l]
        mask = plain.weights[l] != 0  # discrete rows have zero entries
        torch.testing.assert_close(ratio[mask], expected.expand_as(ratio)[mask], rtol=1e-12, atol=0)
        # undoing the decay gives unit-norm discrete rows again
        undone = decayed.weights[l] / expected
        torch.testing.assert_close(undone.norm(dim=1), torch.ones(undone.shape[0], dtype=torch.float64))
        assert all(is_discrete_direction(r) for r in undone)


@pytest.mark.parametrize("p", [0.5, 1.0, 2.0])
def test_strength_decay_with_standardised_outputs_only_adds_a_row_scale(p):
    _, _, plain = build()
    _, _, decayed = build(f"teacher.strength_decay={p}")
    torch.testing.assert_close(decayed.weights[1], plain.weights[1] * (1.0 + torch.arange(10, dtype=torch.float64)) ** -p)
    ratio = decayed.weights[-1] / plain.weights[-1]  # row scale (standardisation) times column decay
    mask = plain.weights[-1] != 0
    cols = ratio.shape[1]
    col_decay = (1.0 + torch.arange(cols, dtype=torch.float64)) ** -p
    row_scale = (ratio / col_decay).where(mask, torch.nan).nanmean(1, keepdim=True)
    torch.testing.assert_close((ratio / col_decay / row_scale)[mask], torch.ones(int(mask.sum()), dtype=torch.float64))


def test_strong_teacher_nodes_have_larger_fan_out():
    _, _, decayed = build("teacher.strength_decay=1.0", "teacher.standardize_outputs=false")
    fanout = decayed.weights[1].norm(dim=0)
    assert fanout[0] > fanout[-1] * 5


# ---- output standardisation ------------------------------------------------------------------

def test_outputs_are_standardised_on_the_reference_set():
    cfg, inputs, teacher = build()
    y = teacher(reference_set(cfg, inputs))
    assert y.shape == (cfg.teacher.reference_samples, 100)
    torch.testing.assert_close(y.mean(0), torch.zeros(100, dtype=torch.float64), rtol=0, atol=1e-10)
    torch.testing.assert_close(y.std(0), torch.ones(100, dtype=torch.float64), rtol=0, atol=1e-10)
    # and approximately on fresh inputs of the same distribution
    y_fresh = teacher(fresh_inputs(inputs, 20_000))
    assert y_fresh.mean(0).abs().max() < 0.1
    assert (y_fresh.std(0) - 1).abs().max() < 0.1


def test_outputs_not_standardised_when_switched_off():
    cfg, inputs, teacher = build("teacher.standardize_outputs=false")
    y = teacher(reference_set(cfg, inputs))
    assert (y.std(0) - 1).abs().max() > 0.05
    assert torch.equal(teacher.biases[-1], torch.zeros(100, dtype=torch.float64))


# ---- determinism, options -------------------------------------------------------------------

def test_teacher_is_a_pure_function_of_its_config():
    _, _, a = build()
    _, _, b = build()
    _, _, c = build("teacher.seed=1")
    _, _, d = build("inputs.seed=5")  # the data seed does not change the teacher
    for x, y, z in zip(a.weights + a.biases, b.weights + b.biases, d.weights + d.biases):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert not torch.equal(a.weights[0], c.weights[0])


def test_leaky_slope():
    cfg, inputs, teacher = build("teacher.leaky_slope=0.1")
    x = fresh_inputs(inputs, 5000)
    hidden, out = teacher.forward(x)
    h = x
    for l, (w, b) in enumerate(zip(teacher.weights[:-1], teacher.biases[:-1])):
        z = h @ w.T + b
        expected = torch.where(z > 0, z, 0.1 * z)
        torch.testing.assert_close(hidden[l], expected, rtol=0, atol=1e-12)
        assert (hidden[l] < 0).any()
        assert abs((hidden[l] > 0).double().mean() - 0.5) < 0.02
        h = expected
    torch.testing.assert_close(out, h @ teacher.weights[-1].T + teacher.biases[-1])
    _, _, relu = build()
    assert all((h >= 0).all() for h in relu.forward(x)[0])


def test_batchnorm_teacher_normalises_pre_activations_on_the_reference_set():
    cfg, inputs, teacher = build("teacher.batchnorm=true", "teacher.firing=0.3")
    ref = reference_set(cfg, inputs)
    for l, z in enumerate(pre_activations(teacher, ref)):
        # fixed statistics folded into the weights: unit variance
        torch.testing.assert_close(z.std(0), torch.ones(z.shape[1], dtype=torch.float64), rtol=0, atol=1e-9)
    assert_bias_is_the_quantile(teacher, ref, cfg.teacher.firing_per_layer)  # the bias shift sets the firing
    x = fresh_inputs(inputs)  # on fresh inputs of the same distribution: about unit variance, still tuned
    for z in pre_activations(teacher, x):
        torch.testing.assert_close(z.std(0), torch.ones(z.shape[1], dtype=torch.float64), rtol=0, atol=0.1)
        assert ((z > 0).double().mean(0) - 0.3).abs().max() < 0.03
    _, _, plain = build("teacher.firing=0.3")
    z_plain = pre_activations(plain, ref)[1]
    assert (z_plain.std(0) - 1).abs().max() > 0.1  # without batchnorm the scale is not 1
    z0 = pre_activations(plain, x)[0]  # the first layer's scale is the inputs' sigma (unit rows)
    torch.testing.assert_close(z0.std(0), torch.full((10,), 10.0, dtype=torch.float64), rtol=0, atol=0.3)


def test_no_bias_option():
    _, inputs, teacher = build("teacher.bias=false", "teacher.standardize_outputs=false")
    for b in teacher.biases:
        assert torch.equal(b, torch.zeros_like(b))
    h0 = teacher.forward(fresh_inputs(inputs))[0][0]  # zero-mean symmetric inputs: the bottom layer fires half the time
    assert ((h0 > 0).double().mean(0) - 0.5).abs().max() < 0.03
    _, _, with_bias = build("teacher.standardize_outputs=false")
    assert all(not torch.equal(b, torch.zeros_like(b)) for b in with_bias.biases[:-1])


def test_no_bias_with_a_firing_fraction_is_a_user_error():
    with pytest.raises(UserError, match="firing fractions need biases"):
        load_config(overrides=["teacher.bias=false", "teacher.firing=0.2"])


def test_teacher_to_dtype():
    _, inputs, teacher = build("teacher.widths=[4, 6]")
    t32 = teacher.to("cpu", torch.float32)
    x = fresh_inputs(inputs, 100)
    assert t32.weights[0].dtype == torch.float32
    torch.testing.assert_close(t32(x.float()).double(), teacher(x), rtol=1e-4, atol=1e-4)


def test_widths_property_and_shapes():
    cfg, _, teacher = build("teacher.widths=[3, 5, 7]", "teacher.d=4", "teacher.outputs=2", "teacher.firing=0.5")
    shapes = [tuple(w.shape) for w in teacher.weights]
    assert shapes == [(3, 4), (5, 3), (7, 5), (2, 7)]
    assert [tuple(b.shape) for b in teacher.biases] == [(3,), (5,), (7,), (2,)]
    assert teacher.widths == (3, 5, 7)
    assert cfg.teacher.widths == (3, 5, 7)
