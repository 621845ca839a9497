"""Restore errors keep the dump line, table and column, never the rows: facts.redact on real texts.

Every message here is what the real server, psql and pg_restore say when a restore of bad data
fails: COPY into a table whose types, lengths, keys, NOT NULL, CHECK and foreign keys the rows
break, an INSERT-style dump, a byte that is not UTF-8. The rows hold SECRET...; after
redact_copy_error no part of them is left, and the table, line, column and constraint still are.
One throwaway cluster for the module.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.redact import redact_copy_error

SCHEMA = """
CREATE TABLE public.t (id int PRIMARY KEY, name text NOT NULL, v varchar(3), d date, CHECK (id < 100));
CREATE TABLE public.child (pid int REFERENCES public.t(id));
CREATE TYPE public.mood AS ENUM ('ok');
CREATE TABLE public.m (x public.mood);
CREATE TABLE public.big (n int);
"""
HEAD = "COPY public.t (id, name, v, d) FROM stdin;\n"
# case -> (dump text, what must still be named after redaction)
CASES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "type": (f"{HEAD}SECRET1\tSECRETNAME\tx\t2020-01-01\n\\.\n".encode(), ("COPY t, line 1, column id", "integer")),
    "extra column": (f"{HEAD}1\tSECRETNAME\tx\t2020-01-01\tSECRETX\n\\.\n".encode(), ("COPY t, line 1",)),
    "missing column": (f"{HEAD}1\tSECRETNAME\n\\.\n".encode(), ('missing data for column "v"', "COPY t, line 1")),
    "too long": (f"{HEAD}1\tSECRETNAME\tSECRETLONG\t2020-01-01\n\\.\n".encode(), ("COPY t, line 1, column v",)),
    "duplicate key": (f"{HEAD}73\tSECRETNAME\tx\t2020-01-01\n73\tSECRETNAME2\ty\t2020-01-01\n\\.\n".encode(),
                      ('unique constraint "t_pkey"', "Key (id)=", "COPY t, line 2")),
    "not null": (f"{HEAD}1\t\\N\tSEC\t2020-01-01\n\\.\n".encode(), ('column "name" of relation "t"',)),
    "check": (f"{HEAD}500\tSECRETNAME\tx\t2020-01-01\n\\.\n".encode(), ('check constraint "t_id_check"',)),
    "foreign key": (b"COPY public.child (pid) FROM stdin;\n4242\n\\.\n",
                    ('foreign key constraint "child_pid_fkey"', 'is not present in table "t"')),
    "date": (f"{HEAD}1\tSECRETNAME\tx\tSECRETDATE\n\\.\n".encode(), ("COPY t, line 1, column d",)),
    "enum": (b"COPY public.m (x) FROM stdin;\nSECRETMOOD\n\\.\n", ("COPY m, line 1, column x", "enum mood")),
    "out of range": (b"COPY public.big (n) FROM stdin;\n99999999999\n\\.\n", ("COPY big, line 1, column n",)),
    "not utf-8": (f"{HEAD}1\tSECRET".encode() + b"\xff\xfe\tx\t2020-01-01\n\\.\n",
                  ('encoding "UTF8"', "COPY t, line 1")),
    "insert": (b"INSERT INTO public.t VALUES ('SECRETNUM', 'SECRETNAME', 'x', '2020-01-01');\n",
               ("invalid input syntax for type integer", "LINE 1:")),
}
SECRETS = ("SECRET", "SEC", "4242", "99999999999", "0xff", "500", "73")


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    with ThrowawayCluster(tag="redact-") as c:
        yield c


def fresh(cluster: ThrowawayCluster, name: str) -> str:
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute(SCHEMA)
    return cluster.dsn(name)


@pytest.fixture(scope="module")
def messages(cluster: ThrowawayCluster) -> dict[str, list[str]]:
    """Per case: psql's stderr (the serial drill), and the server's diagnostics formatted the way the
    parallel drill formats them (a COPY through psycopg)."""
    out: dict[str, list[str]] = {}
    for case, (dump, _) in CASES.items():
        dsn = fresh(cluster, "redact")
        psql = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", "-"],
                              input=b"SET client_encoding = 'UTF8';\n" + dump, env=cluster.env(), capture_output=True,
                              timeout=60, check=False)
        assert psql.returncode != 0, case
        out[case] = [psql.stderr.decode(errors="replace")]
        if dump.startswith(b"COPY"):
            header, rest = dump.split(b"\n", 1)
            with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(psycopg.Error) as e:
                with conn.cursor() as cur, cur.copy(header.decode()) as copy:
                    copy.write(rest.rsplit(b"\\.\n", 1)[0])
            d = e.value.diag
            out[case].append("\n    ".join(x for x in (
                f"dump line 9: ERROR: {d.message_primary} | line: {header.decode()}",
                d.message_detail and f"DETAIL: {d.message_detail}", d.context and f"CONTEXT: {d.context}") if x))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_restore_names_where_and_withholds_the_rows(messages: dict[str, list[str]], case: str) -> None:
    for raw in messages[case]:
        assert leaked(raw), f"not vacuous: the server's own text quotes the data: {raw}"
        shown = redact_copy_error(raw)
        assert not leaked(shown), (raw, shown)
        for named in CASES[case][1]:
            assert named in shown, (named, shown)


def test_pg_restore_messages_withhold_the_rows(cluster: ThrowawayCluster, tmp_path: Path) -> None:
    """pg_restore of a -Fc archive (COPY and --inserts) into a database whose key the rows break."""
    src = fresh(cluster, "redact_src")
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("INSERT INTO public.t VALUES (1, 'SECRETNAME', 'x', '2020-01-01'), (2, 'SECRET2', 'y', NULL)")
    dst = fresh(cluster, "redact_dst")
    with psycopg.connect(dst, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.t ADD CONSTRAINT no_two CHECK (id <> 2)")
    for options in ((), ("--inserts",)):
        archive = tmp_path / f"a{len(options)}.dump"
        subprocess.run(["pg_dump", "-Fc", "-a", "-t", "public.t", *options, "-d", src, "-f", str(archive)],
                       env=cluster.env(), check=True, timeout=60)
        restore = subprocess.run(["pg_restore", "-d", dst, str(archive)], env=cluster.env(), capture_output=True,
                                 text=True, timeout=60, check=False)
        assert restore.returncode != 0 and leaked(restore.stderr), restore.stderr
        shown = redact_copy_error(restore.stderr)
        assert not leaked(shown) and 'check constraint "no_two"' in shown, shown
        assert ("Command was: INSERT INTO public.t VALUES (<row withheld>)" in shown) == bool(options), shown


def test_statements_and_names_are_left_as_they_are() -> None:
    """What locates the fault stays: a COPY header, a DDL line, quoted object names."""
    for text in ('dump line 3: ERROR: relation "public.x y" does not exist | line: COPY public."x y" (a) FROM stdin;',
                 'dump line 9: ERROR: type "mood" already exists | line: CREATE TYPE public.mood AS ENUM (\'ok\');'):
        assert redact_copy_error(text) == text
