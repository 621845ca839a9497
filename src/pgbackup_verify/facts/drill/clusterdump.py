"""The drill of a pg_dumpall cluster dump: its roles and every database, in the throwaway sandboxed cluster.

pg_dumpall writes a *globals* part (roles, their attributes and passwords, memberships, role
settings, tablespaces), then, per database, pg_dump's output joined by psql `\\connect` lines. The
drill restores it without ever handing the dump a superuser or a meta-command:

- **The globals part is never executed.** It goes through the same COPY-aware scan as every plain
  dump (any meta-command refused), and the drill reads from it only role names (`CREATE ROLE x`)
  and memberships between them (`GRANT a TO b`). Each role becomes a plain owner role, exactly as
  `[drill].roles` are (drillcluster.py): NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  NOBYPASSRLS, no password, a member of `pgbv_owners`, with the restore role a member of it. Made
  by the drill's superuser from the names alone (quoted as identifiers). What the dump asked for
  (`ALTER ROLE boss WITH SUPERUSER LOGIN ... PASSWORD '...'`) is recorded, never run; a membership
  is granted only between roles of the dump (never in a predefined `pg_*` role such as
  pg_execute_server_program, never in the drill's own `pgbv_*` roles, which a dump may not name
  either). Role settings, tablespaces, privileges on parameters and comments are counted as not run.
  The dump's superusers (`postgres` and any role it gave SUPERUSER) become, like `postgres` always
  was here, plain roles that are members of every owner role: they could read everything there.
- **Each database part runs in its own psql**, as the plain restore role, under `\\restrict` with a
  key of ours, connected by the drill (not by the dump) to the database its `\\connect` names. Only
  pg_dumpall's own forms are allowed, each alone on its line between statements: `\\connect name`
  (pg_dumpall's `template1` / `postgres`, fmtId-quoted names) and pg_dump's
  `\\connect -reuse-previous=on "dbname='it\\'s'"` with the `\\encoding SQL_ASCII` line it writes
  before it (dropped: the new psql starts clean and the dump sets its client encoding again). Any
  other meta-command, and `\\connect` in any other form (host, user, options), is refused and stops
  the restore at that line.
- **Databases**: the restore role has CREATEDB in this cluster (only here, only for a cluster dump),
  so the dump's own `CREATE DATABASE ... TEMPLATE template0 ENCODING ... LOCALE ...` runs as written
  (a locale the host lacks is a finding), and so does `ALTER DATABASE ... OWNER TO` a dump role.
  `template1` and `postgres` of the drill's cluster are handed to the restore role first (pg_dumpall
  restores into them). Before a database's part runs, the drill's superuser lets the owner roles
  create in its `public` schema and in each schema the dump creates (the event trigger of
  drillcluster.py), removed again before the catalog is read. pg_dump's `ALTER ROLE ... IN DATABASE
  ... SET` (a role setting; the restore role may not alter roles) is dropped like the globals' ones.
- A cluster dump restores only in throwaway mode (its databases keep their own names: never on a
  server of the user's), serially (one psql at a time), and in full whatever `[drill].tier` says.

Rows are counted per database (each part's COPY blocks and INSERTs by its own scan); the schema and
table expectations apply to the one database `[drill].database` names (default: the database of
`[database].dsn`).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pgbackup_verify.facts.drill.drillcluster import ADMIN, OWNERS, RESTORER, SOURCE_SUPERUSER, DrillCluster, Endpoint
from pgbackup_verify.facts.drill.restore import (
    CHUNK,
    Counting,
    Progress,
    RestoreOutcome,
    _collect,
    _kill,
    _watchdog,
    psql_messages,
)
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.dumps.compression import compression_of_fmt, open_payload, payload_reader
from pgbackup_verify.facts.dumps.gzipscan import CLUSTER_FOOTER, CLUSTER_HEADER
from pgbackup_verify.facts.dumps.plainscan import MetaCommandRefused, PlainDumpScanner, _ident_text, _tokens
from pgbackup_verify.facts.dumps.source import DumpSource

# pg_dumpall's `\connect template1|postgres` and pg_dump's appendPsqlMetaConnect(): fmtId(name) for a
# name of [A-Za-z0-9_.] only, else `-reuse-previous=on` and fmtId("dbname=" + appendConnStrVal(name)).
_CONNECT_NAME = re.compile(rb'\\connect (?:([a-z_][a-z0-9_]*)|"((?:[^"\r\n]|"")+)")\r?\n?\Z')
_CONNECT_REUSE = re.compile(rb'\\connect -reuse-previous=on "((?:[^"\r\n]|"")+)"\r?\n?\Z')
_CONNSTR = re.compile(rb"dbname='((?:[^'\\]|\\.)+)'\Z", re.S)
_ENCODING = re.compile(rb"\\encoding SQL_ASCII\r?\n?\Z")
_ROLE_IN_DB = re.compile(rb"ALTER ROLE .+ IN DATABASE .+;\r?\n\Z", re.S)
# Attributes a role of the dump never gets here, as ALTER/CREATE ROLE writes them.
POWERS = ("SUPERUSER", "LOGIN", "REPLICATION", "BYPASSRLS", "CREATEROLE", "CREATEDB", "PASSWORD")
RESERVED = (ADMIN, RESTORER, OWNERS)
MAX_GLOBAL_STATEMENT = 1 << 20
CLUSTER_DATABASES = ("template1", "postgres")  # exist in every cluster: pg_dumpall connects to them, never creates


def connect_target(line: bytes) -> str | None:
    """The database of a `\\connect` line in exactly pg_dumpall's (or pg_dump's) form; else None."""
    m = _CONNECT_NAME.match(line)
    if m:
        raw = m.group(1) or m.group(2).replace(b'""', b'"')
    else:
        m = _CONNECT_REUSE.match(line)
        if m is None:
            return None
        inner = _CONNSTR.match(m.group(1).replace(b'""', b'"'))
        if inner is None:
            return None
        raw = re.sub(rb"\\(.)", rb"\1", inner.group(1), flags=re.S)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Switch(bytes):
    """What ClusterScanner.scan returns for an allowed `\\connect`: the driver switches databases here."""

    db: str
    line_no: int


class ClusterMetaCommandRefused(MetaCommandRefused):
    """A meta-command of a cluster dump that is not one of pg_dumpall's own."""

    def __init__(self, line_no: int, text: str) -> None:
        what = " (not one of pg_dumpall's own \\connect forms)" if text.startswith("\\c") else ""
        Exception.__init__(self, f"dump line {line_no}: psql meta-command refused: {text}{what}")
        self.line_no = line_no
        self.text = text


@dataclass
class Globals:
    """What the globals part of the dump says about roles; none of its statements is executed."""

    roles: dict[str, list[str]] = field(default_factory=dict)  # role -> powers the dump gave it (not given here)
    memberships: list[tuple[str, str]] = field(default_factory=list)  # (role, member) as the dump grants them
    reserved: list[str] = field(default_factory=list)  # role names the dump may not use here (pg_*, pgbv_*)
    not_run: dict[str, int] = field(default_factory=dict)  # statements of the globals part not run, by kind

    def superusers(self) -> list[str]:
        return [r for r, powers in self.roles.items() if "SUPERUSER" in powers]

    def _skip(self, kind: str) -> None:
        self.not_run[kind] = self.not_run.get(kind, 0) + 1

    def statement(self, toks: list[tuple[str, bytes]]) -> None:
        words = [t[1].lower() if t[0] == "i" else b"" for t in toks[:3]]
        if not toks or words[0] in (b"set", b"select"):
            return  # session settings of the psql pg_dumpall wrote for
        if words[:2] == [b"create", b"role"] and len(toks) > 2 and toks[2][0] in "qi":
            self._role(_ident_text(toks[2], "utf-8"), toks[3:])
        elif words[:2] == [b"alter", b"role"] and len(toks) > 3 and toks[2][0] in "qi":
            name = _ident_text(toks[2], "utf-8")
            rest = [t[1].lower() for t in toks[3:] if t[0] == "i"]
            if rest[:1] in ([b"set"], [b"reset"], [b"in"]):
                self._skip("role settings (ALTER ROLE ... SET)")
            elif rest[:1] == [b"rename"]:
                self._skip("ALTER ROLE ... RENAME")
            else:
                self._role(name, toks[3:])
        elif words[0] == b"grant" and not any(t[0] == "i" and t[1].lower() == b"on" for t in toks):
            self._grant(toks[1:])
        else:
            head = b" ".join(t[1] for t in toks[:2] if t[0] == "i").decode(errors="replace").upper() or "other"
            self._skip(head)

    def _role(self, name: str, options: list[tuple[str, bytes]]) -> None:
        if name.startswith("pg_") or name in RESERVED:
            if name not in self.reserved:
                self.reserved.append(name)
            return
        powers = self.roles.setdefault(name, [])
        words = [t[1].upper().decode(errors="replace") if t[0] == "i" else "" for t in options]
        for i, w in enumerate(words):
            asked = w == "PASSWORD" and i + 1 < len(options) and options[i + 1][0] == "s"
            if ((w in POWERS and w != "PASSWORD") or asked) and w not in powers:
                powers.append(w)
            elif w.startswith("NO") and w[2:] in powers:
                powers.remove(w[2:])

    def _grant(self, toks: list[tuple[str, bytes]]) -> None:
        """GRANT a[, b] TO m[, n] [WITH ...] [GRANTED BY x]: the (role, member) pairs."""
        names: list[list[str]] = [[]]
        for t in toks:
            if t[0] == "i" and t[1].lower() == b"to" and len(names) == 1:
                names.append([])
            elif t[0] == "i" and t[1].lower() in (b"with", b"granted") and len(names) == 2:
                break
            elif t[0] in "qi":
                names[-1].append(_ident_text(t, "utf-8"))
            elif t != ("p", b","):
                self._skip("GRANT (other form)")
                return
        if len(names) != 2:
            self._skip("GRANT (other form)")
            return
        self.memberships += [(role, member) for role in names[0] for member in names[1]]


@dataclass
class ClusterScanner(PlainDumpScanner):
    """The drill's scan, reading a cluster dump: pg_dumpall's `\\connect` lines become Switch pieces,
    the globals part is read (and sent nowhere), and each database's loads are counted apart."""

    globals: Globals = field(default_factory=Globals)
    databases: dict[str, PlainDumpScanner] = field(default_factory=dict)  # database -> what its parts load
    order: list[str] = field(default_factory=list)  # databases as the dump connects to them
    dropped: dict[str, int] = field(default_factory=dict)  # statements of database parts not sent, by kind
    cluster_complete: bool = False
    in_globals: bool = True
    _db: str | None = None
    _stmt: bytearray = field(default_factory=bytearray)
    _stmt_over: bool = False

    def scan(self, line: bytes) -> bytes:
        between = self.copy_target is None and self.between_statements
        if between and line.startswith(b"\\"):
            db = connect_target(line)
            if db is not None or _ENCODING.match(line):
                self.line_no += 1
                self.recent.append((self.line_no, line[:300]))
                if db is None:
                    return b"\n"
                self._switch(db)
                piece = Switch(b"")
                piece.db, piece.line_no = db, self.line_no
                return piece
        if between and line.startswith(CLUSTER_FOOTER.encode()):
            self.cluster_complete = True
        restricts = self.dropped_restrict
        out = super().scan(line)
        if self.in_globals:
            if self.dropped_restrict == restricts:  # pg_dumpall's own \restrict lines are no statement
                self._global_line(line)
            return b""
        if between and self.between_statements and _ROLE_IN_DB.match(line):
            toks = _tokens(line)
            if [t for t in toks if t == ("p", b";")] == [toks[-1]]:
                kind = "role settings in a database (ALTER ROLE ... IN DATABASE ... SET)"
                self.dropped[kind] = self.dropped.get(kind, 0) + 1
                return b"\n"  # one line for one line: psql's line numbers stay the dump's
        return out

    def _refuse(self, line: bytes) -> None:
        raise ClusterMetaCommandRefused(self.line_no, line.decode(errors="replace").rstrip("\r\n")[:200])

    def _global_line(self, line: bytes) -> None:
        if self.copy_target is not None:
            return
        if len(self._stmt) + len(line) > MAX_GLOBAL_STATEMENT:
            self._stmt_over = True
        elif not self._stmt_over:
            self._stmt += line
        if self.between_statements:
            if self._stmt_over:
                self.globals._skip("statement too long to read")
            else:
                toks = _tokens(bytes(self._stmt))
                start = 0
                for i, t in enumerate(toks):
                    if t == ("p", b";"):
                        self.globals.statement(toks[start:i])
                        start = i + 1
            self._stmt, self._stmt_over = bytearray(), False

    def _switch(self, db: str) -> None:
        self._close_part()
        self.in_globals = False
        self._db = db
        if db not in self.databases:
            self.databases[db] = PlainDumpScanner()
            self.order.append(db)

    def _close_part(self) -> None:
        """Move what the part just read loads into its database's account, and start a new one."""
        if self._db is not None:
            acc = self.databases[self._db]
            for k, n in self.rows.items():
                acc.rows[k] = acc.rows.get(k, 0) + n
            acc.targets.update(self.targets)
            acc.uncounted.update(self.uncounted)
            acc.refreshed += self.refreshed
            acc.copy_blocks += self.copy_blocks
            acc.insert_statements += self.insert_statements
            acc.large_objects += self.large_objects
            acc.complete = acc.complete or self.complete
        self.rows, self.targets, self.uncounted, self.refreshed = {}, {}, {}, []
        self.copy_blocks = self.insert_statements = self.large_objects = 0
        self.complete = False

    def finish(self) -> list[bytes]:
        out = super().finish()
        self._close_part()
        return out


def is_cluster_dump(source: DumpSource) -> bool:
    """Does the plain dump start with pg_dumpall's header? (Its first lines, decompressed.)"""
    buf = bytearray(4096)
    with source.open() as raw:
        # Unbuffered, one small read: the header of a cut or damaged stream is still read (the restore says the rest).
        reader = payload_reader(raw, compression_of_fmt(source.fmt))
        try:
            n = reader.readinto(buf)
        except (EOFError, OSError):
            n = 0
        head = bytes(buf[:n])
    lines = [ln.strip() for ln in head.decode("utf-8", "replace").splitlines()[:20]]
    meaningful = [ln for ln in lines if ln and ln != "--"]
    return bool(meaningful) and meaningful[0] == CLUSTER_HEADER


@dataclass
class ClusterRestore:
    """What the drill did with the cluster dump beside running its SQL."""

    scanner: ClusterScanner
    roles_made: list[str] = field(default_factory=list)
    grants: list[str] = field(default_factory=list)  # memberships granted, "role to member"
    not_granted: list[str] = field(default_factory=list)  # memberships skipped, with why
    powers: dict[str, list[str]] = field(default_factory=dict)  # role of the dump -> powers it HAS in the drill

    @property
    def globals(self) -> Globals:
        return self.scanner.globals


def make_roles(cluster: DrillCluster, known: Sequence[str], result: ClusterRestore) -> None:
    """The dump's roles as plain owner roles, and the memberships among them (the drill's superuser)."""
    g = result.globals
    new = [r for r in g.roles if r not in known]
    superusers = [SOURCE_SUPERUSER, *g.superusers()]
    cluster.add_owners(new, superusers)
    result.roles_made = new
    owners = set(known) | set(new)
    for role, member in g.memberships:
        if role not in owners or member not in owners:
            bad = role if role not in owners else member
            why = "a predefined or drill role" if bad.startswith(("pg_", "pgbv_")) else "not a role of the dump"
            result.not_granted.append(f"{role} to {member} ({bad}: {why})")
            continue
        problem = cluster.grant_membership(role, member)
        if problem:
            result.not_granted.append(f"{role} to {member} ({problem})")
        else:
            result.grants.append(f"{role} to {member}")


class _Segment:
    """One psql for one database part, fed by the driver; its messages name the dump's lines."""

    def __init__(self, endpoint: Endpoint, db: str, first_line: int, deadline: float, janitor: Janitor,
                 outcome: RestoreOutcome) -> None:
        self.db, self.first_line = db, first_line
        argv, kwargs = endpoint.command(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", endpoint.conninfo,
                                         "-f", "-"])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     **kwargs)
        proc = self.proc
        janitor.add(f"psql ({db})", lambda: _kill(proc))
        assert proc.stdin is not None and proc.stderr is not None
        self.lines: list[str] = []
        self.reader = _collect(proc.stderr, self.lines)
        self.timer = _watchdog(proc, deadline - time.monotonic(), outcome)
        self.write = proc.stdin.write
        # A key the dump cannot know: its own \unrestrict can never lift it.
        self.write(f"\\restrict {secrets.token_hex(16)}\n".encode())

    def close(self, scanner: ClusterScanner, outcome: RestoreOutcome, kill: bool = False) -> int:
        if kill:
            _kill(self.proc)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        code = self.proc.wait()
        self.timer.cancel()
        self.reader.join(5)
        # psql's line 1 is our \restrict, its line 2 the dump's line after the \connect.
        psql_messages(self.lines, scanner, outcome, offset=self.first_line - 1)
        return code


def restore_cluster(source: DumpSource, cluster: DrillCluster, known_roles: Sequence[str], time_limit: float,
                    janitor: Janitor, progress: Progress | None = None, globals_only: bool = False
                    ) -> tuple[RestoreOutcome, ClusterRestore]:
    """Stream the cluster dump once: globals read (never run), each database part into its own psql.

    `globals_only`: a `pg_dumpall --globals-only` file read before a pg_dump restores ([drill].globals_glob):
    its roles are made, and a `\\connect` in it (a database part) is refused."""
    outcome = RestoreOutcome(tool="psql per database (pg_dumpall cluster dump)")
    outcome.complete_text = CLUSTER_FOOTER
    scanner = ClusterScanner()
    result = ClusterRestore(scanner)
    start = time.monotonic()
    deadline = start + time_limit
    raw = Counting(source.open())
    stream = open_payload(source, raw)
    seg: _Segment | None = None
    sent, last, read_all, roles_done, stop, worst = 0, start, False, False, False, 0
    try:
        while not stop and (chunk := stream.read(CHUNK)):
            for piece in scanner.feed(chunk):
                if isinstance(piece, Switch) and globals_only:
                    raise ClusterMetaCommandRefused(piece.line_no, f"\\connect to {piece.db}: a --globals-only "
                                                    "file holds no database part")
                if isinstance(piece, Switch):
                    if seg is not None:
                        code, seg = seg.close(scanner, outcome), None
                        worst = worst or code
                        if code != 0 or outcome.timed_out:
                            stop = True  # ON_ERROR_STOP: nothing after the failed part runs
                            break
                    if not roles_done:
                        make_roles(cluster, known_roles, result)
                        cluster.allow_createdb()
                        roles_done = True
                    cluster.prepare_database(piece.db)
                    seg = _Segment(cluster.restorer(piece.db), piece.db, piece.line_no + 1, deadline, janitor,
                                   outcome)
                elif seg is not None and piece:
                    seg.write(piece)
                    sent += len(piece)
            now = time.monotonic()
            if now > deadline and not stop:
                outcome.timed_out = stop = True
            if progress and now - last >= 1.0:
                progress(sent, raw.count, source.size, now - start)
                last = now
        if not stop:
            for piece in scanner.finish():
                if seg is not None and piece:
                    seg.write(piece)
                    sent += len(piece)
            read_all = True
    except MetaCommandRefused as e:
        outcome.refused = str(e)
        if seg is not None:
            worst = worst or seg.close(scanner, outcome, kill=True)  # nothing after the refused line may run
            seg = None
    except BrokenPipeError:
        pass  # psql stopped (ON_ERROR_STOP or killed): its stderr says why
    except (EOFError, OSError) as e:
        outcome.errors.append(f"dump stream unreadable after {raw.count} stored bytes: {e}")
        if seg is not None:
            worst = worst or seg.close(scanner, outcome, kill=True)
            seg = None
    finally:
        raw.close()
        if seg is not None:
            worst = worst or seg.close(scanner, outcome)
    if not roles_done and outcome.refused is None:  # a globals-only file: its roles are all there is
        make_roles(cluster, known_roles, result)
    outcome.exit_code = worst
    result.powers = cluster.role_powers([*result.roles_made, *known_roles])
    outcome.payload_bytes = sent
    outcome.complete_marker = scanner.cluster_complete if read_all else None
    outcome.seconds = time.monotonic() - start
    return outcome, result


__all__ = ["ClusterRestore", "ClusterScanner", "Globals", "connect_target", "is_cluster_dump", "restore_cluster"]
