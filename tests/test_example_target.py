"""target.example.toml documents every key and stays loadable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pgbackup_verify.config import SECTIONS

EXAMPLE = Path(__file__).resolve().parent.parent / "target.example.toml"


def test_every_key_is_documented_in_the_example() -> None:
    text = EXAMPLE.read_text()
    for section, (cls, _required) in SECTIONS.items():
        assert f"[{section}]" in text, f"[{section}] missing from target.example.toml"
        for f in dataclasses.fields(cls):
            assert re.search(rf"^#? ?{f.name} = ", text, re.M), f"[{section}].{f.name} not documented"
