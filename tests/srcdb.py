"""A source database for drill self-tests: one throwaway cluster holding database `src`."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster, stop_cluster_dir


@contextmanager
def source_database(tag: str, sql: str, *, psql: bool = False,
                    analyze: bool = False) -> Iterator[tuple[ThrowawayCluster, Path]]:
    """The cluster with `src` built from `sql` (through psql when it holds psql's own commands), and
    a scratch directory for dumps and drill work dirs (0711: the cluster's user reaches into it).
    Afterwards every drill cluster left in the scratch directory is stopped and the directory removed."""
    root = Path(tempfile.mkdtemp(prefix=f"pgbv-{tag}"))
    root.chmod(0o711)
    try:
        with ThrowawayCluster(tag=tag) as c:
            with psycopg.connect(c.dsn(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE src")
            if psql:
                subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.dsn("src")], input=sql.encode(),
                               check=True, stdout=subprocess.DEVNULL)
            with psycopg.connect(c.dsn("src"), autocommit=True) as conn:
                if not psql:
                    conn.execute(sql.encode())
                if analyze:
                    conn.execute("ANALYZE")
            yield c, root
    finally:
        for leftover in root.glob("**/pgbv-cluster-*"):
            stop_cluster_dir(leftover)
        shutil.rmtree(root, ignore_errors=True)


def drill_target_toml(name: str, dsn: str, backups: Path, work: Path, pattern: str, backups_extra: str = "",
                      drill_extra: str = "") -> str:
    """A target file for a self-test's checks run: the database, one night's dumps matching `pattern`, and
    the sandboxed throwaway drill working (and locking) in `work`; `*_extra` lines go into their section."""
    return f"""[target]
name = "{name}"

[database]
dsn = {json.dumps(dsn)}
dump_role = "postgres"

[backups]
directory = "{backups}"
pattern = "{pattern}"
min_payload_bytes = 1000
retention_days = 1
min_good_dumps = 1
{backups_extra}

[drill]
work_dir = "{work}"
lock_file = "{work / 'drill.lock'}"
expect_live_catalog = true
{drill_extra}
"""
