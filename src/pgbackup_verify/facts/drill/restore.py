"""Run the restore itself: a plain dump streamed through the scan into restricted psql,
or a custom-format dump through `pg_restore -j N`. Errors come back with their dump line.
"""

from __future__ import annotations

import io
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import psycopg

from pgbackup_verify.facts.drill import loadcount
from pgbackup_verify.facts.drill.cluster import mark_owner
from pgbackup_verify.facts.drill.drillcluster import Endpoint
from pgbackup_verify.facts.drill.safety import SPOOL_PREFIX, Janitor
from pgbackup_verify.facts.dumps.archivedata import archive_rows, restore_list_ids
from pgbackup_verify.facts.dumps.compression import payload_chunks
from pgbackup_verify.facts.dumps.customfmt import ArchiveFormatError, ArchiveRows, read_archive_toc
from pgbackup_verify.facts.dumps.plainscan import DUMP_COMPLETE, MetaCommandRefused, PlainDumpScanner
from pgbackup_verify.facts.dumps.source import DumpSource
from pgbackup_verify.facts.redact import redact_copy_error

Progress = Callable[[int, int, int | None, float], None]  # payload sent, stored read, stored size, seconds
_PSQL_MSG = re.compile(r"^psql:<stdin>:(\d+): (ERROR|FATAL|PANIC|WARNING|error|warning|fatal):\s*(.*)$")
MAX_MESSAGES = 50
CHUNK = 1 << 20  # decompressed bytes per read
SETTLE_SECONDS = 30  # most time pg_restore's sessions may take to end after it did
_T = TypeVar("_T")
# Statements after the first COPY that may change rows a COPY already stored (or make the table its
# name finds another one): then what each COPY reported no longer says what the tables hold, and the
# drill counts them all with count(*). Matched on a statement's head; pg_dump writes none of these after
# its data (its SELECTs there are setval and the large-object calls, its ALTER TABLEs add keys).
CHANGES_ROWS = re.compile(rb"\s*(?:DELETE|UPDATE|TRUNCATE|MERGE|DO|CALL|WITH|EXECUTE|DROP|INSERT"
                          rb"|ROLLBACK|ABORT|PREPARE\s+TRANSACTION"
                          rb"|ALTER\s+TABLE\b[\s\S]*\b(?:RENAME|SET\s+SCHEMA)\b"
                          rb"|SELECT(?!\s+pg_catalog\.(?:set_config|setval|lo_create|lo_open|lowrite|lo_close)\())\b",
                          re.IGNORECASE)
# psql's command tag of a COPY in HTML output (-H): a cell's `<` is always written `&lt;`, so only psql's
# own status line can look like this.
_COPY_TAG = re.compile(rb"^<p>COPY (\d+)</p>$", re.MULTILINE)
_JUDGED = (b"select", b"alter")  # words whose statement is judged on its text (CHANGES_ROWS), not its head word


@dataclass
class RestoreOutcome:
    tool: str
    exit_code: int | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refused: str | None = None
    timed_out: bool = False
    payload_bytes: int = 0
    rows: dict[str, int] | None = None  # COPY/INSERT target -> rows read from the dump (None: not read)
    # COPY target -> rows the server reported storing, for targets loaded only by COPY on our connections;
    # None when nothing was reported, or a statement after the data may have changed rows (parallel.py)
    loaded: dict[str, int] | None = None
    rows_from: str = ""  # how the dump's rows were read, when not by the restore's own scan
    scan: PlainDumpScanner | None = None  # what else the dump loads (targets, large objects, matviews)
    large_objects: int | None = None  # large objects in the dump (plain: lo_create calls; custom: its TOC)
    complete_marker: bool | None = None
    complete_text: str = DUMP_COMPLETE.decode()  # the closing comment a whole stream ends with
    seconds: float = 0.0
    parallel: int = 0  # connections of a parallel plain restore (0: the serial one)
    spool_peak: int = 0  # most COPY data spooled to disk at once by the parallel restore
    parallel_jobs: dict[str, int] = field(default_factory=dict)  # copy / build / fk -> statements run in parallel

    def redact(self) -> None:
        """Messages without the dump's rows (facts/redact.py): what reaches a report names the dump line,
        the table and the column, never the data."""
        self.errors = [redact_copy_error(m) for m in self.errors]
        self.warnings = [redact_copy_error(m) for m in self.warnings]
        if self.refused:
            self.refused = redact_copy_error(self.refused)

    @property
    def problems(self) -> list[str]:
        out = list(self.errors)
        if self.refused:
            out.insert(0, self.refused)
        if self.timed_out:
            out.append(f"{self.tool} stopped by the time limit ([drill].time_limit_seconds) after "
                       f"{self.seconds:.0f} s of restore")
        if self.exit_code not in (0, None) and not (self.errors or self.refused or self.timed_out):
            out.append(f"{self.tool} exited with code {self.exit_code}")
        if self.complete_marker is False and not self.refused:
            out.append(f"dump stream ends without '{self.complete_text}' (truncated dump)")
        return out


class Counting:
    """Counts the stored bytes read, so progress works on any stream, not only on files."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self.raw, self.count = raw, 0

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        self.count += len(b)
        return b

    def readinto(self, buf: memoryview) -> int:
        n = self.raw.readinto(buf)
        self.count += n
        return n

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()


@dataclass
class TagScanner(PlainDumpScanner):
    """The drill's scanner, also noting what reading psql's COPY tags as row counts needs.

    psql (not quiet) prints one tag `COPY n` per COPY statement it runs, in order: n is what the
    server stored. Paired with the COPY statements read here, in the same order, they count each
    table's loaded rows without a second pass, as the parallel restore's own COPYs do. The pairing
    holds only when every COPY reads its data from the dump (a COPY TO STDOUT writes no tag and raw
    data) and nothing after the first COPY may have changed rows (CHANGES_ROWS), and no transaction
    block was rolled back or left open; `tags_exact` says so.
    """

    copies: deque[str] = field(default_factory=deque)  # COPY targets in order, not yet paired with a tag
    copy_statements: int = 0
    tags_exact: bool = True
    in_tx: bool = False
    _suspect: bool = False  # a statement after the data whose text is still to be judged

    def _begin_statement(self, line: bytes, i: int, word: bytes) -> None:
        if self._suspect:  # the last one ended without being judged (never ended, or too long to read)
            self.tags_exact = False
        super()._begin_statement(line, i, word)
        w = word.lower()
        if w in (b"begin", b"start"):
            self.in_tx = True
        elif w in (b"commit", b"end"):
            self.in_tx = False
        if not self.copy_statements or w == b"copy":
            return
        if w in _JUDGED:
            self._suspect = True
            if self._cap is None:  # ALTER: kept like the scanner's own heads, to be read at its ';'
                self._kind, self._cap, self._cap_from = "alter", bytearray(), i
        elif w == b"prepare" or CHANGES_ROWS.match(word):
            self.tags_exact = False

    def _statement_done(self, stmt: bytes) -> None:
        if self._suspect:
            self._suspect = False
            if CHANGES_ROWS.match(stmt):
                self.tags_exact = False
        if self._kind != "alter":
            super()._statement_done(stmt)

    def _copy_statement(self, stmt: bytes) -> None:
        before = len(self._pending)
        super()._copy_statement(stmt)
        self.copy_statements += 1
        if len(self._pending) > before:
            self.copies.append(self._pending[-1][0])
        else:
            self.tags_exact = False  # COPY TO / from a file: no data here, and no tag or a tag out of step

    @property
    def exact(self) -> bool:
        return self.tags_exact and not self.in_tx and not self._suspect


def _copy_tags(pipe: IO[bytes], scanner: TagScanner, loaded: dict[str, int], state: list[bool]) -> threading.Thread:
    """Read psql's output for its COPY tags; each one is the rows the next COPY statement stored."""
    def run() -> None:
        carry = b""
        while block := pipe.read1(1 << 16):  # type: ignore[attr-defined]
            buf = carry + block
            end = buf.rfind(b"\n") + 1
            carry = buf[end:]
            for m in _COPY_TAG.finditer(buf, 0, end):
                if not scanner.copies:
                    state[0] = False  # a tag without its COPY: never pair them then
                    continue
                target = scanner.copies.popleft()
                loaded[target] = loaded.get(target, 0) + int(m.group(1))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


def _collect(pipe: IO[bytes], sink: list[str]) -> threading.Thread:
    def run() -> None:
        for raw in pipe:
            if len(sink) < 2000:
                sink.append(raw.decode(errors="replace").rstrip("\n"))
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _watchdog(proc: subprocess.Popen[bytes], seconds: float, outcome: RestoreOutcome) -> threading.Timer:
    def expire() -> None:
        if proc.poll() is None:
            outcome.timed_out = True
            proc.kill()
    t = threading.Timer(max(seconds, 0.1), expire)
    t.daemon = True
    t.start()
    return t


def _copy_header(scanner: PlainDumpScanner, dump_line: int) -> str | None:
    """The COPY header of a data line (data lines are never kept, nor shown: only their table)."""
    prev = next((text for no, text in reversed(scanner.recent) if no < dump_line), b"")
    return prev.decode(errors="replace").rstrip("\r\n") if prev.startswith(b"COPY ") else None


def psql_messages(lines: list[str], scanner: PlainDumpScanner, outcome: RestoreOutcome, offset: int = 0) -> None:
    """psql's stderr as one message per error; `offset`: dump lines before the first one psql was sent."""
    current: list[str] | None = None
    for text in lines:
        m = _PSQL_MSG.match(text)
        if m:
            dump_line = int(m.group(1)) - 1 + offset  # line 1 of psql's input is our \restrict
            shown = scanner.line_text(dump_line) or _copy_header(scanner, dump_line)
            msg = f"dump line {dump_line}: {m.group(2).upper()}: {m.group(3)}"
            if shown is not None:
                msg += f" | line: {shown.strip()[:200]}"
            current = outcome.warnings if m.group(2).upper() == "WARNING" else outcome.errors
            if len(current) < MAX_MESSAGES:
                current.append(msg)
        elif current and text.strip() and current[-1].count("\n") < 4 and not text.startswith("psql:"):
            current[-1] += "\n    " + text.strip()[:200]
        elif text.startswith("psql:") and "NOTICE" not in text:
            outcome.errors.append(text[:300])


def restore_plain(source: DumpSource, endpoint: Endpoint, time_limit: float, janitor: Janitor,
                  progress: Progress | None = None, jobs: int = 1,
                  work_dir: Path | None = None, copy_filter: Callable[[str], bool] | None = None
                  ) -> RestoreOutcome:
    """Stream the dump once: decompress, scan, count rows, feed psql under \\restrict.

    With jobs > 1 the COPY data and the index and key builds run on that many connections
    (facts/drill/parallel.py); jobs = 1 is the plain serial restore below.
    """
    if jobs > 1 or copy_filter is not None:  # a schema/sample tier drops COPY data there (tiers.py)
        from pgbackup_verify.facts.drill.parallel import restore_parallel  # imports this module

        return restore_parallel(source, endpoint, jobs, time_limit, janitor, work_dir, progress, copy_filter)
    outcome = RestoreOutcome(tool="psql")
    scanner = TagScanner()
    start = time.monotonic()
    # Not quiet, HTML: psql's command tags come out on stdout, unforgeable by any value a query prints.
    argv, kwargs = endpoint.command(["psql", "-X", "-H", "-v", "ON_ERROR_STOP=1", "-d", endpoint.conninfo, "-f", "-"])
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
    janitor.add("psql", lambda: _kill(proc))
    assert proc.stdin is not None and proc.stderr is not None and proc.stdout is not None
    lines: list[str] = []
    reader = _collect(proc.stderr, lines)
    loaded: dict[str, int] = {}
    paired = [True]
    tags = _copy_tags(proc.stdout, scanner, loaded, paired)
    timer = _watchdog(proc, time_limit, outcome)
    raw = Counting(source.open())
    stream = payload_chunks(source, raw)
    write, sent, last, read_all = proc.stdin.write, 0, start, False
    try:
        # A key the dump cannot know: the dump's own \unrestrict can never lift it.
        write(f"\\restrict {secrets.token_hex(16)}\n".encode())
        feed, read = scanner.feed, stream.read
        while chunk := read(CHUNK):
            for piece in feed(chunk):
                write(piece)
                sent += len(piece)
            now = time.monotonic()
            if progress and now - last >= 1.0:
                progress(sent, raw.count, source.size, now - start)
                last = now
        for piece in scanner.finish():
            write(piece)
            sent += len(piece)
        read_all = True
    except MetaCommandRefused as e:
        outcome.refused = str(e)
        proc.kill()  # nothing after the refused line may run
    except BrokenPipeError:
        pass  # psql stopped (ON_ERROR_STOP or killed): its stderr says why
    except (EOFError, OSError) as e:
        outcome.errors.append(f"dump stream unreadable after {raw.count} stored bytes: {e}")
        proc.kill()
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        raw.close()
    outcome.exit_code = proc.wait()
    timer.cancel()
    reader.join(5)
    tags.join(5)
    psql_messages(lines, scanner, outcome)
    outcome.payload_bytes, outcome.rows, outcome.scan = sent, scanner.rows, scanner
    if outcome.exit_code == 0 and read_all and not tags.is_alive() and paired[0] and scanner.exact \
            and not scanner.copies:
        outcome.loaded = loaded  # every COPY paired with its tag
    outcome.large_objects = scanner.large_objects
    # Only a stream read to its end can be called truncated; a stopped psql stops the reading.
    outcome.complete_marker = scanner.complete if read_all else None
    outcome.seconds = time.monotonic() - start
    return outcome


def _spool(source: DumpSource, work_dir: Path, janitor: Janitor) -> Path:
    """pg_restore -j must seek: a stream without a file is copied to a spool file first."""
    d = Path(tempfile.mkdtemp(prefix=SPOOL_PREFIX, dir=work_dir))
    janitor.add(f"spool dir {d}", lambda: shutil.rmtree(d, ignore_errors=True))
    mark_owner(d)
    path = d / "dump.custom"
    with source.open() as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return path


def restore_custom(source: DumpSource, endpoint: Endpoint, jobs: int, time_limit: float,
                   janitor: Janitor, work_dir: Path, progress: Progress | None = None,
                   extra_args: Sequence[str] = (), count_rows: bool = False) -> RestoreOutcome:
    """pg_restore -j into the database; with count_rows, the rows each table of the archive loaded.

    Those rows come from the load itself where that is exact (loadcount.py: the server's insert
    counters once pg_restore's sessions have ended), so the archive is read once, by pg_restore.
    Otherwise its data blocks are read a second time (archivedata.archive_rows: newlines of the
    decompressed COPY text): alongside the restore, mostly costing CPU, not time, when its table of
    contents says so beforehand; after it when only the restored catalog does.
    """
    outcome = RestoreOutcome(tool=f"pg_restore -j{jobs}")
    start = time.monotonic()
    deadline = start + time_limit
    path = source.path or _spool(source, work_dir, janitor)
    toc = None
    try:
        toc = read_archive_toc(path)
        outcome.large_objects = toc.large_objects()
    except (ArchiveFormatError, OSError):
        pass  # an archive version this reader does not know: not counted; pg_restore says the rest
    app = f"pgbv_restore_{secrets.token_hex(6)}"  # its sessions, told apart in pg_stat_activity
    # The rows: from the load's own counters where they can be exact (loadcount.py); else from the
    # archive's data blocks, read alongside the restore when the archive says so beforehand.
    targets: PlainDumpScanner | str = "its table of contents is not one this reader knows"
    if count_rows and toc is not None:
        try:
            wanted = restore_list_ids(list(extra_args))
            targets = loadcount.archive_targets(toc, wanted)
            if not isinstance(targets, str):
                targets = loadcount.predict(toc, wanted) or targets
        except ArchiveFormatError as e:
            targets = str(e)
    why_not = targets if isinstance(targets, str) else None
    counted: list[ArchiveRows] = []
    counter = None
    if count_rows and why_not is not None:
        def alongside() -> None:  # while pg_restore runs: then it mostly costs CPU, not time
            counted.append(archive_rows(path, extra_args, deadline,
                                        lambda p: janitor.add("pg_restore -f - (row count)", lambda: _kill(p)), toc))
        counter = threading.Thread(target=alongside, daemon=True)
        counter.start()
    _pg_restore(endpoint.for_app(app), path, extra_args, jobs, deadline, janitor, outcome, progress, source.size, start)
    outcome.payload_bytes = source.payload_estimate()
    if count_rows and isinstance(targets, PlainDumpScanner):
        scan = targets
        got = (_after(endpoint, app, deadline, lambda conn: loadcount.loaded_rows(conn, scan)) if not outcome.problems
               else "the restore failed: what it stored is not what the archive holds")
        if isinstance(got, dict):
            outcome.rows, outcome.loaded, outcome.scan = got, dict(got), scan
            outcome.rows_from = "the rows the load stored, from the server's own counters: the archive read once"
        else:  # the counters may not stand for the archive's rows: its blocks are counted after all
            why_not = got
            counted.append(archive_rows(path, extra_args, deadline, toc=toc))
    if counter is not None:
        counter.join(max(deadline - time.monotonic(), 0) + 10)  # the count has the same deadline
    if count_rows and outcome.scan is None:
        if counted:
            outcome.rows, outcome.scan = counted[0].scan.rows, counted[0].scan
            outcome.rows_from = f"the archive's data blocks, {counted[0].read_by}" + (
                f"; not from the load's counters: {why_not}" if why_not else "")
            if counted[0].error:
                outcome.errors.append(counted[0].error)
        else:
            outcome.errors.append("row count of the archive did not end within the time limit")
    outcome.seconds = time.monotonic() - start
    return outcome


def _after(endpoint: Endpoint, app: str, deadline: float,
           read: Callable[[psycopg.Connection], _T]) -> _T | str:
    """What `read` finds once the sessions of pg_restore run `app` have ended (their counts flushed)."""
    try:
        with endpoint.connect(autocommit=True) as conn:
            if not loadcount.settle(conn, app, min(deadline, time.monotonic() + SETTLE_SECONDS)):
                return f"pg_restore's sessions still open {SETTLE_SECONDS} s after it ended"
            return read(conn)
    except psycopg.Error as e:
        return f"the restored database could not be read ({type(e).__name__})"


def _pg_restore(endpoint: Endpoint, path: Path, extra_args: Sequence[str], jobs: int, deadline: float,
                janitor: Janitor, outcome: RestoreOutcome, progress: Progress | None, size: int | None,
                start: float) -> None:
    """pg_restore -j of the archive into the database; its exit and messages go into `outcome`."""
    # The archive is the host's (root-only): pg_restore reads it as root without capabilities, in
    # its own namespaces, seeing the archive and the restore list read-only (sandbox.py).
    lists = [Path(a) for a in extra_args if a != "-L" and Path(a).is_absolute()]
    argv, kwargs = endpoint.command(["pg_restore", "-j", str(jobs), "--no-owner", "--no-privileges",
                                     *extra_args, "-d", endpoint.conninfo, str(path)],
                                    ro=[path.resolve(), *lists], reader=True)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)
    janitor.add("pg_restore", lambda: _kill(proc))
    assert proc.stderr is not None
    lines: list[str] = []
    reader = _collect(proc.stderr, lines)
    timer = _watchdog(proc, deadline - time.monotonic(), outcome)
    # Woken by pg_restore's exit itself, not by a poll: the restore's end is the drill's next step.
    ended = threading.Event()

    def wait() -> None:
        proc.wait()
        ended.set()
    threading.Thread(target=wait, daemon=True).start()
    while not ended.wait(1.0):
        if progress and time.monotonic() - start > 5:
            progress(0, 0, size, time.monotonic() - start)
    outcome.exit_code = proc.returncode
    timer.cancel()
    reader.join(5)
    last: str | None = None  # the error the following context lines belong to
    for text in lines:
        if text.startswith("pg_restore: error:") and len(outcome.errors) < MAX_MESSAGES:
            outcome.errors.append(text.removeprefix("pg_restore: "))
            last = "error"
        elif text.startswith("Command was:") and outcome.errors:
            outcome.errors[-1] += f" | command: {text[12:].strip()[:200]}"
        elif text.startswith("pg_restore: warning:") and "errors ignored" not in text:
            outcome.warnings.append(text.removeprefix("pg_restore: "))
            last = None
        elif last and outcome.errors and text.strip() and not text.startswith("pg_restore:") \
                and outcome.errors[-1].count("\n") < 4:
            outcome.errors[-1] += "\n    " + text.strip()[:200]
