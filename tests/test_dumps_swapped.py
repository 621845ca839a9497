"""A dump swapped for a FIFO, a device or a symlink between the directory listing and the read: every
reader of a dump file (gzip scan, custom-format check, pg_restore, the drill's source) refuses it at
once instead of blocking on a FIFO that no one writes, or reading /dev/zero for ever."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pgbackup_verify.config import BackupsSection
from pgbackup_verify.facts.dumps import customfmt, inventory, source

DUMP = b"--\n-- PostgreSQL database dump\n--\n\nSELECT 1;\n" + b"-- filler\n" * 2000 + \
       b"--\n-- PostgreSQL database dump complete\n--\n"
HANG = 10.0  # seconds after which a reader counts as hung (each ends in milliseconds when it refuses)


def _bounded(call: Callable[[], object]) -> object:
    """call()'s result or exception; fails the test if it has not ended within HANG seconds."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG)
    assert not t.is_alive(), f"{call} still blocked after {HANG:g} s"
    return box.get("value", box.get("error"))


@pytest.fixture
def listed(tmp_path: Path) -> tuple[inventory.Inventory, Path]:
    """A backup directory listed with one good dump, which is then replaced by a FIFO."""
    d = tmp_path / "backups"
    d.mkdir()
    dump = d / "app_2026-12-07.sql.gz"
    dump.write_bytes(gzip.compress(DUMP))
    inv = inventory.take_inventory(BackupsSection(directory=d, pattern="app_*.sql.gz"), growth_wait=0)
    assert inv.newest is not None and inv.newest.path == dump and not inv.newest.link
    return inv, dump


def _swap_for_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def test_a_dump_swapped_for_a_fifo_after_the_listing_is_refused(listed) -> None:
    inv, dump = listed
    _swap_for_fifo(dump)
    scan = _bounded(lambda: inventory.ScanCache().scan(inv.newest))
    assert isinstance(scan, inventory.DumpScan), scan
    assert scan.format == "unreadable" and not scan.valid
    assert scan.error == "cannot read (a FIFO, not a regular file (swapped after the listing?))"


def test_a_dump_swapped_for_a_symlink_to_a_device_is_refused(listed) -> None:
    inv, dump = listed
    dump.unlink()
    dump.symlink_to("/dev/zero")
    scan = _bounded(lambda: inventory.ScanCache().scan(inv.newest))
    assert isinstance(scan, inventory.DumpScan), scan
    assert scan.error == "cannot read (replaced by a symlink after the directory was listed)"


def test_a_listed_symlink_to_a_device_is_refused_as_a_device(tmp_path: Path) -> None:
    link = tmp_path / "app_2026-12-07.sql.gz"
    link.symlink_to("/dev/zero")
    scan = _bounded(lambda: inventory.scan_dump(link, follow=True))
    assert isinstance(scan, inventory.DumpScan)
    assert scan.error == "cannot read (a device, not a regular file (swapped after the listing?))"


def test_custom_format_readers_and_the_drill_source_refuse_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "app.dump"
    os.mkfifo(fifo)
    scan = _bounded(lambda: customfmt.verify_archive(fifo))
    assert isinstance(scan, inventory.DumpScan) and not scan.valid
    assert scan.error == "cannot read with pg_restore (a FIFO, not a regular file (swapped after the listing?))"
    toc = _bounded(lambda: customfmt.read_toc(fifo))
    assert isinstance(toc, customfmt.TocFacts) and not toc.readable
    assert "a FIFO, not a regular file" in (toc.error or "")
    err = _bounded(lambda: source.from_path(fifo))
    assert isinstance(err, OSError) and "a FIFO, not a regular file" in str(err)
