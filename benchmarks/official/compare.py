"""The official code and our preset on the same seeds, one command:

    python -m teacherstudent_benchmarks.official.compare --checkout PATH --setting deep --seeds 1-6 --epochs 10
    python -m teacherstudent_benchmarks.official.compare --checkout PATH --setting two-layer --seeds 1-8 --epochs 50 \
        --grid 'p=0,1,2' --grid 'multi=1,2,5'

``--checkout`` (or ``TEACHERSTUDENT_OFFICIAL``) is a checkout of facebookresearch/luckmatters.
Writes under ``--out``: ``official/<cell>/metrics.parquet`` (our schema), our runs under
``ours/``, and ``bands.csv`` (per cell, epoch and layer: min/mean/max over seeds of
``best_corr_mean`` and ``recovered`` teachers, official and ours). Finished pieces are reused.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from teacherstudent.config import parse_seeds
from teacherstudent.store import load_runs, write_json, write_parquet

from . import tables

ENV = "TEACHERSTUDENT_OFFICIAL"
# The official README commands (luckmatter/README.md; student_specialization/README.md, one cell of its sweep).
DEEP_ARGS = ["--data_std", "10", "--node_multi", "10", "--lr", "0.05", "--dataset", "gaussian", "--d_output", "100"]
DEEP_STEPS_PER_EPOCH = 1563  # ceil(100,000 / 64): the DataLoader keeps the last, short batch
TWO_LAYER_ARGS = ["d=100", "m=10", "lr=0.01", "use_sgd=true", "N_train=10000", "batchsize=16",
                  "num_iter_per_epoch=1000", "normalize=false",
                  # conf/config.yaml has no `choices` (the script reads cfg.choices): the grid of the 2020 code
                  "+choices=[-1.0,-0.75,-0.5,-0.25,0.0,0.25,0.5,0.75,1.0]"]


class HarnessError(Exception):
    """Bad input: one line saying what is wrong and how to fix it."""


def checkout_path(given: str | None) -> Path:
    path = given or os.environ.get(ENV)
    if not path:
        raise HarnessError(f"give a checkout of facebookresearch/luckmatters with --checkout PATH or {ENV}=PATH")
    p = Path(path).expanduser()
    for script in ("luckmatter/recon_multilayer.py", "student_specialization/recon_two_layer.py"):
        if not (p / script).is_file():
            raise HarnessError(f"{p} is not a luckmatters checkout (no {script}); clone "
                               "https://github.com/facebookresearch/luckmatters and pass its path")
    return p


@dataclass(frozen=True)
class Setting:
    name: str
    script: str
    preset: str
    steps_per_epoch: int


SETTINGS = {
    "deep": Setting("deep", "luckmatter/recon_multilayer.py", "luckmatters-2019-deep", DEEP_STEPS_PER_EPOCH),
    "two-layer": Setting("two-layer", "student_specialization/recon_two_layer.py",
                         "specialization-2020-two-layer", 1000),
}
# grid axis -> (official override, our --set key)
AXES = {"p": ("teacher_strength_decay", "teacher.strength_decay"), "multi": ("multi", "student.multiplier")}


def shim(checkout: Path, script: str, args: list[str], workdir: Path, device: str, log: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "teacherstudent_benchmarks.official.shim", "--device", device, "--workdir", str(workdir),
           str(checkout / script), *args]
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise HarnessError(f"the official script failed (exit {r.returncode}); see {log}")


def cached(out: Path, request: dict) -> pd.DataFrame | None:
    """``out/metrics.parquet`` if it was written for exactly ``request`` (seeds, epochs, arguments)."""
    path, req = out / "metrics.parquet", out / "request.json"
    if path.exists() and req.exists() and json.loads(req.read_text()) == request:
        return pd.read_parquet(path)
    return None


def store(out: Path, request: dict, df: pd.DataFrame) -> pd.DataFrame:
    write_parquet(out / "metrics.parquet", df)
    write_json(out / "request.json", request)
    return df


def official_deep(checkout: Path, seeds, epochs: int, out: Path, device: str, extra: list[str]) -> pd.DataFrame:
    request = {"seeds": list(seeds), "epochs": epochs, "args": extra}
    if (df := cached(out, request)) is not None:
        return df
    rows = []
    for k, seed in enumerate(seeds):
        work = out / f"seed{seed}-e{epochs}-{_tag(extra)}"
        found = sorted(work.glob("save-nn-trial0-*.pickle"))
        if not found:
            shim(checkout, SETTINGS["deep"].script, [*DEEP_ARGS, *extra, "--seed", str(seed), "--num_trial", "1",
                 "--num_epoch", str(epochs), "--save_dir", f"{work}/"], work, device, out / f"seed{seed}.log")
            found = sorted(work.glob("save-nn-trial0-*.pickle"))
        rows += tables.multilayer_rows(tables.read_multilayer(found[-1]), "official-deep", k, DEEP_STEPS_PER_EPOCH)
    return store(out, request, tables.table(rows))


def official_two_layer(checkout: Path, seeds, epochs: int, out: Path, device: str, extra: list[str]) -> pd.DataFrame:
    request = {"seeds": list(seeds), "epochs": epochs, "args": extra}
    if (df := cached(out, request)) is not None:
        return df
    rows = []
    for k, seed in enumerate(seeds):  # one process per seed: seed=[s,s] is the script's own range syntax
        work = out / f"seed{seed}-e{epochs}-{_tag(extra)}"
        if not (work / "stats.pickle").exists():
            shim(checkout, SETTINGS["two-layer"].script, [*TWO_LAYER_ARGS, *extra, f"num_epoch={epochs}",
                 f"seed=[{seed},{seed}]"], work, device, out / f"seed{seed}.log")
        stats = tables.read_two_layer(work / "stats.pickle")
        rows += tables.two_layer_rows(stats[seed], "official-two-layer", k, 1000)
    return store(out, request, tables.table(rows))


def ours(setting: Setting, seeds, epochs: int, out: Path, device: str, sets: list[str]) -> pd.DataFrame:
    request = {"seeds": list(seeds), "epochs": epochs, "preset": setting.preset, "sets": sets}
    if (df := cached(out, request)) is not None:
        return df
    runs = out / f"runs-{_tag([json.dumps(request)])}"  # a folder per request: load_runs reads them all
    seed_list = ",".join(map(str, seeds))
    cmd = [sys.executable, "-m", "teacherstudent_cli.main", "run", "--preset", setting.preset, "--seeds", seed_list,
           "--set", f"training.epochs={epochs}", "--set", f"teacher.seeds=[{seed_list}]", "--out", str(runs),
           "--device", device, "--threads", "1", "--no-figure"]
    for s in sets:
        cmd += ["--set", s]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "run.log", "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise HarnessError(f"teacherstudent run failed (exit {r.returncode}); see {out / 'run.log'}")
    df = load_runs(runs, "metrics", config=False, strict=True)
    return store(out, request, df)


def _tag(args: list[str]) -> str:
    """A short stable name for a list of arguments (a work folder per distinct request)."""
    return hashlib.sha1(json.dumps(args).encode()).hexdigest()[:8]


def side_by_side(official: pd.DataFrame, mine: pd.DataFrame, at: list[float], widths: dict[int, int] | None = None
                 ) -> pd.DataFrame:
    """Per (epoch, layer) at ``at``: official and our min/mean/max over seeds of ``best_corr_mean``
    and of the recovered teacher count, and whether the best-correlation bands overlap."""
    parts = []
    for who, df in (("official", official), ("ours", mine)):
        b = tables.bands(df).set_index(["epoch", "layer"]).add_prefix(f"{who}_")
        r = tables.bands(df, "recovered_frac").set_index(["epoch", "layer"])
        if widths:
            m = r.index.get_level_values("layer").map(widths).astype(float)
            for c in ("min", "mean", "max"):
                b[f"{who}_recovered_{c}"] = (r[c] * m).to_numpy()
        parts.append(b)
    t = parts[0].join(parts[1], how="inner").reset_index()
    t = t[t.epoch.isin(at)]
    t["overlap"] = (t.official_min <= t.ours_max) & (t.ours_min <= t.official_max)
    return t.reset_index(drop=True)


def cells(grid: list[str]) -> list[dict[str, str]]:
    axes = []
    for g in grid:
        name, sep, values = g.partition("=")
        if not sep or name not in AXES:
            raise HarnessError(f"--grid {g!r}: write NAME=v1,v2 with NAME one of {', '.join(AXES)}")
        axes.append([(name, v) for v in values.split(",")])
    return [dict(c) for c in itertools.product(*axes)] if axes else [{}]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="official luckmatters code vs teacherstudent's preset, same seeds")
    p.add_argument("--checkout", default=None, help=f"facebookresearch/luckmatters checkout (or {ENV})")
    p.add_argument("--setting", choices=sorted(SETTINGS), default="deep")
    p.add_argument("--seeds", default="1-6")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--at", default=None, help="epochs to compare, e.g. 1,4,10 (default: every epoch)")
    p.add_argument("--grid", action="append", default=[], help="two-layer axes: p=0,1,2 and multi=1,2,5")
    p.add_argument("--set", dest="sets", action="append", default=[], help="extra override of our preset")
    p.add_argument("--official-arg", action="append", default=[], help="extra argument of the official script")
    p.add_argument("--out", type=Path, default=Path("runs/official-compare"))
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    try:
        checkout = checkout_path(a.checkout)
        seeds = parse_seeds(a.seeds)
        setting = SETTINGS[a.setting]
        at = [float(e) for e in a.at.split(",")] if a.at else [float(e) for e in range(a.epochs + 1)]
        results = []
        for cell in cells(a.grid):
            tag = "-".join(f"{k}{v}" for k, v in cell.items()) or "default"
            base = a.out / setting.name / tag
            extra = [f"{AXES[k][0]}={v}" for k, v in cell.items()]
            sets = [f"{AXES[k][1]}={v}" for k, v in cell.items()] + a.sets
            run = official_deep if setting.name == "deep" else official_two_layer
            off = run(checkout, seeds, a.epochs, base / "official", a.device, extra + a.official_arg)
            mine = ours(setting, seeds, a.epochs, base / "ours", a.device, sets)
            widths = {0: 10} if setting.name == "two-layer" else {0: 10, 1: 15, 2: 20, 3: 25}
            t = side_by_side(off, mine, at, widths)
            t.insert(0, "cell", tag)
            results.append(t)
        out = pd.concat(results, ignore_index=True)
        (a.out / setting.name).mkdir(parents=True, exist_ok=True)
        out.to_csv(a.out / setting.name / "bands.csv", index=False)
        with pd.option_context("display.width", 200, "display.max_columns", 30):
            print(out.round(3).to_string(index=False))
    except HarnessError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
