"""The restore drill: restore one dump somewhere disposable, read back what arrived, clean up.

`run_drill(target)` returns `DrillFacts`; the checks in checks/test_drill.py assert on them.
The drill itself never fails a check: it records errors, refusals and aborts as facts.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import psycopg.conninfo
from psycopg import sql

from pgbackup_verify.config import DrillSection, Target
from pgbackup_verify.facts.catalog import Catalog, read_catalog
from pgbackup_verify.facts.db import DatabaseUnreachable, connect_readonly, scalar
from pgbackup_verify.facts.drill import extensions, owner, safety, sandbox, tiers
from pgbackup_verify.facts.drill.cluster import CLUSTER_PREFIX, OWNER_FILE, read_private
from pgbackup_verify.facts.drill.clusterdump import ClusterRestore, is_cluster_dump, restore_cluster
from pgbackup_verify.facts.drill.drillcluster import DrillCluster, Endpoint
from pgbackup_verify.facts.drill.relations import resolve
from pgbackup_verify.facts.drill.restore import Progress, RestoreOutcome, restore_custom, restore_plain
from pgbackup_verify.facts.dumps.gzipscan import ARCHIVE_FORMATS
from pgbackup_verify.facts.dumps.plainscan import PlainDumpScanner, display_name
from pgbackup_verify.facts.dumps.source import DumpSource, NoDumpFound, from_path, newest_dump
from pgbackup_verify.facts.grants import dump_job


@dataclass
class DrillFacts:
    target: str
    mode: str
    skipped: str | None = None  # [drill].mode = off
    aborted: str | None = None  # the drill could not run to the end; why
    source: str = ""
    source_path: str = ""  # the local file restored ("" for an offsite member): dump checks judged it too
    fmt: str = ""
    stored_bytes: int | None = None
    database: str = ""
    where: str = ""
    isolation: str = ""  # how the restore was contained (sandbox.py), for every report's header
    extensions: list[str] = field(default_factory=list)  # created by the superuser step (extensions.py)
    outcome: RestoreOutcome | None = None
    restored: Catalog | None = None
    live: Catalog | None = None  # expectations read from the live catalog (asked, or nothing written)
    expected_from: str = ""  # where `live` came from, for the evidence; "" when not read
    rows: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # table or tree -> (dump, restored)
    row_scope: dict[str, str] = field(default_factory=dict)  # partition tree compared whole -> what it holds
    row_keys: dict[str, list[str]] = field(default_factory=dict)  # shown name -> its COPY/INSERT targets as written
    rows_read: str = ""  # where the dump's rows came from: COPY blocks, INSERT statements
    rows_restored: str = ""  # how the restored side was counted: rows the COPYs reported, count(*)
    row_count_seconds: float = 0.0  # reading the restored side's rows (the restore not included)
    rows_uncounted: dict[str, str] = field(default_factory=dict)  # target -> why its rows are not compared
    matviews: dict[str, int | None] = field(default_factory=dict)  # refreshed by the dump -> rows (None: empty)
    lo_dump: int | None = None  # large objects in the dump
    lo_restored: int | None = None
    lo_live: int | None = None  # in the live database, with [drill].expect_live_catalog
    sweep_log: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)
    lock_wait: float = 0.0
    disk: str = ""
    seconds: float = 0.0
    tier: tiers.TierPlan | None = None  # what today's drill restored (facts/drill/tiers.py)
    cluster: ClusterRestore | None = None  # a pg_dumpall dump: its roles and databases (clusterdump.py)
    databases: list[str] = field(default_factory=list)  # a pg_dumpall dump: the databases restored, in order
    globals_source: str = ""  # [drill].globals_glob: the globals-only file whose roles were made first


def drill_config(target: Target) -> DrillSection:
    return target.drill or DrillSection()


def expected_schemas(target: Target) -> tuple[str, ...]:
    return drill_config(target).expected_schemas or target.backups.expected_schemas


LIVE_ASKED = "expected from the live catalog ([drill].expect_live_catalog = true)"
LIVE_DEFAULT = ("expected from the live catalog: its schemas and tables, since the target file writes no "
                "[drill].expected_schemas, [drill].min_tables or [backups].expected_schemas")


def live_expectation(target: Target) -> str:
    """Why the drill reads the live catalog as its expectation, or "" when it does not.

    A target without written expectations (the natural minimal file) expects what the live
    database holds, so that a schema the dump lost still fails the drill; asked for explicitly,
    sequences, views and functions are expected by name too.
    """
    d = drill_config(target)
    if d.expect_live_catalog:
        return LIVE_ASKED
    if not (expected_schemas(target) or d.min_tables):
        return LIVE_DEFAULT
    return ""


def db_name(prefix: str) -> str:
    return f"{prefix}{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}"


class _Site:
    """Where the restore lands; create() registers its own cleanup with the janitor."""

    def __init__(self, d: DrillSection, work_dir: Path, janitor: safety.Janitor) -> None:
        self.d, self.work_dir, self.janitor = d, work_dir, janitor
        self.name = safety.guard_name(db_name(d.prefix), d.prefix)
        self.where = self.isolation = ""
        self.endpoint = Endpoint("")
        self.admin: Endpoint | None = None  # the throwaway cluster's superuser, for the narrow steps
        self.after_restore: Callable[[], None] = lambda: None
        self.cluster: DrillCluster | None = None

    def create(self) -> None:
        if self.d.mode == "throwaway":
            box = sandbox.resolve(self.d.sandbox)  # fails closed: SandboxUnavailable names what is missing
            self.isolation = box.describe()
            cluster = DrillCluster(box, base=self.work_dir, tag=safety.CLUSTER_TAG)  # marks its owner
            self.janitor.add(f"cluster {cluster.root}", cluster.stop)
            self.where = cluster.where
            cluster.start()
            self.cluster = cluster
            # `postgres` too: the superuser here is pgbv_admin, so a dump's OWNER TO postgres is a plain owner.
            self.endpoint = cluster.prepare_restore(self.name, ("postgres", *self.d.roles))
            self.admin = cluster.admin(self.name)
            self.after_restore = lambda: cluster.after_restore(self.name)
            return
        params = psycopg.conninfo.conninfo_to_dict(self.d.server_dsn)
        self.where = f"server {params.get('host', 'local socket')}:{params.get('port', 5432)}"
        with psycopg.connect(self.d.server_dsn, autocommit=True, connect_timeout=10) as conn:
            powers = safety.refuse_superuser(conn, self.d)
            self.isolation = (f"scratch database, restored as {conn.info.user!r}" + (
                f" ({powers}: SUPERUSER RESTORE allowed by [drill].allow_superuser_restore)" if powers else ""))
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(self.name)))
            self.janitor.add(f"database {self.name}", self.drop)
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(self.name), sql.Literal(owner.owner_mark())))
        self.endpoint = Endpoint(self.d.server_dsn).for_db(self.name)

    def drop(self) -> None:
        with psycopg.connect(self.d.server_dsn, autocommit=True, connect_timeout=10) as conn:
            safety.drop_database(conn, self.name, self.d.prefix)


def _leftovers(d: DrillSection, work_dir: Path) -> list[str]:
    """What is left after this drill's cleanup: its own objects, and those of runs that have ended; not
    the cluster or database another drill running now (with another lock file) is using."""
    found = [str(p) for p in safety.local_leftovers(work_dir)
             if not safety.in_use_elsewhere(read_private(p / OWNER_FILE))]
    if d.mode == "scratch":
        with psycopg.connect(d.server_dsn, autocommit=True, connect_timeout=10) as conn:
            found += [f"database {n}" for n, mark in safety.server_leftovers(conn, d.prefix)
                      if not safety.in_use_elsewhere(mark)]
    return found


def _count(conn: psycopg.Connection, schema: str, table: str, only: bool) -> int:
    q = sql.SQL("SELECT count(*) FROM {}{}.{}").format(sql.SQL("ONLY " if only else ""), sql.Identifier(schema),
                                                        sql.Identifier(table))
    return int(scalar(conn, q) or 0)


# Anything that may remove or move rows after a COPY stored them: then only count(*) says what arrived.
_MAY_DROP_ROWS = """
SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE NOT tgisinternal)
    OR EXISTS (SELECT 1 FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relkind IN ('r', 'p', 'f'))
    OR EXISTS (SELECT 1 FROM pg_event_trigger)
"""


def _reported(conn: psycopg.Connection, loaded: dict[str, int] | None) -> dict[str, int]:
    """The COPY targets whose reported count is what their table holds, or none when that may not be so."""
    if not loaded or scalar(conn, _MAY_DROP_ROWS):
        return {}
    return loaded


def _row_counts(conn: psycopg.Connection, scan: PlainDumpScanner, facts: DrillFacts,
                loaded: dict[str, int] | None = None) -> None:
    """Compare what the dump loads with what arrived, where it landed.

    A table's own rows: ONLY that table (an inheritance parent's COPY holds its own rows, not its
    children's). A partitioned table in the dump (pg_dump 15 loads hash partitions on an enum key
    through the root, --load-via-partition-root loads every partition so): its whole partition tree,
    against the sum of everything the dump loads into any table of that tree.

    `loaded` (the rows each COPY's command tag reported stored, parallel.py) replaces the count of a
    plain table loaded by COPY alone, when no trigger, rule or later statement can have changed it;
    a report that differs from the dump is checked with count(*) too, so a difference is always counted.
    """
    keys = list(scan.rows)
    found = resolve(conn, scan, keys)
    reported = _reported(conn, loaded)
    from_tags = 0
    trees = {rel.root for rel in found.values() if rel.kind == "p"}
    singles: dict[int, tuple[str, int]] = {}
    grouped: dict[int, list[str]] = {}
    for key in keys:
        rel = found.get(key)
        if rel is None:
            schema, table = scan.targets.get(key, (None, key))
            facts.rows[display_name(schema, table)] = (scan.rows[key], None)
            facts.row_keys.setdefault(display_name(schema, table), []).append(key)
        elif rel.root is not None and rel.root in trees:
            grouped.setdefault(rel.root, []).append(key)
        else:
            shown, n = singles.get(rel.oid, (display_name(rel.schema, rel.name), 0))
            singles[rel.oid] = (shown, n + scan.rows[key])
            facts.row_keys.setdefault(shown, []).append(key)
    for oid, (shown, n) in singles.items():
        rel = next(r for r in found.values() if r.oid == oid)
        tags = [reported.get(k) for k in facts.row_keys[shown]]
        if rel.kind == "r" and None not in tags and sum(t or 0 for t in tags) == n:
            facts.rows[shown] = (n, n)
            from_tags += 1
        else:
            facts.rows[shown] = (n, _count(conn, rel.schema, rel.name, only=True))
    for root, members in grouped.items():
        rel = found[members[0]]
        assert rel.root_schema is not None and rel.root_name is not None
        shown = display_name(rel.root_schema, rel.root_name)
        size = scalar(conn, "SELECT count(*) FROM pg_partition_tree(%s)", (root,))
        into = ", ".join(sorted({display_name(found[k].schema, found[k].name) for k in members}))
        restored = _count(conn, rel.root_schema, rel.root_name, only=False)
        facts.rows[shown] = (sum(scan.rows[k] for k in members), restored)
        facts.row_keys[shown] = list(members)
        facts.row_scope[shown] = f"whole partition tree of {size} tables, rows loaded into {into}"
    blocks = f"{scan.copy_blocks} COPY blocks" + (f" and {scan.insert_statements} INSERT statements"
                                                 if scan.insert_statements else "")
    facts.rows_read = f"{sum(scan.rows.values())} rows in {blocks}, into {len(keys)} tables"
    facts.rows_restored = (f"{from_tags} tables from the rows their COPY reported stored (no trigger or rule "
                           f"in the database), {len(facts.rows) - from_tags} with count(*)")
    facts.rows_uncounted = {display_name(*scan.targets.get(k, (None, k))): why for k, why in scan.uncounted.items()}
    refreshed = resolve(conn, scan, scan.refreshed)
    for key in scan.refreshed:
        rel = refreshed.get(key)
        if rel is None or rel.kind != "m":
            facts.matviews[display_name(*scan.targets.get(key, (None, key)))] = None
        else:
            shown = display_name(rel.schema, rel.name)
            facts.matviews[shown] = _count(conn, rel.schema, rel.name, only=False) if rel.populated else None


_LARGE_OBJECTS = "SELECT count(*) FROM pg_largeobject_metadata"  # readable by every role


def run_drill(target: Target, source: DumpSource | None = None, janitor: safety.Janitor | None = None,
              progress: Progress | None = None) -> DrillFacts:
    d = drill_config(target)
    facts = DrillFacts(target=target.name, mode=d.mode)
    if d.mode == "off":
        facts.skipped = "[drill].mode = 'off' in the target file"
        return facts
    work_dir = d.work_dir or Path(tempfile.gettempdir())
    janitor = janitor or safety.Janitor()
    start = time.monotonic()
    try:
        with janitor.signals(), safety.DrillLock(d.lock_file, d.time_limit_seconds) as lock:
            facts.lock_wait = lock.waited
            try:
                facts.sweep_log = safety.sweep(work_dir, d.prefix, d.stale_minutes,
                                               d.server_dsn if d.mode == "scratch" else None)
                # The time limit bounds the drill itself; waiting for the lock has its own bound.
                _run(target, d, work_dir, janitor, source, facts, progress, time.monotonic())
            except (safety.DrillAborted, NoDumpFound, DatabaseUnreachable, FileNotFoundError) as e:
                facts.aborted = str(e)
            except psycopg.Error as e:
                facts.aborted = f"drill database error: {str(e).strip().splitlines()[0]}"
            finally:
                facts.cleanup_problems = janitor.run_all()
                try:
                    facts.leftovers = _leftovers(d, work_dir)
                except psycopg.Error as e:
                    facts.cleanup_problems.append(f"could not list drill databases on the server: {e}")
    except safety.DrillAborted as e:
        facts.aborted = str(e)
    facts.seconds = time.monotonic() - start
    return facts


def _run(target: Target, d: DrillSection, work_dir: Path, janitor: safety.Janitor, source: DumpSource | None,
         facts: DrillFacts, progress: Progress | None, start: float) -> None:
    if source is None and d.source == "offsite" and target.offsite is not None:
        from pgbackup_verify.facts.offsite import member_source  # rclone only when the drill reads offsite

        source = member_source(target.offsite)
    source = source or newest_dump(target.backups)
    facts.source, facts.fmt, facts.stored_bytes = source.description, source.fmt, source.size
    facts.source_path = str(source.path or "")
    facts.expected_from = live_expectation(target)
    if facts.expected_from:
        with connect_readonly(target) as live:
            facts.live = read_catalog(live, exclude=target.database.exclude_schemas)
            if dump_job(target.database.dump_options).large_objects:  # a job declared -B leaves them out
                facts.lo_live = int(scalar(live, _LARGE_OBJECTS) or 0)
        if not d.expect_live_catalog:  # only schemas and tables were promised by default
            facts.live = Catalog(schemas=facts.live.schemas, tables=facts.live.tables)
    cluster_dump = source.fmt not in ARCHIVE_FORMATS and is_cluster_dump(source)
    if cluster_dump and d.mode != "throwaway":
        raise safety.DrillAborted("a pg_dumpall cluster dump restores only in [drill].mode = \"throwaway\" (its "
                                  "databases keep their names and its roles are made: never on a server of yours)")
    if d.mode == "throwaway":
        facts.disk = safety.preflight_disk(work_dir, source.payload_estimate(), d.disk_factor)
    else:
        facts.disk = f"not measured: the scratch database lives on the server ({socket.gethostname()} cannot see it)"
    site = _Site(d, work_dir, janitor)
    facts.database = site.name
    try:
        site.create()
    finally:
        facts.where, facts.isolation = site.where, site.isolation
    if site.admin is not None and not cluster_dump:  # the one superuser step: untrusted extensions of the dump
        facts.extensions = extensions.create_untrusted(site.admin, extensions.dump_extensions(source))
    facts.tier = plan = tiers.plan(target, d)
    remaining = d.time_limit_seconds - (time.monotonic() - start)
    if cluster_dump:
        assert site.cluster is not None
        if plan.tier != tiers.FULL:
            facts.tier = tiers.TierPlan(tiers.FULL, f"full (a pg_dumpall cluster dump restores in full; "
                                                    f"[drill].tier would be {plan.note})")
        _run_cluster(target, d, site.cluster, source, remaining, janitor, progress, facts)
        return
    globals_outcome = None
    if d.globals_glob and site.cluster is not None:  # the common pair: the roles first, then the database
        globals_outcome = _restore_globals(target, d, site.cluster, remaining, janitor, facts)
    if source.fmt in ARCHIVE_FORMATS:
        # A schema drill loads no data: its archive rows are not read (that is what makes it cheap).
        # pg_restore restores a tar archive with one job only ("parallel restore is not supported").
        jobs = 1 if source.fmt == "tar" else d.jobs
        facts.outcome = restore_custom(source, site.endpoint, jobs, remaining, janitor, work_dir, progress,
                                       plan.pg_restore_args(source, janitor, work_dir),
                                       count_rows=plan.tier != tiers.SCHEMA)
    else:
        facts.outcome = restore_plain(source, site.endpoint, remaining, janitor, progress, d.jobs, work_dir,
                                      plan.copy_filter)
    if globals_outcome is not None and globals_outcome.problems:
        facts.outcome.errors[:0] = [f"globals file {facts.globals_source}: {p}" for p in globals_outcome.problems]
    facts.outcome.redact()  # the one place restore messages leave for the reports: without the dump's rows
    site.after_restore()
    with site.endpoint.connect(autocommit=True) as conn:
        facts.restored = read_catalog(conn)
        facts.lo_dump, facts.lo_restored = facts.outcome.large_objects, int(scalar(conn, _LARGE_OBJECTS) or 0)
        if facts.outcome.scan is not None:
            started = time.monotonic()
            _row_counts(conn, facts.outcome.scan, facts, facts.outcome.loaded)
            facts.row_count_seconds = time.monotonic() - started
            if facts.outcome.rows_from:
                facts.rows_read += f" ({facts.outcome.rows_from})"


def _restore_globals(target: Target, d: DrillSection, cluster: DrillCluster, remaining: float,
                     janitor: safety.Janitor, facts: DrillFacts) -> RestoreOutcome:
    """The newest `pg_dumpall --globals-only` file of [drill].globals_glob: its roles, made plain."""
    assert d.globals_glob is not None
    found = sorted((p for p in target.backups.directory.glob(d.globals_glob) if p.is_file()),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise NoDumpFound(f"no file matches [drill].globals_glob '{d.globals_glob}' in {target.backups.directory}; "
                          "check that the nightly pg_dumpall --globals-only runs, or remove the key")
    source = from_path(found[-1])
    facts.globals_source = source.description
    outcome, facts.cluster = restore_cluster(source, cluster, ("postgres", *d.roles), remaining, janitor,
                                             globals_only=True)
    return outcome


def chosen_database(target: Target) -> str:
    """The database of a cluster dump the expectations apply to: [drill].database, else [database].dsn's."""
    named = drill_config(target).database
    params = psycopg.conninfo.conninfo_to_dict(target.database.dsn)
    # libpq's own default: no dbname means PGDATABASE, else the user's name.
    return named or str(params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
                        or os.environ.get("PGUSER") or "")


def _run_cluster(target: Target, d: DrillSection, cluster: DrillCluster, source: DumpSource, remaining: float,
                 janitor: safety.Janitor, progress: Progress | None, facts: DrillFacts) -> None:
    """A pg_dumpall dump: every database restored and its rows compared; the expectations on one of them."""
    known = ("postgres", *d.roles, *(facts.cluster.roles_made if facts.cluster else ()))
    facts.outcome, facts.cluster = restore_cluster(source, cluster, known, remaining, janitor, progress)
    facts.outcome.redact()
    scanner = facts.cluster.scanner
    facts.databases = [db for db in scanner.order if db in cluster.prepared()]
    for db in cluster.prepared():
        cluster.after_restore(db)
    chosen = chosen_database(target)
    facts.database = f"{chosen} (of the cluster dump's {len(scanner.order)} databases: " \
                     f"{', '.join(display_name(db) for db in scanner.order) or 'none'})"
    read_started, parts = time.monotonic(), []
    for db in facts.databases:
        scan = scanner.databases[db]
        with cluster.restorer(db).connect(autocommit=True) as conn:
            if db == chosen:
                facts.restored = read_catalog(conn)
                facts.lo_dump, facts.lo_restored = scan.large_objects, int(scalar(conn, _LARGE_OBJECTS) or 0)
                facts.outcome.rows, facts.outcome.scan = scan.rows, scan
            if not scan.rows and not scan.uncounted and not scan.refreshed:
                continue
            one = DrillFacts(target=facts.target, mode=facts.mode)
            _row_counts(conn, scan, one)
        prefix = display_name(db) + "."
        facts.rows.update({prefix + k: v for k, v in one.rows.items()})
        facts.row_keys.update({prefix + k: v for k, v in one.row_keys.items()})
        facts.row_scope.update({prefix + k: v for k, v in one.row_scope.items()})
        facts.rows_uncounted.update({prefix + k: v for k, v in one.rows_uncounted.items()})
        facts.matviews.update({prefix + k: v for k, v in one.matviews.items()})
        parts.append(f"{display_name(db)}: {one.rows_read}")
    facts.row_count_seconds = time.monotonic() - read_started
    if facts.outcome.rows is None:  # every database's rows are compared, whichever one is expected
        facts.outcome.rows = {}
    facts.rows_read = "; ".join(parts) or "0 rows in 0 COPY blocks"
    facts.rows_restored = "count(*) of every table, per database"
    if facts.restored is None:
        facts.restored = Catalog()
        if not facts.outcome.problems:
            raise safety.DrillAborted(
                f"the cluster dump holds no database {chosen!r} (it holds {', '.join(scanner.order) or 'none'}): "
                "set [drill].database to the one whose schemas and tables the target file expects")


__all__ = ["CLUSTER_PREFIX", "DrillFacts", "expected_schemas", "live_expectation", "run_drill"]
