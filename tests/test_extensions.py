"""Extensions added from outside the package break nothing: a new optimiser with a config field of
its own, and a new input kind, registered in a fixture (the registries are plain dicts).

With both registered, the tests that list registry names (tests/test_strict_config.py,
tests/test_inputs.py) still pass, the field-ownership checks treat the new field like a built-in
one, the memory estimate reads the new optimiser's state slots, and a tiny run trains with each,
the optimiser matching ``torch.optim.NAdam`` on separate ``nn.Module`` students.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import Field

import test_inputs
import test_strict_config
from conftest import tiny
from teacherstudent import resources, simulate
from teacherstudent.config import ExperimentConfig, TrainingConfig, build_config
from teacherstudent.errors import UserError
from teacherstudent.inputs import INPUTS, Draw, InputDistribution
from teacherstudent.train import OPTIMIZERS, Optimizer


class NAdamTraining(TrainingConfig):
    """The training section with the new optimiser's own field (what a fork adds to TrainingConfig)."""

    momentum_decay: float = Field(4e-3, ge=0, description="nadam: torch.optim.NAdam's momentum_decay")


class NAdamExperiment(ExperimentConfig):
    training: NAdamTraining = NAdamTraining.model_construct()


def _nadam(params, t):
    return torch.optim.NAdam(params, lr=t.lr, betas=t.betas, momentum_decay=t.momentum_decay,
                             weight_decay=t.weight_decay, foreach=True)


class Laplace(InputDistribution):
    """Each coordinate Laplace(0, b) with b = sigma / sqrt(2): zero mean, variance sigma^2."""

    def draw(self, n, gen, split="train"):
        u = torch.rand(n, self.d, generator=gen, dtype=torch.float64) - 0.5
        return Draw(-torch.sign(u) * torch.log1p(-2 * u.abs()) * (self.cfg.sigma / 2**0.5))


@pytest.fixture
def extended(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS, "nadam", Optimizer(_nadam, ("betas", "momentum_decay"), lambda t: 2))
    monkeypatch.setitem(INPUTS, "laplace", Laplace)


def nadam_config(*sets: str, **training) -> NAdamExperiment:
    data = tiny(*sets).model_dump()
    data["training"].update(training)
    return NAdamExperiment.model_validate(data)


def test_name_list_tests_pass_with_the_new_entries(extended):
    test_strict_config.test_unknown_names_list_the_registry()
    test_inputs.test_registry_names_and_unknown_kind_lists_them()
    with pytest.raises(UserError, match="known: .*laplace.*"):
        build_config({"inputs": {"kind": "moons"}})


def test_the_new_field_belongs_to_the_new_optimiser_only(extended):
    assert nadam_config(optimizer="nadam", momentum_decay=0.01).training.momentum_decay == 0.01
    with pytest.raises(ValueError, match="training.momentum_decay does nothing unless training.optimizer='nadam'"):
        nadam_config(momentum_decay=0.01)  # under sgd
    with pytest.raises(ValueError, match="training.momentum does nothing unless training.optimizer='sgd' or 'rmsprop'"):
        nadam_config(optimizer="nadam", momentum=0.9)  # the built-in fields keep their owners
    # every built-in run id is untouched by the registration
    assert ExperimentConfig().run_id == "default-44136fa355"


def test_the_memory_estimate_reads_the_state_slots(extended, monkeypatch):
    cfg = nadam_config(optimizer="nadam")
    two = resources.estimate(cfg).parts["students"]
    monkeypatch.setitem(OPTIMIZERS, "nadam", Optimizer(_nadam, ("betas", "momentum_decay"), lambda t: 5))
    five = resources.estimate(cfg).parts["students"]
    weights = len(cfg.student.seeds) * sum(a * b + b for a, b in zip([20, 12, 18], [12, 18, 10]))  # d=20, 3x[4, 6], 10
    assert five - two == 3 * weights * 4  # three more float32 tensors of every weight


def test_a_tiny_run_trains_with_the_new_optimiser_as_torch_nadam_does(extended, monkeypatch):
    import conftest
    import test_training_options as ref
    from teacherstudent.build import build
    from teacherstudent.ensemble import as_modules
    from teacherstudent.loop import Trainer

    def reference(params, t):  # torch's own NAdam for one nn.Module student
        if t.optimizer != "nadam":
            return conftest.reference_optimizer(params, t)
        return torch.optim.NAdam(params, lr=t.lr, betas=t.betas, momentum_decay=t.momentum_decay,
                                 weight_decay=t.weight_decay)

    monkeypatch.setattr(ref, "reference_optimizer", reference)
    cfg = nadam_config(*ref.REF, "training.lr=0.01", "training.backend=autograd", optimizer="nadam", momentum_decay=0.01)
    tr = Trainer(build(cfg, torch.device("cpu")))
    nets = as_modules(tr.ens)
    tr.train_until(tr.total_steps)
    ref.train_reference(tr, nets, tr.total_steps)
    ref.assert_matches(tr, nets)


def test_a_tiny_run_trains_on_the_new_input_kind(extended, tmp_path):
    from teacherstudent.store import load_runs

    cfg = tiny("inputs.kind='laplace'", "training.epochs=1")
    folder = simulate.run(cfg, simulate.RunOptions(out=tmp_path, device="cpu"))
    assert (folder / "metrics.parquet").exists()
    assert len(load_runs(tmp_path)) > 0
    x = INPUTS["laplace"](cfg.inputs, 4, 0).sample(200_000, torch.Generator().manual_seed(0))
    assert abs(float(x.var()) / cfg.inputs.sigma**2 - 1) < 0.02 and abs(float(x.mean())) < 0.1
