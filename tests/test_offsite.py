"""Offsite checks against a real rclone local remote (named by environment only) holding real
archives of real dumps: green on last night's archive, red on each broken one."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from pgbackup_verify_demo import scene

from pgbackup_verify.config import OffsiteSection
from pgbackup_verify.facts import offsite
from pgbackup_verify.facts.dumps.gzipscan import scan_stream

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_offsite.py"
OFFSITE_CHECKS = 5
EMPTY_GZIP = subprocess.run(["gzip", "-9"], input=b"", capture_output=True, check=True).stdout  # the seed's 20 B


@pytest.fixture(autouse=True)
def rclone_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in scene.RCLONE_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    d = tmp_path / "offsite"
    d.mkdir()
    return d


def _newest_dump(backups: Path) -> Path:
    return max(backups.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)


def _run(pytester: pytest.Pytester, write_target, backups: Path, remote: Path) -> pytest.RunResult:
    target = write_target(backups, extra=scene.offsite_toml(remote))
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA", str(CHECKS))


def _hostile(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 16 if kind == tarfile.REGTYPE else 0
    return info


def test_last_nights_archive_passes(pytester, write_target, backups: Path, remote: Path) -> None:
    dump = _newest_dump(backups)
    scene.write_archive(remote, dump, when=dump.stat().st_mtime + 3600)
    result = _run(pytester, write_target, backups, remote)
    result.assert_outcomes(passed=OFFSITE_CHECKS)
    out = result.stdout.str()
    assert "B gzip, valid, footer found" in out
    assert f"vs local {dump} {dump.stat().st_size} B (0.0%" in out


# fault -> (failing checks, expected message fragments)
FAULTS = {
    "old archive": (["test_newest_offsite_archive_is_fresh_and_big_enough"],
                    ["offsite archive age: FAILED (vps-backup-", " h old vs 26 h); fix: check the nightly upload"]),
    "archive without the PG member": (
        ["test_offsite_archive_contains_the_pg_dump", "test_offsite_pg_dump_is_complete",
         "test_offsite_pg_dump_matches_the_local_dump"],
        ["FAILED (no member matching '*/postgresql-directus.sql.gz' among 3); fix: add the PG dump"]),
    "member is the 20-byte empty gzip": (
        ["test_offsite_pg_dump_is_complete", "test_offsite_pg_dump_matches_the_local_dump"],
        ["member vps-backup-", "/postgresql-directus.sql.gz: FAILED (empty payload, 20 B gzip of nothing",
         "offsite PG dump size: FAILED (20 B vs local"]),
    "archive with a ../ member": (
        ["test_offsite_archive_holds_no_hostile_member"],
        ["FAILED (1 hostile member(s), not followed: ../../etc/cron.d/evil: path traversal (..)); fix: rebuild"]),
    "links and absolute paths": (
        ["test_offsite_archive_holds_no_hostile_member"],
        ["FAILED (3 hostile member(s), not followed: /etc/passwd: absolute path; x/shadow: symlink to /etc/shadow; "
         "x/h: hardlink to /etc/hostname)"]),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_offsite_fault_fails_its_check(fault: str, pytester, write_target, backups: Path, remote: Path) -> None:
    dump = _newest_dump(backups)
    when = dump.stat().st_mtime + 3600
    if fault == "old archive":
        scene.write_archive(remote, dump, when=when)
        for a in remote.iterdir():
            os.utime(a, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    elif fault == "archive without the PG member":
        scene.write_archive(remote, None, when=when)
    elif fault == "member is the 20-byte empty gzip":
        assert len(EMPTY_GZIP) == 20
        scene.write_archive(remote, None, when=when, member_bytes=EMPTY_GZIP)
    elif fault == "archive with a ../ member":
        scene.write_archive(remote, dump, when=when, extra=[_hostile("../../etc/cron.d/evil")])
    else:
        scene.write_archive(remote, dump, when=when, extra=[
            _hostile("/etc/passwd"), _hostile("x/shadow", tarfile.SYMTYPE, "/etc/shadow"),
            _hostile("x/h", tarfile.LNKTYPE, "/etc/hostname")])
    failing, messages = FAULTS[fault]
    result = _run(pytester, write_target, backups, remote)
    result.assert_outcomes(passed=OFFSITE_CHECKS - len(failing), failed=len(failing))
    for name in failing:
        result.stdout.fnmatch_lines([f"FAILED *checks/test_offsite.py::{name}[[]selftest]*"])
    out = result.stdout.str()
    for m in messages:
        assert m in out
    assert not (remote.parent.parent / "etc").exists()  # nothing was ever written out of the archive


def test_missing_remote_fails_with_rclones_reason(pytester, write_target, backups: Path, remote: Path) -> None:
    result = _run(pytester, write_target, backups, remote / "nope")
    result.assert_outcomes(failed=OFFSITE_CHECKS)
    result.stdout.fnmatch_lines([f"*offsite listing: FAILED (rclone cannot list 'offsite:{remote}/nope': *directory "
                                 "not found); fix: check [[]offsite].remote and the rclone config*"])


def test_member_is_a_stream_for_the_restore_drill(backups: Path, remote: Path) -> None:
    dump = _newest_dump(backups)
    scene.write_archive(remote, dump, extra=[_hostile("../escape")])
    o = OffsiteSection(remote=f"{scene.REMOTE_NAME}:{remote}")
    newest = offsite.list_archives(o)[-1]
    with offsite.open_member(o, newest) as member:
        assert member is not None
        assert member.description == f"{newest.path} member {member.name} ({dump.stat().st_size} B)"
        with gzip.open(member.stream) as sql:  # what a restore would pipe into psql
            head = sql.read(4096)
    assert b"PostgreSQL database dump" in head


def test_member_scan_reads_pg_dump_15_18_footer_and_catches_truncation() -> None:
    body = b"CREATE TABLE t ();\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict 9Zx\n\n"
    good = scan_stream(io.BytesIO(gzip.compress(body)), "member")
    assert (good.valid, good.footer_found, good.payload_bytes) == (True, True, len(body))
    cut = scan_stream(io.BytesIO(gzip.compress(body)[:-6]), "member")
    assert not cut.valid and "truncated" in cut.error
    no_footer = scan_stream(io.BytesIO(gzip.compress(body[:30])), "member")
    assert no_footer.valid and not no_footer.footer_found
    assert scan_stream(io.BytesIO(EMPTY_GZIP), "member").payload_bytes == 0


def test_empty_remote_fails_every_check(pytester, write_target, backups: Path, remote: Path) -> None:
    result = _run(pytester, write_target, backups, remote)
    result.assert_outcomes(failed=OFFSITE_CHECKS)
    result.stdout.fnmatch_lines([f"*offsite archive: FAILED (no 'vps-backup-*.tar.gz' in offsite:{remote}); "
                                 "fix: check the nightly upload job and [[]offsite].archive_glob*"])


@pytest.mark.parametrize(("toml", "expected"), [
    ('remote = "/srv/offsite"', "[offsite].remote: '/srv/offsite' is not an rclone path; write REMOTE:PATH"),
    ('remote = "x:y"\nsize_tolerance = 1.5', "[offsite].size_tolerance: 1.5 is not in [0, 1)"),
    ('remote = "x:y"\nmax_age_hours = 0', "[offsite].max_age_hours: must be greater than 0"),
    ("archive_glob = '*.tgz'", "[offsite].remote: required key is missing"),
])
def test_offsite_section_mistakes_are_one_line(tmp_path: Path, toml: str, expected: str) -> None:
    from pgbackup_verify.config import ConfigError, load_target

    f = tmp_path / "t.toml"
    f.write_text(f'[database]\ndsn = "host=x"\ndump_role = "d"\n[backups]\ndirectory = "{tmp_path}"\n'
                 f"[offsite]\n{toml}\n")
    with pytest.raises(ConfigError) as exc:
        load_target(f)
    assert expected in str(exc.value) and "\n" not in str(exc.value)
