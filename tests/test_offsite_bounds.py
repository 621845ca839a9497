"""Offsite archives are untrusted: headers that claim gigabytes, or millions of members, are read
through real rclone by the real tar reader (facts/offsite.py) in a fresh process whose peak memory
is measured, and end as one read error naming the bound."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bombs import write_gzip_zeros
from isal import igzip

GIB = 1 << 30
# The archive is scanned in a fresh interpreter, so its peak RSS is the scan's alone. Peak is VmHWM, the
# high-water mark of this process's own memory map: ru_maxrss would not do, since Linux folds the RSS of
# the (v)forking parent, here a pytest worker that may be hundreds of MiB, into the child's at exec.
SCAN = """
import json, re, sys
from pathlib import Path
from pgbackup_verify.config import OffsiteSection
from pgbackup_verify.facts import offsite, tarcaps
if len(sys.argv) > 2:
    tarcaps.MAX_MEMBERS = int(sys.argv[2])  # the cap's logic at a size a self-test reads in a second
o = OffsiteSection(remote=":local:" + sys.argv[1], archive_glob="*.tar.gz", member="*/postgresql-directus.sql.gz")
[archive] = offsite.list_archives(o)
scan = offsite.scan_archive(o, archive)
print(json.dumps({"error": scan.error, "members": scan.members,
                  "peak_mib": int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024}))
"""


def _scan(remote: Path, *args: str) -> tuple[dict, float]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", SCAN, str(remote), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return json.loads(proc.stdout), time.monotonic() - started


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    # Built as a plain ustar header whatever the size claims (GNU base-256 for > 8 GiB, not needed here).
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _write_bomb(path: Path, kind: bytes, claimed: int) -> None:
    """A gzip'd tar whose first header (pax or GNU long name) claims `claimed` bytes, all of them present:
    zeros, which compress ~1000:1 (the attack's 3 GiB claim is a 3 MB file)."""
    head = _header("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink", kind, claimed)
    tail = _header("x/postgresql-directus.sql.gz", tarfile.REGTYPE, 0) + bytes(1024)  # + end of archive
    write_gzip_zeros(path, claimed >> 20, head, tail)


def test_a_pax_header_claiming_3_gib_keeps_the_scan_small(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    bomb = remote / "vps-backup-bomb.tar.gz"
    _write_bomb(bomb, tarfile.XHDTYPE, 3 * GIB)
    got, wall = _scan(remote)
    print(f"pax header claiming 3 GiB in a {bomb.stat().st_size / 1e6:.1f} MB archive: peak RSS "
          f"{got['peak_mib']:.0f} MiB, {wall:.1f} s")
    assert got["error"] == ("archive unreadable after 0 members: a member header claims 3221225472 bytes of "
                            "extended header data (pax, GNU long name), over the 1 MiB limit")
    assert got["peak_mib"] < 150, got


def test_a_gnu_long_name_claiming_500_mib_is_refused(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    _write_bomb(remote / "vps-backup-long.tar.gz", tarfile.GNUTYPE_LONGNAME, 500 << 20)
    got, _ = _scan(remote)
    assert "a member header claims 524288000 bytes of extended header data" in got["error"], got
    assert got["peak_mib"] < 150, got


def test_an_archive_of_too_many_members_stops_at_the_cap(tmp_path: Path) -> None:
    cap = 1000  # the shipped cap is 100,000 (tarcaps.MAX_MEMBERS); the same code at a test's size
    remote = tmp_path / "remote"
    remote.mkdir()
    with igzip.open(remote / "vps-backup-many.tar.gz", "wb", compresslevel=1) as gz:
        for i in range(cap + 5):
            gz.write(_header(f"d/{i}", tarfile.DIRTYPE, 0))
        gz.write(bytes(1024))
    got, wall = _scan(remote, str(cap))
    print(f"{cap + 5} members with a cap of {cap}: stopped after {got['members']}, {wall:.1f} s")
    assert got["error"] == f"archive unreadable after {cap} members: more than {cap} members"
