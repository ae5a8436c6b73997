#!/usr/bin/env bash
# One command for a machine with an accelerator: the test suite (the GPU tests run instead of
# skipping), then the quick benchmark and the default simulation on that device.
#   bash benchmarks/device_check.sh [cuda|mps|cpu]     (default: cuda)
# Results go to $OUT (default ./device_check): pytest.txt, bench_<device>.json, runs/.
set -euo pipefail
device="${1:-cuda}"
out="${OUT:-device_check}"
mkdir -p "$out"
python - "$device" <<'PY'
import sys, torch
d = sys.argv[1]
ok = {"cuda": torch.cuda.is_available, "cpu": lambda: True,
      "mps": lambda: bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()}
if d not in ok:
    print(f"error: unknown device {d!r}; use cuda, mps or cpu", file=sys.stderr)
    sys.exit(2)
if not ok[d]():
    print(f"error: this torch build ({torch.__version__}) sees no {d} device; run on a machine with one", file=sys.stderr)
    sys.exit(2)
print(f"torch {torch.__version__} on", torch.cuda.get_device_name(0) if d == "cuda" else d)
PY
python -m pytest -q -rs 2>&1 | tee "$out/pytest.txt" | tail -n 5
teacherstudent bench --quick --device "$device" --json "$out/bench_$device.json"
teacherstudent run --device "$device" --out "$out/runs"
