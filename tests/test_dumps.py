"""Self-tests of the dump-artifact checks on real `pg_dump | gzip` files, each fault injected for real."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.dumps import inventory as dumps
from pgbackup_verify.facts.dumps.gzipscan import FOOTER, scan_file, scan_stream

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_dumps.py"
ALL = 9


def newest(d: Path) -> Path:
    return max(d.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)


def oldest_first(d: Path) -> list[Path]:
    return sorted(d.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)


def replace_newest(d: Path, data: bytes) -> Path:
    """Overwrite the newest dump in place, keeping its name and mtime (the night it stands for)."""
    p = newest(d)
    st = p.stat()
    p.write_bytes(data)
    os.utime(p, (st.st_atime, st.st_mtime))
    return p


def add_newest(d: Path, data: bytes, name: str = "directus_9999-01-01_0200.sql.gz") -> Path:
    p = d / name
    p.write_bytes(data)  # mtime now: newer than every nightly file
    return p


def payload(p: Path) -> bytes:
    return gzip.decompress(p.read_bytes())


def set_key(target_file: Path, **keys: object) -> Path:
    """Change keys of the written target file (TOML does not allow redefining them by appending)."""
    text = target_file.read_text()
    for k, v in keys.items():
        value = f'"{v}"' if isinstance(v, str) else repr(v)
        text, n = re.subn(rf"^{k} = .*$", f"{k} = {value}", text, flags=re.M)
        assert n == 1, k
    target_file.write_text(text)
    return target_file


# --- the checks, end to end: every damaged directory is one target of ONE run -----------------
#
# Each case below gets its own copy of the healthy week (or its own directory), damaged for real,
# and its own target file named after the case; one `pytest --target ...` run checks them all and
# each test reads its own target's checks from the run's JSON report. Where a case used to run
# only some checks (`-k`), the same checks are selected by name here.


def copy_week(healthy: Path, d: Path) -> Path:
    shutil.copytree(healthy, d)  # copy2: mtimes kept
    return d


@dataclass(repr=False)
class Week:
    run: ChecksRun
    facts: dict[str, dict]

    def __getitem__(self, case: str) -> TargetResult:
        return self.run[case]


def _cases(root: Path, healthy: Path, seed_cluster: ThrowawayCluster,
           custom: dict[str, Path]) -> dict[str, tuple[Path, dict]]:
    """case -> (backup dir, facts the test needs); each damage is done here, for real."""
    cases: dict[str, tuple[Path, dict]] = {"healthy": (healthy, {})}

    # The seed's night: pg_dump fails, `| gzip` still writes a valid 20-byte empty stream.
    d = copy_week(healthy, root / "seed-night")
    p = d / "directus_9999-01-01_0200.sql.gz"
    rc = demo.dump_to(seed_cluster, p, role="no_such_role")  # the real pg_dump, really failing
    cases["seed-night"] = (d, {"p": p, "rc": rc, "size": p.stat().st_size,
                               "gzip_t": subprocess.run(["gzip", "-t", str(p)]).returncode})

    d = copy_week(healthy, root / "old")
    for f in d.iterdir():
        st = f.stat()
        os.utime(f, (st.st_atime, st.st_mtime - 3 * 86400))
    cases["old"] = (d, {})

    d = root / "nothing"
    d.mkdir()
    cases["no-dump"] = (d, {})

    d = copy_week(healthy, root / "truncated")
    sql = payload(newest(d))
    p = replace_newest(d, gzip.compress(sql[: len(sql) // 2]))
    cases["truncated"] = (d, {"p": p, "gzip_t": subprocess.run(["gzip", "-t", str(p)]).returncode})

    for damage in ("cut-end", "flip-crc"):
        d = copy_week(healthy, root / damage)
        raw = bytearray(newest(d).read_bytes())
        if damage == "cut-end":
            raw = raw[:-100]
        else:
            raw[-8] ^= 0xFF
        p = replace_newest(d, bytes(raw))
        cases[damage] = (d, {"p": p, "gzip_t": subprocess.run(["gzip", "-t", str(p)], capture_output=True).returncode})

    d = copy_week(healthy, root / "not-gzip")
    cases["not-gzip"] = (d, {"p": replace_newest(d, payload(newest(d)))})  # plain SQL under a .sql.gz name

    d = copy_week(healthy, root / "multi-member")
    sql = payload(newest(d))
    cut = sql.index(b"\nCOPY ") + 1
    replace_newest(d, gzip.compress(sql[:cut]) + gzip.compress(sql[cut:]))
    cases["multi-member"] = (d, {})

    d = copy_week(healthy, root / "shrink")
    sql = payload(newest(d))
    first_copy, footer = sql.index(b"\nCOPY "), sql.rindex(b"\n--\n-- PostgreSQL database dump complete")
    p = replace_newest(d, gzip.compress(sql[:first_copy] + sql[footer:]))  # a complete but empty dump
    cases["shrink"] = (d, {"p": p, "prev": oldest_first(d)[-2].name})

    d = copy_week(healthy, root / "missing-night")
    gone = oldest_first(d)[-3]
    night = time.strftime("%Y-%m-%d", time.localtime(gone.stat().st_mtime))
    gone.unlink()
    cases["missing-night"] = (d, {"night": night})

    d = copy_week(healthy, root / "bad-dump")
    victim = oldest_first(d)[2]
    st = victim.stat()
    victim.write_bytes(gzip.compress(payload(victim)[:4000]))
    os.utime(victim, (st.st_atime, st.st_mtime))
    cases["bad-dump"] = (d, {"victim": victim})

    d = copy_week(healthy, root / "too-few")
    for f in oldest_first(d)[:2]:
        f.unlink()
    cases["too-few"] = (d, {})

    d = copy_week(healthy, root / "stray")
    (d / "directus_2026-04-26_0200.sql.raw").write_bytes(b"partial")
    (d / "backup.lock").touch()
    tiny = d / "directus_2020-01-01_0200.sql.gz"
    tiny.write_bytes(gzip.compress(b"--\n"))
    os.utime(tiny, (0, time.time() - 400 * 86400))  # old, so it is neither newest nor in the window
    cases["stray"] = (d, {"tiny": tiny})

    d = copy_week(healthy, root / "by-mtime")
    big = oldest_first(d)[-1]
    large = d / "directus_2000-01-01_0200.sql.gz"  # largest file, but written long ago
    large.write_bytes(subprocess.run(["gzip", "-1"], input=payload(big) * 3, capture_output=True,
                                     check=True).stdout)
    os.utime(large, (0, time.time() - 30 * 86400))
    cases["by-mtime"] = (d, {"large": large, "empty": add_newest(d, gzip.compress(b""))})

    for name, src, data in (("full", custom["full"], None), ("partial", custom["partial"], None),
                            ("cut", custom["full"], custom["full"].read_bytes())):
        d = root / f"custom-{name}"
        d.mkdir()
        dest = d / f"directus_{name}.dump"
        if data is None:
            shutil.copyfile(src, dest)
        else:
            dest.write_bytes(data[: len(data) * 95 // 100])
        cases[f"custom-{name}"] = (d, {"pattern": "directus_*.dump"})
    return cases


@pytest.fixture(scope="module")
def week(seed_cluster: ThrowawayCluster, healthy_backups: Path, custom_dumps: dict[str, Path],
         tmp_path_factory: pytest.TempPathFactory) -> Week:
    root = tmp_path_factory.mktemp("dump-cases")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    targets, facts = [], {}
    for name, (d, f) in _cases(root, healthy_backups, seed_cluster, custom_dumps).items():
        t = demo.write_target_file(root / f"{name}.toml", dsn, d, name=name)
        if "pattern" in f:
            set_key(t, pattern=f["pattern"])
        targets.append(t)
        facts[name] = {**f, "target": t}
    run = run_checks(root / "run", targets, [CHECKS])
    assert run.targets() == set(facts), run.stdout[-3000:]
    return Week(run, facts)


def out(week: Week, case: str) -> str:
    assert "Traceback" not in week.run.stdout, week.run.stdout
    return week[case].text


def test_healthy_week_passes_every_check(week):
    week["healthy"].assert_outcomes(passed=ALL - 1, skipped=1)
    assert week["healthy"].outcome("test_custom_format_toc_lists_expected_schemas") == "skipped"
    assert "no custom-format dump configured" in out(week, "healthy")


def test_seed_night_empty_gzip_fails_payload_and_is_named(week):
    """The seed's night: pg_dump fails, `| gzip` still writes a valid 20-byte empty stream."""
    f = week.facts["seed-night"]
    p = f["p"]
    assert f["rc"] != 0  # the real pg_dump, really failing
    assert f["size"] == 20
    assert f["gzip_t"] == 0  # what the seed's job relied on
    # The 20-byte stream IS valid gzip: only content checks catch it, and one red line says it (ownership.OWNERS):
    # the payload check owns the empty dump; header/footer, shrink and the stray it looks like are not judged,
    # naming the payload finding (this week's dated nights are all covered: test_fix_texts has the uncovered one).
    result = week["seed-night"]
    result.assert_outcomes(passed=4, failed=1, skipped=ALL - 5)
    assert result.failed() == {"test_latest_dump_payload_reaches_minimum"}
    assert {c["name"] for c in result.checks if c["kind"] == "not judged"} == {
        "test_latest_dump_has_pg_dump_header_and_footer", "test_payload_did_not_shrink_beyond_allowed_ratio",
        "test_no_stray_partial_artifacts"}
    text = out(week, "seed-night")
    finding = f"latest dump payload: FAILED ({p.name}: 0 bytes decompressed from gzip, 20 bytes on disk, minimum 10000)"
    assert f"{finding}; fix: check pg_dump's stderr in the backup job log" in text
    assert all(c["message"] == f"not judged: {finding}" for c in result.checks if c["kind"] == "not judged")


def test_old_newest_dump_fails_age(week):
    week["old"].assert_outcomes("younger_than", failed=1)
    assert re.search(r"latest dump age: FAILED \(directus_\S+\.sql\.gz: 7\d\.\d h old vs limit 26 h\); "
                     r"fix: the nightly backup did not run", out(week, "old"))


def test_no_dump_at_all_fails_named(week):
    # One red line: "no dump" is the age check's; the payload check is not judged.
    week["no-dump"].assert_outcomes("younger_than", "payload_reaches", failed=1, skipped=1)
    empty_dir = week.facts["no-dump"]["target"].parent / "nothing"
    assert f"latest dump: FAILED (no file matching 'directus_*.sql.gz' in {empty_dir})" in out(week, "no-dump")


def test_truncated_dump_passes_gzip_t_but_fails_footer(week):
    f = week.facts["truncated"]
    assert f["gzip_t"] == 0  # what the seed's job relied on
    week["truncated"].assert_outcomes("gzip_stream", "header_and_footer", passed=1, failed=1)
    assert (f"latest dump header/footer: FAILED ({f['p'].name}: no '{FOOTER}' line in the last 4096 bytes"
            in out(week, "truncated"))


@pytest.mark.parametrize("damage", ["cut-end", "flip-crc"])
def test_corrupt_gzip_fails_stream_check(week, damage):
    f = week.facts[damage]
    assert f["gzip_t"] != 0
    week[damage].assert_outcomes("gzip_stream", failed=1)
    why = "gzip stream ends early at byte" if damage == "cut-end" else "CRC check failed"
    assert f"latest dump gzip stream: FAILED ({f['p'].name}: " in out(week, damage)
    assert why in out(week, damage)


def test_not_gzip_at_all_is_a_clear_failure(week):
    p = week.facts["not-gzip"]["p"]
    # Age still fine; the gzip check owns it, payload and header/footer are not judged.
    week["not-gzip"].assert_outcomes("latest_dump", passed=1, failed=1, skipped=2)
    assert (f"latest dump gzip stream: FAILED ({p.name}: not a compressed file: plain SQL text); "
            "fix: the backup job did not write compressed data") in out(week, "not-gzip")


def test_multi_member_gzip_passes(week):
    week["multi-member"].assert_outcomes(passed=ALL - 1, skipped=1)


def test_shrink_beyond_ratio_fails(week):
    f = week.facts["shrink"]
    week["shrink"].assert_outcomes("shrink", "header_and_footer", "payload_reaches", passed=2, failed=1)
    assert re.search(rf"payload shrink: FAILED \({re.escape(f['p'].name)}: \d+ bytes vs previous good "
                     rf"{re.escape(f['prev'])}: \d+ bytes, shrank \d+\.\d%, allowed 20%\)", out(week, "shrink"))


def test_missing_night_fails_coverage(week):
    night = week.facts["missing-night"]["night"]
    week["missing-night"].assert_outcomes("no_night_missing", failed=1)
    assert f"retention coverage: FAILED (1 of 7 nights without a good dump: {night} (no dump)" in out(
        week, "missing-night")


def test_bad_dump_does_not_cover_its_night(week):
    victim = week.facts["bad-dump"]["victim"]
    # One red line: the bad night is retention's finding; the good dumps kept (6 of 7 because of it) are not judged.
    week["bad-dump"].assert_outcomes("no_night_missing", "enough_good", failed=1, skipped=1)
    assert f"{victim.name} (payload 4000 bytes < minimum 10000; no '{FOOTER}'" in out(week, "bad-dump")
    [kept] = week["bad-dump"].select("enough_good")
    assert kept["message"].startswith("not judged: retention coverage: FAILED (1 of 7 nights"), kept["message"]


def test_too_few_good_dumps_fails(week):
    week["too-few"].assert_outcomes("enough_good", failed=1)
    assert "good dumps kept: FAILED (5 good of 5 dump files vs minimum 7); fix: check that the rotation" in out(
        week, "too-few")


def test_stray_partial_artifacts_are_flagged(week):
    tiny = week.facts["stray"]["tiny"]
    week["stray"].assert_outcomes(passed=ALL - 2, failed=1, skipped=1)
    text = out(week, "stray")
    assert "stray partial artifacts: FAILED (3 in" in text
    for piece in ("backup.lock (zero-byte file, 0 bytes)", "directus_2026-04-26_0200.sql.raw (leftover *.raw file",
                  f"{tiny.name} (dump file smaller than 1024 bytes"):
        assert piece in text


def test_newest_is_chosen_by_mtime_not_by_size(week):
    f = week.facts["by-mtime"]
    inv = dumps.take_inventory(load_target(f["target"]).backups)
    assert inv.largest.path == f["large"] and inv.newest.path == f["empty"]
    week["by-mtime"].assert_outcomes("payload_reaches", "younger_than", passed=1, failed=1)
    assert f"latest dump payload: FAILED ({f['empty'].name}: 0 bytes decompressed" in out(week, "by-mtime")


# --- custom format (pg_dump -Fc) -------------------------------------------------------------


def pg_dump_custom(cluster: ThrowawayCluster, path: Path, *extra: str) -> Path:
    env = {**cluster.env(), "PGUSER": demo.DUMP_ROLE}
    subprocess.run(["pg_dump", "-Fc", "--no-owner", "-d", demo.DBNAME, "-f", str(path), *extra], env=env,
                   check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def custom_dumps(seed_cluster, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("custom")
    full = pg_dump_custom(seed_cluster, d / "full.dump")
    partial = pg_dump_custom(seed_cluster, d / "partial.dump", "-n", "public")
    return {"full": full, "partial": partial}


def test_custom_format_with_every_schema_passes(week):
    week["custom-full"].assert_outcomes("custom_format", "latest_dump", passed=5)


def test_custom_format_missing_schema_fails_named(week):
    week["custom-partial"].assert_outcomes("custom_format", failed=1)
    assert ("custom-format TOC: FAILED (directus_partial.dump: schema(s) cutter_governance, sandbox_tac missing "
            "from the TOC") in out(week, "custom-partial")


def test_truncated_custom_format_fails_the_full_read(week):
    """pg_restore --list reads only the TOC at the start: a cut tail needs the full read to show."""
    # One red line: the cut archive is the gzip/archive check's; the TOC check of it is not judged.
    week["custom-cut"].assert_outcomes("custom_format", "gzip_stream", failed=1, skipped=1)
    assert ("latest dump archive: FAILED (directus_cut.dump: pg_restore failed reading the archive: "
            "pg_restore: error: could not read from input file: end of file)") in out(week, "custom-cut")


# --- the scanner on its own ---------------------------------------------------------------------


def test_real_dump_footer_is_found_before_unrestrict(healthy_backups):
    p = newest(healthy_backups)
    lines = [ln for ln in payload(p).decode().splitlines() if ln.strip()]
    scan = scan_file(p)
    assert scan.valid and scan.header_found and scan.footer_found, scan
    if lines[-1].startswith("\\unrestrict"):  # pg_dump 15.14+
        assert FOOTER in lines[-3:]
    assert scan.payload_bytes == len(payload(p))
    assert scan.compressed_bytes == p.stat().st_size


def test_plain_sql_dump_is_scanned_by_its_bytes(healthy_backups, tmp_path):
    sql = tmp_path / "directus.sql"
    sql.write_bytes(payload(newest(healthy_backups)))
    scan = dumps.scan_dump(sql)
    assert (scan.format, scan.valid, scan.header_found, scan.footer_found) == ("plain", True, True, True)
    assert scan.payload_bytes == sql.stat().st_size


def test_scanner_reads_a_pipe(healthy_backups):
    """The drill and the offsite reader hand over a stream, not a path."""
    p = newest(healthy_backups)
    with subprocess.Popen(["cat", str(p)], stdout=subprocess.PIPE) as proc:
        scan = scan_stream(proc.stdout, f"cat {p.name}")
    assert scan.valid and scan.footer_found and scan.payload_bytes == len(payload(p))
    assert scan.path == f"cat {p.name}"


def test_each_file_is_scanned_once_per_session(healthy_backups, write_target):
    target = load_target(write_target(healthy_backups))
    inv = dumps.take_inventory(target.backups)
    cache = dumps.ScanCache()
    dumps.coverage(inv, cache, 7, 10000)
    dumps.good_dumps(inv, cache, 10000, 7)
    dumps.previous_good(inv, cache, 10000)
    assert len(cache.scans) == 7 and cache.hits == 7 + 1
