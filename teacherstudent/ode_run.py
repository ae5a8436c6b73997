"""The two-layer ODE (ode.py) held against a finished run: ``teacherstudent theory ode RUN``.

``check_setting(cfg)`` refuses, in one line, a run outside the ODE's assumptions: one hidden
layer (mlp), Gaussian inputs N(0, sigma^2 I), the teacher's own labels, no biases anywhere
(``teacher.bias = false``, no output bias or standardisation, ``student.bias = false``), plain
SGD (no momentum, weight decay, schedule, warm-up, clipping, dropout or renorm) on the mse loss
with batch 1 and no sample seen twice (``inputs.fresh = true``, or one pass over a fixed set
that is at least as long as the run). The simulator's activation is ReLU.

``ode_table(folder)`` integrates the ODE of every member from that member's initial overlaps
(``checkpoints/init.pt`` and the teacher rebuilt from the config), and returns the
``theory_ode`` table: the ODE's ``eg``, ``Q``, ``R``, ``T``, ``V`` at every measurement step
(``source = "ode"``) next to the simulation's: the measured evaluation error converted to
``eps_g = (1/2) E||y* - y||^2`` at every measurement step, and ``Q``, ``R``, ``T``, ``V`` from
the weights kept at init, ``training.checkpoint_steps`` and the end, with ``eg_exact``, the
closed-form ``eps_g`` of those weights (free of the evaluation set's sampling error)
(``source = "simulation"``). ``i, j`` index the matrix entry (``Q_ij``, ``R_in``, ``T_nm``, ``V_ci``;
-1 for ``eg``); ``t = step / N``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import ode
from .errors import UserError

COLUMNS = ("run", "member", "step", "t", "source", "statistic", "i", "j", "value")


def _problems(cfg) -> list[str]:
    t, s, te, i = cfg.training, cfg.student, cfg.teacher, cfg.inputs
    checks = [
        (cfg.arch != "mlp", f"arch = {cfg.arch!r} (needs 'mlp')"),
        (len(te.widths) != 1, f"teacher.widths = {list(te.widths)} (needs one hidden layer)"),
        (i.kind != "gaussian", f"inputs.kind = {i.kind!r} (needs 'gaussian')"),
        (i.labels != "teacher", f"inputs.labels = {i.labels!r} (needs 'teacher')"),
        (te.bias, "teacher.bias = true (needs false)"),
        (te.standardize_outputs, "teacher.standardize_outputs = true (needs false: it adds an output bias)"),
        (te.output_bias is not None, "teacher.output_bias is set (needs none)"),
        (te.batchnorm or s.batchnorm, "batchnorm (needs none)"),
        (te.leaky_slope != 0, "teacher.leaky_slope != 0 (needs ReLU)"),
        (s.bias, "student.bias = true (needs false: the ODE has no biases)"),
        (t.optimizer != "sgd" or t.momentum or t.weight_decay, "training: not plain SGD (needs optimizer 'sgd', momentum 0, weight_decay 0)"),
        (t.schedule != "constant" or t.warmup_steps or t.warmup_epochs, "training: the learning rate changes (needs schedule 'constant', no warm-up)"),
        (t.clip_norm is not None or t.dropout or t.renorm != "none", "training: clip_norm, dropout or renorm is set"),
        (t.loss != "mse", f"training.loss = {t.loss!r} (needs 'mse')"),
        (t.batch_size != 1, f"training.batch_size = {t.batch_size} (needs 1: online SGD)"),
        (t.sampling != "epoch", "training.sampling = 'replacement' (repeats samples; needs 'epoch')"),
        (not i.fresh and cfg.total_steps > i.train_samples,
         f"the run sees its {i.train_samples} training samples more than once (needs inputs.fresh = true, or "
         f"inputs.train_samples >= {cfg.total_steps} steps)"),
    ]
    return [why for bad, why in checks if bad]


def check_setting(cfg) -> None:
    """One ``UserError`` line when the ODE does not describe ``cfg``'s training (module docstring)."""
    bad = _problems(cfg)
    if bad:
        raise UserError(f"the two-layer ODE does not apply to {cfg.run_id}: {'; '.join(bad)}")


def rates(cfg) -> tuple[float, float]:
    """``(eta_w, eta_v)`` of the ODE (ode.py) for ``cfg``: the per-sample loss is ``(1/2)||e||^2``
    (half_sum) or ``(1/C)||e||^2`` (mean), so the plain step is ``lr`` or ``2 lr / C``."""
    eta = cfg.training.lr * (1.0 if cfg.training.loss_reduction == "half_sum" else 2.0 / cfg.teacher.outputs)
    return eta * cfg.inputs.sigma ** 2 * cfg.teacher.d, eta * cfg.teacher.d


def eg_from_loss(cfg, value: np.ndarray) -> np.ndarray:
    """The measured evaluation loss (in the training loss's units) as ``eps_g = (1/2) E||e||^2``."""
    return value if cfg.training.loss_reduction == "half_sum" else value * cfg.teacher.outputs / 2


def _teachers(cfg) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(W*: [M, N], V*: [C, M])`` of every member (float64)."""
    from .architectures import ARCHITECTURES
    from .inputs import make_inputs

    teacher = ARCHITECTURES[cfg.arch].teacher(cfg, make_inputs(cfg.inputs, cfg.teacher.d, cfg.teacher.seed))
    out = []
    for k in range(len(cfg.student.seeds)):
        t = teacher.member(k)
        out.append((t.weights[0].double().numpy(), t.weights[-1].double().numpy()))
    return out


def overlaps(cfg, weights: list, k: int, teacher: tuple[np.ndarray, np.ndarray]) -> ode.Overlaps:
    """Member ``k``'s order parameters from stacked weights ``[W_0, b_0, W_out, b_out]``."""
    W, V = weights[0][k].double().numpy(), weights[2][k].double().numpy()
    Wt, Vt = teacher
    s2 = cfg.inputs.sigma ** 2
    return ode.Overlaps(s2 * W @ W.T, s2 * W @ Wt.T, s2 * Wt @ Wt.T, V, Vt)


def _kept_weights(folder: Path) -> list[tuple[int, list]]:
    from .folder import load_torch

    paths = [folder / "checkpoints" / "init.pt", *sorted((folder / "checkpoints").glob("step_*.pt")),
             folder / "checkpoints" / "final.pt"]
    kept = {}
    for p in paths:
        if p.exists():
            c = load_torch(p)
            kept[int(c["step"])] = c["weights"]
    if 0 not in kept:
        raise UserError(f"{folder / 'checkpoints' / 'init.pt'} is missing: the ODE starts from the run's initial weights")
    return sorted(kept.items())


def _rows(run: str, k: int, step: int, t: float, source: str, s: ode.Overlaps, eg: float | None) -> list[tuple]:
    rows = [] if eg is None else [(run, k, step, t, source, "eg", -1, -1, eg)]
    for name in ("Q", "R", "T", "V"):
        a = getattr(s, name)
        rows += [(run, k, step, t, source, name, i, j, float(a[i, j])) for i in range(a.shape[0]) for j in range(a.shape[1])]
    return rows


def ode_table(folder: Path, dt: float | None = None, on_member=None) -> pd.DataFrame:
    """The ``theory_ode`` table of a finished run (module docstring); ``on_member(k)`` after each member."""
    from .config import build_config
    from .store import read_config, run_status
    from .summary import read_table

    cfg = build_config(read_config(folder))
    check_setting(cfg)
    if run_status(folder).get("state") != "finished":
        raise UserError(f"{folder} has not finished (state: {run_status(folder).get('state')}); finish it with `teacherstudent run` first")
    m = read_table(folder, "metrics")
    loss = m[(m.metric == "loss") & (m.split == "eval")]
    kept = _kept_weights(folder)
    steps = sorted(set(loss.step.astype(int)) | {s for s, _ in kept})
    N = cfg.teacher.d
    lr_w, lr_v = rates(cfg)
    run = folder.name
    rows: list[tuple] = []
    for k, teacher in enumerate(_teachers(cfg)):
        s0 = overlaps(cfg, kept[0][1], k, teacher)
        for step, s in zip(steps, ode.integrate("relu", s0, lr_w, lr_v, np.array(steps) / N, dt)):
            e = ode.eg("relu", s)
            rows += _rows(run, k, step, step / N, "ode", s, e)
            rows.append((run, k, step, step / N, "ode", "eg_exact", -1, -1, e))  # the ODE's eg is exact
        for step, w in kept:
            sim = overlaps(cfg, w, k, teacher)  # eg_exact: the closed-form eps_g of the simulated weights
            rows += _rows(run, k, step, step / N, "simulation", sim, None)
            rows.append((run, k, step, step / N, "simulation", "eg_exact", -1, -1, ode.eg("relu", sim)))
        lk = loss[loss.member == k]
        rows += [(run, k, int(r.step), r.step / N, "simulation", "eg", -1, -1, float(eg_from_loss(cfg, r.value)))
                 for r in lk.itertuples()]
        if on_member is not None:
            on_member(k)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"member": "int64", "step": "int64", "i": "int64", "j": "int64", "t": "float64", "value": "float64"})


def normalised(df: pd.DataFrame) -> pd.DataFrame:
    """Per (member, step, source): ``r_n = max_i R_in / sqrt(Q_ii T_nn)`` averaged over teacher nodes n
    (``r``), the mean student length ``Q_ii`` (``q``), and ``eg`` where there is one."""
    out = []
    for (member, step, source), g in df.groupby(["member", "step", "source"], sort=True):
        t = float(g.t.iloc[0])
        stat = {name: g[g.statistic == name] for name in ("Q", "R", "T", "eg", "eg_exact")}
        for name in ("eg", "eg_exact"):
            if len(stat[name]):
                out.append((member, step, t, source, name, float(stat[name].value.iloc[0])))
        if len(stat["R"]):
            mat = lambda d: d.pivot(index="i", columns="j", values="value").to_numpy()  # noqa: E731
            Q, R, T = mat(stat["Q"]), mat(stat["R"]), mat(stat["T"])
            cos = R / np.sqrt(np.outer(np.diag(Q), np.diag(T)))
            out.append((member, step, t, source, "r", float(cos.max(axis=0).mean())))
            out.append((member, step, t, source, "q", float(np.diag(Q).mean())))
    return pd.DataFrame(out, columns=["member", "step", "t", "source", "statistic", "value"])


def write_ode(folder: Path, dt: float | None = None, on_member=None) -> tuple[Path, pd.DataFrame]:
    """``theory_ode.parquet`` into the run folder (atomically); returns its path and the table."""
    from .folder import write_parquet

    df = ode_table(folder, dt, on_member)
    path = folder / "theory_ode.parquet"
    write_parquet(path, df)
    return path, df


def ode_errors(df: pd.DataFrame) -> pd.DataFrame:
    """How far the ODE is from the simulation, per statistic of ``normalised`` (``eg`` measured,
    ``eg_exact``, ``r``, ``q``): over the steps both have, the largest |ODE - simulation| of one member
    (``max_member``), its RMS over members (``rms_member``, then the largest over steps), and the
    largest |difference| of the member means (``mean``)."""
    n = normalised(df)
    wide = n.pivot_table(index=["statistic", "step", "member"], columns="source", values="value").dropna()
    diff = (wide["ode"] - wide["simulation"]).rename("d").reset_index()
    out = []
    for stat, g in diff.groupby("statistic", sort=True):
        per_step = g.groupby("step").d
        out.append({"statistic": stat, "max_member": float(g.d.abs().max()),
                    "rms_member": float(np.sqrt(per_step.apply(lambda d: (d ** 2).mean())).max()),
                    "mean": float(per_step.mean().abs().max()), "steps": int(per_step.ngroups)})
    return pd.DataFrame(out)


PANELS = {
    "generalisation error": {"xlabel": "t = step / N", "ylabel": "eps_g = E||y* - y||^2 / 2", "yscale": "log"},
    "teacher-node overlap": {"xlabel": "t = step / N", "ylabel": "max_i R_in / sqrt(Q_ii T_nn), mean over n",
                             "ylim": (-0.05, 1.05)},
    "student length": {"xlabel": "t = step / N", "ylabel": "Q_ii, mean over i"},
}
SERIES = {("eg", "ode"): ("generalisation error", "ODE"), ("eg", "simulation"): ("generalisation error", "simulation"),
          ("r", "ode"): ("teacher-node overlap", "ODE"), ("r", "simulation"): ("teacher-node overlap", "simulation"),
          ("q", "ode"): ("student length", "ODE"), ("q", "simulation"): ("student length", "simulation")}


def plot_ode(folder: Path, df: pd.DataFrame | None = None) -> list[Path]:
    """``ode_overlay.png``/``.pdf``/``.csv``: eps_g, the normalised overlap and Q_ii of the ODE over the
    simulation's (member mean; band: min to max over members), from ``theory_ode.parquet``."""
    from .figures import plot_frame, render, save_figure_files, series_rows, spread
    from .summary import read_table

    df = read_table(folder, "theory_ode") if df is None else df
    n = normalised(df)
    rows = []
    for (stat, source), (panel, series) in SERIES.items():
        d = spread(n[(n.statistic == stat) & (n.source == source)], ["t"], "value")
        rows += series_rows(d, panel, series, "line", "t", "y", "lo", "hi")
    data = plot_frame(rows)
    fig = render(data, PANELS, f"{folder.name}: two-layer ODE vs simulation")
    return save_figure_files(fig, folder / "ode_overlay", data)
