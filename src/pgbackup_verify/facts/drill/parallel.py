"""Parallel restore of a plain SQL dump, in one pass over the stream, the way `pg_restore -j` does it.

The stream goes through the same COPY-aware scan as the serial restore (every meta-command refused,
COPY rows counted). What the scan lets pass is then split three ways:

- SQL the restore must run in order (pre-data, and anything not recognised below) goes to a psql
  under `\\restrict` with a key of ours, as in the serial restore. A psql "segment" is closed (its
  stdin ends, psql exits) whenever parallel work needs everything before it to have run: that
  makes the order exact without guessing what psql has executed.
- Each COPY block becomes a job for one of `jobs` connections: its data is handed over in memory
  while a connection keeps up and spooled to an unlinked temporary file while all are busy, so
  memory stays bounded however large the dump (and the spool, too: the reading waits past
  SPOOL_LIMIT).
- Post-data statements of known shape (CREATE INDEX, ADD CONSTRAINT PRIMARY KEY / UNIQUE / FOREIGN
  KEY) run on those connections too, never two on the same table at once (a foreign key locks
  both of its tables: two in opposite directions could deadlock): a table's indexes and keys
  start once its data is in, while other tables still load, like pg_restore; foreign keys wait
  for everything before them (they need the keys they reference).

A schema or sample drill (facts/drill/tiers.py) gives a `copy_filter`: the COPY blocks it declines are
still read and scanned like any other (rows counted, meta-commands refused), but their header and
data go nowhere, so the table stays empty.

Only statements matched by the strict patterns below leave psql, and they go through the
extended query protocol, which the server refuses to run as more than one statement; COPY
headers are re-checked to name one table and plain columns. Anything unexpected (a transaction
block around COPY, a header of another shape) stays on the serial path.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psycopg

from pgbackup_verify.facts.drill.drillcluster import Endpoint
from pgbackup_verify.facts.drill.restore import (
    CHANGES_ROWS,
    CHUNK,
    Counting,
    Progress,
    RestoreOutcome,
    psql_messages,
)
from pgbackup_verify.facts.drill.safety import SPOOL_PREFIX, Janitor
from pgbackup_verify.facts.dumps.compression import payload_chunks
from pgbackup_verify.facts.dumps.plainscan import MetaCommandRefused, PlainDumpScanner
from pgbackup_verify.facts.dumps.source import DumpSource

MEMORY_BUDGET = 32 << 20  # COPY data held in memory across all jobs; beyond it, the spool file
SPOOL_LIMIT = 1 << 30  # spooled data not yet loaded; beyond it, reading the dump waits
MAX_BUFFERED_STATEMENT = 64 << 10  # a candidate for a parallel statement longer than this runs serially

_ID = rb'(?:"(?:[^"\n]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUAL = _ID + rb"(?:\." + _ID + rb")?"
_COLS = rb"\(" + _ID + rb"(?:, " + _ID + rb")*\)"
_STRICT_COPY = re.compile(rb"COPY (" + _QUAL + rb")(?: " + _COLS + rb")? FROM stdin;\r?\n\Z")
_LIT = rb"'(?:[^'\\\n]|'')*'"
_SET = re.compile(rb"SET (?:SESSION )?([A-Za-z_][A-Za-z0-9_.]*) (?:=|TO) (?:" + _LIT + rb"|[-A-Za-z0-9_.]+)"
                  rb"(?:, (?:" + _LIT + rb"|[-A-Za-z0-9_.]+))*;\r?\n\Z")
_SET_AUTH = re.compile(rb"SET SESSION AUTHORIZATION (?:" + _LIT + rb"|DEFAULT|" + _ID + rb");\r?\n\Z")
_SET_CONFIG = re.compile(rb"SELECT pg_catalog\.set_config\((" + _LIT + rb"), " + _LIT + rb", false\);\r?\n\Z")
# Data-section statements that touch no table: they run in order on psql while COPY jobs load.
_EXTRA = re.compile(rb"(?:SELECT pg_catalog\.setval\(" + _LIT + rb", -?\d+, (?:true|false)\)"
                    rb"|SELECT pg_catalog\.lo_(?:create|open)\('\d+'(?:, \d+)?\)"
                    rb"|SELECT pg_catalog\.lowrite\(0, '\\x[0-9a-f]*'\)"
                    rb"|SELECT pg_catalog\.lo_close\(0\));\r?\n\Z")
_TX_START = re.compile(rb"(?:BEGIN|START TRANSACTION)\b", re.IGNORECASE)
_TX_END = re.compile(rb"(?:COMMIT|END|ROLLBACK|ABORT)\b", re.IGNORECASE)
_INDEX = re.compile(rb"CREATE (?:UNIQUE )?INDEX " + _ID + rb" ON (?:ONLY )?(" + _QUAL + rb") USING [a-z_]+ \(",
                    re.DOTALL)
_KEY = re.compile(rb"ALTER TABLE (?:ONLY )?(" + _QUAL + rb")\s+ADD CONSTRAINT " + _ID +
                  rb" (?:PRIMARY KEY|UNIQUE(?: NULLS NOT DISTINCT)?) " + _COLS)
_FK = re.compile(rb"ALTER TABLE ONLY (" + _QUAL + rb")\s+ADD CONSTRAINT " + _ID + rb" FOREIGN KEY " + _COLS +
                 rb" REFERENCES (" + _QUAL + rb")" + _COLS)
_CANDIDATE = (b"CREATE INDEX ", b"CREATE UNIQUE INDEX ", b"ALTER TABLE ")
# Statements after the first COPY that may change rows already loaded (restore.CHANGES_ROWS), or a COPY
# not read as a job: then what each COPY reported loaded no longer says what the tables hold, and the
# drill counts them all (outcome.loaded = None).
_CHANGES_ROWS = re.compile(rb"\s*COPY\b|" + CHANGES_ROWS.pattern, re.IGNORECASE)
_PSQL_LINE = re.compile(r"^psql:<stdin>:(\d+): ")


class _Stop(Exception):
    """The restore stops (an error, a refusal, the time limit, a signal); the outcome says why."""


class _NoPsql(FileNotFoundError):
    """psql is not installed: the drill aborts, as the serial restore does."""


@dataclass
class _Event:
    line: bytes
    no: int
    kind: str  # sql | header | data (a last COPY line the stream ended in)
    boundary: bool  # a statement ends with this line
    target: str | None = None  # a header's COPY target, as the scanner keys its rows


@dataclass
class _TapScanner(PlainDumpScanner):
    """The drill's scanner, unchanged, noting for each line it scans what the line was.

    feed() sends every SQL line through scan() (its documented contract) and COPY data in blocks:
    so every piece feed() returns is either the object a scan() call returned, or COPY data.
    """

    events: list[_Event] = field(default_factory=list)

    def scan(self, line: bytes) -> bytes:
        in_copy = self.copy_target is not None
        out = super().scan(line)
        kind = "data" if in_copy else "header" if self.copy_target is not None else "sql"
        self.events.append(_Event(out, self.line_no, kind, self.between_statements,
                                  self.copy_target if kind == "header" else None))
        return out


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self, n: int) -> bool:
        with self.lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self.lock:
            self.used -= n


class _Spool:
    """Unread spooled bytes of every job, so the reading waits when the disk part grows too large."""

    def __init__(self, limit: int) -> None:
        self.limit, self.unread, self.peak = limit, 0, 0
        self.cond = threading.Condition()

    def add(self, n: int) -> None:
        with self.cond:
            self.unread += n
            self.peak = max(self.peak, self.unread)

    def consumed(self, n: int) -> None:
        with self.cond:
            self.unread -= n
            self.cond.notify_all()

    def wait_room(self, stopped: threading.Event) -> None:
        with self.cond:
            while self.unread > self.limit and not stopped.is_set():
                self.cond.wait(0.2)


class _Data:
    """One COPY block's data on its way from the reader to a connection: memory first, then a spool file."""

    def __init__(self, work_dir: Path, budget: _Budget, spool: _Spool) -> None:
        self.work_dir, self.budget, self.spool = work_dir, budget, spool
        self.cond = threading.Condition()
        self.mem: collections.deque[bytes | memoryview] = collections.deque()
        self.file: IO[bytes] | None = None
        self.wpos = self.rpos = 0
        self.closed = self.cancelled = False

    def write(self, piece: bytes | memoryview) -> None:
        # A large piece is kept as the view it is (no copy): it holds at most 4x its size of the read
        # chunk alive. A small one is copied, so that it never pins a whole chunk.
        data = piece if len(piece) >= CHUNK // 4 else bytes(piece)
        if self.file is None and self.budget.take(len(data)):
            with self.cond:
                self.mem.append(data)
                self.cond.notify()
            return
        if self.file is None:
            # Unlinked at once (O_TMPFILE where the kernel has it): nothing to leave behind, even on SIGKILL.
            self.file = tempfile.TemporaryFile(prefix=SPOOL_PREFIX, dir=self.work_dir)
        os.pwrite(self.file.fileno(), data, self.wpos)
        self.spool.add(len(data))
        with self.cond:
            self.wpos += len(data)
            self.cond.notify()

    def close(self, cancel: bool = False) -> None:
        with self.cond:
            self.closed = True
            self.cancelled = self.cancelled or cancel
            self.cond.notify_all()

    def read(self) -> bytes | memoryview | None:
        """The next piece in order; None at the end of the block (or when the restore stops)."""
        with self.cond:
            while not (self.mem or self.rpos < self.wpos or self.closed):
                self.cond.wait()
            if self.cancelled:
                return None
            if self.mem:
                data = self.mem.popleft()
                self.budget.give(len(data))
                return data
            if self.rpos >= self.wpos:
                return None
            start, n = self.rpos, min(self.wpos - self.rpos, CHUNK)
            self.rpos += n
            assert self.file is not None
            fd = self.file.fileno()
        data = os.pread(fd, n, start)
        self.spool.consumed(n)
        return data

    def release(self) -> None:
        with self.cond:
            while self.mem:
                self.budget.give(len(self.mem.popleft()))
            if self.file is not None:
                self.spool.consumed(self.wpos - self.rpos)
                self.rpos = self.wpos
                self.file.close()
                self.file = None


@dataclass(eq=False)
class _Job:
    kind: str  # copy | build | fk
    sql: bytes  # the COPY header or the statement
    line_no: int  # dump line of the header / of the statement's last line
    first_line: str  # shown with an error
    tables: frozenset[bytes]
    session: tuple[bytes, ...]
    data: _Data | None = None
    target: str | None = None  # the scanner's COPY target (its key in outcome.rows), for a copy job


class _Segment:
    """One psql under \\restrict; its input lines mapped back to dump lines for its messages."""

    def __init__(self, endpoint: Endpoint, session: list[tuple[int, bytes]]) -> None:
        argv, kwargs = endpoint.command(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", endpoint.conninfo,
                                         "-f", "-"])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     **kwargs)
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.stdin = self.proc.stdin
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()
        self.seg_at, self.dump_at = array("q"), array("q")
        self.n = 0  # input lines written so far
        self.dirty = False  # holds SQL that later parallel work may depend on
        # A key the dump cannot know: the dump's own \unrestrict can never lift it.
        self._write(f"\\restrict {secrets.token_hex(16)}\n".encode(), 0)
        for no, line in session:
            self._write(line, no)

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            if len(self.lines) < 2000:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def _write(self, data: bytes | memoryview, dump_line: int, lines: int = 1) -> None:
        if not self.seg_at or dump_line != self.dump_at[-1] + (self.n + 1 - self.seg_at[-1]):
            self.seg_at.append(self.n + 1)
            self.dump_at.append(dump_line)
        self.stdin.write(data)
        self.n += lines

    def send(self, line: bytes, dump_line: int) -> None:
        self._write(line, dump_line)

    def send_data(self, piece: bytes | memoryview) -> None:
        """COPY data of a block run inline (the serial way): whole lines, numbered on from its header."""
        self.stdin.write(piece)
        self.n += bytes(piece).count(b"\n")

    def dump_line(self, seg_line: int) -> int:
        i = bisect_right(self.seg_at, seg_line) - 1
        return self.dump_at[i] + seg_line - self.seg_at[i] if i >= 0 else 0

    def close(self) -> int:
        try:
            self.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        self.reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class ParallelRestore:
    """One parallel restore; run() returns what restore_plain returns."""

    def __init__(self, source: DumpSource, endpoint: Endpoint, jobs: int, time_limit: float,
                 janitor: Janitor, work_dir: Path, progress: Progress | None = None,
                 copy_filter: Callable[[str], bool] | None = None) -> None:
        self.source, self.endpoint, self.jobs = source, endpoint, max(jobs, 1)
        self.copy_filter = copy_filter
        self.skip_copy = False  # the COPY block being read is declined by copy_filter: its data is dropped
        self.time_limit, self.janitor, self.work_dir, self.progress = time_limit, janitor, work_dir, progress
        self.outcome = RestoreOutcome(tool="psql")
        self.outcome.parallel = self.jobs
        self.scanner = _TapScanner()
        self.stopped = threading.Event()
        self.lock = threading.Condition()
        self.queue: collections.deque[_Job] = collections.deque()
        self.running: list[_Job] = []  # queued or being run
        self.failures: list[str] = []
        self.budget, self.spool = _Budget(MEMORY_BUDGET), _Spool(SPOOL_LIMIT)
        self.session: dict[bytes, tuple[int, bytes]] = {}  # setting -> (dump line, the SET line)
        self.segment: _Segment | None = None
        self.segment_codes: list[int] = []
        self.conns: list[psycopg.Connection] = []
        self.threads: list[threading.Thread] = []
        self.in_tx = False
        self.copy_job: _Job | None = None  # the COPY block being read, when it runs as a job
        self.inline_copy = False  # the COPY block being read goes to psql (the serial way)
        self.pending: list[tuple[bytes, int]] = []  # a candidate statement being collected
        self.pending_size = 0
        self.serial_stmt = False  # inside a statement that goes to psql line by line
        self.at_start = True
        # Rows each COPY job's connection reported loaded, per COPY target; targets with rows that came
        # another way (psql, INSERT, declined by the tier) are in `unreported`.
        self.loaded: dict[str, int] = {}
        self.unreported: set[str] = set()
        self.loads_exact = True  # no statement after the data that may change loaded rows
        self.copied = False

    # -- the reading ------------------------------------------------------------------------

    def run(self) -> RestoreOutcome:
        outcome, scanner = self.outcome, self.scanner
        start = time.monotonic()
        self.janitor.add("parallel restore", lambda: self.stop("the drill was interrupted"))
        timer = threading.Timer(max(self.time_limit, 0.1), self._expire)
        timer.daemon = True
        timer.start()
        raw = None
        sent, last, read_all = 0, start, False
        watch = getattr(self.progress, "watch_rows", None)
        if watch is not None:  # a progress line that shows rows (facts/drill/progress.py)
            watch(lambda: sum(self.scanner.rows.values()))
        try:
            self._connect()
            raw = Counting(self.source.open())
            stream = payload_chunks(self.source, raw)
            read = stream.read
            while chunk := read(CHUNK):
                sent += self._route(scanner.feed(chunk))
                now = time.monotonic()
                if self.progress and now - last >= 1.0:
                    self.progress(sent, raw.count, self.source.size, now - start)
                    last = now
            sent += self._route(scanner.finish())
            self._end_block()
            read_all = True
            self._flush_pending()
            self._wait_all()
            self._close_segment()
        except MetaCommandRefused as e:
            outcome.refused = str(e)
            self.stop(None)  # nothing after the refused line may run
        except _Stop:
            pass
        except BrokenPipeError:
            with contextlib.suppress(_Stop):
                self._close_segment()  # psql stopped (ON_ERROR_STOP): its messages say why
        except _NoPsql:
            self.stop(None)
            raise
        except (EOFError, OSError) as e:
            outcome.errors.append(f"dump stream unreadable after {raw.count if raw else 0} stored bytes: {e}")
            self.stop(None)
        except psycopg.Error as e:
            self.failures.append(f"parallel restore connection failed: {str(e).strip().splitlines()[0]}")
            self.stop(None)
        finally:
            timer.cancel()
            if raw is not None:
                raw.close()
            self._shutdown()
        outcome.errors = outcome.errors + self.failures[:50]
        nonzero = [c for c in self.segment_codes if c != 0]
        if self.failures or ((outcome.timed_out or outcome.refused) and not nonzero):
            outcome.exit_code = 3  # what psql's ON_ERROR_STOP gives
        else:
            outcome.exit_code = nonzero[0] if nonzero else 0
        outcome.payload_bytes, outcome.rows, outcome.scan = sent, scanner.rows, scanner
        if self.loads_exact and read_all:
            outcome.loaded = {k: n for k, n in self.loaded.items() if k not in self.unreported}
        outcome.large_objects = scanner.large_objects
        outcome.complete_marker = scanner.complete if read_all else None
        outcome.seconds = time.monotonic() - start
        outcome.spool_peak = self.spool.peak
        return outcome

    def _route(self, pieces: Sequence[bytes | memoryview]) -> int:
        events, self.scanner.events = self.scanner.events, []
        sent, ei, n = 0, 0, len(pieces)
        for i, piece in enumerate(pieces):
            sent += len(piece)
            if ei < len(events) and piece is events[ei].line:
                ev = events[ei]
                ei += 1
                if ev.kind == "data":
                    self._data(piece, last=False)
                else:
                    self._end_block()
                    if ev.kind == "header":
                        self._header(ev)
                    else:
                        self._sql(ev)
            else:
                # The block's last piece is followed by a line scan() returned, or ends a feed after
                # which the scanner is out of COPY data: it holds the `\.` line.
                last = (ei < len(events) and pieces[i + 1] is events[ei].line) if i + 1 < n \
                    else self.scanner.copy_target is None
                self._data(piece, last)
        if self.scanner.copy_target is None:
            self._end_block()
        if self.stopped.is_set():
            raise _Stop
        return sent

    def _data(self, piece: bytes | memoryview, last: bool) -> None:
        if self.skip_copy:
            return
        if self.copy_job is not None:
            assert self.copy_job.data is not None
            self.spool.wait_room(self.stopped)
            # Over the protocol the end of COPY data is CopyDone, not the `\.` line psql reads.
            self.copy_job.data.write(_strip_terminator(piece) if last else piece)
        elif self.inline_copy:
            self._segment().send_data(piece)

    def _end_block(self) -> None:
        if self.copy_job is not None:
            assert self.copy_job.data is not None
            self.copy_job.data.close()
            self.copy_job = None
        self.inline_copy = self.skip_copy = False

    def _header(self, ev: _Event) -> None:
        m = _STRICT_COPY.match(ev.line)
        if (self.copy_filter is not None and m is not None and not (self.pending or self.serial_stmt)
                and not self.copy_filter(m.group(1).decode(errors="replace"))):
            self.skip_copy = True  # scanned to its end by the scanner, loaded nowhere
            self._unreported(ev)
            return
        if self.in_tx or m is None or self.pending or self.serial_stmt:
            self._serial_line(ev, barrier=True)  # the serial way: header and data to psql
            self.inline_copy = True
            self._unreported(ev)
            return
        self.copied = True
        job = _Job("copy", ev.line, ev.no, _show(ev.line), frozenset({m.group(1)}), self._session_lines(),
                   _Data(self.work_dir, self.budget, self.spool), ev.target)
        self._submit(job)
        self.copy_job = job

    def _unreported(self, ev: _Event) -> None:
        if ev.target is not None:
            self.unreported.add(ev.target)

    def _sql(self, ev: _Event) -> None:
        line, start = ev.line, self.at_start
        self.at_start = ev.boundary
        if start and self.copied and _CHANGES_ROWS.match(line):
            self.loads_exact = False
        if self.pending:
            self.pending.append((line, ev.no))
            self.pending_size += len(line)
            if ev.boundary:
                self._flush_pending()
            elif self.pending_size > MAX_BUFFERED_STATEMENT:
                self._pending_to_serial()
            return
        if self.serial_stmt or not start:
            self._serial_line(ev, barrier=False)
            self.serial_stmt = not ev.boundary
            return
        stripped = line.strip()
        if ev.boundary and (not stripped or stripped.startswith(b"--")):
            return  # a blank line or a comment between statements: nothing to run
        if not ev.boundary:
            if line.startswith(_CANDIDATE):
                self.pending, self.pending_size = [(line, ev.no)], len(line)
            else:
                self._serial_line(ev, barrier=True)
                self.serial_stmt = True
            return
        self._statement(line, ev.no, [(line, ev.no)])

    def _statement(self, text: bytes, last_no: int, lines: list[tuple[bytes, int]]) -> None:
        """A whole statement (between two boundaries): decide where it runs."""
        one_line = len(lines) == 1
        if self.copied and not one_line and _CHANGES_ROWS.match(text):  # e.g. ALTER TABLE x\n RENAME TO y
            self.loads_exact = False
        if one_line and (m := _SET.match(text) or _SET_AUTH.match(text) or _SET_CONFIG.match(text)):
            key = m.group(1).lower() if m.re is not _SET_AUTH else b"session authorization"
            self.session.pop(key, None)
            self.session[key] = (last_no, text)
            self._send(lines, barrier=False, dirty=False)
            return
        if one_line and _EXTRA.match(text):
            self._send(lines, barrier=False, dirty=False)
            return
        if one_line and (_TX_START.match(text) or _TX_END.match(text)):
            # Inside a transaction block everything stays on psql: a connection of ours would not
            # see what the block has not committed yet.
            self.in_tx = _TX_START.match(text) is not None
            self._send(lines, barrier=False)
            return
        if self.in_tx:
            self._send(lines, barrier=True)  # it may read what the jobs still load
            return
        job = _parallel_item(text, last_no, lines[0][0], self._session_lines())
        if job is None:
            self._send(lines, barrier=True)
        else:
            self._submit(job)

    def _flush_pending(self) -> None:
        if not self.pending:
            return
        lines, self.pending, self.pending_size = self.pending, [], 0
        self._statement(b"".join(line for line, _ in lines), lines[-1][1], lines)

    def _pending_to_serial(self) -> None:
        lines, self.pending, self.pending_size = self.pending, [], 0
        self._send(lines, barrier=True)
        self.serial_stmt = True

    def _serial_line(self, ev: _Event, barrier: bool) -> None:
        self._send([(ev.line, ev.no)], barrier=barrier)

    def _send(self, lines: list[tuple[bytes, int]], barrier: bool, dirty: bool = True) -> None:
        if barrier:
            self._wait_all()
        seg = self._segment()
        for line, no in lines:
            seg.send(line, no)
        seg.dirty = seg.dirty or barrier or dirty

    def _segment(self) -> _Segment:
        if self.segment is None:
            try:
                self.segment = _Segment(self.endpoint, sorted(self.session.values()))
            except FileNotFoundError as e:
                raise _NoPsql(e.errno, e.strerror, e.filename) from None
        return self.segment

    def _close_segment(self) -> None:
        seg, self.segment = self.segment, None
        if seg is None:
            return
        code = seg.close()
        self.segment_codes.append(code)
        self._psql_messages(seg)
        if code != 0:
            self.stop(None)
            raise _Stop

    def _psql_messages(self, seg: _Segment) -> None:
        def to_dump(text: str) -> str:
            m = _PSQL_LINE.match(text)
            if not m:
                return text
            # restore._psql_messages reads line N of psql's input as dump line N - 1 (its \restrict).
            return f"psql:<stdin>:{seg.dump_line(int(m.group(1))) + 1}: {text[m.end():]}"

        psql_messages([to_dump(t) for t in seg.lines], self.scanner, self.outcome)

    def _session_lines(self) -> tuple[bytes, ...]:
        return tuple(line for _, line in sorted(self.session.values()))

    # -- the parallel work ------------------------------------------------------------------

    def _connect(self) -> None:
        for i in range(self.jobs):
            conn = self.endpoint.connect(autocommit=True)
            self.conns.append(conn)
            t = threading.Thread(target=self._worker, args=(conn,), name=f"restore-{i}", daemon=True)
            self.threads.append(t)
            t.start()

    def _submit(self, job: _Job) -> None:
        if self.segment is not None and self.segment.dirty:
            self._close_segment()  # the job may need all of it: the table, the index's key
        with self.lock:
            while not self.stopped.is_set() and any(_conflict(r, job) for r in self.running):
                self.lock.wait(0.5)
            if self.stopped.is_set():
                raise _Stop
            self.running.append(job)
            self.queue.append(job)
            jobs = self.outcome.parallel_jobs
            jobs[job.kind] = jobs.get(job.kind, 0) + 1
            self.lock.notify_all()

    def _wait_all(self) -> None:
        with self.lock:
            while self.running and not self.stopped.is_set():
                self.lock.wait(0.5)
        if self.stopped.is_set():
            raise _Stop

    def _worker(self, conn: psycopg.Connection) -> None:
        current: list[_Job | None] = [None]
        applied: tuple[bytes, ...] = ()

        def notice(diag: psycopg.errors.Diagnostic) -> None:
            job = current[0]
            if job is not None and diag.severity_nonlocalized == "WARNING" and len(self.outcome.warnings) < 50:
                self.outcome.warnings.append(f"dump line {job.line_no}: WARNING: {diag.message_primary} "
                                             f"| line: {job.first_line}")

        conn.add_notice_handler(notice)
        while True:
            with self.lock:
                while not self.queue and not self.stopped.is_set():
                    self.lock.wait()
                if self.stopped.is_set():
                    return
                job = self.queue.popleft()
            current[0] = job
            try:
                if job.session != applied:
                    for line in job.session:
                        conn.execute(line)
                    applied = job.session
                if job.data is not None:
                    self._copy(conn, job)
                else:
                    conn.execute(job.sql, binary=True)  # binary: the extended protocol, one statement only
            except psycopg.Error as e:
                if not self.stopped.is_set():
                    self._fail(job, e)
            finally:
                if job.data is not None:
                    job.data.release()
                current[0] = None
                with self.lock:
                    self.running.remove(job)
                    self.lock.notify_all()

    def _copy(self, conn: psycopg.Connection, job: _Job) -> None:
        assert job.data is not None
        with conn.transaction(), conn.cursor() as cur:
            (table,) = job.tables
            _skip_wal(conn, table)
            with cur.copy(job.sql) as copy:
                read, write = job.data.read, copy.write
                while (piece := read()) is not None:
                    write(piece)
                if job.data.cancelled:
                    raise psycopg.errors.QueryCanceled("restore stopped")
            # The server's own count from the COPY's command tag: the rows it stored.
            loaded = cur.rowcount
        if job.target is not None:
            with self.lock:
                if loaded < 0:
                    self.unreported.add(job.target)
                self.loaded[job.target] = self.loaded.get(job.target, 0) + max(loaded, 0)

    def _fail(self, job: _Job, e: psycopg.Error) -> None:
        diag = e.diag
        line = job.line_no
        if job.kind == "copy" and diag.context and (m := re.search(r"\bline (\d+)\b", diag.context)):
            line = job.line_no + int(m.group(1))  # COPY's own count: data line N is header + N
        msg = (f"dump line {line}: ERROR: {(diag.message_primary or str(e)).strip()} "
               f"| line: {job.first_line}")
        for extra in (diag.message_detail and f"DETAIL: {diag.message_detail}",
                      *(f"CONTEXT: {c}" for c in (diag.context or "").splitlines()[:3])):
            if extra:
                msg += f"\n    {extra[:200]}"  # rows quoted here are withheld before any report (redact.py)
        with self.lock:
            self.failures.append(msg)
        self.stop(None)

    # -- stopping ---------------------------------------------------------------------------

    def _expire(self) -> None:
        self.outcome.timed_out = True
        self.stop(None)

    def stop(self, why: str | None) -> None:
        """Stop everything at once: psql killed, every running statement cancelled, spools dropped."""
        if self.stopped.is_set():
            return
        self.stopped.set()
        if self.segment is not None:
            self.segment.kill()
        with self.lock:
            jobs = list(self.running)
            self.lock.notify_all()
        for job in jobs:
            if job.data is not None:
                job.data.close(cancel=True)
        for conn in self.conns:
            with contextlib.suppress(Exception):  # a connection already gone needs no cancel
                conn.cancel_safe(timeout=5)

    def _shutdown(self) -> None:
        if self.stopped.is_set() and self.segment is not None:
            seg, self.segment = self.segment, None
            seg.kill()
            self.segment_codes.append(seg.close())
            self._psql_messages(seg)
        elif self.segment is not None:
            try:
                self._close_segment()
            except _Stop:
                pass
        self.stopped.set()
        with self.lock:
            self.lock.notify_all()
            jobs = list(self.running)
        for job in jobs:
            if job.data is not None:
                job.data.close(cancel=True)
        for t in self.threads:
            t.join(30)
        for job in jobs:
            if job.data is not None:
                job.data.release()
        for conn in self.conns:
            conn.close()


# A table this restore may empty before its COPY, in the COPY's transaction, as pg_restore -j does:
# with wal_level = minimal the load then writes no WAL. Only a plain table nothing else watches (no
# trigger: no foreign key either, no row security, not an extension's) that the role may truncate.
_TRUNCATABLE = """
SELECT current_setting('wal_level') = 'minimal' AND c.relkind = 'r' AND NOT c.relhastriggers
   AND NOT c.relrowsecurity AND has_table_privilege(c.oid, 'TRUNCATE, SELECT')
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                   AND d.deptype = 'e')
FROM pg_class c WHERE c.oid = to_regclass(%s)
"""


def _skip_wal(conn: psycopg.Connection, table: bytes) -> None:
    """TRUNCATE the COPY's table first when that removes nothing: locked, then seen empty.

    The name matched _QUAL (identifiers only) and the statements go through the extended protocol;
    a table that already holds rows (an INSERT before, a second COPY) is loaded as it is.
    """
    row = conn.execute(_TRUNCATABLE, (table.decode("utf-8", "surrogateescape"),)).fetchone()
    if not (row and row[0]):
        return
    conn.execute(b"LOCK TABLE ONLY " + table + b" IN ACCESS EXCLUSIVE MODE", binary=True)
    if conn.execute(b"SELECT NOT EXISTS (SELECT 1 FROM ONLY " + table + b")", binary=True).fetchone() == (True,):
        conn.execute(b"TRUNCATE ONLY " + table, binary=True)


def _conflict(running: _Job, job: _Job) -> bool:
    """Whether `job` must wait for `running`.

    Never two jobs on one table: an index or key built while its table still loads would be
    slower, never wrong, but statements that wait for each other's locks tie up connections.
    A foreign key waits for everything before it (it needs the key it references, built by
    some other job) and everything after a foreign key waits for it.
    """
    return bool(running.tables & job.tables) or (running.kind != job.kind and "fk" in (running.kind, job.kind))


def _show(line: bytes) -> str:
    return line.decode(errors="replace").strip()[:200]


def _strip_terminator(piece: bytes | memoryview) -> bytes | memoryview:
    """The block's last piece without its `\\.` line."""
    for end in (b"\\.\n", b"\\.\r\n"):
        k = len(end)
        if len(piece) >= k and piece[-k:] == end and (len(piece) == k or piece[-k - 1:-k] == b"\n"):
            return piece[:-k]
    return piece


def _parallel_item(text: bytes, last_no: int, first: bytes, session: tuple[bytes, ...]) -> _Job | None:
    if (m := _INDEX.match(text)) is not None:
        return _Job("build", text, last_no, _show(first), frozenset({m.group(1)}), session)
    if (m := _KEY.match(text)) is not None:
        return _Job("build", text, last_no, _show(first), frozenset({m.group(1)}), session)
    if (m := _FK.match(text)) is not None:
        return _Job("fk", text, last_no, _show(first), frozenset({m.group(1), m.group(2)}), session)
    return None


def restore_parallel(source: DumpSource, endpoint: Endpoint, jobs: int, time_limit: float,
                     janitor: Janitor, work_dir: Path | None = None, progress: Progress | None = None,
                     copy_filter: Callable[[str], bool] | None = None) -> RestoreOutcome:
    return ParallelRestore(source, endpoint, jobs, time_limit, janitor,
                           work_dir or Path(tempfile.gettempdir()), progress, copy_filter).run()
