"""Self-tests of the dump-artifact checks on real `pg_dump | gzip` files, each fault injected for real."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
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


def run(pytester: pytest.Pytester, target_file: Path, *only: str) -> pytest.RunResult:
    args = ["--target", str(target_file), "-p", "no:cacheprovider", "--reports-dir", str(pytester.path / "r")]
    if only:
        args += ["-k", " or ".join(only)]
    return pytester.runpytest_subprocess(*args, str(CHECKS))


def out(result: pytest.RunResult) -> str:
    text = result.stdout.str()
    assert "Traceback" not in text, text
    return text


# --- the checks, end to end ---------------------------------------------------------------


def test_healthy_week_passes_every_check(pytester, healthy_backups, write_target):
    result = run(pytester, write_target(healthy_backups))
    result.assert_outcomes(passed=ALL - 1, skipped=1)  # no custom-format dump configured
    assert "no custom-format dump configured" in out(pytester.runpytest_subprocess(
        "--target", str(write_target(healthy_backups)), "-p", "no:cacheprovider", "-rs", str(CHECKS),
        "-k", "custom"))


def test_seed_night_empty_gzip_fails_payload_and_is_named(pytester, backups, write_target, seed_cluster):
    """The seed's night: pg_dump fails, `| gzip` still writes a valid 20-byte empty stream."""
    p = backups / "directus_9999-01-01_0200.sql.gz"
    assert demo.dump_to(seed_cluster, p, role="no_such_role") != 0  # the real pg_dump, really failing
    assert p.stat().st_size == 20
    assert subprocess.run(["gzip", "-t", str(p)]).returncode == 0  # what the seed's job relied on
    result = run(pytester, write_target(backups), "payload_reaches", "gzip_stream", "header_and_footer",
                 "shrink", "stray")
    result.assert_outcomes(passed=1, failed=4)  # the 20-byte stream IS valid gzip: only content checks catch it
    text = out(result)
    assert (f"latest dump payload: FAILED ({p.name}: 0 bytes decompressed, 20 bytes on disk, minimum 10000); "
            "fix: check pg_dump's stderr in the backup job log") in text
    assert "shrank 100.0%, allowed 20%" in text
    assert f"{p.name} (dump file smaller than 1024 bytes, 20 bytes)" in text


def test_old_newest_dump_fails_age(pytester, backups, write_target):
    for p in backups.iterdir():
        st = p.stat()
        os.utime(p, (st.st_atime, st.st_mtime - 3 * 86400))
    result = run(pytester, write_target(backups), "younger_than")
    result.assert_outcomes(failed=1)
    assert re.search(r"latest dump age: FAILED \(directus_\S+\.sql\.gz: 7\d\.\d h old vs limit 26 h\); "
                     r"fix: the nightly backup did not run", out(result))


def test_no_dump_at_all_fails_named(pytester, tmp_path, write_target):
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    result = run(pytester, write_target(empty_dir), "younger_than", "payload_reaches")
    result.assert_outcomes(failed=2)
    assert f"latest dump: FAILED (no file matching 'directus_*.sql.gz' in {empty_dir})" in out(result)


def test_truncated_dump_passes_gzip_t_but_fails_footer(pytester, backups, write_target):
    sql = payload(newest(backups))
    p = replace_newest(backups, gzip.compress(sql[: len(sql) // 2]))
    assert subprocess.run(["gzip", "-t", str(p)]).returncode == 0  # what the seed's job relied on
    result = run(pytester, write_target(backups), "gzip_stream", "header_and_footer")
    result.assert_outcomes(passed=1, failed=1)
    assert f"latest dump header/footer: FAILED ({p.name}: no '{FOOTER}' line in the last 4096 bytes" in out(result)


@pytest.mark.parametrize("damage", ["cut-end", "flip-crc"])
def test_corrupt_gzip_fails_stream_check(pytester, backups, write_target, damage):
    raw = bytearray(newest(backups).read_bytes())
    if damage == "cut-end":
        raw = raw[:-100]
    else:
        raw[-8] ^= 0xFF
    p = replace_newest(backups, bytes(raw))
    assert subprocess.run(["gzip", "-t", str(p)], capture_output=True).returncode != 0
    result = run(pytester, write_target(backups), "gzip_stream")
    result.assert_outcomes(failed=1)
    why = "gzip stream ends early at byte" if damage == "cut-end" else "CRC check failed"
    assert f"latest dump gzip stream: FAILED ({p.name}: " in out(result)
    assert why in out(result)


def test_not_gzip_at_all_is_a_clear_failure(pytester, backups, write_target):
    p = replace_newest(backups, payload(newest(backups)))  # plain SQL under a .sql.gz name
    result = run(pytester, write_target(backups), "latest_dump")
    result.assert_outcomes(passed=1, failed=3)  # age still fine
    assert (f"latest dump gzip stream: FAILED ({p.name}: not a gzip file: plain SQL text (starts with b'--\\n--')); "
            "fix: the backup job did not write gzip data") in out(result)


def test_multi_member_gzip_passes(pytester, backups, write_target):
    sql = payload(newest(backups))
    cut = sql.index(b"\nCOPY ") + 1
    replace_newest(backups, gzip.compress(sql[:cut]) + gzip.compress(sql[cut:]))
    result = run(pytester, write_target(backups))
    result.assert_outcomes(passed=ALL - 1, skipped=1)


def test_shrink_beyond_ratio_fails(pytester, backups, write_target):
    sql = payload(newest(backups))
    first_copy, footer = sql.index(b"\nCOPY "), sql.rindex(b"\n--\n-- PostgreSQL database dump complete")
    p = replace_newest(backups, gzip.compress(sql[:first_copy] + sql[footer:]))  # a complete but empty dump
    result = run(pytester, write_target(backups), "shrink", "header_and_footer", "payload_reaches")
    result.assert_outcomes(passed=2, failed=1)
    prev = oldest_first(backups)[-2].name
    assert re.search(rf"payload shrink: FAILED \({re.escape(p.name)}: \d+ bytes vs previous good "
                     rf"{re.escape(prev)}: \d+ bytes, shrank \d+\.\d%, allowed 20%\)", out(result))


def test_missing_night_fails_coverage(pytester, backups, write_target):
    gone = oldest_first(backups)[-3]
    night = time.strftime("%Y-%m-%d", time.localtime(gone.stat().st_mtime))
    gone.unlink()
    result = run(pytester, write_target(backups), "no_night_missing")
    result.assert_outcomes(failed=1)
    assert f"retention coverage: FAILED (1 of 7 nights without a good dump: {night} (no dump)" in out(result)


def test_bad_dump_does_not_cover_its_night(pytester, backups, write_target):
    victim = oldest_first(backups)[2]
    st = victim.stat()
    victim.write_bytes(gzip.compress(payload(victim)[:4000]))
    os.utime(victim, (st.st_atime, st.st_mtime))
    result = run(pytester, write_target(backups), "no_night_missing", "enough_good")
    result.assert_outcomes(failed=2)
    assert f"{victim.name} (payload 4000 bytes < minimum 10000; no '{FOOTER}'" in out(result)
    assert "good dumps kept: FAILED (6 good of 7 dump files vs minimum 7)" in out(result)


def test_too_few_good_dumps_fails(pytester, backups, write_target):
    for p in oldest_first(backups)[:2]:
        p.unlink()
    result = run(pytester, write_target(backups), "enough_good")
    result.assert_outcomes(failed=1)
    assert "good dumps kept: FAILED (5 good of 5 dump files vs minimum 7); fix: check that the rotation" in out(result)


def test_stray_partial_artifacts_are_flagged(pytester, backups, write_target):
    (backups / "directus_2026-04-26_0200.sql.raw").write_bytes(b"partial")
    (backups / "backup.lock").touch()
    tiny = backups / "directus_2020-01-01_0200.sql.gz"
    tiny.write_bytes(gzip.compress(b"--\n"))
    os.utime(tiny, (0, time.time() - 400 * 86400))  # old, so it is neither newest nor in the window
    result = run(pytester, write_target(backups))
    result.assert_outcomes(passed=ALL - 2, failed=1, skipped=1)
    text = out(result)
    assert "stray partial artifacts: FAILED (3 in" in text
    for piece in ("backup.lock (zero-byte file, 0 bytes)", "directus_2026-04-26_0200.sql.raw (leftover *.raw file",
                  f"{tiny.name} (dump file smaller than 1024 bytes"):
        assert piece in text


def test_newest_is_chosen_by_mtime_not_by_size(pytester, backups, write_target):
    big = oldest_first(backups)[-1]
    large = backups / "directus_2000-01-01_0200.sql.gz"  # largest file, but written long ago
    large.write_bytes(subprocess.run(["gzip", "-1"], input=payload(big) * 3, capture_output=True,
                                     check=True).stdout)
    os.utime(large, (0, time.time() - 30 * 86400))
    empty = add_newest(backups, gzip.compress(b""))
    inv = dumps.take_inventory(load_target(write_target(backups)).backups)
    assert inv.largest.path == large and inv.newest.path == empty
    result = run(pytester, write_target(backups), "payload_reaches", "younger_than")
    result.assert_outcomes(passed=1, failed=1)
    assert f"latest dump payload: FAILED ({empty.name}: 0 bytes decompressed" in out(result)


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


def custom_target(tmp_path, write_target, src: Path, name: str, data: bytes | None = None) -> Path:
    d = tmp_path / f"custom-{name}"
    d.mkdir()
    dest = d / f"directus_{name}.dump"
    shutil.copyfile(src, dest) if data is None else dest.write_bytes(data)
    return set_key(write_target(d, name=name), pattern="directus_*.dump")


def test_custom_format_with_every_schema_passes(pytester, tmp_path, write_target, custom_dumps):
    t = custom_target(tmp_path, write_target, custom_dumps["full"], "full")
    result = run(pytester, t, "custom_format", "latest_dump")
    result.assert_outcomes(passed=5)


def test_custom_format_missing_schema_fails_named(pytester, tmp_path, write_target, custom_dumps):
    t = custom_target(tmp_path, write_target, custom_dumps["partial"], "partial")
    result = run(pytester, t, "custom_format")
    result.assert_outcomes(failed=1)
    assert ("custom-format TOC: FAILED (directus_partial.dump: schema(s) cutter_governance, sandbox_tac missing "
            "from the TOC") in out(result)


def test_truncated_custom_format_fails_the_full_read(pytester, tmp_path, write_target, custom_dumps):
    """pg_restore --list reads only the TOC at the start: a cut tail needs the full read to show."""
    data = custom_dumps["full"].read_bytes()
    t = custom_target(tmp_path, write_target, custom_dumps["full"], "cut", data[: len(data) * 95 // 100])
    result = run(pytester, t, "custom_format", "gzip_stream")
    result.assert_outcomes(passed=1, failed=1)
    assert ("latest dump archive: FAILED (directus_cut.dump: pg_restore failed reading the archive: "
            "pg_restore: error: could not read from input file: end of file)") in out(result)


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
