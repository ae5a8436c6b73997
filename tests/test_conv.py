"""Convolutional teachers and students (arch='conv'): the grouped ensemble against K plain
``nn.Conv2d`` students, per-channel measurements against numpy, the teacher's per-channel
tuning, config errors, the CLI, resume, and channel-level lottery probes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from teacherstudent.build import build
from teacherstudent.config import ExperimentConfig, build_config
from teacherstudent.conv import ConvEnsemble, as_modules, as_samples
from teacherstudent.errors import UserError
from teacherstudent.loop import Trainer
from teacherstudent.measure import measure
from teacherstudent.simulate import RunOptions, run
from teacherstudent.store import load_torch

from conftest import assert_user_error, invoke, tiny, tiny_overrides

CPU = torch.device("cpu")
CONV = ("arch='conv'", "inputs.kind='gaussian_images'", "inputs.image_size=6", "inputs.sigma=1.0")


def conv(*overrides: str, **fields) -> ExperimentConfig:
    """``tiny`` as a conv run: 6x6 Gaussian images, channels [4, 6], students x3, 2 members."""
    return tiny(*CONV, *overrides, **fields)


def _plain_training(nets, problem, steps: int, lr: float, momentum: float = 0.0):
    """Train each ``nn.Module`` with its own ``torch.optim.SGD`` on the run's own batches."""
    B, data = problem.cfg.training.batch_size, problem.data
    x, y = data.epoch(0)
    opts = [torch.optim.SGD(n.parameters(), lr=lr, momentum=momentum) for n in nets]
    for s in range(steps):
        xb, yb = x[s * B:(s + 1) * B], y[s * B:(s + 1) * B]
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(xb), yb).backward()
            opt.step()


@pytest.mark.parametrize("extra", [(), ("student.batchnorm=true",), ("conv.stride=[2, 1]", "conv.padding=[1, 0]")])
def test_grouped_ensemble_trains_like_k_separate_conv2d_students(extra):
    cfg = conv("training.dtype='float64'", "training.momentum=0.9", "student.seeds=[0, 1, 2]", *extra)
    problem = build(cfg, CPU)
    nets = as_modules(problem.ens)
    for net in nets:
        net.eval()  # the evaluation forward (BatchNorm: running statistics)
    x = problem.data.x_eval[:32]
    hidden, out = problem.ens.forward(x)
    for k, net in enumerate(nets):  # the forward, layer by layer (positions as samples)
        torch.testing.assert_close(out[k], net(x), rtol=0, atol=1e-12)
        h, l = x, 0
        for mod in net:
            h = mod(h)
            if isinstance(mod, torch.nn.ReLU):
                torch.testing.assert_close(hidden[l][k], as_samples(h), rtol=0, atol=1e-12)
                l += 1
    for net in nets:
        net.train()
    tr = Trainer(problem)
    assert tr.backend == "autograd"
    tr.train_until(6)
    _plain_training(nets, problem, 6, cfg.training.lr, 0.9)
    for k, net in enumerate(nets):
        ref = as_modules(problem.ens.slice(k, k + 1))[0]
        for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
            if name.endswith("num_batches_tracked"):
                continue
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=lambda m: f"member {k} {name}: {m}")


def test_channel_correlation_and_fanout_equal_their_definitions():
    cfg = conv("training.dtype='float64'")
    p = build(cfg, CPU)
    with torch.no_grad():
        for w in p.ens.weights:
            w.add_(0.3 * torch.randn_like(w))
    snap = measure(p.ens, p.data.x_eval, p.data.y_eval, p.data.teacher_hidden_eval, 0)
    t_maps, _ = p.teacher.maps(p.data.x_eval)
    for k, net in enumerate(as_modules(p.ens)):
        h, s_maps = p.data.x_eval, []
        for mod in net:
            h = mod(h)
            if isinstance(mod, torch.nn.ReLU):
                s_maps.append(h.detach())
        for l, (tm, sm) in enumerate(zip(t_maps, s_maps)):
            # every position of every image is a sample of a channel
            t = tm.transpose(0, 1).reshape(tm.shape[1], -1).numpy()
            s = sm.transpose(0, 1).reshape(sm.shape[1], -1).numpy()
            ref = np.corrcoef(np.concatenate([t, s]))[: len(t), len(t):]
            ref = np.where(s.std(1)[None, :] > 0, ref, 0.0)  # dead channels correlate 0
            np.testing.assert_allclose(snap.corr[l][k].numpy(), ref, atol=1e-5)
        conv_next = [w[k] for w in p.ens.weights]
        for l in range(len(conv_next) - 1):
            nxt = conv_next[l + 1]
            n = conv_next[l].shape[0]
            if nxt.dim() == 4:  # [out, in, k, k]: everything read from input channel j
                ref = torch.stack([nxt[:, j].norm() for j in range(n)])
            else:  # readout columns of channel j
                P = nxt.shape[1] // n
                ref = torch.stack([nxt[:, j * P:(j + 1) * P].norm() for j in range(n)])
            torch.testing.assert_close(snap.fanout[l][k].double(), ref, rtol=1e-6, atol=1e-7)
    assert sum(bool((c.abs() > 0).any()) for c in snap.corr) == len(snap.corr)


def test_conv_teacher_tunes_every_channel_and_decays_strength():
    cfg = conv("teacher.firing=[0.3, 0.6]", "teacher.strength_decay=1.0", "teacher.weights='gaussian'")
    p = build(cfg, CPU)
    t = p.teacher
    from teacherstudent.inputs import make_inputs
    from teacherstudent.seeds import seeded

    ref = make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed).sample(cfg.teacher.reference_samples, seeded(0))
    hidden, y = t.maps(ref)
    for h, frac in zip(hidden, (0.3, 0.6)):
        fires = (h > 0).transpose(0, 1).reshape(h.shape[1], -1).double().mean(1)
        assert (fires - frac).abs().max() < 0.01, fires
    strength = (1.0 + torch.arange(4, dtype=torch.float64)) ** -1.0
    w1 = t.weights[1] / strength[None, :, None, None]  # undo the decay: unit-norm rows again
    torch.testing.assert_close(w1.flatten(1).norm(dim=1), torch.ones(6, dtype=torch.float64))
    assert t.weights[1].shape == (6, 4, 3, 3) and t.weights[-1].shape == (10, 6 * 36)
    torch.testing.assert_close(y.mean(0), torch.zeros(10, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(y.std(0), torch.ones(10, dtype=torch.float64))
    assert p.widths == [12, 18] and p.teacher_widths == [4, 6] and p.activation_widths == [12 * 36, 18 * 36]


def test_digits_are_1x8x8_images():
    p = build(tiny("arch='conv'", "inputs.kind='digits'", "teacher.widths=[3]", "teacher.reference_samples=500"), CPU)
    assert p.ens.geom.image == (1, 8, 8) and p.teacher.weights[0].shape == (3, 1, 3, 3)
    assert p.data.teacher_hidden_eval[0].shape == (256 * 64, 3)


@pytest.mark.parametrize("sets, words", [
    (("conv.stride=2",), "conv.stride does nothing unless arch='conv'"),
    (("arch='conv'",), "arch='conv' needs image inputs; set inputs.kind to one of cifar10, digits, fashion_mnist, gaussian_images, mnist"),
    ((*CONV, "teacher.d=36"), "teacher.d does nothing with arch='conv'"),
    ((*CONV, "student.lucky_nodes=1"), "does not support student.lucky_nodes"),
    ((*CONV, "training.backend='fast'"), "training.backend='fast'"),
    ((*CONV, "inputs.labels='permuted'"), "inputs.labels='wide_teacher'/'permuted'"),
    ((*CONV, "teacher.bias_mode='fixed'"), "teacher.bias_mode='fixed'/'uniform'"),
    ((*CONV, "training.dropout=0.1"), "does not support training.dropout"),
    ((*CONV, "conv.stride=[1, 1, 1]"), "conv.stride has 3 values but the teacher has 2 conv layers"),
    ((*CONV, "conv.stride=2", "conv.padding=0"), "has no output positions"),
    ((*CONV, "conv.padding=-1"), "conv.padding must be non-negative"),
    ((*CONV, "conv.padding=3"), "conv.padding must be smaller than conv.kernel"),
    (("arch='resnet'",), "unknown architecture 'resnet'; known: "),  # the names: test_strict_config.py
    (("inputs.image_size=4",), "inputs.image_size is only used by kind=gaussian_images"),
])
def test_conv_config_errors(sets, words):
    with pytest.raises(UserError) as err:
        tiny(*sets)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_default_run_id_unchanged_and_conv_fields_hidden_at_default():
    assert ExperimentConfig().run_id == "default-44136fa355"  # main's default run id
    assert "arch" not in ExperimentConfig().canonical() and "conv" not in ExperimentConfig().canonical()
    assert build_config({"inputs": {"kind": "gaussian_images"}}).canonical()["inputs"] == {"kind": "gaussian_images"}
    assert conv("conv.kernel=5", "conv.padding=2").canonical()["conv"] == {"kernel": 5, "padding": 2}


def test_conv_run_through_the_cli_writes_the_tables_and_the_figure(tmp_path):
    sets = [a for s in tiny_overrides(*CONV) for a in ("--set", s)]
    result = invoke("run", "--out", tmp_path, "--device", "cpu", *sets)
    assert result.exit_code == 0, result.output
    folder = tmp_path / conv().run_id
    assert json.loads((folder / "meta.json").read_text())["backend"] == "autograd"
    tn = pd.read_parquet(folder / "teacher_nodes.parquet")
    sn = pd.read_parquet(folder / "student_nodes.parquet")
    assert sorted(tn.groupby("layer").teacher_node.nunique()) == [4, 6]
    assert sorted(sn.groupby("layer").student_node.nunique()) == [12, 18]
    m = pd.read_parquet(folder / "metrics.parquet")
    assert {"best_corr_mean", "loss"} <= set(m.metric)
    assert np.load(folder / "corr.npz")["step_16_layer_1"].shape == (2, 6, 18)
    assert (folder / "best_corr.png").exists()
    bad = invoke("run", "--out", tmp_path / "x", "--device", "cpu", *sets, "--set", "conv.kernel=0")
    assert_user_error(bad)
    assert not (tmp_path / "x").exists()


def test_conv_run_resumes_bit_identical(tmp_path):
    cfg = conv("student.batchnorm=true", "training.momentum=0.9", "training.epochs=3")
    whole = run(cfg, RunOptions(tmp_path / "a", "cpu"))
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=10))
    assert json.loads((part / "status.json").read_text())["state"] == "interrupted"
    run(cfg, RunOptions(tmp_path / "b", "cpu"))
    for a, b in zip(load_torch(whole / "checkpoints" / "final.pt")["weights"],
                    load_torch(part / "checkpoints" / "final.pt")["weights"], strict=True):
        assert torch.equal(a, b)
    for t in ("metrics", "teacher_nodes", "student_nodes"):
        pd.testing.assert_frame_equal(pd.read_parquet(whole / f"{t}.parquet"), pd.read_parquet(part / f"{t}.parquet"))


def test_slices_share_storage_and_measure_in_chunks_alike():
    p = build(conv("student.seeds=[0, 1, 2]"), CPU)
    d = p.data
    whole = measure(p.ens, d.x_eval, d.y_eval, d.teacher_hidden_eval, 0)
    chunked = measure(p.ens, d.x_eval, d.y_eval, d.teacher_hidden_eval, 0, member_chunk=2)
    for a, b in zip(whole.corr, chunked.corr):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(whole.eval_loss, chunked.eval_loss)
    assert isinstance(p.ens.slice(1, 2), ConvEnsemble) and p.ens.slice(1, 2).params[0].data_ptr() == p.ens.params[0][1].data_ptr()


# ---- channel-level lottery probes ---------------------------------------------------------

def _masked_full(state, kept, widths):
    """The parent's full-size state with every pruned channel's fan-in, bias and fan-out zeroed
    (written out channel by channel), and its masks."""
    params = [t.clone() for t in state]
    masks = [torch.zeros_like(t, dtype=torch.bool) for t in params]
    L = len(kept)
    for k in range(params[0].shape[0]):
        for l in range(L + 1):
            rows = kept[l][k].tolist() if l < L else range(params[2 * l].shape[1])
            cols = kept[l - 1][k].tolist() if l > 0 else range(params[0].shape[2])
            for i in rows:
                masks[2 * l + 1][k, i] = True
                for j in cols:
                    if params[2 * l].dim() == 5:
                        masks[2 * l][k, i, j] = True
                    else:
                        P = params[2 * l].shape[2] // widths[-1]
                        masks[2 * l][k, i, j * P:(j + 1) * P] = True
    return [p * m for p, m in zip(params, masks)], masks


def test_channel_pruning_keeps_exactly_the_chosen_channels_and_pruned_ones_stay_zero(tmp_path):
    from teacherstudent.probes.lottery import run_lottery
    from teacherstudent.probes.prune import prune_channels
    from teacherstudent.probes.runs import load_probe

    cfg = conv("training.dtype='float64'", "student.seeds=[0, 1]")
    parent = run(cfg, RunOptions(tmp_path, "cpu"))
    (child,) = run_lottery(parent, root=tmp_path, keep=0.5, by="fanout", rewind="init", device="cpu")
    kept = load_probe(child)["kept"]
    assert [k.shape for k in kept] == [(2, 6), (2, 9)]
    init = load_torch(parent / "checkpoints" / "init.pt")["weights"]
    final = load_torch(parent / "checkpoints" / "final.pt")["weights"]
    from teacherstudent.conv import fanout_norms

    for l, f in enumerate(fanout_norms(final[0::2])):  # the kept channels are each member's top fan-out
        assert torch.equal(kept[l], f.argsort(dim=1, descending=True, stable=True)[:, :kept[l].shape[1]].sort(1).values)
    child_init = load_torch(child / "checkpoints" / "init.pt")["weights"]
    # at rewind: exactly the parent's initial values of the kept channels, nothing else
    for k in range(2):
        w0, w1, R = init[0][k], init[2][k], init[4][k]
        torch.testing.assert_close(child_init[0][k], w0[kept[0][k]], rtol=0, atol=0)
        torch.testing.assert_close(child_init[2][k], w1[kept[1][k]][:, kept[0][k]], rtol=0, atol=0)
        torch.testing.assert_close(child_init[4][k], R.reshape(10, 18, 36)[:, kept[1][k]].reshape(10, -1), rtol=0, atol=0)
        torch.testing.assert_close(child_init[1][k], init[1][k][kept[0][k]], rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(prune_channels(init, kept), child_init))
    # retraining the pruned students = training the full-size ones with the pruned channels held at zero
    full, masks = _masked_full(init, kept, [12, 18])
    ens = ConvEnsemble([t.clone() for t in full], build(cfg, CPU).ens.geom)

    def hold():
        with torch.no_grad():
            for p, m in zip(ens.params, masks):
                p.mul_(m)

    ens.after_step = hold
    tr = Trainer(build(cfg, CPU, ensemble=ens))
    tr.train_until(cfg.total_steps)
    trained = prune_channels([p.detach() for p in ens.params], kept)
    child_final = load_torch(child / "checkpoints" / "final.pt")["weights"]
    for a, b in zip(trained, child_final):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert all(bool((p[~m] == 0).all()) for p, m in zip(ens.params, masks))
    assert sorted(pd.read_parquet(child / "student_nodes.parquet").groupby("layer").student_node.nunique()) == [6, 9]


def test_conv_magnitude_pruning_is_refused_and_reinit_probes_redraw_channels(tmp_path):
    from teacherstudent.probes.lottery import run_lottery
    from teacherstudent.probes.reinit import run_reinit

    parent = run(conv(), RunOptions(tmp_path, "cpu"))
    with pytest.raises(UserError, match="prune channels with --by fanout, alignment or random"):
        run_lottery(parent, root=tmp_path, keep=0.5, by="magnitude", device="cpu")
    from teacherstudent.probes.flatness import flatness_plan

    with pytest.raises(UserError, match="probe flatness covers MLP students; .* has arch='conv'"):
        flatness_plan(parent, root=tmp_path)
    (child,) = run_lottery(parent, root=tmp_path, keep=0.5, by="random", rewind="reinit", device="cpu")
    assert load_torch(child / "checkpoints" / "init.pt")["weights"][2].shape == (2, 9, 6, 3, 3)
    folder = run_reinit(parent, root=tmp_path, nodes="random", device="cpu")
    a = load_torch(parent / "checkpoints" / "init.pt")["weights"]
    b = load_torch(folder / "checkpoints" / "init.pt")["weights"]
    for l in range(2):  # whole channels (fan-in and bias) redrawn, the others untouched
        changed = (a[2 * l] != b[2 * l]).flatten(2).any(2)
        assert torch.equal(changed, (a[2 * l] != b[2 * l]).flatten(2).all(2)) and changed.any()
        assert torch.equal(changed, a[2 * l + 1] != b[2 * l + 1])
    assert torch.equal(a[4], b[4])


def test_gaussian_images_statistics():
    from teacherstudent.inputs import make_inputs
    from teacherstudent.seeds import seeded

    cfg = build_config({"inputs": {"kind": "gaussian_images", "image_channels": 2, "image_size": 5, "sigma": 3.0}})
    x = make_inputs(cfg.inputs, cfg.teacher.d, 0).sample(20000, seeded(1))
    assert x.shape == (20000, 50) and x.dtype == torch.float64
    assert x.mean().abs() < 0.01 and (x.std(0) / 3.0 - 1).abs().max() < 0.03
    assert (torch.corrcoef(x[:, :6].T) - torch.eye(6)).abs().max() < 0.03


def test_memory_estimate_counts_every_position():
    from teacherstudent.resources import estimate

    small, big = estimate(conv()), estimate(conv("inputs.image_size=12"))
    for e, P in ((small, 36), (big, 144)):  # 2 members x 3 x batch 64 x ((12 + 18) channels x P positions + 10 outputs)
        assert e.parts["step activations"] == 2 * 3 * 64 * (30 * P + 10) * 4
    params = sum(p.numel() for p in build(conv(), CPU).ens.params)
    assert small.parts["students"] == params * 4 * 2 + params * 4 * 2  # float32 weights and grads, 2 fp32 copies


def test_benchmark_variants_compute_the_grouped_forward():
    from teacherstudent_benchmarks.conv_bench import VARIANTS

    p = build(conv("training.dtype='float64'", "student.seeds=[0, 1, 2]", "conv.stride=[2, 1]"), CPU)
    x = p.data.x_eval[:16]
    ref = p.ens.output(x)
    for name, fn in VARIANTS.items():
        torch.testing.assert_close(fn(p.ens, x), ref, rtol=0, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_conv_ensemble_on_cuda_matches_cpu():
    cfg = conv("training.dtype='float64'", "student.batchnorm=true")
    a, b = Trainer(build(cfg, CPU)), Trainer(build(cfg, torch.device("cuda")))
    a.train_until(4)
    b.train_until(4)
    for x, y in zip(a.ens.state(), b.ens.state()):
        torch.testing.assert_close(x, y.cpu(), rtol=1e-7, atol=1e-9)
    sa, sb = a.snapshot(), b.snapshot()
    for x, y in zip(sa.corr, sb.corr):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_study_packing_counts_conv_activations_at_every_position():
    from teacherstudent.sweep import member_bytes

    small, big = member_bytes(conv()), member_bytes(conv("inputs.image_size=12"))
    assert big - small == 4 * (3 * 64 + 2 * 256) * 30 * (144 - 36)  # float32, (12 + 18) channels, 36 -> 144 positions


@pytest.mark.parametrize("init, gain", [("kaiming_normal", 2.0), ("xavier_normal", None), ("scaled", 1.0)])
def test_conv_students_draw_every_student_init_with_the_conv_fan_in(init, gain):
    """student.init reaches conv students: weight std follows fan_in = n_in k^2 (fan_out = n_out k^2 for xavier),
    as torch.nn.init counts a Conv2d weight; init_scale multiplies the weights."""
    from teacherstudent.conv import geometry, init_conv_member

    cfg = conv(f"student.init='{init}'", "teacher.widths=[8, 16]")
    g = geometry(cfg)
    widths = [n * cfg.student.multiplier for n in cfg.teacher.widths]
    w1 = init_conv_member(widths, cfg.teacher.outputs, g, 0, cfg.student)[2]  # layer 1: [48, 24, 3, 3]
    fan_in, fan_out = w1[0].numel(), w1.shape[0] * 9
    want = (gain / fan_in) ** 0.5 if gain else (2.0 / (fan_in + fan_out)) ** 0.5
    assert w1.std().item() == pytest.approx(want, rel=0.05)
    doubled = init_conv_member(widths, cfg.teacher.outputs, g, 0, conv(f"student.init='{init}'", "teacher.widths=[8, 16]",
                                                                        "student.init_scale=2.0").student)[2]
    torch.testing.assert_close(doubled, 2 * w1)
