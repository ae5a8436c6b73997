"""Runs one official script unchanged, with CUDA mapped to a chosen device.

    python -m teacherstudent_benchmarks.official.shim --device cpu --workdir DIR SCRIPT.py [ARGS...]

At import time, before the script runs: ``Tensor.cuda``/``Module.cuda`` move to ``--device``,
``torch.cuda.FloatTensor`` builds a tensor there, ``torch.cuda.manual_seed`` is a no-op off
CUDA; ``torchvision`` (imported, unused for Gaussian data) and ``hydra`` are stubbed (the stub
``hydra.main`` reads the script's yaml with ``hydra_conf`` and the ``key=value`` arguments,
then runs in ``--workdir``, where Hydra would have made its output folder); DataLoader workers
are 0 (the loader draws its base seed either way, so the random stream is unchanged). The
script's own files are never edited.
"""

from __future__ import annotations

import argparse
import functools
import os
import runpy
import sys
import types
from pathlib import Path

import torch

from . import hydra_conf


def patch_torch(device: str) -> None:
    dev = torch.device(device)
    if dev.type == "cuda":
        return
    torch.Tensor.cuda = lambda self, *a, **k: self.to(dev)
    torch.nn.Module.cuda = lambda self, *a, **k: self.to(dev)
    torch.cuda.FloatTensor = lambda *size: torch.empty(*size, dtype=torch.float32, device=dev)
    torch.cuda.manual_seed = lambda seed: None
    torch.cuda.manual_seed_all = lambda seed: None
    base = torch.utils.data.DataLoader

    class DataLoader(base):  # no worker processes; the same batches in the same order
        def __init__(self, *a, **k):
            k["num_workers"] = 0
            super().__init__(*a, **k)

    torch.utils.data.DataLoader = DataLoader


class _Anything:
    """Stands for any torchvision transform or dataset class: accepts any arguments."""

    def __init__(self, *a, **k):
        pass

    def __call__(self, x, *a, **k):
        return x


def _any_class(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    return _Anything


def stub_torchvision() -> None:
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    for sub in ("datasets", "transforms"):
        m = types.ModuleType(f"torchvision.{sub}")
        m.__getattr__ = _any_class
        setattr(tv, sub, m)
        sys.modules[m.__name__] = m
    sys.modules["torchvision"] = tv


def stub_hydra(script: Path, workdir: Path) -> None:
    hydra = types.ModuleType("hydra")

    def main(config_path: str, strict: bool = True):
        def wrap(fn):
            @functools.wraps(fn)
            def run():
                overrides = [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
                cfg = hydra_conf.load(script.parent / config_path, overrides)
                workdir.mkdir(parents=True, exist_ok=True)
                os.chdir(workdir)
                return fn(cfg)
            return run
        return wrap

    hydra.main = main
    sys.modules["hydra"] = hydra


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--workdir", type=Path, default=Path.cwd())
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("script", type=Path)
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    script = a.script.resolve()
    patch_torch(a.device)
    stub_torchvision()
    stub_hydra(script, a.workdir.resolve())
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script), *a.args]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
