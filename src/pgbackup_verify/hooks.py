"""Hook specifications: how a site's `conftest.py` (or another plugin) extends pgbackup-verify
without patching it, the way pytest-html's `hooks.py` does. Registered by `plugin.pytest_addhooks`.

Each hook is an empty function; its docstring is the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pytest

    from pgbackup_verify.config import Target


def pytest_pgbackup_verify_concerns(concerns: dict[str, str]) -> None:
    """Add a check concern: set ``concerns[name] = description``.

    A concern is a marker (registered for ``--strict-markers``), a block of the report and a key
    ``[[kuma.push]].covers`` may route to. Called once per run, before the target files are read.
    Existing entries may not be removed (the shipped checks carry their markers).
    """


def pytest_pgbackup_verify_report_fields(config: pytest.Config, target: Target) -> Iterable[tuple[str, str]]:
    """Return extra ``(name, value)`` fields for a target, shown in the report header and the JSON.

    Called once per target at the end of the run; a site adds e.g. its ticket queue or runbook URL.
    """
    return ()


def pytest_pgbackup_verify_kuma_route(nodeid: str, groups: frozenset[str], target: str | None) -> Iterable[str]:
    """Return extra routing keys for one check: concern or module names a ``[[kuma.push]]`` covers.

    ``groups`` are the check's own keys (its concern markers and module name); the union of all
    implementations' answers is added, so a site can send e.g. one named check to one more monitor.
    """
    return ()

