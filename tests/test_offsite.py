"""Offsite checks against a real rclone local remote (named by environment only) holding real
archives of real dumps: green on last night's archive, red on each broken one."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import re
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from pgbackup_verify_demo import demo, scene

from pgbackup_verify.config import OffsiteSection
from pgbackup_verify.facts import offsite
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.dumps.gzipscan import scan_stream

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_offsite.py"
OFFSITE_CHECKS = 5
EMPTY_GZIP = subprocess.run(["gzip", "-9"], input=b"", capture_output=True, check=True).stdout  # the seed's 20 B


@pytest.fixture(autouse=True)
def rclone_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in scene.RCLONE_ENV.items():
        monkeypatch.setenv(k, v)


def _newest_dump(backups: Path) -> Path:
    return max(backups.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)


def _hostile(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 16 if kind == tarfile.REGTYPE else 0
    return info


CONTAINS, COMPLETE, MATCHES, HOSTILE = ("test_offsite_archive_contains_the_pg_dump", "test_offsite_pg_dump_is_complete",
                                       "test_offsite_pg_dump_matches_the_local_dump",
                                       "test_offsite_archive_holds_no_hostile_member")
# fault -> (the one failing check, the checks not judged because of it, expected message fragments)
FAULTS = {
    "old archive": (["test_newest_offsite_archive_is_fresh_and_big_enough"], [],
                    ["offsite archive age: FAILED (vps-backup-", " h old vs 26 h); fix: check the nightly upload"]),
    "archive without the PG member": (
        [CONTAINS], [COMPLETE, MATCHES],
        ["FAILED (no member matching '*/postgresql-directus.sql.gz' among 3); fix: add the PG dump",
         "not judged: offsite archive offsite:", "(reported by offsite archive contains the pg dump)"]),
    "member is the 20-byte empty gzip": (
        [COMPLETE], [MATCHES],
        ["member vps-backup-", "/postgresql-directus.sql.gz: FAILED (empty payload, 20 B gzip of nothing",
         "not judged: offsite PG dump vps-backup-"]),
    "archive with a ../ member": (
        [HOSTILE], [],
        ["FAILED (1 hostile member(s), not followed: ../../etc/cron.d/evil: path traversal (..)); fix: rebuild"]),
    "links and absolute paths": (
        [HOSTILE], [],
        ["FAILED (3 hostile member(s), not followed: /etc/passwd: absolute path; x/shadow: symlink to /etc/shadow, "
         "outside the archive; x/h: hardlink to /etc/hostname, outside the archive)"]),
    "links leaving through other links": (
        [HOSTILE], [],
        ["FAILED (3 hostile member(s), not followed: out/evil: written through a link that leads outside the "
         "archive; etc/esc: symlink to lnk/.., outside the archive; out: symlink to /tmp, outside the archive)",
         "members: 8 in vps-backup-", ", 1 link(s) staying inside"]),
    "archive cut inside the PG member": (
        [HOSTILE], [CONTAINS, COMPLETE, MATCHES],
        ["FAILED (could not be read: archive unreadable after 2 members: ", "fix: re-run the upload job, the archive "
         "is damaged", "not judged: offsite archive offsite:",
         "(reported by offsite archive holds no hostile member)"]),
    "one night behind": (
        [MATCHES], [],
        ["offsite PG dump night: FAILED (vps-backup-", "/postgresql-directus.sql.gz in vps-backup-",
         ": the member is the dump of the night of {member_night}, written ", "but the archive was packed ",
         "in the night of {night}, whose dump {dump} (written ", ") it does not hold: the offsite copy is one night "
         "behind); fix: schedule the upload after the dump job, or make it wait on the dump's lock"]),
    "old dump in a fresh archive": (
        [CONTAINS], [],
        ["offsite PG dump age: FAILED (vps-backup-", "/postgresql-directus.sql.gz in vps-backup-",
         " h before the archive vs 26 h); fix: the upload job packed an old dump"]),
}
INSIDE_LINKS = [_hostile("nginx/sites-available/default"),
                _hostile("nginx/sites-enabled/default", tarfile.SYMTYPE, "../sites-available/default"),
                _hostile("nginx/conf.d/default", tarfile.LNKTYPE, "nginx/sites-available/default"),
                _hostile("current", tarfile.SYMTYPE, "nginx"),
                _hostile("current-default", tarfile.SYMTYPE, "current/sites-enabled/default")]


@dataclass(repr=False)
class Remotes:
    """One checks run over a target per case, each with its own rclone local remote."""

    run: ChecksRun
    remotes: dict[str, Path]
    dump: Path

    def __getitem__(self, case: str) -> TargetResult:
        return self.run[slug(case)]


def slug(case: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", case).strip("-")


def _write_case(case: str, remote: Path, dump: Path) -> None:
    when = dump.stat().st_mtime + 3600
    if case in ("last night", "local dumps behind a symlink"):
        scene.write_archive(remote, dump, when=when)
    elif case == "links staying inside":
        scene.write_archive(remote, dump, when=when, extra=INSIDE_LINKS)
    elif case == "links leaving through other links":
        scene.write_archive(remote, dump, when=when, extra=[
            _hostile("etc/lnk", tarfile.SYMTYPE, ".."), _hostile("etc/esc", tarfile.SYMTYPE, "lnk/.."),
            _hostile("out", tarfile.SYMTYPE, "/tmp"), _hostile("out/evil")])
    elif case == "archive cut inside the PG member":
        archive = scene.write_archive(remote, dump, when=when)
        # The 8 KiB of random bytes packed after the member stay 8 KiB compressed: cutting 1 KiB more
        # than them cuts into the member's own compressed bytes.
        cut = archive.stat().st_size - 8192 - 1024
        assert cut > 4096  # still big enough for the size check: one fault only
        with archive.open("r+b") as f:
            f.truncate(cut)
        os.utime(archive, (when, when))
    elif case == "one night behind":
        # The upload ran half an hour before the night's dump finished: it packed the night before's.
        previous = sorted(dump.parent.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)[-2]
        scene.write_archive(remote, previous, when=dump.stat().st_mtime - 1800)
    elif case == "evening upload of the morning's dump":
        # Packed 18 h after the night before's dump and 6 h before the newest one started: not behind.
        previous = sorted(dump.parent.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)[-2]
        scene.write_archive(remote, previous, when=dump.stat().st_mtime - 6 * 3600)
    elif case == "old dump in a fresh archive":
        oldest = min(dump.parent.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)
        assert dump.stat().st_mtime - oldest.stat().st_mtime > 3 * 86400
        scene.write_archive(remote, oldest, when=when)
    elif case == "old archive":
        scene.write_archive(remote, dump, when=when)
        for a in remote.iterdir():
            os.utime(a, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    elif case == "archive without the PG member":
        scene.write_archive(remote, None, when=when)
    elif case == "member is the 20-byte empty gzip":
        assert len(EMPTY_GZIP) == 20
        scene.write_archive(remote, None, when=when, member_bytes=EMPTY_GZIP)
    elif case == "archive with a ../ member":
        scene.write_archive(remote, dump, when=when, extra=[_hostile("../../etc/cron.d/evil")])
    elif case == "links and absolute paths":
        scene.write_archive(remote, dump, when=when, extra=[
            _hostile("/etc/passwd"), _hostile("x/shadow", tarfile.SYMTYPE, "/etc/shadow"),
            _hostile("x/h", tarfile.LNKTYPE, "/etc/hostname")])
    # "empty remote": nothing uploaded; "missing remote": the configured path does not exist


@pytest.fixture(scope="module")
def offsite_run(seed_cluster: ThrowawayCluster, healthy_backups: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Remotes:
    root = tmp_path_factory.mktemp("offsite-cases")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    dump = _newest_dump(healthy_backups)
    remotes, targets = {}, []
    for case in ["last night", "links staying inside", "local dumps behind a symlink",
                 "evening upload of the morning's dump", *FAULTS, "empty remote", "missing remote"]:
        remote = root / slug(case) / "offsite"
        remote.mkdir(parents=True)
        _write_case(case, remote, dump)
        remotes[case] = remote / "nope" if case == "missing remote" else remote
        backups = healthy_backups
        if case == "local dumps behind a symlink":  # [backups].directory is a link to the volume
            backups = root / slug(case) / "backups"
            backups.symlink_to(healthy_backups)
        targets.append(demo.write_target_file(root / slug(case) / "t.toml", dsn, backups, name=slug(case),
                                              extra=scene.offsite_toml(remotes[case])))
    return Remotes(run_checks(root / "run", targets, [CHECKS], env=scene.RCLONE_ENV), remotes, dump)


def test_last_nights_archive_passes(offsite_run: Remotes) -> None:
    result, dump = offsite_run["last night"], offsite_run.dump
    result.assert_outcomes(passed=OFFSITE_CHECKS)
    night = dt.date.fromtimestamp(dump.stat().st_mtime)
    assert f"in the night of {night}; member of the night of {night} (a night runs from " in result.text
    assert "B gzip, valid, footer found" in result.text
    assert f"vs local {dump} {dump.stat().st_size} B (0.0%" in result.text


def test_an_evening_upload_of_the_mornings_dump_is_not_behind(offsite_run: Remotes) -> None:
    result = offsite_run["evening upload of the morning's dump"]
    assert result.outcome("test_offsite_pg_dump_matches_the_local_dump") == "passed", result.text


def test_local_dumps_behind_a_symlinked_backup_dir_are_compared(offsite_run: Remotes) -> None:
    result, dump = offsite_run["local dumps behind a symlink"], offsite_run.dump
    result.assert_outcomes(passed=OFFSITE_CHECKS)
    link = offsite_run.run.workdir.parent / "local-dumps-behind-a-symlink" / "backups"
    assert link.is_symlink()
    assert f"vs local {link}/{dump.name} {dump.stat().st_size} B (0.0%" in result.text


def test_links_staying_inside_the_archive_are_fine(offsite_run: Remotes) -> None:
    """A copy of /etc/nginx has sites-enabled links: nothing leaves the archive, nothing is hostile."""
    result = offsite_run["links staying inside"]
    result.assert_outcomes(passed=OFFSITE_CHECKS)
    assert ", 4 link(s) staying inside" in result.text


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_offsite_fault_fails_its_check(fault: str, offsite_run: Remotes) -> None:
    """One fault, one red line: the checks after it in the chain are not judged and say why."""
    failing, not_judged, messages = FAULTS[fault]
    result = offsite_run[fault]
    result.assert_outcomes(passed=OFFSITE_CHECKS - len(failing) - len(not_judged), failed=len(failing),
                           skipped=len(not_judged))
    assert result.failed() == set(failing)
    assert {c["name"] for c in result.checks if c["outcome"] == "skipped"} == set(not_judged)
    night = dt.date.fromtimestamp(offsite_run.dump.stat().st_mtime)  # the dumps are written at the same hour
    for m in messages:
        m = m.format(night=night, member_night=night - dt.timedelta(days=1), dump=offsite_run.dump)
        assert m in result.text
    remote = offsite_run.remotes[fault]
    assert not (remote.parent.parent / "etc").exists()  # nothing was ever written out of the archive
    assert not (remote.parent / "etc").exists() and not (remote / "etc").exists()


def test_missing_remote_fails_with_rclones_reason(offsite_run: Remotes) -> None:
    result, remote = offsite_run["missing remote"], offsite_run.remotes["missing remote"]
    result.assert_outcomes(failed=1, skipped=OFFSITE_CHECKS - 1)
    assert "not judged: offsite listing: FAILED (rclone cannot list" in result.text
    result.fnmatch_line(f"*offsite listing: FAILED (rclone cannot list 'offsite:{remote}': *directory "
                        "not found); fix: check [[]offsite].remote and the rclone config*")


def test_member_is_a_stream_for_the_restore_drill(healthy_backups: Path, tmp_path: Path) -> None:
    remote = tmp_path / "offsite"
    remote.mkdir()
    dump = _newest_dump(healthy_backups)
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


def test_empty_remote_fails_once_and_judges_nothing_else(offsite_run: Remotes) -> None:
    result, remote = offsite_run["empty remote"], offsite_run.remotes["empty remote"]
    result.assert_outcomes(failed=1, skipped=OFFSITE_CHECKS - 1)
    result.fnmatch_line(f"*offsite archive: FAILED (no 'vps-backup-*.tar.gz' in offsite:{remote}); "
                        "fix: check the nightly upload job and [[]offsite].archive_glob*")


@pytest.mark.parametrize(("toml", "expected"), [
    ('remote = "/srv/offsite"', "[offsite].remote: '/srv/offsite' is not an rclone path; write REMOTE:PATH"),
    ('remote = "x:y"\nsize_tolerance = 1.5', "[offsite].size_tolerance: 1.5 is not in [0, 1)"),
    ('remote = "x:y"\nmax_age_hours = 0', "[offsite].max_age_hours: 0.0 must be greater than 0; use e.g. 26.0"),
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


@pytest.mark.parametrize(("member", "reason"), [
    (_hostile("a/b/ok", tarfile.SYMTYPE, "../c"), ""),
    (_hostile("a/top", tarfile.SYMTYPE, "../.."), "symlink to ../.., outside the archive"),
    (_hostile("a/abs", tarfile.SYMTYPE, "/etc"), "symlink to /etc, outside the archive"),
    (_hostile("a/via", tarfile.SYMTYPE, "up/x"), "symlink to up/x, outside the archive"),  # a/up -> .. -> top -> ..
    (_hostile("a/hard", tarfile.LNKTYPE, "a/b/ok"), ""),
    (_hostile("a/hard-out", tarfile.LNKTYPE, "a/out/passwd"), "hardlink to a/out/passwd, outside the archive"),
    (_hostile("a/loop", tarfile.SYMTYPE, "loop2"), "symlink to loop2, a link loop"),
    (_hostile("a/out/file"), "written through a link that leads outside the archive"),
    (_hostile("a/fifo", tarfile.FIFOTYPE), "device, fifo or other special file"),
])
def test_link_targets_are_resolved_through_the_archives_own_links(member: tarfile.TarInfo, reason: str) -> None:
    links = {"a/b/ok": "../c", "a/up": "../..", "a/out": "/etc", "a/loop": "loop2", "a/loop2": "loop"}
    assert offsite.hostile_reason(member, links) == reason


def test_an_archive_unchanged_on_the_remote_is_not_downloaded_again(healthy_backups: Path,
                                                                    seed_cluster: ThrowawayCluster,
                                                                    tmp_path: Path) -> None:
    """Runs in one working directory (one scan record): read, then kept, then read again once the remote's
    hash differs, though size and time are the same (a byte flipped in place, the mtime set back)."""
    remote = tmp_path / "offsite"
    remote.mkdir()
    dump = _newest_dump(healthy_backups)
    archive = scene.write_archive(remote, dump, when=dump.stat().st_mtime + 3600)
    target = demo.write_target_file(tmp_path / "t.toml", seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE),
                                    healthy_backups, name="kept", extra=scene.offsite_toml(remote))

    def run() -> TargetResult:
        return run_checks(tmp_path / "run", [target], [CHECKS], env=scene.RCLONE_ENV)["kept"]

    first, second = run(), run()
    first.assert_outcomes(passed=OFFSITE_CHECKS)
    second.assert_outcomes(passed=OFFSITE_CHECKS)
    assert "archive read: downloaded and read this run (no record)" in first.text
    assert "archive read: verdict from the scan record of " in second.text
    assert "B gzip, valid, footer found" in second.text  # the member's verdict, from the record
    st = archive.stat()
    data = bytearray(archive.read_bytes())
    # The byte flipped is the archive's own CRC-32 (the gzip trailer): every member reads as before, only
    # the check of the whole archive can see it. (A byte flipped at a random place could land in deflate
    # data that still decodes, outside the PG member: the same blind spot, by chance.)
    data[-8] ^= 0xFF
    archive.write_bytes(bytes(data))
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert archive.stat().st_size == st.st_size
    third = run()
    assert "archive read: downloaded and read this run (changed since its last read)" in third.text
    # One fault, one red line: the archive's read, owned by the hostile-member check (the member itself reads fine).
    assert third.failed() == {HOSTILE}, third.text
    assert "FAILED (" in third.text and "CRC" in third.text, third.text
