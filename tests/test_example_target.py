"""target.example.toml documents every key, each inside its own section, and stays loadable."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup_verify.config import LIST_SECTIONS, SECTIONS, load_target

EXAMPLE = Path(__file__).resolve().parent.parent / "target.example.toml"

HEADER = re.compile(r"^\[\[?([a-z_.]+)\]\]?\s*$")
# A documented key: `key = value`, or the same commented out (`# key = value`) for an optional one.
KEY_LINE = re.compile(r"^(?:# ?)?([a-z_][a-z0-9_]*) = ")


def schema() -> dict[str, list[str]]:
    """Every section of a target file ([[kuma.push]] too) -> its keys, from the loader's dataclasses."""
    tables: dict[str, type] = {name: cls for name, (cls, _) in SECTIONS.items()} | dict(LIST_SECTIONS)
    out: dict[str, list[str]] = {}
    while tables:
        name, cls = tables.popitem()
        out[name] = [f.name for f in dataclasses.fields(cls)]
        for f, tp in ((f, typing.get_type_hints(cls)[f.name]) for f in dataclasses.fields(cls)):
            args = typing.get_args(tp)
            if typing.get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
                tables[f"{name}.{f.name}"] = typing.cast(type, args[0])  # an array of tables, [[kuma.push]]
    return out


def blocks(text: str) -> Iterator[tuple[str, int, str]]:
    """(section, line index, line) of every line under a section header; the preamble has none."""
    section = None
    for i, line in enumerate(text.splitlines()):
        if m := HEADER.match(line):
            section = m.group(1)
        elif section is not None:
            yield section, i, line


def documented(text: str) -> dict[str, set[str]]:
    """Section -> the keys written (or commented out) inside that section's own block(s)."""
    out: dict[str, set[str]] = {m.group(1): set() for line in text.splitlines() if (m := HEADER.match(line))}
    for section, _, line in blocks(text):
        if m := KEY_LINE.match(line):
            out[section].add(m.group(1))
    return out


def undocumented(text: str) -> list[str]:
    """`[section]` missing from the text, or `[section].key` missing from that section's block."""
    doc = documented(text)
    missing = []
    for section, keys in sorted(schema().items()):
        if section not in doc:
            missing.append(f"[{section}]")
            continue
        missing += [f"[{section}].{k}" for k in keys if k not in doc[section]]
    return missing


def without(text: str, section: str, key: str) -> str:
    """The text with the first line documenting `key` in `section`'s block deleted."""
    lines = text.splitlines(keepends=True)
    i = next(i for s, i, line in blocks(text) if s == section and (m := KEY_LINE.match(line)) and m.group(1) == key)
    return "".join(lines[:i] + lines[i + 1:])


def test_every_key_is_documented_in_the_example() -> None:
    assert undocumented(EXAMPLE.read_text()) == []


def test_the_example_documents_no_key_the_loader_does_not_know() -> None:
    """A commented-out key that no longer exists would send an operator after a dead option."""
    keys = schema()
    assert {s: sorted(k - set(keys.get(s, ()))) for s, k in documented(EXAMPLE.read_text()).items()
            if k - set(keys.get(s, ()))} == {}


@pytest.mark.parametrize(("section", "key"), [
    ("offsite", "max_age_hours"),  # also a key of [backups]: found there, it must not count for [offsite]
    ("drill", "server_dsn"),  # documented commented out
    ("kuma", "push"),  # documented by a comment line in [kuma]
    ("sql_check", "query"),  # a multi-line value in an array of tables
])
def test_a_key_deleted_from_its_section_is_reported_by_name(tmp_path: Path, section: str, key: str) -> None:
    copy = tmp_path / "target.example.toml"
    copy.write_text(without(EXAMPLE.read_text(), section, key))
    assert undocumented(copy.read_text()) == [f"[{section}].{key}"]


def test_a_key_of_every_push_entry_deleted_is_reported_by_name() -> None:
    text = EXAMPLE.read_text()
    entries = [m.group(1) for line in text.splitlines() if (m := HEADER.match(line))].count("kuma.push")
    assert entries == 3
    for _ in range(entries):
        text = without(text, "kuma.push", "covers")
    assert undocumented(text) == ["[kuma.push].covers"]


def test_example_loads_once_its_paths_exist(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    paths = set(re.findall(r'^(?:directory|path|[a-z_]*(?:dir|file)) = "(/[^"]+)"', text, re.M))
    for p in paths:
        text = text.replace(f'"{p}"', f'"{tmp_path}"')
    f = tmp_path / "example.toml"
    f.write_text(text)
    t = load_target(f)
    assert t.name == "vps-directus"
    assert [c.name for c in t.sql_check] == ["registry lock coverage"]
