"""Every optional part of a target file may be absent: the config matrix, end to end on the demo host.

One demo build for the module and two runs of the shipped checks over the targets of the matrix
(tests/checkrun.py): [database] + [backups] alone, then each optional section added on its own, then
all of them (see Matrix for which run holds which). Each is green (exit 0, no INTERNALERROR); an
absent [host], [offsite] or [kuma] is "not configured", not OK and not failed; without written
expectations the drill expects the live schemas and tables and says so. Another run shows that
default expectation failing on a dump that lost a schema. ([kuma] present needs a real Kuma:
tests/test_kuma_*.py run it.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkrun import CHECKS, ChecksRun, TargetResult, run_checks
from demohost import built_demo
from pgbackup_verify_demo import demo

from pgbackup_verify.facts.drill.run import LIVE_DEFAULT

SECTIONS = ("target", "trends", "drill", "host", "offsite", "sql_check")
NOT_CONFIGURED = "not configured"


@pytest.fixture(scope="module")
def demo_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.Demo]:
    yield from built_demo(tmp_path_factory, "minimal-demo")


def optional_sections(d: demo.Demo) -> dict[str, str]:
    """Each optional section as the demo host needs it, by name."""
    # The demo's own target file carries its [host] and [offsite] sections after the SQL check.
    extra = d.target_file.read_text().split(demo.REGISTRY_LOCK_CHECK)[1]
    host, offsite = extra.split("\n[offsite]")
    return {
        "target": "[target]\nhost = \"local://\"\n",
        "trends": "[trends]\nrestore_budget_seconds = 600\n",
        "drill": "[drill]\nexpected_schemas = [\"public\", \"cutter_governance\", \"sandbox_tac\"]\n"
                 "min_tables = { public = 12, cutter_governance = 6, sandbox_tac = 3 }\n",
        "host": host,
        "offsite": "[offsite]" + offsite,
        "sql_check": demo.REGISTRY_LOCK_CHECK,
    }


def write(path: Path, d: demo.Demo, backups: Path, sections: dict[str, str]) -> Path:
    """[database] and [backups] (nothing optional), then the given sections; the name is the file's."""
    dsn = d.cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    path.write_text(f'[database]\ndsn = "{dsn}"\ndump_role = "{demo.DUMP_ROLE}"\n\n'
                    f'[backups]\ndirectory = "{backups}"\npattern = "{demo.DBNAME}_*.sql.gz"\n\n'
                    + "\n".join(sections.values()))
    return path


@dataclass
class Matrix:
    """The drill runs once per target and costs most of a run: the targets whose difference matters to
    it (bare, [drill] only, everything) run every check; the other single sections run the rest."""

    drilled: ChecksRun
    others: ChecksRun

    def __getitem__(self, target: str) -> TargetResult:
        return (self.drilled if target in self.drilled.targets() else self.others)[target]

    def targets(self) -> set[str]:
        return self.drilled.targets() | self.others.targets()

    def checks(self) -> list[dict]:
        return self.drilled.doc["checks"] + self.others.doc["checks"]


@pytest.fixture(scope="module")
def matrix(demo_host: demo.Demo, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    base = tmp_path_factory.mktemp("matrix")
    sections = optional_sections(demo_host)
    backups = demo_host.workdir / "backups"
    drilled = [write(base / "bare.toml", demo_host, backups, {}),
               write(base / "with-drill.toml", demo_host, backups, {"drill": sections["drill"]}),
               write(base / "all.toml", demo_host, backups, sections)]
    others = [write(base / f"with-{name}.toml", demo_host, backups, {name: sections[name]})
              for name in SECTIONS if name != "drill"]
    return Matrix(run_checks(base / "drilled", drilled, [CHECKS], "-p", "no:xdist"),
                  run_checks(base / "others", others, [CHECKS], "-p", "no:xdist", "-m", "not drill"))


def test_every_combination_runs_green_without_internal_error(matrix: ChecksRun) -> None:
    assert matrix.targets() == {"bare", "all", *(f"with-{s}" for s in SECTIONS)}
    failed = {t: sorted(matrix[t].failed()) for t in matrix.targets() if matrix[t].failed()}
    assert failed == {}
    for run in (matrix.drilled, matrix.others):
        assert "INTERNALERROR" not in run.stdout + run.stderr
        assert run.ret == 0, run.stdout[-3000:]
        assert "pgbackup-verify: OK targets=" in run.stdout


def test_a_bare_target_expects_the_live_schemas_and_tables_and_says_so(matrix: ChecksRun) -> None:
    bare = matrix["bare"]
    for check in ("test_every_expected_schema_is_restored", "test_table_count_per_schema_meets_expectation"):
        assert bare.outcome(check) == "passed"
    assert f"expectation: {LIVE_DEFAULT}" in bare.text
    assert "expected schemas: cutter_governance,public,sandbox_tac" in bare.text
    assert "tables per schema (restored/minimum): cutter_governance 6/6, public 12/12, sandbox_tac 3/3" in bare.text
    # Written expectations are used as written, without the live catalog.
    assert "expected from the live catalog" not in matrix["with-drill"].text


@pytest.mark.parametrize("section", ["host", "offsite", "kuma"])
def test_an_absent_section_is_not_configured_neither_ok_nor_failed(matrix: ChecksRun, section: str) -> None:
    checks = [c for c in matrix.checks() if c["target"] == "bare" and c["concern"] == section]
    assert checks, f"no {section} check selected"
    if section == "host":  # the backup dir's mode and free space are read without [host]
        checks = [c for c in checks if c["outcome"] == "skipped"]
    assert {(c["outcome"], c["kind"]) for c in checks} == {("skipped", NOT_CONFIGURED)}
    assert all(c["message"].startswith(f"not configured: target 'bare' has no [{section}] section")
               for c in checks)
    present = "all" if section != "kuma" else None
    if present:
        assert not [c for c in matrix.checks() if c["target"] == present and c["concern"] == section
                    and c["kind"] == NOT_CONFIGURED]


def test_the_report_shows_absent_sections_as_not_configured(matrix: ChecksRun) -> None:
    html = (matrix.drilled.workdir / "reports" / "latest.html").read_text()
    assert "Backup health: OK" in html
    block = "<div class='pgbv-concern pgbv-NOT-CONFIGURED' data-target='bare' data-concern='offsite'>"
    assert block in html
    assert "<span class='pgbv-badge'>NOT CONFIGURED</span>" in html
    assert "data-target='all' data-concern='offsite'" in html
    assert "<div class='pgbv-concern pgbv-NOT-CONFIGURED' data-target='all' data-concern='offsite'>" not in html


def test_the_default_expectation_fails_on_a_dump_that_lost_a_schema(demo_host: demo.Demo, tmp_path: Path) -> None:
    """The newest dump, a complete pg_dump, left sandbox_tac out: only the live catalog knows it is missing."""
    backups = tmp_path / "backups"
    shutil.copytree(demo_host.workdir / "backups", backups)
    newest = max(backups.glob("*.sql.gz"), key=lambda p: p.stat().st_mtime)
    stat = newest.stat()
    newest.unlink()
    env = {**demo_host.cluster.env(), "PGUSER": demo.DUMP_ROLE}
    with os.fdopen(os.open(newest, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
        dump = subprocess.Popen(["pg_dump", "--no-owner", "--no-acl", "--exclude-schema=sandbox_tac", "-d",
                                 demo.DBNAME], env=env, stdout=subprocess.PIPE)
        subprocess.run(["gzip", "-9"], stdin=dump.stdout, stdout=out, check=True)
        assert dump.wait() == 0
    os.utime(newest, (stat.st_atime, stat.st_mtime))
    run = run_checks(tmp_path / "run", [write(tmp_path / "lost.toml", demo_host, backups, {})], [CHECKS],
                     "-p", "no:xdist", "-m", "drill")
    lost = run["lost"]
    assert lost.outcome("test_every_expected_schema_is_restored") == "failed"
    # -m drill: the grants checks did not run, so the fix names both causes (see tests/test_fix_texts.py).
    assert ("restore drill schemas: FAILED (missing after restore: sandbox_tac); fix: if the grants checks say "
            "the dump role lacks USAGE on them, grant it; else stop excluding them from pg_dump (-n/-N) and check "
            "that the dump is newer than them (or, if pg_dump leaves them out on purpose, list them in "
            "[database].exclude_schemas), then check the next dump") in lost.text
    assert f"expectation: {LIVE_DEFAULT}" in lost.text
    # One fault, one red line: the tables of a missing schema are the schema check's finding (not judged here).
    assert lost.outcome("test_table_count_per_schema_meets_expectation") == "skipped"
    [tables] = [c for c in lost.checks if c["name"] == "test_table_count_per_schema_meets_expectation"]
    assert "not judged" in tables["message"] and "sandbox_tac" in tables["message"], tables
    assert run.ret == 1
