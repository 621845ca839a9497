"""The offsite copy: last night's archive is on the remote, whole, and carries a complete PG dump of the
same night and size as the local one. Read through rclone as a stream; hostile tar members are never followed.

One fault, one red line: each fault has one check that owns it (listing -> the freshness check,
an unreadable archive -> the hostile-member check, a missing member -> the contains check, a broken
member -> the completeness check); every later check of that archive is not judged and says why.
"""

from __future__ import annotations

import time
from typing import NoReturn

import pytest

from pgbackup_verify.config import OffsiteSection, Target
from pgbackup_verify.evidence import FAILED, Evidence, fail, human_bytes, require, verdict
from pgbackup_verify.facts.dumps.inventory import DumpFile
from pgbackup_verify.facts.dumps.nights import UPLOAD_WINDOW_S, nearest_same_night, nearest_to_upload, night_rule
from pgbackup_verify.facts.dumps.scanrecord import ScanRecord
from pgbackup_verify.facts.host import BackupDirFacts, shown_name
from pgbackup_verify.facts.offsite import Archive, ArchiveScan, Listing
from pgbackup_verify.outcome import label
from pgbackup_verify.ownership import DUMP_AGE, dump_key, restore_key, schemas_key

pytestmark = pytest.mark.offsite


Finding = tuple[str, str, str]  # (finding, fix, the check that reports it)
FRESH, HOSTILE, CONTAINS, COMPLETE = ("test_newest_offsite_archive_is_fresh_and_big_enough",
                                      "test_offsite_archive_holds_no_hostile_member",
                                      "test_offsite_archive_contains_the_pg_dump", "test_offsite_pg_dump_is_complete")


def _listing_fault(listing: Listing) -> Finding | None:
    if listing.error:
        return (f"offsite listing: FAILED ({listing.error})", "check [offsite].remote and the rclone config", FRESH)
    if listing.newest is None:
        return (f"offsite archive: FAILED (no '{listing.archive_glob}' in {listing.remote})",
                "check the nightly upload job and [offsite].archive_glob", FRESH)
    return None


def _read_fault(scan: ArchiveScan) -> Finding | None:
    if scan.error:
        return (f"offsite archive {scan.archive.path}: FAILED (could not be read: {scan.error})",
                "re-run the upload job, the archive is damaged", HOSTILE)
    return None


def _member_fault(scan: ArchiveScan, o: OffsiteSection) -> Finding | None:
    if not scan.matches:
        return (f"offsite archive {scan.archive.path}: FAILED (no member matching '{o.member}' among "
                f"{scan.members})", "add the PG dump to the archive job or fix [offsite].member", CONTAINS)
    return None


def _complete_fault(scan: ArchiveScan) -> Finding | None:
    g = scan.gzip
    assert g is not None
    where = f"{scan.archive.name} member {scan.matches[0]}"
    if not g.valid:
        return f"offsite PG dump {where}: FAILED ({g.error})", "re-run the upload job from a good dump", COMPLETE
    if g.payload_bytes == 0:
        return (f"offsite PG dump {where}: FAILED (empty payload, {g.compressed_bytes} B gzip of nothing: pg_dump "
                "failed that night)", "fix the dump job, then re-upload", COMPLETE)
    if not g.footer_found:
        return (f"offsite PG dump {where}: FAILED (no '-- PostgreSQL database dump complete' footer: truncated "
                "dump)", "fix the dump job, then re-upload", COMPLETE)
    return None


def _fail(f: Finding) -> NoReturn:
    fail(f"{f[0]}; fix: {f[1]}")


def _not_judged(f: Finding) -> NoReturn:
    pytest.skip(f"not judged: {f[0]} (reported by {label(f[2], '')})")


def _upstream(listing: Listing, scan: ArchiveScan | None, o: OffsiteSection, me: str) -> ArchiveScan:
    """The scan of the newest archive, once every fault before `me` in the chain listing -> read ->
    member -> complete is ruled out: the owner of a fault fails with it, every later check skips."""
    rank = {FRESH: 0, HOSTILE: 1, CONTAINS: 2, COMPLETE: 3}
    fault = _listing_fault(listing)
    if fault is None:
        assert scan is not None  # only None without an archive
        if not scan.member_read:
            fault = _read_fault(scan) or _member_fault(scan, o)
        else:
            fault = _complete_fault(scan)
    if fault is not None and rank[fault[2]] < rank.get(me, len(rank)):
        _not_judged(fault)
    assert scan is not None
    return scan


def test_newest_offsite_archive_is_fresh_and_big_enough(offsite_listing: Listing, offsite_section: OffsiteSection,
                                                        evidence) -> None:
    fault = _listing_fault(offsite_listing)
    if fault:
        _fail(fault)
    a: Archive | None = offsite_listing.newest
    assert a is not None
    o = offsite_section
    age_h = (time.time() - a.mtime) / 3600
    evidence("newest archive", f"{a.path}, {human_bytes(a.size)}, {age_h:.1f} h old "
             f"({len(offsite_listing.archives)} archive(s))")
    problems = []
    if age_h > o.max_age_hours:
        problems.append(f"offsite archive age: FAILED ({a.name} is {age_h:.1f} h old vs {o.max_age_hours:g} h); "
                        "fix: check the nightly upload job's log and rclone credentials")
    if a.size < o.min_archive_bytes:
        problems.append(f"offsite archive size: FAILED ({a.name} {a.size} B vs at least {o.min_archive_bytes} B); "
                        "fix: check what the upload job packed")
    verdict(problems)


def test_offsite_archive_holds_no_hostile_member(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                                 offsite_section: OffsiteSection, offsite_record: ScanRecord,
                                                 evidence) -> None:
    scan = _upstream(offsite_listing, offsite_scan, offsite_section, HOSTILE)
    if offsite_record.path is not None:
        for r in offsite_record.readings:
            evidence("archive read", f"downloaded and read this run ({r.why})" if r.read else
                     f"verdict from the scan record of {_hhmm(r.scanned_at)} (unchanged on the remote: same size, "
                     f"time and hash; read again every {offsite_record.rescan_days} days)")
        if offsite_record.problem:
            evidence("scan record", offsite_record.problem)
    evidence("members", f"{scan.members} in {scan.archive.name}, {scan.links_inside} link(s) staying inside")
    problems = []
    if scan.hostile:
        problems.append(
            f"offsite archive {scan.archive.path}: FAILED ({len(scan.hostile)} hostile member(s), not followed: "
            f"{'; '.join(scan.hostile[:5])}); fix: rebuild the archive with relative paths and no links leaving "
            "it, and find out who wrote these")
    read = _read_fault(scan)
    if read:  # the members after the break were never seen: not judged is not clean
        problems.append(f"{read[0]}; fix: {read[1]}")
    verdict(problems)


def test_offsite_archive_contains_the_pg_dump(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                              offsite_section: OffsiteSection, evidence) -> None:
    o = offsite_section
    scan = _upstream(offsite_listing, offsite_scan, o, CONTAINS)
    fault = _member_fault(scan, o)
    if fault:
        _fail(fault)
    evidence("PG member", f"{scan.matches[0]} ({human_bytes(scan.member_size or 0)})")
    written = scan.member_mtime
    if not written:
        evidence("PG member written", "no time in the tar header (age not judged)")
        return
    a = scan.archive
    lag_h = (a.mtime - written) / 3600
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(written))
    evidence("PG member written", f"{when}, {lag_h:.1f} h before the archive")
    # Judged when the archive was packed: an upload that copies the 02:00 dump at 20:00 is fine;
    # one that packs an older dump than the night's is not. The archive's own age is the first check's.
    require(lag_h <= o.max_age_hours, (
        f"offsite PG dump age: FAILED ({scan.matches[0]} in {a.name} was written {when}, {lag_h:.1f} h before the "
        f"archive vs {o.max_age_hours:g} h); fix: the upload job packed an old dump: make it pack the dump the "
        "nightly job just wrote, then re-upload"))


def test_offsite_pg_dump_is_complete(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                     offsite_section: OffsiteSection, evidence) -> None:
    scan = _upstream(offsite_listing, offsite_scan, offsite_section, COMPLETE)
    g = scan.gzip
    assert g is not None
    footer = "found" if g.footer_found else "missing"
    evidence("PG member payload", f"{g.payload_bytes} B from {g.compressed_bytes} B gzip, "
                                  f"{'valid' if g.valid else g.error}, footer {footer}")
    fault = _complete_fault(scan)
    if fault:
        why = fault[0].split(": FAILED (", 1)[-1].removesuffix(")")
        evidence.in_short(f"the PG dump in {scan.archive.name}: {why}", [scan.archive.name])
        _fail(fault)


def _same_night(dumps: list[DumpFile], when: float, member_time: bool, boundary: str) -> tuple[DumpFile | None, str]:
    """The local dump the archive should hold, and the rule used to find it.

    A member's tar mtime is the local file's own mtime: the dump checks' night rule applies. An
    archive's own time (archives that re-dumped) is when the upload ran, maybe hours after the dump:
    there the nearest dump within 24 h is the match."""
    if member_time:
        rule = night_rule(boundary, [d.mtime for d in dumps])
        return nearest_same_night(rule, dumps, when), (
            f"of the night of {rule.night_of(when)} ({rule.describe()}) of the member written {_hhmm(when)}")
    return nearest_to_upload(dumps, when), f"within {UPLOAD_WINDOW_S // 3600} h of {_hhmm(when)}"


def _hhmm(when: float) -> str:
    return time.strftime('%Y-%m-%d %H:%M', time.localtime(when))


RACE_WINDOW_S = 3 * 3600  # a dump finished this soon after the archive was packed was running meanwhile


def _nights_behind(dumps: list[DumpFile], member_written: float, packed: float, boundary: str,
                   evidence: Evidence) -> str:
    """Why the member is an older night's dump than the archive's own night ('' when it is not).

    The archive's night is the night (by the dump checks' rule) it was packed in; the newest local dump
    of that night that the dump checks did not find bad is what it should hold. An upload that ran
    before that night's dump finished packs the night before, every night, and matches it perfectly."""
    rule = night_rule(boundary, [d.mtime for d in dumps])
    night, member_night = rule.night_of(packed), rule.night_of(member_written)
    evidence("nights", f"archive packed {_hhmm(packed)}, in the night of {night}; member of the night of "
                       f"{member_night} ({rule.describe()})")
    if member_night >= night:
        return ""
    # Only a dump that was done, or still running, when the archive was packed: an evening upload that
    # ships the morning's dump is not behind because the next morning's dump exists by the time we look.
    due = [d for d in dumps if rule.night_of(d.mtime) == night and d.mtime <= packed + RACE_WINDOW_S
           and evidence.upstream(dump_key(d.path)) != FAILED]
    if not due:
        return ""  # that night has no good local dump: the dump checks say so
    newest = max(due, key=lambda d: d.mtime)
    gap = (night - member_night).days
    return (f"the member is the dump of the night of {member_night}, written {_hhmm(member_written)}, but the "
            f"archive was packed {_hhmm(packed)}, in the night of {night}, whose dump {shown_name(newest.path)} "
            f"(written {_hhmm(newest.mtime)}) it does not hold: the offsite copy is "
            f"{'one night' if gap == 1 else f'{gap} nights'} behind")


def test_offsite_pg_dump_matches_the_local_dump(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                                offsite_section: OffsiteSection,
                                                backup_dir_facts: BackupDirFacts, target: Target,
                                                evidence) -> None:
    o = offsite_section
    scan = _upstream(offsite_listing, offsite_scan, o, "matches")
    a = scan.archive
    # The member's tar mtime is the local file's mtime when the archive copied it; the archive's own
    # time is the fallback for archives that re-dumped.
    when = scan.member_mtime or a.mtime
    local, rule = _same_night(backup_dir_facts.dumps, when, bool(scan.member_mtime), target.backups.night_boundary)
    if local is None:
        evidence.require_upstream(DUMP_AGE)  # the nights after the newest local dump are the age check's
        fail(
        f"local dump of the same night: FAILED (none in {backup_dir_facts.shown} {rule}); "
        "fix: check the local dump job")
    # A local dump the dump checks found bad: the sizes differ because of it, not of the upload.
    evidence.require_upstream(dump_key(local.path), restore_key(local.path), schemas_key(local.path))
    # A member older than max_age_hours is the contains check's finding (one fault, one red line).
    if scan.member_mtime and (a.mtime - scan.member_mtime) / 3600 <= o.max_age_hours:
        behind = _nights_behind(backup_dir_facts.dumps, scan.member_mtime, a.mtime, target.backups.night_boundary,
                                evidence)
        require(not behind, (
            f"offsite PG dump night: FAILED ({scan.matches[0]} in {a.name}: {behind}); fix: schedule the upload "
            "after the dump job, or make it wait on the dump's lock (run both under `flock` on the same lock "
            "file)"))
    size = scan.member_size or 0
    diff = abs(size - local.size) / max(local.size, 1)
    shown = shown_name(local.path)  # a local name need not be UTF-8
    evidence("sizes", f"offsite {scan.matches[0]} {size} B vs local {shown} {local.size} B "
             f"({diff:.1%}, tolerance {o.size_tolerance:.0%})")
    require(diff <= o.size_tolerance, (
        f"offsite PG dump size: FAILED ({size} B vs local {shown} {local.size} B, {diff:.1%} off vs "
        f"{o.size_tolerance:.0%}); fix: compare the two dumps, the upload packed a different or broken file"))
