"""`pgbackup-verify init`: a minimal target written from a healthy host passes on that host.

Shown on the demo host through a fresh venv holding a non-editable install of this checkout (the
README's way in), and on a differently shaped database in its own cluster: custom-format dumps
twice a day, a separate read-only dump role, a schema with a space in its name, an excluded schema.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from checkrun import CHECKS, pytester_env, run_checks
from demohost import built_demo
from pgbackup_verify_demo import demo

from pgbackup_verify import initcmd
from pgbackup_verify.config import load_target
from pgbackup_verify.facts.drill.cluster import ThrowawayCluster

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.Demo]:
    yield from built_demo(tmp_path_factory, "init-demo")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with `pip install .` (not editable) of a copy of this checkout; the dependencies
    come from the self-tests' venv by a path entry (no index needed), never this checkout's sources."""
    base = tmp_path_factory.mktemp("fresh")
    src = base / "checkout"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "reports", "node_modules", ".demo", "__pycache__", "*.egg-info", "build"))
    # `pip install .` is a wheel build and its install: built by the self-tests' pip (with its
    # build isolation), installed into the fresh venv's interpreter (pip --python), without
    # dependencies. The venv gets no pip of its own: ensurepip took ~20 s and is not what is tested.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "-w", str(base / "wheels"), str(src)], check=True, capture_output=True)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [wheel] = (base / "wheels").glob("pgbackup_verify-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--disable-pip-version-check", "--no-deps", str(wheel)], check=True, capture_output=True)
    purelib = Path(subprocess.check_output(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        text=True).strip())
    # The dependencies: a plain path line to the self-tests' site-packages, appended after the venv's
    # own (its .pth files, the editable installs of this checkout and the demo, are not processed).
    (purelib / "zz-deps-from-selftest-venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def test_done_when_fresh_install_init_then_target_is_green_on_the_demo_host(
        demo_host: demo.Demo, fresh_venv: Path, tmp_path: Path) -> None:
    where = subprocess.check_output([str(fresh_venv / "python"), "-c",
                                     "import pgbackup_verify; print(pgbackup_verify.__file__)"], text=True)
    assert where.startswith(str(fresh_venv.parent)), where  # the installed copy, not this checkout
    dsn = demo_host.cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    out = tmp_path / "host.toml"
    env = pytester_env(tmp_path)
    start = time.monotonic()
    init = subprocess.run([str(fresh_venv / "pgbackup-verify"), "init", str(out), "--dsn", dsn,
                           "--backups", str(demo_host.workdir / "backups")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert init.returncode == 0, init.stderr
    assert init.stdout.strip() == f"pgbackup-verify init: wrote {out}; check it with: pgbackup-verify --target {out}"
    text = out.read_text()
    assert '# guessed: named in the dump file names (directus_*.sql.gz)' in text
    assert 'dump_role = "directus"' in text and 'pattern = "directus_*.sql.gz"' in text
    assert "#   sandbox_tac (owner workflow_admin): 3 table(s)" in text
    assert 'min_tables = { "cutter_governance" = 5, "public" = 10, "sandbox_tac" = 2 }' in text
    assert "max_age_hours = 27" in text and "retention_days = 7" in text
    run = subprocess.run([str(fresh_venv / "pgbackup-verify"), "--target", str(out), "-p", "no:cacheprovider"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    assert run.returncode == 0, run.stdout[-4000:]
    assert "pgbackup-verify: OK targets=directus failed=0 error=0" in run.stdout
    assert f"{CHECKS.parent}" not in run.stdout  # the installed checks ran, not the checkout's
    assert seconds < 300


def test_init_never_overwrites_a_file(demo_host: demo.Demo, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--dsn", demo_host.cluster.dsn(demo.DBNAME, demo.DUMP_ROLE),
            "--backups", str(demo_host.workdir / "backups")]
    existing = tmp_path / "t.toml"
    existing.write_text("# mine\n")
    planted = tmp_path / "link.toml"
    planted.symlink_to(tmp_path / "elsewhere.toml")  # a dangling link: writing through it would create a file
    for path in (existing, planted):
        assert initcmd.main([str(path), *args]) == 4
        err = capsys.readouterr().err
        assert err == (f"pgbackup-verify init: '{path}' exists; init never overwrites a file: choose a new name "
                       "or move the old one away\n")
    assert existing.read_text() == "# mine\n" and not (tmp_path / "elsewhere.toml").exists()


@pytest.mark.parametrize(("case", "code", "line"), [
    ("no dir", 4, "--backups: directory '{missing}' does not exist; pass the directory the dump job writes to"),
    ("no dumps", 4, "backup directory '{empty}' holds no dump (.sql.gz, .sql, .gz, .dump, .backup, .pgdump, "
                    ".custom, .fc, .tar, .gzip, .zst, .zstd, .xz, .lz4, .bz2, or a pg_dump -Fd directory); pass the "
                    "directory the dump job writes to, or --pattern GLOB"),
    ("bad pattern", 4, "backup directory '{backups}' holds no file matching 'nothing-*.dump'; fix --pattern or pass "
                       "the directory the dump job writes to"),
    ("password", 4, "[database].dsn: contains a password; remove it and use PGPASSWORD, ~/.pgpass or "
                    "[database].password_file"),
    ("unreachable", 10, "database 127.0.0.1:1/directus as directus of target 'init' is unreachable (*"),
])
def test_bad_input_is_one_line_and_its_exit_code(demo_host: demo.Demo, tmp_path: Path, case: str, code: int,
                                                 line: str, capsys: pytest.CaptureFixture[str]) -> None:
    backups = demo_host.workdir / "backups"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    dsn = demo_host.cluster.dsn(demo.DBNAME, demo.DUMP_ROLE)
    args = {"no dir": ["--backups", str(tmp_path / "missing")], "no dumps": ["--backups", str(tmp_path / "empty")],
            "bad pattern": ["--backups", str(backups), "--pattern", "nothing-*.dump"],
            "password": ["--backups", str(backups), "--dsn", dsn + " password=secret"],
            "unreachable": ["--backups", str(backups), "--dsn", "host=127.0.0.1 port=1 dbname=directus user=directus"]}
    argv = [str(tmp_path / "t.toml"), "--dsn", dsn, *args[case]]
    assert initcmd.main(argv) == code
    err = capsys.readouterr().err
    want = "pgbackup-verify init: " + line.format(missing=tmp_path / "missing", empty=tmp_path / "empty",
                                                  backups=backups)
    assert err.count("\n") == 1 and "Traceback" not in err and "secret" not in err
    assert err.rstrip("\n") == want if not want.endswith("*") else err.startswith(want[:-1])
    assert not (tmp_path / "t.toml").exists()


# The differently shaped host: owner `app`, pg_dump as the read-only `backup_ro`, custom format
# twice a day, a schema with a space and capitals, a partitioned table, a schema left out of the dump.
OTHER_SQL = """
CREATE ROLE app LOGIN;
CREATE ROLE backup_ro LOGIN;
CREATE DATABASE ledgerdb OWNER app;
"""
OTHER_SCHEMA_SQL = """
SET ROLE app;
CREATE SCHEMA ledger;
CREATE SCHEMA "Pilot Area";
CREATE SCHEMA scratch;
ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO backup_ro;
ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO backup_ro;
GRANT USAGE ON SCHEMA ledger, "Pilot Area", public TO backup_ro;
CREATE TABLE "Pilot Area"."Flights" (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE "Pilot Area".crew (id int) ;
CREATE TABLE ledger.entries (id bigint, booked date NOT NULL) PARTITION BY RANGE (booked);
CREATE TABLE ledger.entries_2026 PARTITION OF ledger.entries FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO ledger.entries SELECT g, DATE '2026-03-01' + g % 200 FROM generate_series(1, 3000) g;
CREATE TABLE scratch.tmp (x int);
"""
LEDGER_TABLES = 40


@pytest.fixture(scope="module")
def other_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThrowawayCluster, Path]]:
    with ThrowawayCluster(tag="init-other-") as c:
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            for stmt in OTHER_SQL.strip().split(";\n"):
                conn.execute(stmt.strip().rstrip(";"))
        with psycopg.connect(c.dsn("ledgerdb"), autocommit=True) as conn:
            conn.execute(OTHER_SCHEMA_SQL)
            for i in range(LEDGER_TABLES - 2):
                conn.execute(f"CREATE TABLE ledger.t{i:02d} (id int PRIMARY KEY, v text)")
                conn.execute(f"INSERT INTO ledger.t{i:02d} SELECT g, md5(g::text) FROM generate_series(1, 50) g")
        backups = tmp_path_factory.mktemp("other-backups")
        now = time.time()
        for back in range(13, -1, -1):  # 14 dumps, every 12 hours, the newest an hour old
            ts = now - back * 43200 - 3600
            path = backups / f"ledgerdb-{int(ts)}.dump"
            env = {**c.env(), "PGUSER": "backup_ro"}
            subprocess.run(["pg_dump", "-Fc", "--exclude-schema=scratch", "-d", "ledgerdb", "-f", str(path)],
                           env=env, check=True, capture_output=True)
            path.chmod(0o600)  # a hardened job's umask 077
            os.utime(path, (ts, ts))
        (backups / "README").write_text("nightly dumps, do not edit\n")
        yield c, backups


def test_init_on_a_differently_shaped_database_passes_there(other_host: tuple[ThrowawayCluster, Path],
                                                           tmp_path: Path) -> None:
    cluster, backups = other_host
    dsn = cluster.dsn("ledgerdb", "backup_ro")
    out = tmp_path / "ledger.toml"
    assert initcmd.main([str(out), "--dsn", dsn, "--backups", str(backups), "--dump-role", "backup_ro",
                         "--exclude-schema", "scratch", "--name", "ledger-host"]) == 0
    text = out.read_text()
    assert '# given with --dump-role\ndump_role = "backup_ro"' in text
    assert 'pattern = "ledgerdb-*.dump"' in text and "# custom format (pg_dump -Fc)" in text
    assert "# A dump every 12 hours (median of 14 files)" in text and "max_age_hours = 14" in text
    assert 'exclude_schemas = ["scratch"]' in text and "scratch (owner" not in text
    assert f'"ledger" = {int(LEDGER_TABLES * 0.9)}' in text and '"Pilot Area" = 1' in text
    assert "roles =" not in text  # pg_restore of a custom dump runs --no-owner: no roles needed
    t = load_target(out)
    assert t.name == "ledger-host" and t.database.exclude_schemas == ("scratch",)
    assert {"ledger", "Pilot Area"} <= set(t.backups.expected_schemas)
    run = run_checks(tmp_path / "run", [out], [CHECKS], "-p", "no:xdist")
    result = run["ledger-host"]
    assert run.ret == 0, result.text
    assert result.outcomes()["passed"] >= 20
    assert result.outcome("test_custom_format_toc_lists_expected_schemas") == "passed"


def test_init_guesses_the_dump_role_and_says_so(other_host: tuple[ThrowawayCluster, Path], tmp_path: Path) -> None:
    cluster, backups = other_host
    out = tmp_path / "guess.toml"
    assert initcmd.main([str(out), "--dsn", cluster.dsn("ledgerdb", "backup_ro"), "--backups", str(backups)]) == 0
    text = out.read_text()
    # Without --exclude-schema, backup_ro lacks USAGE on `scratch`: only the owner `app` reads everything.
    assert "# guessed: the only login role without superuser that can read every schema, table and sequence\n" \
           'dump_role = "app"' in text
