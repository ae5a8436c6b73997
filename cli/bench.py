"""``teacherstudent bench``: the benchmark table (see benchmarks/suite.py); cli/main.py registers the command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import console, user_errors


def _f(v: float, fmt: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def bench_table(result: dict) -> Table:
    rows = result["rows"]
    m = result["machine"]
    t = Table(title=f"teacherstudent bench on {m['device']} ({m['threads']} threads, torch {m['torch']})")
    for col in ["what", "setting", "K", "path", "student-steps/s", "GFLOP/s", "% GEMM", "× reference", "× original"]:
        t.add_column(col, justify="right")
    for r in rows:
        if r["kind"] in ("gemm", "train", "peer"):
            t.add_row(r["kind"], r["setting"], str(r["K"] or ""), r["path"], _f(r["steps_per_s"], ".0f"), _f(r["gflops"], ".1f"),
                      _f(100 * r["frac_ceiling"], ".0f"), _f(r["vs_reference"], ".2f"), _f(r["vs_original"], ".1f"))
    notes = []
    for r in rows:
        if r["kind"] == "gemm" and "start_gflops" in r["extra"]:
            notes.append(f"GEMM ceiling: the larger of {r['extra']['start_gflops']:.1f} GFLOP/s measured at the start "
                         f"and {r['extra']['end_gflops']:.1f} at the end of the run")
        if r["kind"] == "measure":
            e = r["extra"]
            notes.append(f"measurement (K={r['K']}, {e['eval_samples']} eval samples): {e['measure_s'] * 1e3:.0f} ms = "
                         f"{100 * e['fraction_of_training']:.1f}% of one epoch's training ({e['epoch_train_s']:.2f} s)")
        if r["kind"] == "memory":
            e = r["extra"]
            notes.append(f"memory/member {r['setting']} K={r['K']}: {e['total_bytes'] / 2**20:.2f} MiB "
                         f"(params {e['params_bytes'] / 2**20:.2f}, gradients {e['grads_bytes'] / 2**20:.2f}, optimiser {e['optimizer_bytes'] / 2**20:.2f}, "
                         f"step activations {e['step_activation_bytes'] / 2**20:.2f})"
                         + (f", CUDA peak {e['cuda_peak_bytes'] / 2**20:.2f}" if "cuda_peak_bytes" in e else ""))
    t.caption = "\n".join(notes + ["torch.func: PyTorch's ensembling recipe (stack_module_state + functional_call + "
                                    "vmap of grad, SGD on the stacked parameters), the same batches as reference.",
                                    "× original: against 300 student-steps/s quoted for the original research code on this machine class.",
                                    "fast bf16: the fast path with training.precision='bf16' (bfloat16 matmuls, float32 weights); "
                                    "its % GEMM is of the float32 ceiling."])
    t.caption_justify = "left"
    return t


@user_errors
def bench(
    quick: bool = typer.Option(False, "--quick", help="Fewer steps and repeats (about a minute)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON to this path."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    members: str = typer.Option("1,8,32", "--members", help="Ensemble sizes K to measure, e.g. 1,8,32."),
    settings: str = typer.Option("default,large", "--settings", help="Width settings: default ([10,15,20,25]) and/or large ([50,75,100,125])."),
) -> None:
    """Measure training and measurement speed against the reference loop and the machine's GEMM ceiling."""
    from teacherstudent_benchmarks.suite import SETTINGS, run_suite, write_json
    from teacherstudent.config import parse_seeds
    from teacherstudent.errors import UserError
    from teacherstudent.simulate import pick_device

    dev = pick_device(device)
    names = tuple(s.strip() for s in settings.split(",") if s.strip())
    unknown = [s for s in names if s not in SETTINGS]
    if unknown or not names:
        raise UserError(f"unknown --settings {unknown or settings!r}; known: {', '.join(SETTINGS)}")
    ks = parse_seeds(members)
    if any(k < 1 for k in ks):
        raise UserError(f"--members must be positive, got {members!r}")
    with console.status("benchmarking...") as status:
        result = run_suite(quick, str(dev), names, ks, progress=lambda s: status.update(f"benchmarking {s}..."))
    console.print(bench_table(result))
    if json_path is not None:
        console.print(f"json: {write_json(result, json_path)}")
