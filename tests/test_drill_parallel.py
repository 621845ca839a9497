"""The parallel plain-dump restore (facts/drill/parallel.py) against real pg_dump output and a real server.

One cluster for the module: a source database with what post-data must rebuild in the right order
(keys, foreign keys in a cycle and to itself, an expression index, a trigger, a matview refreshed
at the end), sequences set in the data section and large objects; each restore goes into a fresh
database and is compared with the source.
"""

from __future__ import annotations

import gzip
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from srcdb import source_database

from pgbackup_verify.facts.drill import parallel
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster, stop_cluster_dir
from pgbackup_verify.facts.drill.drillcluster import Endpoint
from pgbackup_verify.facts.drill.restore import RestoreOutcome, restore_plain
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.dumps.source import from_path

SOURCE = r"""
CREATE SCHEMA "Odd Schema";
CREATE TABLE public.parent (id int PRIMARY KEY, name text UNIQUE, n int);
CREATE TABLE public.child (id bigserial PRIMARY KEY, parent_id int NOT NULL REFERENCES public.parent(id)
    ON DELETE CASCADE, v text);
CREATE TABLE "Odd Schema"."Mixed ""Case"" T" (id int PRIMARY KEY, other int, "the value" text);
CREATE TABLE public.a (id int PRIMARY KEY, b_id int);
CREATE TABLE public.b (id int PRIMARY KEY, a_id int REFERENCES public.a(id));
ALTER TABLE public.a ADD CONSTRAINT a_b_fk FOREIGN KEY (b_id) REFERENCES public.b(id) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE "Odd Schema"."Mixed ""Case"" T" ADD CONSTRAINT self_fk FOREIGN KEY (other)
    REFERENCES "Odd Schema"."Mixed ""Case"" T"(id);
CREATE INDEX child_v_lower ON public.child (lower(v)) WHERE v IS NOT NULL;
CREATE TABLE public.audit (id bigserial PRIMARY KEY, what text);
CREATE FUNCTION public.audit_it() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN INSERT INTO public.audit (what) VALUES ('child ' || NEW.id); RETURN NEW; END$$;
CREATE TRIGGER child_audit AFTER INSERT ON public.child FOR EACH ROW EXECUTE FUNCTION public.audit_it();
INSERT INTO public.parent SELECT g, 'p' || g, g % 10 FROM generate_series(1, 500) g;
INSERT INTO public.child (parent_id, v)
    SELECT 1 + g % 500, CASE WHEN g % 3 = 0 THEN NULL ELSE E'v\t\\' || g END FROM generate_series(1, 3000) g;
INSERT INTO "Odd Schema"."Mixed ""Case"" T"
    SELECT g, CASE WHEN g > 1 THEN g - 1 END, 'x;y' FROM generate_series(1, 100) g;
BEGIN;
INSERT INTO public.a VALUES (1, NULL), (2, NULL);
INSERT INTO public.b VALUES (1, 1), (2, 2);
UPDATE public.a SET b_id = id;
COMMIT;
CREATE MATERIALIZED VIEW public.parent_stats AS
    SELECT n, count(*) AS c FROM public.parent JOIN public.child ON child.parent_id = parent.id GROUP BY n;
CREATE UNIQUE INDEX ON public.parent_stats (n);
CREATE SEQUENCE public.counter START 7;
SELECT setval('public.counter', 4242);
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 20000), 'UTF8'));
SELECT lo_from_bytea(0, '\x00ff5c2e0a'::bytea);
"""

SNAPSHOT = {
    "tables": "SELECT schemaname, tablename FROM pg_tables "
              "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, contype, convalidated, condeferrable FROM pg_constraint "
                   "WHERE connamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
    "indexes": "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
               "WHERE indrelid::regclass::text NOT LIKE 'pg_%' ORDER BY 1",
    "triggers": "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 2",
    "matview": "SELECT ispopulated FROM pg_matviews",
    "stats": "SELECT n, c FROM public.parent_stats ORDER BY n",
    "sequences": "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences ORDER BY 1",
    "large objects": "SELECT oid, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1",
    "rows": "SELECT (SELECT count(*) FROM public.parent), (SELECT count(*) FROM public.child), "
            "(SELECT count(*) FROM public.audit), (SELECT count(*) FROM \"Odd Schema\".\"Mixed \"\"Case\"\" T\"), "
            "(SELECT md5(string_agg(v, ',' ORDER BY id)) FROM public.child)",
}


def snapshot(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(q).fetchall() for name, q in SNAPSHOT.items()}  # type: ignore[arg-type]


class Source:
    def __init__(self, cluster: ThrowawayCluster, work: Path) -> None:
        self.cluster, self.work, self.n = cluster, work, 0
        self.dump = subprocess.run(["pg_dump", "-d", "src"], env=cluster.env(), capture_output=True,
                                   check=True).stdout.decode()
        self.expected = snapshot(cluster.dsn("src"))

    def fresh(self) -> str:
        self.n += 1
        name = f"restore_{self.n}"
        with psycopg.connect(self.cluster.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.cluster.dsn(name)

    def write(self, text: str) -> Path:
        self.n += 1
        path = self.work / f"dump_{self.n}.sql.gz"
        path.write_bytes(gzip.compress(text.encode()))
        return path

    def restore(self, text: str | None = None, jobs: int = 2) -> tuple[RestoreOutcome, str]:
        dsn = self.fresh()
        out = restore_plain(from_path(self.write(text or self.dump)), Endpoint(dsn), 120, Janitor(),
                            jobs=jobs, work_dir=self.work)
        return out, dsn


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    with source_database("parallel-", SOURCE, psql=True) as (c, work):
        yield Source(c, work)


def test_parallel_restore_rebuilds_keys_triggers_matview_sequences_and_large_objects(source: Source) -> None:
    assert "SELECT pg_catalog.setval('public.counter', 4242, true);" in source.dump
    assert "SELECT pg_catalog.lowrite(0, " in source.dump
    assert "REFRESH MATERIALIZED VIEW public.parent_stats;" in source.dump
    out, dsn = source.restore()
    assert out.problems == [] and out.warnings == [] and out.exit_code == 0, out
    assert out.parallel == 2 and out.complete_marker
    # 6 COPY blocks; 7 keys and 2 indexes; 4 foreign keys (a cycle a <-> b, one to its own table)
    assert out.parallel_jobs == {"copy": 6, "build": 9, "fk": 4}
    got = snapshot(dsn)
    for part, expected in source.expected.items():
        assert got[part] == expected, part
    # The trigger is post-data: it never fired for the loaded rows (audit holds the dumped 3000, not 6000).
    assert got["rows"][0][:4] == (500, 3000, 3000, 100)
    assert out.rows == {'"Odd Schema"."Mixed ""Case"" T"': 100, "public.a": 2, "public.audit": 3000, "public.b": 2,
                        "public.child": 3000, "public.parent": 500}
    # Each COPY's own count (its command tag) is what count(*) finds, table by table.
    assert out.loaded == out.rows
    with psycopg.connect(dsn) as conn:
        for target, n in out.loaded.items():
            assert conn.execute(f"SELECT count(*) FROM ONLY {target}").fetchone() == (n,), target


def test_rows_already_in_a_table_survive_its_copy_and_a_later_delete_voids_the_copy_counts(source: Source) -> None:
    """The COPY's table is emptied first (no WAL) only when it is empty: an INSERT's row stays. A DELETE
    after the data makes the COPYs' counts say nothing of what the tables hold: none are reported."""
    head = "SET client_encoding = 'UTF8';\nCREATE TABLE public.w (id int);\nCREATE TABLE public.x (id int);\n"
    data = "COPY public.w (id) FROM stdin;\n1\n2\n\\.\nCOPY public.x (id) FROM stdin;\n5\n\\.\n"
    end = "-- PostgreSQL database dump complete\n"
    out, dsn = source.restore(head + "INSERT INTO public.w VALUES (7);\n" + data + end)
    assert out.problems == [] and out.rows == {"public.w": 3, "public.x": 1}
    assert out.loaded == {"public.w": 2, "public.x": 1}  # what the COPYs stored; w holds the INSERT's row too
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM public.w").fetchone() == ([1, 2, 7],)
    out, dsn = source.restore(head + data + "DELETE FROM public.x;\n" + end)
    assert out.problems == [] and out.rows == {"public.w": 2, "public.x": 1} and out.loaded is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.x").fetchone() == (0,)

@pytest.mark.parametrize("chunk", [97, 4096])
def test_data_beyond_the_memory_budget_is_spooled_and_loaded_alike(source: Source, monkeypatch, chunk) -> None:
    """Small reads put block ends and `\\.` lines at every place in a piece and in the spool's reads."""
    monkeypatch.setattr(parallel, "MEMORY_BUDGET", 4096)
    monkeypatch.setattr(parallel, "SPOOL_LIMIT", 8192)  # and the reading waits for the loading
    monkeypatch.setattr(parallel, "CHUNK", chunk)
    out, dsn = source.restore()
    assert out.problems == [] and out.spool_peak > 0
    assert snapshot(dsn) == source.expected
    assert not [p for p in source.work.iterdir() if p.name.startswith("pgbv-drill-spool-")], "spool files are unlinked"


def _bad_copy_row(dump: str) -> tuple[str, int]:
    lines = dump.splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines) if line.startswith("COPY public.child "))
    lines[header + 1500] = "oops\t1\tbroken\n"
    return "".join(lines), header + 1500 + 1


def test_copy_failure_on_one_connection_stops_the_restore_and_names_its_dump_line(source: Source) -> None:
    text, line_no = _bad_copy_row(source.dump)
    start = time.monotonic()
    out, dsn = source.restore(text)
    assert time.monotonic() - start < 60
    assert out.exit_code not in (0, None) and len(out.errors) == 1, out.errors
    assert out.errors[0].startswith(f'dump line {line_no}: ERROR: invalid input syntax for type bigint: "oops" '
                                    "| line: COPY public.child (id, parent_id, v) FROM stdin;")
    assert "CONTEXT: COPY child, line 1500" in out.errors[0]
    with psycopg.connect(dsn) as conn:  # ON_ERROR_STOP: nothing of post-data ran
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'").fetchone() == (0,)


def test_key_that_fails_on_a_connection_names_its_statement(source: Source) -> None:
    text = source.dump.replace("2\tp2\t2\n", "2\tp1\t2\n", 1)  # two parents named p1: the UNIQUE key fails
    out, _ = source.restore(text)
    line_no = text.splitlines().index("    ADD CONSTRAINT parent_name_key UNIQUE (name);") + 1
    assert len(out.errors) == 1, out.errors
    assert out.errors[0].startswith(f'dump line {line_no}: ERROR: could not create unique index "parent_name_key" '
                                    "| line: ALTER TABLE ONLY public.parent")
    assert "DETAIL: Key (name)=(p1) is duplicated." in out.errors[0]


def test_copy_inside_a_transaction_block_and_odd_headers_stay_serial_and_load(source: Source) -> None:
    text = ("SET client_encoding = 'UTF8';\nCREATE TABLE public.t (id int);\nBEGIN;\n"
            "CREATE TABLE public.u (id int);\nCOPY public.u (id) FROM stdin;\n1\n2\n\\.\nCOMMIT;\n"
            "COPY public.t (id) FROM stdin;\n1\n\\.\ncopy public.t from stdin;\n2\n\\.\n"
            "CREATE INDEX t_id ON public.t USING btree (id);\n-- PostgreSQL database dump complete\n")
    out, dsn = source.restore(text)
    assert out.problems == [], out.problems
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM public.u), (SELECT count(*) FROM public.t), "
                            "to_regclass('public.t_id') IS NOT NULL").fetchone() == (2, 2, True)
    assert out.rows == {"public.u": 2, "public.t": 2}
    assert out.loaded == {}  # rows that went through psql have no count of their own: counted with count(*)


def test_one_job_is_the_serial_restore(source: Source) -> None:
    out, dsn = source.restore(jobs=1)
    assert out.problems == [] and out.parallel == 0
    assert snapshot(dsn) == source.expected
    # psql's own COPY tags count the loaded rows, table by table, as count(*) does: no second pass.
    assert out.loaded == out.rows
    with psycopg.connect(dsn) as conn:
        for target, n in out.loaded.items():
            assert conn.execute(f"SELECT count(*) FROM ONLY {target}").fetchone() == (n,), target


def test_serial_copy_tags_are_paired_in_order_and_void_when_rows_may_have_changed(source: Source) -> None:
    """A value shaped like psql's tag cannot pose as one; a statement that may change rows after the
    data, a COPY without data from the dump or a transaction left open leaves every table to count(*)."""
    head = "SET client_encoding = 'UTF8';\nCREATE TABLE public.w (id int);\nCREATE TABLE public.x (id int);\n"
    data = "COPY public.w (id) FROM stdin;\n1\n2\n\\.\nCOPY public.x (id) FROM stdin;\n5\n\\.\n"
    end = "-- PostgreSQL database dump complete\n"
    forged = "SELECT E'<p>COPY 7</p>\\n<p>COPY 9</p>' AS \"<p>COPY 8</p>\";\n"
    out, _ = source.restore(head + "CREATE SEQUENCE public.s;\n" + forged + data
                            + "SELECT pg_catalog.setval('public.s', 1, true);\n"
                            "ALTER TABLE ONLY public.x\n    ADD CONSTRAINT x_pkey PRIMARY KEY (id);\n" + end, jobs=1)
    assert out.problems == [] and out.loaded == out.rows == {"public.w": 2, "public.x": 1}, out
    for tail in ("DELETE FROM public.x;\n", "ALTER TABLE public.x\n    RENAME TO y;\n",
                 "INSERT INTO public.w SELECT 3;\n", "COPY (SELECT '<p>COPY 1</p>') TO stdout;\n",
                 "BEGIN;\nCOPY public.w (id) FROM stdin;\n4\n\\.\n"):
        out, dsn = source.restore(head + data + tail + end, jobs=1)
        assert out.exit_code == 0 and out.loaded is None, (tail, out)
    with psycopg.connect(dsn) as conn:  # the transaction psql left open was rolled back: its COPY's row is gone
        assert conn.execute("SELECT count(*) FROM public.w").fetchone() == (2,)


SLOW = ("CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.02); "
        "RETURN NEW; END$$;\nCREATE TRIGGER slow BEFORE INSERT ON public.child FOR EACH ROW "
        "EXECUTE FUNCTION public.slow();\n\n")


def _postgres_of(root: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(str(root) in part for part in cmd):
            found.append(p)
    return found


def test_sigterm_mid_load_leaves_nothing_behind(source: Source, tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="pgbv-partest-kill-"))
    work.chmod(0o711)
    try:
        backups = tmp_path / "backups"
        backups.mkdir()
        text = source.dump.replace("COPY public.child ", SLOW + "COPY public.child ", 1)
        (backups / "db.sql.gz").write_bytes(gzip.compress(text.encode()))
        target = tmp_path / "t.toml"
        target.write_text(f'[database]\ndsn = "host=127.0.0.1 port=1 dbname=x user=x"\ndump_role = "x"\n'
                          f'[backups]\ndirectory = "{backups}"\npattern = "*.sql.gz"\nexpected_schemas = ["public"]\n'
                          f'[drill]\nwork_dir = "{work}"\nlock_file = "{work}/drill.lock"\njobs = 2\n')
        code = ("import sys; from pgbackup_verify.config import load_target; "
                "from pgbackup_verify.facts.drill.run import run_drill; run_drill(load_target(sys.argv[1]))")
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        root = _wait_for_copy(work, proc)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGTERM, out
        assert "drill interrupted by signal 15: cleaning up" in out
        assert not root.exists() and not [p.name for p in work.iterdir() if p.name != "drill.lock"]
        assert not _postgres_of(root), "the drill cluster's server still runs"
    finally:
        for leftover in work.glob("pgbv-cluster-*"):
            stop_cluster_dir(leftover)
        subprocess.run(["rm", "-rf", str(work)], check=False)


def _wait_for_copy(work: Path, proc: subprocess.Popen, seconds: float = 60) -> Path:
    """Until a COPY of the drill runs on one of its connections: then the load is under way.

    The drill's server takes no connection from us (socket only, a password per drill): its
    backends' process titles say what they run (`postgres: pgbv_restore DB [local] COPY`).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "drill ended early"
        roots = list(work.glob("pgbv-cluster-drill-*"))
        copying = [p for p in psutil.process_iter(["cmdline"])
                   if any("pgbv_restore" in a and a.endswith("COPY") for a in p.info["cmdline"] or ())]
        if roots and copying:
            return roots[0]
        time.sleep(0.1)
    raise AssertionError("the drill never reached the COPY of public.child")



def test_a_second_statement_behind_a_parallel_one_never_runs_on_a_connection(source: Source) -> None:
    """Statements leave psql only through the extended protocol: the server runs one or refuses."""
    text = ("CREATE TABLE public.t (id int);\nCREATE TABLE public.u (id int);\n"
            "COPY public.t (id) FROM stdin;\n1\n\\.\n"
            "CREATE INDEX t_id ON public.t USING btree (id); DROP TABLE public.u;\n"
            "-- PostgreSQL database dump complete\n")
    out, dsn = source.restore(text)
    assert out.parallel_jobs == {"copy": 1, "build": 1}
    assert len(out.errors) == 1 and out.errors[0].startswith(
        "dump line 6: ERROR: cannot insert multiple commands into a prepared statement | line: CREATE INDEX t_id")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.u') IS NOT NULL").fetchone() == (True,)
