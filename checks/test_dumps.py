"""Dump-artifact checks: is last night's dump really there, whole and big enough?

The seed incident: pg_dump failed every night, gzip wrote a 20-byte empty stream that
`gzip -t` accepts, and nobody noticed for ~41 hours. Each check below reads the facts
the library measured (one scan per file per run) and fails naming the file and the fix.
"""

from __future__ import annotations

import os
import pwd
import shlex
import time
from datetime import date, timedelta

import pytest

from pgbackup_verify.config import Target
from pgbackup_verify.evidence import Evidence, fail, human_bytes, require
from pgbackup_verify.facts.dumps.compression import named_compression
from pgbackup_verify.facts.dumps.gzipscan import ARCHIVE_FORMATS, FOOTER, HEADER, TAIL_BYTES, DumpScan
from pgbackup_verify.facts.dumps.inventory import UNJUDGED, Coverage, DumpFile, Inventory, LatestDump, ScanCache
from pgbackup_verify.facts.dumps.plainscan import display_name
from pgbackup_verify.facts.history import RunFacts
from pgbackup_verify.ownership import DUMP_AGE, NIGHTS, dump_key, read_key

pytestmark = pytest.mark.dumps

JOB_LOG_FIX = ("check pg_dump's stderr in the backup job log (a failing pg_dump piped into gzip still "
               "leaves a valid empty .gz; run the job with `set -o pipefail`), fix the cause, re-run the backup")


IN_PROGRESS_FIX = ("wait for the backup job to finish and run the checks again; if it has been running for "
                   "hours, look for a hung pg_dump (ps -ef, pg_stat_activity: waiting for a lock?)")


def _latest(latest: LatestDump | None, target: Target, evidence: Evidence, inv: Inventory,
            *, read: bool = True) -> LatestDump:
    """The newest complete dump, or the failure saying why there is none; `read`: the check needs its bytes."""
    b = target.backups
    busy = "; ".join(p.describe() for p in (latest.in_progress if latest else inv.in_progress))
    if busy:
        evidence("in progress (not judged)", busy)
    if latest is None:
        evidence.require_upstream(DUMP_AGE)  # "no dump" is the age check's finding (ownership.OWNERS)
        if inv.in_progress:
            fail(f"latest dump: FAILED (no complete file matching '{b.pattern}' in {b.directory}: only "
                 f"{busy}); fix: {IN_PROGRESS_FIX}")
        fail(f"latest dump: FAILED (no file matching '{b.pattern}' in {b.directory}); "
                    "fix: check [backups].directory and .pattern, and that the nightly backup job runs "
                    "(crontab -l, systemctl list-timers)")
    s = latest.scan
    evidence("file", f"{latest.file.path} ({latest.file.size} bytes on disk, {human_bytes(latest.file.size)})")
    evidence("written", time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(latest.file.mtime)))
    evidence("age", f"{latest.age_hours:.1f} h")
    if read:
        # One fault, one red line: the first content check that finds this file bad owns it (payload,
        # gzip stream, header/footer, shrink: ownership.OWNERS); the later ones, the drill of it and
        # the offsite match are "not judged: <its finding>".
        evidence.require_upstream(dump_key(latest.file.path))
        evidence.cause(dump_key(latest.file.path))
    if read and s.format == "unreadable":
        evidence.require_upstream(read_key(latest.file.path))  # one finding, not one per content check
        evidence.cause(read_key(latest.file.path))
        fail(f"latest dump: FAILED ({latest.file.name}: {s.error} as user {_user()}, mode "
             f"{latest.file.mode:04o}); fix: let the user running the checks read the dumps (e.g. chgrp it "
             "to a group of that user and make the job create them with mode 0640), or run the checks as "
             "the backup job's user")
    evidence("payload", f"{s.payload_bytes} bytes decompressed ({human_bytes(s.payload_bytes)}), {s.format}")
    evidence("header line", repr(s.header_line) if s.header_found else "not pg_dump's header (not shown)")
    if s.dumped_by:
        evidence("dumped by pg_dump", s.dumped_by)
    return latest


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def test_latest_dump_is_younger_than_max_age(latest_dump: LatestDump | None, target: Target,
                                             evidence: Evidence, backup_inventory: Inventory,
                                             run_facts: RunFacts) -> None:
    evidence.cause(DUMP_AGE)  # the nights after the newest dump are this check's finding, not retention's
    latest = _latest(latest_dump, target, evidence, backup_inventory, read=False)
    run_facts["latest dump"] = (f"{latest.file.name} ({latest.age_hours:.1f} h old, "
                                f"{human_bytes(latest.scan.payload_bytes)} payload)")
    limit = target.backups.max_age_hours
    largest = backup_inventory.largest
    if largest and largest.path != latest.file.path:
        evidence("largest file (not the newest)", largest.name)
    require(latest.age_hours <= limit, (
        f"latest dump age: FAILED ({latest.file.name}: {latest.age_hours:.1f} h old vs limit {limit:g} h); "
        "fix: the nightly backup did not run or writes elsewhere: check the cron job/timer "
        "(crontab -l, systemctl list-timers) and its log, then run the backup once by hand"))


def test_latest_dump_gzip_stream_is_valid(latest_dump: LatestDump | None, target: Target,
                                          evidence: Evidence, backup_inventory: Inventory) -> None:
    latest = _latest(latest_dump, target, evidence, backup_inventory)
    s = latest.scan
    evidence("read", f"{s.compressed_bytes} bytes in {s.seconds:.2f} s")
    if s.format in ARCHIVE_FORMATS:
        what = "archive"
    else:  # the format its bytes say, else the one its name promises
        what = f"{s.format if s.compressed else named_compression(latest.file.name) or 'compressed'} stream"
    if s.compressed or s.format in ARCHIVE_FORMATS:
        fix = ("the file is damaged or was cut while being written: check free space (df -h) and the job log "
               "for a killed pg_dump/gzip, make the job write to a temporary name and rename it on success, "
               "then re-run the backup")
    else:
        fix = ("the backup job did not write compressed data under this name: make it pipe pg_dump through "
               "gzip (or zstd, xz, lz4, bzip2), or set [backups].pattern to the files it really writes")
    if not s.valid:
        evidence.in_short(f"{latest.file.name} is cut or damaged ({s.error})", [latest.file.name])
    require(s.valid, evidence.explained(f"latest dump {what}: FAILED ({latest.file.name}: {s.error}); fix: {fix}"))


def test_latest_dump_payload_reaches_minimum(latest_dump: LatestDump | None, target: Target,
                                             evidence: Evidence, backup_inventory: Inventory) -> None:
    latest = _latest(latest_dump, target, evidence, backup_inventory)
    s, minimum = latest.scan, target.backups.min_payload_bytes
    why = "" if s.valid else f", {s.error}"
    source = f" from {s.format}" if s.compressed else ""
    if s.payload_bytes < minimum:
        evidence.in_short(f"{latest.file.name}: {human_bytes(s.payload_bytes)} of dump, minimum {human_bytes(minimum)}",
                          [latest.file.name])
    require(s.payload_bytes >= minimum, evidence.explained(
        f"latest dump payload: FAILED ({latest.file.name}: {s.payload_bytes} bytes decompressed{source}, "
        f"{latest.file.size} bytes on disk, minimum {minimum}{why}); fix: {JOB_LOG_FIX}"))


def test_latest_dump_has_pg_dump_header_and_footer(latest_dump: LatestDump | None, target: Target,
                                                   evidence: Evidence, backup_inventory: Inventory) -> None:
    latest = _latest(latest_dump, target, evidence, backup_inventory)
    s = latest.scan
    evidence("footer found", str(s.footer_found))
    problems = []
    if not s.header_found:
        problems.append(f"first line not shown, it is not pg_dump's header vs expected {HEADER!r}")
    if not s.footer_found:
        problems.append(f"no {FOOTER!r} line in the last {TAIL_BYTES} bytes of {s.payload_bytes} payload bytes")
    if problems:
        missing = "no header" if not s.header_found else "no footer"
        evidence.in_short(f"{latest.file.name} is not a complete pg_dump ({missing})", [latest.file.name])
    require(not problems, evidence.explained(
        f"latest dump header/footer: FAILED ({latest.file.name}: {'; '.join(problems)}); fix: pg_dump did not "
        "write a complete dump (stopped early, killed, out of disk or another program wrote the file): "
        + JOB_LOG_FIX))


def test_payload_did_not_shrink_beyond_allowed_ratio(latest_dump: LatestDump | None, target: Target,
                                                     evidence: Evidence, backup_inventory: Inventory,
                                                     previous_good_dump: tuple[DumpFile, DumpScan] | None) -> None:
    latest = _latest(latest_dump, target, evidence, backup_inventory)
    if previous_good_dump is None:
        pytest.skip(f"no good dump older than {latest.file.name} to compare with "
                    "(test_enough_good_dumps_kept reports on that)")
    prev, prev_scan = previous_good_dump
    now, before = latest.scan.payload_bytes, prev_scan.payload_bytes
    shrink = 1 - now / before
    allowed = target.backups.max_shrink_ratio
    evidence("previous good dump", f"{prev.name}: {before} bytes payload")
    evidence("change", f"{-shrink:+.1%} (allowed shrink {allowed:.0%})")
    if shrink > allowed:
        evidence.in_short(f"{latest.file.name} shrank {shrink:.0%} since {prev.name} (allowed {allowed:.0%})",
                          [latest.file.name])
    require(shrink <= allowed, evidence.explained(
        f"payload shrink: FAILED ({latest.file.name}: {now} bytes vs previous good {prev.name}: {before} bytes, "
        f"shrank {shrink:.1%}, allowed {allowed:.0%}); fix: find what is missing (compare "
        f"`zcat FILE | grep -E '^(CREATE TABLE|COPY)'` of both dumps); if data was removed on purpose, "
        "raise [backups].max_shrink_ratio for one night"))


def _readings(cache: ScanCache, evidence: Evidence) -> None:
    """Which dumps this run read in full, and which verdicts came from the scan record (and from when)."""
    record = cache.record
    if record is None or record.path is None:
        return
    evidence("dumps read this run", ", ".join(r.describe() for r in record.readings if r.read) or "none")
    evidence("dumps from the scan record", ", ".join(r.describe() for r in record.readings if not r.read) or "none")
    if record.problem:
        evidence("scan record", record.problem)


def _reported_nights(coverage: Coverage, latest: LatestDump | None, evidence: Evidence, *,
                     since_newest: bool = False, bad_nights: bool = False) -> tuple[set[date], str]:
    """Nights without a good dump that an earlier check already owns (ownership.OWNERS), and its finding:
    the nights after the newest dump (the age check's; `since_newest`: up to tonight, in the window or not),
    the newest dump's own night (the content check's that found it bad) and, with `bad_nights`, the nights
    whose dump is bad (retention's: a failed job, not the rotation)."""
    owned: set[date] = set()
    texts = []
    newest = coverage.rule.night_of(latest.file.mtime) if latest else None
    if age := evidence.upstream_finding(DUMP_AGE):
        owned |= {n.date for n in coverage.missing if newest is None or n.date > newest}
        if since_newest and newest is not None:
            tonight = coverage.rule.night_of(time.time())
            owned |= {newest + timedelta(days=i) for i in range(1, (tonight - newest).days + 1)}
        texts.append(age)
    if latest and newest and (content := evidence.upstream_finding(dump_key(latest.file.path))):
        owned.add(newest)
        texts.append(content)
    bad = {n.date for n in coverage.missing if n.bad} - owned
    if bad_nights and bad and (nights := evidence.upstream_finding(NIGHTS)):
        owned |= bad
        texts.append(nights)
    if not since_newest:
        owned &= {n.date for n in coverage.missing}
    return owned, "; ".join(dict.fromkeys(texts)) if owned else ""


def test_no_night_missing_in_retention_window(night_coverage: Coverage, latest_dump: LatestDump | None,
                                              target: Target, evidence: Evidence,
                                              dump_scan_cache: ScanCache) -> None:
    nights = night_coverage.nights
    evidence("night rule", night_coverage.rule.describe())
    _readings(dump_scan_cache, evidence)
    for n in nights:
        evidence(f"night {n.date}", n.good or ("no good dump: " + ("; ".join(n.bad) or "no dump file")))
    owned, upstream = _reported_nights(night_coverage, latest_dump, evidence)
    missing = tuple(n for n in night_coverage.missing if n.date not in owned)
    if owned and not missing:  # only the newest nights, whose finding is already on another line
        evidence.not_judged(DUMP_AGE, upstream)
    evidence.cause(NIGHTS)  # a night whose dump is bad: a failed job; good dumps kept does not say it again
    shown = ", ".join(f"{n.date} ({'; '.join(n.bad) if n.bad else 'no dump'})" for n in missing)
    perms = (f"let the user running the checks ({_user()}) read the dumps it cannot read; then "
             if any(n.unreadable for n in missing) else "")
    require(not missing, (
        f"retention coverage: FAILED ({len(missing)} of {len(nights)} nights without a good dump: {shown}; "
        f"window {target.backups.retention_days} days); fix: {perms}read the backup job log of those nights, "
        "fix the cause and make sure the job runs every night (crontab -l, systemctl list-timers)"))


def test_enough_good_dumps_kept(good_dumps: list[DumpFile], target: Target, evidence: Evidence,
                                backup_inventory: Inventory, night_coverage: Coverage,
                                latest_dump: LatestDump | None, dump_scan_cache: ScanCache) -> None:
    minimum = target.backups.min_good_dumps
    _readings(dump_scan_cache, evidence)
    evidence("dump files", str(len(backup_inventory.dumps)))
    evidence("good dumps (newest first)", ", ".join(d.name for d in good_dumps) or "none")
    owned, upstream = _reported_nights(night_coverage, latest_dump, evidence, since_newest=True, bad_nights=True)
    if len(good_dumps) < minimum <= len(good_dumps) + len(owned):  # rotation keeps enough: the nights did not
        evidence.not_judged(DUMP_AGE, upstream)
    require(len(good_dumps) >= minimum, (
        f"good dumps kept: FAILED ({len(good_dumps)} good of {len(backup_inventory.dumps)} dump files vs "
        f"minimum {minimum}); fix: check that the rotation (e.g. `find -mtime +N -delete`) keeps at least "
        f"{minimum} nights and that past nights' backups succeeded (job log)"))


def test_no_stray_partial_artifacts(backup_inventory: Inventory, target: Target, evidence: Evidence,
                                    latest_dump: LatestDump | None) -> None:
    strays = backup_inventory.strays
    if latest_dump and (upstream := evidence.upstream_finding(dump_key(latest_dump.file.path))):
        # The newest dump, already found bad (the 20-byte empty stream): one finding, on its owner's line.
        mine = [s for s in strays if s.path != latest_dump.file.path]
        if strays and not mine:
            evidence.not_judged(dump_key(latest_dump.file.path), upstream)
        strays = tuple(mine)
    evidence("directory", f"{backup_inventory.directory} ({len(backup_inventory.dumps)} dump files)")
    if backup_inventory.in_progress:
        evidence("in progress (not strays)", "; ".join(p.describe() for p in backup_inventory.in_progress))
    shown = ", ".join(s.describe() for s in strays)
    if strays:
        evidence("strays", shown)
    fixes = []
    leftovers = [s for s in strays if s.kind != UNJUDGED]
    if leftovers:
        fixes.append("they come from interrupted or failed backup runs: read the job log of their night, then "
                     f"remove them (rm {' '.join(shlex.quote(str(s.path)) for s in leftovers[:3])}"
                     f"{' ...' if len(leftovers) > 3 else ''}); make the job write to a temporary name and "
                     "clean up on failure")
    if len(leftovers) < len(strays):
        fixes.append("entries named like dumps that cannot be judged (not regular files, symlink loops, links "
                     "out of the backup directory, names that are not UTF-8): move them out of the backup "
                     "directory or rename them, or narrow [backups].pattern so it names only the job's dump files")
    require(not strays, (
        f"stray partial artifacts: FAILED ({len(strays)} in {backup_inventory.directory}: {shown}); "
        f"fix: {'; and '.join(fixes)}"))


def test_custom_format_toc_lists_expected_schemas(custom_dump_toc: tuple | None, target: Target,
                                                  evidence: Evidence) -> None:
    if custom_dump_toc is None:
        pytest.skip(f"no custom-format dump configured ([backups].pattern '{target.backups.pattern}' "
                    "names plain SQL dumps, and the newest is not a pg_dump -Fc, -Fd or -Ft archive)")
    dump, toc = custom_dump_toc
    evidence("file", f"{dump.path} ({dump.size} bytes)")
    evidence.require_upstream(dump_key(dump.path))  # a dump an earlier content check found bad
    evidence.cause(dump_key(dump.path))  # the drill of an archive missing a schema is not judged again
    require(toc.readable, (
        f"custom-format TOC: FAILED ({dump.name}: pg_restore --list failed: {toc.error}); fix: the archive is "
        "damaged or not a pg_dump -Fc file: " + JOB_LOG_FIX))
    evidence("TOC entries", f"{toc.entries} (read from the {toc.read_by})")
    evidence("schemas in TOC", ", ".join(display_name(s) for s in toc.schemas))
    if toc.large_objects is not None:
        evidence("large objects in TOC", str(toc.large_objects))
    expected = target.backups.expected_schemas
    missing = toc.missing(expected)
    if not missing:
        return
    # The grants checks ran first (order of cause): when they found what the dump role cannot read, that
    # finding is the cause and its GRANT the fix; when they passed, a GRANT is no advice at all.
    evidence.require_upstream("grants.read")
    if evidence.upstream("grants.read") == "passed":
        why = ("the dump role can read them (the grants checks passed): check the backup job's pg_dump -n/-N "
               "options, and whether this dump is older than the schemas (then check the next dump)")
    else:
        why = ("check the backup job's pg_dump -n/-N options, whether this dump is older than the schemas, "
               "and that the dump role has USAGE on them (GRANT USAGE ON SCHEMA ... TO <dump role>)")
    shown = ", ".join(display_name(s) for s in missing)
    fail(f"custom-format TOC: FAILED ({dump.name}: schema(s) {shown} missing from the TOC of {toc.entries} "
         f"entries vs expected {', '.join(display_name(s) for s in expected)}); fix: {why}, "
         "or drop them from [backups].expected_schemas if left out on purpose")
