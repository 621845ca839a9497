"""Each dump is read once in its life (facts/dumps/scanrecord.py): real gzip dumps on disk, changed for
real (in place with the mtime set back by `touch -d`, replaced, truncated, made unreadable to a real
unprivileged reader), and a real run of the dump checks twice over a week of real `pg_dump | gzip` files."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkrun import run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.facts.dumps import inventory as dumps
from pgbackup_verify.facts.dumps.gzipscan import FOOTER, HEADER, DumpScan
from pgbackup_verify.facts.dumps.scanrecord import DAY_S, RECORD_DIR, ScanRecord, record_path

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_dumps.py"
T0 = 1_800_000_000.0  # a fixed "now" for the runs below (mid-day UTC)


def sql(seed: int, lines: int = 4000) -> bytes:
    rnd = random.Random(seed)
    rows = "".join(f"{i}\t{rnd.getrandbits(64):x}\n" for i in range(lines))
    return (f"--\n{HEADER}\n--\n\nCREATE TABLE public.t (id int, v text);\nCOPY public.t (id, v) FROM stdin;\n"
            f"{rows}\\.\n\n--\n{FOOTER}\n--\n\n").encode()


@dataclass
class Dir:
    path: Path
    files: list[Path]  # oldest first

    @property
    def newest(self) -> Path:
        return self.files[-1]

    def run(self, state: Path, *, now: float = T0, version: int = dumps.SCANNER_VERSION, rescan_days: int = 7,
            scanner=dumps.scan_dump) -> tuple[ScanRecord, dict[str, DumpScan]]:
        """One run's reading of every dump, through the record (as the fixtures do)."""
        record = ScanRecord(record_path(state, "t"), version, (DumpScan,), self.newest, rescan_days, now)
        return record, {p.name: record.scan(p, scanner) for p in self.files}


def write_nights(d: Path, count: int, lines: int = 4000) -> Dir:
    """`count` real gzip dumps, one a night, the newest a day before T0."""
    d.mkdir()
    files = []
    for i in range(count):
        p = d / f"db_{i:02d}.sql.gz"
        p.write_bytes(gzip.compress(sql(i, lines)))
        os.utime(p, (T0 - (count - i) * DAY_S, T0 - (count - i) * DAY_S))
        files.append(p)
    return Dir(d, files)


@pytest.fixture
def nights(tmp_path: Path) -> Dir:
    return write_nights(tmp_path / "backups", 5)


def read_names(record: ScanRecord) -> dict[str, str]:
    return {r.name: r.why for r in record.readings if r.read}


def touch_back(p: Path, mtime: float) -> None:
    """Set the mtime back with coreutils, as an administrator hiding a change would (ctime moves anyway)."""
    subprocess.run(["touch", "-d", f"@{mtime}", str(p)], check=True)


def test_the_second_run_reads_only_the_newest_dump(nights: Dir, tmp_path: Path) -> None:
    first, scans = nights.run(tmp_path / "state")
    assert len(read_names(first)) == 5 and all(s.is_good(1024) for s in scans.values())
    second, again = nights.run(tmp_path / "state", now=T0 + 60)
    assert read_names(second) == {nights.newest.name: "newest dump"}
    older = [p.name for p in nights.files[:-1]]
    assert [again[n] for n in older] == [scans[n] for n in older]  # the very verdicts, fields and all
    reused = [r for r in second.readings if not r.read]
    assert len(reused) == 4 and all(r.scanned_at == T0 for r in reused)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(T0))
    assert reused[0].describe() == f"{nights.files[0].name} (recorded {when})"


def test_the_record_is_private_and_per_target(nights: Dir, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    nights.run(state)
    [f] = (state / RECORD_DIR).iterdir()
    assert f == record_path(state, "t") and f.name.startswith("t-")
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / RECORD_DIR).stat().st_mode) == 0o700
    assert record_path(state, "t") != record_path(state, "t/") != record_path(state, "../t")
    assert record_path(state, "../t").parent == state / RECORD_DIR


def test_a_dump_changed_in_place_with_its_mtime_set_back_is_read_again(nights: Dir, tmp_path: Path) -> None:
    nights.run(tmp_path / "state")
    p = nights.files[1]
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, new content
    p.write_bytes(bytes(data))
    touch_back(p, st.st_mtime)
    assert (p.stat().st_size, p.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    record, scans = nights.run(tmp_path / "state", now=T0 + 60)
    assert read_names(record)[p.name] == "changed since its last read"
    assert not scans[p.name].valid and "corrupt" in (scans[p.name].error or "")


def test_a_dump_replaced_by_another_file_of_the_same_name_is_read_again(nights: Dir, tmp_path: Path) -> None:
    nights.run(tmp_path / "state")
    p = nights.files[2]
    mtime = p.stat().st_mtime
    other = p.with_name(".new")
    other.write_bytes(gzip.compress(sql(99).replace(FOOTER.encode(), b"-- cut")))
    os.replace(other, p)
    touch_back(p, mtime)
    record, scans = nights.run(tmp_path / "state", now=T0 + 60)
    assert read_names(record)[p.name] == "changed since its last read"
    assert scans[p.name].valid and not scans[p.name].footer_found


def test_a_truncated_dump_is_read_again(nights: Dir, tmp_path: Path) -> None:
    nights.run(tmp_path / "state")
    p = nights.files[0]
    mtime = p.stat().st_mtime
    os.truncate(p, p.stat().st_size // 2)
    touch_back(p, mtime)
    record, scans = nights.run(tmp_path / "state", now=T0 + 60)
    assert read_names(record)[p.name] == "changed since its last read"
    assert "file truncated" in (scans[p.name].error or "")


@contextlib.contextmanager
def as_user(uid: int) -> Iterator[None]:
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to read as the unprivileged user nobody")
def test_a_dump_made_unreadable_is_read_again_and_its_verdict_not_kept(nights: Dir, tmp_path: Path) -> None:
    """chmod moves the ctime: the file is read again, by a reader that now may not open it; that verdict is
    the reader's, not the file's, so it is not kept: the next run reads the file again."""
    nobody = 65534

    def scan_as_nobody(path: Path) -> DumpScan:
        with as_user(nobody):
            return dumps.scan_dump(path)

    nights.run(tmp_path / "state")
    p = nights.files[3]
    p.chmod(0o000)
    record, scans = nights.run(tmp_path / "state", now=T0 + 60, scanner=scan_as_nobody)
    assert read_names(record)[p.name] == "changed since its last read"
    assert scans[p.name].format == "unreadable"
    again, _ = nights.run(tmp_path / "state", now=T0 + 120, scanner=scan_as_nobody)
    assert p.name in read_names(again)  # not a stale "unreadable" either


def test_a_record_of_another_scanner_version_is_ignored(nights: Dir, tmp_path: Path) -> None:
    nights.run(tmp_path / "state", version=1)
    record, _ = nights.run(tmp_path / "state", now=T0 + 60, version=2)
    assert set(read_names(record)) == {p.name for p in nights.files}
    assert read_names(record)[nights.files[0].name] == "read by scanner version 1, now 2"
    back, _ = nights.run(tmp_path / "state", now=T0 + 120, version=2)
    assert list(read_names(back)) == [nights.newest.name]


@pytest.mark.parametrize("garbage", [b"", b"{not json", b"[1, 2]", b'{"dumps": {"x": 1}}', "a field's type",
                                     "a field missing", "a field too many", "no date"])
def test_an_unreadable_record_means_every_dump_is_read(nights: Dir, tmp_path: Path, garbage: bytes | str) -> None:
    state = tmp_path / "state"
    nights.run(state)
    path = record_path(state, "t")
    data = json.loads(path.read_bytes())
    if isinstance(garbage, str):  # a well-formed file whose entries were edited by hand
        for entry in data["dumps"].values():
            fields = entry["result"]["fields"]
            if garbage == "a field's type":
                fields["valid"] = "yes"
            elif garbage == "a field missing":
                del fields["error"]
            elif garbage == "a field too many":
                fields["trusted"] = True
            else:
                del entry["scanned_at"]
        garbage = json.dumps(data).encode()
    path.write_bytes(garbage)
    record, scans = nights.run(state, now=T0 + 60)
    assert set(read_names(record)) == {p.name for p in nights.files}
    assert all(s.is_good(1024) for s in scans.values())


def test_the_newest_dump_is_read_every_run(nights: Dir, tmp_path: Path) -> None:
    for i in range(3):
        record, _ = nights.run(tmp_path / "state", now=T0 + i * 60)
        assert read_names(record)[nights.newest.name] == "newest dump"


def test_rescans_come_at_least_every_rescan_days_and_spread_over_the_runs(tmp_path: Path) -> None:
    nights = write_nights(tmp_path / "backups", 30, lines=50)
    files = nights.files
    nights.run(tmp_path / "state")
    read_on: dict[str, list[int]] = {p.name: [0] for p in files}
    per_day = []
    for day in range(1, 22):
        record, _ = nights.run(tmp_path / "state", now=T0 + day * DAY_S, rescan_days=7)
        older = [n for n, why in read_names(record).items() if why != "newest dump"]
        assert all(why.startswith("rescan due") for n, why in read_names(record).items() if n in older)
        per_day.append(len(older))
        for n in older:
            read_on[n].append(day)
    for name, days in read_on.items():
        if name != files[-1].name:
            assert all(b - a <= 7 for a, b in zip(days, [*days[1:], 21], strict=True)), (name, days)
    assert sum(per_day) <= 29 * 3 + 29  # about one read per dump a week, 3 weeks
    assert max(per_day) < 29 / 2, per_day  # spread: no run reads (nearly) all of them


@pytest.fixture(scope="module")
def record_runs(healthy_backups: Path, seed_cluster, tmp_path_factory: pytest.TempPathFactory):
    """The dump checks run twice in the same working directory (so the same reports/state dir)."""
    root = tmp_path_factory.mktemp("scanrecord")
    backups = root / "backups"
    shutil.copytree(healthy_backups, backups)
    target = demo.write_target_file(root / "t.toml", seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE), backups,
                                    name="rec")
    first = run_checks(root / "run", [target], [CHECKS])
    second = run_checks(root / "run", [target], [CHECKS])
    return first, second, sorted(backups.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)


def test_the_report_says_which_dumps_were_read_and_which_came_from_the_record(record_runs) -> None:
    first, second, files = record_runs
    newest = files[-1].name
    assert first["rec"].outcomes() == second["rec"].outcomes()
    assert second["rec"].outcomes()["failed"] == 0
    [cov] = [c for c in second["rec"].checks if c["name"] == "test_no_night_missing_in_retention_window"]
    ev = dict(cov["evidence"])
    assert ev["dumps read this run"] == f"{newest} (newest dump)"
    reused = ev["dumps from the scan record"].split(", ")
    assert len(reused) == len(files) - 1 and all(" (recorded " in r for r in reused)
    assert {r.split(" (")[0] for r in reused} == {f.name for f in files[:-1]}
    [first_cov] = [c for c in first["rec"].checks if c["name"] == "test_no_night_missing_in_retention_window"]
    assert dict(first_cov["evidence"])["dumps from the scan record"] == "none"
