"""Many targets, one run: each target's checks stay on one xdist worker, and the run ends with one
line per target, so several hosts can be checked in parallel (`pytest -n auto`) and read apart."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pgbackup_verify.outcome import RunFold


def wants_target_scheduling(config: pytest.Config) -> bool:
    """`-n N` without an explicit --dist: keep each target's checks on one worker, so its session
    fixtures (host connection, offsite scan) run once per target and targets run side by side."""
    args = [str(a) for a in config.invocation_params.args]
    explicit = any(a == "--dist" or a.startswith(("--dist=", "-d")) for a in args)
    return bool(getattr(config.option, "numprocesses", None)) and config.option.dist == "load" and not explicit


def make_scheduler(config: pytest.Config, log: Any, target_names: list[str]) -> Any:
    """An xdist LoadScope scheduler whose scope is the target named in the test id.

    xdist's own `loadgroup` cannot be used: it rewrites item node ids, which pytest 9.2 no longer allows.
    """
    from xdist.scheduler import LoadScopeScheduling

    names = sorted(target_names, key=len, reverse=True)

    class TargetScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            params = nodeid[nodeid.rfind("[") + 1:-1] if nodeid.endswith("]") else ""
            for name in names:
                if re.search(rf"(^|-){re.escape(name)}(-|$)", params):
                    return f"target:{name}"
            return super()._split_scope(nodeid)

    return TargetScheduling(config, log)


def summary_lines(fold: RunFold) -> list[str]:
    """One verdict line per target, from the run's fold (xdist workers' reports included)."""
    return [fold.target_line(name) for name in fold.targets()]
