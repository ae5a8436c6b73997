"""The optimizer_robustness experiment (analysis/): its arms, its study and its tables on a tiny run."""

from __future__ import annotations

import numpy as np

from teacherstudent.experiments import load_experiment, plan_study
from teacherstudent.simulate import RunOptions, run

from conftest import tiny


def test_study_is_four_arms_times_three_init_scales():
    module, study = plan_study("optimizer_robustness")
    assert len(study.runs) == 12
    base = tiny("training.epochs=6")
    a = module.arms(base)
    assert list(a) == ["sgd", "sgd_warmup", "adam", "adam_warmup"]
    t = {k: c.training for k, c in a.items()}
    assert t["sgd"] == base.training and t["adam"].optimizer == "adam" and t["adam"].lr == module.ADAM_LR
    assert t["sgd_warmup"].warmup_epochs == t["adam_warmup"].warmup_epochs == module.WARMUP_EPOCHS
    assert t["adam_warmup"].optimizer == "adam" and t["sgd_warmup"].optimizer == "sgd"


def test_tables_on_tiny_runs(tmp_path):
    module = load_experiment("optimizer_robustness")
    base = tiny("training.epochs=4", "student.init_scale=0.5")
    runs = {arm: run(cfg, RunOptions(tmp_path, "cpu")) for arm, cfg in module.arms(base).items()
            if arm in ("sgd", "adam_warmup")}
    tabs = module.tables(runs)
    s, nodes = tabs["summary"], tabs["nodes"]
    assert len(s) == 2 * 2 and set(s.arm) == set(runs)
    assert len(nodes) == 2 * 2 * (12 + 18)  # arms x members x student nodes (widths [4, 6] x 3) at the end
    for col in ("best_corr_mean", "recovered_frac", "aligned_frac"):
        assert s[col].between(0, 1).all()
    # the summary is the nodes table reduced: aligned fraction and the medians of each group
    g = nodes[(nodes.arm == "adam_warmup") & (nodes.layer == 1)]
    row = s[(s.arm == "adam_warmup") & (s.layer == 1)].iloc[0]
    assert np.isclose(row.aligned_frac, g.aligned.mean())
    if g.aligned.any() and (~g.aligned).any():
        assert np.isclose(row.fanout_ratio, g[g.aligned].fanout_norm.median() / g[~g.aligned].fanout_norm.median())
