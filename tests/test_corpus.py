"""The shipped dump and drill checks on a real database of legal but unusual content (tests/corpus.py).

One cluster holds the corpus; real `pg_dump` writes it the ways real jobs do (plain | gzip, -Fc,
--inserts, --column-inserts --rows-per-insert, --load-via-partition-root, --no-owner
--no-privileges, --quote-all-identifiers -Z9), each dump in its own backup directory with its
own target file, and ONE run of the shipped checks judges them all. Healthy dumps: every check
green. Each blind spot (rows dropped on load, in a table with a name full of `;()".` and
newlines, in a partition tree loaded through its root, in an INSERT-format dump; a --no-blobs
dump; a schema-only dump; a -Fc dump without a schema whose name has spaces): red, naming it.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import corpus
import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from srcdb import drill_target_toml

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.safety import stop_cluster_dir
from pgbackup_verify.facts.dumps.customfmt import read_archive_toc, read_toc
from pgbackup_verify.facts.dumps.plainscan import PlainDumpScanner, display_name

CHECKS = [checks_dir() / "test_dumps.py", checks_dir() / "test_drill.py"]
WEIRD = display_name(corpus.WEIRD_SCHEMA, corpus.WEIRD_TABLE)
NEWLINE = display_name(corpus.NEWLINE_SCHEMA, corpus.NEWLINE_TABLE)
TOTAL_ROWS = sum(n for n in corpus.EXPECTED_ROWS.values() if n > 0) + corpus.MOOD_ROWS
# Plain healthy targets: 9 dump checks (shrink: no earlier dump; TOC: not -Fc), 7 drill checks.
PLAIN_OK = {"passed": 15, "skipped": 2}
DROP_EVEN = """CREATE FUNCTION public.drop_even() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN IF NEW.id % 2 = 0 THEN RETURN NULL; END IF; RETURN NEW; END$$;
"""


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a TOML basic string


def target_toml(name: str, c: ThrowawayCluster, backups: Path, work: Path, pattern: str) -> str:
    schemas = ", ".join(toml_str(s) for s in corpus.SCHEMAS)
    # The sandboxed throwaway drill: the corpus restores as the plain restore role, its odd owners made plain roles.
    return drill_target_toml(name, c.dsn(corpus.DBNAME), backups, work, pattern,
                             backups_extra=f"expected_schemas = [{schemas}]",
                             drill_extra=f"roles = {json.dumps(list(corpus.ROLES))}")


def pg_dump(c: ThrowawayCluster, out: Path, *args: str, compress: bool = True, custom: bool = False) -> None:
    """The real pg_dump of the corpus; plain output piped through gzip unless pg_dump compresses itself."""
    if custom:
        subprocess.run(["pg_dump", "-d", corpus.DBNAME, "-Fc", "-f", str(out), *args], env=c.env(), check=True)
        return
    data = subprocess.run(["pg_dump", "-d", corpus.DBNAME, *args], env=c.env(), capture_output=True,
                          check=True).stdout
    out.write_bytes(gzip.compress(data) if compress else data)


def ident(*parts: str) -> str:
    """As pg_dump writes a name that needs quotes (real newlines and all)."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def edit(path: Path, before: bytes, insert: bytes) -> None:
    data = gzip.decompress(path.read_bytes())
    assert data.count(before) >= 1, before
    path.write_bytes(gzip.compress(data.replace(before, insert + before, 1)))


@dataclass(repr=False)
class Corpus:
    cluster: ThrowawayCluster
    dumps: dict[str, Path]
    run: ChecksRun
    live_rows: dict[tuple[str, str], int]

    def __getitem__(self, case: str) -> TargetResult:
        assert "Traceback" not in self.run.stdout, self.run.stdout[-3000:]
        return self.run[case]


@pytest.fixture(scope="module")
def corpus_run() -> Iterator[Corpus]:
    # Under /tmp, passable by others (0711): the sandboxed drill's unnamed user walks through to its cluster.
    root = Path(tempfile.mkdtemp(prefix="pgbv-corpus-"))
    root.chmod(0o711)
    with ThrowawayCluster(tag="corpus-") as c:
        corpus.build(c.dsn(), c.dsn(corpus.DBNAME))
        dumps: dict[str, Path] = {}
        targets, works = [], []

        def case(name: str, *args: str, custom: bool = False, compress: bool = True) -> Path:
            d = root / name / "backups"
            d.mkdir(parents=True)
            p = dumps[name] = d / (f"corpus_{name}.dump" if custom else f"corpus_{name}.sql.gz")
            pg_dump(c, p, *args, compress=compress, custom=custom)
            work = root / name / "work"
            work.mkdir()
            works.append(work)
            t = root / name / "t.toml"
            t.write_text(target_toml(name, c, d, work, "corpus_*.dump" if custom else "corpus_*.sql.gz"))
            targets.append(t)
            return p

        case("plain")
        case("custom", custom=True)
        case("inserts", "--inserts")
        case("column-inserts", "--column-inserts", "--rows-per-insert=3")
        case("via-root", "--load-via-partition-root")
        case("no-owner", "--no-owner", "--no-privileges")
        case("quote-all-z9", "--quote-all-identifiers", "-Z9", compress=False)
        # The blind spots.
        case("no-blobs", "--no-blobs")
        case("custom-partial", "--no-blobs", f"--exclude-schema={ident(corpus.WEIRD_SCHEMA)}", custom=True)
        case("schema-only", "--schema-only")
        p = case("rows-lost-weird")  # a trigger the dump also carries fires on load: half the rows vanish
        weird_copy = f"COPY {WEIRD} (".encode()
        edit(p, weird_copy, DROP_EVEN.encode() + f"CREATE TRIGGER drop_even BEFORE INSERT ON {WEIRD} FOR EACH ROW "
             "EXECUTE FUNCTION public.drop_even();\n\n".encode())
        p = case("rows-lost-tree", "--load-via-partition-root")  # rows routed through the root into a leaf
        edit(p, b"COPY public.events ", DROP_EVEN.encode() + b"CREATE TRIGGER drop_even BEFORE INSERT ON "
             b"public.events_2024_a FOR EACH ROW EXECUTE FUNCTION public.drop_even();\n\n")
        p = case("rows-lost-inserts", "--inserts")
        newline = ident(corpus.NEWLINE_SCHEMA, corpus.NEWLINE_TABLE)
        edit(p, f"INSERT INTO {newline} ".encode(), f"CREATE RULE nothing AS ON INSERT TO {newline} DO INSTEAD "
             "NOTHING;\n\n".encode())
        try:
            yield Corpus(c, dumps, run_checks(root / "run", targets, CHECKS), corpus.row_counts(c.dsn(corpus.DBNAME)))
        finally:
            for w in works:
                for leftover in w.glob("pgbv-cluster-*"):
                    stop_cluster_dir(leftover)
            shutil.rmtree(root, ignore_errors=True)


HEALTHY = ["plain", "inserts", "column-inserts", "via-root", "no-owner", "quote-all-z9"]


@pytest.mark.parametrize("case", HEALTHY)
def test_healthy_plain_dumps_of_unusual_content_pass_every_check(corpus_run, case):
    result = corpus_run[case]
    result.assert_outcomes(**PLAIN_OK)
    text = result.text
    assert f"rows: {TOTAL_ROWS} rows in " in text
    assert "large objects: 3 in the dump, 3 restored, 3 in the live database" in text
    assert f'materialized views refreshed: {display_name(corpus.WEIRD_SCHEMA, "m;v ü")} 6 rows, public.mv_big 10 rows' \
        in text
    # pg_dump 15 loads hash partitions on an enum key through the root: compared as a whole tree.
    assert "compared public.moods: whole partition tree of 3 tables, rows loaded into public.moods" in text


def test_the_corpus_holds_what_the_tests_say(corpus_run):
    """The database itself, not the suite, says what each table holds."""
    live = corpus_run.live_rows
    assert live[("public", "moods_0")] + live[("public", "moods_1")] == corpus.MOOD_ROWS
    assert all(live[k] == n for k, n in corpus.EXPECTED_ROWS.items() if n >= 0)


def test_insert_dumps_count_rows_per_statement_and_per_tuple(corpus_run):
    assert f"rows: {TOTAL_ROWS} rows in 0 COPY blocks and {TOTAL_ROWS} INSERT statements" in corpus_run["inserts"].text
    # --rows-per-insert=3: 2000 rows of plain_s.big in 667 statements
    assert "0 COPY blocks and 688 INSERT statements" in corpus_run["column-inserts"].text


def test_load_via_partition_root_is_compared_per_tree(corpus_run):
    text = corpus_run["via-root"].text
    assert "compared public.events: whole partition tree of 5 tables, rows loaded into public.events" in text


def test_healthy_custom_format_dump_lists_every_unusual_schema(corpus_run):
    result = corpus_run["custom"]
    result.assert_outcomes(passed=16, skipped=1)  # shrink: no earlier dump
    text = result.text
    assert f"schemas in TOC: {display_name(corpus.WEIRD_SCHEMA)}, " in text and '"new\\nline"' in text
    assert "large objects in TOC: 3" in text and "(read from the archive TOC)" in text
    # The archive's rows, counted from the load itself (no code of the dump's runs during the restore),
    # are compared too, partition trees whole.
    assert f"rows: {TOTAL_ROWS} rows in " in text
    assert "(the rows the load stored, from the server's own counters: the archive read once)" in text
    assert "compared public.moods: whole partition tree of 3 tables, rows loaded into public.moods" in text


def test_rows_dropped_on_load_in_a_table_with_an_unusual_name_fail_naming_it(corpus_run):
    result = corpus_run["rows-lost-weird"]
    result.assert_outcomes("row", passed=0, failed=1)
    assert f"restore drill row fidelity: FAILED ({WEIRD}: 3 rows restored vs 6 in the dump)" in result.text


def test_rows_dropped_in_a_partition_loaded_through_its_root_fail_naming_the_tree(corpus_run):
    result = corpus_run["rows-lost-tree"]
    result.assert_outcomes("row", failed=1)
    assert ("restore drill row fidelity: FAILED (public.events (partition tree): 7 rows restored vs 9 in the dump)"
            in result.text)


def test_rows_dropped_from_an_insert_format_dump_fail_naming_the_table(corpus_run):
    result = corpus_run["rows-lost-inserts"]
    result.assert_outcomes("row", failed=1)
    assert f"restore drill row fidelity: FAILED ({NEWLINE}: 0 rows restored vs 3 in the dump)" in result.text


def test_no_blobs_dump_fails_naming_the_count(corpus_run):
    result = corpus_run["no-blobs"]
    result.assert_outcomes(passed=PLAIN_OK["passed"] - 1, failed=1, skipped=2)
    assert ("restore drill large objects: FAILED (0 restored and 0 in the dump vs 3 in the live database); fix: the "
            "dump job leaves large objects out: drop --no-blobs (-B)") in result.text


def test_schema_only_dump_never_passes_row_fidelity_on_nothing(corpus_run):
    result = corpus_run["schema-only"]
    result.assert_outcomes("row", failed=1)
    assert "restore drill row fidelity: FAILED (0 rows in 0 COPY blocks and 0 INSERT statements vs 18 restored " \
           "tables: the dump holds no table data)" in result.text


def test_custom_dump_missing_a_schema_with_spaces_fails_naming_it(corpus_run):
    result = corpus_run["custom-partial"]
    text = result.text
    # One fault, one red line: the TOC check owns the missing schema; the drill's large-object count is its own.
    result.assert_outcomes("custom_format", "large_object", failed=1, skipped=1)
    assert (f"custom-format TOC: FAILED (corpus_custom-partial.dump: schema(s) {display_name(corpus.WEIRD_SCHEMA)} "
            "missing from the TOC") in text
    assert "not judged: custom-format TOC: FAILED" in text


# --- the parsers on their own, on the corpus ---------------------------------------------------------


def test_archive_toc_is_read_exactly_as_pg_restore_lists_it(corpus_run):
    """Differential: every entry pg_restore --list prints, field by field, from our own read of the archive."""
    path = corpus_run.dumps["custom"]
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in listing.splitlines() if ln and not ln.startswith(";")]
    toc = read_archive_toc(path)

    def shown(s: str | None, hyphen: bool) -> str:
        return (s or ("-" if hyphen else "")).replace("\n", " ")  # pg_restore's sanitize_line

    ours = [f"{e.dump_id}; {e.catalog_id[0]} {e.catalog_id[1]} {e.desc} {shown(e.namespace, True)} "
            f"{shown(e.tag, False)} {shown(e.owner, False)}" for e in toc.entries
            if e.desc not in ("ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE")]
    assert ours == lines
    assert {e.tag for e in toc.entries if e.desc == "SCHEMA"} >= {corpus.WEIRD_SCHEMA, corpus.NEWLINE_SCHEMA}
    owners = {e.owner for e in toc.entries}
    assert {corpus.OWNER, corpus.NEWLINE_OWNER} <= owners
    facts = read_toc(path)
    assert facts.missing(list(corpus.SCHEMAS)) == [] and facts.large_objects == corpus.LARGE_OBJECTS


def test_scanner_reads_every_corpus_dump_like_psql(corpus_run):
    """Chunked like the drill reads it: no refusal, every row counted where pg_dump wrote it."""
    for case in ("plain", "inserts", "column-inserts", "via-root", "quote-all-z9"):
        data = gzip.decompress(corpus_run.dumps[case].read_bytes())
        scan = PlainDumpScanner()
        out = [bytes(p) for i in range(0, len(data), 4096) for p in scan.feed(data[i:i + 4096])] + scan.finish()
        assert b"".join(out).count(b"\n") == data.count(b"\n")
        assert sum(scan.rows.values()) == TOTAL_ROWS, case
        assert scan.large_objects == corpus.LARGE_OBJECTS and len(scan.refreshed) == 2 and scan.complete
        assert (corpus.WEIRD_SCHEMA, corpus.WEIRD_TABLE) in scan.targets.values()
