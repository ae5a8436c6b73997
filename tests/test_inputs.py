"""Input distributions: registry, determinism, statistics of every kind, validation."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny

from teacherstudent.config import InputsConfig, load_config
from teacherstudent.data import DataSource
from teacherstudent.seeds import generator
from teacherstudent.errors import UserError
from teacherstudent.inputs import INPUTS, Digits, input_dim, load_digits_arrays, make_inputs
from teacherstudent.teacher import make_teacher


def dist(d: int = 6, seed: int = 0, **fields):
    cfg = InputsConfig(**fields)
    return make_inputs(cfg, d, seed)


def draw(dist_, n: int, seed: int = 1, split: str = "train"):
    return dist_.draw(n, torch.Generator().manual_seed(seed), split)


def cov(x: torch.Tensor) -> torch.Tensor:
    return torch.cov(x.T)


def test_registry_names_and_unknown_kind_lists_them():
    assert {"gaussian", "uniform", "clusters", "manifold", "digits", "gaussian_images", "mnist", "fashion_mnist",
            "cifar10"} <= set(INPUTS)  # the built-in kinds
    with pytest.raises(UserError) as err:
        load_config(overrides=['inputs.kind="moons"'])
    assert f"unknown input kind 'moons'; known: {', '.join(sorted(INPUTS))}" in str(err.value)


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_every_kind_is_deterministic_float64_and_seed_dependent(kind, tmp_path):
    from conftest import make_cifar, make_idx_set

    path = {}
    if "path" in INPUTS[kind].params:  # a local data set: tiny generated files (tests/test_datasets.py)
        (make_cifar if kind == "cifar10" else make_idx_set)(tmp_path)
        path = {"path": str(tmp_path)}
    a, b = dist(kind=kind, **path), dist(kind=kind, **path)
    x1, x2 = draw(a, 300), draw(b, 300)
    assert x1.x.dtype == torch.float64 and x1.x.shape == (300, input_dim(a.cfg, 6))
    assert torch.equal(x1.x, x2.x)
    assert not torch.equal(x1.x, draw(a, 300, seed=2).x)


def test_gaussian_is_unchanged_and_has_covariance_sigma2_identity():
    g = dist(kind="gaussian", sigma=3.0)
    x = draw(g, 40_000).x
    assert torch.equal(x, torch.randn(40_000, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3.0)
    assert x.mean(0).abs().max() < 4 * 3.0 / math.sqrt(40_000)
    assert torch.allclose(cov(x), 9.0 * torch.eye(6, dtype=torch.float64), atol=0.25)


def test_uniform_has_zero_mean_variance_sigma2_and_bounded_support():
    u = dist(kind="uniform", sigma=2.0)
    x = draw(u, 40_000).x
    a = math.sqrt(3) * 2.0
    assert x.abs().max() <= a and x.abs().max() > 0.99 * a
    assert x.mean(0).abs().max() < 0.05
    assert torch.allclose(cov(x), 4.0 * torch.eye(6, dtype=torch.float64), atol=0.12)


def test_clusters_mixture_statistics():
    c = dist(d=5, kind="clusters", sigma=4.0, n_clusters=4, cluster_std=0.5)
    out = draw(c, 40_000)
    counts = torch.bincount(out.label, minlength=4).double()
    assert torch.all((counts / 40_000 - 0.25).abs() < 5 * math.sqrt(0.25 * 0.75 / 40_000))  # equally likely
    resid = out.x - c.centres[out.label]
    assert resid.mean(0).abs().max() < 0.02
    assert torch.allclose(cov(resid), 0.25 * torch.eye(5, dtype=torch.float64), atol=0.01)
    # the overall covariance is the between-centre covariance plus the within-cluster one
    between = torch.cov(c.centres[out.label].T)
    assert torch.allclose(cov(out.x), between + 0.25 * torch.eye(5, dtype=torch.float64), atol=0.05)


def test_cluster_centres_have_spread_sigma():
    c = dist(d=20, kind="clusters", sigma=4.0, n_clusters=50)
    assert c.centres.shape == (50, 20)
    assert abs(c.centres.std().item() - 4.0) < 0.4
    assert not torch.equal(c.centres, dist(d=20, seed=1, kind="clusters", sigma=4.0, n_clusters=50).centres)


def test_manifold_has_latent_rank_r_and_energy_sigma2_d():
    m = dist(d=8, kind="manifold", sigma=2.0, latent_dim=3)
    x = draw(m, 20_000).x
    assert torch.linalg.matrix_rank(x).item() == 3
    A = m.embedding
    assert torch.allclose(A.T @ A, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(x - x @ A @ A.T, torch.zeros_like(x), atol=1e-9)  # every sample lies in span(A)
    expected = 4.0 * 8 / 3 * A @ A.T
    assert torch.allclose(cov(x), expected, atol=0.25)
    assert abs(x.square().sum(1).mean().item() / (4.0 * 8) - 1) < 0.03


def test_manifold_noise_fills_the_other_directions_with_variance_noise2():
    m = dist(d=8, kind="manifold", sigma=2.0, latent_dim=3, noise=0.3)
    x = draw(m, 40_000).x
    ev = torch.linalg.eigvalsh(cov(x))  # ascending
    assert torch.allclose(ev[:5], torch.full((5,), 0.09, dtype=torch.float64), atol=0.01)
    assert torch.all(ev[5:] > 10)


def test_digits_dimension_pools_and_standardisation():
    cfg = InputsConfig(kind="digits", sigma=2.0)
    assert input_dim(cfg, 20) == 64
    dg = make_inputs(cfg, 20, seed=0)
    train, ev = dg.pools["train"], dg.pools["eval"]
    assert len(ev) == round(0.2 * 1797) and len(train) + len(ev) == 1797
    assert len(set(train.tolist()) | set(ev.tolist())) == 1797  # disjoint and complete
    xt = dg.x[train]
    varying = xt.std(0) > 0
    assert xt.mean(0).abs().max() < 1e-9
    assert torch.allclose(xt.std(0)[varying], torch.full((int(varying.sum()),), 2.0, dtype=torch.float64))
    assert torch.all(dg.x[:, ~varying] == 0)  # constant pixels stay 0
    images, _ = load_digits_arrays()
    assert images.shape == (1797, 64)


def test_digits_draws_come_from_their_pool_without_repeats_and_keep_true_labels():
    dg = make_inputs(InputsConfig(kind="digits"), 64, seed=0)
    _, targets = load_digits_arrays()
    out = draw(dg, 300, split="eval")
    # locate each drawn image in the standardised data set
    idx = torch.cdist(out.x, dg.x).argmin(1)
    assert torch.equal(dg.x[idx], out.x)
    assert set(idx.tolist()) <= set(dg.pools["eval"].tolist())
    assert len(set(idx.tolist())) == 300  # no repeats below the pool size
    assert torch.equal(out.label, torch.tensor(targets)[idx])
    big = draw(dg, 3 * len(dg.pools["train"]) + 5)
    counts = torch.bincount(torch.cdist(big.x, dg.x).argmin(1), minlength=1797)[dg.pools["train"]]
    assert counts.min() >= 3 and counts.max() <= 4  # whole passes: balanced repeats
    with pytest.raises(ValueError, match="unknown split"):
        draw(dg, 5, split="test")


def test_digits_run_builds_a_64_input_teacher_and_student_with_the_default_teacher_d():
    cfg = tiny('inputs.kind="digits"')
    assert cfg.teacher.d == 20
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    teacher = make_teacher(cfg.teacher, inputs)
    assert teacher.weights[0].shape == (4, 64)
    data = DataSource(cfg, teacher, inputs, torch.device("cpu"), torch.float64)
    assert data.x_eval.shape == (256, 64)
    # the evaluation set comes from the held-out images, the training set from the rest
    xt, _ = data.epoch(0)
    def pool_of(x: torch.Tensor) -> set[int]:
        return set(torch.cdist(x, inputs.x).argmin(1).tolist())

    assert pool_of(data.x_eval).isdisjoint(pool_of(xt))
    assert isinstance(inputs, Digits)


@pytest.mark.parametrize("override, message", [
    (['inputs.kind="manifold"', "inputs.latent_dim=30"], "inputs.latent_dim \\(30\\) must not exceed the input dimension teacher.d \\(20\\)"),
    (['inputs.kind="clusters"', "inputs.n_clusters=0"], "inputs.n_clusters: Input should be greater than or equal to 1"),
    (['inputs.kind="clusters"', "inputs.cluster_std=-1.0"], "inputs.cluster_std: Input should be greater than or equal to 0"),
    (["inputs.sigma=-1.0"], "inputs.sigma: Input should be greater than 0"),
    (['inputs.kind="manifold"', "inputs.noise=-0.1"], "inputs.noise: Input should be greater than or equal to 0"),
    (['inputs.kind="digits"', "inputs.holdout=1.0"], "inputs.holdout: Input should be less than 1"),
    (["inputs.n_clusters=5"], "inputs.n_clusters is only used by kind=clusters, not 'gaussian'"),
    (['inputs.kind="digits"', "inputs.latent_dim=3"], "inputs.latent_dim is only used by kind=manifold, not 'digits'"),
    (['inputs.kind="digits"', "teacher.d=30"], "digits inputs have 64 dimensions but teacher.d = 30"),
])
def test_bad_input_parameters_give_one_clear_line(override, message):
    with pytest.raises(UserError, match=message) as err:
        load_config(overrides=override)
    assert "\n" not in str(err.value)


def test_digits_accepts_teacher_d_64_and_latent_dim_equal_to_d():
    assert load_config(overrides=['inputs.kind="digits"', "teacher.d=64"]).teacher.d == 64
    assert load_config(overrides=['inputs.kind="manifold"', "inputs.latent_dim=20"]).inputs.latent_dim == 20


def test_eval_split_generator_streams_differ_from_training():
    cfg = tiny('inputs.kind="uniform"')
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    data = DataSource(cfg, make_teacher(cfg.teacher, inputs), inputs, torch.device("cpu"), torch.float64)
    assert torch.equal(data.x_eval, inputs.sample(256, generator(cfg.inputs.seed, 2), split="eval"))
    assert data.x_eval.abs().max() <= math.sqrt(3) * cfg.inputs.sigma


# ---- training data: a fixed set reshuffled, or fresh samples every epoch ------------------------

def test_fixed_set_is_reshuffled_while_fresh_draws_new_samples_every_epoch():
    def epochs(fresh: bool):
        cfg = tiny(inputs__fresh=fresh)
        inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
        teacher = make_teacher(cfg.teacher, inputs)
        data = DataSource(cfg, teacher, inputs, torch.device("cpu"), torch.float64)
        (x0, y0), (x1, y1) = data.epoch(0), data.epoch(1)
        assert torch.equal(y0, teacher(x0)) and torch.equal(y1, teacher(x1))
        return x0, x1

    x0, x1 = epochs(False)
    assert not torch.equal(x0, x1) and torch.equal(x0[torch.argsort(x0[:, 0])], x1[torch.argsort(x1[:, 0])])
    x0, x1 = epochs(True)
    assert not torch.isin(x0[:, 0], x1[:, 0]).any()
