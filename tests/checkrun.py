"""One real run of the checks over many target files, read back per target.

Every pytest start costs about a second of imports before a check runs; a self-test that proves
ten faults with ten runs spends most of its time starting pytest. Here each fault gets its own
target file (its own name, directory, database...) and ONE subprocess run checks them all, the
way an operator checks a directory of hosts. The run's JSON report keeps every check's target,
outcome, one-line message, whole finding and evidence apart, so each fault is still judged on
its own target's checks only.

Module-scoped fixtures call `run_checks` (pytester is per test); the environment mirrors
pytester's: no outer PYTEST_ADDOPTS, a private HOME, no colours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

CHECKS = Path(__file__).resolve().parent.parent / "checks"
OUTCOMES = ("passed", "failed", "skipped", "error")


@dataclass
class TargetResult:
    """The checks of one target in a run: outcome by check name, and everything they reported."""

    name: str
    checks: list[dict]

    def select(self, *only: str) -> list[dict]:
        """Like `-k a or b`: the checks whose name (or [[sql_check]] name) contains one of `only`; all if none."""
        return [c for c in self.checks if not only or any(o in f"{c['name']} {c['label']}" for o in only)]

    def outcomes(self, *only: str) -> dict[str, int]:
        counts = Counter(c["outcome"] for c in self.select(*only))
        return {k: counts.get(k, 0) for k in OUTCOMES}

    def assert_outcomes(self, *only: str, passed: int = 0, failed: int = 0, skipped: int = 0,
                        errors: int = 0) -> None:
        expected = {"passed": passed, "failed": failed, "skipped": skipped, "error": errors}
        got = self.outcomes(*only)
        assert got == expected, f"target {self.name}: {got} vs {expected}\n{self.text}"

    def outcome(self, check: str) -> str:
        [found] = [c["outcome"] for c in self.checks if c["name"] == check]
        return found

    def failed(self) -> set[str]:
        return {c["name"] for c in self.checks if c["outcome"] == "failed"}

    def fnmatch_line(self, pattern: str) -> None:
        """Like pytester's fnmatch_lines for one pattern: some line of the target's text matches it."""
        lines = self.text.splitlines()
        assert any(fnmatch(line, pattern) for line in lines), f"target {self.name}: no line matches {pattern!r}:\n" \
            + "\n".join(lines)

    @property
    def text(self) -> str:
        """What the target's checks said: each message, whole finding and evidence line."""
        parts = []
        for c in self.checks:
            parts.append(f"{c['name']}: {c['outcome']}")
            parts += [c["message"], c["detail"], *(f"{k}: {v}" for k, v in c["evidence"])]
        return "\n".join(p for p in parts if p)


@dataclass
class ChecksRun:
    ret: int
    stdout: str
    stderr: str
    doc: dict
    workdir: Path

    def __getitem__(self, target: str) -> TargetResult:
        checks = [c for c in self.doc["checks"] if c["target"] == target]
        assert checks, f"no check ran for target {target!r}:\n{self.stdout[-3000:]}"
        return TargetResult(target, checks)

    def __repr__(self) -> str:  # a failing test shows this, not the whole output
        return f"ChecksRun(exit {self.ret}, {len(self.doc['checks'])} checks of {sorted(self.targets())})"

    def facts_line(self, target: str) -> str:
        """The terminal's `pgbackup-verify NAME: fact value, ...` line of one target's run facts."""
        prefix = f"pgbackup-verify {target}: "
        [line] = [ln for ln in self.stdout.splitlines() if ln.startswith(prefix)]
        return line

    def targets(self) -> set[str]:
        return {c["target"] for c in self.doc["checks"]}


def pytester_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "TOX_ENV_DIR")}
    out.update(HOME=str(home), USERPROFILE=str(home), PY_COLORS="0")
    out.update(env or {})
    return out


def run_checks(workdir: Path, targets: Iterable[Path], check_files: Iterable[str | Path], *args: str,
               env: dict[str, str] | None = None, timeout: float = 600) -> ChecksRun:
    """`pytest --target T1 --target T2 ... CHECK_FILES` in `workdir` (reports go to workdir/reports)."""
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "run.json"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--basetemp", str(workdir / "basetemp"),
           "--json", str(report)]
    for t in targets:
        cmd += ["--target", str(t)]
    cmd += [*args, *(str(f) for f in check_files)]
    proc = subprocess.run(cmd, cwd=workdir, env=pytester_env(workdir, env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert report.is_file(), f"no JSON report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    return ChecksRun(proc.returncode, proc.stdout, proc.stderr, json.loads(report.read_text()), workdir)


def run_sql_check(pytester: Any, *args: str) -> Any:
    """One pytester subprocess run of the custom SQL check alone: the cheapest whole run of the suite."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", str(CHECKS / "test_custom_sql.py"), *args)


def write_probe_target(d: Path, extra: str = "") -> Path:
    """`d/t.toml`: a target whose database is unreachable (port 1) and whose backup directory `d/b` is
    empty, the cheapest whole run; `extra` goes into its [database] section."""
    (d / "b").mkdir(exist_ok=True)
    t = d / "t.toml"
    t.write_text(f'[database]\ndsn = "host=127.0.0.1 port=1 dbname=x user=y"\ndump_role = "y"\n{extra}'
                 f'[backups]\ndirectory = "{d / "b"}"\n')
    return t
