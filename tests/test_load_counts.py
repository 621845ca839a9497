"""Rows of an archive counted from the load itself (facts/drill/loadcount.py), and every way out of it.

One source cluster and one sandboxed drill cluster for the module; every restore runs as the drill's
plain restore role. The counters must give exactly what reading the archive's data blocks gives, on
partitions loaded through their root or not, inheritance, odd names, an empty table, a table whose
trigger and materialized view come after its rows, and each archive format. Where code of the dump's
could add or drop rows during the restore, or the counters are off, or the data is not COPY, the
drill must read the archive instead and say why; its rows then are the archive's, not the load's.
"""

from __future__ import annotations

import gzip
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from srcdb import source_database

from pgbackup_verify.facts.drill import loadcount, tiers
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.drillcluster import DrillCluster, Endpoint
from pgbackup_verify.facts.drill.restore import RestoreOutcome, restore_custom
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.drill.sandbox import resolve
from pgbackup_verify.facts.dumps.archivedata import count_data_blocks
from pgbackup_verify.facts.dumps.customfmt import ArchiveToc, TocEntry, count_archive_rows
from pgbackup_verify.facts.dumps.plainscan import display_name
from pgbackup_verify.facts.dumps.source import from_path

FROM_LOAD = "the rows the load stored, from the server's own counters: the archive read once"
SOURCE = """
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.moods (m public.mood, n int) PARTITION BY HASH (m);
CREATE TABLE public.moods_0 PARTITION OF public.moods FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.moods_1 PARTITION OF public.moods FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO public.moods SELECT (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::public.mood, g FROM generate_series(1, 30) g;
CREATE TABLE public.ranged (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE public.ranged_lo PARTITION OF public.ranged FOR VALUES FROM (0) TO (100);
CREATE TABLE public.ranged_hi PARTITION OF public.ranged FOR VALUES FROM (100) TO (1000);
INSERT INTO public.ranged SELECT generate_series(1, 250);
CREATE SCHEMA "Odd ""s"" ;x";
CREATE TABLE "Odd ""s"" ;x"."t (a)
b" (id int CHECK (id > 0 AND length(id::text) < 9), v text);
INSERT INTO "Odd ""s"" ;x"."t (a)
b" SELECT g, E'line\\nbreak\\\\.' FROM generate_series(1, 8) g;
CREATE TABLE public.parent (id int);
CREATE TABLE public.child (extra text) INHERITS (public.parent);
INSERT INTO public.parent SELECT generate_series(1, 4);
INSERT INTO public.child SELECT g, 'x' FROM generate_series(1, 6) g;
CREATE TABLE public.empty (id int);
CREATE TABLE public."a b" (id int);
INSERT INTO public."a b" SELECT generate_series(1, 5);
CREATE FUNCTION public.drop_all() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TABLE public.audited (id int);
INSERT INTO public.audited SELECT generate_series(1, 7);
CREATE TRIGGER drop_all BEFORE INSERT ON public.audited FOR EACH ROW EXECUTE FUNCTION public.drop_all();
CREATE MATERIALIZED VIEW public.parent_count AS SELECT count(*) AS n FROM public.parent;
"""
# A CHECK that stores a row elsewhere for every row it checks (so the source's audit holds 20 rows):
# restoring the archive's 10 rows of public.guarded stores 10 more there, 30 in all.
CODED = """
CREATE TABLE public.audit (n int);
INSERT INTO public.audit SELECT generate_series(1, 10);
CREATE FUNCTION public.note(i int) RETURNS boolean LANGUAGE plpgsql AS
    $$BEGIN INSERT INTO public.audit VALUES (i); RETURN true; END$$;
CREATE TABLE public.guarded (id int CHECK (public.note(id)));
INSERT INTO public.guarded SELECT generate_series(1, 10);
"""
# Code of the dump's no name in the table of contents calls as a function: only the catalog sees it.
RANGES = """
CREATE FUNCTION public.gap(a float8, b float8) RETURNS float8 LANGUAGE sql IMMUTABLE AS 'SELECT b - a';
CREATE TYPE public.span AS RANGE (subtype = float8, subtype_diff = public.gap);
CREATE TABLE public.spans (s public.span);
INSERT INTO public.spans SELECT public.span(g, g + 1) FROM generate_series(1, 12) g;
"""


# A materialized view reading a view that calls the dump's code: its refresh stores rows in public.audit.
VIEWED = """
CREATE TABLE public.audit (n int);
CREATE FUNCTION public.note() RETURNS int LANGUAGE plpgsql AS
    $$BEGIN INSERT INTO public.audit VALUES (1); RETURN 1; END$$;
CREATE VIEW public.noted AS SELECT public.note() AS n;
CREATE MATERIALIZED VIEW public.noted_once AS SELECT n FROM public.noted;
"""
PAGILA = Path(__file__).resolve().parent / "data" / "pagila"


class Scene:
    def __init__(self, c: ThrowawayCluster, root: Path, dst: DrillCluster) -> None:
        self.root, self.dst, self.n = root, dst, 0
        self.archives: dict[str, Path] = {}
        for name, db, fmt, extra in (("custom", "src", "c", ()), ("directory", "src", "d", ()),
                                     ("tar", "src", "t", ()), ("inserts", "src", "c", ("--inserts",)),
                                     ("coded", "coded", "c", ()), ("ranges", "ranges", "c", ()),
                                     ("viewed", "viewed", "c", ()), ("pagila", "pagila", "c", ())):
            out = root / f"{name}.archive"
            subprocess.run(["pg_dump", f"-F{fmt}", *extra, "-d", c.dsn(db), "-f", str(out)], env=c.env(), check=True)
            self.archives[name] = out

    def restore(self, name: str, jobs: int = 2, extra: list[str] | None = None,
                before: str = "") -> tuple[RestoreOutcome, Endpoint]:
        self.n += 1
        db = f"r{self.n}"
        endpoint = self.dst.database(db)
        if before:
            with self.dst.admin(db).connect(autocommit=True) as conn:
                conn.execute(before.format(db=db))
        janitor, work = Janitor(), Path(tempfile.mkdtemp(dir=self.root))
        work.chmod(0o711)
        source = from_path(self.archives[name])
        try:
            args = extra if extra is not None else []
            out = restore_custom(source, endpoint, 1 if name == "tar" else jobs, 120, janitor, work, None, args,
                                 count_rows=True)
        finally:
            assert janitor.run_all() == []
        self.dst.after_restore(db)
        return out, endpoint


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with source_database("loadcount-", SOURCE) as (c, root):
        for db, text in (("coded", CODED), ("ranges", RANGES), ("viewed", VIEWED), ("pagila", "")):
            with psycopg.connect(c.dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            if text:
                with psycopg.connect(c.dsn(db), autocommit=True) as conn:
                    conn.execute(text.encode())
        for script in ((PAGILA / "pagila-schema.sql").read_bytes(),
                       gzip.decompress((PAGILA / "pagila-data.sql.gz").read_bytes())):
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", c.dsn("pagila")], input=script,
                           env=c.env(), check=True, stdout=subprocess.DEVNULL)
        with DrillCluster(resolve("bwrap"), root, "loadcount-") as dst:
            dst.prepare_restore("first", ("postgres",))
            yield Scene(c, root, dst)


def _by_name(out: RestoreOutcome) -> dict[str, int]:
    assert out.scan is not None and out.rows is not None
    return {display_name(*out.scan.targets[k]): n for k, n in out.rows.items()}


def _count(endpoint: Endpoint, table: str) -> int:
    with endpoint.connect(autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.parametrize("fmt", ["custom", "directory", "tar"])
def test_the_load_counts_what_the_archive_holds_in_every_format(scene: Scene, fmt: str) -> None:
    out, _ = scene.restore(fmt)
    assert out.problems == [] and out.rows_from == FROM_LOAD
    archive = count_archive_rows(scene.archives[fmt])  # pg_restore --data-only, through the scanner
    assert out.scan is not None and archive.error is None
    assert (out.rows, out.scan.copy_blocks) == (archive.scan.rows, archive.scan.copy_blocks)
    assert {k: out.scan.targets[k] for k in out.rows} == {k: archive.scan.targets[k] for k in archive.scan.rows}
    assert out.scan.refreshed == ["public.parent_count"]  # the materialized view the restore refreshes
    rows = _by_name(out)
    # Through the root (pg_dump 15 does so for hash partitions on an enum), per partition, inherited,
    # odd, empty; the trigger that drops every row came after public.audited's rows, so it dropped none.
    assert rows["public.moods"] == 30 and rows["public.ranged_lo"] == 99 and rows["public.ranged_hi"] == 151
    assert rows["public.parent"] == 4 and rows["public.child"] == 6 and rows["public.empty"] == 0
    assert rows[display_name('Odd "s" ;x', "t (a)\nb")] == 8 and rows["public.audited"] == 7
    assert out.loaded == out.rows


def test_the_load_counts_the_same_as_the_data_blocks(scene: Scene) -> None:
    out, endpoint = scene.restore("custom")
    blocks = count_data_blocks(scene.archives["custom"])
    assert out.scan is not None and out.rows_from == FROM_LOAD
    assert (out.rows, out.scan.targets, out.scan.copy_blocks, out.scan.refreshed) == (
        blocks.rows, blocks.targets, blocks.copy_blocks, blocks.refreshed)
    assert _count(endpoint, "public.audited") == 7  # and the restored side agrees


def test_a_sample_tier_counts_only_the_tables_it_loads(scene: Scene) -> None:
    source = from_path(scene.archives["custom"])
    plan = tiers.TierPlan(tiers.SAMPLE, "sample", ("public.a b",), (), frozenset({("public", "a b")}))
    janitor, work = Janitor(), Path(tempfile.mkdtemp(dir=scene.root))
    work.chmod(0o711)
    try:
        out, _ = scene.restore("custom", extra=plan.pg_restore_args(source, janitor, work))
    finally:
        janitor.run_all()
    assert out.problems == [] and out.rows_from == FROM_LOAD
    assert _by_name(out) == {display_name("public", "a b"): 5}


def test_a_check_calling_the_dumps_code_is_read_from_the_archive_alongside(scene: Scene) -> None:
    """public.guarded's CHECK stores a row in public.audit per row checked: the load stored 30 rows
    there, the archive holds 20. The table of contents says so before the restore. One job: with two,
    pg_restore may TRUNCATE public.audit before its COPY after the CHECK stored rows there."""
    out, endpoint = scene.restore("coded", jobs=1)
    assert out.rows_from == ("the archive's data blocks, counted from its blocks directly; not from the load's "
                             "counters: TABLE public.guarded calls note()")
    assert _by_name(out) == {"public.audit": 20, "public.guarded": 10}
    assert _count(endpoint, "public.audit") == 30  # what the row check then shows: 30 restored vs 20


def test_a_real_sample_database_is_counted_by_its_load(scene: Scene) -> None:
    """pagila: partitions, triggers, plpgsql and sql functions, an aggregate of its own in a view, a
    materialized view (which reads no code of pagila's), a tsvector column."""
    out, _ = scene.restore("pagila")
    assert out.problems == [] and out.rows_from == FROM_LOAD
    assert out.rows == count_data_blocks(scene.archives["pagila"]).rows
    assert sum((out.rows or {}).values()) > 40000


def test_a_materialized_view_reading_the_dumps_code_through_a_view_is_foreseen(scene: Scene) -> None:
    out, endpoint = scene.restore("viewed")
    assert out.rows_from.endswith("not from the load's counters: VIEW public.noted calls note()")
    assert _by_name(out) == {"public.audit": 1}  # the source refreshed once; the restore refreshes again
    assert _count(endpoint, "public.audit") == 2
    with endpoint.connect(autocommit=True) as conn:  # and the restored catalog says the same
        assert loadcount.untrusted_code(conn) == "rule _RETURN on view noted runs function note()"


def test_code_only_the_restored_catalog_shows_is_read_from_the_archive_after(scene: Scene) -> None:
    out, _ = scene.restore("ranges")
    assert out.rows_from.startswith("the archive's data blocks, counted from its blocks directly; not from the "
                                    "load's counters: type span runs function gap(")
    assert _by_name(out) == {"public.spans": 12}


def test_counters_turned_off_are_not_read(scene: Scene) -> None:
    out, _ = scene.restore("custom", before="ALTER DATABASE {db} SET track_counts = off")
    assert out.rows_from.endswith("not from the load's counters: the server does not count rows "
                                  "(track_counts is off)")
    assert _by_name(out)["public.moods"] == 30


def test_insert_statements_are_read_from_the_archive(scene: Scene) -> None:
    out, _ = scene.restore("inserts")
    assert out.rows_from.startswith("the archive's data blocks, read with pg_restore --data-only; not from the "
                                    "load's counters: TABLE DATA ")
    assert out.rows_from.endswith(": not loaded by a COPY this reader knows")
    assert _by_name(out)["public.moods"] == 30
    assert out.problems == []


def _entry(dump_id: int, desc: str, tag: str, copy: str = "") -> TocEntry:
    return TocEntry(dump_id, ("0", "0"), desc, "public", tag, "postgres", "", None, copy)


def test_data_for_a_table_the_archive_does_not_create_is_not_counted_by_the_load() -> None:
    """An extension's configuration table: its script may fill it before the dump's rows arrive."""
    toc = ArchiveToc((1, 14, 0), "db", "15", "15", (
        _entry(1, "EXTENSION", "postgis"), _entry(2, "TABLE DATA", "spatial_ref_sys",
                                                  "COPY public.spatial_ref_sys (srid) FROM stdin;\n")))
    assert loadcount.archive_targets(toc, None) == ("TABLE DATA public.spatial_ref_sys: a table the archive "
                                                    "does not create")


def test_a_trigger_placed_before_the_data_is_foreseen() -> None:
    toc = ArchiveToc((1, 14, 0), "db", "15", "15", (
        _entry(1, "TABLE", "t"), _entry(2, "TRIGGER", "t drop_all"),
        _entry(3, "TABLE DATA", "t", "COPY public.t (id) FROM stdin;\n")))
    assert loadcount.predict(toc, None) == "trigger t drop_all comes before table data in the archive"


def test_a_trigger_older_than_its_tables_rows_is_seen_on_the_restored_rows(scene: Scene) -> None:
    endpoint = scene.dst.database("triggers")
    with endpoint.connect(autocommit=True) as conn:
        conn.execute("CREATE FUNCTION keep() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
        for table in ("before_rows", "after_rows", "no_rows"):
            conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute("CREATE TRIGGER k BEFORE INSERT ON before_rows FOR EACH ROW EXECUTE FUNCTION keep()")
        conn.execute("INSERT INTO before_rows VALUES (1)")
        conn.execute("INSERT INTO after_rows VALUES (1)")
        conn.execute("CREATE TRIGGER k BEFORE INSERT ON after_rows FOR EACH ROW EXECUTE FUNCTION keep()")
        conn.execute("CREATE TRIGGER k BEFORE INSERT ON no_rows FOR EACH ROW EXECUTE FUNCTION keep()")
        oid = {t: int(conn.execute("SELECT %s::regclass::oid", (t,)).fetchone()[0])  # type: ignore[index]
               for t in ("before_rows", "after_rows", "no_rows")}
        assert loadcount.triggers_before_rows(conn, [oid["after_rows"]]) is None
        assert loadcount.triggers_before_rows(conn, [oid["before_rows"]]) == (
            "trigger k on public.before_rows may have fired while its rows were loaded (it is older than they are)")
        assert loadcount.triggers_before_rows(conn, [oid["no_rows"]]) == (
            "trigger k on public.no_rows may have fired while its rows were loaded (the table is empty)")


def test_the_dumps_code_is_foreseen_under_any_name_pg_dump_writes() -> None:
    """Quoted names exactly (a quote, upper case, a space), bare ones folded; a name only mentioned is not a call."""
    for tag, call in (('Weird "Fn"', 'public."Weird ""Fn"""(id)'), ("note", "public.NOTE (id)"), ("n 2", '"n 2"(id)')):
        toc = ArchiveToc((1, 14, 0), "db", "15", "15", (
            _entry(1, "FUNCTION", f"{tag}(integer)"),
            TocEntry(2, ("0", "0"), "TABLE", "public", "t", "postgres",
                     f"CREATE TABLE public.t (id int CHECK ({call}));", None, ""),
            _entry(3, "TABLE DATA", "t", "COPY public.t (id) FROM stdin;\n")))
        assert loadcount.predict(toc, None) == f"TABLE public.t calls {tag}()"
    quiet = ArchiveToc((1, 14, 0), "db", "15", "15", (
        _entry(1, "FUNCTION", "note(integer)"),
        TocEntry(2, ("0", "0"), "TABLE", "public", "t", "postgres", "CREATE TABLE public.t (note int, \"note\" int);",
                 None, "")))
    assert loadcount.predict(quiet, None) is None
