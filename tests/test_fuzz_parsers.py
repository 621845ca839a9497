"""The parsers of untrusted input, fuzzed (Hypothesis): the cron line reader, the target loader, the plain
SQL scanner, the -Fc TOC reader (a real small archive, mutated) and the tar member checks. Each may only
answer or raise its module's documented error type (never a traceback of another kind), and each example
ends within the deadline. Modest example counts keep the module well under a minute on a busy machine."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from srcdb import source_database

from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.config.loader import LIST_SECTIONS, SECTIONS
from pgbackup_verify.facts import cron, cronline, offsite, tarcaps
from pgbackup_verify.facts.dumps import customfmt
from pgbackup_verify.facts.dumps.plainscan import MetaCommandRefused, PlainDumpScanner

FUZZ = settings(max_examples=100, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])

# --- cron lines ------------------------------------------------------------------------------------------
SHELL_BITS = st.sampled_from(["flock -n /run/x.lock ", "timeout 1h ", "sudo -u postgres ", "bash -c ", "sh -c '",
                              "env A=1 ", "nice -n 5 ", "cd /opt && ", "'", '"', "\\", "$(", ")", "`", "${", "}",
                              "%", "\\%", ";", "&&", "||", "|", "&", ">", ">>", "2>&1", "<", "<<EOF", "(", " ",
                              "\n", "/usr/local/bin/backup.sh", "./x.sh", "~/y", "runitor -uuid u -- ", "--", "-c"])
SHELLISH = st.lists(st.one_of(SHELL_BITS, st.text(max_size=6)), max_size=25).map("".join)


@FUZZ
@given(SHELLISH, st.one_of(st.none(), st.just("/root"), st.text(max_size=8)))
def test_cron_command_reader_never_crashes(command: str, home: str | None) -> None:
    pct = cronline.cron_percent(command)
    parsed = cronline.parse_command(pct.command, home, "")
    assert isinstance(parsed.error, str) and all(isinstance(w, str) for w in parsed.words)
    assert all(isinstance(r.path, str) for r in parsed.runs)
    errors: list[str] = []
    cronline.tokens(command, errors)
    try:
        cronline.tokens(command)
    except cronline.ShellSyntaxError:
        assert errors, "raised without errors= but noted nothing with it"
    cron.mentioned_paths(command)


CRON_LINES = st.lists(st.one_of(
    st.builds(lambda s, c: f"{s} {c}", st.sampled_from(["0 2 * * *", "@daily", "*/5 1-3 * * 1,2", "61 * * * *",
                                                        "0 2 * *", "a b c d e", "@reboot", "0 0 31 2 *"]), SHELLISH),
    st.sampled_from(["HOME=/srv", "SHELL=/bin/bash", "# comment", "", "MAILTO=\"\""]), st.text(max_size=30)),
    max_size=8).map("\n".join)


@FUZZ
@given(CRON_LINES, st.booleans())
def test_crontab_reader_never_crashes(text: str, system: bool) -> None:
    tab = cron.parse(text, "/etc/crontab" if system else "crontab", system=system)
    for e in tab.entries:
        assert isinstance(e.schedule, str) and isinstance(e.command, str)


# --- target files -----------------------------------------------------------------------------------------
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, (cls, _) in SECTIONS.items()}
KEYS.update({name: [f.name for f in dataclasses.fields(cls)] for name, cls in LIST_SECTIONS.items()})
SCALARS = st.one_of(st.text(max_size=12), st.integers(-2**63, 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["/", "/tmp", ".", "*.gz"]))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v) if isinstance(v, str) else str(v)


@st.composite
def target_texts(draw: st.DrawFn) -> str:
    out = []
    for section in draw(st.lists(st.sampled_from([*KEYS, "nonsense"]), max_size=6)):
        header = f"[[{section}]]" if section in LIST_SECTIONS else f"[{section}]"
        out.append(header)
        for key in draw(st.lists(st.sampled_from([*KEYS.get(section, ["x"]), "bogus_key"]), max_size=5,
                                 unique=True)):
            out.append(f"{key} = {_toml_value(draw(VALUES))}")
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="pgbv-fuzz-") as d:
        yield Path(d)


@FUZZ
@given(st.one_of(target_texts(), st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_target_loader_answers_config_errors_only(scratch: Path, text: str) -> None:
    f = scratch / "target.toml"
    f.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        t = load_target(f)
    except ConfigError as e:
        assert "\n" not in str(e).strip() or "invalid TOML" in str(e), str(e)  # one line (TOML's own may quote)
    else:
        assert t.database.dsn and t.backups.directory


# --- plain SQL dumps --------------------------------------------------------------------------------------
SQL_BITS = st.sampled_from(["COPY public.t (a, b) FROM stdin;\n", "1\t2\n", "\\.\n", "INSERT INTO t VALUES (1, 'x');",
                            "SELECT 1;", "\\! id\n", "\\restrict abc\n", "\\unrestrict abc\n", "'", '"', "$$", "$a$",
                            ";", "--", "/*", "*/", "(", ")", "\n", "BEGIN", "END", "E'\\\\'", "SET client_encoding = "
                            "'LATIN1';\n", "SET standard_conforming_strings = off;\n", "CREATE FUNCTION f() AS ",
                            "SELECT pg_catalog.lo_create('42');\n", "REFRESH MATERIALIZED VIEW m;\n", "\r", "\xe9"])
SQLISH = st.lists(st.one_of(SQL_BITS, st.text(max_size=5)), max_size=40).map("".join)


@FUZZ
@given(st.one_of(SQLISH.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=300)),
       st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_plain_sql_scanner_refuses_or_counts_never_crashes(data: bytes, cuts: list[int]) -> None:
    scan = PlainDumpScanner()
    try:
        i = 0
        for n in cuts * (len(data) // max(1, sum(cuts)) + 1):
            if i >= len(data):
                break
            scan.feed(data[i:i + n])
            i += n
        scan.finish()
    except MetaCommandRefused as e:
        assert str(e)


# --- custom-format archives -------------------------------------------------------------------------------
ARCHIVE_SQL = '''
CREATE SCHEMA "odd ""schema""";
CREATE TABLE "odd ""schema""".t (id int PRIMARY KEY, v text);
INSERT INTO "odd ""schema""".t VALUES (1, 'a'), (2, E'b\\nc');
CREATE TABLE public.plain (x int);
SELECT lo_create(4242);
'''


@pytest.fixture(scope="module")
def archive() -> Iterator[bytes]:
    with source_database("fuzz-", ARCHIVE_SQL) as (cluster, root):
        path = root / "small.dump"
        subprocess.run(["pg_dump", "-Fc", "-f", str(path), "-d", cluster.dsn("src")], check=True, env=cluster.env())
        yield path.read_bytes()


@FUZZ
@given(st.data())
def test_custom_toc_reader_answers_format_errors_only(scratch: Path, archive: bytes, data: st.DataObject) -> None:
    buf = bytearray(archive)
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "int"]))
        at = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        if kind == "flip" and buf:
            buf[at] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[at:]
        elif kind == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif buf:  # a length or count field made huge or negative
            buf[at:at + 5] = bytes([data.draw(st.integers(0, 1))]) + data.draw(st.binary(min_size=4, max_size=4))
    f = scratch / "mutated.dump"
    f.write_bytes(bytes(buf))
    try:
        toc = customfmt.read_archive_toc(f)
    except customfmt.ArchiveFormatError as e:
        assert str(e)
    else:
        assert toc.listed() >= 0 and isinstance(toc.schemas(), set)
        toc.large_objects()


def test_the_unmutated_archive_reads(scratch: Path, archive: bytes) -> None:
    f = scratch / "small.dump"
    f.write_bytes(archive)
    toc = customfmt.read_archive_toc(f)
    assert 'odd "schema"' in toc.schemas() and toc.large_objects() == 1


# --- tar members ------------------------------------------------------------------------------------------
NAME_PARTS = st.sampled_from(["..", ".", "", "a", "b", "etc", "/", "x y", "\n", "lnk", "\\", "~"])
TAR_NAMES = st.lists(NAME_PARTS, min_size=1, max_size=8).map("/".join)
KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.CONTTYPE]


@FUZZ
@given(st.lists(st.tuples(TAR_NAMES, st.sampled_from(KINDS), TAR_NAMES), min_size=1, max_size=30))
def test_tar_member_checks_always_answer(members: list[tuple[str, bytes, str]]) -> None:
    """Every member judged against the symlinks before it (names) and all of them (link targets), as
    scan_archive does: each check answers a reason or '' (no recursion error on link cycles)."""
    links: dict[str, str] = {}
    infos = []
    for name, kind, target in members:
        m = tarfile.TarInfo(name)
        m.type, m.linkname = kind, target if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
        infos.append(m)
        assert isinstance(offsite.name_reason(m, links), str)
        if m.issym():
            links[offsite._clean(m.name)] = m.linkname
    for m in infos:
        reason = offsite.hostile_reason(m, links)
        assert isinstance(reason, str)
        if m.name.startswith("/") or ".." in m.name.split("/"):
            assert reason, m.name


TAR_BYTES = st.binary(max_size=2048)


@FUZZ
@given(st.lists(st.tuples(TAR_NAMES, st.sampled_from(KINDS), st.integers(0, 64)), max_size=6), TAR_BYTES,
       st.integers(0, 4096))
def test_capped_tar_reader_on_mangled_archives(scratch: Path, members: list[tuple[str, bytes, int]], junk: bytes,
                                               at: int) -> None:
    """Real tar bytes with junk spliced in, read by tarfile with the capped header reader: members or a
    TarError (ArchiveLimit included), nothing else."""
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, size in members:
            m = tarfile.TarInfo(name.strip("/") or "x")
            m.type = kind
            m.size = size if kind == tarfile.REGTYPE else 0
            tf.addfile(m, io.BytesIO(bytes(m.size)) if m.isreg() else None)
    data = raw.getvalue()
    data = data[:at] + junk + data[at:]
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|", tarinfo=tarcaps.capped_tarinfo()) as tf:
            for m in tf:
                offsite.hostile_reason(m)
    except (tarfile.TarError, EOFError) as e:
        assert isinstance(str(e), str)

