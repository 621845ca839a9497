"""Self-tests of the restore drill: real clusters, real pg_dump output, real psql."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgbackup_verify import demo
from pgbackup_verify.cli import checks_dir
from pgbackup_verify.cluster import ThrowawayCluster
from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.drillsafety import stop_cluster_dir

CHECK = str(checks_dir() / "test_drill.py")


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """Drill work dir: under /tmp (the postgres OS user must reach it), private to one test."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-drilltest-"))
    d.chmod(0o711)
    yield d
    for leftover in d.glob("pgbv-cluster-*"):  # only after a failed test: never leave a server running
        stop_cluster_dir(leftover)
    shutil.rmtree(d, ignore_errors=True)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str | Path) else str(v)


def drill_toml(work_dir: Path, **keys: object) -> str:
    """A [drill] section; every drill of a test works in its own directory (lock, clusters)."""
    lines = ["[drill]", f'work_dir = "{work_dir}"', *(f"{k} = {_toml(v)}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


def newest(backup_dir: Path) -> Path:
    return max(backup_dir.glob("*.sql.gz"), key=lambda p: p.stat().st_mtime)


def pg_dump(cluster: ThrowawayCluster, out: Path, *args: str) -> Path:
    """A real `pg_dump | gzip` of the seed database, with extra pg_dump arguments."""
    dump = subprocess.run(["pg_dump", "--no-owner", "--no-acl", *args, "-d", demo.DBNAME], env=cluster.env(),
                          capture_output=True, check=True)
    out.write_bytes(gzip.compress(dump.stdout))
    return out


def edit_dump(path: Path, old: str, new: str, count: int = 1) -> None:
    text = gzip.decompress(path.read_bytes()).decode()
    assert old in text, old
    path.write_bytes(gzip.compress(text.replace(old, new, count).encode()))


def run_checks(pytester: pytest.Pytester, target: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA", *args, CHECK)


def test_healthy_dump_restores_and_every_drill_check_passes(pytester, backups, write_target, work_dir):
    target = write_target(backups, drill_toml(work_dir, min_tables={"public": 12}, min_views=3))
    result = run_checks(pytester, target)
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    assert f"dump used: {newest(backups)}" in out
    assert "schemas: cutter_governance,public,sandbox_tac" in out
    assert "tables: 21" in out and "error lines: none" in out
    assert "restore db: restore_drill_" in out
    assert not list(work_dir.glob("pgbv-cluster-*")), "the drill cluster must be gone"


def test_drill_config_errors_name_the_key(tmp_path, backups, write_target):
    for extra, key in [('[drill]\nmode = "elsewhere"\n', "[drill].mode"),
                       ('[drill]\nmode = "scratch"\n', "[drill].server_dsn"),
                       ('[drill]\nprefix = "prod_"\n', "[drill].prefix"),
                       ('[drill]\nmin_tables = { public = "many" }\n', "[drill].min_tables"),
                       ('[drill]\ndisk_factor = 0.5\n', "[drill].disk_factor")]:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_target(write_target(backups, extra))
