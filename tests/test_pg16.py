"""A real second PostgreSQL major: the `pgserver` wheel ships PostgreSQL 16 server and client binaries.

- A 16 server checked with the host's 15 pg_dump: the version check fails naming both versions and
  the fix (pg_dump refuses to dump a newer server, so every night's dump would fail).
- A dump written by pg_dump 16 (of the 15 seed database, as after a client upgrade; 16.2 writes no
  `\\restrict` line) is judged and restored by the drill on the host's 15 server, all green.

The 16 bindir comes from the wheel's own `pg_config --bindir` (its public command wrapper); the
16 cluster is a ThrowawayCluster started with that bindir first on PATH, which is how the suite
finds a server's binaries (facts/drill/cluster.pg_bindir).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkrun import ChecksRun, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster, pg_bindir

CHECKS = Path(__file__).resolve().parent.parent / "checks"


def pg16_bindir() -> Path:
    """The wheel's binaries, or a skip saying why they cannot run here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        pgserver = pytest.importorskip("pgserver", reason="pgserver (dev extra) not installed: pip install -e .[dev]")
    try:
        bindir = Path(pgserver.pg_config(["--bindir"]).strip())
        out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"pgserver's PostgreSQL binaries do not run on this machine: {e}")
    if " 16." not in out:
        pytest.skip(f"pgserver ships {out.strip()!r} here, not PostgreSQL 16")
    return bindir


def version_of(tool: Path | str) -> str:
    out = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    m = re.search(r"\(PostgreSQL\) (\d+\.\d+)", out)
    assert m, out
    return m.group(1)


@pytest.fixture(scope="module")
def bin16() -> Path:
    return pg16_bindir()


@pytest.fixture(scope="module")
def cluster16(bin16: Path) -> Iterator[ThrowawayCluster]:
    """A PostgreSQL 16 throwaway cluster holding the seed-shaped database."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{bin16}{os.pathsep}{os.environ.get('PATH', '')}")
        assert pg_bindir() == bin16
        cluster = ThrowawayCluster(tag="pg16-")
        cluster.start()
    try:
        demo.build_seed_database(cluster)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def pg16_run(bin16: Path, cluster16: ThrowawayCluster, seed_cluster: ThrowawayCluster, healthy_backups: Path,
             tmp_path_factory: pytest.TempPathFactory) -> ChecksRun:
    root = tmp_path_factory.mktemp("pg16")
    # Target 1: the 16 server, checked with the host's pg_dump (15) on PATH.
    empty = root / "none"
    empty.mkdir()
    t16 = demo.write_target_file(root / "server16.toml", cluster16.dsn(demo.DBNAME, demo.DUMP_ROLE), empty,
                                 name="server16")
    # Target 2: the 15 seed database, its newest dump written by pg_dump 16.
    week = root / "dump16"
    shutil.copytree(healthy_backups, week)
    newest = week / "directus_9999-12-31_0200.sql.gz"
    env = {**seed_cluster.env(), "PGUSER": demo.DUMP_ROLE, "OUT": str(newest), "PGDUMP": str(bin16 / "pg_dump")}
    job = f'set -o pipefail; "$PGDUMP" --no-owner --no-acl -d {demo.DBNAME} | gzip -9 > "$OUT"'
    subprocess.run(["bash", "-c", job], env=env, check=True, timeout=120)
    t15 = demo.write_target_file(root / "dump16.toml", seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE), week,
                                 name="dump16")
    return run_checks(root / "run", [t16, t15], [CHECKS / "test_grants.py", CHECKS / "test_dumps.py",
                                                 CHECKS / "test_drill.py"])


def test_a_16_server_with_a_15_pg_dump_is_a_version_finding(pg16_run: ChecksRun, bin16: Path) -> None:
    local, server = version_of(shutil.which("pg_dump") or "pg_dump"), version_of(bin16 / "postgres")
    assert local.startswith("15.") and server.startswith("16."), (local, server)
    result = pg16_run["server16"]
    assert result.outcome("test_local_pg_dump_not_older_than_server") == "failed"
    [check] = [c for c in result.checks if c["name"] == "test_local_pg_dump_not_older_than_server"]
    message = check["message"]
    assert f"pg_dump {local}" in message and f"server {server}" in message, message
    assert re.search(r"fix: .*(16|postgresql-client-16)", message), message
    # The grant audit itself works against the 16 catalog: only the version check is red.
    assert {c["name"] for c in result.checks if c["name"].startswith("test_dump_role") and
            c["outcome"] != "passed"} == set(), result.text


def test_a_dump_written_by_pg_dump_16_is_judged_and_restored(pg16_run: ChecksRun, bin16: Path) -> None:
    result = pg16_run["dump16"]
    result.fnmatch_line(f"dumped by pg_dump: {version_of(bin16 / 'pg_dump')}*")
    result.fnmatch_line("file: */directus_9999-12-31_0200.sql.gz (*")
    drill = [c for c in result.checks if c["nodeid"].startswith("checks/test_drill.py")]
    assert drill and all(c["outcome"] == "passed" for c in drill), result.text
    dumps = [c for c in result.checks if c["nodeid"].startswith("checks/test_dumps.py")]
    assert {c["outcome"] for c in dumps} <= {"passed", "skipped"}, result.text
