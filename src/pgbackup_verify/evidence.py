"""Evidence a check records: named facts shown in the terminal, the HTML report and JUnit.

A check states what it measured against what it expected, barman style:
`latest dump age: 30.2 h (limit 26 h)`. The plugin turns the recorded items into
report sections; this module only collects them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from pgbackup_verify.report.render import render_text

EVIDENCE_KEY = pytest.StashKey["Evidence"]()


@dataclass
class Evidence:
    items: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, name: str, value: object) -> None:
        self.items.append((name, str(value)))

    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.items)

    def html(self) -> str:
        return render_text("evidence.html.j2", items=self.items)


def human_bytes(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# The one way a shipped check fails: its finding (`name: FAILED (measured vs limit); fix`) is the
# whole report, with no traceback or assertion introspection around it.

def fail(message: str) -> NoReturn:
    """Fail the check with its finding."""
    pytest.fail(message, pytrace=False)


def require(ok: bool, message: str) -> None:
    """Fail the check with its finding unless `ok`."""
    if not ok:
        fail(message)


def verdict(problems: list[str]) -> None:
    """Fail the check with one line per problem, if there are any."""
    if problems:
        fail("\n".join(problems))
