"""Registries are plain dicts from a name to an implementation; ``lookup`` gives the one error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from .errors import UserError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], what: str, name: str) -> T:
    """``registry[name]``, or a ``UserError`` that lists the known names of ``what``."""
    try:
        return registry[name]
    except KeyError:
        raise UserError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}") from None


def check_name(registry: Mapping[str, object], what: str, name: str) -> str:
    """For config validators: ``ValueError`` (pydantic's kind) listing the known names."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(registry))}")
    return name
