"""Building a config: from a dict, TOML files, presets and ``--set`` overrides; the one-line
``invalid config`` error; ``--seeds`` ranges."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import UserError
from ..preset import preset_path
from .experiment import ExperimentConfig
from .probes import PROBE_KINDS, _Probe
from .sections import MAX_MEMBERS

def format_validation_error(err: ValidationError) -> str:
    """One readable line listing every problem and the offending values."""
    parts = []
    for e in err.errors():
        path = [str(p) for p in e["loc"] if not str(p).startswith("function-")]
        if path[:1] == ["probe"] and len(path) > 1 and path[1] in PROBE_KINDS:
            path.pop(1)  # the union's tag: the kind is already in the config
        loc = ".".join(path)
        msg = e["msg"].removeprefix("Value error, ")
        if path and msg.startswith(path[0] + "."):
            loc = ""  # the message names its fields itself
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `teacherstudent run --help` lists the sections)"
        elif "input" in e and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid config: " + "; ".join(parts)


def probe_config(model: type[_Probe], spec: _Probe | dict[str, Any] | None, **fields: Any) -> _Probe:
    """A validated probe config of ``model``'s kind from a config, a dict and/or fields
    (later ones win); bad values give the one-line ``invalid probe`` error."""
    data = spec.model_dump() if isinstance(spec, BaseModel) else dict(spec or {})
    data.update(fields)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        msg = format_validation_error(err).removeprefix("invalid config: ")
        raise UserError("invalid probe: " + ("; ".join(p if p.startswith("probe.") else f"probe.{p}"
                                                       for p in msg.split("; ")))) from None


def build_config(data: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err)) from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML literal (5, 0.1, true, [10, 20], {0 = 0.2}) or else a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (in place) and return it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"bad --set {item!r}: write it as section.key=value, e.g. --set student.multiplier=5")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.setdefault(p, {}), dict):
                raise UserError(f"bad --set {item!r}: {p} is not a section")
            node = node[p]
        node[parts[-1]] = parse_value(value.strip())
    return data


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist: pass the path of a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read config file {path}: {err}") from None


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "milestones" else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                preset: str | None = None) -> ExperimentConfig:
    """Config from an optional preset (preset.py), an optional TOML file on top of it, then
    ``section.key=value`` overrides."""
    data = load_toml(preset_path(preset)) if preset is not None else {}
    if path is not None:
        own = load_toml(path)
        study = [k for k in ("sweep", "quick") if k in own]  # tables only a named experiment's file has
        if study:
            raise UserError(f"config file {path} has a [{study[0]}] table: it is a named experiment's base config; run "
                            f"`teacherstudent experiment run {Path(path).stem}` (or remove the table to use it with run)")
        data = _merge(data, with_preset(own, f"config file {path}"))  # it may start from a preset
    return build_config(apply_overrides(data, list(overrides or [])))


def with_preset(data: dict[str, Any], where: str) -> dict[str, Any]:
    """A config file's ``data`` merged over the paper setting it starts from (``preset = "NAME"``), if any
    (``where``: how an error names the file)."""
    data = dict(data)
    preset = data.pop("preset", None)
    if preset is None:
        return data
    if not isinstance(preset, str):
        raise UserError(f"{where}: preset must be a preset's name (teacherstudent preset list)")
    return _merge(load_toml(preset_path(preset)), data)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"1-8"`` -> (1..8); ``"1,3,5"``; ``"4"``."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            if sep:
                a, b = int(lo), int(hi)
                if b < a:
                    raise ValueError
                if b - a >= MAX_MEMBERS:
                    raise UserError(f"bad --seeds {text!r}: {b - a + 1} students is more than {MAX_MEMBERS}; "
                                    "train fewer members")
                seeds.extend(range(a, b + 1))
            else:
                seeds.append(int(lo))
    except ValueError:
        raise UserError(f"bad --seeds {text!r}: use a range like 1-8, a list like 1,3,5 or one seed") from None
    return tuple(seeds)

