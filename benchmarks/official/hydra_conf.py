"""A tiny stand-in for Hydra 0.11's config handling: a yaml file plus ``key=value`` overrides.

Only what the official two-layer script uses: flat keys, values parsed as yaml (``lr=0.01``,
``seed=[1,8]``, ``use_sgd=true``), strict like ``@hydra.main(strict=True)`` (an override of a key
the yaml does not have is an error) except ``+key=value``, which adds one (Hydra's later syntax).
"""

from __future__ import annotations

from pathlib import Path

import yaml


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
        return yaml.safe_dump(dict(self), sort_keys=False)


def parse_override(text: str) -> tuple[str, object, bool]:
    """``key=value`` -> (key, yaml value, adds) where adds is True for ``+key=value``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip("+"):
        raise ConfigError(f"override {text!r} is not key=value (e.g. lr=0.01)")
    adds = key.startswith("+")
    return key.lstrip("+"), yaml.safe_load(value) if value != "" else None, adds


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Conf:
    """The yaml at ``path`` with ``overrides`` applied in order."""
    base = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    cfg = Conf(base)
    for text in overrides:
        key, value, adds = parse_override(text)
        if key not in cfg and not adds:
            raise ConfigError(f"override {text!r}: {path} has no key {key!r} (write +{key}=... to add one)")
        cfg[key] = value
    return cfg
