"""``best_corr_mean_se`` against its closed form (metrics.AlignmentSE, docs/science.md §4).

For each teacher node k the best correlation r_k = max_j C[k, j] has the Fisher-z/delta-method
standard error (1 - r_k^2) / sqrt(N - 3); the mean over the m teacher nodes has
sqrt(sum_k SE_k^2) / m. The numbers are written out by hand here so that a change of the
formula (N - 2 for N - 3, a missing square, the mean instead of the max) fails.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from teacherstudent.metrics import AlignmentSE, Measurement


def rows(corr: list[torch.Tensor], n_eval: int, k: int):
    m = Measurement(step=0, epoch=0.0, snap=SimpleNamespace(corr=corr), train_loss=None, cfg=None,
                    eval_samples=n_eval)
    return list(AlignmentSE().member_rows(m, k))


def test_closed_form_two_layers_two_members():
    # layer 0: member 0's best correlations are 0.9 and 0.5 (row maxima), member 1's 0.2 and -0.1
    c0 = torch.tensor([[[0.9, 0.1, -0.3], [0.2, 0.5, 0.4]],
                       [[0.2, -0.5, 0.1], [-0.1, -0.2, -0.9]]])
    # layer 1: one teacher node, best 0.99 / 1.0 (a perfect match has zero error)
    c1 = torch.tensor([[[0.3, 0.99]], [[1.0, 0.0]]])
    n = 103  # N - 3 = 100: sqrt(N - 3) = 10
    got0 = rows([c0, c1], n, 0)
    assert [(s, l, name) for s, l, name, _ in got0] == [("eval", 0, "best_corr_mean_se"), ("eval", 1, "best_corr_mean_se")]
    se = [(1 - 0.81) / 10, (1 - 0.25) / 10]
    assert got0[0][3] == pytest.approx(math.sqrt(se[0] ** 2 + se[1] ** 2) / 2, rel=1e-6)
    assert got0[1][3] == pytest.approx((1 - 0.99 ** 2) / 10, rel=1e-5)
    got1 = rows([c0, c1], n, 1)
    se = [(1 - 0.04) / 10, (1 - 0.01) / 10]  # the max, not the largest magnitude: -0.9 is not best
    assert got1[0][3] == pytest.approx(math.sqrt(se[0] ** 2 + se[1] ** 2) / 2, rel=1e-6)
    assert got1[1][3] == 0.0


def test_shrinks_as_one_over_sqrt_n_minus_3():
    c = torch.tensor([[[0.6, 0.1], [0.3, 0.8]]])
    a, b = rows([c], 103, 0)[0][3], rows([c], 403, 0)[0][3]
    assert a / b == pytest.approx(2.0, rel=1e-6)  # sqrt(400 / 100); with N - 2 it would be sqrt(401/101)
    expected = math.sqrt(((1 - 0.36) / 10) ** 2 + ((1 - 0.64) / 10) ** 2) / 2
    assert a == pytest.approx(expected, rel=1e-6)
