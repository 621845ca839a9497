"""Many hosts, one run: a directory of target files, checked in parallel with `-n 2`, every check id
and verdict line naming its target, one target's fault never spilling into the other's verdict."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from pgbackup_verify_demo import scene

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECKS = Path(__file__).resolve().parent.parent / "checks"
PER_TARGET = 10 + 5  # host + offsite checks


def test_two_targets_in_parallel(pytester: pytest.Pytester, write_target, backups: Path, tmp_path: Path,
                                 cluster: ThrowawayCluster) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    for name in ("alpha", "beta"):
        extra = scene.demo_sections(tmp_path / name, backups, Path(cluster.executor.datadir))
        if name == "beta":  # beta's upload stopped three days ago
            for a in (tmp_path / name / "offsite").iterdir():
                os.utime(a, (time.time() - 3 * 86400,) * 2)
        write_target(backups, extra=extra, name=name).rename(targets / f"{name}.toml")
    result = pytester.runpytest_subprocess("--target", str(targets), "-n", "2", "-v", "-p", "no:cacheprovider",
                                           str(CHECKS / "test_host.py"), str(CHECKS / "test_offsite.py"))
    result.assert_outcomes(passed=2 * PER_TARGET - 1, failed=1)
    result.stdout.fnmatch_lines([
        "created: 2/2 workers",
        "FAILED *checks/test_offsite.py::test_newest_offsite_archive_is_fresh_and_big_enough[[]beta]*",
    ])
    # Each target's checks ran on one worker (its session fixtures once), the two targets side by side.
    workers: dict[str, set[str]] = {}
    for m in re.finditer(r"^\[(gw\d)\] .*(?:PASSED|FAILED) \S+\[(\w+)\]", result.stdout.str(), re.M):
        workers.setdefault(m.group(2), set()).add(m.group(1))
    assert sorted(workers) == ["alpha", "beta"] and all(len(w) == 1 for w in workers.values()), workers
    assert workers["alpha"] != workers["beta"]
    result.stdout.fnmatch_lines(["pgbackup-verify target alpha: OK (15 passed)",
                                 "pgbackup-verify target beta: FAILED (1 failed, 14 passed)"])
    # history.jsonl records the same per-target verdicts as the lines.
    records = [json.loads(x) for x in (pytester.path / "reports" / "history.jsonl").read_text().splitlines()]
    assert {r["target"]: (r["status"], r["failed"]) for r in records} == {
        "alpha": ("OK", []), "beta": ("FAILED", ["newest offsite archive is fresh and big enough"])}


def test_worker_figures_and_exit_codes_reach_the_controller(pytester: pytest.Pytester, write_target,
                                                            backups: Path, tmp_path: Path) -> None:
    """Under -n 2 the dump figures land in the history store and an unreachable database still exits 10."""
    targets = tmp_path / "targets"
    targets.mkdir()
    write_target(backups, name="alpha").rename(targets / "alpha.toml")
    write_target(backups, name="beta", dsn="host=127.0.0.1 port=1 dbname=x user=y connect_timeout=2") \
        .rename(targets / "beta.toml")
    dumps = str(CHECKS / "test_dumps.py")
    grants = str(CHECKS / "test_grants.py")
    result = pytester.runpytest_subprocess("--target", str(targets), "-n", "2", "-p", "no:cacheprovider",
                                           dumps, grants)
    assert result.ret == 10, result.stdout.str()[-2000:]
    lines = [json.loads(x) for x in (pytester.path / "reports" / "history.jsonl").read_text().splitlines()]
    alpha = next(x for x in lines if x["target"] == "alpha")
    assert alpha["facts"]["payload_bytes"] > 10000 and "dump_age_hours" in alpha["facts"]
