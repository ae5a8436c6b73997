"""Training paths (fused SGD, fast with ``torch.optim``, autograd): version-safe restarts, resume, masks, frozen members.

- A forced restart removes the old run's ``checkpoints/latest.pt`` before ``meta.json`` names
  this version, so a crash before the first new checkpoint cannot resume the old version's state.
- Resume is bit-identical with the fused step and with Adam (test_run_store.py covers momentum).
- Weight masks stay applied through training on every path, chunked or not.
- A diverged member stays frozen on every path, momentum and Adam included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from teacherstudent.probes import run_lottery
from teacherstudent.probes.prune import MaskedEnsemble
from teacherstudent.probes.runs import load_probe
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run

from conftest import tiny

CPU = torch.device("cpu")


def final_weights(folder: Path) -> list[torch.Tensor]:
    return torch.load(folder / "checkpoints" / "final.pt", weights_only=False)["weights"]


class Crash(Exception):
    pass


def test_forced_restart_of_another_versions_run_never_resumes_its_checkpoint(tmp_path):
    """--force over a run of another version, interrupted before its first new checkpoint:
    the next plain run must start from step 0, not resume the old version's latest.pt."""
    cfg = tiny()
    folder = run(cfg, RunOptions(tmp_path / "runs", "cpu", max_steps=8))
    meta = json.loads((folder / "meta.json").read_text())
    meta["version"] = "0.0.1"  # as if 0.0.1 had trained these 8 steps
    (folder / "meta.json").write_text(json.dumps(meta))
    old = torch.load(folder / "checkpoints" / "latest.pt", weights_only=False)
    assert old["trainer"]["step"] == 8
    old["trainer"]["weights"] = [w + 0.25 for w in old["trainer"]["weights"]]  # stand-in for the old version's numerics
    torch.save(old, folder / "checkpoints" / "latest.pt")

    def crash_at_3(step, total):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        run(cfg, RunOptions(tmp_path / "runs", "cpu", force=True, on_progress=crash_at_3))
    calls: list[int] = []
    run(cfg, RunOptions(tmp_path / "runs", "cpu", on_progress=lambda s, t: calls.append(s)))
    assert calls[0] == 1, f"resumed the old version's checkpoint at step {calls[0] - 1}"
    clean = run(cfg, RunOptions(tmp_path / "clean", "cpu"))
    for a, b in zip(final_weights(folder), final_weights(clean), strict=True):
        assert torch.equal(a, b)


RESUME = ("training.schedule=cosine", "measure.every=steps", "measure.every_steps=4")


@pytest.mark.parametrize("optimizer", [[], ["training.optimizer='adam'", "training.lr=0.01"]], ids=["fused-sgd", "adam"])
def test_interrupted_run_resumes_bit_identical_with_fused_sgd_and_adam(tmp_path, optimizer):
    cfg = tiny(*RESUME, *optimizer)
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=12))
    assert json.loads((part / "status.json").read_text())["step"] == 12
    run(cfg, RunOptions(tmp_path / "b", "cpu"))
    for a, b in zip(final_weights(whole), final_weights(part), strict=True):
        assert torch.equal(a, b)


PATHS = {
    "fused": [],
    "fast-momentum": ["training.momentum=0.9"],
    "fast-adam": ["training.optimizer='adam'", "training.lr=0.01"],
}


def masked_sim(extra: list[str], backend: str, budget: float = 1 << 30) -> tuple[Trainer, list[torch.Tensor]]:
    cfg = tiny("student.seeds=[0, 1, 2]", "training.dtype='float64'", f"training.backend='{backend}'", *extra)
    plain = Trainer(build(cfg, CPU))
    gen = torch.Generator().manual_seed(1)
    masks = [torch.rand(w.shape, generator=gen) < 0.5 for w in plain.ens.weights]
    ens = MaskedEnsemble([p.detach().clone() for p in plain.ens.params], False, masks)
    return Trainer(build(cfg, CPU, ensemble=ens), budget), masks


@pytest.mark.parametrize("name", list(PATHS))
@pytest.mark.parametrize("budget", [1 << 30, 1], ids=["whole", "chunked"])
def test_weight_masks_stay_applied_on_every_training_path(name, budget):
    """Trainer.train_until re-applies a MaskedEnsemble's masks (the optimiser hook is gone)
    on the fused path, the fast path with torch.optim and autograd, and they agree."""
    fast, masks = masked_sim(PATHS[name], "fast", budget)
    ref, _ = masked_sim(PATHS[name], "autograd", budget)
    assert fast.fused_sgd == (name == "fused") and not ref.fast
    init = [w.detach().clone() for w in fast.ens.weights]
    for sim in (fast, ref):
        sim.train_until(sim.total_steps)
    for w, w0, m, r in zip(fast.ens.weights, init, masks, ref.ens.weights):
        assert (w[~m] == 0).all()
        assert (w[m] != w0[m]).double().mean() > 0.5  # the kept weights trained
        assert torch.allclose(w, r, rtol=1e-10, atol=1e-12), (w - r).abs().max()


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return run(tiny(training__checkpoint_steps=[8]), RunOptions(tmp_path_factory.mktemp("probe_runs"), "cpu"))


def test_weight_pruned_probe_keeps_its_masks_on_the_fast_non_fused_path(parent):
    (child,) = run_lottery(parent, keep=0.3, by="magnitude", root=parent.parent, device="cpu",
                           overrides=["training.momentum=0.9"])
    masks = load_probe(child)["masks"]
    init = torch.load(child / "checkpoints" / "init.pt", weights_only=False)["weights"]
    final = final_weights(child)
    for l, m in enumerate(masks):
        assert (final[2 * l][~m] == 0).all() and (init[2 * l][~m] == 0).all()
        assert (final[2 * l][m] != init[2 * l][m]).double().mean() > 0.5


@pytest.mark.parametrize("budget", [1 << 30, 1], ids=["whole", "chunked"])
@pytest.mark.parametrize("optimizer", [[], ["training.momentum=0.9"], ["training.optimizer='adam'", "training.lr=0.01"],
                                       ["training.backend='autograd'", "training.momentum=0.9"]],
                         ids=["fused-sgd", "momentum", "adam", "autograd-momentum"])
def test_a_stopped_member_stays_frozen(budget, optimizer):
    """A member marked diverged does not move on any path, momentum and Adam included (its finite weights stay
    bit for bit); zero gradients alone would let momentum carry it on."""
    cfg = tiny("student.seeds=[0, 1, 2]", *optimizer)
    sim = Trainer(build(cfg, CPU), budget)
    assert sim.fused_sgd == (not optimizer)
    sim.train_until(4)
    sim.first_bad[1] = 3  # as if member 1's loss had gone non-finite at step 3
    assert sim.check_finite() == [1]
    before = [p.detach().clone() for p in sim.ens.params]
    sim.train_until(sim.total_steps)
    for p, b in zip(sim.ens.params, before):
        assert torch.equal(p[1], b[1])
        assert not torch.equal(p[[0, 2]], b[[0, 2]])  # the others trained on
