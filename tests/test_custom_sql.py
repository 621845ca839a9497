"""Custom SQL checks: the shipped registry-lock example passes on the demo and fails on its fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgbackup_verify_demo import demo

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

CHECK = str(checks_dir() / "test_custom_sql.py")


@pytest.fixture(scope="module")
def lock_cluster() -> Iterator[ThrowawayCluster]:
    """A seed database of our own: the tests below change its functions."""
    with ThrowawayCluster(tag="sql-") as c:
        demo.build_seed_database(c)
        yield c


def run(pytester: pytest.Pytester, target: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", CHECK, *args)


def target_for(tmp_path: Path, c: ThrowawayCluster, extra: str = "") -> Path:
    (tmp_path / "b").mkdir(exist_ok=True)
    return demo.write_target_file(tmp_path / "t.toml", c.dsn(demo.DBNAME, demo.DUMP_ROLE), tmp_path / "b",
                                  extra=extra)


def set_lock(c: ThrowawayCluster, locked: bool) -> None:
    with psycopg.connect(c.dsn(demo.DBNAME), autocommit=True) as conn:
        conn.execute(demo.registry_function_sql("refresh_pivot_results", locked=locked))


def test_registry_lock_coverage_passes_when_every_function_takes_the_lock(
        pytester: pytest.Pytester, tmp_path: Path, lock_cluster: ThrowawayCluster) -> None:
    set_lock(lock_cluster, True)
    result = run(pytester, target_for(tmp_path, lock_cluster))
    result.assert_outcomes(passed=1)


def test_function_without_the_lock_fails_named_with_the_fix(
        pytester: pytest.Pytester, tmp_path: Path, lock_cluster: ThrowawayCluster) -> None:
    set_lock(lock_cluster, False)
    try:
        result = run(pytester, target_for(tmp_path, lock_cluster))
    finally:
        set_lock(lock_cluster, True)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*registry lock coverage: FAILED (1 row(s): refresh_pivot_results, does not take "
        "incomex.registry_refresh.v1); fix: make each listed function start with PERFORM "
        "pg_advisory_xact_lock(hashtext('incomex.registry_refresh.v1'));*"])


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


def test_query_error_and_true_rule_fail_each_on_its_own(
        pytester: pytest.Pytester, tmp_path: Path, lock_cluster: ThrowawayCluster) -> None:
    result = run(pytester, target_for(tmp_path, lock_cluster, BROKEN_AND_TRUE))
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*broken query: ERROR (query failed: relation \"no_such_table\" does not exist)*"])
    result.stdout.fnmatch_lines(
        ["*dump role may log in: FAILED (returned no row); fix: ALTER ROLE workflow_admin LOGIN;*"])


def test_concern_routes_a_custom_check_with_the_builtin_ones(
        pytester: pytest.Pytester, tmp_path: Path, lock_cluster: ThrowawayCluster) -> None:
    result = run(pytester, target_for(tmp_path, lock_cluster, BROKEN_AND_TRUE), "-m", "grants")
    result.assert_outcomes(failed=1, deselected=2)


def test_custom_check_cannot_write(pytester: pytest.Pytester, tmp_path: Path,
                                   lock_cluster: ThrowawayCluster) -> None:
    writer = '[[sql_check]]\nname = "writer"\nquery = "CREATE TABLE public.sneaky (x int)"\n' \
             'expect = "no_rows"\nfix = "do not write"\n'
    result = run(pytester, target_for(tmp_path, lock_cluster, writer), "-k", "writer")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        ["*writer: ERROR (query failed: cannot execute CREATE TABLE in a read-only transaction)*"])


def test_bad_rule_is_a_config_error(pytester: pytest.Pytester, tmp_path: Path,
                                    lock_cluster: ThrowawayCluster) -> None:
    bad = '[[sql_check]]\nname = "x"\nquery = "SELECT 1"\nexpect = "some"\nfix = "f"\n'
    result = run(pytester, target_for(tmp_path, lock_cluster, bad))
    assert result.ret == 4
    assert "[[sql_check]] 'x'.expect: 'some' is not one of no_rows, true" in result.stderr.str()


def test_custom_checks_share_the_grant_audits_transaction(lock_cluster: ThrowawayCluster, tmp_path: Path) -> None:
    """One REPEATABLE READ, READ ONLY transaction for the grant audit and every [[sql_check]]."""
    from pgbackup_verify.config import load_target
    from pgbackup_verify.facts.audit import audit_catalog

    probe = ('[[sql_check]]\nname = "moment"\nquery = "SELECT now()::text, current_setting(\'transaction_isolation\'),'
             ' current_setting(\'transaction_read_only\')"\nexpect = "no_rows"\nfix = "none"\n')
    result = audit_catalog(load_target(target_for(tmp_path, lock_cluster, probe)))
    assert result.grants.queries == 5
    assert result.sql["moment"].findings == (f"{result.started}, repeatable read, on",)
    assert result.sql["registry lock coverage"].passed


def test_target_without_any_sql_check_is_one_not_applicable_skip(
        pytester: pytest.Pytester, tmp_path: Path, lock_cluster: ThrowawayCluster) -> None:
    """[[sql_check]] is optional: zero entries once ended in INTERNALERROR (an empty parametrization)."""
    (tmp_path / "b").mkdir()
    target = tmp_path / "bare.toml"
    target.write_text(f'[database]\ndsn = "{lock_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)}"\n'
                      f'dump_role = "{demo.DUMP_ROLE}"\n[backups]\ndirectory = "{tmp_path / "b"}"\n')
    grants = str(checks_dir() / "test_grants.py")
    result = pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", CHECK, grants,
                                           "-k", "sql or usage", "-rs")
    assert result.ret == 0, result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, skipped=1)
    assert "not applicable: target 'bare' declares no [[sql_check]]" in result.stdout.str()
