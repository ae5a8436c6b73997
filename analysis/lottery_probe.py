"""Lottery tickets from lucky nodes: rewind vs re-initialise vs random selection (docs/science.md §5).

One parent run (the default Gaussian setting, ``--epochs`` epochs, ``--seeds`` members in
one ensemble, weights also kept after the first epoch), then for every keep fraction the
lottery probes (node pruning, per layer):

- ``rewind``: the most teacher-aligned nodes (``--by alignment``), rewound to their initial weights;
- ``late``: the same nodes rewound to their weights after the first epoch (``step:K``);
- ``rescaled``: the same nodes' initial weights rescaled to the pruned fan-in's init scale;
- ``reinit``: the same pruned shape with fresh random weights (for node pruning this
  network does not depend on which nodes were kept);
- ``random``: randomly chosen nodes, rewound to init;
- ``fanout``: the nodes with the largest fan-out norm, rewound to init;

and two re-initialisation probes at full width (``probe reinit --nodes winners|random``).
Prediction (docs/science.md §5): ``rewind`` about matches the full student; ``reinit``
is clearly worse; ``random`` worse still. Tables: ``summary`` (members' mean and spread
per keep and arm), ``paired`` (per-member differences between arms, e.g. rewind - reinit,
with their spread), ``reinit`` (the re-initialisation probes) and ``members`` (every
member's numbers). Printed, and written as CSV under ``<out>/experiments/lottery_probe/``.

    python analysis/lottery_probe.py --out runs --epochs 20 --seeds 0-7 --keeps 0.1,0.2,0.3
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
import typer

from teacherstudent.config import load_config, parse_seeds
from teacherstudent.probes import member_summary, run_lottery, run_reinit
from teacherstudent.simulate import RunOptions, run

ARMS = {"rewind": ("alignment", "init"), "late": ("alignment", "step"), "rescaled": ("alignment", "rescaled"),
        "reinit": ("alignment", "reinit"), "random": ("random", "init"), "fanout": ("fanout", "init")}
PAIRS = [("rewind", "reinit"), ("rewind", "random"), ("random", "reinit"), ("rescaled", "reinit"),
         ("rewind", "rescaled"), ("late", "rewind"), ("fanout", "rewind"), ("rewind", "full")]
METRICS = ["eval_loss", "corr_mean", "corr_L3"]


def _members(folder: Path, keep: float, arm: str) -> pd.DataFrame:
    m = member_summary(folder)
    m["corr_mean"] = m[[c for c in m.columns if c.startswith("corr_L")]].mean(axis=1)
    m.insert(0, "arm", arm)
    m.insert(0, "keep", keep)
    return m


def summary_table(members: pd.DataFrame) -> pd.DataFrame:
    cols = ["eval_loss", "train_loss", *sorted(c for c in members.columns if c.startswith("corr_L")), "corr_mean",
            "winners_kept_frac", "lucky_jaccard"]
    cols = [c for c in cols if c in members.columns]
    g = members.groupby(["keep", "arm"], sort=False)
    out = g[cols].mean()
    out.insert(1, "eval_loss_sd", g.eval_loss.std(ddof=1))
    out.insert(0, "n", g.size())
    return out.reset_index()


def paired_table(members: pd.DataFrame, keeps: list[float]) -> pd.DataFrame:
    """Per keep and pair (a, b): mean, sd and standard error of the per-member a - b, and in
    how many members a is better (lower loss, higher correlation)."""
    full = members[members.arm == "full"]
    rows = []
    for keep in keeps:
        k = pd.concat([members[(members.keep == keep) & (members.arm != "full")], full])
        for a, b in PAIRS:
            A, B = (k[k.arm == x].set_index("member") for x in (a, b))
            if A.empty or B.empty:
                continue
            for metric in METRICS:
                d = (A[metric] - B[metric]).dropna()
                better = (d < 0) if metric.endswith("loss") else (d > 0)
                rows.append({"keep": keep, "a - b": f"{a} - {b}", "metric": metric, "mean": d.mean(),
                             "sd": d.std(ddof=1), "sem": d.std(ddof=1) / math.sqrt(len(d)),
                             "a better": f"{int(better.sum())}/{len(d)}"})
    return pd.DataFrame(rows)


def reinit_table(members: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ["eval_loss", "corr_L0", "corr_L1", "corr_L2", "corr_L3", "corr_mean", "winners_reinit_frac",
                        "same_winner_frac", "delay_0.95_steps", "lost_0.95_frac"] if c in members.columns]
    r = members[members.arm.isin(["full", "reinit winners", "reinit random"])]
    g = r.groupby("arm", sort=False)
    out = g[cols].mean()
    out.insert(1, "eval_loss_sd", g.eval_loss.std(ddof=1))
    return out.reset_index()


def main(out: Path = typer.Option(Path("runs"), help="Runs root (parent and probes)."),
         epochs: int = typer.Option(20, help="Training epochs of the parent (and of every probe)."),
         seeds: str = typer.Option("0-7", help="Student seeds, one ensemble member each."),
         keeps: str = typer.Option("0.1,0.2,0.3", help="Keep fractions, comma separated."),
         threads: int = typer.Option(1, help="torch threads (1 is fastest on a busy small machine)."),
         device: str = typer.Option("cpu", help="auto, cpu, cuda or mps.")) -> None:
    torch.set_num_threads(threads)
    keep_list = [float(k) for k in keeps.split(",")]
    seed_list = parse_seeds(seeds)
    base = load_config(None, [f"student.seeds=[{','.join(map(str, seed_list))}]", f"training.epochs={epochs}"])
    late = math.ceil(base.inputs.train_samples / base.training.batch_size)  # the end of the first epoch
    cfg = base.replace(training={"checkpoint_steps": [late]})

    def say(label: str, step: int, total: int) -> None:
        if step == total:
            print(f"  trained {label}", flush=True)

    parent = run(cfg, RunOptions(out, device, command=["analysis/lottery_probe.py"]))
    print(f"parent {parent.name}", flush=True)
    frames = [_members(parent, 1.0, "full")]
    for keep in keep_list:
        for arm, (by, rewind) in ARMS.items():
            (child,) = run_lottery(parent, keep=keep, by=by, rewind=f"step:{late}" if rewind == "step" else rewind,
                                   root=out, device=device, on_progress=say, command=["analysis/lottery_probe.py"])
            frames.append(_members(child, keep, arm))
    for nodes in ("winners", "random"):
        child = run_reinit(parent, nodes=nodes, root=out, device=device, on_progress=say,
                           command=["analysis/lottery_probe.py"])
        frames.append(_members(child, 1.0, f"reinit {nodes}"))
    members = pd.concat(frames, ignore_index=True)
    tables = {"summary": summary_table(members[~members.arm.str.startswith("reinit ")]),
              "paired": paired_table(members, keep_list), "reinit": reinit_table(members), "members": members}
    dest = out / "experiments" / "lottery_probe"
    dest.mkdir(parents=True, exist_ok=True)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.float_format", "{:.4g}".format):
        for name, df in tables.items():
            df.to_csv(dest / f"{name}.csv", index=False)
            if name != "members":
                print(f"\n== {name} ==\n{df.to_string(index=False)}")
    print(f"\ntables: {dest}")


if __name__ == "__main__":
    typer.run(main)
