"""Decompression has a wall-clock limit per read, and no size limit: a real gzip bomb (2 GiB of zeros in a
2 MB file) stops at [backups].read_timeout_seconds locally and at [offsite].read_timeout_seconds through
real rclone, with a message naming the key; an honest dump under the same limit still passes."""

from __future__ import annotations

import gzip
import io
import tarfile
import time
from pathlib import Path

from bombs import write_gzip_zeros

from pgbackup_verify.config import OffsiteSection
from pgbackup_verify.facts import offsite
from pgbackup_verify.facts.dumps import inventory

HEADER = b"--\n-- PostgreSQL database dump\n--\n\n"
FOOTER = b"\n--\n-- PostgreSQL database dump complete\n--\n"
LIMIT = 0.5


def _dump_file(path: Path) -> inventory.DumpFile:
    st = path.stat()
    return inventory.DumpFile(path, st.st_size, st.st_mtime)


def test_a_local_gzip_bomb_stops_at_the_time_limit_and_an_honest_dump_passes(tmp_path: Path) -> None:
    bomb = write_gzip_zeros(tmp_path / "app_bomb.sql.gz", 2048, HEADER, FOOTER)
    honest = tmp_path / "app_ok.sql.gz"
    honest.write_bytes(gzip.compress(HEADER + b"SELECT 1;\n" * 50_000 + FOOTER))
    cache = inventory.ScanCache(seconds=LIMIT)
    started = time.monotonic()
    scan = cache.scan(_dump_file(bomb))
    wall = time.monotonic() - started
    print(f"gzip bomb ({bomb.stat().st_size / 1e6:.1f} MB -> 2 GiB): stopped after {wall:.2f} s, "
          f"{scan.payload_bytes >> 20} MiB inflated")
    assert not scan.valid and scan.error is not None
    assert scan.error.startswith(f"not read to its end within {LIMIT:g} s (")
    assert scan.error.endswith("a decompression bomb or a stream that never ends? raise "
                               "[backups].read_timeout_seconds if it is honest")
    assert wall < LIMIT + 2.0 and scan.payload_bytes < 2048 << 20
    ok = cache.scan(_dump_file(honest))
    assert ok.is_good(1000), ok


def test_an_offsite_member_bomb_stops_at_the_offsite_time_limit(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    member = write_gzip_zeros(tmp_path / "member.sql.gz", 2048, HEADER, FOOTER)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(member, "vps-backup-x/postgresql-directus.sql.gz")
    (remote / "vps-backup-x.tar.gz").write_bytes(buf.getvalue())
    o = OffsiteSection(remote=f":local:{remote}", read_timeout_seconds=LIMIT)
    [archive] = offsite.list_archives(o)
    started = time.monotonic()
    scan = offsite.scan_archive(o, archive)
    wall = time.monotonic() - started
    said = f"{scan.error} {scan.gzip.error if scan.gzip else ''}"
    print(f"offsite member bomb through rclone: stopped after {wall:.2f} s: {said}")
    assert scan.gzip is not None and not scan.gzip.valid  # the finding of the "member is complete" check
    assert "not read to its end within 0.5 s" in said and "[offsite].read_timeout_seconds" in said
    assert wall < LIMIT + 3.0
