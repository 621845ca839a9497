"""Hostile backup directories: each odd entry a clear finding or a documented skip, never a traceback.

Entries named like dumps that the checks cannot judge (a name that is not UTF-8, a symlink loop, a
dangling symlink, a FIFO, a directory, a link out of the backup directory) are findings of the stray
check, named (undecodable bytes as \\xNN) and never opened: a FIFO would block the read. The newest
judgeable dump is judged as usual, and the reports are written. An unreadable dump is proven as the
real unprivileged user `nobody` (the self-tests run as root, who reads a mode-0000 file): a
permission finding, never the advice to pipe pg_dump through gzip. A link planted to a root-only
file shows nothing of it in any report.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from as_nobody import probe, run_as_nobody
from checkrun import ChecksRun, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.dumps.gzipscan import scan_file

CHECKS = Path(__file__).resolve().parent.parent / "checks" / "test_dumps.py"
STRAY = "test_no_stray_partial_artifacts"
NEWER = time.time() + 60  # newer than every real dump: each odd entry would be "the latest" by mtime


def newest(d: Path) -> Path:
    return max(d.glob("directus_*.sql.gz"), key=lambda p: p.stat().st_mtime)


def _non_utf8(d: Path) -> None:
    p = Path(os.fsdecode(os.path.join(os.fsencode(d), b"directus_\xff\xfe.sql.gz")))
    shutil.copyfile(newest(d), p)
    os.utime(p, (NEWER, NEWER))


def _loop(d: Path) -> None:
    os.symlink("directus_loop_b.sql.gz", d / "directus_loop_a.sql.gz")
    os.symlink("directus_loop_a.sql.gz", d / "directus_loop_b.sql.gz")


def _dangling(d: Path) -> None:
    os.symlink("/nonexistent/directus_gone.sql.gz", d / "directus_gone.sql.gz")


def _fifo(d: Path) -> None:
    os.mkfifo(d / "directus_fifo.sql.gz")
    os.utime(d / "directus_fifo.sql.gz", (NEWER, NEWER))


SECRET = "SECRET-4242 root:$6$only-root-reads-this"


def _outside_link(d: Path) -> None:
    """Whoever writes the backup directory plants a link to a root-only file, newest by mtime."""
    private = Path(tempfile.mkdtemp(prefix="pgbv-private-", dir=d.parent))  # 0700, root's
    for name, text in (("shadow", f"{SECRET}\n"), ("dump.sql", f"-- {SECRET}\nSELECT '{SECRET}';\n")):
        (private / name).write_text(text)
        (private / name).chmod(0o600)
        os.utime(private / name, (NEWER, NEWER))
    os.symlink(private / "shadow", d / "directus_zz.sql.gz")
    os.symlink(private / "dump.sql", d / "directus_zz_plain.sql.gz")


def _directory(d: Path) -> None:
    (d / "directus_dir.sql.gz").mkdir()
    os.utime(d / "directus_dir.sql.gz", (NEWER, NEWER))


CASES = {  # case -> (damage, the stray finding's words)
    "non-utf8": (_non_utf8, r"directus_\xff\xfe.sql.gz (file name is not valid UTF-8: not judged)"),
    "loop": (_loop, "directus_loop_a.sql.gz (symlink loop: not judged), directus_loop_b.sql.gz (symlink loop"),
    "dangling": (_dangling, "directus_gone.sql.gz (symlink to a missing file: not judged)"),
    "fifo": (_fifo, "directus_fifo.sql.gz (a named pipe (FIFO) named like a dump, not a regular file: not read)"),
    "directory": (_directory, "directus_dir.sql.gz (a directory named like a dump without a toc.dat (not a "
                              "pg_dump -Fd archive, or pg_dump failed before writing it): not read)"),
    "outside-link": (_outside_link, "directus_zz.sql.gz (symlink to a file outside the backup directory: not read)"),
}


@pytest.fixture(scope="module")
def hostile_run(seed_cluster: ThrowawayCluster, healthy_backups: Path,
                tmp_path_factory: pytest.TempPathFactory) -> ChecksRun:
    root = tmp_path_factory.mktemp("hostile")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    targets = []
    for case, (damage, _) in CASES.items():
        d = root / case
        shutil.copytree(healthy_backups, d)
        damage(d)
        targets.append(demo.write_target_file(root / f"{case}.toml", dsn, d, name=case))
    return run_checks(root / "run", targets, [CHECKS], timeout=300)


@pytest.mark.parametrize("case", list(CASES))
def test_an_entry_named_like_a_dump_that_cannot_be_judged_is_one_finding(hostile_run: ChecksRun, case: str) -> None:
    result = hostile_run[case]
    result.assert_outcomes(passed=7, failed=1, skipped=1)  # the stray check alone; the TOC check has no -Fc
    assert result.failed() == {STRAY}
    [stray] = [c for c in result.checks if c["name"] == STRAY]
    assert CASES[case][1] in stray["message"], stray["message"]
    assert stray["message"].endswith("fix: entries named like dumps that cannot be judged (not regular files, "
                                     "symlink loops, links out of the backup directory, names that are not "
                                     "UTF-8): move them out of the backup directory or rename them, or narrow "
                                     "[backups].pattern so it names only the job's dump files"), stray["message"]
    # The newest dump the checks CAN judge is the one judged, not the odd entry.
    result.fnmatch_line("file: */directus_20*_0200.sql.gz (*")


def test_a_planted_link_shows_nothing_of_the_file_it_points_at(hostile_run: ChecksRun) -> None:
    """Not a line, not a byte: every report file, the run's JSON and its output are searched."""
    written = [hostile_run.workdir / "run.json",
               *(p for p in (hostile_run.workdir / "reports").rglob("*") if p.is_file())]  # scan records too
    assert any(p.name == "latest.html" for p in written)
    for part in (SECRET, "SECRE", "-- SE", "only-root"):  # 5 bytes: what "starts with b'...'" showed
        for p in written:
            assert part.encode() not in p.read_bytes(), (part, p)
        assert part not in hostile_run.stdout + hostile_run.stderr, part


def test_a_file_that_is_not_a_dump_has_no_line_shown() -> None:
    """Reached by name (a job that writes elsewhere, a path typo): still no line of it in a finding."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-notdump-"))
    try:
        (d / "x.sql").write_text(f"-- {SECRET}\nSELECT 1;\n")
        (d / "y.sql.gz").write_text(f"{SECRET}\n")
        for scan in (scan_file(d / "x.sql", compressed=None), scan_file(d / "y.sql.gz")):
            shown = " ".join([scan.header_line, scan.error or "", *scan.problems(1 << 20)])
            assert not scan.header_found and "SECRET" not in shown, shown
    finally:
        shutil.rmtree(d)


def test_the_reports_are_written_and_hold_no_traceback(hostile_run: ChecksRun) -> None:
    reports = hostile_run.workdir / "reports"
    doc = json.loads((reports / "latest.json").read_text(encoding="utf-8"))
    html = (reports / "latest.html").read_text(encoding="utf-8")
    assert r"directus_\xff\xfe.sql.gz" in html and "directus_fifo.sql.gz" in html
    assert doc and "Traceback" not in hostile_run.stdout + hostile_run.stderr
    assert not [c for c in hostile_run.doc["checks"] if c["outcome"] == "error"]


@pytest.fixture
def nobody_dir(healthy_backups: Path) -> Iterator[Path]:
    """A directory nobody may enter, holding a copy of the healthy week readable by all."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-hostile-"))
    try:
        os.chmod(d, 0o777)  # nobody writes its reports here
        shutil.copytree(healthy_backups, d / "backups")
        os.chmod(d / "backups", 0o755)
        for f in (d / "backups").iterdir():
            f.chmod(0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_an_unreadable_dump_gets_a_permission_finding(nobody_dir: Path, seed_cluster: ThrowawayCluster) -> None:
    python, why = probe(nobody_dir)
    if python is None:
        pytest.skip(why)
    victim = newest(nobody_dir / "backups")
    victim.chmod(0o000)
    t = demo.write_target_file(nobody_dir / "t.toml", seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE),
                               nobody_dir / "backups", name="unreadable")
    t.chmod(0o644)
    args = ["-p", "no:cacheprovider", "-p", "no:xdist", "--basetemp", str(nobody_dir / "basetemp"),
            "--json", str(nobody_dir / "run.json"), "--target", str(t), str(CHECKS)]
    res = run_as_nobody(python, f"import pytest; sys.exit(pytest.main({args!r}))", nobody_dir)
    assert (nobody_dir / "run.json").is_file(), res.stdout[-3000:] + res.stderr[-2000:]
    checks = json.loads((nobody_dir / "run.json").read_text())["checks"]
    text = "\n".join(f"{c['name']}: {c['outcome']}: {c['message']}" for c in checks)
    assert "Traceback" not in res.stdout + res.stderr, text
    assert not [line for line in text.splitlines() if "gzip" in line.partition("fix:")[2]], text
    expected = (f"latest dump: FAILED ({victim.name}: cannot read (Permission denied) as user nobody, mode 0000); "
                "fix: let the user running the checks read the dumps")
    judged = [c for c in checks if c["name"].startswith("test_latest_dump_") and "younger" not in c["name"]]
    # One fault, one finding: the first content check names it, the other two are not judged.
    assert [c["outcome"] for c in judged] == ["failed", "skipped", "skipped"], text
    assert judged[0]["message"].startswith(expected), text
    assert all(c["message"].startswith(f"not judged: latest dump: FAILED ({victim.name}: cannot read")
               for c in judged[1:]), text
    # Its age is known from stat() alone, and judged.
    [age] = [c for c in checks if c["name"] == "test_latest_dump_is_younger_than_max_age"]
    assert age["outcome"] == "passed", text
    # The night it leaves uncovered is the same fault: not judged, naming the permission finding (one red line).
    [nights] = [c for c in checks if c["name"] == "test_no_night_missing_in_retention_window"]
    assert (nights["kind"], nights["message"]) == ("not judged", f"not judged: {expected.split('; fix')[0]}"), text
    assert (nobody_dir / "reports" / "latest.json").is_file()
    # Root reads a mode-0000 file: the same directory is healthy to a root run (a documented non-finding).
