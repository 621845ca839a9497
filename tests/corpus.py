"""A real database of legal but unusual content, for proving the dump and drill checks on it.

Everything here is legal PostgreSQL that real databases hold and that tripped earlier parsers:
names with `;`, `(`, `)`, quotes, dots, spaces, newlines and unicode (schemas, tables, columns,
owners), enum/composite/domain types, arrays, jsonb, bytea with every byte value, text with tabs,
newlines, CR, backslashes and a line `\\.`, NULL next to '', generated and identity columns,
inheritance, nested partitions with default partitions, hash partitions on an enum key (which
pg_dump 15 loads through the root), unlogged, 0-row and 0-column tables, large objects,
materialized views (one WITH NO DATA), and a trigger and a rule that would drop every row if they
fired on load (pg_dump creates them after the data, so a healthy restore keeps the rows).

`build(conninfo)` creates it in an empty database; `EXPECTED_ROWS` are the rows each table holds
(by schema and name, ONLY that table), so a test can compare a restore without trusting the suite.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

DBNAME = "corpus"
# Schemas, tables, a column and an owner with every character class a name may hold.
WEIRD_SCHEMA = 'Sch ema.Ünï;(x)"q'
NEWLINE_SCHEMA = "new\nline"
WEIRD_TABLE = "ta;ble (1) \"quoted\".dot"
NEWLINE_TABLE = "multi\nline; tab\tle"
OWNER = "Öwner with space.dot"
NEWLINE_OWNER = "own\ner"
ROLES = (OWNER, NEWLINE_OWNER)
LARGE_OBJECTS = 3
SCHEMAS = ("public", "plain_s", WEIRD_SCHEMA, NEWLINE_SCHEMA)

# Rows in each table (ONLY that table) after the build; partitions by their leaf.
EXPECTED_ROWS: dict[tuple[str, str], int] = {
    (WEIRD_SCHEMA, WEIRD_TABLE): 6,
    (NEWLINE_SCHEMA, NEWLINE_TABLE): 3,
    ("public", "parent"): 2,
    ("public", "child"): 3,
    ("public", "events_2024_a"): 4,
    ("public", "events_2024_def"): 3,
    ("public", "events_def"): 2,
    ("public", "moods_0"): -1,  # the hash spreads 7 rows over both leaves; -1: look it up
    ("public", "moods_1"): -1,
    ("public", "unlogged_t"): 5,
    ("public", "empty_t"): 0,
    ("public", "nocols"): 4,
    ("public", "guarded"): 5,
    ("public", "ruled"): 3,
    ("plain_s", "big"): 2000,
}
MOOD_ROWS = 7

_SQL = r"""
CREATE EXTENSION citext;
CREATE EXTENSION hstore;
CREATE SCHEMA plain_s;
CREATE SCHEMA {weird_schema} AUTHORIZATION {owner};
CREATE SCHEMA {newline_schema} AUTHORIZATION {newline_owner};

CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy', 'quote''d', 'semi;colon', 'new
line');
CREATE TYPE public.pair AS (a integer, "b;c" text);
CREATE DOMAIN public.posint AS integer CHECK (VALUE > 0);

CREATE TABLE {weird_schema}.{weird_table} (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "a;b" text,
    "c(d)" text,
    "e""f" text,
    "g.h" text,
    "spa ce" text,
    "ünï" text,
    "new
line" text,
    m public.mood,
    p public.pair,
    d public.posint,
    arr integer[],
    tarr text[],
    j jsonb,
    b bytea,
    t text,
    ci citext,
    h hstore,
    twice integer GENERATED ALWAYS AS (id * 2) STORED
);
ALTER TABLE {weird_schema}.{weird_table} OWNER TO {owner};

INSERT INTO {weird_schema}.{weird_table} ("a;b", "c(d)", "e""f", "g.h", "spa ce", "ünï", "new
line", m, p, d, arr, tarr, j, b, t, ci, h)
SELECT 'x;y', ')(', '"', '.', ' ', 'ü', E'\n', 'new
line', ROW(1, 'b;c')::public.pair, 1, ARRAY[1, NULL, 3], ARRAY['a,b', 'c"d', NULL, 'NULL', '\.', ''],
       '{{"k": "v\n\\.", "n": null, "arr": [1, 2], "ü": "\t"}}',
       (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex') FROM generate_series(0, 255) g),
       E'tab\there\nnew line\r\ncr\\backslash\n\\.\nlast', 'MiXeD', 'a=>1, "b c"=>NULL';
INSERT INTO {weird_schema}.{weird_table} ("a;b", t, b, m) VALUES
    (NULL, NULL, NULL, 'quote''d'), ('', '', '', 'semi;colon'),
    ('\.', E'\\.', '\x5c2e', 'sad'), (E'\\! touch /tmp/x', E'\n\\.\n', '\x0a5c2e0a', 'happy'),
    (E'line1\r\nline2\rline3', E'COPY x FROM stdin;\n\\.\n\\! id', '\x00', 'ok');

CREATE TABLE {newline_schema}.{newline_table} ("x;y" integer, "p(q)" text, "r""s" text);
ALTER TABLE {newline_schema}.{newline_table} OWNER TO {newline_owner};
INSERT INTO {newline_schema}.{newline_table} VALUES (1, ';', '('), (2, ')', '"'), (3, NULL, '');

CREATE TABLE public.parent (id integer, v text);
CREATE TABLE public.child (extra integer) INHERITS (public.parent);
INSERT INTO public.parent VALUES (1, 'p1'), (2, 'p2');
INSERT INTO public.child VALUES (3, 'c1', 30), (4, 'c2', 40), (5, 'c3', 50);

CREATE TABLE public.events (id integer, at date, kind text) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY LIST (kind);
CREATE TABLE public.events_2024_a PARTITION OF public.events_2024 FOR VALUES IN ('a');
CREATE TABLE public.events_2024_def PARTITION OF public.events_2024 DEFAULT;
CREATE TABLE public.events_def PARTITION OF public.events DEFAULT;
INSERT INTO public.events SELECT g, '2024-03-01', 'a' FROM generate_series(1, 4) g;
INSERT INTO public.events SELECT g, '2024-05-01', 'b' FROM generate_series(5, 7) g;
INSERT INTO public.events SELECT g, '2019-01-01', 'a' FROM generate_series(8, 9) g;

-- Hash partitions on an enum key: pg_dump 15 writes their data as COPY into the root.
CREATE TABLE public.moods (id integer, m public.mood) PARTITION BY HASH (m);
CREATE TABLE public.moods_0 PARTITION OF public.moods FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.moods_1 PARTITION OF public.moods FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO public.moods SELECT g, (enum_range(NULL::public.mood))[1 + g % 6] FROM generate_series(1, 7) g;

CREATE UNLOGGED TABLE public.unlogged_t (id integer);
INSERT INTO public.unlogged_t SELECT generate_series(1, 5);
CREATE TABLE public.empty_t (id integer, note text);
CREATE TABLE public.nocols ();
INSERT INTO public.nocols SELECT FROM generate_series(1, 4);

CREATE TABLE plain_s.big (id bigint PRIMARY KEY, label text);
INSERT INTO plain_s.big SELECT g, md5(g::text) FROM generate_series(1, 2000) g;

-- Would drop every row if they fired on load; pg_dump creates them after the data.
CREATE TABLE public.guarded (id integer);
INSERT INTO public.guarded SELECT generate_series(1, 5);
CREATE FUNCTION public.drop_row() RETURNS trigger LANGUAGE plpgsql AS $body$BEGIN RETURN NULL; END$body$;
CREATE TRIGGER "drop;row" BEFORE INSERT ON public.guarded FOR EACH ROW EXECUTE FUNCTION public.drop_row();
CREATE TABLE public.ruled (id integer);
INSERT INTO public.ruled SELECT generate_series(1, 3);
CREATE RULE "no (insert)" AS ON INSERT TO public.ruled DO INSTEAD NOTHING;

CREATE MATERIALIZED VIEW public.mv_big AS SELECT id, label FROM plain_s.big WHERE id <= 10;
CREATE MATERIALIZED VIEW {weird_schema}."m;v ü" AS SELECT id, "a;b" FROM {weird_schema}.{weird_table};
CREATE MATERIALIZED VIEW public.mv_nodata AS SELECT id FROM plain_s.big WITH NO DATA;
CREATE VIEW {weird_schema}."v (1)" AS SELECT id FROM {weird_schema}.{weird_table};
CREATE SEQUENCE {weird_schema}."s;eq" START 42;
CREATE FUNCTION {weird_schema}."f;n"(x integer) RETURNS integer LANGUAGE sql BEGIN ATOMIC SELECT x + 1; END;

SELECT lo_from_bytea(0, 'hello');
SELECT lo_from_bytea(0, (SELECT decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex')
                         FROM generate_series(0, 255) g));
SELECT lo_from_bytea(0, '');
"""


def _sql() -> sql.Composable:
    ids = {"weird_schema": WEIRD_SCHEMA, "newline_schema": NEWLINE_SCHEMA, "weird_table": WEIRD_TABLE,
           "newline_table": NEWLINE_TABLE, "owner": OWNER, "newline_owner": NEWLINE_OWNER}
    return sql.SQL(_SQL).format(**{k: sql.Identifier(v) for k, v in ids.items()})


def build(admin_dsn: str, dbname_dsn: str) -> None:
    """Create the roles (cluster-wide) and the corpus in the empty database behind `dbname_dsn`."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role in ROLES:
            conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
    with psycopg.connect(dbname_dsn, autocommit=True) as conn:
        conn.execute(_sql())
        with conn.cursor() as cur:  # the large objects, one with an owner whose name has a space
            oid = cur.execute("SELECT min(oid) FROM pg_largeobject_metadata").fetchone()
            assert oid is not None
            cur.execute(sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(oid[0]),
                                                                           sql.Identifier(OWNER)))


def row_counts(conninfo: str) -> dict[tuple[str, str], int]:
    """Rows in each corpus table, ONLY that table (by the database, not by the suite)."""
    out = {}
    with psycopg.connect(conninfo) as conn:
        for schema, table in EXPECTED_ROWS:
            q = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            row = conn.execute(q).fetchone()
            out[(schema, table)] = row[0] if row else 0
    return out
