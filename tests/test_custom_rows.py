"""Row fidelity of custom-format dumps: the archive's own rows against what the drill restored.

One cluster for the module: a source database with a hash-partitioned table on an enum key
(pg_dump 15 loads it through the root), a table whose schema and name hold quotes, spaces, `;`
and a newline, and an empty table. A healthy `pg_dump -Fc` archive is green with the row
evidence; an archive whose table definition carries a trigger that drops half the rows on load
is red, naming the table and both counts. One checks run judges both.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from checkrun import ChecksRun, run_checks
from srcdb import source_database

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.facts.drill import tiers
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.drillcluster import Endpoint
from pgbackup_verify.facts.drill.restore import restore_custom
from pgbackup_verify.facts.drill.safety import Janitor
from pgbackup_verify.facts.dumps.archivedata import archive_rows, count_data_blocks
from pgbackup_verify.facts.dumps.customfmt import count_archive_rows, read_archive_toc
from pgbackup_verify.facts.dumps.plainscan import display_name
from pgbackup_verify.facts.dumps.source import from_path

WEIRD_SCHEMA, WEIRD_TABLE = 'Odd "s" ;x', "t (a)\nb"
QUOTED = ".".join('"' + p.replace('"', '""') + '"' for p in (WEIRD_SCHEMA, WEIRD_TABLE))  # real newline and all
SOURCE = f"""
CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.moods (m public.mood, n int) PARTITION BY HASH (m);
CREATE TABLE public.moods_0 PARTITION OF public.moods FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE public.moods_1 PARTITION OF public.moods FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO public.moods SELECT (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::public.mood, g FROM generate_series(1, 30) g;
CREATE SCHEMA {QUOTED.split(".")[0]};
CREATE TABLE {QUOTED} (id int, v text);
INSERT INTO {QUOTED} SELECT g, E'line\\nbreak\\\\.' FROM generate_series(1, 8) g;
CREATE TABLE public.empty (id int);
CREATE TABLE public."a b" (id int);
INSERT INTO public."a b" SELECT generate_series(1, 5);
"""
WEIRD = display_name(WEIRD_SCHEMA, WEIRD_TABLE)
DROP_EVEN = ("\nCREATE FUNCTION public.drop_even() RETURNS trigger LANGUAGE plpgsql AS "
             "$$BEGIN IF NEW.id % 2 = 0 THEN RETURN NULL; END IF; RETURN NEW; END$$;\n"
             "CREATE TRIGGER drop_even BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION public.drop_even();\n")


def _string(s: bytes) -> bytes:
    """A string of the archive's TOC as pg_dump writes it (WriteStr: sign byte, 4-byte length)."""
    return b"\x00" + len(s).to_bytes(4, "little") + s


def add_trigger(archive: Path, out: Path) -> None:
    """The archive, its weird table's CREATE TABLE followed by a trigger that drops even ids on load.

    The archive was written to a pipe, so it holds no data offsets (pg_restore reads its data
    blocks in order): the table of contents may grow without moving anything it points at.
    """
    [entry] = [e for e in read_archive_toc(archive).entries if e.desc == "TABLE" and e.tag == WEIRD_TABLE]
    old = entry.defn.encode()
    new = old + DROP_EVEN.format(table=QUOTED).encode()
    data = archive.read_bytes()
    assert data.count(_string(old)) == 1
    out.write_bytes(data.replace(_string(old), _string(new)))


def target(root: Path, name: str, c: ThrowawayCluster, backups: Path) -> Path:
    work = root / f"work-{name}"
    work.mkdir()
    work.chmod(0o711)
    path = root / f"{name}.toml"
    path.write_text(f"""[target]
name = "{name}"
[database]
dsn = "{c.dsn("src")}"
dump_role = "postgres"
[backups]
directory = "{backups}"
pattern = "src_*.dump"
[drill]
mode = "scratch"
server_dsn = "{c.dsn()}"
allow_superuser_restore = true
work_dir = "{work}"
lock_file = "{work / 'drill.lock'}"
jobs = 1
expected_schemas = {json.dumps(["public", WEIRD_SCHEMA])}
""")
    return path


class Scene:
    def __init__(self, c: ThrowawayCluster, root: Path) -> None:
        self.cluster, self.root = c, root
        self.healthy, self.lossy = root / "healthy" / "src_1.dump", root / "lossy" / "src_1.dump"
        for d in (self.healthy.parent, self.lossy.parent):
            d.mkdir()
        subprocess.run(["pg_dump", "-Fc", "--no-owner", "--no-acl", "-d", "src", "-f", str(self.healthy)],
                       env=c.env(), check=True)
        piped = subprocess.run(["pg_dump", "-Fc", "--no-owner", "--no-acl", "-d", "src"], env=c.env(),
                               capture_output=True, check=True).stdout
        (root / "piped.dump").write_bytes(piped)
        add_trigger(root / "piped.dump", self.lossy)
        targets = [target(root, "healthy", c, self.healthy.parent), target(root, "lossy", c, self.lossy.parent)]
        self.run: ChecksRun = run_checks(root / "run", targets, [checks_dir() / "test_drill.py"])
        assert "Traceback" not in self.run.stdout, self.run.stdout[-3000:]


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with source_database("fcrows-", SOURCE) as (c, root):
        yield Scene(c, root)


def test_archive_rows_are_counted_per_copy_target_from_its_data_blocks(scene):
    counted = count_archive_rows(scene.healthy)
    assert counted.error is None
    rows = {display_name(*counted.scan.targets[t]): n for t, n in counted.scan.rows.items()}
    # pg_dump 15 loads hash partitions on an enum key through the root: every row goes to public.moods.
    assert rows == {"public.moods": 30, WEIRD: 8, "public.empty": 0, display_name("public", "a b"): 5}


def test_data_blocks_read_directly_count_what_pg_restore_renders(scene):
    """The direct read (zlib blocks, newlines) against pg_restore --data-only through the scanner:
    the same rows, targets and refreshes, for a seekable, a piped and an uncompressed archive."""
    plain = scene.root / "z0.dump"
    subprocess.run(["pg_dump", "-Fc", "-Z0", "--no-owner", "-d", "src", "-f", str(plain)], env=scene.cluster.env(),
                   check=True)
    for archive in (scene.healthy, scene.root / "piped.dump", plain, scene.lossy):
        direct, rendered = count_data_blocks(archive), count_archive_rows(archive)
        assert rendered.error is None
        assert (direct.rows, direct.targets, direct.copy_blocks, direct.refreshed) == (
            rendered.scan.rows, rendered.scan.targets, rendered.scan.copy_blocks, rendered.scan.refreshed), archive
    got = archive_rows(scene.healthy)
    assert got.error is None and got.read_by == "counted from its blocks directly"


def test_truncated_archive_falls_back_to_pg_restore_which_names_the_damage(scene):
    cut = scene.root / "cut.dump"
    data = scene.healthy.read_bytes()
    cut.write_bytes(data[:len(data) - 200])
    got = archive_rows(cut)
    assert got.read_by == "read with pg_restore --data-only"
    assert got.error is not None and got.error.startswith("pg_restore failed reading the archive's data: ")


def test_sample_tier_counts_only_the_tables_it_restores(scene):
    """The count reads the archive through the same restore list as the sample restore: no full read."""
    plan = tiers.TierPlan(tiers.SAMPLE, "sample", ("public.a b",), (), frozenset({("public", "a b")}))
    with psycopg.connect(scene.cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE sampled")
    work, janitor, source = scene.root / "work-sample", Janitor(), from_path(scene.healthy)
    work.mkdir()
    try:
        out = restore_custom(source, Endpoint(scene.cluster.dsn("sampled")), 2, 120, janitor, work,
                             None, plan.pg_restore_args(source, janitor, work), count_rows=True)
    finally:
        assert janitor.run_all() == []
    assert out.problems == [] and out.scan is not None
    counted = {display_name(*out.scan.targets[t]): n for t, n in out.scan.rows.items()}
    assert counted == {display_name("public", "a b"): 5}


def test_healthy_custom_dump_is_green_with_the_row_evidence(scene):
    result = scene.run["healthy"]
    result.assert_outcomes("row", passed=1)
    text = result.text
    # Two COPY blocks into public.moods: one per partition, both written to load through the root.
    # A superuser restores here (scratch mode): the load's counters are not trusted, the blocks are read.
    assert ("rows: 43 rows in 5 COPY blocks, into 4 tables (the archive's data blocks, counted from its blocks "
            "directly; not from the load's counters: the restore role is a superuser: the dump's functions look "
            "like the server's)") in text
    assert "compared public.moods: whole partition tree of 3 tables, rows loaded into public.moods" in text


def test_rows_dropped_on_load_from_a_custom_dump_fail_naming_the_table_and_both_counts(scene):
    result = scene.run["lossy"]
    result.assert_outcomes("row", failed=1)
    # One fault, one red line: the rows lost on load fail the row check and nothing else.
    red = [c["name"] for c in result.checks if c["outcome"] in ("failed", "error")]
    assert red == ["test_every_table_has_the_rows_read_from_the_dump"], result.text
    assert f"restore drill row fidelity: FAILED ({WEIRD}: 4 rows restored vs 8 in the dump)" in result.text
