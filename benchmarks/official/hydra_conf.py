"""A tiny stand-in for Hydra 0.11's config handling: a yaml file plus ``key=value`` overrides.

Only what the official two-layer script's ``conf/config.yaml`` uses: flat ``key: value`` lines,
values that are yaml scalars or flow lists (``lr=0.01``, ``seed=[1,8]``, ``use_sgd=true``,
``githash: ""``), read without a yaml library; strict like ``@hydra.main(strict=True)`` (an override of a key
the yaml does not have is an error) except ``+key=value``, which adds one (Hydra's later syntax).
"""

from __future__ import annotations

import json
import re
from pathlib import Path


class ConfigError(ValueError):
    """A bad override: the message says which one and what to do."""


class Conf(dict):
    """A config dict read and written as attributes (``cfg.lr``, ``cfg.bias = 0.0``), like OmegaConf's."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def __setattr__(self, key, value):
        self[key] = value

    def pretty(self) -> str:
        return "".join(f"{k}: {json.dumps(v)}\n" for k, v in self.items())


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def scalar(text: str):
    """A yaml scalar or flow list: true/false, null, int, float, quoted or plain string, [a, b]."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        return [scalar(v) for v in t[1:-1].split(",")] if t[1:-1].strip() else []
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("null", "~", ""):
        return None
    if _NUMBER.match(t):
        return int(t) if re.fullmatch(r"[-+]?\d+", t) else float(t)
    return t


def read_flat_yaml(path: str | Path) -> dict:
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        body = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not body.strip():
            continue
        key, sep, value = body.partition(":")
        if not sep or line[0].isspace() or not key.strip():
            raise ConfigError(f"{path}:{n}: expected a flat 'key: value' line, got {line!r}")
        out[key.strip()] = scalar(value)
    return out


def parse_override(text: str) -> tuple[str, object, bool]:
    """``key=value`` -> (key, yaml value, adds) where adds is True for ``+key=value``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip("+"):
        raise ConfigError(f"override {text!r} is not key=value (e.g. lr=0.01)")
    adds = key.startswith("+")
    return key.lstrip("+"), scalar(value), adds


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Conf:
    """The yaml at ``path`` with ``overrides`` applied in order."""
    cfg = Conf(read_flat_yaml(path))
    for text in overrides:
        key, value, adds = parse_override(text)
        if key not in cfg and not adds:
            raise ConfigError(f"override {text!r}: {path} has no key {key!r} (write +{key}=... to add one)")
        cfg[key] = value
    return cfg
