"""The benchmark suite (``benchmarks/suite.py``, behind ``teacherstudent bench``), run at the smallest sizes.

``run_suite`` has no size knobs below ``settings``/``members``, so the test shrinks it from
outside: the default setting's teacher widths, the config every row builds (few samples) and
the GEMM ceiling's matrix size. Every timed call goes through the real ``_best_time``; the
test records what each returned and how many student-steps each timed call took, and checks
that every rate, ratio and fraction in the table is computed from those numbers.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from teacherstudent.loop import Trainer  # the class whose steps are counted

from conftest import tiny


def test_benchmark_suite_reports_every_row_with_rates_and_ratios_from_its_own_timings(tmp_path, monkeypatch):
    from teacherstudent_benchmarks import suite

    assert suite.flops_per_student_step([100, 150], 20, 100, 64) == 6 * 64 * (20 * 100 + 100 * 150 + 150 * 100)
    widths, K, repeats = [2, 3], 2, 2  # quick=True: best of 2
    # the "large" setting times the fewest steps (8 per call); the measure row always uses "default"
    monkeypatch.setitem(suite.SETTINGS, "large", widths)
    monkeypatch.setitem(suite.SETTINGS, "default", widths)
    # the suite's FLOP count assumes multiplier 10, d = 20, 100 outputs, batch 64: keep those, shrink the rest
    monkeypatch.setattr(suite, "_config", lambda w, k, backend="auto", precision="full": tiny(
        teacher__widths=list(w), teacher__outputs=100, student__multiplier=10, student__seeds=list(range(k)),
        training__backend=backend, training__precision=precision))
    real_gemm = suite.gemm_ceiling
    monkeypatch.setattr(suite, "gemm_ceiling", lambda dev, repeats=5: real_gemm(dev, n=64, repeats=repeats))

    steps = {"ensemble": 0, "reference": 0}
    real_train_until = Trainer.train_until

    def counting_train_until(self, stop, on_step=None):
        steps["ensemble"] += self.ens.K * (stop - self.step)
        return real_train_until(self, stop, on_step)

    monkeypatch.setattr(Trainer, "train_until", counting_train_until)
    real_mse = torch.nn.functional.mse_loss

    def counting_mse(*args, **kwargs):  # the reference loop: one mse_loss per student per step
        steps["reference"] += 1
        return real_mse(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "mse_loss", counting_mse)
    timed: list[tuple[float, dict]] = []  # (seconds returned, student-steps per call of fn)
    real_best = suite._best_time

    def recording_best_time(fn, reps, device):
        before = dict(steps)
        t = real_best(fn, reps, device)
        assert reps == repeats
        timed.append((t, {k: (steps[k] - before[k]) / (reps + 1) for k in steps}))  # warm-up + reps calls
        return t

    monkeypatch.setattr(suite, "_best_time", recording_best_time)

    result = suite.run_suite(quick=True, settings=("large",), members=(K,))

    rows = result["rows"]
    assert [r["kind"] for r in rows] == ["gemm", "train", "train", "train", "train", "peer", "memory", "measure"]
    gemm, fast, bf16, autograd, ref, peer, memory, measure = rows
    assert bf16["path"] == "fast bf16"
    # the torch.func ensembling recipe (stack_module_state + functional_call + vmap): a comparison row
    assert peer["steps_per_s"] > 0 and math.isfinite(peer["vs_reference"])
    # timed calls in order: gemm, fast, fast bf16, autograd, reference, the torch.func peer, measure's training rate,
    # snapshot, gemm
    assert len(timed) == 9
    ((t_gemm0, _), (t_fast, w_fast), (t_bf16, w_bf16), (t_auto, w_auto), (t_ref, w_ref), (t_peer, w_peer), (t_train, w_train),
     (t_snap, w_snap), (t_gemm1, _)) = timed
    assert w_peer == {"ensemble": 0, "reference": K * 4}  # the peer trains the same nn.Module students as the loop
    # fast and autograd time the same number of student-steps, the reference (K > 1: half as many) its own
    assert w_fast == w_bf16 == w_auto == {"ensemble": K * 8, "reference": 0}
    assert w_ref == {"ensemble": 0, "reference": K * 4}
    assert w_snap["ensemble"] == 0 and w_train["ensemble"] == K * 60
    for row, path, t, w in ((fast, "fast", t_fast, w_fast["ensemble"]), (bf16, "fast bf16", t_bf16, w_bf16["ensemble"]),
                            (autograd, "autograd", t_auto, w_auto["ensemble"]),
                            (ref, "reference", t_ref, w_ref["reference"])):
        assert row["path"] == path and row["setting"] == "large" and row["K"] == K
        assert row["steps_per_s"] == pytest.approx(w / t, rel=1e-12)
    fl = suite.flops_per_student_step([10 * w for w in widths], 20, 100, 64)
    assert gemm["gflops"] == pytest.approx(2 * 64**3 * 4 / min(t_gemm0, t_gemm1) / 1e9, rel=1e-12)  # the larger ceiling
    assert gemm["extra"]["start_gflops"] == pytest.approx(2 * 64**3 * 4 / t_gemm0 / 1e9, rel=1e-12)
    for row in (fast, bf16, autograd, ref):
        for key in ("steps_per_s", "gflops", "frac_ceiling", "vs_reference"):
            assert math.isfinite(row[key]) and row[key] > 0, (row["path"], key)
        assert math.isnan(row["vs_original"])  # the original code's rate was quoted for the default widths only
        assert row["gflops"] == pytest.approx(row["steps_per_s"] * fl / 1e9, rel=1e-12)
        assert row["frac_ceiling"] == pytest.approx(row["gflops"] / gemm["gflops"], rel=1e-12)
        assert row["vs_reference"] == pytest.approx(row["steps_per_s"] / ref["steps_per_s"], rel=1e-12)
    assert ref["vs_reference"] == 1.0
    # memory: the parameters of one student [20 -> 20 -> 30 -> 100], float32, counted by hand; fused SGD keeps no gradients
    params = 4 * (20 * 20 + 20 + 20 * 30 + 30 + 30 * 100 + 100)
    m = memory["extra"]
    assert m["params_bytes"] == params and m["grads_bytes"] == 0 and m["optimizer_bytes"] == 0
    assert m["step_activation_bytes"] == 3 * 64 * (20 + 30 + 100) * 4  # batch x (hidden + output) x 3, float32
    assert m["total_bytes"] == params + m["step_activation_bytes"]
    e = measure["extra"]
    assert measure["K"] == K and e["eval_samples"] == 256 and e["steps_per_epoch"] == 8  # 512 samples in batches of 64
    assert e["measure_s"] == t_snap
    assert e["epoch_train_s"] == pytest.approx(8 / (w_train["ensemble"] / t_train / K), rel=1e-12)
    assert e["fraction_of_training"] == pytest.approx(t_snap / e["epoch_train_s"], rel=1e-12)

    path = suite.write_json(result, tmp_path / "bench.json")
    back = json.loads(path.read_text())
    assert back["machine"]["device"] == "cpu" and back["machine"]["quick"] is True
    assert [r["kind"] for r in back["rows"]] == [r["kind"] for r in rows]



def test_figures_bench_charges_each_experiment_to_the_first_figure_that_needs_it(tmp_path):
    """benchmarks/figures_bench.py: per figure the experiments it first needs (F1-F3 share one), their
    student-steps with probe retrains, the estimate, and the measured seconds of a build's timings.csv."""
    from teacherstudent.plan import ExperimentPlan, FiguresPlan
    from teacherstudent_benchmarks.figures_bench import figure_rows

    plan = FiguresPlan([ExperimentPlan("deep", ["F1", "F2"], 2, 2, 100, 100, 0, 0, 10.0),
                        ExperimentPlan("lottery", ["F6"], 1, 1, 50, 50, 3, 150, 30.0)], quick=False)
    (tmp_path / "timings.csv").write_text("figure,train_seconds,render_seconds,holds\nF1,15.0,1,True\n"
                                          "F2,0,1,True\nF6,60.0,1,False\n")
    rows = {r["figure"]: r for r in figure_rows(plan, tmp_path)}
    assert list(rows) == ["F1", "F2", "F6"]
    assert (rows["F1"]["experiments"], rows["F1"]["student_steps"], rows["F1"]["estimated_s"]) == ("deep", 100, 10.0)
    assert (rows["F2"]["experiments"], rows["F2"]["student_steps"], rows["F2"]["estimated_s"]) == ("-", 0, 0.0)
    assert rows["F6"]["student_steps"] == 200 and rows["F6"]["probes"] == 3  # 50 trained + 150 retrained
    assert rows["F1"]["measured/estimated"] == 1.5 and rows["F6"]["measured/estimated"] == 2.0
    assert math.isnan(rows["F2"]["measured/estimated"])


def test_gemm_tries_times_every_variant_and_measures_the_bf16_error(capsys):
    from teacherstudent_benchmarks import gemm_tries

    gemm_tries.main(["--K", "2", "--repeats", "1", "--steps", "3"])
    out = capsys.readouterr().out
    for name in ("bmm", "loop", "blockdiag", "bf16", "mkldnn off", "fused float32", "bf16 mixed", "2 groups x 1 thread"):
        assert f"  {name}" in out
    err = float(out.split("float64: bf16 ")[-1].split(",")[0])
    assert 1e-4 < err < 2e-2  # bfloat16 keeps 8 bits of mantissa: about 3e-3 relative error per matmul
    step_err = {line.split("  ")[1].strip(): float(line.split("error ")[1].split()[0])
                for line in out.splitlines() if "ms/step" in line}
    assert step_err["2 groups x 1 thread"] < 1e-3 and step_err["fused float32"] < 1e-3
    assert 10 * step_err["fused float32"] < step_err["bf16 mixed"] < 5e-2
