"""target.example.toml documents every key and stays loadable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pgbackup_verify.config import LIST_SECTIONS, SECTIONS, load_target

EXAMPLE = Path(__file__).resolve().parent.parent / "target.example.toml"


def test_every_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    for section, cls in [(s, c) for s, (c, _) in SECTIONS.items()] + list(LIST_SECTIONS.items()):
        assert re.search(rf"^\[\[?{section}\]\]?", text, re.M), f"[{section}] missing from target.example.toml"
        for f in dataclasses.fields(cls):
            assert re.search(rf"^#? ?{f.name}( = |\s)", text, re.M), f"[{section}].{f.name} not documented"


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
