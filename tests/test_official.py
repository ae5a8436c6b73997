"""The side-by-side harness (benchmarks/official): its loader, shim and table conversion always;
the official scripts themselves only with a checkout (TEACHERSTUDENT_OFFICIAL=PATH)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from teacherstudent_benchmarks.official import compare, hydra_conf, tables
from teacherstudent.store import TABLE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = os.environ.get(compare.ENV)
needs_checkout = pytest.mark.skipif(
    not CHECKOUT, reason=f"set {compare.ENV}=PATH to a facebookresearch/luckmatters checkout to run the official code")


def test_loader_applies_overrides_typed_and_is_strict(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("# c\nlr: 0.01\nuse_sgd: false\nseed: [1, 32]\nname: a\ngithash: \"\"\nn: 10000 # size\n")
    cfg = hydra_conf.load(y, ["lr=0.05", "use_sgd=true", "seed=[3,3]", "+choices=[-1.0,0,1.0]"])
    assert cfg.lr == 0.05 and cfg.use_sgd is True and cfg.seed == [3, 3] and cfg.choices == [-1.0, 0, 1.0]
    assert cfg.name == "a" and cfg.githash == "" and cfg.n == 10000
    cfg.bias = 0.0
    assert cfg["bias"] == 0.0 and "lr: 0.05" in cfg.pretty()
    with pytest.raises(hydra_conf.ConfigError, match="no key 'choices'"):
        hydra_conf.load(y, ["choices=[1]"])
    assert hydra_conf.scalar("1e-3") == 0.001 and hydra_conf.scalar("none") == "none"
    with pytest.raises(hydra_conf.ConfigError, match="not key=value"):
        hydra_conf.load(y, ["lr"])


def test_layer_rows_match_a_plain_loop():
    rng = np.random.default_rng(0)
    c = rng.uniform(0.5, 1.0, (6, 40))
    r = tables.layer_rows(c)
    best = [max(row) for row in c]
    assert r["best_corr_mean"] == pytest.approx(sum(best) / 6)
    assert r["best_corr_min"] == min(best)
    assert r["recovered_frac"] == sum(b > 0.95 for b in best) / 6
    assert r["covered_frac"] == sum(b > 0.9 for b in best) / 6
    assert r["match_count_mean"] == pytest.approx(sum(sum(v > 0.9 for v in row) for row in c) / 6)


def test_multilayer_stats_become_our_metrics_schema_with_teachers_as_rows():
    # recon_multilayer saves [students, teachers]: 3 students, 2 teachers; teacher 1 best matched 0.99
    corr_SxT = np.array([[0.2, 0.99], [0.5, 0.1], [0.3, 0.3]])
    stats = [{"eval_corrs": [corr_SxT], "train_corrs": [corr_SxT], "eval_loss": 1.0, "train_loss": 1.0}] * 2
    stats = stats + [{"exit": "nan"}]
    df = tables.table(tables.multilayer_rows(stats, "r", 0, 10))
    assert list(df.columns) == list(TABLE_COLUMNS["metrics"])
    best = df[(df.metric == "best_corr_mean") & (df.split == "eval")]
    assert list(best.step) == [0, 10] and best.value.iloc[0] == pytest.approx((0.5 + 0.99) / 2)
    assert df[df.metric == "recovered_frac"].value.iloc[0] == 0.5


def test_side_by_side_overlap():
    def frame(vals):
        return tables.table(("r", k, 10, 1.0, "eval", 0, "best_corr_mean", v) for k, v in enumerate(vals))
    t = compare.side_by_side(frame([0.90, 0.95]), frame([0.94, 0.99]), [1.0])
    assert bool(t.overlap.iloc[0]) and t.official_max.iloc[0] == 0.95
    t = compare.side_by_side(frame([0.90, 0.93]), frame([0.94, 0.99]), [1.0])
    assert not bool(t.overlap.iloc[0])


def test_shim_maps_cuda_and_stubs_hydra_and_torchvision(tmp_path):
    """A fake official script: .cuda() on tensors and modules, torch.cuda.FloatTensor, torchvision,
    and @hydra.main reading its yaml plus key=value arguments, run in --workdir."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("n: 2\nlr: 0.1\n")
    (tmp_path / "fake.py").write_text(
        "import torch, hydra, torchvision\nfrom torchvision import transforms\n"
        "transforms.Compose([transforms.ToTensor()])\n"
        "@hydra.main(config_path='conf/config.yaml', strict=True)\n"
        "def main(cfg):\n"
        "    x = torch.ones(cfg.n).cuda(); m = torch.nn.Linear(2, 1).cuda(); b = torch.cuda.FloatTensor(3, 2)\n"
        "    torch.cuda.manual_seed(1)\n"
        "    open('out.txt', 'w').write(f'{x.device} {m.weight.device} {b.shape[0]} {cfg.lr}')\n"
        "if __name__ == '__main__':\n    main()\n")
    r = subprocess.run([sys.executable, "-m", "teacherstudent_benchmarks.official.shim", "--workdir", str(tmp_path / "w"),
                        str(tmp_path / "fake.py"), "lr=0.5"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "w" / "out.txt").read_text() == "cpu cpu 3 0.5"


def test_compare_without_checkout_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.delenv(compare.ENV, raising=False)
    assert compare.main(["--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--checkout" in err


@needs_checkout
def test_official_deep_runs_on_cpu_and_writes_our_table(tmp_path):
    df = compare.official_deep(Path(CHECKOUT), (1,), 1, tmp_path, "cpu", ["--ks", "[3, 4]", "--d_output", "5"])
    assert list(df.columns) == list(TABLE_COLUMNS["metrics"])
    best = df[(df.metric == "best_corr_mean") & (df.split == "eval")]
    assert sorted(best.layer.unique()) == [0, 1] and sorted(best.epoch.unique()) == [0.0, 1.0]
    assert best.value.between(-1, 1).all() and (tmp_path / "metrics.parquet").exists()


@needs_checkout
def test_official_two_layer_runs_on_cpu_and_writes_our_table(tmp_path):
    df = compare.official_two_layer(Path(CHECKOUT), (1,), 2, tmp_path, "cpu",
                                    ["N_train=200", "N_eval=200", "num_iter_per_epoch=5", "m=3", "c=4", "d=6"])
    best = df[(df.metric == "best_corr_mean") & (df.split == "eval")]
    assert sorted(best.epoch.unique()) == [0.0, 1.0, 2.0] and best.value.between(-1, 1).all()
