"""Every way real hosts write their dumps, each judged by the shipped checks on real files.

One corpus cluster (tests/corpus.py: odd names, partitions, large objects) is dumped by the real
`pg_dump` the ways hosts do: piped through the real zstd, xz, lz4 and bzip2 (`.sql.zst` ...). Each
healthy dump gets every dump check and the restore drill green, rows counted. Then each format's
own faults, made for real: the file cut short, one byte flipped inside the compressed data, and
`pg_dump` failing into the compressor (a valid stream of an empty payload): red, one line naming
the format and the fix. One run of the shipped checks judges all targets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import corpus
import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from test_corpus import PLAIN_OK, TOTAL_ROWS, target_toml

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.safety import stop_cluster_dir

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


@dataclass(repr=False)
class Formats:
    run: ChecksRun
    files: dict[str, Path]
    facts: dict[str, object]

    def __getitem__(self, case: str) -> TargetResult:
        assert "Traceback" not in self.run.stdout, self.run.stdout[-3000:]
        return self.run[case]


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Formats]:
    root = tmp_path_factory.mktemp("formats")
    files: dict[str, Path] = {}
    facts: dict[str, object] = {}
    targets, works = [], []
    with ThrowawayCluster(tag="formats-") as c:
        corpus.build(c.dsn(), c.dsn(corpus.DBNAME))

        def case(name: str, suffix: str) -> Path:
            d = root / name / "backups"
            d.mkdir(parents=True)
            work = root / name / "work"
            work.mkdir()
            works.append(work)
            t = root / name / "t.toml"
            t.write_text(target_toml(name, c, d, work, f"corpus_*{suffix}"))
            targets.append(t)
            p = files[name] = d / f"corpus_{name}{suffix}"
            return p

        for fmt, (suffix, tool) in COMPRESSORS.items():
            assert dump_through(c, case(fmt, suffix), tool) == 0
            p = case(f"{fmt}-cut", suffix)
            dump_through(c, p, tool)
            p.write_bytes(p.read_bytes()[: p.stat().st_size * 2 // 3])
            facts[f"{fmt}-cut"] = subprocess.run([tool[0], "-t", str(p)], capture_output=True).returncode
            p = case(f"{fmt}-flip", suffix)
            dump_through(c, p, tool)
            flip(p, p.stat().st_size // 2)
            p = case(f"{fmt}-empty", suffix)  # pg_dump fails; the compressor still writes a valid stream
            facts[f"{fmt}-empty"] = dump_through(c, p, tool, "--role", "no_such_role")
        # Named .sql.gz, written by zstd: the bytes decide, the name is only a hint.
        dump_through(c, case("zstd-named-gz", ".sql.gz"), COMPRESSORS["zstd"][1])
        try:
            yield Formats(run_checks(root / "run", targets, CHECKS), files, facts)
        finally:
            for w in works:
                for leftover in w.glob("pgbv-cluster-*"):
                    stop_cluster_dir(leftover)
                shutil.rmtree(w, ignore_errors=True)


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
