"""Self-tests of the restore drill: real clusters, real pg_dump output, real psql."""

from __future__ import annotations

import fcntl
import gzip
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest
from checkrun import ChecksRun, TargetResult, run_checks
from pgbackup_verify_demo import demo

from pgbackup_verify.cli import checks_dir
from pgbackup_verify.config import ConfigError, load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster
from pgbackup_verify.facts.drill.run import run_drill
from pgbackup_verify.facts.drill.safety import DrillAborted, guard_name, stop_cluster_dir
from pgbackup_verify.facts.dumps.plainscan import MetaCommandRefused, PlainDumpScanner, split_name
from pgbackup_verify.facts.dumps.source import DumpSource, from_path

CHECK = str(checks_dir() / "test_drill.py")


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """Drill work dir: under /tmp (the postgres OS user must reach it), private to one test."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-drilltest-"))
    d.chmod(0o711)
    yield d
    for leftover in d.glob("pgbv-cluster-*"):  # only after a failed test: never leave a server running
        stop_cluster_dir(leftover)
    shutil.rmtree(d, ignore_errors=True)


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return f'"{v}"' if isinstance(v, str | Path) else str(v)


def scratch(c: ThrowawayCluster) -> dict[str, str]:
    """Scratch mode on the session cluster: a database instead of initdb, where the mode does not matter."""
    return {"mode": "scratch", "server_dsn": c.dsn(), "allow_superuser_restore": True}


def drill_toml(work_dir: Path, **keys: object) -> str:
    """A [drill] section; every drill of a test works in its own directory (lock, clusters).

    Its lock too: the default lock is one per host user, so drills of parallel self-tests (xdist
    workers) would wait on each other and a short time limit would be spent waiting.
    """
    keys.setdefault("lock_file", work_dir / "drill.lock")
    lines = ["[drill]", f'work_dir = "{work_dir}"', *(f"{k} = {_toml(v)}" for k, v in keys.items())]
    return "\n".join(lines) + "\n"


def newest(backup_dir: Path) -> Path:
    return max(backup_dir.glob("*.sql.gz"), key=lambda p: p.stat().st_mtime)


def pg_dump(cluster: ThrowawayCluster, out: Path, *args: str) -> Path:
    """A real `pg_dump | gzip` of the seed database, with extra pg_dump arguments."""
    dump = subprocess.run(["pg_dump", "--no-owner", "--no-acl", *args, "-d", demo.DBNAME], env=cluster.env(),
                          capture_output=True, check=True)
    out.write_bytes(gzip.compress(dump.stdout))
    return out


def edit_dump(path: Path, old: str, new: str, count: int = 1) -> None:
    text = gzip.decompress(path.read_bytes()).decode()
    assert old in text, old
    path.write_bytes(gzip.compress(text.replace(old, new, count).encode()))


def run_one(pytester: pytest.Pytester, target: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--target", str(target), "-p", "no:cacheprovider", "-rA", *args, CHECK)


def drill_work_dir() -> Path:
    """Under /tmp (the postgres OS user must reach it)."""
    d = Path(tempfile.mkdtemp(prefix="pgbv-drilltest-"))
    d.chmod(0o711)
    return d


DROP_EVEN_ROWS = """CREATE FUNCTION public.drop_even_rows() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN IF NEW.id % 2 = 0 THEN RETURN NULL; END IF; RETURN NEW; END$$;
CREATE TRIGGER drop_even BEFORE INSERT ON public.item_03 FOR EACH ROW EXECUTE FUNCTION public.drop_even_rows();

COPY public.item_03 """
BAD_STATEMENT = "ALTER TABLE public.no_such_table ADD COLUMN x integer;"
WARN = "DO $$BEGIN RAISE WARNING 'drill probe'; END$$;"
META = {"own-line": "\\! touch {marker}\n", "after-statement": "SELECT 1; \\! touch {marker}\n"}


@dataclass(repr=False)
class Drills:
    """One checks run over a target per drill case: own backups copy, own work dir (lock, clusters)."""

    run: ChecksRun
    backups: dict[str, Path]
    work: dict[str, Path]
    facts: dict[str, dict]

    def __getitem__(self, case: str) -> TargetResult:
        return self.run[case]


@pytest.fixture(scope="module")
def drills(seed_cluster: ThrowawayCluster, cluster: ThrowawayCluster, healthy_backups: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drills]:
    from pgbackup_verify_demo import scene

    root = tmp_path_factory.mktemp("drill-cases")
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    backups, work, facts, toml = {}, {}, {}, {}

    def case(name: str, **keys: object) -> Path:
        b = backups[name] = root / name / "backups"
        shutil.copytree(healthy_backups, b)
        w = work[name] = drill_work_dir()
        facts[name] = {}
        toml[name] = lambda: drill_toml(w, **keys)
        return b

    case("healthy", min_tables={"public": 12}, min_views=3)

    b = case("missing-schema", min_tables={"public": 12}, expect_live_catalog=True, **scratch(cluster))
    pg_dump(seed_cluster, b / "directus_9999-01-01_0200.sql.gz", "--exclude-schema=sandbox_tac",
            "--exclude-table=public.item_05")

    b = case("statement-error", **scratch(cluster))
    edit_dump(newest(b), "CREATE TABLE public.item_03 (", f"{BAD_STATEMENT}\n\nCREATE TABLE public.item_03 (")
    facts["statement-error"]["line_no"] = gzip.decompress(newest(b).read_bytes()).decode().splitlines().index(
        BAD_STATEMENT) + 1

    # The COPY block is intact (200 rows are read from the dump); a trigger the dump also
    # carries silently discards half of them on load. Nothing errors: only counting tells.
    b = case("rows-lost", **scratch(cluster))
    edit_dump(newest(b), "COPY public.item_03 ", DROP_EVEN_ROWS)
    edit_dump(newest(b), "COPY public.item_04 ", f"{WARN}\nCOPY public.item_04 ")

    for meta_id, meta in META.items():
        b = case(f"meta-{meta_id}", **scratch(cluster))
        marker = work[f"meta-{meta_id}"] / "pwned"
        line = meta.format(marker=marker)
        edit_dump(newest(b), "COPY public.item_03 ", f"{line}COPY public.item_03 ")
        facts[f"meta-{meta_id}"] = {"marker": marker, "line": line}

    b = case("time-limit", time_limit_seconds=3, **scratch(cluster))
    edit_dump(newest(b), "COPY public.item_03 ", "SELECT pg_sleep(120);\nCOPY public.item_03 ")

    # [drill].source = "offsite": the PG member of the newest archive, streamed through a real rclone.
    b = case("offsite", source="offsite")
    remote = scene.write_offsite(root / "offsite-root", b)
    facts["offsite"]["remote"] = remote
    offsite_part = scene.offsite_toml(remote, named_remote=False)

    targets = [demo.write_target_file(root / name / "t.toml", dsn, backups[name], name=name,
                                      extra=toml[name]() + (offsite_part if name == "offsite" else ""))
               for name in backups]
    try:
        yield Drills(run_checks(root / "run", targets, [CHECK]), backups, work, facts)
    finally:
        for w in work.values():
            for leftover in w.glob("pgbv-cluster-*"):  # only after a failure: never leave a server running
                stop_cluster_dir(leftover)
            shutil.rmtree(w, ignore_errors=True)


def test_healthy_dump_restores_and_every_drill_check_passes(drills):
    result = drills["healthy"]
    result.assert_outcomes(passed=8)
    out = result.text
    assert f"dump used: {newest(drills.backups['healthy'])}" in out
    assert "schemas: cutter_governance,public,sandbox_tac" in out
    assert "tables: 21" in out and "error lines: none" in out
    assert "restored rows: " in out and " with count(*)" in out  # how the restored side was counted
    assert "restore db: restore_drill_" in out
    assert not list(drills.work["healthy"].glob("pgbv-cluster-*")), "the drill cluster must be gone"


def test_drill_config_errors_name_the_key(tmp_path):
    for extra, key in [('[drill]\nmode = "elsewhere"\n', "[drill].mode"),
                       ('[drill]\nmode = "scratch"\n', "[drill].server_dsn"),
                       ('[drill]\nprefix = "prod_"\n', "[drill].prefix"),
                       ('[drill]\nmin_tables = { public = "many" }\n', "[drill].min_tables"),
                       ('[drill]\ndisk_factor = 0.5\n', "[drill].disk_factor")]:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            load_target(config_only_target(tmp_path, extra))


def config_only_target(tmp_path: Path, extra: str) -> Path:
    """A target file for load_target alone: nothing connects, so no cluster and no dumps are needed."""
    return demo.write_target_file(tmp_path / "selftest.toml", "host=127.0.0.1 port=1 dbname=directus user=directus",
                                  tmp_path, name="selftest", extra=extra)


def test_dump_missing_a_schema_and_a_table_fails_naming_them(drills):
    result = drills["missing-schema"]
    # Two faults, two red lines: the schema missing whole (its tables and views are that finding, not judged
    # again) and the table missing from public.
    result.assert_outcomes(passed=5, failed=2, skipped=1)
    out = result.text
    assert "restore drill schemas: FAILED (missing after restore: sandbox_tac)" in out
    assert "public: 11 tables vs minimum 12" in out
    assert "missing tables: public.item_05)" in out and "sandbox_tac: 0 tables" not in out
    [objects] = result.select("sequences_views_functions")
    assert objects["message"] == "not judged: restore drill schemas: FAILED (missing after restore: sandbox_tac)"


def test_statement_that_errors_fails_the_drill_and_shows_the_line(drills):
    result, line_no = drills["statement-error"], drills.facts["statement-error"]["line_no"]
    out = result.text
    assert "restore drill errors: FAILED (1 error lines vs 0)" in out
    assert (f'dump line {line_no}: ERROR: relation "public.no_such_table" does not exist | line: {BAD_STATEMENT}'
            in out)
    # ON_ERROR_STOP: later tables never arrived; that is the error's finding, the later checks are not judged.
    assert result.failed() == {"test_restore_finished_without_errors"}, out
    unjudged = [c for c in result.checks if c["kind"] == "not judged"]
    assert unjudged and all(c["message"].startswith("not judged: restore drill errors: FAILED (1 error lines vs 0)")
                            for c in unjudged), out


def test_rows_lost_on_the_way_fail_row_fidelity_with_both_counts(drills):
    result = drills["rows-lost"]
    result.assert_outcomes(passed=7, failed=1)
    out = result.text
    assert "restore drill row fidelity: FAILED (public.item_03: 100 rows restored vs 200 in the dump)" in out
    assert f"WARNING: drill probe | line: {WARN}" in out  # warnings are shown with their line, not counted


@pytest.mark.parametrize("meta", list(META))
def test_psql_meta_command_in_dump_is_refused_and_never_runs(drills, meta):
    f = drills.facts[f"meta-{meta}"]
    out = drills[f"meta-{meta}"].text
    assert "restore drill errors: FAILED (dump refused: dump line" in out
    assert f"psql meta-command refused: {f['line'].strip()}" in out
    assert not f["marker"].exists(), "a meta-command from the dump ran"
    assert drills.run.ret == 1  # check failures only: no crash, no user-error code


@pytest.mark.parametrize("lines", [
    ["SELECT 'a\\b';\n"],                                      # backslash inside a standard string
    ["SELECT E'it\\'s \\\\';\n"],                              # escaped quote inside an E-string
    ["CREATE FUNCTION f() RETURNS text AS $body$\n", "SELECT '\\x';\n", "$body$ LANGUAGE sql;\n"],
    ["SELECT 1; -- a comment \\! is not run\n"],
    ["/* block \\! \n", "still comment */ SELECT 1;\n"],
    ['CREATE TABLE "we\\ird" (id int);\n'],
])
def test_scan_lets_backslashes_inside_quotes_and_comments_pass(lines):
    scanner = PlainDumpScanner()
    assert [scanner.scan(line.encode()) for line in lines] == [line.encode() for line in lines]


@pytest.mark.parametrize("lines", [
    ["\\! touch /tmp/x\n"],
    ["SELECT 1; \\! touch /tmp/x\n"],
    ["SELECT 'a'; \\! touch /tmp/x\n"],
    ["SELECT E'\\''; \\! touch /tmp/x\n"],
    ["SELECT $$x$$; \\! touch /tmp/x\n"],
    ["/* c */ \\! touch /tmp/x\n"],
    ["SELECT 1\n", "\\g\n"],
    ["COPY public.t (a) FROM stdin;\n", "1\n", "\\.\n", "\\! touch /tmp/x\n"],
])
def test_scan_refuses_meta_commands_outside_copy_data(lines):
    scanner = PlainDumpScanner()
    with pytest.raises(MetaCommandRefused, match=f"dump line {len(lines)}: psql meta-command refused"):
        for line in lines:
            scanner.scan(line.encode())


def test_scan_counts_copy_rows_and_drops_the_dumps_restrict_pair():
    scanner = PlainDumpScanner()
    dump = ["\\restrict AbC123\n", 'COPY "My Schema"."T" (a, b) FROM stdin;\n', "1\t\\N\n", "2\t\\\\x\n",
            "\\.\n", "COPY public.t FROM stdin;\n", "\\.\n", "-- PostgreSQL database dump complete\n",
            "\\unrestrict AbC123\n"]
    out = [scanner.scan(line.encode()) for line in dump]
    assert out[0] == out[-1] == b"\n"
    assert scanner.rows == {'"My Schema"."T"': 2, "public.t": 0} and scanner.complete
    assert split_name('"My Schema"."T"') == ("My Schema", "T")


def _wait_for_sleeping_restore(work_dir: Path, proc: subprocess.Popen, seconds: float = 60) -> Path:
    """Until the drill cluster's restore sits in the dump's pg_sleep: then we are mid-restore.

    The drill's server takes no connection from us (socket only, a password per drill): its backend's
    process title says what it runs (`postgres: pgbv_restore DB [local] SELECT`).
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "suite ended early"
        roots = list(work_dir.glob("pgbv-cluster-drill-*"))
        busy = [p for p in psutil.process_iter(["cmdline"])
                if any("pgbv_restore" in a and a.endswith("SELECT") for a in p.info["cmdline"] or ())]
        if roots and busy:
            return roots[0]
        time.sleep(0.2)
    raise AssertionError("the drill never reached the sleeping statement")


def _suite(target: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest", "--target", str(target), "-p", "no:cacheprovider",
                             "-rA", CHECK], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _server_answers(root: Path) -> bool:
    return (root / "data" / "postmaster.pid").exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_mid_restore_then_run_again_leaves_nothing_behind(backups, write_target, work_dir, tmp_path, sig):
    edit_dump(newest(backups), "COPY public.item_03 ", "SELECT pg_sleep(120);\nCOPY public.item_03 ")
    target = write_target(backups, drill_toml(work_dir))
    proc = _suite(target, tmp_path)
    root = _wait_for_sleeping_restore(work_dir, proc)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    if sig == signal.SIGTERM:  # the handler cleaned up before the process died
        assert not root.exists() and not list(work_dir.glob("pgbv-*"))
    else:  # a crash leaves the cluster running: the next run's sweep must remove it
        assert root.exists() and _server_answers(root)
    newest(backups).unlink()  # the next night's dump is healthy again
    again = _suite(target, tmp_path)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out
    if sig == signal.SIGKILL:
        assert f"swept leftover {root} (owner pid {proc.pid} is gone)" in out
    assert not root.exists() and not list(work_dir.glob("pgbv-*"))


def test_time_limit_stops_the_drill_and_fails_it(drills):
    assert "psql stopped by the time limit ([drill].time_limit_seconds) after" in drills["time-limit"].text
    assert drills.run.ret == 1 and not list(drills.work["time-limit"].glob("pgbv-cluster-*"))


def test_disk_preflight_refuses_a_restore_that_cannot_fit(backups, write_target, work_dir):
    facts = run_drill(load_target(write_target(backups, drill_toml(work_dir, disk_factor=1e12))))
    assert facts.aborted and "free disk in" in facts.aborted and "payload x 1000000000000.0" in facts.aborted
    assert not facts.leftovers and facts.outcome is None


def test_overlapping_drills_take_turns_on_the_lock(backups, write_target, work_dir, cluster):
    target = load_target(write_target(backups, drill_toml(work_dir, **scratch(cluster))))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(run_drill(target))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [f.aborted for f in results] == [None, None]
    assert all(not f.outcome.problems for f in results)
    waited = max(f.lock_wait for f in results)
    assert waited >= min(f.seconds - f.lock_wait for f in results) * 0.5, "the second drill did not wait"


LOCK_HELD = 25.0  # seconds; far longer than the seed's scratch drill takes even on a busy machine


def test_a_drill_that_waited_for_another_drills_turn_is_not_charged_the_wait(seed_cluster, cluster, healthy_backups,
                                                                             work_dir, tmp_path):
    """The drills of one run's xdist workers (and of overlapping runs) take turns on the drill lock. The wait
    is said beside the drill's time, and the time the restore budget, the trend and the drill-duration
    metric judge is the drill's own: a fleet run with `-n auto` must not look like slower restores."""
    dsn = seed_cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    target = demo.write_target_file(tmp_path / "t.toml", dsn, healthy_backups, name="waits",
                                    extra=drill_toml(work_dir, **scratch(cluster)))
    held = open(work_dir / "drill.lock", "w")  # held as another drill holds it; the timer lets go
    fcntl.flock(held, fcntl.LOCK_EX)
    timer = threading.Timer(LOCK_HELD, held.close)
    timer.start()
    try:
        run = run_checks(tmp_path / "run", [target], [CHECK])
    finally:
        timer.cancel()
        held.close()
    facts = run.doc["facts"]["waits"]
    said = run.facts_line("waits").split("restore drill: ", 1)[1].split("), ")[0] + ")"
    found = re.fullmatch(r"21 tables in 3 schemas, ([\d.]+) s \(after ([\d.]+) s waiting for another drill: "
                         r"one drill at a time\)", said)
    assert found, said
    own, waited = float(found[1]), float(found[2])
    assert waited >= 5 and own < waited, said  # the seed's drill takes a few seconds; the lock was held for 25
    assert facts["drill_seconds"] == pytest.approx(own, abs=0.06), (facts["drill_seconds"], said)
    assert run.ret == 0 and not run["waits"].failed(), run.stdout[-3000:]


def test_lock_held_too_long_aborts_the_drill_naming_the_lock(backups, write_target, work_dir):
    lock = work_dir / "drill.lock"
    target = load_target(write_target(backups, drill_toml(work_dir, time_limit_seconds=1, lock_file=str(lock))))
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        facts = run_drill(target)
    assert facts.aborted == f"another drill held {lock} for over 1 s; check for a hung pgbackup-verify run"


def _databases(c: ThrowawayCluster) -> list[str]:
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database ORDER BY 1")]


def test_scratch_database_mode_leaves_the_server_as_it_found_it(pytester, cluster, backups, write_target, work_dir):
    before = _databases(cluster)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:  # what a crashed drill left behind
        # Scratch mode as it should be set up: a role with CREATEDB only (a superuser is refused).
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drill_maker') THEN "
                     "CREATE ROLE drill_maker LOGIN CREATEDB; END IF; END $$")
        conn.execute("CREATE DATABASE restore_drill_20000101_000000_1 OWNER drill_maker")
        conn.execute("COMMENT ON DATABASE restore_drill_20000101_000000_1 IS "
                     f"'pgbackup-verify drill pid={gone.pid} host={socket.gethostname()} started={int(time.time())}'")
    target = write_target(backups, drill_toml(work_dir, mode="scratch", server_dsn=cluster.dsn(user="drill_maker"),
                                              expect_live_catalog=True))
    result = run_one(pytester, target)
    result.assert_outcomes(passed=8)
    out = result.stdout.str()
    assert f"swept leftover database restore_drill_20000101_000000_1 (owner pid {gone.pid} is gone)" in out
    assert f"on server 127.0.0.1:{cluster.port}" in out
    assert _databases(cluster) == before


def test_drill_never_touches_a_database_without_its_prefix():
    with pytest.raises(DrillAborted, match="lacks the drill prefix 'restore_drill_'"):
        guard_name("directus", "restore_drill_")
    with pytest.raises(DrillAborted):
        guard_name("restore_drill_", "restore_drill_")


def test_custom_format_restores_with_parallel_jobs(backups, write_target, work_dir, seed_cluster, cluster):
    custom = backups / "directus.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(custom), "-d", demo.DBNAME], env=seed_cluster.env(), check=True)
    target = load_target(write_target(backups, drill_toml(work_dir, jobs=2, **scratch(cluster))))
    facts = run_drill(target, source=from_path(custom))
    assert facts.aborted is None and facts.outcome.tool == "pg_restore -j2"
    assert facts.outcome.problems == [] and facts.outcome.rows is not None
    assert facts.restored.schemas == set(demo.SCHEMAS) and facts.restored.table_count() == 21
    # The archive's rows, read from its data blocks, against what arrived: every table.
    assert len(facts.rows) == 21 and all(n == got for n, got in facts.rows.values())
    assert sum(n for n, _ in facts.rows.values()) > 0 and "the archive's data blocks" in facts.rows_read
    assert not facts.leftovers


def test_source_is_any_readable_stream_not_only_a_path(backups, write_target, work_dir, seed_cluster, cluster):
    """The offsite archive member will arrive as a stream: no path, only open()."""
    plain, custom = newest(backups), backups / "directus.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(custom), "-d", demo.DBNAME], env=seed_cluster.env(), check=True)
    target = load_target(write_target(backups, drill_toml(work_dir, **scratch(cluster))))
    for path, fmt in ((plain, "plain-gzip"), (custom, "custom")):
        source = DumpSource(description=f"offsite:archive.tar.gz member {path.name}", name=path.name, fmt=fmt,
                            size=None, payload_hint=None, open=lambda p=path: p.open("rb"))
        facts = run_drill(target, source=source)
        assert facts.aborted is None and facts.outcome.problems == [], facts
        assert facts.restored.table_count() == 21 and not facts.leftovers  # spool file removed too
        # The custom archive is spooled to a file first: its rows are counted from the spool.
        assert all(n == got for n, got in facts.rows.values()) and len(facts.rows) == 21


@pytest.mark.parametrize("size", [1, 2, 7, 64, 1 << 20])
def test_scan_in_chunks_counts_and_forwards_like_line_by_line(healthy_backups, size):
    data = gzip.decompress(newest(healthy_backups).read_bytes())
    data = data.replace(b"COPY public.item_01 ", b"COPY public.empty (a) FROM stdin;\n\\.\r\nCOPY public.item_01 ")
    by_line = PlainDumpScanner()
    expected = b"".join(by_line.scan(line) for line in data.splitlines(keepends=True))
    by_line.finish()
    chunked = PlainDumpScanner()
    pieces = [bytes(p) for i in range(0, len(data), size) for p in chunked.feed(data[i:i + size])]
    pieces += chunked.finish()
    assert b"".join(pieces) == expected and expected.count(b"\n") == data.count(b"\n")
    assert chunked.rows == by_line.rows and chunked.rows["public.empty"] == 0 and len(chunked.rows) == 22
    assert chunked.line_no == by_line.line_no and chunked.complete


def test_dump_with_owners_restores_in_a_throwaway_cluster_given_the_roles(backups, write_target, work_dir,
                                                                         seed_cluster):
    """A dump made without --no-owner names its roles; the throwaway cluster creates them first."""
    dump = subprocess.run(["pg_dump", "-d", demo.DBNAME], env=seed_cluster.env(), capture_output=True, check=True)
    assert b"OWNER TO workflow_admin" in dump.stdout
    (backups / "directus_9999-01-01_0200.sql.gz").write_bytes(gzip.compress(dump.stdout))
    target = load_target(write_target(backups, drill_toml(work_dir, roles=["directus", "workflow_admin"])))
    facts = run_drill(target)
    assert facts.aborted is None and facts.outcome.problems == [], facts.outcome
    assert facts.restored.table_count() == 21 and not facts.leftovers


def test_long_restore_reports_progress_with_bytes_and_share_read(backups, write_target, work_dir, cluster):
    rows = "".join(f"{i}\trow {i} {'x' * 40}\n" for i in range(40000)).encode()
    text = gzip.decompress(newest(backups).read_bytes()).replace(
        b"COPY public.item_03 ", b"SELECT pg_sleep(1.2);\nCREATE TABLE public.big (id int, label text);\n"
        b"COPY public.big (id, label) FROM stdin;\n" + rows + b"\\.\n\nCOPY public.item_03 ")
    newest(backups).write_bytes(gzip.compress(text))
    calls: list[tuple] = []
    target = load_target(write_target(backups, drill_toml(work_dir, **scratch(cluster))))
    facts = run_drill(target, progress=lambda *a: calls.append(a))
    assert facts.outcome.problems == [] and facts.rows["public.big"] == (40000, 40000)
    sent, read, size, seconds = calls[0]
    assert 0 < sent < len(text) and 0 < read <= size == newest(backups).stat().st_size and seconds >= 1.0


def test_drill_restores_the_offsite_archive_member(drills):
    """[drill].source = "offsite": the PG member of the newest archive, streamed through a real rclone."""
    result, remote = drills["offsite"], drills.facts["offsite"]["remote"]
    result.assert_outcomes(passed=8)
    out = result.text
    assert f"dump used: :local:{remote}/vps-backup-" in out and "member */postgresql-directus.sql.gz" in out
    assert "tables: 21" in out and "error lines: none" in out
    assert "restored rows: " in out and " with count(*)" in out  # how the restored side was counted


def test_offsite_source_needs_an_offsite_section(tmp_path, work_dir):
    with pytest.raises(ConfigError, match=r"\[drill\]\.source: 'offsite' needs an \[offsite\] section"):
        load_target(config_only_target(tmp_path, drill_toml(work_dir, source="offsite")))


# --- the scan follows psql: where a statement ends and where COPY data starts --------------------


def _scan_all(text: bytes, size: int = 3) -> tuple[PlainDumpScanner, bytes]:
    """Through feed() in small chunks, as the drill streams it."""
    scanner = PlainDumpScanner()
    out = [bytes(p) for i in range(0, len(text), size) for p in scanner.feed(text[i:i + size])]
    return scanner, b"".join(out + scanner.finish())


COPY_CASES = {  # dump -> (tables psql needs, rows in it); every data row is a would-be meta-command
    "names-over-lines": (b'COPY "s;(x)""q.".\n"t\nab;" ("a;b", "c)d") FROM stdin;\n\\! touch MARKER\tx\n'
                         b"2\t\\\\.x\n\\.\nSELECT 1;\n",
                         'CREATE SCHEMA "s;(x)""q."; CREATE TABLE "s;(x)""q."."t\nab;" ("a;b" text, "c)d" text);', 2),
    # two COPY statements on one line: psql reads the first one's data, then the second one's
    "two-on-a-line": (b"COPY a FROM stdin; COPY b (x) FROM STDIN;\n\\! touch MARKER\n\\.\n\\! touch MARKER\n"
                      b"\\! touch MARKER\n\\.\n", "CREATE TABLE a (x text); CREATE TABLE b (x text);", 3),
    # lower case, a comment inside, FROM STDOUT (gram.y takes it as the client too), a WHERE clause
    "stdout-where": (b"copy /* c */ public.c (x)\nfrom stdout where x > '0';\n\\! touch MARKER\n\\.\n",
                     "CREATE TABLE c (x text);", 1),
}
META_CASES = {
    # COPY inside a BEGIN ATOMIC body is not a statement of its own: psql reads on as SQL
    "begin-atomic": b"CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  COPY t FROM stdin;\nEND;\n"
                    b"\\! touch MARKER\n",
    # a ';' inside parentheses does not end the statement either
    "in-parens": b"SELECT (1;\nCOPY t FROM stdin;\n\\! touch MARKER\n",
    # a '--' comment ends at a carriage return (flex's newline), not only at the end of the line
    "comment-cr": b"SELECT 1; -- comment\r\\! touch MARKER\n",
    # COPY TO STDOUT and COPY FROM a file take no data from the dump
    "copy-to": b"COPY t TO stdout;\n\\! touch MARKER\n",
    "copy-file": b"COPY t FROM 'stdin';\n\\! touch MARKER\n",
    # E'' string continued after a CR-newline: psql is still inside it at \', then back in code
    "continued": b"SELECT E'a'\r'\\'' \\! touch MARKER\n",
    # psql 15 reads 1e'..' as the junk token 1e and a plain string (psql 14: 1 and an E'..' string)
    "number-e": b"SELECT 1e'\\' \\! touch MARKER\n",
    "number-e-later": b"SELECT a, b, c, d, 1e'\\' \\! touch MARKER\n",
    # '$' inside a word is part of it, not the start of a dollar quote
    "word-dollar": b"SELECT x$y$ FROM t; \\! touch MARKER\n",
    "word-dollar-later": b"SELECT a, b, c, d, x$y$ FROM t; \\! touch MARKER\n",
}


@pytest.mark.parametrize("case", list(COPY_CASES))
def test_scan_finds_copy_data_where_psql_does(case):
    dump, _, rows = COPY_CASES[case]
    scanner, out = _scan_all(dump)
    assert out == dump and sum(scanner.rows.values()) == rows
    assert scanner.copy_blocks == dump.count(b"\n\\.\n")


@pytest.mark.parametrize("case", list(META_CASES))
def test_scan_refuses_what_psql_would_run_as_a_meta_command(case):
    with pytest.raises(MetaCommandRefused, match="refused"):
        _scan_all(META_CASES[case])


def test_the_real_psql_agrees_data_rows_stay_data_and_meta_commands_run(cluster, tmp_path):
    """Differential: the same texts through the real psql (no ON_ERROR_STOP): a meta-command the
    scan refuses is one psql really runs, a row the scan takes for COPY data never runs."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE psql_agrees")
    try:
        for name, dump, setup in [(n, d, s) for n, (d, s, _) in COPY_CASES.items()] + [
                (n, d, "") for n, d in META_CASES.items()]:
            marker = tmp_path / f"ran-{name}"
            with psycopg.connect(cluster.dsn("psql_agrees"), autocommit=True) as conn:
                conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
                conn.execute('DROP SCHEMA IF EXISTS "s;(x)""q." CASCADE')
                if setup:
                    conn.execute(setup)
            subprocess.run(["psql", "-X", "-q", "-d", cluster.dsn("psql_agrees"), "-f", "-"], env=cluster.env(),
                           input=dump.replace(b"MARKER", str(marker).encode()), capture_output=True, check=False)
            assert marker.exists() == (name in META_CASES), name
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("DROP DATABASE psql_agrees")


def test_scan_counts_insert_format_rows_large_objects_and_refreshes():
    dump = (b"INSERT INTO public.t VALUES (1, 'a;b'), (2, '(');\n"
            b'INSERT INTO "s"."t;2" (a, "b(") OVERRIDING SYSTEM VALUE VALUES\n'
            b"\t(1, 'x'),\n\t(2, (3)),\n\t(4, '');\n"
            b"INSERT INTO public.nocols DEFAULT VALUES;\n"
            b"SELECT pg_catalog.lo_create('16385');\nSELECT pg_catalog.lowrite(0, '\\x00');\n"
            b"REFRESH MATERIALIZED VIEW public.mv;\nREFRESH MATERIALIZED VIEW public.empty WITH NO DATA;\n"
            b"COPY public.c FROM stdin WITH (FORMAT csv);\n\"a\nb\"\n\\.\n")
    scanner, out = _scan_all(dump, 5)
    assert out == dump
    assert scanner.rows == {"public.t": 2, '"s"."t;2"': 3, "public.nocols": 1}
    assert scanner.targets['"s"."t;2"'] == ("s", "t;2") and scanner.insert_statements == 3
    assert scanner.large_objects == 1 and scanner.refreshed == ["public.mv"]
    assert scanner.uncounted == {"public.c": "COPY in CSV or binary format: rows are not lines"}


def test_split_name_reads_names_as_the_server_does():
    assert split_name('"a.b"."c;""d"""') == ("a.b", 'c;"d"')
    assert split_name("Public.Item") == ("public", "item")
    assert split_name('"new\nline".t') == ("new\nline", "t")
