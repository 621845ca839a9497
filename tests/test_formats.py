"""Every way real hosts write their dumps, each judged by the shipped checks on real files.

One corpus cluster (tests/corpus.py: odd names, partitions, large objects) is dumped by the real
`pg_dump` the ways hosts do: piped through the real zstd, xz, lz4 and bzip2 (`.sql.zst` ...). Each
healthy dump gets every dump check and the restore drill green, rows counted. Then each format's
own faults, made for real: the file cut short, one byte flipped inside the compressed data, and
`pg_dump` failing into the compressor (a valid stream of an empty payload): red, one line naming
the format and the fix. One run of the shipped checks judges all targets.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import corpus
import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from test_corpus import PLAIN_OK, TOTAL_ROWS, target_toml
from test_pg16 import pg16_bindir

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.safety import stop_cluster_dir
from pgbackup_verify.facts.dumps.customfmt import count_archive_rows, read_archive_toc, read_toc
from pgbackup_verify.facts.dumps.inventory import scan_dump
from pgbackup_verify.facts.dumps.plainscan import CLUSTER_DUMP, MetaCommandRefused, PlainDumpScanner
from pgbackup_verify.facts.dumps.scanrecord import FileKey
from pgbackup_verify.facts.init import read_dumps

CHECKS = [checks_dir() / "test_dumps.py", checks_dir() / "test_drill.py"]
# format -> (file suffix, the compressor's command writing to stdout)
COMPRESSORS = {"zstd": (".sql.zst", ["zstd", "-q", "-c"]), "xz": (".sql.xz", ["xz", "-c"]),
               "lz4": (".sql.lz4", ["lz4", "-q", "-c"]), "bzip2": (".sql.bz2", ["bzip2", "-c"])}
DAMAGE_FIX = "fix: the file is damaged or was cut while being written"


def dump_through(c: ThrowawayCluster, out: Path, tool: list[str], *args: str) -> int:
    """`pg_dump ... | tool > out`, both real processes; pg_dump's exit code."""
    with out.open("wb") as f:
        dump = subprocess.Popen(["pg_dump", "-d", corpus.DBNAME, *args], env=c.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert dump.stdout is not None
        subprocess.run(tool, stdin=dump.stdout, stdout=f, check=True)
        dump.stdout.close()
        return dump.wait()


def flip(p: Path, at: int) -> None:
    data = bytearray(p.read_bytes())
    data[at] ^= 0xFF
    p.write_bytes(bytes(data))


def pg_dump_to(c: ThrowawayCluster, out: Path, *args: str) -> None:
    """pg_dump writing the archive itself (-Fd, -Ft)."""
    subprocess.run(["pg_dump", "-d", corpus.DBNAME, "-f", str(out), *args], env=c.env(), check=True)


def dumpall_through(c: ThrowawayCluster, out: Path, *args: str) -> None:
    """`pg_dumpall ... | gzip > out`."""
    with out.open("wb") as f:
        dump = subprocess.Popen(["pg_dumpall", *args], env=c.env(), stdout=subprocess.PIPE)
        assert dump.stdout is not None
        subprocess.run(["gzip"], stdin=dump.stdout, stdout=f, check=True)
        dump.stdout.close()
        assert dump.wait() == 0


# pg_dump 16 archives; lz4 and zstd only where the 16 build supports them (pgserver 0.1.4's 16.2 does not:
# "this build does not support compression with LZ4"): those cases then skip, saying so.
PG16_ARCHIVES = {"custom-gzip.dump": ["-Fc", "--compress=gzip:9"], "dir-gzip.d": ["-Fd", "-j", "2"],
                 "custom-zstd.dump": ["-Fc", "--compress=zstd"], "custom-lz4.dump": ["-Fc", "--compress=lz4"],
                 "dir-zstd.d": ["-Fd", "--compress=zstd", "-j", "2"], "dir-lz4.d": ["-Fd", "--compress=lz4"]}


def _pg16_bindir() -> Path | None:
    try:
        return pg16_bindir()
    except pytest.skip.Exception:
        return None


def biggest(d: Path, glob: str) -> Path:
    return max(d.glob(glob), key=lambda f: f.stat().st_size)


@dataclass(repr=False)
class Formats:
    run: ChecksRun  # healthy dumps: dump checks and the drill
    faults: ChecksRun  # damaged dumps and cluster dumps: the dump checks
    files: dict[str, Path]
    facts: dict[str, object]
    bin16: Path | None  # PostgreSQL 16 binaries (the pgserver wheel), when they run here

    def __getitem__(self, case: str) -> TargetResult:
        for run in (self.run, self.faults):
            assert "Traceback" not in run.stdout, run.stdout[-3000:]
            if case in run.targets():
                return run[case]
        raise KeyError(case)


@pytest.fixture(scope="module")
def formats() -> Iterator[Formats]:
    # Under /tmp, passable by others (0711): the sandboxed drill's unnamed user walks through to its cluster.
    root = Path(tempfile.mkdtemp(prefix="pgbv-formats-"))
    root.chmod(0o711)
    files: dict[str, Path] = {}
    facts: dict[str, object] = {}
    healthy: list[Path] = []
    faulty: list[Path] = []
    works: list[Path] = []
    with ThrowawayCluster(tag="formats-") as c:
        corpus.build(c.dsn(), c.dsn(corpus.DBNAME))

        def case(name: str, suffix: str, fault: bool = False, pattern: str | None = None) -> Path:
            d = root / name / "backups"
            d.mkdir(parents=True)
            work = root / name / "work"
            work.mkdir()
            works.append(work)
            t = root / name / "t.toml"
            # The drill restores in its sandboxed throwaway cluster, as the plain restore role (test_corpus).
            text = target_toml(name, c, d, work, pattern or f"corpus_*{suffix}")
            if name == "globals":  # roles only: a few hundred bytes is its whole honest payload
                text = text.replace("min_payload_bytes = 1000", "min_payload_bytes = 100")
            t.write_text(text)
            (faulty if fault else healthy).append(t)
            p = files[name] = d / f"corpus_{name}{suffix}"
            return p

        for fmt, (suffix, tool) in COMPRESSORS.items():
            assert dump_through(c, case(fmt, suffix), tool) == 0
            p = case(f"{fmt}-cut", suffix, fault=True)
            dump_through(c, p, tool)
            p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])
            facts[f"{fmt}-cut"] = subprocess.run([tool[0], "-t", str(p)], capture_output=True).returncode
            p = case(f"{fmt}-flip", suffix, fault=True)
            dump_through(c, p, tool)
            flip(p, p.stat().st_size // 2)
            p = case(f"{fmt}-empty", suffix, fault=True)  # pg_dump fails; the compressor still writes a valid stream
            facts[f"{fmt}-empty"] = dump_through(c, p, tool, "--role", "no_such_role")
        # Named .sql.gz, written by zstd: the bytes decide, the name is only a hint.
        dump_through(c, case("zstd-named-gz", ".sql.gz"), COMPRESSORS["zstd"][1])

        # Directory format, written by two jobs; and its faults.
        pg_dump_to(c, case("directory", ".d"), "-Fd", "-j", "2")
        p = case("directory-missing", ".d", fault=True)
        pg_dump_to(c, p, "-Fd")
        gone = biggest(p, "[0-9]*.dat.gz")
        facts["directory-missing"] = gone.name
        gone.unlink()
        p = case("directory-cut", ".d", fault=True)
        pg_dump_to(c, p, "-Fd")
        cut = biggest(p, "[0-9]*.dat.gz")
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
        facts["directory-cut"] = cut.name
        p = case("directory-flip", ".d", fault=True)
        pg_dump_to(c, p, "-Fd")
        flipped = biggest(p, "[0-9]*.dat.gz")
        flip(flipped, flipped.stat().st_size // 2)
        facts["directory-flip"] = flipped.name
        # A directory named like a dump without toc.dat: pg_dump -Fd failed before writing anything.
        p = case("directory-no-toc", ".d", fault=True)
        p.mkdir()
        (p / "3000.dat.gz").write_bytes(b"")

        # Tar format; and its faults.
        pg_dump_to(c, case("tar", ".tar"), "-Ft")
        p = case("tar-cut", ".tar", fault=True)
        pg_dump_to(c, p, "-Ft")
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        p = case("tar-missing", ".tar", fault=True)  # a data member the TOC lists is not in the archive
        pg_dump_to(c, p, "-Ft")
        with tarfile.open(p) as tf:
            gone_member = max((m for m in tf.getmembers() if m.name[0].isdigit()), key=lambda m: m.size).name
        subprocess.run(["tar", "--delete", "-f", str(p), gone_member], check=True)  # the real tar
        facts["tar-missing"] = gone_member

        # pg_dump 16 compresses custom and directory archives with lz4 or zstd itself.
        bin16 = _pg16_bindir()
        if bin16 is not None:
            side = root / "pg16"
            side.mkdir()
            for name, args in PG16_ARCHIVES.items():
                p = files[f"pg16-{name}"] = side / name
                done = subprocess.run([str(bin16 / "pg_dump"), "-d", corpus.DBNAME, "-f", str(p), *args],
                                      env=c.env(), capture_output=True, text=True)
                if "does not support compression" in done.stderr:
                    facts[f"pg16-{name}"] = done.stderr.strip()
                else:
                    assert done.returncode == 0, done.stderr
            p = files["pg16-dir-cut"] = side / "dir-cut.d"
            shutil.copytree(files["pg16-dir-gzip.d"], p)
            cut = biggest(p, "[0-9]*.dat.gz")
            cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

        # Cluster dumps: pg_dumpall | gzip, and --globals-only beside the per-database dumps.
        dumpall_through(c, case("dumpall", ".sql.gz", fault=True))
        dumpall_through(c, case("dumpall-drill", ".sql.gz"))  # the drill restores the whole cluster
        p = case("globals", ".sql.gz", fault=True, pattern="corpus_*globals*.sql.gz")
        dumpall_through(c, p, "--globals-only")
        try:
            yield Formats(run_checks(root / "run", healthy, CHECKS), run_checks(root / "faults", faulty, CHECKS[:1]),
                          files, facts, bin16)
        finally:
            for w in works:
                for leftover in w.glob("pgbv-cluster-*"):
                    stop_cluster_dir(leftover)
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("fmt", [*COMPRESSORS, "zstd-named-gz"])
def test_healthy_compressed_plain_dump_passes_every_check_and_the_drill(formats, fmt):
    result = formats[fmt]
    result.assert_outcomes(**PLAIN_OK)
    text = result.text
    assert re.search(rf"^payload: \d+ bytes decompressed \([^)]*\), {fmt.split('-')[0]}$", text, re.M), text
    assert f"rows: {TOTAL_ROWS} rows in " in text
    assert "large objects: 3 in the dump, 3 restored, 3 in the live database" in text


@pytest.mark.parametrize("fmt", list(COMPRESSORS))
def test_cut_compressed_dump_is_red_naming_the_format(formats, fmt):
    assert formats.facts[f"{fmt}-cut"] != 0  # the compressor's own test agrees
    name = formats.files[f"{fmt}-cut"].name
    text = formats[f"{fmt}-cut"].text
    assert f"latest dump {fmt} stream: FAILED ({name}: {fmt} stream ends early at byte " in text
    assert f"(file truncated)); {DAMAGE_FIX}" in text


@pytest.mark.parametrize("fmt", list(COMPRESSORS))
def test_flipped_byte_is_red_by_the_formats_own_check(formats, fmt):
    name = formats.files[f"{fmt}-flip"].name
    text = formats[f"{fmt}-flip"].text
    assert f"latest dump {fmt} stream: FAILED ({name}: {fmt} data corrupt near byte " in text
    assert DAMAGE_FIX in text


@pytest.mark.parametrize("fmt", list(COMPRESSORS))
def test_pg_dump_failing_into_the_compressor_is_red(formats, fmt):
    assert formats.facts[f"{fmt}-empty"] != 0  # the real pg_dump, really failing
    p = formats.files[f"{fmt}-empty"]
    assert subprocess.run([COMPRESSORS[fmt][1][0], "-t", str(p)], capture_output=True).returncode == 0
    result = formats[f"{fmt}-empty"]
    assert result.outcome("test_latest_dump_gzip_stream_is_valid") == "passed"  # the stream itself is valid
    assert (f"latest dump payload: FAILED ({p.name}: 0 bytes decompressed from {fmt}, {p.stat().st_size} bytes "
            "on disk, minimum 1000); fix: check pg_dump's stderr") in result.text


ARCHIVE_OK = {"passed": 16, "skipped": 1}  # as a custom-format dump: the TOC check runs, shrink has no baseline


@pytest.mark.parametrize("fmt", ["directory", "tar"])
def test_healthy_directory_and_tar_archives_pass_every_check_and_the_drill(formats, fmt):
    result = formats[fmt]
    result.assert_outcomes(**ARCHIVE_OK)
    text = result.text
    assert re.search(rf"^payload: \d+ bytes decompressed \([^)]*\), {fmt}$", text, re.M), text
    assert "large objects in TOC: 3" in text and "(read from the archive TOC)" in text
    # Counted from the load itself (facts/drill/loadcount.py): the archive is read once, by pg_restore.
    assert f"rows: {TOTAL_ROWS} rows in " in text
    assert "(the rows the load stored, from the server's own counters: the archive read once)" in text
    assert "large objects: 3 in the dump, 3 restored, 3 in the live database" in text
    # [drill].jobs is 2: a tar archive restores with one job (pg_restore cannot restore one in parallel).
    assert re.search(rf"^dump used: .*{formats.files[fmt].name} \(.*\) \({fmt}, ", text, re.M), text


def test_directory_missing_a_data_file_is_red_naming_the_file(formats):
    gone = formats.facts["directory-missing"].removesuffix(".gz")
    name = formats.files["directory-missing"].name
    text = formats["directory-missing"].text
    assert (f"latest dump archive: FAILED ({name}: directory archive incomplete: 1 of 19 data file(s) listed in "
            f"toc.dat missing: {gone} (TABLE DATA ") in text
    assert DAMAGE_FIX in text


@pytest.mark.parametrize("case", ["directory-cut", "directory-flip"])
def test_damaged_data_file_of_a_directory_archive_is_red(formats, case):
    name = formats.files[case].name
    text = formats[case].text
    assert f"latest dump archive: FAILED ({name}: pg_restore failed reading the archive: " in text
    assert DAMAGE_FIX in text


def test_directory_without_toc_is_named_not_judged(formats):
    name = formats.files["directory-no-toc"].name
    assert f"{name} (a directory named like a dump without a toc.dat" in formats["directory-no-toc"].text


def test_cut_tar_archive_is_red(formats):
    name = formats.files["tar-cut"].name
    text = formats["tar-cut"].text
    assert f"latest dump archive: FAILED ({name}: tar archive " in text
    assert DAMAGE_FIX in text


def test_tar_missing_a_member_the_toc_lists_is_red(formats):
    gone = formats.facts["tar-missing"]
    name = formats.files["tar-missing"].name
    assert (f"latest dump archive: FAILED ({name}: tar archive incomplete: 1 of 19 data file(s) listed in toc.dat "
            f"missing: {gone} (TABLE DATA ") in formats["tar-missing"].text


@pytest.mark.parametrize("case", ["dumpall", "globals"])
def test_cluster_dump_header_and_footer_are_accepted(formats, case):
    result = formats[case]
    assert result.outcome("test_latest_dump_has_pg_dump_header_and_footer") == "passed", result.text
    assert "header line: '-- PostgreSQL database cluster dump'" in result.text


@pytest.mark.parametrize(("case", "fmt"), [("zstd", "plain-zstd"), ("xz", "plain-xz"), ("lz4", "plain-lz4"),
                                           ("bzip2", "plain-bzip2"), ("directory", "directory"), ("tar", "tar")])
def test_init_recognises_each_format_and_its_pattern(formats, case, fmt):
    """`pgbackup-verify init` reads the backup directory as it finds it: the pattern and format it writes."""
    facts = read_dumps(formats.files[case].parent)
    name = formats.files[case].name
    assert (facts.fmt, facts.good) == (fmt, 1) and fnmatch.fnmatch(name, facts.pattern), facts
    assert facts.pattern.endswith(name[name.index("."):])  # .sql.lz4 stays .sql.lz4 (its digits are no date)
    assert facts.smallest_payload > 50_000  # decompressed (or restored-to) SQL, not the stored bytes
    if fmt in ("directory", "tar"):
        assert facts.toc_schemas is not None and corpus.WEIRD_SCHEMA in facts.toc_schemas


@pytest.mark.parametrize("name", list(PG16_ARCHIVES))
def test_pg16_archives_toc_read_and_data_blocks_counted(formats, name, monkeypatch):
    if formats.bin16 is None:
        pytest.skip("the PostgreSQL 16 binaries of the pgserver wheel do not run here")
    if f"pg16-{name}" in formats.facts:
        pytest.skip(f"pg_dump 16 here: {formats.facts[f'pg16-{name}']}")
    monkeypatch.setenv("PATH", f"{formats.bin16}{os.pathsep}{os.environ['PATH']}")  # the host's pg_restore is 16
    p = formats.files[f"pg16-{name}"]
    toc = read_archive_toc(p)
    assert toc.version[:2] == (1, 15) and toc.large_objects() == 3 and corpus.WEIRD_SCHEMA in toc.schemas()
    assert read_toc(p).readable
    scan = scan_dump(p)
    assert scan.valid and scan.header_found and scan.footer_found, scan.error
    assert scan.format == ("directory" if name.startswith("dir") else "custom")
    rows = count_archive_rows(p)
    assert rows.error is None and sum(rows.scan.rows.values()) == TOTAL_ROWS


def test_pg16_directory_with_a_cut_data_file_is_red(formats, monkeypatch):
    if formats.bin16 is None:
        pytest.skip("the PostgreSQL 16 binaries of the pgserver wheel do not run here")
    monkeypatch.setenv("PATH", f"{formats.bin16}{os.pathsep}{os.environ['PATH']}")
    scan = scan_dump(formats.files["pg16-dir-cut"])
    assert not scan.valid
    assert scan.error is not None and scan.error.startswith("pg_restore failed reading the archive: "), scan.error


def test_cluster_dump_restores_whole_in_the_drill(formats):
    """pg_dumpall | gzip of the corpus cluster: roles and every database restored (clusterdump.py), the
    expectations on the corpus database (the one of [database].dsn), its rows counted."""
    result = formats["dumpall-drill"]
    result.assert_outcomes(**PLAIN_OK)
    text = result.text
    assert f"{corpus.DBNAME}: {TOTAL_ROWS} rows in " in text, text
    assert f"restore db: {corpus.DBNAME} (of the cluster dump's " in text, text
    assert "roles of the dump: " in text and "made plain NOLOGIN owner roles" in text, text


@pytest.mark.parametrize(("line", "cluster"), [(b"\\connect corpus\n", True), (b"\\c other\n", True),
                                                (b"\\! id\n", False), (b"\\connectx\n", False)])
def test_every_meta_command_stays_refused_and_only_connect_is_named_a_cluster_dump(line, cluster):
    scanner = PlainDumpScanner()
    with pytest.raises(MetaCommandRefused) as refused:
        list(scanner.feed(b"SELECT 1;\n" + line))
    assert (CLUSTER_DUMP in str(refused.value)) is cluster


def test_scan_record_key_of_a_directory_archive_moves_when_a_data_file_is_rewritten(tmp_path):
    """The record keeps a verdict while the key proves the dump unchanged: for a directory, its files count."""
    d = tmp_path / "corpus.d"
    d.mkdir()
    (d / "toc.dat").write_bytes(b"PGDMP")
    data = d / "3000.dat.gz"
    data.write_bytes(b"abc")
    before, st = FileKey.of(d), os.stat(d)
    time.sleep(0.02)
    data.write_bytes(b"abd")  # same size, rewritten in place: the directory's own stamps do not move
    assert (os.stat(d).st_mtime_ns, os.stat(d).st_ctime_ns) == (st.st_mtime_ns, st.st_ctime_ns)
    assert FileKey.of(d) != before
