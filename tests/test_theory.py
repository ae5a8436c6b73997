"""Theory statistics beta / H (theory.py): batched == a plain per-sample loop, the gradient
identity against autograd (with and without BatchNorm), the tables of a run, resume, config errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from teacherstudent.build import build
from teacherstudent.config import ExperimentConfig, build_config
from teacherstudent.errors import UserError
from teacherstudent.simulate import RunOptions, run
from teacherstudent.store import load_runs
from teacherstudent.theory import bn_scale, mean_betas, student_net, sum_betas, teacher_net

from conftest import assert_user_error, cli_sets, invoke, tiny

CPU = torch.device("cpu")


def problem(*overrides: str):
    """A tiny float64 problem (teacher with tuned biases, students with biases), 3 hidden layers."""
    return build(tiny("teacher.widths=[3, 4, 5]", "student.multiplier=2", "teacher.outputs=3",
                      "inputs.eval_samples=40", training__dtype="float64", *overrides), CPU)


def aug(w: np.ndarray, b: np.ndarray, top: bool) -> np.ndarray:
    a = np.concatenate([w, b[:, None]], 1)
    return a if top else np.concatenate([a, np.eye(1, a.shape[1], a.shape[1] - 1)], 0)


def forward_np(ws, bs, x, slope=0.0):
    """Gates of every hidden layer for one sample, augmented with the constant's 1."""
    gates, h = [], x
    for w, b in zip(ws[:-1], bs[:-1]):
        z = w @ h + b
        g = np.where(z > 0, 1.0, slope)
        h = g * z
        gates.append(np.append(g, 1.0))
    return gates


def reference_betas(ws, bs, tw, tb, x, slope):
    """The definition, one sample and one member at a time, in numpy."""
    L = len(ws) - 1
    gs, gt = forward_np(ws, bs, x), forward_np(tw, tb, x, slope)
    S = [aug(w, b, l == L) for l, (w, b) in enumerate(zip(ws, bs))]
    T = [aug(w, b, l == L) for l, (w, b) in enumerate(zip(tw, tb))]
    HA = HB = np.eye(S[L].shape[0])
    out = [None] * L
    for l in range(L - 1, -1, -1):
        A = S[l + 1].T @ HA @ T[l + 1]
        B = S[l + 1].T @ HB @ S[l + 1]
        out[l] = (A, B)
        HA = A * np.outer(gs[l], gt[l])
        HB = B * np.outer(gs[l], gs[l])
    return out


@pytest.mark.parametrize("over", [(), ("teacher.leaky_slope=0.2",)])
def test_batched_betas_equal_a_per_sample_loop(over):
    p = problem(*over)
    x = p.data.x_eval
    st, tn = student_net(p.ens), teacher_net(p.teacher, p.ens.K, CPU, torch.float64)
    per = sum_betas(st, tn, x, per_sample=True)
    means = mean_betas(p.teacher, p.ens, x, budget_bytes=3000)  # tiny budget: chunks of members and samples
    slope = p.teacher.leaky_slope
    tw = [w.numpy() for w in p.teacher.weights]
    tb = [b.numpy() for b in p.teacher.biases]
    for k in range(p.ens.K):
        ws = [w[k].detach().numpy() for w in p.ens.weights]
        bs = [b[k].detach().numpy() for b in p.ens.biases]
        refs = [reference_betas(ws, bs, tw, tb, xi, slope) for xi in x.numpy()]
        for l in range(len(ws) - 1):
            for i in range(2):
                ref = np.stack([r[l][i] for r in refs])
                np.testing.assert_allclose(per[l][i][k].numpy(), ref, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(means[l][i][k].numpy(), ref.mean(0), rtol=1e-12, atol=1e-12)
    assert means[0][0].abs().sum() > 0  # the lowest layer is not trivially zero


def _gradient_identity(p, bn: bool):
    """-dl/dz_l from autograd (l = 1/2 ||y_s - y_t||^2 per sample, z_l the pre-activation before
    BatchNorm) against g_l = J_l D_l [A_l f*^_l - B_l f^_l] built from the per-sample betas."""
    ens, teacher, x = p.ens, p.teacher, p.data.x_eval
    per = sum_betas(student_net(ens), teacher_net(teacher, ens.K, CPU, torch.float64), x, per_sample=True)
    th, y_t = teacher.forward(x)
    scale = bn_scale(ens)
    L = len(ens.weights) - 1
    for k in range(ens.K):
        zs, fs, h = [], [], x
        for l in range(L + 1):
            z = h @ ens.weights[l][k].detach().T + ens.biases[l][k].detach()
            if l == L:
                break
            z.requires_grad_(True)
            zs.append(z)
            u = z
            if bn:
                gamma, beta = ens.bn_params[2 * l][k].detach(), ens.bn_params[2 * l + 1][k].detach()
                mean, var = ens.bn_buffers[2 * l][k], ens.bn_buffers[2 * l + 1][k]
                u = (z - mean) / torch.sqrt(var + ens.BN_EPS) * gamma + beta
            h = torch.relu(u)
            fs.append(h)
        torch.testing.assert_close(z, ens.forward(x, train=False)[1][k].detach(), rtol=1e-12, atol=1e-12)
        loss = 0.5 * (z - y_t).square().sum()
        grads = torch.autograd.grad(loss, zs)
        one = torch.ones(x.shape[0], 1, dtype=x.dtype)
        for l in range(L):
            A, B = per[l][0][k], per[l][1][k]  # [S, n+1, m+1], [S, n+1, n+1]
            f_t = torch.cat([th[l], one], 1)
            f_s = torch.cat([fs[l].detach(), one], 1)
            inner = (A @ f_t[:, :, None] - B @ f_s[:, :, None])[:, :-1, 0]
            gate = (fs[l] > 0).double()
            g = gate * inner * (scale[l][k] if bn else 1.0)
            torch.testing.assert_close(g, -grads[l], rtol=1e-10, atol=1e-12)
            assert grads[l].abs().max() > 1e-6  # a gradient that could be wrong


def test_gradient_identity_matches_autograd():
    _gradient_identity(problem(), bn=False)


def test_gradient_identity_with_batchnorm_jacobian_matches_autograd():
    p = problem("student.batchnorm=true")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # BatchNorm away from the identity: scales, shifts and running statistics
        for i, t in enumerate(p.ens.bn_params + p.ens.bn_buffers):
            r = torch.rand(t.shape, generator=gen, dtype=t.dtype)
            t.copy_(0.5 + r if i % 2 == 0 or i >= len(p.ens.bn_params) and i % 2 == 1 else r - 0.5)
    _gradient_identity(p, bn=True)


THEORY = ("measure.every=steps", "measure.every_steps=8", "measure.theory_every=steps", "measure.theory_every_steps=4",
          "measure.theory_samples=100")


@pytest.fixture(scope="module")
def theory_run(tmp_path_factory):
    """One finished tiny run with theory on (read-only): its runs root and folder."""
    root = tmp_path_factory.mktemp("theory")
    return root, run(tiny(*THEORY), RunOptions(root, "cpu"))


def test_theory_tables_at_the_scheduled_steps_and_loadable(theory_run, tmp_path):
    cfg = tiny(*THEORY)
    root, folder = theory_run
    th = load_runs(root, table="theory")
    nodes = load_runs(root, table="theory_nodes")
    assert sorted(th["step"].unique()) == [0, 4, 8, 12, 16] == sorted(nodes["step"].unique())
    assert set(th["pair"]) == {"student_teacher", "student_student"}
    assert set(th["member"]) == set(cfg.student.seeds) and set(th["layer"]) == {0, 1}
    ratio = th[(th.statistic == "diag_offdiag_ratio")]
    assert len(ratio) == 5 * 2 * 2 * 2 and np.isfinite(ratio["value"]).all()
    assert len(nodes) == 5 * 2 * (12 + 18)
    assert (nodes["beta_strength"] ** 2 - nodes["beta_self"].clip(lower=0)).abs().max() < 1e-9
    top = nodes[nodes.layer == 1]  # top hidden layer: B = W^_out^T W^_out, so sqrt(E[B_jj]) is the fan-out norm
    np.testing.assert_allclose(top["beta_strength"], top["fanout_norm"], rtol=1e-5)
    # best correlation and fan-out norms are those of the run's own node table at init and end
    sn = pd.read_parquet(folder / "student_nodes.parquet")
    keys = ["member", "layer", "student_node", "step"]
    joined = nodes.merge(sn, on=keys, suffixes=("", "_sn"))
    assert len(joined) == 2 * 2 * (12 + 18)
    np.testing.assert_allclose(joined["best_corr"], joined["best_corr_sn"], atol=1e-6)
    np.testing.assert_allclose(joined["fanout_norm"], joined["fanout_norm_sn"], rtol=1e-6)
    assert not (folder / "parts").exists()
    # theory on does not change training: the metrics equal the same run without it
    plain = run(tiny(*THEORY[:2]), RunOptions(tmp_path / "plain", "cpu"))
    a, b = pd.read_parquet(folder / "metrics.parquet"), pd.read_parquet(plain / "metrics.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="run"), b.drop(columns="run"))
    # runs without theory are left out of load_runs(table="theory")
    assert set(load_runs(tmp_path / "plain", table="theory").columns) == set()


def test_theory_resume_is_bit_identical(theory_run, tmp_path):
    cfg = tiny(*THEORY)
    whole = theory_run[1]
    part = run(cfg, RunOptions(tmp_path / "b", "cpu", max_steps=8))
    stale = part / "parts" / f"theory-{12:012d}.parquet"  # a crash after a theory part, before the next resume point
    pd.DataFrame({"run": ["x"], "value": [1.0]}).to_parquet(stale)
    run(cfg, RunOptions(tmp_path / "b", "cpu"))
    for t in ("theory", "theory_nodes", "metrics", "student_nodes"):
        assert (whole / f"{t}.parquet").read_bytes() == (part / f"{t}.parquet").read_bytes(), t


@pytest.mark.parametrize("data, words", [
    ({"measure": {"theory_samples": 100}}, "measure.theory_samples does nothing unless measure.theory_every"),
    ({"measure": {"theory_every_steps": 100}}, "measure.theory_every_steps does nothing unless measure.theory_every='steps'"),
    ({"measure": {"theory_every": "steps", "theory_log_points": 5}}, "measure.theory_log_points does nothing unless"),
    ({"measure": {"theory_every": "log", "theory_samples": 20_000}}, "measure.theory_samples (20000) exceeds inputs.eval_samples"),
    ({"measure": {"theory_every": "sometimes"}}, "measure.theory_every"),
])
def test_theory_settings_that_would_do_nothing_are_errors(data, words):
    with pytest.raises(UserError) as err:
        build_config(data)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_theory_setting_error_is_one_line_in_cli(tmp_path):
    assert_user_error(invoke("run", "--out", tmp_path, "--no-figure", *cli_sets("measure.theory_samples=10")))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_default_run_id_unchanged_and_theory_changes_only_its_own():
    assert ExperimentConfig().run_id == "default-44136fa355"
    assert "measure" not in ExperimentConfig().canonical()
    assert build_config({"measure": {"theory_every": "log"}}).run_id != ExperimentConfig().run_id


def test_benchmark_loop_reference_equals_batched():
    from teacherstudent_benchmarks.theory_bench import loop_betas

    p = problem("teacher.leaky_slope=0.1")
    x = p.data.x_eval[:12]
    ref = loop_betas(student_net(p.ens), teacher_net(p.teacher, p.ens.K, CPU, torch.float64), x)
    for (a, b), (ra, rb) in zip(mean_betas(p.teacher, p.ens, x), ref):
        torch.testing.assert_close(a, ra, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, rb, rtol=1e-12, atol=1e-12)


def test_beta_lshape_experiment_tables(tmp_path):
    from teacherstudent.experiments import StudyOptions, run_named

    res = run_named("beta_lshape", StudyOptions(tmp_path, "cpu"), ["teacher.widths=[3, 4]", "teacher.outputs=5",
                                                      "teacher.reference_samples=1000", "inputs.train_samples=256",
                                                      "inputs.eval_samples=128", "student.multiplier=2", "student.seeds=[0, 1]",
                                                      "training.epochs=2", "measure.theory_samples=64"])
    ls, ratios, nodes = res.tables["lshape"], res.tables["ratios"], res.tables["nodes"]
    assert sorted(zip(ls["when"], ls["layer"])) == [("end", 0), ("end", 1), ("init", 0), ("init", 1)]
    assert ((ls.n_aligned + ls.n_unaligned) == 2 * ls.layer.map({0: 6, 1: 8})).all()
    assert set(ratios.columns) >= {"student_teacher", "student_student"} and len(ratios) == 4
    g = nodes[(nodes.when == "end") & (nodes.layer == 0)]
    aligned = g[g.best_corr > 0.9]
    row = ls[(ls["when"] == "end") & (ls.layer == 0)].iloc[0]
    assert row.n_aligned == len(aligned)
    if len(aligned):
        assert row.strength_median_aligned == aligned.beta_strength.median()


def test_verify_flags_a_lost_theory_table_and_repair_rebuilds_it(theory_run, tmp_path):
    """The tables a run should hold come from its config: a theory run without theory.parquet is damaged
    (redo), and --repair trains it again into the same bytes."""
    import shutil

    from teacherstudent.verify import check_run, verify

    root, whole = theory_run
    shutil.copytree(whole, tmp_path / whole.name)
    folder = tmp_path / whole.name
    (folder / "theory.parquet").unlink()
    rc = check_run(folder)
    assert rc.action == "redo" and any("theory.parquet" in p for p in rc.problems), rc
    [after] = verify(tmp_path, repair=True)
    assert after.repaired and (folder / "theory.parquet").read_bytes() == (whole / "theory.parquet").read_bytes()


# ---- convolutional teachers and students (arch='conv'): the dense unrolled net -------------------

CONV = ("arch='conv'", "inputs.kind='gaussian_images'", "inputs.image_size=6", "inputs.sigma=1.0")
CONV_GEOMS = [(), ("conv.stride=[2, 1]", "conv.padding=[1, 0]", "teacher.leaky_slope=0.2")]


def conv_problem(*overrides: str, bn_random: bool = False):
    """A tiny float64 conv problem (6x6 images, channels [4, 6], students x3, 2 members); with ``bn_random``
    BatchNorm students whose scales, shifts and running statistics are away from the identity."""
    p = build(tiny(*CONV, "inputs.eval_samples=40", training__dtype="float64", *overrides), CPU)
    if bn_random:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():  # scales and variances in [0.5, 1.5), shifts and means in [-0.1, 0.1)
            for i, t in enumerate(p.ens.bn_params + p.ens.bn_buffers):
                r = torch.rand(t.shape, generator=gen, dtype=t.dtype)
                t.copy_(0.5 + r if i % 2 == (0 if i < len(p.ens.bn_params) else 1) else 0.2 * r - 0.1)
    return p


def net_forward(net, x_SxD):
    """Hidden post-activations ``[K or 1, S, width]`` and the output of a ``Net``, plainly."""
    h, hidden = x_SxD, []
    for l, (w, b) in enumerate(zip(net.weights, net.biases)):
        z = torch.matmul(h, w.transpose(-1, -2)) + b[..., None, :]
        if l == len(net.weights) - 1:
            return hidden, z
        h = torch.where(z > 0, z, net.slope * z)
        hidden.append(h)


@pytest.mark.parametrize("over, bn", [(CONV_GEOMS[0], False), (CONV_GEOMS[1], False), (CONV_GEOMS[0], True)])
def test_conv_unrolled_net_reproduces_the_conv_forward(over, bn):
    p = conv_problem(*over, *(("student.batchnorm=true",) if bn else ()), bn_random=bn)
    x = p.data.x_eval
    hidden, out = net_forward(teacher_net(p.teacher, p.ens.K, CPU, torch.float64), x)
    t_maps, t_out = p.teacher.maps(x)
    for h, m in zip(hidden, t_maps, strict=True):
        torch.testing.assert_close(h[0], m.flatten(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[0], t_out, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        s_maps, s_out = p.ens.maps(x, train=False)
    hidden, out = net_forward(student_net(p.ens), x)
    K = p.ens.K
    for h, m in zip(hidden, s_maps, strict=True):  # [B, K*n, H, W]: member-major channels
        torch.testing.assert_close(h, m.reshape(m.shape[0], K, -1).transpose(0, 1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, s_out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("over", CONV_GEOMS)
def test_conv_betas_equal_a_per_sample_loop_on_the_unrolled_net_and_channel_blocks(over):
    from teacherstudent.theory import channel_blocks

    p = conv_problem(*over)
    x = p.data.x_eval[:6]
    st, tn = student_net(p.ens), teacher_net(p.teacher, p.ens.K, CPU, torch.float64)
    per = sum_betas(st, tn, x, per_sample=True)
    means = mean_betas(p.teacher, p.ens, x, budget_bytes=2e6)  # below one (member, sample) at flattened widths: chunks of 1 x 1
    tw, tb = [w[0].numpy() for w in tn.weights], [b[0].numpy() for b in tn.biases]
    for k in range(p.ens.K):
        ws, bs = [w[k].numpy() for w in st.weights], [b[k].numpy() for b in st.biases]
        refs = [reference_betas(ws, bs, tw, tb, xi, tn.slope) for xi in x.numpy()]
        for l in range(len(ws) - 1):
            for i in range(2):
                ref = np.stack([r[l][i] for r in refs])
                np.testing.assert_allclose(per[l][i][k].numpy(), ref, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(means[l][i][k].numpy(), ref.mean(0), rtol=1e-10, atol=1e-12)
    # channel blocks: X_ch[j, c] = mean_p X[(j, p), (c, p)], by a plain loop
    P = p.ens.geom.positions()
    blocks = channel_blocks(means, P)
    for l, Pl in enumerate(P):
        for i in range(2):
            X, Y = means[l][i].numpy(), blocks[l][i].numpy()
            n, m = Y.shape[1] - 1, Y.shape[2] - 1
            for k in range(p.ens.K):
                for j in range(n):
                    for c in range(m):
                        assert abs(Y[k, j, c] - np.mean([X[k, j * Pl + q, c * Pl + q] for q in range(Pl)])) < 1e-12
    assert means[0][0].abs().sum() > 0 and blocks[0][1].abs().sum() > 0


@pytest.mark.parametrize("bn", [False, True])
def test_conv_gradient_identity_matches_autograd_of_the_conv_students(bn):
    """-dl/dz_l of each member's real conv forward (the ``nn.Sequential`` of as_modules, z_l the conv output
    before BatchNorm, flattened [C, H, W]) against J_l D_l [A_l f*^_l - B_l f^_l] of the unrolled net."""
    from teacherstudent.conv import as_modules

    p = conv_problem(*(("student.batchnorm=true",) if bn else ()), bn_random=bn)
    ens, teacher, x = p.ens, p.teacher, p.data.x_eval[:16]
    per = sum_betas(student_net(ens), teacher_net(teacher, ens.K, CPU, torch.float64), x, per_sample=True)
    t_maps, y_t = teacher.maps(x)
    P = ens.geom.positions()
    scale = bn_scale(ens)
    one = torch.ones(x.shape[0], 1, dtype=x.dtype)
    for k, net in enumerate(as_modules(ens)):
        net.eval()
        zs: list[torch.Tensor] = []
        convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
        hooks = [c.register_forward_hook(lambda mod, inp, out: zs.append(out)) for c in convs]
        loss = 0.5 * (net(x) - y_t).square().sum()
        for h in hooks:
            h.remove()
        grads = torch.autograd.grad(loss, zs)
        with torch.no_grad():
            s_maps = ens.maps(x, train=False)[0]
        for l in range(len(convs)):
            n = ens.weights[l].shape[1]
            f_s = s_maps[l][:, k * n:(k + 1) * n].flatten(1)
            A, B = per[l][0][k], per[l][1][k]
            inner = (A @ torch.cat([t_maps[l].flatten(1), one], 1)[:, :, None]
                     - B @ torch.cat([f_s, one], 1)[:, :, None])[:, :-1, 0]
            g = (f_s > 0).double() * inner * (scale[l][k].repeat_interleave(P[l]) if bn else 1.0)
            torch.testing.assert_close(g, -grads[l].flatten(1), rtol=1e-10, atol=1e-12)
            assert grads[l].abs().max() > 1e-6


def test_conv_theory_tables_are_per_channel(tmp_path):
    cfg = tiny(*CONV, "measure.theory_every=log", "measure.theory_log_points=2", "measure.theory_samples=32")
    folder = run(cfg, RunOptions(tmp_path, "cpu"))
    th = pd.read_parquet(folder / "theory.parquet")
    nodes = pd.read_parquet(folder / "theory_nodes.parquet")
    assert set(th["pair"]) == {"student_teacher", "student_student"} and set(th["layer"]) == {0, 1}
    assert np.isfinite(th[th.statistic == "diag_offdiag_ratio"]["value"]).all()
    steps = sorted(nodes.step.unique())
    assert steps[0] == 0 and steps[-1] == cfg.total_steps
    for (layer, member, step), g in nodes.groupby(["layer", "member", "step"]):
        assert sorted(g.student_node) == list(range([12, 18][layer]))  # channels, not units
    sn = pd.read_parquet(folder / "student_nodes.parquet")
    joined = nodes.merge(sn, on=["member", "layer", "student_node", "step"], suffixes=("", "_sn"))
    assert len(joined) == 2 * 2 * (12 + 18)  # init and end
    np.testing.assert_allclose(joined["best_corr"], joined["best_corr_sn"], atol=1e-6)
    np.testing.assert_allclose(joined["fanout_norm"], joined["fanout_norm_sn"], rtol=1e-6)
    top = nodes[nodes.layer == 1]  # B = R^T R, so the position-mean of B_(j,p),(j,p) is the fan-out norm^2 / P
    np.testing.assert_allclose(top["beta_strength"], top["fanout_norm"] / 6, rtol=1e-5)


def test_conv_theory_refuses_too_wide_flattened_layers_in_one_line():
    tiny(*CONV, "measure.theory_every=log")  # 18 channels x 36 positions: allowed
    with pytest.raises(UserError) as err:
        tiny(*CONV, "inputs.image_size=16", "measure.theory_every=log")
    msg = str(err.value)
    assert "flattened widths (channels x positions) [3072, 4608] exceed 4096" in msg and "\n" not in msg
