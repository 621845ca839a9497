"""The offsite copy: last night's archive is on the remote, whole, and carries a complete PG dump of the
same size as the local one. Read through rclone as a stream; hostile tar members are never followed."""

from __future__ import annotations

import time

import pytest

from pgbackup_verify.config import OffsiteSection, Target
from pgbackup_verify.evidence import fail, human_bytes, require, verdict
from pgbackup_verify.facts.dumps.inventory import DumpFile
from pgbackup_verify.facts.host import BackupDirFacts
from pgbackup_verify.facts.offsite import Archive, ArchiveScan, Listing

pytestmark = pytest.mark.offsite


SAME_NIGHT_S = 24 * 3600


def _newest(listing: Listing) -> Archive:
    if listing.error:
        fail(f"offsite listing: FAILED ({listing.error}); fix: check [offsite].remote and the rclone config")
    if listing.newest is None:
        fail(f"offsite archive: FAILED (no '{listing.archive_glob}' in {listing.remote}); fix: check the "
                    "nightly upload job and [offsite].archive_glob")
    return listing.newest


def _scanned(scan: ArchiveScan | None, o: OffsiteSection) -> ArchiveScan:
    assert scan is not None  # only None without archive, and _newest() failed first then
    require(not scan.error, f"offsite archive {scan.archive.path}: FAILED ({scan.error}); fix: re-run the upload "
                            "job, the archive is damaged")
    require(bool(scan.matches), f"offsite archive {scan.archive.path}: FAILED (no member matching '{o.member}' among "
                          f"{scan.members}); fix: add the PG dump to the archive job or fix [offsite].member")
    return scan


def test_newest_offsite_archive_is_fresh_and_big_enough(offsite_listing: Listing, offsite_section: OffsiteSection,
                                                        evidence) -> None:
    a = _newest(offsite_listing)
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
                                                 evidence) -> None:
    _newest(offsite_listing)
    assert offsite_scan is not None
    evidence("members", f"{offsite_scan.members} in {offsite_scan.archive.name}")
    require(not offsite_scan.hostile, (
        f"offsite archive {offsite_scan.archive.path}: FAILED ({len(offsite_scan.hostile)} hostile member(s), not "
        f"followed: {'; '.join(offsite_scan.hostile[:5])}); fix: rebuild the archive with relative paths and no "
        "links, and find out who wrote these"))


def test_offsite_archive_contains_the_pg_dump(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                              offsite_section: OffsiteSection, evidence) -> None:
    _newest(offsite_listing)
    scan = _scanned(offsite_scan, offsite_section)
    evidence("PG member", f"{scan.matches[0]} ({human_bytes(scan.member_size or 0)})")


def test_offsite_pg_dump_is_complete(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                     offsite_section: OffsiteSection, evidence) -> None:
    _newest(offsite_listing)
    scan = _scanned(offsite_scan, offsite_section)
    g = scan.gzip
    assert g is not None
    where = f"{scan.archive.name} member {scan.matches[0]}"
    footer = "found" if g.footer_found else "missing"
    evidence("PG member payload", f"{g.payload_bytes} B from {g.compressed_bytes} B gzip, "
                                  f"{'valid' if g.valid else g.error}, footer {footer}")
    require(g.valid, f"offsite PG dump {where}: FAILED ({g.error}); fix: re-run the upload job from a good dump")
    require(g.payload_bytes > 0, f"offsite PG dump {where}: FAILED (empty payload, {g.compressed_bytes} B gzip of "
                                 "nothing: pg_dump failed that night); fix: fix the dump job, then re-upload")
    require(g.footer_found, f"offsite PG dump {where}: FAILED (no '-- PostgreSQL database dump complete' footer: "
                      "truncated dump); fix: fix the dump job, then re-upload")


def _same_night(dumps: list[DumpFile], when: float) -> DumpFile | None:
    near = [d for d in dumps if abs(d.mtime - when) <= SAME_NIGHT_S]
    return min(near, key=lambda d: abs(d.mtime - when)) if near else None


def test_offsite_pg_dump_matches_the_local_dump(offsite_listing: Listing, offsite_scan: ArchiveScan | None,
                                                offsite_section: OffsiteSection,
                                                backup_dir_facts: BackupDirFacts, target: Target, evidence) -> None:
    a = _newest(offsite_listing)
    scan = _scanned(offsite_scan, offsite_section)
    o = offsite_section
    # The member's tar mtime is the local file's mtime when the archive copied it; the archive's own
    # time is the fallback for archives that re-dumped.
    when = scan.member_mtime or a.mtime
    local = _same_night(backup_dir_facts.dumps, when)
    if local is None:
        fail(
        f"local dump of the same night: FAILED (none in {target.backups.directory} within 24 h of "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(when))}); fix: check the local dump job")
    size = scan.member_size or 0
    diff = abs(size - local.size) / max(local.size, 1)
    evidence("sizes", f"offsite {scan.matches[0]} {size} B vs local {local.path} {local.size} B "
             f"({diff:.1%}, tolerance {o.size_tolerance:.0%})")
    require(diff <= o.size_tolerance, (
        f"offsite PG dump size: FAILED ({size} B vs local {local.path} {local.size} B, {diff:.1%} off vs "
        f"{o.size_tolerance:.0%}); fix: compare the two dumps, the upload packed a different or broken file"))
