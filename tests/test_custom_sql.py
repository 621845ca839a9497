"""Custom SQL checks: the shipped registry-lock example passes on the demo and fails on its fault."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from checkrun import ChecksRun, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECK = str(checks_dir() / "test_custom_sql.py")


@dataclass(frozen=True)
class LockDbs:
    """Two copies of the seed database in the shared seed cluster: every function locked, and one not."""

    cluster: ThrowawayCluster
    locked: str
    lockless: str

    def dsn(self, db: str) -> str:
        return self.cluster.dsn(db, demo.DUMP_ROLE)


def copy_seed_database(c: ThrowawayCluster, name: str) -> None:
    """CREATE DATABASE ... TEMPLATE needs the template idle: a session just closed may still be leaving."""
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        for attempt in range(50):
            try:
                conn.execute(f"CREATE DATABASE {name} TEMPLATE {demo.DBNAME} OWNER {demo.DUMP_ROLE}")
                return
            except psycopg.errors.ObjectInUse:
                if attempt == 49:
                    raise
                time.sleep(0.1)


@pytest.fixture(scope="module")
def lock_dbs(seed_cluster: ThrowawayCluster) -> Iterator[LockDbs]:
    """Databases of our own (the tests change their functions), not a cluster of our own."""
    dbs = LockDbs(seed_cluster, "sql_locked", "sql_lockless")
    for db in (dbs.locked, dbs.lockless):
        copy_seed_database(seed_cluster, db)
    set_lock(seed_cluster, dbs.lockless, False)
    yield dbs
    with psycopg.connect(seed_cluster.dsn(), autocommit=True) as conn:
        for db in (dbs.locked, dbs.lockless):
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def run(pytester: pytest.Pytester, target: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", CHECK, *args)


def target_for(d: Path, dsn: str, extra: str = "", name: str = "t") -> Path:
    (d / "b").mkdir(parents=True, exist_ok=True)
    return demo.write_target_file(d / f"{name}.toml", dsn, d / "b", name=name, extra=extra)


def set_lock(c: ThrowawayCluster, db: str, locked: bool) -> None:
    with psycopg.connect(c.dsn(db), autocommit=True) as conn:
        conn.execute(demo.registry_function_sql("refresh_pivot_results", locked=locked))


BROKEN_AND_TRUE = """
[[sql_check]]
name = "broken query"
query = "SELECT * FROM no_such_table"
expect = "no_rows"
fix = "fix the query"

[[sql_check]]
name = "dump role may log in"
query = "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'workflow_admin' AND false"
expect = "true"
fix = "ALTER ROLE workflow_admin LOGIN;"
concern = "grants"
"""

WRITER = '[[sql_check]]\nname = "writer"\nquery = "CREATE TABLE public.sneaky (x int)"\n' \
         'expect = "no_rows"\nfix = "do not write"\n'


@pytest.fixture(scope="module")
def sql_run(lock_dbs: LockDbs, tmp_path_factory: pytest.TempPathFactory) -> ChecksRun:
    """One checks run over a target per case: the locked and the lockless database, the broken and the
    writing rules."""
    root = tmp_path_factory.mktemp("sql-cases")
    targets = [target_for(root, lock_dbs.dsn(lock_dbs.locked), name="locked"),
               target_for(root, lock_dbs.dsn(lock_dbs.lockless), name="lockless"),
               target_for(root, lock_dbs.dsn(lock_dbs.locked), BROKEN_AND_TRUE, name="broken"),
               target_for(root, lock_dbs.dsn(lock_dbs.locked), WRITER, name="writer")]
    return run_checks(root / "run", targets, [CHECK])


def test_registry_lock_coverage_passes_when_every_function_takes_the_lock(sql_run: ChecksRun) -> None:
    sql_run["locked"].assert_outcomes(passed=1)


def test_function_without_the_lock_fails_named_with_the_fix(sql_run: ChecksRun) -> None:
    sql_run["lockless"].assert_outcomes(failed=1)
    sql_run["lockless"].fnmatch_line(
        "*registry lock coverage: FAILED (1 row(s): refresh_pivot_results, does not take "
        "incomex.registry_refresh.v1); fix: make each listed function start with PERFORM "
        "pg_advisory_xact_lock(hashtext('incomex.registry_refresh.v1'));*")


def test_query_error_and_true_rule_fail_each_on_its_own(sql_run: ChecksRun) -> None:
    result = sql_run["broken"]
    result.assert_outcomes(passed=1, failed=2)
    result.fnmatch_line("*broken query: ERROR (query failed: relation \"no_such_table\" does not exist)*")
    result.fnmatch_line("*dump role may log in: FAILED (returned no row); fix: ALTER ROLE workflow_admin LOGIN;*")


def test_concern_routes_a_custom_check_with_the_builtin_ones(pytester: pytest.Pytester, tmp_path: Path,
                                                             lock_dbs: LockDbs) -> None:
    result = run(pytester, target_for(tmp_path, lock_dbs.dsn(lock_dbs.locked), BROKEN_AND_TRUE), "-m", "grants")
    result.assert_outcomes(failed=1, deselected=2)


def test_custom_check_cannot_write(sql_run: ChecksRun) -> None:
    result = sql_run["writer"]
    result.assert_outcomes("writer", failed=1)
    result.fnmatch_line("*writer: ERROR (query failed: cannot execute CREATE TABLE in a read-only transaction)*")


def test_bad_rule_is_a_config_error(tmp_path: Path) -> None:
    bad = '[[sql_check]]\nname = "x"\nquery = "SELECT 1"\nexpect = "some"\nfix = "f"\n'
    with pytest.raises(ConfigError) as e:  # exit 4 with this one line: see test_config.py
        load_target(target_for(tmp_path, "host=127.0.0.1 port=1 dbname=x user=y", bad))
    assert "[[sql_check]] 'x'.expect: 'some' is not one of no_rows, true" in str(e.value)


def test_custom_checks_share_the_grant_audits_transaction(lock_dbs: LockDbs, tmp_path: Path) -> None:
    """One REPEATABLE READ, READ ONLY transaction for the grant audit and every [[sql_check]]."""
    from pgbackup_verify.facts.audit import audit_catalog

    probe = ('[[sql_check]]\nname = "moment"\nquery = "SELECT now()::text, current_setting(\'transaction_isolation\'),'
             ' current_setting(\'transaction_read_only\')"\nexpect = "no_rows"\nfix = "none"\n')
    result = audit_catalog(load_target(target_for(tmp_path, lock_dbs.dsn(lock_dbs.locked), probe)))
    assert result.grants.queries == 5
    assert result.sql["moment"].findings == (f"{result.started}, repeatable read, on",)
    assert result.sql["registry lock coverage"].passed


def test_target_without_any_sql_check_is_one_not_applicable_skip(
        pytester: pytest.Pytester, tmp_path: Path, lock_dbs: LockDbs) -> None:
    """[[sql_check]] is optional: zero entries once ended in INTERNALERROR (an empty parametrization)."""
    (tmp_path / "b").mkdir()
    target = tmp_path / "bare.toml"
    target.write_text(f'[database]\ndsn = "{lock_dbs.dsn(lock_dbs.locked)}"\n'
                      f'dump_role = "{demo.DUMP_ROLE}"\n[backups]\ndirectory = "{tmp_path / "b"}"\n')
    grants = str(checks_dir() / "test_grants.py")
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", CHECK, grants,
                                           "-k", "sql or usage", "-rs")
    assert result.ret == 0, result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, skipped=1)
    assert "not applicable: target 'bare' declares no [[sql_check]]" in result.stdout.str()
