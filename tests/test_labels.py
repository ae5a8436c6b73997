"""Label regimes: teacher labels, permuted labels, an independent wide teacher."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny

from teacherstudent.data import DataSource, label
from teacherstudent.errors import UserError
from teacherstudent.inputs import make_inputs
from teacherstudent.labels import data_teacher, relabel, wide_seed
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run
from teacherstudent.summary import read_table
from teacherstudent.teacher import make_teacher

CPU = torch.device("cpu")


def source(cfg):
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    teacher = data_teacher(cfg, inputs)
    return DataSource(cfg, teacher, inputs, CPU, torch.float64), teacher


def multiset(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.unique(y, dim=0, return_counts=True)


def test_teacher_labels_are_the_teachers_outputs():
    data, teacher = source(tiny())
    x, y = data.epoch(0)
    assert torch.equal(y, teacher(x))
    assert torch.equal(data.y_eval, teacher(data.x_eval))


def test_permuted_labels_are_a_random_permutation_of_the_teacher_labels():
    cfg = tiny('inputs.labels="permuted"', inputs__train_samples=4000)
    data, teacher = source(cfg)
    x, y = data._fixed
    y_true = teacher(x)
    (rows, counts), (rows_true, counts_true) = multiset(y), multiset(y_true)
    assert torch.equal(rows, rows_true) and torch.equal(counts, counts_true)  # the same multiset of label rows
    assert (y != y_true).any(1).double().mean() > 0.9  # almost every sample got another sample's label
    # no trace of the input left in the label: correlation with the true label ~ N(0, 1/N)
    r = torch.corrcoef(torch.stack([y[:, 0], y_true[:, 0]]))[0, 1].item()
    assert abs(r) < 4 / math.sqrt(4000)
    assert torch.equal(data.y_eval, teacher(data.x_eval))  # evaluation labels stay the teacher's
    again, _ = source(cfg)
    assert torch.equal(again._fixed[1], y)  # deterministic from the config


def test_permutation_is_uniform_over_positions():
    """Where label 0 lands, over many generator seeds, is uniform on 0..n-1 (chi-square bound)."""
    n, trials = 8, 4000
    y = torch.arange(n, dtype=torch.float64)[:, None]
    cfg = tiny('inputs.labels="permuted"').inputs
    pos = torch.tensor([int((relabel(cfg, y, torch.Generator().manual_seed(s))[:, 0] == 0).nonzero()) for s in range(trials)])
    counts = torch.bincount(pos, minlength=n).double()
    chi2 = ((counts - trials / n) ** 2 / (trials / n)).sum().item()
    assert chi2 < 24.3  # p = 0.001 for 7 degrees of freedom


def test_permuted_fresh_epochs_are_permuted_anew_and_ce_labels_stay_integers():
    cfg = tiny('inputs.labels="permuted"', inputs__fresh=True, training__loss="ce")
    data, teacher = source(cfg)
    (x0, y0), (x1, _) = data.epoch(0), data.epoch(1)
    assert y0.dtype == torch.long
    assert not torch.equal(x0, x1)
    assert torch.equal(torch.sort(y0).values, torch.sort(label(teacher, x0, "ce")).values)
    assert (y0 != label(teacher, x0, "ce")).any()


def test_wide_teacher_is_independent_wider_and_labels_the_data():
    cfg = tiny('inputs.labels="wide_teacher"', inputs__wide_factor=3)
    inputs = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed)
    wide = data_teacher(cfg, inputs)
    small = make_teacher(cfg.teacher, inputs)
    assert wide.widths == (12, 18) and small.widths == (4, 6)
    assert wide_seed(cfg.teacher.seed) != cfg.teacher.seed
    assert not torch.equal(wide.weights[0][:4], small.weights[0])
    data = DataSource(cfg, wide, inputs, CPU, torch.float64)
    x, y = data.epoch(0)
    assert torch.equal(y, wide(x))
    sim = Trainer(build(cfg, CPU))
    assert sim.teacher.widths == (12, 18)
    assert sim.widths == [12, 18]  # the student keeps multiplier (3) x the nominal widths (4, 6)
    assert [t.shape[1] for t in sim.data.teacher_hidden_eval] == [12, 18]


def test_wide_teacher_run_tables_count_the_wide_teachers_nodes(tmp_runs):
    cfg = tiny('inputs.labels="wide_teacher"', inputs__wide_factor=2, training__epochs=1)
    t = read_table(run(cfg, RunOptions(tmp_runs, "cpu")), "teacher_nodes")
    assert t.groupby(["member", "layer"]).size().tolist() == [8, 12, 8, 12]


@pytest.mark.parametrize("override, message", [
    (["inputs.wide_factor=4"], "inputs.wide_factor is only used with inputs.labels='wide_teacher'"),
    (['inputs.labels="random"'], "inputs.labels: Input should be 'teacher', 'wide_teacher', 'permuted' or 'dataset'"),
    (['inputs.labels="wide_teacher"', "inputs.wide_factor=1"], "inputs.wide_factor: Input should be greater than or equal to 2"),
])
def test_bad_label_settings(override, message):
    with pytest.raises(UserError, match=message):
        tiny(*override)


def test_random_labels_are_memorised_but_do_not_generalise(tmp_runs):
    """Training loss falls under both regimes; only teacher labels bring the evaluation loss down."""
    def losses(labels: str):
        cfg = tiny(f'inputs.labels="{labels}"', 'measure.every="log"', inputs__train_samples=128, training__epochs=100,
                   student__multiplier=10, teacher__outputs=4, measure__log_points=5)
        m = read_table(run(cfg, RunOptions(tmp_runs, "cpu")), "metrics")
        loss = m[m.metric == "loss"].groupby(["split", "step"]).value.mean()
        return loss["train"].iloc[0], loss["train"].iloc[-1], loss["eval"].iloc[0], loss["eval"].iloc[-1]

    tr0, tr1, ev0, ev1 = losses("teacher")
    assert tr1 < 0.1 * tr0 and ev1 < 0.6 * ev0
    tr0, tr1, ev0, ev1 = losses("permuted")
    assert tr1 < 0.2 * tr0  # memorised
    assert ev1 > 0.9 * ev0  # but nothing learnt about the teacher
