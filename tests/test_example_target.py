"""target.example.toml is a template of every key with its default, each inside its own section;
docs/examples/seed-host.toml is the seed host's full configuration. Both stay loadable."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgbackup_verify.config import LIST_SECTIONS, SECTIONS, load_target

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "target.example.toml"
SEED = ROOT / "docs" / "examples" / "seed-host.toml"

# A section header, also commented out ("# [host]") for an optional section that is off.
HEADER = re.compile(r"^(?:# )?\[\[?([a-z_.]+)\]\]?\s*$")
# A documented key: `key = value`, or the same commented out (`# key = value`) for an optional one.
KEY_LINE = re.compile(r"^(?:# ?)?([a-z_][a-z0-9_]*) = ")


def _tables(cls: type) -> dict[str, type]:
    """Fields of `cls` that are arrays of tables ([[kuma.push]]): field name -> entry dataclass."""
    out = {}
    for f in dataclasses.fields(cls):
        args = typing.get_args(typing.get_type_hints(cls)[f.name])
        if args and dataclasses.is_dataclass(args[0]):
            out[f.name] = typing.cast(type, args[0])
    return out


def schema() -> dict[str, type]:
    """Every section of a target file ([[kuma.push]] too) -> its dataclass, from the loader's tables."""
    out: dict[str, type] = {}
    todo: dict[str, type] = {name: cls for name, (cls, _) in SECTIONS.items()} | dict(LIST_SECTIONS)
    while todo:
        name, cls = todo.popitem()
        out[name] = cls
        todo.update({f"{name}.{field}": entry for field, entry in _tables(cls).items()})
    return out


def keys(cls: type) -> list[str]:
    """The keys written in a section's own block: an array of tables is a section of its own."""
    return [f.name for f in dataclasses.fields(cls) if f.name not in _tables(cls)]


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
    for section, cls in sorted(schema().items()):
        if section not in doc:
            missing.append(f"[{section}]")
            continue
        missing += [f"[{section}].{k}" for k in keys(cls) if k not in doc[section]]
    return missing


def without(text: str, section: str, key: str) -> str:
    """The text with the first line documenting `key` in `section`'s block deleted."""
    lines = text.splitlines(keepends=True)
    i = next(i for s, i, line in blocks(text) if s == section and (m := KEY_LINE.match(line)) and m.group(1) == key)
    return "".join(lines[:i] + lines[i + 1:])


def uncommented(text: str) -> str:
    """The template with every optional section and key switched on (their "# " removed)."""
    return "\n".join(line[2:] if line.startswith("# ") and (HEADER.match(line) or KEY_LINE.match(line)) else line
                     for line in text.splitlines()) + "\n"


def with_paths(text: str, tmp_path: Path) -> str:
    """Every path a key must find (directory, *_dir, *_file, db) pointed at existing ones in tmp_path."""
    (tmp_path / "a-file").write_text("secret\n")
    (tmp_path / "a-file").chmod(0o600)  # a password file others may read is refused (config.trust)
    text = re.sub(r'^((?:directory|[a-z_]*dir) = )"/[^"]+"', rf'\1"{tmp_path}"', text, flags=re.M)
    return re.sub(r'^((?:db|[a-z_]*file) = )"/[^"]+"', rf'\1"{tmp_path / "a-file"}"', text, flags=re.M)


def test_every_key_is_documented_in_the_template() -> None:
    assert undocumented(EXAMPLE.read_text()) == []


def test_the_template_documents_no_key_the_loader_does_not_know() -> None:
    """A commented-out key that no longer exists would send an operator after a dead option."""
    known = {s: set(keys(cls)) for s, cls in schema().items()}
    assert {s: sorted(k - known.get(s, set())) for s, k in documented(EXAMPLE.read_text()).items()
            if k - known.get(s, set())} == {}


@pytest.mark.parametrize(("section", "key"), [
    ("offsite", "max_age_hours"),  # also a key of [backups]: found there, it must not count for [offsite]
    ("drill", "work_dir"),  # documented commented out in an active section
    ("host", "process"),  # a key of a section that is off
    ("kuma.push", "covers"),  # an array of tables
    ("sql_check", "query"),
])
def test_a_key_deleted_from_its_section_is_reported_by_name(section: str, key: str) -> None:
    assert undocumented(without(EXAMPLE.read_text(), section, key)) == [f"[{section}].{key}"]


def test_the_template_as_written_loads_and_leaves_the_optional_sections_off(tmp_path: Path) -> None:
    f = tmp_path / "host1.toml"
    f.write_text(with_paths(EXAMPLE.read_text(), tmp_path))
    t = load_target(f)
    assert t.name == "host1"  # name = "" is the file name
    assert (t.host_checks, t.offsite, t.kuma, t.sql_check) == (None, None, None, ())


def test_the_template_with_every_section_on_loads(tmp_path: Path) -> None:
    f = tmp_path / "all.toml"
    f.write_text(with_paths(uncommented(EXAMPLE.read_text()), tmp_path))
    t = load_target(f)
    assert t.host_checks is not None and t.offsite is not None and t.kuma is not None
    assert [p.monitor for p in t.kuma.push] == ["PG Backup Local"]
    assert [c.name for c in t.sql_check] == ["no unlogged table"]


def _table(raw: dict[str, Any], section: str) -> dict[str, Any]:
    """The written table of a section; of an array of tables, its first entry."""
    node: Any = raw
    for part in section.split("."):
        node = node[part]
        node = node[0] if isinstance(node, list) else node
    return typing.cast(dict[str, Any], node)


def test_every_value_in_the_template_is_the_default_or_a_required_example() -> None:
    """`key = value` is the loader's default, so that the template never drifts from the code."""
    raw = tomllib.loads(uncommented(EXAMPLE.read_text()))
    wrong = []
    for section, cls in schema().items():
        table = _table(raw, section)
        for f in dataclasses.fields(cls):
            if f.name in _tables(cls) or f.default is dataclasses.MISSING:
                continue  # a required key: its value is an example
            if f.default is None:
                continue  # no default: written as an example path
            want = dict(f.default) if f.name == "min_tables" else f.default
            got = table[f.name]
            got = tuple(got) if isinstance(got, list) else got
            if got != want or type(got) is not type(want):
                wrong.append(f"[{section}].{f.name} = {got!r}, default {want!r}")
    assert wrong == []


def test_seed_host_example_loads_once_its_paths_exist(tmp_path: Path) -> None:
    f = tmp_path / "seed.toml"
    f.write_text(with_paths(SEED.read_text(), tmp_path))
    t = load_target(f)
    assert t.name == "vps-directus"
    assert [c.name for c in t.sql_check] == ["registry lock coverage"]
    assert [p.monitor for p in t.kuma.push] == ["PG Dump Permission Guard", "PG Backup Local", "PG Backup GDrive"]
    assert undocumented(SEED.read_text()) == []  # the seed's file documents every key too
