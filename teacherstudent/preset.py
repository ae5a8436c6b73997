"""Presets: the papers' exact settings, shipped as TOML files in ``teacherstudent/presets/``.

A preset is a config file like any other; its header comment says which paper, which
figure or table, the official command it mirrors and the claim the paper makes with it.
``teacherstudent preset list`` lists them; ``teacherstudent run --preset NAME [--set ...]``
and ``load_config(preset=NAME)`` use one (a config file given too is applied on top).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import UserError


def preset_dir() -> Path:
    return Path(str(resources.files("teacherstudent") / "presets"))


def list_presets() -> dict[str, str]:
    """Name -> the header's first line after ``Paper:`` (the paper and setting)."""
    out = {}
    for path in sorted(preset_dir().glob("*.toml")):
        lines = [l.removeprefix("#").strip() for l in path.read_text().splitlines() if l.startswith("#")]
        text = " ".join(lines[:3]).removeprefix("Paper:").strip()
        out[path.stem] = text.split("(its")[0].strip().rstrip(",")
    return out


def preset_path(name: str) -> Path:
    path = preset_dir() / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; known: {', '.join(list_presets())} (teacherstudent preset list)")
    return path


def preset_header(name: str) -> str:
    """The preset's header comment (what it mirrors and claims), as plain text."""
    lines = preset_path(name).read_text().splitlines()
    return "\n".join(l.removeprefix("#").removeprefix(" ") for l in lines if l.startswith("#"))
