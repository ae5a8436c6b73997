"""Probe reports: overlap with the parent's lucky nodes, per-member summaries, comparisons.

Lucky nodes of a run: ``j*(k)``, the final winner of each teacher node ``k`` (its
``teacher_nodes.winner``); per member and layer a set ``W_l``. For a set ``S_l`` of
parent nodes that a probe kept (or re-randomised):

- ``lucky_jaccard`` = ``|S ∩ W| / |S ∪ W|``;
- ``winners_kept_frac`` (``winners_reinit_frac``) = fraction of teacher nodes whose winner is in ``S``.

After training (from the annotated ``teacher_nodes``): ``same_winner_frac`` = fraction of
teacher nodes whose child winner is the parent's winner (same parent node);
``delay_0.95_steps`` = mean over teacher nodes recovered (>= 0.95) in both runs of
(child step - parent step); ``lost_0.95_frac`` = fraction of teacher nodes the parent
recovered and the child did not. All are ``metrics`` rows with ``split='probe'``: the
selection statistics at step 0, the outcome statistics at the last step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import UserError
from ..folder import read_json
from ..reader import REPAIR_HINT
from ..summary import read_table


def lucky(parent: Path, seeds: tuple[int, ...], widths: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per hidden layer: lucky-node masks ``[K, n_l]`` and winners ``[K, m_l]`` of the parent."""
    tn = read_table(parent, "teacher_nodes")
    idx = {s: k for k, s in enumerate(seeds)}
    masks, winners = [], []
    for l, n in enumerate(widths):
        t = tn[tn.layer == l].sort_values(["member", "teacher_node"])
        if (t.empty or not t.member.isin(idx).all() or (t.teacher_node < 0).any()
                or not t.winner.between(0, n - 1).all() or t.duplicated(["member", "teacher_node"]).any()):
            path = parent / "teacher_nodes.parquet"
            raise UserError(f"{path} is corrupted (its layer {l} rows do not fit the run's config); "
                            + REPAIR_HINT.format(root=parent.parent))
        w = torch.zeros(len(seeds), t.teacher_node.max() + 1, dtype=torch.long)
        rows = torch.tensor(t.member.map(idx).to_numpy(dtype=np.int64, copy=True))
        cols = torch.tensor(t.teacher_node.to_numpy(dtype=np.int64, copy=True))
        w[rows, cols] = torch.tensor(t.winner.to_numpy(dtype=np.int64, copy=True))
        winners.append(w)
        masks.append(torch.zeros(len(seeds), n, dtype=torch.bool).scatter_(1, w, True))
    return masks, winners


def overlap(chosen: torch.Tensor, lucky_mask: torch.Tensor, winners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(jaccard, winners_in_frac)``, each ``[K]``, of chosen-node masks against lucky nodes."""
    inter = (chosen & lucky_mask).sum(1).double()
    union = (chosen | lucky_mask).sum(1).double()
    return inter / union.clamp_min(1), chosen.gather(1, winners).double().mean(1)


def _row(run_id: str, seed: int, step: int, epoch: float, layer: int | None, metric: str, value: float) -> dict:
    return {"run": run_id, "member": seed, "step": step, "epoch": epoch, "split": "probe", "layer": layer,
            "metric": metric, "value": float(value)}


def selection_rows(run_id: str, seeds: tuple[int, ...], flag: str, chosen: list[torch.Tensor],
                   lucky_masks: list[torch.Tensor], winners: list[torch.Tensor],
                   extra: dict[str, list[torch.Tensor]] | None = None) -> list[dict]:
    """Step-0 probe rows per member and layer: ``<flag>_nodes``, ``<flag>_frac``,
    ``lucky_jaccard``, ``winners_<flag>_frac`` and any ``extra`` ``[K]`` per-layer values."""
    rows = []
    for l, (c, lm, w) in enumerate(zip(chosen, lucky_masks, winners)):
        jac, win = overlap(c, lm, w)
        values = {f"{flag}_nodes": c.sum(1).double(), f"{flag}_frac": c.double().mean(1), "lucky_jaccard": jac,
                  f"winners_{flag}_frac": win, **{k: v[l] for k, v in (extra or {}).items()}}
        for name, v in values.items():
            rows += [_row(run_id, s, 0, 0.0, l, name, v[k]) for k, s in enumerate(seeds)]
    return rows


def outcome_rows(tn: pd.DataFrame, run_id: str, step: int, epoch: float, recovered: float = 0.95) -> list[dict]:
    """Last-step probe rows from an annotated ``teacher_nodes`` table (see module docstring);
    delays and losses are counted at the ``recovered`` threshold (``measure.recovered``)."""
    rows, col = [], f"step_corr_{recovered:g}"
    for (member, layer), t in tn.groupby(["member", "layer"], sort=True):
        mine = t[col] if col in t else pd.Series(pd.NA, index=t.index, dtype="Int64")
        parent = t[f"parent_{col}"] if f"parent_{col}" in t else pd.Series(pd.NA, index=t.index, dtype="Int64")
        both = mine.notna() & parent.notna()
        delay = (mine[both].astype(float) - parent[both].astype(float)).mean()
        lost = (parent.notna() & mine.isna()).mean()
        same = (t["winner_parent_node"] == t["parent_winner"]).mean()
        for name, v in {"same_winner_frac": same, f"delay_{recovered:g}_steps": delay if both.any() else np.nan,
                        f"lost_{recovered:g}_frac": lost}.items():
            rows.append(_row(run_id, int(member), step, epoch, int(layer), name, v))
    return rows


# ---- summaries -------------------------------------------------------------------

def describe_probe(p: dict | None) -> str:
    """A short label of a ``probe`` section: ``parent``, ``lottery alignment 0.1 init``,
    ``lottery fanout 0.3 init global r2/3``, ``reinit winners L0,1`` ..."""
    if not p:
        return "parent"
    if p["kind"] == "flatness":
        return f"flatness at {p['at']}" + (f" s{p['seed']}" if p.get("seed") else "")
    if p["kind"] == "lottery":
        text = f"lottery {p['by']} {p['keep']:g} {p['rewind']}" + (" global" if p["scope"] == "global" else "")
        if p.get("rule") == "winners_first":
            text += " winners-first"
        if p["rounds"] > 1:
            text += f" r{p['round']}/{p['rounds']}"
    else:
        text = f"reinit {p['nodes']}" + (f" L{','.join(map(str, p['layers']))}" if p.get("layers") else "")
    return text + (f" s{p['seed']}" if p.get("seed") else "")


def describe(folder: Path) -> str:
    """``describe_probe`` plus the ``training``/``measure`` fields the probe changed, e.g. ``[training.steps=4689]``."""
    cfg = read_json(folder / "config.json")
    text = describe_probe(cfg.get("probe"))
    parent = folder.parent / cfg["probe"]["parent"] if cfg.get("probe") else None
    if parent is not None and (parent / "config.json").exists():
        pcfg = read_json(parent / "config.json")
        changed = [f"{sec}.{k}={v}" for sec in ("training", "measure") for k, v in sorted(cfg[sec].items())
                   if pcfg[sec].get(k) != v]
        if changed:
            text += f" [{', '.join(changed)}]"
    return text


def member_summary(folder: Path) -> pd.DataFrame:
    """One row per member: final ``train_loss``, ``eval_loss``, ``corr_L<l>`` (mean best
    correlation of layer ``l``), ``width_L<l>`` and the probe metrics averaged over layers."""
    m = read_table(folder, "metrics")
    probe = m[m.split == "probe"]
    m = m[m.split != "probe"]
    last = m[m.step == m.step.max()]
    out = last[(last.metric == "loss") & last.layer.isna()].pivot_table(index="member", columns="split", values="value")
    out = out.rename(columns={"train": "train_loss", "eval": "eval_loss"})
    corr = last[last.metric == "best_corr_mean"].pivot_table(index="member", columns="layer", values="value")
    out = out.join(corr.rename(columns=lambda l: f"corr_L{int(l)}"))
    sn = read_table(folder, "student_nodes")
    widths = sn[sn.step == sn.step.min()].groupby(["member", "layer"]).student_node.nunique().unstack()
    out = out.join(widths.rename(columns=lambda l: f"width_L{int(l)}"))
    if not probe.empty:
        out = out.join(probe.groupby(["member", "metric"]).value.mean().unstack())
    out = out.reset_index()
    out.insert(0, "probe", describe(folder))
    out.insert(0, "run", folder.name)
    return out


def compare(folders: list[Path]) -> pd.DataFrame:
    """One row per run: the members' mean of ``member_summary`` (and ``eval_loss_std``)."""
    rows = []
    for f in folders:
        s = member_summary(f)
        num = s.drop(columns=["run", "probe", "member"]).mean(numeric_only=True)
        rows.append({"run": f.name, "probe": s.probe.iloc[0], "members": len(s), **num.to_dict(),
                     "eval_loss_std": s.eval_loss.std(ddof=1) if len(s) > 1 else 0.0})
    return pd.DataFrame(rows)


def paired(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per-member differences ``a - b`` of ``columns`` (two ``member_summary`` frames), and
    their mean, standard deviation, standard error and the number of members where ``a < b``."""
    j = a.set_index("member")[columns] - b.set_index("member")[columns]
    return pd.DataFrame({"mean": j.mean(), "std": j.std(ddof=1), "sem": j.std(ddof=1) / np.sqrt(len(j)),
                         "a_lower": (j < 0).sum(), "n": len(j)})
