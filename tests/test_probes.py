"""Lottery-ticket and re-initialisation probes (``teacherstudent.probes``) against independent references.

Selection rules against brute force over subsets; a physically pruned student against the
masked full student (float64) and plain ``nn.Sequential`` copies; rewinding against the
parent's checkpoints indexed by hand; overlap statistics against Python sets.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from teacherstudent.config import StudentConfig
from teacherstudent.ensemble import Ensemble, as_modules, init_member
from teacherstudent.errors import UserError
from teacherstudent.probes import compare, probes_of, run_lottery, run_reinit
from teacherstudent.probes.prune import MaskedEnsemble, mask_nodes, prune_nodes
from teacherstudent.probes.runs import load_probe
from teacherstudent.probes.select import alignment_scores, count, fanout_scores, random_scores, select_nodes, select_weights
from teacherstudent.build import build
from teacherstudent.loop import Trainer
from teacherstudent.simulate import RunOptions, run
from teacherstudent.store import list_runs, load_runs, load_torch
from teacherstudent.summary import read_table

from conftest import file_bytes, tiny

PARENT_CFG = {"training__checkpoint_steps": [8]}  # 16 steps in all; weights kept at step 8 too


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A finished tiny run (student widths 12 and 18, two members) in a root of its own."""
    root = tmp_path_factory.mktemp("probe_runs")
    return run(tiny(**PARENT_CFG), RunOptions(root, "cpu", command=["pytest"]))


def probe(parent, **kw):
    return run_lottery(parent, root=parent.parent, device="cpu", **kw)


def weights(folder, name="final"):
    return load_torch(folder / "checkpoints" / f"{name}.pt")["weights"]


def best_subset(values: list[float], c: int, groups: list[int] | None = None) -> set[int]:
    """Brute force: the size-``c`` subset with the largest sum (at least one per group, if given)."""
    def ok(s):
        return groups is None or set(groups) <= {groups[i] for i in s}
    return set(max((s for s in itertools.combinations(range(len(values)), c) if ok(s)),
                   key=lambda s: sum(values[i] for i in s)))


# ---- selection ------------------------------------------------------------------

@pytest.mark.parametrize("keep, n, expected", [
    (0.25, 10, 3),  # 2.5 rounds up (Python's round() would give 2)
    (0.15, 10, 2),  # 1.5 -> 2
    (0.45, 10, 5),  # 4.5 -> 5 (round() would give 4)
    (0.1, 25, 3),   # 2.5 -> 3
    (0.25, 18, 5),  # 4.5 -> 5
    (0.3, 15, 5),   # 4.5 -> 5
    (0.4, 7, 3),    # 2.8 -> 3
    (0.3, 14, 4),   # 4.2 -> 4
    (0.05, 10, 1),  # 0.5 -> 1
    (0.01, 10, 1),  # 0.1 -> 0, but at least one is kept
    (1.0, 7, 7),
])
def test_keep_count_is_keep_times_n_rounded_half_up_and_at_least_one(keep, n, expected):
    assert count(keep, n) == expected


@pytest.mark.parametrize("keep, scope, expected", [
    (0.25, "layer", [3, 5]),   # 0.25 * 10 = 2.5 -> 3 and 0.25 * 18 = 4.5 -> 5
    (0.05, "layer", [1, 1]),   # 0.5 -> 1 and 0.9 -> 1
    (0.25, "global", 7),       # 0.25 * 28 = 7
    (0.375, "global", 11),     # 0.375 * 28 = 10.5 -> 11 (round() would give 10)
    (0.01, "global", 2),       # 0.28 -> 1, but every layer keeps one
])
def test_nodes_kept_per_layer_and_globally_are_pinned_by_hand(keep, scope, expected):
    gen = torch.Generator().manual_seed(4)
    scores = [torch.rand(2, n, generator=gen, dtype=torch.float64) for n in (10, 18)]
    kept = select_nodes(scores, keep, scope, [10, 18])
    if scope == "layer":
        assert [idx.shape[1] for idx in kept] == expected
    else:
        assert sum(idx.shape[1] for idx in kept) == expected and all(idx.shape[1] >= 1 for idx in kept)


@pytest.mark.parametrize("keep, scope, expected", [
    (0.25, "layer", [3, 5]),  # matrices of 10 and 18 weights: 2.5 -> 3, 4.5 -> 5
    (0.25, "global", 7),      # 28 weights: 7
    (0.375, "global", 11),    # 10.5 -> 11
])
def test_weights_kept_per_matrix_and_globally_are_pinned_by_hand(keep, scope, expected):
    gen = torch.Generator().manual_seed(5)
    w = [torch.randn(2, 2, 5, generator=gen, dtype=torch.float64), torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)]
    masks = select_weights(w, keep, scope)
    per_member = [[int(m[k].sum()) for m in masks] for k in range(2)]
    for counts in per_member:
        assert (counts if scope == "layer" else sum(counts)) == expected


def test_layer_scope_keeps_the_best_subset_of_every_layer():
    gen = torch.Generator().manual_seed(0)
    scores = [torch.rand(3, 7, generator=gen, dtype=torch.float64), torch.rand(3, 9, generator=gen, dtype=torch.float64)]
    kept = select_nodes(scores, 0.4, "layer", [7, 9])
    for s, idx, c in zip(scores, kept, [3, 4]):  # 0.4 * 7 = 2.8 -> 3, 0.4 * 9 = 3.6 -> 4
        assert idx.shape == (3, c)
        for k in range(3):
            assert idx[k].tolist() == sorted(best_subset(s[k].tolist(), c))


def test_global_scope_with_one_member_keeps_the_best_subset_of_all_layers():
    gen = torch.Generator().manual_seed(1)
    widths = [4, 5, 3]
    scores = [torch.rand(1, n, generator=gen, dtype=torch.float64) for n in widths]
    scores[2] *= 0.05  # the last layer keeps a node only because every layer must keep one
    kept = select_nodes(scores, 0.4, "global", widths)
    chosen = {(l, j) for l, idx in enumerate(kept) for j in idx[0].tolist()}
    flat = [(l, j) for l, n in enumerate(widths) for j in range(n)]
    values = [scores[l][0, j].item() for l, j in flat]
    ref = best_subset(values, 5, [l for l, _ in flat])  # 0.4 * 12 = 4.8 -> 5
    assert chosen == {flat[i] for i in ref}
    assert len(kept[2][0]) == 1


def test_global_scope_keeps_the_ensemble_stacked():
    gen = torch.Generator().manual_seed(2)
    widths = [6, 8]
    scores = [torch.rand(4, n, generator=gen, dtype=torch.float64) for n in widths]
    kept = select_nodes(scores, 0.3, "global", widths)
    assert sum(idx.shape[1] for idx in kept) == 4  # 0.3 * 14 = 4.2 -> 4
    for s, idx in zip(scores, kept):  # each member keeps its own best nodes of the layer's count
        for k in range(4):
            assert idx[k].tolist() == sorted(best_subset(s[k].tolist(), idx.shape[1]))


def test_magnitude_masks_keep_the_largest_weights():
    gen = torch.Generator().manual_seed(3)
    w = [torch.randn(2, 3, 3, generator=gen, dtype=torch.float64), torch.randn(2, 2, 3, generator=gen, dtype=torch.float64)]
    for m, wl, c in zip(select_weights(w, 0.34, "layer"), w, [3, 2]):  # 0.34 * 9 = 3.06 -> 3, 0.34 * 6 = 2.04 -> 2
        for k in range(2):
            flat = wl[k].abs().flatten().tolist()
            assert set(m[k].flatten().nonzero().flatten().tolist()) == best_subset(flat, c)
    w1 = [w[0][:1], w[1][:1] * 0.01]  # one member; the second matrix only keeps its forced weight
    masks = select_weights(w1, 0.3, "global")
    flat = torch.cat([x.abs().flatten() for x in w1]).tolist()
    ref = best_subset(flat, 5, [0] * 9 + [1] * 6)  # 0.3 * 15 = 4.5 -> 5 (half up)
    assert set(torch.cat([m.flatten() for m in masks]).nonzero().flatten().tolist()) == ref
    alive = [torch.rand(wl.shape, generator=gen) < 0.5 for wl in w]
    for m, a in zip(select_weights(w, 0.2, "layer", alive), alive):
        assert not (m & ~a).any()


def test_scores_match_independent_references(parent):
    final = weights(parent)
    for l, f in enumerate(fanout_scores(final)):
        W = final[2 * (l + 1)].double().numpy()
        ref = [[np.linalg.norm(W[k][:, j]) for j in range(W.shape[2])] for k in range(W.shape[0])]
        np.testing.assert_allclose(f.numpy(), ref, rtol=1e-12)
    sim = Trainer(build(tiny(**PARENT_CFG), torch.device("cpu")))
    x = sim.data.x_eval.double().numpy()
    teacher = [t.double().numpy() for t in sim.data.teacher_hidden_eval]
    align = alignment_scores(parent)
    for k in range(2):  # plain numpy forward and np.corrcoef, one node at a time
        h = x
        for l in range(2):
            h = np.maximum(h @ final[2 * l][k].double().numpy().T + final[2 * l + 1][k].double().numpy(), 0)
            for j in range(h.shape[1]):
                ref = 0.0 if h[:, j].std() == 0 else max(np.corrcoef(teacher[l][:, t], h[:, j])[0, 1]
                                                         for t in range(teacher[l].shape[1]))
                assert align[l][k, j].item() == pytest.approx(ref, abs=2e-4)
    r = random_scores([5, 6], (0, 1), 0, 1)
    assert torch.equal(r[0], random_scores([5, 6], (0, 1), 0, 1)[0])
    assert not torch.equal(r[0][0], r[0][1]) and not torch.equal(r[0], random_scores([5, 6], (0, 1), 1, 1)[0])


# ---- pruned students --------------------------------------------------------------

def _random_state(batchnorm: bool, widths=(6, 7), d=5, outputs=3):
    members = [init_member(list(widths), d, outputs, s, StudentConfig()) for s in (0, 1)]
    state = [torch.stack([m[i] for m in members]) for i in range(len(members[0]))]
    gen = torch.Generator().manual_seed(9)
    if batchnorm:
        for n in widths:  # gamma, beta
            state += [1 + 0.3 * torch.randn(2, n, generator=gen, dtype=torch.float64),
                      0.2 * torch.randn(2, n, generator=gen, dtype=torch.float64)]
        for n in widths:  # running mean, var
            state += [torch.randn(2, n, generator=gen, dtype=torch.float64),
                      0.5 + torch.rand(2, n, generator=gen, dtype=torch.float64)]
    kept = [torch.stack([torch.randperm(n, generator=gen)[:c].sort().values for _ in range(2)]) for n, c in zip(widths, (3, 4))]
    return state, kept


def _ensemble(state, batchnorm, layers=2):
    ens = Ensemble([t.clone() for t in state[:2 * (layers + 1)]], batchnorm)
    ens.load_state(state)
    return ens


@pytest.mark.parametrize("batchnorm", [False, True])
def test_pruned_student_computes_what_the_masked_student_computes(batchnorm):
    state, kept = _random_state(batchnorm)
    x = torch.randn(64, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for train in ([False, True] if batchnorm else [False]):
        pruned = _ensemble(prune_nodes(state, kept, batchnorm), batchnorm)
        masked = _ensemble(mask_nodes(state, kept, batchnorm), batchnorm)
        assert [w.shape[1] for w in pruned.weights[:-1]] == [3, 4]
        hp, op = pruned.forward(x, train)
        hm, om = masked.forward(x, train)
        torch.testing.assert_close(op, om, rtol=0, atol=1e-12)
        for l in range(2):
            for k in range(2):
                torch.testing.assert_close(hp[l][k], hm[l][k][:, kept[l][k]], rtol=0, atol=1e-12)
                dropped = torch.ones(hm[l].shape[2], dtype=torch.bool)
                dropped[kept[l][k]] = False
                assert (hm[l][k][:, dropped] == 0).all()
    if not batchnorm:  # and what plain nn.Sequential students with the pruned weights compute
        pruned = _ensemble(prune_nodes(state, kept), False)
        for k, net in enumerate(as_modules(pruned)):
            torch.testing.assert_close(net(x), pruned.output(x)[k], rtol=0, atol=1e-12)


def test_prune_nodes_slices_by_hand():
    state, kept = _random_state(False)
    out = prune_nodes(state, kept)
    for k in range(2):
        a, b = kept[0][k], kept[1][k]
        assert torch.equal(out[0][k], state[0][k][a]) and torch.equal(out[1][k], state[1][k][a])
        assert torch.equal(out[2][k], state[2][k][b][:, a]) and torch.equal(out[3][k], state[3][k][b])
        assert torch.equal(out[4][k], state[4][k][:, b]) and torch.equal(out[5][k], state[5][k])


def test_masked_ensemble_reapplies_masks_after_a_step():
    state, _ = _random_state(False)
    masks = [torch.rand(w.shape, generator=torch.Generator().manual_seed(5)) < 0.5 for w in state[0::2]]
    ens = MaskedEnsemble([t.clone() for t in state], False, masks)
    assert all((w[~m] == 0).all() for w, m in zip(ens.weights, masks))
    with torch.no_grad():
        for w in ens.weights:
            w.add_(1.0)
    ens.after_step()
    assert all((w[~m] == 0).all() and (w[m] != 0).all() for w, m in zip(ens.weights, masks))


# ---- lottery probes ------------------------------------------------------------------

def test_rewind_to_init_restores_the_initial_weights_bit_for_bit(parent):
    (child,) = probe(parent, keep=0.5, by="fanout")
    kept = load_probe(child)["kept"]
    fan = [[np.linalg.norm(w[k].numpy(), axis=0) for k in range(2)] for w in weights(parent)[2::2]]
    for l, (n, idx) in enumerate(zip([12, 18], kept)):  # the fan-out rule kept the largest final fan-out norms
        assert idx.shape == (2, n // 2)
        for k in range(2):
            assert set(idx[k].tolist()) == set(np.argsort(-fan[l][k], kind="stable")[:n // 2].tolist())
    p, c = weights(parent, "init"), weights(child, "init")
    for k in range(2):
        a, b = kept[0][k], kept[1][k]
        assert torch.equal(c[0][k], p[0][k][a]) and torch.equal(c[1][k], p[1][k][a])
        assert torch.equal(c[2][k], p[2][k][b][:, a]) and torch.equal(c[3][k], p[3][k][b])
        assert torch.equal(c[4][k], p[4][k][:, b]) and torch.equal(c[5][k], p[5][k])
    assert [w.shape[1] for w in weights(child)[0:4:2]] == [6, 9]


def test_keeping_everything_and_rewinding_retrains_to_the_parent_exactly(parent):
    (child,) = probe(parent, keep=1.0, by="alignment")
    for a, b in zip(weights(parent), weights(child), strict=True):
        assert torch.equal(a, b)
    pm, cm = read_table(parent, "metrics"), read_table(child, "metrics")
    cm = cm[cm.split != "probe"]
    np.testing.assert_array_equal(pm.value.to_numpy(), cm.value.to_numpy())


def test_late_rescaled_and_fresh_starts(parent):
    (late,) = probe(parent, keep=0.5, by="fanout", rewind="step:8")
    (scaled,) = probe(parent, keep=0.5, by="fanout", rewind="rescaled")
    (fresh,) = probe(parent, keep=0.5, by="fanout", rewind="reinit")
    kept = load_probe(late)["kept"]
    assert all(torch.equal(a, b) for a, b in zip(kept, load_probe(scaled)["kept"]))
    step8, init = weights(parent, "step_8"), weights(parent, "init")
    a, b = kept[0][1], kept[1][1]
    assert torch.equal(weights(late, "init")[2][1], step8[2][1][b][:, a])
    s = weights(scaled, "init")
    torch.testing.assert_close(s[0][1], init[0][1][a])  # the first layer's fan-in (d) is unchanged
    torch.testing.assert_close(s[2][1], init[2][1][b][:, a] * math.sqrt(12 / 6))
    torch.testing.assert_close(s[3][1], init[3][1][b] * math.sqrt(12 / 6))
    torch.testing.assert_close(s[4][1], init[4][1][:, b] * math.sqrt(18 / 9))
    f = weights(fresh, "init")
    assert [w.shape for w in f] == [w.shape for w in s]
    assert not torch.equal(f[2], s[2])
    for w in f[0::2]:  # pytorch init of the pruned shape: |w| <= 1/sqrt(fan_in) with the pruned fan-in
        fan_in = w.shape[2]
        assert w.abs().max() <= 1 / math.sqrt(fan_in) and w.abs().max() > 0.8 / math.sqrt(fan_in)


@pytest.mark.parametrize("backend", [None, "autograd"])
def test_weight_masks_stay_applied_through_training(parent, backend):
    overrides = [f"training.backend={backend}"] if backend else None
    (child,) = probe(parent, keep=0.3, by="magnitude", overrides=overrides)
    masks = load_probe(child)["masks"]
    ref = select_weights(weights(parent)[0::2], 0.3, "layer")
    init, final, p_init = weights(child, "init"), weights(child), weights(parent, "init")
    for l, (m, r) in enumerate(zip(masks, ref)):
        assert torch.equal(m, r)
        assert (final[2 * l][~m] == 0).all() and (init[2 * l][~m] == 0).all()
        assert torch.equal(init[2 * l][m], p_init[2 * l][m])
        assert (final[2 * l][m] != init[2 * l][m]).float().mean() > 0.5  # the kept weights did train


def test_iterative_pruning_nests_its_rounds(parent):
    r1, r2 = probe(parent, keep=0.25, by="fanout", rounds=2)
    k1, k2 = load_probe(r1)["kept"], load_probe(r2)["kept"]
    assert [k.shape[1] for k in k1] == [6, 9]  # round 1 keeps 0.25^(1/2) = 0.5
    assert [k.shape[1] for k in k2] == [3, 5]  # 0.25 * 18 = 4.5 -> 5 (half up)
    src = weights(r1)  # round 2 keeps the largest fan-out norms of round 1's trained students
    for l in range(2):
        for k in range(2):
            assert set(k2[l][k].tolist()) <= set(k1[l][k].tolist())
            norms = np.linalg.norm(src[2 * (l + 1)][k].numpy(), axis=0)
            best = np.argsort(-norms, kind="stable")[:k2[l].shape[1]]
            assert set(k2[l][k].tolist()) == set(k1[l][k][best].tolist())
    cfgs = [load_runs(parent.parent, "metrics").query("run == @r.name")["probe.round"].iloc[0] for r in (r1, r2)]
    assert cfgs == [1, 2]


def test_overlap_with_lucky_nodes_matches_sets(parent):
    (child,) = probe(parent, keep=0.5, by="random", seed=4)
    kept = load_probe(child)["kept"]
    tn = read_table(parent, "teacher_nodes")
    m = read_table(child, "metrics")
    m = m[(m.split == "probe") & (m.step == 0)]
    for l in range(2):
        for k, seed in enumerate((0, 1)):
            t = tn[(tn.layer == l) & (tn.member == seed)]
            lucky, chosen = set(t.winner), set(kept[l][k].tolist())
            got = m[(m.layer == l) & (m.member == seed)].set_index("metric").value
            assert got["lucky_jaccard"] == pytest.approx(len(lucky & chosen) / len(lucky | chosen))
            assert got["winners_kept_frac"] == pytest.approx(np.mean([w in chosen for w in t.winner]))
            assert got["kept_nodes"] == len(chosen)


# ---- reinit probes ---------------------------------------------------------------------

def test_reinit_redraws_exactly_the_chosen_fan_in(parent):
    winners = run_reinit(parent, nodes="winners", root=parent.parent, device="cpu")
    rand = run_reinit(parent, nodes="random", root=parent.parent, device="cpu")
    tn = read_table(parent, "teacher_nodes")
    p = weights(parent, "init")
    for folder, is_winner in ((winners, True), (rand, False)):
        c = weights(folder, "init")
        assert torch.equal(c[4], p[4]) and torch.equal(c[5], p[5])  # the output layer is untouched
        for l in range(2):
            for k, seed in enumerate((0, 1)):
                lucky = set(tn[(tn.layer == l) & (tn.member == seed)].winner)
                changed = set((c[2 * l][k] != p[2 * l][k]).any(1).nonzero().flatten().tolist())
                assert changed == set((c[2 * l + 1][k] != p[2 * l + 1][k]).nonzero().flatten().tolist())
                assert changed == lucky if is_winner else (len(changed) == len(lucky) and not changed & lucky)
    t = read_table(winners, "teacher_nodes")
    assert t.parent_winner_reinit.all() and (t.parent_winner.to_numpy() == tn.winner.to_numpy()).all()
    assert not read_table(rand, "teacher_nodes").parent_winner_reinit.any()
    only0 = run_reinit(parent, nodes="winners", layers=[0], root=parent.parent, device="cpu")
    assert torch.equal(weights(only0, "init")[2], p[2]) and not torch.equal(weights(only0, "init")[0], p[0])


# ---- store, idempotency, bad input ------------------------------------------------------

def test_probes_are_idempotent_and_leave_the_parent_untouched(parent):
    before = file_bytes(parent)
    (a,) = probe(parent, keep=0.5, by="random", rewind="reinit", seed=2)
    r = run_reinit(parent, nodes="random", seed=2, root=parent.parent, device="cpu")
    snap_a, snap_r = file_bytes(a), file_bytes(r)
    assert probe(parent, keep=0.5, by="random", rewind="reinit", seed=2) == [a]
    assert run_reinit(parent, nodes="random", seed=2, root=parent.parent, device="cpu") == r
    assert file_bytes(a) == snap_a and file_bytes(r) == snap_r
    assert file_bytes(parent) == before


def test_load_runs_returns_parents_and_probes_in_one_frame(parent):
    (child,) = probe(parent, keep=0.5, by="alignment")
    df = load_runs(parent.parent, "metrics")
    assert {parent.name, child.name} <= set(df.run)
    assert df[df.run == parent.name]["probe.kind"].isna().all()
    rows = df[df.run == child.name]
    assert (rows["probe.parent"] == parent.name).all() and (rows["probe.by"] == "alignment").all()
    assert {"lucky_jaccard", "winners_kept_frac", "kept_nodes", "same_winner_frac"} <= set(rows[rows.split == "probe"].metric)
    tn = load_runs(parent.parent, "teacher_nodes")
    assert tn[tn.run == child.name].winner_parent_node.notna().all()
    assert child in probes_of(parent)
    table = compare([parent, child])
    assert list(table.probe) == ["parent", "lottery alignment 0.5 init"]
    assert table.width_L0.tolist() == [12, 6]


@pytest.mark.parametrize("kwargs, message", [
    ({"keep": 0.0, "by": "fanout"}, "probe.keep: Input should be greater than 0"),
    ({"keep": 1.5, "by": "fanout"}, "probe.keep: Input should be less than or equal to 1"),
    ({"keep": 0.5, "by": "fanout", "rewind": "step:5"}, "kept no weights at step 5"),
    ({"keep": 0.5, "by": "fanout", "rewind": "later"}, "probe.rewind must be init, rescaled, reinit or step:K"),
    ({"keep": 0.5, "by": "size"}, "probe.by: Input should be 'fanout', 'alignment', 'random' or 'magnitude' (got 'size')"),
    ({"keep": 0.5, "by": "fanout", "scope": "net"}, "probe.scope: Input should be 'layer' or 'global'"),
    ({"keep": 0.5, "by": "fanout", "seed": 3}, "probe.seed does nothing unless"),
    ({"keep": 0.5, "by": "fanout", "overrides": ["teacher.d=3"]}, "may change only training.*"),
])
def test_bad_lottery_input_is_one_line_and_changes_nothing(parent, kwargs, message):
    before, runs = file_bytes(parent), list_runs(parent.parent)
    with pytest.raises(UserError) as err:
        probe(parent, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert file_bytes(parent) == before and list_runs(parent.parent) == runs


def test_bad_targets_are_refused(parent, tmp_path):
    with pytest.raises(UserError, match="is not a run folder"):
        run_lottery("nosuchrun", keep=0.5, by="fanout", root=parent.parent)
    unfinished = run(tiny(), RunOptions(tmp_path, "cpu", max_steps=8))
    before = file_bytes(unfinished)
    with pytest.raises(UserError, match="is not finished"):
        run_lottery(unfinished, keep=0.5, by="fanout", root=tmp_path)
    with pytest.raises(UserError, match="is not finished"):
        run_reinit(unfinished, root=tmp_path)
    assert file_bytes(unfinished) == before
    (child,) = probe(parent, keep=0.5, by="alignment")
    with pytest.raises(UserError, match="is itself a probe"):
        run_reinit(child, root=parent.parent)
    with pytest.raises(UserError, match="probe.layers must list hidden layers among 0..1"):
        run_reinit(parent, layers=[0, 2], root=parent.parent)
    with pytest.raises(UserError, match="probe.nodes: Input should be 'winners' or 'random'"):
        run_reinit(parent, nodes="lucky", root=parent.parent)
