"""docs/reference.md against the config model: the configuration reference cannot drift.

Every field of a section is named in that section's part of the page, every field its tables
name exists, and a field's default in the table is the model's. A failure prints the table
row to paste (from the field's own ``description``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from teacherstudent.config import (ConvConfig, ExperimentConfig, InputsConfig, MeasureConfig, StudentConfig,
                                   TeacherConfig, TrainingConfig)

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference.md"
SECTIONS = {"teacher": TeacherConfig, "inputs": InputsConfig, "conv": ConvConfig, "student": StudentConfig,
            "training": TrainingConfig, "measure": MeasureConfig}
TICKED = re.compile(r"`([^`]+)`")


def section_text(name: str) -> str:
    """The page from the section's bold heading (**`[name]`**) to the next heading of either kind."""
    text = PAGE.read_text()
    start = text.index(f"**`[{name}]`**")
    nxt = re.compile(r"^\*\*`[\[a-z]|^## ", re.M).search(text, start + 1)
    return text[start:nxt.start() if nxt else len(text)]


def field_rows(text: str) -> list[tuple[list[str], str]]:
    """``(field names, default cell)`` of every row of the section's ``| field | default | meaning |`` tables."""
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("| field | default |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append((TICKED.findall(cells[0]), cells[1]))
    return rows


def literal(value) -> str:
    """A default as the tables write it (TOML literals; None is "unset")."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def row_for(model, field: str) -> str:
    info = model.model_fields[field]
    return f"| `{field}` | `{literal(info.get_default(call_default_factory=True))}` | {info.description or '...'} |"


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_field_of_a_section_is_in_its_part_of_the_reference(section):
    model = SECTIONS[section]
    named = set(TICKED.findall(section_text(section)))
    missing = [f for f in model.model_fields if f not in named]
    assert not missing, f"docs/reference.md [{section}] lacks: add\n" + "\n".join(row_for(model, f) for f in missing)


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_field_a_table_names_exists_with_its_default(section):
    model = SECTIONS[section]
    rows = field_rows(section_text(section))
    assert rows, f"no field table under [{section}]"
    for names, default in rows:
        unknown = [n for n in names if n not in model.model_fields]
        assert not unknown, f"docs/reference.md [{section}] names {unknown}, not fields of {model.__name__}"
        if len(names) == 1 and TICKED.fullmatch(default):
            want = literal(model.model_fields[names[0]].get_default(call_default_factory=True))
            assert TICKED.fullmatch(default).group(1) == want, \
                f"docs/reference.md [{section}] {names[0]}: default {default}, the model's is `{want}`"


def test_the_top_level_fields_are_documented():
    text = PAGE.read_text()
    for field in ExperimentConfig.model_fields:
        if field not in SECTIONS:
            assert f"`{field}`" in text, f"docs/reference.md does not mention the top-level field {field}"


def test_every_command_is_in_the_command_table():
    import typer.main

    from teacherstudent_cli.main import app

    def commands(group, prefix=""):
        for name, cmd in group.commands.items():
            if getattr(cmd, "commands", None):
                yield from commands(cmd, f"{prefix}{name} ")
            elif not cmd.hidden:
                yield prefix + name

    text = PAGE.read_text()
    table = text[text.index("## Command line"):text.index("## Python")]
    rows = [TICKED.findall(re.split(r"(?<!\\)\|", line)[1]) for line in table.splitlines() if line.startswith("| `")]
    listed = {t for r in rows for t in r}
    missing = [c for c in commands(typer.main.get_command(app)) if not any(t == c or t.startswith(c + " ") for t in listed)]
    assert not missing, f"docs/reference.md's command table lacks {missing}"


def test_the_checks_see_a_drift():
    """The checks fail on a page that lost a row or got a default wrong."""
    text = section_text("student")
    assert any(names == ["multiplier"] and default == "`10`" for names, default in field_rows(text))
    broken = text.replace("| `multiplier` | `10` |", "| `multiplier` | `12` |")
    [(names, default)] = [r for r in field_rows(broken) if r[0] == ["multiplier"]]
    assert TICKED.fullmatch(default).group(1) != literal(StudentConfig.model_fields["multiplier"].default)
    assert row_for(StudentConfig, "multiplier").startswith("| `multiplier` | `10` |")
